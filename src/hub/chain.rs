//! The hub's check of a site's hash chain, as its events arrive and when `hub verify` reads
//! them back: pure, so the rules are tested without a database. The chain is the school's
//! (`store::event_hash`); the hub never re-links it, it only says where it first breaks.

pub use crate::store::ChainEvent as Event;
use crate::store::{GENESIS, event_hash};

/// Where a site's chain stands at the hub: the last event taken in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its seq; 0 before the first.
    pub seq: i64,
    /// Its hash; [`GENESIS`] before the first.
    pub hash: String,
}

/// Whether `event`'s hash is the one its content makes.
fn hash_holds(event: &Event) -> bool {
    event_hash(&event.prev_hash, &event.at, &event.kind, &event.detail) == event.hash
}

impl Head {
    /// Before any event.
    pub fn start() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// What an arriving event is to the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// The next event, and it links: taken.
    Next,
    /// The next event, but it does not link or its hash does not hold: taken as sent, and the
    /// first such is recorded as the site's break.
    Broken(String),
    /// At or before the head: a resend, to compare with what is held.
    Resent,
}

/// How `event` arrives after `head`. The first event a site sends may continue from a purge
/// (its `prev_hash` is then the purged event's hash, not [`GENESIS`]): that is where the hub's
/// copy of the chain starts.
pub fn arrive(head: &Head, event: &Event) -> Arrival {
    if event.seq <= head.seq {
        return Arrival::Resent;
    }
    if !hash_holds(event) {
        return Arrival::Broken(format!(
            "event {}: its hash does not match its content (edited at the school, or in transit)",
            event.seq
        ));
    }
    if head.seq > 0 && event.prev_hash != head.hash {
        return Arrival::Broken(format!(
            "event {}: it does not follow event {} (an event between them is missing or was changed)",
            event.seq, head.seq
        ));
    }
    Arrival::Next
}

/// A stored chain read back in seq order, one event at a time (a site's whole chain is never
/// held in memory): what `hub verify` checks.
#[derive(Debug, Clone)]
pub struct Walk {
    head: Head,
    events: u64,
}

impl Default for Walk {
    fn default() -> Self {
        Self {
            head: Head::start(),
            events: 0,
        }
    }
}

impl Walk {
    /// Takes the next event; the break it makes, if it does not follow.
    ///
    /// # Errors
    /// The break, in words.
    pub fn step(&mut self, e: Event) -> Result<(), String> {
        match arrive(&self.head, &e) {
            Arrival::Next => {}
            Arrival::Broken(why) => return Err(why),
            Arrival::Resent => return Err(format!("event {}: out of order after event {}", e.seq, self.head.seq)),
        }
        self.head = Head {
            seq: e.seq,
            hash: e.hash,
        };
        self.events += 1;
        Ok(())
    }

    /// Events taken, and the head.
    pub fn end(self) -> (u64, Head) {
        (self.events, self.head)
    }
}

/// The first break in `events` (in seq order), or how many there are and the head.
///
/// # Errors
/// The first break, in words.
pub fn first_break(events: impl IntoIterator<Item = Event>) -> Result<(u64, Head), String> {
    let mut walk = Walk::default();
    for e in events {
        walk.step(e)?;
    }
    Ok(walk.end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64, from: &str) -> Vec<Event> {
        let mut prev = from.to_owned();
        (1..=n)
            .map(|seq| {
                let (at, kind, detail) = (
                    format!("2026-12-01T10:00:{seq:02}Z"),
                    "consent".to_owned(),
                    format!("{{\"consent\":{seq}}}"),
                );
                let hash = event_hash(&prev, &at, &kind, &detail);
                let e = Event {
                    seq: seq + 10,
                    at,
                    kind,
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn a_chain_that_links_verifies_from_genesis_or_a_purge() {
        let events = chain(5, GENESIS);
        let (n, head) = first_break(events.clone()).unwrap();
        assert_eq!((n, head.seq, head.hash.as_str()), (5, 15, events[4].hash.as_str()));
        // A school that purged before the hub existed: its first event follows the purged one.
        assert!(first_break(chain(3, &"ab".repeat(32))).is_ok());
    }

    #[test]
    fn an_edit_a_gap_or_a_reorder_is_named() {
        let mut edited = chain(4, GENESIS);
        edited[2].detail = "{\"consent\":99}".into();
        assert!(
            first_break(edited)
                .unwrap_err()
                .starts_with("event 13: its hash does not match")
        );
        let mut gap = chain(4, GENESIS);
        gap.remove(1);
        assert!(
            first_break(gap)
                .unwrap_err()
                .starts_with("event 13: it does not follow event 11")
        );
        let mut swapped = chain(3, GENESIS);
        swapped.swap(1, 2);
        assert!(first_break(swapped).is_err());
    }

    #[test]
    fn an_event_at_or_before_the_head_is_a_resend() {
        let events = chain(3, GENESIS);
        let head = Head {
            seq: events[1].seq,
            hash: events[1].hash.clone(),
        };
        assert_eq!(arrive(&head, &events[0]), Arrival::Resent);
        assert_eq!(arrive(&head, &events[1]), Arrival::Resent);
        assert_eq!(arrive(&head, &events[2]), Arrival::Next);
    }
}
