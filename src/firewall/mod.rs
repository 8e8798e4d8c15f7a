//! The only code that talks to netfilter, and mechanism only: the `Firewall` trait, its nft
//! implementation, the pure ruleset and the boot file. Owns exactly one table, `inet aupgate`,
//! and nothing else on the system. It knows nothing of the store: keeping the kernel equal to
//! the store is `access::gatekeeper`'s.

pub mod boot;
mod netlink;
mod nft;
mod ruleset;

#[cfg(test)]
pub(crate) mod fake;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;

use jiff::SignedDuration;

pub use nft::NftFirewall;
pub use ruleset::{GARDEN_SETS, Ruleset, SET, TABLE};

use crate::clients::MacAddr;

/// What can go wrong talking to netfilter.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The `nft` program is not installed.
    #[error("the nft program was not found (fix: apt-get install nftables)")]
    NftMissing,
    /// The kernel refused a netlink request; `errno` says why.
    #[error("{what}: the kernel refused: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel {
        /// What we were doing.
        what: &'static str,
        /// The kernel's error number.
        errno: i32,
    },
    /// The kernel refused: not root / no CAP_NET_ADMIN.
    #[error("{0}: operation not permitted (fix: run aupgate as root or with CAP_NET_ADMIN)")]
    NotPermitted(&'static str),
    /// A command failed; `stderr` is the tool's own message.
    #[error("{what} failed: {stderr}")]
    Failed {
        /// What we were doing.
        what: &'static str,
        /// The tool's error text.
        stderr: String,
    },
    /// A command, or the kernel's answer, did not come in time.
    #[error("{0} did not finish within 10 s")]
    TimedOut(&'static str),
    /// The tool's output could not be understood.
    #[error("cannot parse the output of {what}: {detail}")]
    Unparsable {
        /// What we were doing.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Spawning or talking to a helper program failed.
    #[error("running {what}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// The netfilter operations aupgate needs; `NftFirewall` is the real one.
pub trait Firewall: Send + Sync + 'static {
    /// Replaces our table, atomically, with `ruleset`.
    fn replace(&self, ruleset: &Ruleset) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// Our table's chains and set definitions as the kernel lists them (set elements left out),
    /// or `None` if the table does not exist. Compared with the listing taken right after we
    /// installed it, this shows any change made from outside.
    fn fingerprint(&self) -> impl Future<Output = Result<Option<String>, FirewallError>> + Send;
    /// The MACs in the `allowed` set now.
    fn elements(&self) -> impl Future<Output = Result<BTreeSet<MacAddr>, FirewallError>> + Send;
    /// The elements of the `allowed` set that time out, with the time each has left. Elements
    /// without a timeout are left out: aupgate never adds one, so they are not ours.
    fn timeouts(&self) -> impl Future<Output = Result<Vec<(MacAddr, SignedDuration)>, FirewallError>> + Send;
    /// Puts `mac` in the set (or refreshes it) with `left` until it times out.
    fn allow(&self, mac: MacAddr, left: SignedDuration) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// Puts every one of `elements` in the set in one transaction (all or none), each for its
    /// time left. The default does them one by one.
    fn allow_all(
        &self,
        elements: &[(MacAddr, SignedDuration)],
    ) -> impl Future<Output = Result<(), FirewallError>> + Send {
        async move {
            for &(mac, left) in elements {
                self.allow(mac, left).await?;
            }
            Ok(())
        }
    }
    /// Removes `mac` from the set; absent is not an error.
    fn deny(&self, mac: MacAddr) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// Removes the conntrack entries of connections any of `ips` started before the device
    /// `became` open or closed (the last `allow`/`allow_all`/`deny`), so their next packets are
    /// judged by the current rules: after opening, nothing is still redirected to the portal;
    /// after closing, nothing it had open keeps flowing. What the device started since is left
    /// alone: a connection redirected to the portal after closing, say, which deleting would
    /// break mid-answer (its replies would lose their address rewrite).
    fn forget_connections(
        &self,
        ips: &[IpAddr],
        became: Became,
    ) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// What opening a device takes: `allow(mac, left)`, then, if that worked,
    /// `forget_connections(ips, Became::Open)`. The default calls the two; a mechanism may do
    /// both in one go (the netlink one does, saving a thread hop in every accept).
    fn open_device(
        &self,
        mac: MacAddr,
        left: SignedDuration,
        ips: &[IpAddr],
    ) -> impl Future<Output = Result<(), FirewallError>> + Send {
        async move {
            self.allow(mac, left).await?;
            self.forget_connections(ips, Became::Open).await
        }
    }
    /// Counts that change whenever something other than this process may have changed our
    /// table or its set (the kernel's change events; lost events count as table changes).
    /// Cheap: the gatekeeper reads them every second and looks at the kernel only when they
    /// moved, at the set alone when only elements changed.
    fn outside_changes(&self) -> OutsideChanges;
}

/// How many changes from outside this process the kernel has reported for our table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutsideChanges {
    /// Transactions that touched the table itself (its chains, rules or sets, or deleted it),
    /// plus any events lost.
    pub table: u64,
    /// Transactions that touched only the `allowed` set's elements.
    pub elements: u64,
}

/// What the device just became, for `Firewall::forget_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Became {
    Open,
    Closed,
}

/// What the table is built from, apart from who is allowed.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// The guest interface.
    pub interface: String,
    /// The portal port.
    pub portal_port: u16,
    /// The portal's HTTPS port, if HTTPS is on.
    pub https_port: Option<u16>,
    /// The walled garden's element timeout (seconds), if it has domains.
    pub garden_secs: Option<u32>,
}

impl TableSpec {
    /// The table `config` asks for.
    pub fn for_config(config: &crate::config::Config) -> Self {
        Self {
            interface: config.guest.interface.clone(),
            portal_port: config.portal.port,
            https_port: config.portal.tls.as_ref().map(|t| t.port),
            garden_secs: (!config.guest.walled_garden.is_empty()).then_some(config.guest.walled_garden_seconds),
        }
    }

    /// The whole table, letting exactly `allowed` through.
    pub fn ruleset(&self, allowed: Vec<(MacAddr, SignedDuration)>) -> Ruleset {
        Ruleset {
            interface: self.interface.clone(),
            portal_port: self.portal_port,
            https_port: self.https_port,
            allowed,
            garden: self.garden_secs.map(|timeout_secs| ruleset::Garden {
                timeout_secs,
                addresses: Vec::new(),
            }),
        }
    }
}

/// The daemon's first act, before it reads anything that could be broken (policy, templates,
/// store): our table goes into the kernel. After a boot it is absent, and goes in closed (an
/// empty `allowed`). After a restart or crash it is rebuilt in one transaction with exactly the
/// elements the kernel still holds and the time each has left, so accepted devices see no gap
/// (invariant 3) while chains changed from outside are put right. Who should really be allowed
/// is decided later, from the store, by `Writer::reconcile_all`; if the store cannot be opened,
/// nothing more is ever opened. Returns how many elements were kept.
///
/// # Errors
/// If nft is missing or the kernel refuses the table.
pub async fn close_at_start<F: Firewall>(firewall: &F, spec: &TableSpec) -> Result<usize, FirewallError> {
    let kept = match firewall.fingerprint().await? {
        None => Vec::new(),
        Some(_) => firewall.timeouts().await.unwrap_or_else(|e| {
            // Closed is always safe: accepted devices are let in again from the store.
            tracing::warn!(error = %e, "cannot list the devices let through; installing the table closed");
            Vec::new()
        }),
    };
    let n = kept.len();
    firewall.replace(&spec.ruleset(kept)).await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::fake::FakeFirewall;
    use super::*;

    #[tokio::test]
    async fn issue_10_start_installs_the_table_closed_or_keeps_what_the_kernel_has() {
        let spec = TableSpec {
            interface: "guest0".into(),
            portal_port: 8080,
            https_port: None,
            garden_secs: None,
        };
        // After a boot: no table. It goes in with nobody allowed.
        let fake = FakeFirewall::default();
        assert_eq!(close_at_start(&fake, &spec).await.unwrap(), 0);
        {
            let s = fake.0.lock().unwrap();
            assert!(s.table && s.set.is_empty() && s.replaced == 1);
        }
        // After a restart: the chains are rebuilt (an outside edit undone) and the kernel's elements
        // kept with their time left, so accepted devices see no gap before the store is read.
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        {
            let mut s = fake.0.lock().unwrap();
            s.set.insert(mac, SignedDuration::from_secs(600));
            s.chains = "tampered".into();
        }
        assert_eq!(close_at_start(&fake, &spec).await.unwrap(), 1);
        {
            let s = fake.0.lock().unwrap();
            assert_eq!(s.chains, "chains for guest0");
            assert_eq!(s.set.get(&mac), Some(&SignedDuration::from_secs(600)));
            assert_eq!(s.replaced, 2);
        }
        // If the kernel's elements cannot be listed, the table still goes in, closed.
        fake.0.lock().unwrap().fail_listing = true;
        assert_eq!(close_at_start(&fake, &spec).await.unwrap(), 0);
        let s = fake.0.lock().unwrap();
        assert!(s.table && s.set.is_empty() && s.replaced == 3);
    }
}
