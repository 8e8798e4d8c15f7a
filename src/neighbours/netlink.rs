//! The kernel's neighbour table via rtnetlink, IPv4 and IPv6 in one.
//!
//! A dump of the whole table costs in proportion to it: with 50,000 entries on the guest
//! interface an accept took 87 ms instead of 2.5 (bench in the namespace lab). So the daemon
//! keeps the table in memory: a task reads the kernel's neighbour events (`RTMGRP_NEIGH`) after
//! one dump, and starts again from a dump if events were lost. A device's MAC is still asked of
//! the kernel itself (one RTM_GETNEIGH for that address), since it decides what is opened; the
//! copy gives its other addresses, and the table for counting connections. Until the copy is
//! ready (at start, after a loss) every answer comes from a dump, as before.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::AsyncSocket as _;
use rtnetlink::packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};

use super::{Lookup, Mac, Neighbour, NeighbourError, Neighbours, Table};
use crate::clients::MacAddr;

const ENOENT: i32 = 2;
/// The events' receive queue (capped by net.core.rmem_max); a loss means a fresh dump.
const EVENT_QUEUE: usize = 4 << 20;

/// Reads the running kernel's table for one interface.
#[derive(Debug, Clone)]
pub struct KernelNeighbours {
    interface: String,
    copy: Arc<Mutex<Followed>>,
    watching: Arc<OnceLock<()>>,
    /// The connection the one-entry asks share: opened on first use, and again after it broke.
    asker: Arc<Mutex<Option<Asker>>>,
    generations: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug)]
struct Asker {
    handle: rtnetlink::Handle,
    /// Which connection this is, so a late failure on an old one cannot drop a newer one.
    generation: u64,
    _connection: AbortOnDrop,
}

/// How an ask failed: the kernel answered with an error, or the connection itself broke (then
/// it is dropped, and the next ask opens another).
enum Failed {
    Answered(NeighbourError),
    Broken(NeighbourError),
}

/// The table as the events tell it, every interface's (keyed by its index, so a re-created
/// guest interface needs nothing special).
#[derive(Debug, Default)]
struct Followed {
    ready: bool,
    by_ip: HashMap<(u32, IpAddr), MacAddr>,
    by_mac: HashMap<(u32, MacAddr), Vec<IpAddr>>,
    /// Devices whose addresses appeared or moved last since `take_changed`; `lost` when that
    /// is not known (a fresh copy, or more than `MAX_CHANGED`).
    changed: std::collections::HashSet<(u32, MacAddr)>,
    lost: bool,
}

/// Most devices `changed` tracks before it gives up (the caller then looks at all).
const MAX_CHANGED: usize = 65_536;

impl Followed {
    fn remove(&mut self, ifindex: u32, ip: IpAddr) {
        if let Some(mac) = self.by_ip.remove(&(ifindex, ip))
            && let Some(ips) = self.by_mac.get_mut(&(ifindex, mac))
        {
            ips.retain(|a| *a != ip);
            if ips.is_empty() {
                self.by_mac.remove(&(ifindex, mac));
            }
        }
    }

    /// A new or changed entry (an event or a dump part), or a deleted one (`gone`). A device's
    /// addresses are kept in the order they were last confirmed: an entry that turns reachable
    /// goes last; one that only goes stale (an old lease) keeps its place.
    fn apply(&mut self, msg: &NeighbourMessage, gone: bool) {
        let ifindex = msg.header.ifindex;
        let Some(ip) = destination(msg) else { return };
        let found = if gone { None } else { entry(msg, ifindex) };
        if let Some((_, mac)) = found
            && msg.header.state != NeighbourState::Reachable
            && self.by_ip.get(&(ifindex, ip)) == Some(&mac)
        {
            return;
        }
        self.remove(ifindex, ip);
        if let Some((ip, mac)) = found {
            self.by_ip.insert((ifindex, ip), mac);
            self.by_mac.entry((ifindex, mac)).or_default().push(ip);
            if !self.lost {
                self.changed.insert((ifindex, mac));
                if self.changed.len() > MAX_CHANGED {
                    self.lost = true;
                    self.changed.clear();
                }
            }
        }
    }

    fn table(&self, ifindex: u32) -> Vec<(IpAddr, MacAddr)> {
        self.by_ip
            .iter()
            .filter(|((i, _), _)| *i == ifindex)
            .map(|(&(_, ip), &mac)| (ip, mac))
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn netlink(e: impl std::fmt::Display) -> NeighbourError {
    NeighbourError::Netlink(e.to_string())
}

/// Follows the kernel's table into `copy` until the events break off; then says why.
async fn follow(copy: &Mutex<Followed>) -> NeighbourError {
    let (mut conn, handle, mut events) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => return netlink(e),
    };
    let socket = conn.socket_mut().socket_mut();
    if let Err(e) = socket.bind(&netlink_sys::SocketAddr::new(0, rtnetlink::constants::RTMGRP_NEIGH)) {
        return netlink(e);
    }
    let _ = socket2::SockRef::from(&*socket).set_recv_buffer_size(EVENT_QUEUE);
    let task = tokio::spawn(conn);
    let _stop = AbortOnDrop(task);
    // Joined first, then dumped: a change meanwhile is in the events, applied after the dump.
    let dump: Result<Vec<NeighbourMessage>, _> = handle.neighbours().get().execute().try_collect().await;
    match dump {
        Ok(all) => {
            let mut c = lock(copy);
            *c = Followed {
                lost: true,
                ..Followed::default()
            };
            // Reachable entries last: a device's most recently confirmed address is then
            // last in its list, as events keep it (a dump comes in the kernel's hash order).
            let (reachable, rest): (Vec<_>, Vec<_>) =
                all.iter().partition(|m| m.header.state == NeighbourState::Reachable);
            for m in rest.into_iter().chain(reachable) {
                c.apply(m, false);
            }
            c.ready = true;
            tracing::debug!(entries = c.by_ip.len(), "neighbour table followed from events");
        }
        Err(e) => return netlink(e),
    }
    while let Some((msg, _)) = events.next().await {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => lock(copy).apply(&m, false),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => lock(copy).apply(&m, true),
            NetlinkPayload::Overrun(_) => return netlink("neighbour events lost (the queue overflowed)"),
            _ => {}
        }
    }
    netlink("the neighbour events ended")
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The address an entry is for.
fn destination(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

impl KernelNeighbours {
    /// Looks up neighbours on `interface` only.
    pub fn new(interface: String) -> Self {
        Self {
            interface,
            copy: Arc::default(),
            watching: Arc::default(),
            asker: Arc::default(),
            generations: Arc::default(),
        }
    }

    /// Starts following the table (once; from within the runtime; every answer does it too).
    /// Until it is ready, and whenever it starts again, answers come from dumps.
    pub fn follow(&self) {
        self.watching.get_or_init(|| {
            let copy = self.copy.clone();
            tokio::spawn(async move {
                loop {
                    let why = follow(&copy).await;
                    lock(&copy).ready = false;
                    tracing::warn!(error = %why, "following the neighbour table again from a dump");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        });
    }

    /// The kernel's own entry for `ip` on `ifindex` (one RTM_GETNEIGH): its MAC if usable.
    /// Asked on the shared connection; one that broke is dropped, so the next ask opens another.
    async fn ask(&self, ifindex: u32, ip: IpAddr) -> Result<Option<MacAddr>, NeighbourError> {
        let (handle, generation) = {
            let mut asker = lock(&self.asker);
            match &*asker {
                Some(a) => (a.handle.clone(), a.generation),
                None => {
                    let (conn, handle, _) = rtnetlink::new_connection().map_err(netlink)?;
                    let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    *asker = Some(Asker {
                        handle: handle.clone(),
                        generation,
                        _connection: AbortOnDrop(tokio::spawn(conn)),
                    });
                    (handle, generation)
                }
            }
        };
        match Self::ask_on(handle, ifindex, ip).await {
            Ok(found) => Ok(found),
            Err(Failed::Answered(e)) => Err(e),
            Err(Failed::Broken(e)) => {
                let mut asker = lock(&self.asker);
                if asker.as_ref().is_some_and(|a| a.generation == generation) {
                    *asker = None;
                }
                Err(e)
            }
        }
    }

    async fn ask_on(mut handle: rtnetlink::Handle, ifindex: u32, ip: IpAddr) -> Result<Option<MacAddr>, Failed> {
        let mut msg = NeighbourMessage::default();
        msg.header.ifindex = ifindex;
        msg.header.family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        msg.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
        request.header.flags = NLM_F_REQUEST;
        let mut answers = handle.request(request).map_err(|e| Failed::Broken(netlink(e)))?;
        while let Some(answer) = answers.next().await {
            match answer.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
                    return Ok(entry(&m, ifindex).filter(|(a, _)| *a == ip).map(|(_, mac)| mac));
                }
                NetlinkPayload::Error(e) if e.raw_code().abs() == ENOENT => return Ok(None),
                NetlinkPayload::Error(e) => return Err(Failed::Answered(netlink(e))),
                _ => {}
            }
        }
        Err(Failed::Broken(netlink("no answer to the neighbour request")))
    }

    fn ifindex(&self) -> Result<u32, NeighbourError> {
        // Re-read each time: the interface may have been re-created since start.
        let path = format!("/sys/class/net/{}/ifindex", self.interface);
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| NeighbourError::NoInterface(self.interface.clone()))
    }

    async fn dump(&self) -> Result<Vec<NeighbourMessage>, NeighbourError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(netlink)?;
        let _stop = AbortOnDrop(tokio::spawn(conn));
        handle.neighbours().get().execute().try_collect().await.map_err(netlink)
    }
}

/// (address, mac) of a usable entry on `ifindex`, from one netlink message.
fn entry(msg: &NeighbourMessage, ifindex: u32) -> Option<(IpAddr, MacAddr)> {
    if msg.header.ifindex != ifindex
        || matches!(
            msg.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        )
    {
        return None;
    }
    let mac = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr::new),
        _ => None,
    });
    let mac = mac.filter(|m| m.is_unicast())?;
    Some((destination(msg)?, mac))
}

/// The addresses configured on `interface` (for `aupgate check`: the portal URL must be one of
/// the router's own addresses on the guest side).
///
/// # Errors
/// `NoInterface` if it does not exist; `Netlink` if the kernel cannot be asked.
pub async fn interface_addresses(interface: &str) -> Result<Vec<IpAddr>, NeighbourError> {
    let index = KernelNeighbours::new(interface.to_owned()).ifindex()?;
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NeighbourError::Netlink(e.to_string()))?;
    let task = tokio::spawn(conn);
    let result: Result<Vec<_>, _> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await;
    task.abort();
    let messages = result.map_err(|e| NeighbourError::Netlink(e.to_string()))?;
    let mut addresses: Vec<IpAddr> = messages
        .iter()
        .filter(|m| m.header.index == index)
        .flat_map(|m| m.attributes.iter())
        .filter_map(|a| match a {
            AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

impl KernelNeighbours {
    async fn entries(&self) -> Result<Vec<(IpAddr, MacAddr)>, NeighbourError> {
        let ifindex = self.ifindex()?;
        self.follow();
        {
            let c = lock(&self.copy);
            if c.ready {
                return Ok(c.table(ifindex));
            }
        }
        Ok(self.dump().await?.iter().filter_map(|m| entry(m, ifindex)).collect())
    }

    /// `lookup` from the copy: the MAC from the kernel itself, the other addresses from the
    /// copy; `None` if the copy is not ready (or the kernel cannot be asked for one entry).
    async fn lookup_followed(&self, ip: IpAddr) -> Option<Result<Option<Neighbour>, NeighbourError>> {
        let ifindex = match self.ifindex() {
            Ok(i) => i,
            Err(e) => return Some(Err(e)),
        };
        self.follow();
        if !lock(&self.copy).ready {
            return None;
        }
        let mac = match self.ask(ifindex, ip).await {
            Ok(Some(mac)) => mac,
            Ok(None) => return Some(Ok(None)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the kernel for one neighbour; dumping the table");
                return None;
            }
        };
        let mut addresses = lock(&self.copy)
            .by_mac
            .get(&(ifindex, mac))
            .cloned()
            .unwrap_or_default();
        addresses.push(ip);
        addresses.sort();
        addresses.dedup();
        Some(Ok(Some(Neighbour { mac, addresses })))
    }
}

impl Neighbours for KernelNeighbours {
    fn table(&self) -> Table<'_> {
        Box::pin(self.entries())
    }

    fn take_changed(&self) -> Option<Vec<MacAddr>> {
        let ifindex = self.ifindex().ok()?;
        let mut copy = lock(&self.copy);
        let changed = std::mem::take(&mut copy.changed);
        if !copy.ready || std::mem::take(&mut copy.lost) {
            return None;
        }
        Some(
            changed
                .into_iter()
                .filter(|(i, _)| *i == ifindex)
                .map(|(_, mac)| mac)
                .collect(),
        )
    }

    fn recent(&self, macs: &[MacAddr]) -> Vec<Vec<IpAddr>> {
        let copy = lock(&self.copy);
        match self.ifindex() {
            Ok(ifindex) if copy.ready => macs
                .iter()
                .map(|mac| copy.by_mac.get(&(ifindex, *mac)).cloned().unwrap_or_default())
                .collect(),
            _ => vec![Vec::new(); macs.len()],
        }
    }

    /// From the copy when it has `ip`; otherwise the kernel is asked for that one entry (the
    /// copy may not have read the event of an entry made a moment ago).
    fn mac(&self, ip: IpAddr) -> Mac<'_> {
        Box::pin(async move {
            let ifindex = self.ifindex()?;
            self.follow();
            if let Some(mac) = lock(&self.copy).by_ip.get(&(ifindex, ip)) {
                return Ok(Some(*mac));
            }
            match self.ask(ifindex, ip).await {
                Ok(found) => Ok(found),
                Err(_) => Ok(self
                    .entries()
                    .await?
                    .into_iter()
                    .find(|(a, _)| *a == ip)
                    .map(|(_, m)| m)),
            }
        })
    }

    fn lookup(&self, ip: IpAddr) -> Lookup<'_> {
        Box::pin(async move {
            if let Some(answer) = self.lookup_followed(ip).await {
                return answer;
            }
            let ifindex = self.ifindex()?;
            let entries: Vec<(IpAddr, MacAddr)> = self.dump().await?.iter().filter_map(|m| entry(m, ifindex)).collect();
            let Some(&(_, mac)) = entries.iter().find(|(a, _)| *a == ip) else {
                return Ok(None);
            };
            let mut addresses: Vec<IpAddr> = entries.iter().filter(|(_, m)| *m == mac).map(|(a, _)| *a).collect();
            addresses.sort();
            addresses.dedup();
            Ok(Some(Neighbour { mac, addresses }))
        })
    }
}
