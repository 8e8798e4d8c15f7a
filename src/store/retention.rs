//! Forgetting, the two ways the law asks for: one device on request (`erase`), and everything
//! older than the school's retention period (`purge`). Both keep the audit chain verifiable: an
//! erasure blanks personal fields and records which records it blanked; a purge deletes the
//! oldest events and records the chain head the remaining events continue from.

use jiff::{SignedDuration, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::json;

use super::accounting;
use super::audit::{ended, returning_ids};
use super::consents::end_device;
use super::{EndReason, EventKind};
use super::{Store, StoreError, chain_head, forget_old_pages, insert_event, ts};
use crate::clients::MacAddr;

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// Consents whose personal fields were blanked.
    pub consents: Vec<i64>,
    /// Events that no longer name the device.
    pub events: Vec<i64>,
    /// Exceptions whose device and reason were blanked.
    pub exceptions: Vec<i64>,
    /// Access-code attempts deleted.
    pub code_attempts: u64,
    /// Sessions (consents or exceptions) that were still open and were ended first.
    pub sessions_ended: u64,
}

/// What a purge removes (or, for a dry run, would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Purge {
    /// Personal data from before this time goes.
    pub cutoff: Timestamp,
    /// Events deleted from the start of the chain.
    pub events: u64,
    /// The first event kept (`None`: every event goes, and the purge's own event starts the chain).
    pub first_kept_event: Option<i64>,
    /// The hash of the last event deleted: where the remaining chain continues from.
    pub continues_from: Option<String>,
    /// Consents deleted with their events.
    pub consents_deleted: u64,
    /// Consents kept (their event is still needed) but with personal fields blanked.
    pub consents_blanked: u64,
    /// Events kept but no longer naming a device.
    pub device_links: u64,
    /// Exceptions deleted.
    pub exceptions: u64,
    /// Access-code attempts deleted.
    pub code_attempts: u64,
    /// Staff sign-in attempts deleted.
    pub sign_in_attempts: u64,
}

impl Purge {
    /// Nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.events
            + self.consents_deleted
            + self.consents_blanked
            + self.device_links
            + self.exceptions
            + self.code_attempts
            + self.sign_in_attempts
            == 0
    }
}

/// Personal fields of a consent, blanked (the row's skeleton stays: course, times, policy).
/// `?2` is the time of erasure.
const BLANK_CONSENT: &str =
    "mac = '', ip = '', name = '', organisation = '', user_agent = '', salt = NULL, erased_at = ?2";

impl Store {
    /// Erases everything personal held about `mac` (a data subject's request): ends its open
    /// sessions, blanks its consents and exceptions, detaches it from every event that named it,
    /// deletes its code attempts, and records the erasure (ids, reason, who; not the MAC).
    ///
    /// # Errors
    /// `NotFound` if nothing is held about `mac`; a database failure.
    pub fn erase(&self, mac: MacAddr, reason: &str, by: &str, now: Timestamp) -> Result<Erasure, StoreError> {
        const REASON: &str = EndReason::Erased.as_str();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (m, at) = (mac.to_string(), ts(now));
        let (ended_consents, ended_exceptions) = end_device(&tx, mac, now, REASON, by)?;
        // Its accounting session stops, and nothing waiting to be sent carries its name.
        let closed = accounting::Change::Closed(accounting::StopCause::AdminReset);
        accounting::account(&tx, self.acct(), mac, now, closed)?;
        accounting::forget_names(&tx, mac)?;
        let erasure = Erasure {
            consents: returning_ids(
                &tx,
                &format!("UPDATE consents SET {BLANK_CONSENT} WHERE mac = ?1 RETURNING id"),
                params![m, at],
            )?,
            events: returning_ids(
                &tx,
                "DELETE FROM event_subjects WHERE mac = ?1 RETURNING event_id",
                [&m],
            )?,
            exceptions: returning_ids(
                &tx,
                "UPDATE exceptions SET mac = '', reason = '', erased_at = ?2 WHERE mac = ?1 RETURNING id",
                params![m, at],
            )?,
            code_attempts: tx.execute("DELETE FROM code_attempts WHERE device = ?1", [&m])? as u64,
            sessions_ended: (ended_consents.len() + ended_exceptions.len()) as u64,
        };
        if erasure.consents.is_empty()
            && erasure.events.is_empty()
            && erasure.exceptions.is_empty()
            && erasure.code_attempts == 0
        {
            return Err(StoreError::NotFound(format!("anything about {mac}")));
        }
        insert_event(
            &tx,
            now,
            EventKind::Erased,
            &json!({
                "consents": erasure.consents,
                "events": erasure.events,
                "exceptions": erasure.exceptions,
                "code_attempts": erasure.code_attempts,
                "sessions_ended": erasure.sessions_ended,
                "reason": reason,
                "by": by,
                "ended": ended(&ended_consents, &ended_exceptions, REASON, Some(by)),
            }),
        )?;
        tx.commit()?;
        forget_old_pages(&conn);
        Ok(erasure)
    }

    /// What a purge of personal data older than `retention` would remove, without removing it.
    ///
    /// # Errors
    /// On a database failure.
    pub fn purge_plan(&self, retention: SignedDuration, now: Timestamp) -> Result<Purge, StoreError> {
        plan(&self.lock(), now - retention)
    }

    /// Removes personal data older than `retention`: events from the start of the chain up to
    /// the first one still needed, the consents and exceptions that ended before the cut-off,
    /// old code and sign-in attempts; then records what it removed and the chain head the
    /// remaining events continue from. Returns what was removed (nothing recorded if nothing was).
    ///
    /// An event is kept, however old, while a consent or exception it vouches for is still
    /// kept (a session that ends after the cut-off); its device link goes at the cut-off all
    /// the same, except an exception's grant, whose link checks the kept row (`OLD_LINKS`).
    ///
    /// # Errors
    /// On a database failure; nothing is removed then.
    pub fn purge(&self, retention: SignedDuration, now: Timestamp) -> Result<Purge, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let p = plan(&tx, now - retention)?;
        // Records no receiver took within the retention period go too, sent or not.
        let outbox = accounting::purge_outbox(&tx, p.cutoff)?;
        if outbox > 0 {
            tracing::warn!(
                records = outbox,
                "purged accounting records older than the retention period that were never delivered"
            );
        }
        if p.is_empty() {
            tx.commit()?;
            return Ok(p);
        }
        let (cutoff, at) = (ts(p.cutoff), ts(now));
        // The purge's own event goes first, linked to the current head, so that when every
        // older event goes it starts the chain still linked to what came before.
        insert_event(
            &tx,
            now,
            EventKind::Purge,
            &json!({
                "cutoff": cutoff,
                "continues_from": p.continues_from,
                "first_kept_event": p.first_kept_event,
                "removed": {
                    "events": p.events,
                    "consents": p.consents_deleted,
                    "consents_blanked": p.consents_blanked,
                    "device_links": p.device_links,
                    "exceptions": p.exceptions,
                    "code_attempts": p.code_attempts,
                    "sign_in_attempts": p.sign_in_attempts,
                },
            }),
        )?;
        let below = p.first_kept_event.unwrap_or_else(|| tx.last_insert_rowid());
        tx.execute(
            &format!("DELETE FROM consents WHERE id IN ({CONSENTS_BEFORE})"),
            [below],
        )?;
        tx.execute(
            &format!(
                "UPDATE consents SET {BLANK_CONSENT} WHERE erased_at IS NULL AND coalesce(ended_at, expires_at) < ?1"
            ),
            params![cutoff, at],
        )?;
        tx.execute(
            &format!("DELETE FROM event_subjects WHERE event_id IN ({OLD_LINKS})"),
            [&cutoff],
        )?;
        tx.execute("DELETE FROM events WHERE id < ?1", [below])?;
        tx.execute("DELETE FROM exceptions WHERE coalesce(ended_at, until) < ?1", [&cutoff])?;
        tx.execute("DELETE FROM code_attempts WHERE at < ?1", [&cutoff])?;
        tx.execute("DELETE FROM login_attempts WHERE at < ?1", [&cutoff])?;
        tx.commit()?;
        forget_old_pages(&conn);
        Ok(p)
    }
}

/// The consents whose events come before event `?1` (deleted with them by a purge).
const CONSENTS_BEFORE: &str = "SELECT json_extract(detail, '$.consent') FROM events WHERE kind = 'consent' AND id < ?1";

/// The device links a purge with cut-off `?1` removes: those of events older than it, except
/// the grant of an exception that is itself kept. That link is the only check on the kept row's
/// MAC and reason (a MAC changed by hand would let another device through), and it holds nothing
/// the row does not; it goes with the row. `granted_at` tells the grant apart from an older one
/// of a purged exception whose id was given again (the table is not AUTOINCREMENT).
const OLD_LINKS: &str = "SELECT event_id FROM event_subjects WHERE event_id IN (SELECT id FROM events WHERE at < ?1)
     AND event_id NOT IN (
         SELECT e.id FROM events e JOIN exceptions x ON x.id = json_extract(e.detail, '$.exception') AND x.granted_at = e.at
         WHERE e.kind = 'exception-granted' AND coalesce(x.ended_at, x.until) >= ?1)";

fn plan(conn: &Connection, cutoff: Timestamp) -> Result<Purge, StoreError> {
    let c = ts(cutoff);
    let count = |sql: &str, arg: &dyn rusqlite::ToSql| -> Result<u64, StoreError> {
        let n: i64 = conn.query_row(sql, [arg], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or_default())
    };
    let min_id = |sql: &str| -> Result<Option<i64>, StoreError> { Ok(conn.query_row(sql, [&c], |r| r.get(0))?) };
    // The first event to keep: the first at or after the cut-off, or an older one still needed
    // by a consent or exception that is itself kept.
    let first_kept_event = [
        min_id("SELECT min(id) FROM events WHERE at >= ?1")?,
        min_id(
            "SELECT min(e.id) FROM events e JOIN consents k ON k.id = json_extract(e.detail, '$.consent')
             WHERE e.kind = 'consent' AND coalesce(k.ended_at, k.expires_at) >= ?1",
        )?,
        min_id(
            "SELECT min(e.id) FROM events e JOIN exceptions x ON x.id = json_extract(e.detail, '$.exception')
             WHERE e.kind = 'exception-granted' AND coalesce(x.ended_at, x.until) >= ?1",
        )?,
    ]
    .into_iter()
    .flatten()
    .min();
    let below = first_kept_event.unwrap_or(i64::MAX);
    let events = count("SELECT count(*) FROM events WHERE id < ?1", &below)?;
    let continues_from = if events == 0 {
        None
    } else {
        Some(match first_kept_event {
            Some(k) => conn
                .query_row("SELECT prev_hash FROM events WHERE id = ?1", [k], |r| r.get(0))
                .optional()?
                .flatten()
                .unwrap_or_default(),
            None => chain_head(conn)?,
        })
    };
    Ok(Purge {
        cutoff,
        events,
        first_kept_event,
        continues_from,
        consents_deleted: count(
            &format!("SELECT count(*) FROM consents WHERE id IN ({CONSENTS_BEFORE})"),
            &below,
        )?,
        consents_blanked: conn
            .query_row::<i64, _, _>(
                &format!(
                    "SELECT count(*) FROM consents WHERE erased_at IS NULL AND coalesce(ended_at, expires_at) < ?1
                 AND id NOT IN ({})",
                    CONSENTS_BEFORE.replace("?1", "?2")
                ),
                params![c, below],
                |r| r.get(0),
            )?
            .unsigned_abs(),
        device_links: count(&format!("SELECT count(*) FROM ({OLD_LINKS})"), &c)?,
        exceptions: count(
            "SELECT count(*) FROM exceptions WHERE coalesce(ended_at, until) < ?1",
            &c,
        )?,
        code_attempts: count("SELECT count(*) FROM code_attempts WHERE at < ?1", &c)?,
        sign_in_attempts: count("SELECT count(*) FROM login_attempts WHERE at < ?1", &c)?,
    })
}
