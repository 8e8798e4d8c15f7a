//! Who is this client: IP (v4 or v6) to MAC, from the kernel's neighbour table (ARP and ND) on
//! the guest interface. Never guesses: an entry that is incomplete or failed is "not known".

mod netlink;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

pub use netlink::{KernelNeighbours, interface_addresses};

use crate::clients::MacAddr;

/// A client as the kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Its MAC.
    pub mac: MacAddr,
    /// Every address it has on the guest interface (v4 and v6), the asked-for one included.
    pub addresses: Vec<IpAddr>,
}

/// Why a lookup failed (as opposed to "not in the table").
#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    /// The guest interface does not exist (any more).
    #[error("guest interface {0} not found (fix: check [guest] interface and that the interface is up)")]
    NoInterface(String),
    /// Talking to the kernel failed.
    #[error("reading the neighbour table: {0}")]
    Netlink(String),
}

/// The lookup future.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Option<Neighbour>, NeighbourError>> + Send + 'a>>;

/// The whole-table future.
pub type Table<'a> = Pin<Box<dyn Future<Output = Result<Vec<(IpAddr, MacAddr)>, NeighbourError>> + Send + 'a>>;

/// The one-address future.
pub type Mac<'a> = Pin<Box<dyn Future<Output = Result<Option<MacAddr>, NeighbourError>> + Send + 'a>>;

/// IP → MAC on the guest network.
pub trait Neighbours: Send + Sync + std::fmt::Debug {
    /// The MAC of the usable entry for `ip` on the guest interface (the portal's accept loop
    /// asks for each address it has not seen lately). By default, one read of `table`.
    fn mac(&self, ip: IpAddr) -> Mac<'_> {
        Box::pin(async move {
            Ok(self
                .table()
                .await?
                .into_iter()
                .find(|(a, _)| *a == ip)
                .map(|(_, mac)| mac))
        })
    }

    /// Every usable entry on the guest interface, as (address, MAC); one read of the kernel's
    /// table (the portal's accept loop caches it to count connections per device).
    fn table(&self) -> Table<'_>;

    /// The neighbour with address `ip` on the guest interface, or `None` if the kernel has no
    /// usable entry (the caller asks the guest to retry).
    fn lookup(&self, ip: IpAddr) -> Lookup<'_>;

    /// Each of `macs`' addresses in the copy followed from the kernel's events, the most
    /// recently confirmed (reachable) last; empty while there is no copy. Never asks the
    /// kernel: a hash lookup per device (RADIUS accounting follows open devices with it).
    fn recent(&self, macs: &[MacAddr]) -> Vec<Vec<IpAddr>> {
        vec![Vec::new(); macs.len()]
    }

    /// The devices with an address that appeared or was confirmed again since the last call
    /// (for its one caller, accounting's follower), or `None` when that is not known (no copy
    /// yet, the copy started again from a dump, or too many changed): then look at them all.
    fn take_changed(&self) -> Option<Vec<MacAddr>> {
        None
    }
}

/// A fixed table; for unit tests.
#[derive(Debug, Default, Clone)]
pub struct StaticNeighbours(pub Vec<(IpAddr, MacAddr)>);

impl Neighbours for StaticNeighbours {
    fn recent(&self, macs: &[MacAddr]) -> Vec<Vec<IpAddr>> {
        let of = |mac: &MacAddr| self.0.iter().filter(|(_, m)| m == mac).map(|(a, _)| *a).collect();
        macs.iter().map(of).collect()
    }

    fn table(&self) -> Table<'_> {
        let all = self.0.clone();
        Box::pin(async move { Ok(all) })
    }

    fn lookup(&self, ip: IpAddr) -> Lookup<'_> {
        let found = self.0.iter().find(|(a, _)| *a == ip).map(|&(_, mac)| Neighbour {
            mac,
            addresses: self.0.iter().filter(|(_, m)| *m == mac).map(|(a, _)| *a).collect(),
        });
        Box::pin(async move { Ok(found) })
    }
}
