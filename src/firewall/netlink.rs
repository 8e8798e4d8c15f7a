//! The per-guest half of the firewall over the daemon's own netlink socket: set elements added,
//! deleted and listed, conntrack entries forgotten, and changes from outside noticed, with no
//! process spawned. An element change costs microseconds, not the 2-3 ms of starting `nft`.
//! Installing the whole table stays `nft -f` (rare, and `reject`/`redirect` rules are long text).
//!
//! Everything here blocks, briefly (one request and its answers); `NftFirewall` runs it on
//! tokio's blocking pool. The socket is opened on first use and thrown away after any I/O
//! error, so a later call starts clean.

mod tracker;
mod wire;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr};

use super::{Became, FirewallError, OutsideChanges, SET, TABLE};
use crate::clients::MacAddr;
use wire::Element;

/// How long one request waits for the kernel's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The multicast group of nf_tables' change events (what `nft monitor` reads).
const NFNLGRP_NFTABLES: u32 = 7;
const ENOENT: i32 = 2;
const EPERM: i32 = 1;
const ENOBUFS: i32 = 105;
/// Receive buffer: a dump part is at most a few tens of KiB.
const RECEIVE: usize = 1 << 17;
/// The socket's receive queue (capped by net.core.rmem_max): answers queue here until read.
const RECEIVE_QUEUE: usize = 1 << 20;
/// Conntrack deletes sent at once: each is answered, and a few hundred answers at once can
/// overflow a default receive queue (each costs far more than its 36 bytes there).
const DELETES_AT_ONCE: usize = 64;

/// One `recv` into `buf`, again if a signal came first. The kernel never restarts a receive on
/// a socket with a timeout (signal(7)), and every socket here has one; so a signal handled on
/// this thread, or a debugger attaching (strace), would otherwise read as a failed read: an
/// accept refused, or the conntrack events taken for lost.
fn recv(sock: &Socket, buf: &mut Vec<u8>, flags: i32) -> std::io::Result<usize> {
    loop {
        match sock.recv(buf, flags) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// One open request socket.
struct Conn {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> FirewallError {
    move |source| FirewallError::Io { what, source }
}

fn kernel(what: &'static str, errno: i32) -> FirewallError {
    if errno == EPERM {
        FirewallError::NotPermitted(what)
    } else {
        FirewallError::Kernel { what, errno }
    }
}

impl Conn {
    fn open() -> std::io::Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        let s = socket2::SockRef::from(&sock);
        s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        // Best effort: the default is enough for everything but a burst of answers.
        let _ = s.set_recv_buffer_size(RECEIVE_QUEUE);
        Ok(Self {
            sock,
            seq: std::process::id().wrapping_shl(16),
            buf: Vec::with_capacity(RECEIVE),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, what: &'static str, bytes: &[u8]) -> Result<(), FirewallError> {
        let sent = self.sock.send(bytes, 0).map_err(io(what))?;
        if sent == bytes.len() {
            Ok(())
        } else {
            Err(FirewallError::Io {
                what,
                source: std::io::Error::other(format!("sent {sent} of {} bytes", bytes.len())),
            })
        }
    }

    /// Reads one datagram into `buf`; a timeout is `TimedOut`.
    fn receive(&mut self, what: &'static str) -> Result<(), FirewallError> {
        self.buf.clear();
        self.buf.reserve(RECEIVE);
        match recv(&self.sock, &mut self.buf, 0) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err(FirewallError::TimedOut(what))
            }
            Err(e) => Err(FirewallError::Io { what, source: e }),
        }
    }

    /// Sends `changes` as one nf_tables transaction. `Ok(None)`: committed. `Ok(Some((i,
    /// errno)))`: change `i` was refused, so nothing was (a batch is all or nothing).
    fn batch(&mut self, what: &'static str, changes: &[Element]) -> Result<Option<(usize, i32)>, FirewallError> {
        let begin = self.next_seq();
        let mut datagram = wire::batch_mark(false, begin);
        let mut seqs = Vec::with_capacity(changes.len());
        for change in changes {
            let seq = self.next_seq();
            seqs.push(seq);
            let msg = wire::element(TABLE, SET, *change, seq).map_err(|e| FirewallError::Unparsable {
                what,
                detail: e.to_string(),
            })?;
            datagram.extend_from_slice(&msg);
        }
        datagram.extend_from_slice(&wire::batch_mark(true, self.next_seq()));
        self.send(what, &datagram)?;
        // nfnetlink runs the batch inside the send: every answer is queued by now. One per
        // change (an ACK means "processed"; only no error at all means committed), or one
        // error for the batch as a whole.
        let mut answered = 0;
        let mut refused = None;
        while answered < seqs.len() {
            self.receive(what)?;
            for r in wire::replies(&self.buf) {
                let Some((seq, errno, _)) = r.error() else { continue };
                if seq == begin && errno != 0 {
                    return Err(kernel(what, errno));
                }
                if let Some(i) = seqs.iter().position(|s| *s == seq) {
                    answered += 1;
                    if errno != 0 && refused.is_none() {
                        refused = Some((i, errno));
                    }
                }
            }
        }
        Ok(refused)
    }

    /// Sends the dump `request` (sequence `seq`) and hands each answer to `each`.
    fn dump(
        &mut self,
        what: &'static str,
        request: &[u8],
        seq: u32,
        mut each: impl FnMut(&wire::Reply<'_>),
    ) -> Result<(), FirewallError> {
        self.send(what, request)?;
        loop {
            self.receive(what)?;
            for r in wire::replies(&self.buf) {
                if r.seq != seq {
                    continue;
                }
                if r.kind == wire::NLMSG_DONE {
                    return Ok(());
                }
                if let Some((_, errno, _)) = r.error() {
                    return if errno == 0 { Ok(()) } else { Err(kernel(what, errno)) };
                }
                each(&r);
            }
        }
    }
}

/// The request sockets, each opened when first needed, and the watch on outside changes.
#[derive(Default)]
pub(super) struct Netlink {
    /// Element changes and conntrack clean-ups: short requests an accept or a revoke waits on.
    conn: Mutex<Option<Conn>>,
    /// Listing the set: with 50,000 guests a dump of some milliseconds, so it has a socket of
    /// its own and a revoke's delete never queues behind it.
    listing: Mutex<Option<Conn>>,
    outside: OnceLock<Arc<Counts>>,
    /// Every conntrack entry, from events (`None`: events are off; dumps then).
    tracker: OnceLock<Option<Arc<tracker::Tracker>>>,
    /// The tracker's mark taken just before the last element change (`None`: not to be
    /// trusted then), for the `forget` that follows it.
    mark: Mutex<Option<u64>>,
}

/// What the event watch has counted, shared with its thread.
#[derive(Debug, Default)]
struct Counts {
    table: AtomicU64,
    elements: AtomicU64,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

impl Netlink {
    /// Runs `op` on the request socket; see `on`.
    fn with<T>(
        &self,
        what: &'static str,
        op: impl FnOnce(&mut Conn) -> Result<T, FirewallError>,
    ) -> Result<T, FirewallError> {
        Self::on(&self.conn, what, op)
    }

    /// Runs `op` on the socket in `slot`, opening it first if needed; after an I/O error or a
    /// timeout the socket is dropped (answers may still be on their way), so the next call
    /// starts clean.
    fn on<T>(
        slot: &Mutex<Option<Conn>>,
        what: &'static str,
        op: impl FnOnce(&mut Conn) -> Result<T, FirewallError>,
    ) -> Result<T, FirewallError> {
        let mut guard = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let conn = match guard.as_mut() {
            Some(c) => c,
            None => guard.insert(Conn::open().map_err(io(what))?),
        };
        let result = op(conn);
        if matches!(result, Err(FirewallError::Io { .. } | FirewallError::TimedOut(_))) {
            *guard = None;
        }
        result
    }

    /// Applies `changes` in one transaction; see `Conn::batch`. The tracker's mark is taken
    /// first: what a device started before its element changed is what `forget` forgets.
    fn apply(&self, what: &'static str, changes: &[Element]) -> Result<Option<(usize, i32)>, FirewallError> {
        let mark = self.tracker.get().and_then(Option::as_ref).and_then(|t| t.mark());
        *self.mark.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = mark;
        self.with(what, |c| c.batch(what, changes))
    }

    /// Puts `mac` in the set for `timeout_ms`, or refreshes it: added exclusively, and if it
    /// is there already, deleted and added in one transaction (re-adding does not refresh the
    /// timeout on every kernel).
    pub(super) fn allow(&self, mac: MacAddr, timeout_ms: u64) -> Result<(), FirewallError> {
        const WHAT: &str = "adding to set allowed";
        const EEXIST: i32 = 17;
        let add = |exclusive| Element::Add {
            mac,
            timeout_ms,
            exclusive,
        };
        match self.apply(WHAT, &[add(true)])? {
            None => Ok(()),
            Some((_, EEXIST)) => match self.apply(WHAT, &[Element::Delete(mac), add(false)])? {
                None => Ok(()),
                Some((_, errno)) => Err(kernel(WHAT, errno)),
            },
            Some((_, errno)) => Err(kernel(WHAT, errno)),
        }
    }

    /// Adds every one of `elements` (MAC, milliseconds) exclusively in one transaction. If any
    /// is refused (one already there, say) nothing is added, and `Ok(false)` says to add them
    /// one by one instead.
    pub(super) fn allow_all(&self, elements: &[(MacAddr, u64)]) -> Result<bool, FirewallError> {
        const WHAT: &str = "adding to set allowed";
        let adds: Vec<Element> = elements
            .iter()
            .map(|&(mac, timeout_ms)| Element::Add {
                mac,
                timeout_ms,
                exclusive: true,
            })
            .collect();
        Ok(self.apply(WHAT, &adds)?.is_none())
    }

    /// Removes `mac` from the set; absent is done.
    pub(super) fn deny(&self, mac: MacAddr) -> Result<(), FirewallError> {
        const WHAT: &str = "deleting from set allowed";
        match self.apply(WHAT, &[Element::Delete(mac)])? {
            None | Some((_, ENOENT)) => Ok(()),
            Some((_, errno)) => Err(kernel(WHAT, errno)),
        }
    }

    /// The set's elements with the milliseconds each has left (`None`: no timeout).
    pub(super) fn elements(&self) -> Result<Vec<(MacAddr, Option<u64>)>, FirewallError> {
        const WHAT: &str = "listing set allowed";
        Self::on(&self.listing, WHAT, |c| {
            let seq = c.next_seq();
            let request = wire::dump_set(TABLE, SET, seq).map_err(|e| FirewallError::Unparsable {
                what: WHAT,
                detail: e.to_string(),
            })?;
            let mut out = Vec::new();
            c.dump(WHAT, &request, seq, |r| out.extend(wire::set_elements(r)))?;
            Ok(out)
        })
    }

    /// The ruleset's generation id: one small message, changed by every commit.
    pub(super) fn generation(&self) -> Result<u32, FirewallError> {
        const WHAT: &str = "reading the ruleset generation";
        self.with(WHAT, |c| {
            let seq = c.next_seq();
            c.send(WHAT, &wire::get_generation(seq))?;
            loop {
                c.receive(WHAT)?;
                for r in wire::replies(&c.buf) {
                    if r.seq != seq {
                        continue;
                    }
                    if let Some((_, errno, _)) = r.error() {
                        return Err(kernel(WHAT, errno));
                    }
                    if let Some(id) = wire::generation(&r) {
                        return Ok(id);
                    }
                }
            }
        })
    }

    /// Deletes the conntrack entries whose original source is one of `ips`, of connections
    /// started before the device `became` open or closed (see `Firewall::forget_connections`);
    /// returns how many. Each entry is deleted by its own tuple, zone and id, so a new flow
    /// reusing a tuple is not touched, and an entry already gone counts as done. The entries
    /// come from the tracker's map while it is to be trusted (`tracker.rs`: no dump at all,
    /// and `tracker::Rule` says which). Otherwise, or if a delete of those fails, one dump per
    /// address family is matched here (the kernel's own source filter is wrong for IPv6 on the
    /// kernels we tested): after opening every entry, after closing every one not redirected
    /// (a dump cannot tell when an entry was made). If answers were lost (ENOBUFS: the receive
    /// queue overflowed), it looks again, up to three times: what was deleted is gone from the
    /// next dump.
    pub(super) fn forget(&self, ips: &[IpAddr], became: Became) -> Result<usize, FirewallError> {
        const WHAT: &str = "forgetting the device's connections";
        let mark = self
            .mark
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = self.tracker.get().and_then(Option::as_ref)
            && let Some(mark) = mark
            && let Some(deletes) = t.take(ips, tracker::Rule { mark, became })
        {
            match self.with(WHAT, |c| delete_each(c, WHAT, deletes)) {
                Ok(deleted) => {
                    tracing::debug!(deleted, "connections forgotten from the tracked entries");
                    return Ok(deleted);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a delete of a tracked entry failed; dumping instead");
                    t.distrust("a delete failed");
                }
            }
        }
        let mut attempt = 1;
        loop {
            match self.forget_once(ips, became) {
                Err(FirewallError::Io { source, .. }) if source.raw_os_error() == Some(ENOBUFS) && attempt < 3 => {
                    tracing::debug!(attempt, "conntrack answers lost; looking again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn forget_once(&self, ips: &[IpAddr], became: Became) -> Result<usize, FirewallError> {
        const WHAT: &str = "forgetting the device's connections";
        self.with(WHAT, |c| {
            let mut deleted = 0;
            for v6 in [false, true] {
                let sources: Vec<IpAddr> = ips.iter().copied().filter(|ip| ip.is_ipv6() == v6).collect();
                if sources.is_empty() {
                    continue;
                }
                let seq = c.next_seq();
                let mut deletes = Vec::new();
                let mut too_big = false;
                c.dump(
                    WHAT,
                    &wire::dump_conntrack(v6, seq),
                    seq,
                    |r| match wire::conntrack_delete(r, &sources, 0) {
                        // Redirected to the portal since it was closed: left alone.
                        Some(_) if became == Became::Closed && wire::conntrack_redirected(r) => {}
                        Some(Ok(bytes)) => deletes.push(bytes),
                        Some(Err(_)) => too_big = true,
                        None => {}
                    },
                )?;
                if too_big {
                    return Err(FirewallError::Unparsable {
                        what: WHAT,
                        detail: "a conntrack entry too big to echo".into(),
                    });
                }
                deleted += delete_each(c, WHAT, deletes)?;
            }
            Ok(deleted)
        })
    }

    /// How many changes to our table from outside this process the kernel has reported; any
    /// change of the counts means "look again". The first call starts the watch (a thread
    /// reading nf_tables' change events, as `nft monitor` does) and counts one table change,
    /// since nothing before it was watched. Lost events (a full buffer) and a watch that cannot
    /// run count as table changes, so nothing goes unnoticed: at worst the gatekeeper looks
    /// every second, as it would without events.
    pub(super) fn outside_changes(&self) -> OutsideChanges {
        // The daemon's first look: from here on, conntrack entries are tracked too.
        self.tracker.get_or_init(tracker::Tracker::start);
        let counts = self.outside.get_or_init(|| {
            let counts = Arc::new(Counts::default());
            counts.table.store(1, Ordering::Relaxed);
            let c = counts.clone();
            let started = std::thread::Builder::new()
                .name("aupgate-nft-events".into())
                .spawn(move || watch_events(&c));
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start watching nftables events; checking every second instead");
                counts.table.store(u64::MAX, Ordering::Relaxed);
            }
            counts
        });
        let table = counts.table.load(Ordering::Relaxed);
        OutsideChanges {
            // A watch that could not start: a different count every call.
            table: if table == u64::MAX {
                counts.elements.fetch_add(1, Ordering::Relaxed)
            } else {
                table
            },
            elements: counts.elements.load(Ordering::Relaxed),
        }
    }
}

/// Sends `deletes` (sequence numbers filled in), `DELETES_AT_ONCE` to a datagram, each
/// datagram's answers read before the next goes, and counts the entries deleted; ENOENT (gone
/// meanwhile) is done, any other refusal an error.
fn delete_each(c: &mut Conn, what: &'static str, deletes: Vec<Vec<u8>>) -> Result<usize, FirewallError> {
    let mut deleted = 0;
    let mut failed = None;
    let mut pending = deletes.into_iter().peekable();
    while pending.peek().is_some() {
        let mut datagram = Vec::new();
        let mut seqs = Vec::new();
        while let Some(next) = pending.next_if(|_| seqs.len() < DELETES_AT_ONCE) {
            let seq = c.next_seq();
            let mut msg = next;
            if let Some(field) = msg.get_mut(8..12) {
                field.copy_from_slice(&seq.to_ne_bytes());
            }
            seqs.push(seq);
            datagram.extend_from_slice(&msg);
        }
        c.send(what, &datagram)?;
        let mut answered = 0;
        while answered < seqs.len() {
            c.receive(what)?;
            for r in wire::replies(&c.buf) {
                let Some((seq, errno, _)) = r.error() else { continue };
                if !seqs.contains(&seq) {
                    continue;
                }
                answered += 1;
                match errno {
                    0 => deleted += 1,
                    ENOENT => {}
                    e => failed = failed.or(Some(e)),
                }
            }
        }
    }
    match failed {
        None => Ok(deleted),
        Some(errno) => Err(kernel(what, errno)),
    }
}

/// Whether the process (or thread: the kernel names the thread that committed) `pid` is this
/// process, `own`. Element changes are made on tokio's blocking threads, each its own id; a
/// thread id is unique while the thread lives, so one of ours is in `/proc/self/task`. A
/// thread gone meanwhile (its id perhaps reused) makes a change look outside: one extra look.
fn ours(own: u32, pid: u32) -> bool {
    pid == own || std::path::Path::new(&format!("/proc/self/task/{pid}")).exists()
}

/// The event watch: counts, in `counts`, each transaction from another process that touched
/// `inet aupgate`: as an element change if it touched only the `allowed` set's elements, as a
/// table change otherwise. Every transaction's events end with a NEWGEN naming the process;
/// ours (any of our threads, `ours`) are left out: the gatekeeper made them. `nft` run by the
/// daemon itself is counted, harmlessly (one extra look).
fn watch_events(counts: &Counts) {
    let own = std::process::id();
    let mut warned = false;
    let mut first = true;
    loop {
        let sock = Socket::new(NETLINK_NETFILTER).and_then(|mut s| {
            s.bind_auto()?;
            s.add_membership(NFNLGRP_NFTABLES)?;
            // Capped by net.core.rmem_max; a bigger burst is ENOBUFS, counted below.
            let _ = socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20);
            Ok(s)
        });
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                if !warned {
                    tracing::error!(error = %e, "cannot watch nftables events; checking every second instead");
                    warned = true;
                }
                counts.table.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // A reopen may have missed something (the first open is covered by the first count).
        if !first {
            counts.table.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let mut buf = Vec::with_capacity(RECEIVE);
        let (mut table, mut elements) = (false, false);
        loop {
            buf.clear();
            if let Err(e) = recv(&sock, &mut buf, 0) {
                counts.table.fetch_add(1, Ordering::Relaxed);
                if e.raw_os_error() == Some(ENOBUFS) {
                    continue;
                }
                tracing::warn!(error = %e, "reading nftables events failed; reopening");
                std::thread::sleep(Duration::from_secs(1));
                break;
            }
            for r in wire::replies(&buf) {
                let (subsys, kind) = r.nf_kind();
                if subsys != wire::NFNL_SUBSYS_NFTABLES {
                    continue;
                }
                if kind == wire::NFT_MSG_NEWGEN {
                    if !wire::generation_pid(&r).is_some_and(|pid| ours(own, pid)) {
                        if table {
                            counts.table.fetch_add(1, Ordering::Relaxed);
                        } else if elements {
                            counts.elements.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    (table, elements) = (false, false);
                } else if wire::event_table(&r) == Some((wire::NFPROTO_INET, TABLE.as_bytes())) {
                    if matches!(kind, wire::NFT_MSG_NEWSETELEM | wire::NFT_MSG_DELSETELEM) {
                        // The walled garden's sets are dnsmasq's to fill: only `allowed` is
                        // compared with the store.
                        elements |= wire::event_set(&r) == Some(SET.as_bytes());
                    } else {
                        table = true;
                    }
                }
            }
        }
    }
}
