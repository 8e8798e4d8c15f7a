//! The kernel's neighbour table via rtnetlink (RTM_GETNEIGH dump, IPv4 and IPv6 in one). A dump
//! needs no capabilities and takes well under a millisecond for hundreds of entries.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};

use super::{Lookup, Neighbour, NeighbourError, Neighbours, Table};
use crate::clients::MacAddr;

/// Reads the running kernel's table for one interface.
#[derive(Debug, Clone)]
pub struct KernelNeighbours {
    interface: String,
}

impl KernelNeighbours {
    /// Looks up neighbours on `interface` only.
    pub fn new(interface: String) -> Self {
        Self { interface }
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
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NeighbourError::Netlink(e.to_string()))?;
        let task = tokio::spawn(conn);
        let result = handle.neighbours().get().execute().try_collect().await;
        task.abort();
        result.map_err(|e| NeighbourError::Netlink(e.to_string()))
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
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => ip = Some(IpAddr::V6(*a)),
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr::new)
            }
            _ => {}
        }
    }
    let mac = mac.filter(|m| m.is_unicast())?;
    Some((ip?, mac))
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
        Ok(self.dump().await?.iter().filter_map(|m| entry(m, ifindex)).collect())
    }
}

impl Neighbours for KernelNeighbours {
    fn table(&self) -> Table<'_> {
        Box::pin(self.entries())
    }

    fn lookup(&self, ip: IpAddr) -> Lookup<'_> {
        Box::pin(async move {
            let entries = self.entries().await?;
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
