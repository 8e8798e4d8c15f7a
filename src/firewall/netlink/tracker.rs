//! Every live conntrack entry, known before it is needed. A thread reads conntrack's new and
//! destroy events and keeps each entry by its original source, so forgetting a device's
//! connections at accept or revoke is a few exact deletes, not a dump. A dump walks the
//! kernel's whole hash table (262,144 buckets by default, one lock each), about 6.5 ms per
//! address family on the bench machine however few entries there are, and an accept waits on it.
//!
//! The map is trusted only while it cannot have missed anything: from a dump read after the
//! socket joined the groups, until an event is lost (ENOBUFS: the queue overflowed) or the
//! entries outgrow `MAX_TRACKED`. Untrusted, `take` says so and the caller dumps as before; the
//! thread reads the table again, at once after a loss and `RETRY` later after an overflow (it
//! leaves the groups meanwhile, so a busy router pays nothing for it). With conntrack events
//! turned off (`net.netfilter.nf_conntrack_events = 0`) there is no tracker at all.
//!
//! Events are queued on the socket as the kernel confirms each entry, so `mark` and `take` read
//! whatever is queued first. Each entry is numbered as it is learnt; the mark taken just
//! before the device's element is added or deleted splits its entries into those from before
//! the change (all forgotten) and those since (forgotten only if they still belong to the old
//! state: see `Rule`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::wire::{self, Conntrack, CtEntry};
use super::{Conn, ENOBUFS, RECEIVE};
use crate::firewall::Became;

const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
const MSG_PEEK: i32 = 0x2;
const MSG_DONTWAIT: i32 = 0x40;
/// Entries kept at most (each about 150 bytes with its delete): past this, dumps again.
pub(super) const MAX_TRACKED: usize = 1 << 16;
/// How long after an overflow the table is read again.
const RETRY: Duration = Duration::from_secs(600);
/// How often the thread wakes with nothing to read (to read the table again when due).
const WAKE: Duration = Duration::from_secs(1);
/// The events' receive queue (capped by net.core.rmem_max).
const EVENT_QUEUE: usize = 4 << 20;
const EVENTS_SYSCTL: &str = "/proc/sys/net/netfilter/nf_conntrack_events";

/// The event socket and the map it feeds.
pub(super) struct Tracker {
    sock: Socket,
    state: Mutex<State>,
}

/// One live entry.
struct Tracked {
    /// When it was learnt (`State::learnt` then).
    learnt: u64,
    /// Destination rewritten (`IPS_DST_NAT`): redirected to the portal or the router's DNS.
    redirected: bool,
    /// The delete that removes exactly it.
    delete: Box<[u8]>,
}

/// Which of a device's entries to forget, given the mark taken just before it `became` open
/// or closed: every entry learnt up to the mark; of those learnt since, after opening the ones
/// redirected (made just before the element went in, so bound to the portal), and after
/// closing the ones not redirected (its last forwarded flows). A connection redirected to the
/// portal after closing is left alone: deleting it mid-answer breaks it, as its replies lose
/// their address rewrite.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    pub mark: u64,
    pub became: Became,
}

impl Rule {
    fn forgets(self, t: &Tracked) -> bool {
        t.learnt <= self.mark || (t.redirected == (self.became == Became::Open))
    }
}

/// The entries by original source and id.
#[derive(Default)]
pub(super) struct State {
    by_source: HashMap<IpAddr, HashMap<u32, Tracked>>,
    count: usize,
    /// How many entries have been learnt, ever: each is numbered by it.
    learnt: u64,
    trusted: bool,
    /// When the table is to be read again (`None`: not needed).
    reread: Option<Instant>,
    /// Whether events are wanted (not after an overflow, until the next read).
    subscribed: bool,
    /// Whether the socket is in the groups; `Tracker::follow` makes it what `subscribed` says.
    joined: bool,
    buf: Vec<u8>,
}

impl State {
    /// Applies every message of one datagram of events.
    pub(super) fn apply_all(&mut self, datagram: &[u8]) {
        for r in wire::replies(datagram) {
            self.apply(&r);
        }
    }

    /// Applies one message: an event, or a part of a dump. Ignored while out of the groups.
    fn apply(&mut self, r: &wire::Reply<'_>) {
        if !self.subscribed {
            return;
        }
        match wire::conntrack(r) {
            Some(Conntrack::Exists(CtEntry {
                source,
                id,
                redirected,
                delete: Ok(delete),
            })) => {
                self.learnt += 1;
                let learnt = self.learnt;
                // Learnt twice (a dump part and its event): the first time counts.
                let ids = self.by_source.entry(source).or_default();
                if let std::collections::hash_map::Entry::Vacant(v) = ids.entry(id) {
                    v.insert(Tracked {
                        learnt,
                        redirected,
                        delete: delete.into(),
                    });
                    self.count += 1;
                }
                if self.count > MAX_TRACKED {
                    self.overflow();
                }
            }
            // Cannot be deleted exactly, so the dump must find it.
            Some(Conntrack::Exists(_)) => self.lose("an entry too big to echo"),
            Some(Conntrack::Gone(source, id)) => {
                if let Some(ids) = self.by_source.get_mut(&source) {
                    if ids.remove(&id).is_some() {
                        self.count -= 1;
                    }
                    if ids.is_empty() {
                        self.by_source.remove(&source);
                    }
                }
            }
            None => {}
        }
    }

    fn clear(&mut self) {
        self.by_source = HashMap::new();
        self.count = 0;
    }

    /// Something may have been missed: untrusted until the table is read again, at once.
    pub(super) fn lose(&mut self, why: &str) {
        if self.trusted {
            tracing::warn!(
                why,
                "conntrack events lost; forgetting connections by a full dump until the table is read again"
            );
        }
        self.trusted = false;
        self.clear();
        if self.subscribed {
            self.reread = Some(Instant::now());
        }
    }

    /// Too many entries to keep: untrusted, out of the groups, and read again in `RETRY`.
    fn overflow(&mut self) {
        tracing::info!(
            max = MAX_TRACKED,
            "more conntrack entries than are tracked; forgetting connections by a full dump for the next ten minutes"
        );
        self.trusted = false;
        self.clear();
        self.subscribed = false;
        self.reread = Some(Instant::now() + RETRY);
    }

    /// The number of the last entry learnt, for `Rule`; `None` if the map is not to be trusted.
    pub(super) fn mark(&self) -> Option<u64> {
        self.trusted.then_some(self.learnt)
    }

    /// The deletes of the entries from `ips` that `rule` forgets, taken out of the map; `None`
    /// if the map is not to be trusted.
    pub(super) fn take(&mut self, ips: &[IpAddr], rule: Rule) -> Option<Vec<Vec<u8>>> {
        if !self.trusted {
            return None;
        }
        let mut deletes = Vec::new();
        for ip in ips {
            let Some(ids) = self.by_source.get_mut(ip) else {
                continue;
            };
            let before = ids.len();
            ids.retain(|_, t| {
                let forget = rule.forgets(t);
                if forget {
                    deletes.push(Vec::from(std::mem::take(&mut t.delete)));
                }
                !forget
            });
            self.count -= before - ids.len();
            if ids.is_empty() {
                self.by_source.remove(ip);
            }
        }
        Some(deletes)
    }
}

impl Tracker {
    /// Joins the groups and starts the thread; `None` (and one line saying why) if conntrack
    /// events are off or the socket cannot be had, and connections are then forgotten by dumps.
    pub(super) fn start() -> Option<Arc<Self>> {
        if std::fs::read_to_string(EVENTS_SYSCTL).is_ok_and(|v| v.trim() == "0") {
            tracing::info!(
                "conntrack events are off (net.netfilter.nf_conntrack_events = 0); each accept and revoke dumps the conntrack table instead"
            );
            return None;
        }
        let opened = Socket::new(NETLINK_NETFILTER).and_then(|mut s| {
            s.bind_auto()?;
            s.add_membership(NFNLGRP_CONNTRACK_NEW)?;
            s.add_membership(NFNLGRP_CONNTRACK_DESTROY)?;
            let r = socket2::SockRef::from(&s);
            let _ = r.set_recv_buffer_size(EVENT_QUEUE);
            r.set_read_timeout(Some(WAKE))?;
            Ok(s)
        });
        let sock = match opened {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read conntrack events; each accept and revoke dumps the conntrack table instead");
                return None;
            }
        };
        let tracker = Arc::new(Self {
            sock,
            state: Mutex::new(State {
                subscribed: true,
                joined: true,
                reread: Some(Instant::now()),
                ..State::default()
            }),
        });
        let t = tracker.clone();
        let started = std::thread::Builder::new()
            .name("aupgate-conntrack".into())
            .spawn(move || t.run());
        match started {
            Ok(_) => Some(tracker),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start tracking conntrack entries; each accept and revoke dumps the conntrack table instead");
                None
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mark for `Rule` (see `State::mark`), after reading every queued event.
    pub(super) fn mark(&self) -> Option<u64> {
        let mut st = self.lock();
        self.drain(&mut st);
        st.mark()
    }

    /// The deletes `rule` gives (see `State::take`), after reading every queued event.
    pub(super) fn take(&self, ips: &[IpAddr], rule: Rule) -> Option<Vec<Vec<u8>>> {
        let mut st = self.lock();
        self.drain(&mut st);
        st.take(ips, rule)
    }

    /// A delete of a taken entry failed: what the map says can no longer be relied on.
    pub(super) fn distrust(&self, why: &str) {
        self.lock().lose(why);
    }

    /// Waits for events (without the lock), then reads them, and the table when due.
    fn run(&self) {
        let mut peek = Vec::with_capacity(64);
        loop {
            peek.clear();
            let waited = super::recv(&self.sock, &mut peek, MSG_PEEK);
            let mut st = self.lock();
            match waited {
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => st.lose("the event queue overflowed"),
                Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    st.lose("reading the events failed");
                    drop(st);
                    tracing::warn!(error = %e, "reading conntrack events failed");
                    std::thread::sleep(WAKE);
                    continue;
                }
                _ => {}
            }
            self.drain(&mut st);
            if st.reread.is_some_and(|at| at <= Instant::now()) {
                self.reread(&mut st);
            }
        }
    }

    /// Leaves or joins the groups as `st.subscribed` says; `false` if joining failed.
    fn follow(&self, st: &mut State) -> bool {
        if st.joined == st.subscribed {
            return true;
        }
        let changed = if st.subscribed {
            self.sock
                .add_membership(NFNLGRP_CONNTRACK_NEW)
                .and_then(|()| self.sock.add_membership(NFNLGRP_CONNTRACK_DESTROY))
        } else {
            let _ = self.sock.drop_membership(NFNLGRP_CONNTRACK_NEW);
            self.sock.drop_membership(NFNLGRP_CONNTRACK_DESTROY)
        };
        match changed {
            Ok(()) => {
                st.joined = st.subscribed;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot change the conntrack event groups");
                false
            }
        }
    }

    /// Applies every event queued on the socket.
    fn drain(&self, st: &mut State) {
        let mut buf = std::mem::take(&mut st.buf);
        loop {
            buf.clear();
            buf.reserve(RECEIVE);
            match super::recv(&self.sock, &mut buf, MSG_DONTWAIT) {
                Ok(_) => st.apply_all(&buf),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => st.lose("the event queue overflowed"),
                Err(_) => {
                    st.lose("reading the events failed");
                    break;
                }
            }
        }
        st.buf = buf;
        self.follow(st);
    }

    /// Reads the whole table afresh (rejoining the groups first if it had left them); trusted
    /// once read, unless it overflowed meanwhile. Events queued meanwhile are read after it.
    fn reread(&self, st: &mut State) {
        const WHAT: &str = "reading the conntrack table";
        st.reread = None;
        st.subscribed = true;
        if !self.follow(st) {
            st.subscribed = false;
            st.reread = Some(Instant::now() + RETRY);
            return;
        }
        st.clear();
        let read = Conn::open().map_err(super::io(WHAT)).and_then(|mut c| {
            for v6 in [false, true] {
                let seq = c.next_seq();
                c.dump(WHAT, &wire::dump_conntrack(v6, seq), seq, |r| st.apply(r))?;
            }
            Ok(())
        });
        match read {
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the conntrack table; trying again in a second");
                st.reread = Some(Instant::now() + WAKE);
            }
            // An overflow while reading has set its own retry.
            Ok(()) if st.subscribed => {
                let first = !st.trusted;
                st.trusted = true;
                self.drain(st);
                if first && st.trusted {
                    tracing::info!(entries = st.count, "conntrack entries tracked from events");
                }
            }
            Ok(()) => {
                self.follow(st);
            }
        }
    }
}

#[cfg(test)]
mod tests;
