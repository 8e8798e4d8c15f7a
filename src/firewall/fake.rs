//! A firewall that records what it was told; unit tests only. Every behaviour that crosses the
//! kernel is also tested for real in network namespaces (tests/integration/firewall.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use jiff::SignedDuration;

use super::{Firewall, FirewallError, Ruleset};
use crate::clients::MacAddr;

/// What the fake kernel holds.
#[derive(Debug, Default)]
pub(crate) struct FakeState {
    pub(crate) table: bool,
    /// Stands for the chains' listing; tests change it to simulate tampering.
    pub(crate) chains: String,
    pub(crate) set: BTreeMap<MacAddr, SignedDuration>,
    pub(crate) forgotten: Vec<IpAddr>,
    pub(crate) replaced: usize,
    pub(crate) fail_conntrack: bool,
    /// Listing the set's elements fails.
    pub(crate) fail_listing: bool,
    /// Removing an element fails (nft refuses).
    pub(crate) fail_deny: bool,
    /// What `outside_changes` says; tests move it to stand for a change made from outside.
    pub(crate) outside: super::OutsideChanges,
    /// How many times the table or the set was listed.
    pub(crate) listings: usize,
    /// Sizes of the transactions `allow_all` was given.
    pub(crate) batches: Vec<usize>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct FakeFirewall(pub(crate) Arc<Mutex<FakeState>>);

impl FakeFirewall {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Firewall for FakeFirewall {
    async fn replace(&self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        let mut s = self.state();
        s.table = true;
        s.chains = format!("chains for {}", ruleset.interface);
        s.replaced += 1;
        s.set = ruleset.allowed.iter().copied().collect();
        Ok(())
    }
    async fn fingerprint(&self) -> Result<Option<String>, FirewallError> {
        let mut s = self.state();
        s.listings += 1;
        Ok(s.table.then(|| s.chains.clone()))
    }
    async fn elements(&self) -> Result<BTreeSet<MacAddr>, FirewallError> {
        let mut s = self.state();
        s.listings += 1;
        Ok(s.set.keys().copied().collect())
    }
    async fn timeouts(&self) -> Result<Vec<(MacAddr, SignedDuration)>, FirewallError> {
        let s = self.state();
        if s.fail_listing {
            return Err(FirewallError::TimedOut("listing set allowed"));
        }
        Ok(s.set.iter().map(|(m, t)| (*m, *t)).collect())
    }
    async fn allow(&self, mac: MacAddr, left: SignedDuration) -> Result<(), FirewallError> {
        self.state().set.insert(mac, left);
        Ok(())
    }
    async fn allow_all(&self, elements: &[(MacAddr, SignedDuration)]) -> Result<(), FirewallError> {
        let mut s = self.state();
        s.batches.push(elements.len());
        s.set.extend(elements.iter().copied());
        Ok(())
    }
    async fn deny(&self, mac: MacAddr) -> Result<(), FirewallError> {
        let mut s = self.state();
        if s.fail_deny {
            return Err(FirewallError::TimedOut("deleting from set allowed"));
        }
        s.set.remove(&mac);
        Ok(())
    }
    async fn forget_connections(&self, ips: &[IpAddr], _became: super::Became) -> Result<(), FirewallError> {
        let mut s = self.state();
        if s.fail_conntrack {
            return Err(FirewallError::Kernel {
                what: "forgetting the device's connections",
                errno: 22,
            });
        }
        s.forgotten.extend_from_slice(ips);
        Ok(())
    }
    fn outside_changes(&self) -> super::OutsideChanges {
        self.state().outside
    }
}
