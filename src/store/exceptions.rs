//! Exceptions: a device let through without the portal, for a stated reason and time, granted
//! by a named member of staff (e.g. a contractor's laptop the head teacher approved). Like a
//! consent, an open exception is a reason for the MAC to be in the firewall set.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::json;

use super::accounting::{self, Change, StopCause};
use super::audit::ended;
use super::{EndReason, EventKind};
use super::{Store, StoreError, insert_subject_event, parse_mac, parse_ts, ts};
use crate::clients::MacAddr;

/// An open exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exception {
    /// Store id.
    pub id: i64,
    /// The device.
    pub mac: MacAddr,
    /// Why it was granted.
    pub reason: String,
    /// Who granted it.
    pub granted_by: String,
    /// When.
    pub granted_at: Timestamp,
    /// When it ends.
    pub until: Timestamp,
}

impl Store {
    /// Grants an exception; returns its id.
    ///
    /// # Errors
    /// On a database failure.
    pub fn grant_exception(
        &self,
        mac: MacAddr,
        reason: &str,
        by: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<i64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO exceptions (mac, reason, granted_by, granted_at, until) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![mac.to_string(), reason, by, ts(now), ts(until)],
        )?;
        let id = tx.last_insert_rowid();
        insert_subject_event(
            &tx,
            now,
            EventKind::ExceptionGranted,
            json!({"exception": id, "until": ts(until), "by": by}),
            mac,
            reason,
        )?;
        accounting::account(&tx, self.acct(), mac, now, Change::Opened)?;
        tx.commit()?;
        Ok(id)
    }

    /// Ends an open exception; returns its MAC, or `NotFound`.
    ///
    /// # Errors
    /// `NotFound`, or a database failure.
    pub fn end_exception(&self, id: i64, now: Timestamp, by: &str) -> Result<MacAddr, StoreError> {
        const REASON: &str = EndReason::EndedByStaff.as_str();
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mac: Option<String> = tx
            .query_row(
                "UPDATE exceptions SET ended_at = ?2, end_reason = ?3 WHERE id = ?1 AND ended_at IS NULL RETURNING mac",
                params![id, ts(now), REASON],
                |r| r.get(0),
            )
            .optional()?;
        let Some(mac) = mac else {
            return Err(StoreError::NotFound(format!("open exception {id}")));
        };
        let mac = parse_mac(&mac)?;
        insert_subject_event(
            &tx,
            now,
            EventKind::ExceptionEnded,
            json!({"exception": id, "by": by, "ended": ended(&[], &[id], REASON, None)}),
            mac,
            "",
        )?;
        accounting::account(&tx, self.acct(), mac, now, Change::Closed(StopCause::AdminReset))?;
        tx.commit()?;
        Ok(mac)
    }

    /// Open exceptions, soonest end first.
    ///
    /// # Errors
    /// On a database failure.
    pub fn exceptions(&self, now: Timestamp) -> Result<Vec<Exception>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, mac, reason, granted_by, granted_at, until FROM exceptions WHERE ended_at IS NULL AND until > ?1 ORDER BY until, id",
        )?;
        let rows = stmt.query_map([ts(now)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        rows.map(|r| {
            let (id, mac, reason, granted_by, granted_at, until) = r?;
            Ok(Exception {
                id,
                mac: parse_mac(&mac)?,
                reason,
                granted_by,
                granted_at: parse_ts(&granted_at)?,
                until: parse_ts(&until)?,
            })
        })
        .collect()
    }
}
