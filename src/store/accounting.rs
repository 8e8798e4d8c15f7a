//! RADIUS accounting's side of the store: each open device's accounting session, and the
//! outbox its Starts and Stops wait in until a server has them.
//!
//! `account` is called inside every transaction that changes who may pass (an accept, an
//! exception, a revoke, a course ended, an erasure, a policy change), so the Start or Stop is
//! committed with its cause or not at all. Time running out changes nothing in the store; the
//! gatekeeper's expiry and the sender's sweep call `account_closed` / `account_all` for it.
//! With accounting off (no `[radius]`) nothing here writes.
//!
//! The outbox is one table for every channel that ships records somewhere (`radius` today; the
//! trust hub's later), each row its channel's next record in id order, deleted once delivered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, parse_mac, parse_ts, ts};
use crate::clients::MacAddr;

/// The outbox channel of RADIUS accounting.
pub const RADIUS: &str = "radius";

/// Most devices `account_all` looks at in one transaction (about 30 ms of the store's lock).
pub const SWEEP_BATCH: usize = 1000;

/// Most IPv6 addresses one session reports (phones use several temporary ones).
const MAX_V6: usize = 8;

/// Accounting as the store keeps it: what User-Name carries, and the sender's wake-up.
#[derive(Debug)]
pub struct Accounting {
    mode: UserName,
    /// Poked when a record is written (the sender waits on it; it reads the record once the
    /// writing transaction let go of the connection, so never before it is committed).
    wake: tokio::sync::Notify,
}

/// What User-Name carries (`[radius] user_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserName {
    /// The name the guest typed.
    Name,
    /// The course's title.
    Course,
    /// The device's MAC (no personal name leaves the router).
    Device,
}

/// The three kinds of accounting record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcctStatus {
    /// The device was let through.
    Start,
    /// It was closed (or its addresses changed: then a Start follows).
    Stop,
    /// Still open (not kept in the outbox: made by the sender when due).
    InterimUpdate,
}

/// Why a session stopped (RFC 2866 Acct-Terminate-Cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopCause {
    /// The guest accepted again with another identity (another course or name).
    UserRequest,
    /// The course or exception ran out.
    SessionTimeout,
    /// Staff revoked the device, ended its course or exception, or erased it.
    AdminReset,
    /// The firewall could not open the device, so its consent was withdrawn.
    NasError,
    /// aupgate ended it: the policy changed, or the device's address did (a Start follows).
    NasRequest,
}

impl StopCause {
    /// Its RFC 2866 value.
    pub const fn code(self) -> u32 {
        match self {
            Self::UserRequest => 1,
            Self::SessionTimeout => 5,
            Self::AdminReset => 6,
            Self::NasError => 9,
            Self::NasRequest => 10,
        }
    }
}

/// The addresses a session reports: one IPv4 (Framed-IP-Address) and a few IPv6.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// Its IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Its IPv6 addresses (not link-local), sorted.
    pub ipv6: Vec<Ipv6Addr>,
}

impl Addresses {
    /// The device's addresses as the neighbour table lists them, most recently confirmed last:
    /// the last IPv4, and the last few global IPv6.
    pub fn from_recent(recent: &[IpAddr]) -> Self {
        let ipv4 = recent.iter().rev().find_map(|a| match a {
            IpAddr::V4(v4) if !v4.is_unspecified() && !v4.is_link_local() => Some(*v4),
            _ => None,
        });
        let mut ipv6: Vec<Ipv6Addr> = recent
            .iter()
            .rev()
            .filter_map(|a| match a {
                IpAddr::V6(v6) if !v6.is_unicast_link_local() && !v6.is_unspecified() && !v6.is_loopback() => Some(*v6),
                _ => None,
            })
            .take(MAX_V6)
            .collect();
        ipv6.sort();
        ipv6.dedup();
        Self { ipv4, ipv6 }
    }

    /// Nothing known.
    pub fn is_empty(&self) -> bool {
        self.ipv4.is_none() && self.ipv6.is_empty()
    }

    /// These, with `newer` replacing what it knows: its IPv4 if it has one, its IPv6 if any.
    pub fn updated(&self, newer: &Self) -> Self {
        Self {
            ipv4: newer.ipv4.or(self.ipv4),
            ipv6: if newer.ipv6.is_empty() {
                self.ipv6.clone()
            } else {
                newer.ipv6.clone()
            },
        }
    }

    /// What a Start says of a guest who accepted from `ip`: that address, and the device's
    /// others that the neighbour table has (its IPv4 address if it accepted over IPv6, its
    /// global IPv6 ones).
    pub fn of_accept(ip: &str, others: &[IpAddr]) -> Self {
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return Self::from_recent(others);
        };
        // The accept's own address last: the most recent, so it is the one reported.
        let mut all: Vec<IpAddr> = others.iter().copied().filter(|a| *a != ip).collect();
        all.push(ip);
        Self::from_recent(&all)
    }

    /// The address a guest accepted from, as stored.
    pub(super) fn of_ip(ip: &str) -> Self {
        match ip.parse::<IpAddr>() {
            Ok(ip) => Self::from_recent(&[ip]),
            Err(_) => Self::default(),
        }
    }

    fn v6_text(&self) -> String {
        self.ipv6.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
    }
}

/// One accounting record, as kept in the outbox and as the sender turns it into a packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountingRecord {
    /// Start, Stop or Interim-Update.
    pub status: AcctStatus,
    /// Acct-Session-Id: the same on a session's Start, Interims and Stop.
    pub session: String,
    /// The device (Calling-Station-Id).
    pub mac: MacAddr,
    /// User-Name.
    pub user_name: String,
    /// Class: the course's title, or "exception".
    pub class: String,
    /// Framed-IP-Address and Framed-IPv6-Address.
    pub addresses: Addresses,
    /// When the session started (Acct-Session-Time counts from here).
    pub started_at: Timestamp,
    /// When this happened (Event-Timestamp; Acct-Delay-Time counts from here).
    pub at: Timestamp,
    /// Acct-Terminate-Cause, on a Stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<StopCause>,
}

/// A record waiting in an outbox.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its row (delete it with `outbox_delivered`).
    pub id: i64,
    /// The record, as its channel wrote it (JSON).
    pub payload: String,
    /// When it was written.
    pub created_at: Timestamp,
    /// Failed rounds so far.
    pub attempts: u32,
}

/// How far behind a channel is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Records not yet delivered.
    pub pending: u64,
    /// When the oldest of them was written.
    pub oldest: Option<Timestamp>,
    /// Why the oldest was not delivered the last time it was tried.
    pub last_error: Option<String>,
}

/// What changed for the device, as the caller knows it.
#[derive(Debug, Clone)]
pub(super) enum Change {
    /// A guest accepted, from these addresses.
    Accepted(Addresses),
    /// It may have been let through (an exception, or the sweep): a Start if it has none.
    Opened,
    /// Its access ended for this reason (a Stop if nothing else keeps it open).
    Closed(StopCause),
    /// Its addresses are these now.
    Moved(Addresses),
}

/// Who holds the device's access now, as its session would report it.
struct Holder {
    user_name: String,
    class: String,
    /// The address the guest accepted from (none for an exception).
    accepted_from: Addresses,
}

/// The class of a device let through by an exception.
pub const EXCEPTION_CLASS: &str = "exception";

/// Calling-Station-Id's form of a MAC (RFC 3580): `02-99-00-00-00-01`.
pub fn station_id(mac: MacAddr) -> String {
    mac.to_string().replace(':', "-").to_ascii_uppercase()
}

fn holder(conn: &Connection, mode: UserName, mac: MacAddr, now: Timestamp) -> Result<Option<Holder>, StoreError> {
    let consent: Option<(String, String, String)> = conn
        .prepare_cached(
            "SELECT c.name, k.title, c.ip FROM consents c JOIN courses k ON k.id = c.course_id
             WHERE c.mac = ?1 AND c.ended_at IS NULL AND c.expires_at > ?2
             ORDER BY c.accepted_at DESC, c.id DESC LIMIT 1",
        )?
        .query_row(params![mac.to_string(), ts(now)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    if let Some((name, title, ip)) = consent {
        let user_name = match mode {
            UserName::Name if !name.trim().is_empty() => name,
            UserName::Course => title.clone(),
            UserName::Name | UserName::Device => station_id(mac),
        };
        return Ok(Some(Holder {
            user_name,
            class: title,
            accepted_from: Addresses::of_ip(&ip),
        }));
    }
    let excepted: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM exceptions WHERE mac = ?1 AND ended_at IS NULL AND until > ?2)")?
        .query_row(params![mac.to_string(), ts(now)], |r| r.get(0))?;
    // An exception names no person: its reason is staff's note, not for the filter.
    Ok(excepted.then(|| Holder {
        user_name: station_id(mac),
        class: EXCEPTION_CLASS.to_owned(),
        accepted_from: Addresses::default(),
    }))
}

/// An `accounting_sessions` row as read: mac, session, started_at, user_name, class, ipv4, ipv6.
type SessionRow = (String, String, String, String, String, Option<String>, String);

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn open_session(conn: &Connection, mac: MacAddr) -> Result<Option<AccountingRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT mac, session, started_at, user_name, class, ipv4, ipv6 FROM accounting_sessions WHERE mac = ?1",
    )?
    .query_row([mac.to_string()], session_row)
    .optional()?
    .map(session_record)
    .transpose()
}

fn session_record(row: SessionRow) -> Result<AccountingRecord, StoreError> {
    let (mac, session, started, user_name, class, ipv4, ipv6) = row;
    let mac = parse_mac(&mac)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("accounting session {session}: {what}"));
    let ipv4 = ipv4.map(|a| a.parse().map_err(|_| corrupt("ipv4"))).transpose()?;
    let ipv6 = ipv6
        .split_whitespace()
        .map(|a| a.parse().map_err(|_| corrupt("ipv6")))
        .collect::<Result<_, _>>()?;
    let started_at = parse_ts(&started)?;
    Ok(AccountingRecord {
        status: AcctStatus::Start,
        session,
        mac,
        user_name,
        class,
        addresses: Addresses { ipv4, ipv6 },
        started_at,
        at: started_at,
        cause: None,
    })
}

/// A new Acct-Session-Id: 16 hex digits, random.
fn new_session_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Corrupt(format!("no randomness for a session id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02X}")).collect())
}

fn enqueue(
    conn: &Connection,
    acct: &Accounting,
    channel: &str,
    subject: MacAddr,
    payload: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO outbox (channel, created_at, subject, payload) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![channel, ts(now), subject.to_string(), payload])?;
    acct.wake.notify_one();
    Ok(())
}

fn json(record: &AccountingRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn stop(
    conn: &Connection,
    acct: &Accounting,
    mut session: AccountingRecord,
    now: Timestamp,
    cause: StopCause,
) -> Result<(), StoreError> {
    session.status = AcctStatus::Stop;
    session.at = now;
    session.cause = Some(cause);
    enqueue(conn, acct, RADIUS, session.mac, &json(&session)?, now)?;
    conn.prepare_cached("DELETE FROM accounting_sessions WHERE mac = ?1")?
        .execute([session.mac.to_string()])?;
    Ok(())
}

fn start(
    conn: &Connection,
    acct: &Accounting,
    mac: MacAddr,
    holder: Holder,
    addresses: Addresses,
    now: Timestamp,
) -> Result<(), StoreError> {
    let record = AccountingRecord {
        status: AcctStatus::Start,
        session: new_session_id()?,
        mac,
        user_name: holder.user_name,
        class: holder.class,
        addresses,
        started_at: now,
        at: now,
        cause: None,
    };
    conn.prepare_cached(
        "INSERT INTO accounting_sessions (mac, session, started_at, user_name, class, ipv4, ipv6)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        mac.to_string(),
        record.session,
        ts(now),
        record.user_name,
        record.class,
        record.addresses.ipv4.map(|a| a.to_string()),
        record.addresses.v6_text(),
    ])?;
    enqueue(conn, acct, RADIUS, mac, &json(&record)?, now)
}

/// Brings `mac`'s accounting session in line with its access, inside the caller's transaction:
/// a Start when it opened (once an address is known), a Stop when nothing keeps it open any
/// more, a Stop and a Start when who holds it or its addresses changed.
pub(super) fn account(
    conn: &Connection,
    acct: Option<&Accounting>,
    mac: MacAddr,
    now: Timestamp,
    change: Change,
) -> Result<bool, StoreError> {
    let Some(acct) = acct else { return Ok(false) };
    let current = open_session(conn, mac)?;
    let holder = holder(conn, acct.mode, mac, now)?;
    let closed_by = match &change {
        Change::Closed(cause) => *cause,
        Change::Accepted(_) | Change::Opened | Change::Moved(_) => StopCause::SessionTimeout,
    };
    match (current, holder) {
        (None, None) => Ok(false),
        (Some(session), None) => {
            // Access that ran out (perhaps while the daemon was down) stopped when it ended,
            // not when this noticed.
            let at = match closed_by {
                StopCause::SessionTimeout => last_end(conn, mac, now)?.unwrap_or(now).clamp(session.started_at, now),
                _ => now,
            };
            stop(conn, acct, session, at, closed_by)?;
            Ok(true)
        }
        (None, Some(holder)) => {
            let addresses = match &change {
                Change::Moved(a) | Change::Accepted(a) => holder.accepted_from.updated(a),
                Change::Opened | Change::Closed(_) => holder.accepted_from.clone(),
            };
            if addresses.is_empty() {
                // An exception's device: its Start waits for the neighbour table to show it.
                return Ok(false);
            }
            start(conn, acct, mac, holder, addresses, now)?;
            Ok(true)
        }
        (Some(session), Some(holder)) => {
            // Only what is newer than the session replaces its addresses: a new accept's
            // address, or the neighbour table's. A sweep keeps what the session has.
            let addresses = match &change {
                Change::Moved(a) | Change::Accepted(a) => session.addresses.updated(a),
                Change::Opened | Change::Closed(_) => session.addresses.clone(),
            };
            let same_holder = session.user_name == holder.user_name && session.class == holder.class;
            if same_holder && addresses == session.addresses {
                return Ok(false);
            }
            // Another consent or exception holds it now: the old one's session ends for its
            // own reason (ran out, revoked), or because the device accepted again.
            let cause = match (&change, same_holder) {
                (_, true) => StopCause::NasRequest,
                (Change::Closed(cause), false) => *cause,
                (_, false) => StopCause::UserRequest,
            };
            stop(conn, acct, session, now, cause)?;
            start(conn, acct, mac, holder, addresses, now)?;
            Ok(true)
        }
    }
}

/// When `mac`'s access last ended, up to `now` (the latest end among its consents and
/// exceptions that are over).
fn last_end(conn: &Connection, mac: MacAddr, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
    let raw: Option<String> = conn
        .prepare_cached(
            "SELECT max(t) FROM (
                 SELECT min(coalesce(ended_at, expires_at), expires_at) AS t FROM consents WHERE mac = ?1
                 UNION ALL
                 SELECT min(coalesce(ended_at, until), until) FROM exceptions WHERE mac = ?1)
             WHERE t <= ?2",
        )?
        .query_row(params![mac.to_string(), ts(now)], |r| r.get(0))?;
    raw.as_deref().map(parse_ts).transpose()
}

/// Undelivered records that name `mac` no longer carry the name the guest typed (erasure):
/// they still go, with the device's form instead.
pub(super) fn forget_names(conn: &Connection, mac: MacAddr) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE outbox SET payload = json_set(payload, '$.user_name', ?2)
         WHERE channel = ?3 AND subject = ?1",
        params![mac.to_string(), station_id(mac), RADIUS],
    )?)
}

/// Outbox records written before `cutoff` (the retention purge): removed, delivered or not.
pub(super) fn purge_outbox(conn: &Connection, cutoff: Timestamp) -> Result<usize, StoreError> {
    Ok(conn.execute("DELETE FROM outbox WHERE created_at < ?1", [ts(cutoff)])?)
}

impl Store {
    /// Turns accounting on (`[radius]` is set): from now on every change of access writes its
    /// Start or Stop to the outbox. Set once, at start.
    pub fn set_accounting(&self, mode: UserName) {
        let _ = self.accounting.set(Accounting {
            mode,
            wake: tokio::sync::Notify::new(),
        });
    }

    /// Whether accounting is on, and what User-Name carries.
    pub fn accounting(&self) -> Option<UserName> {
        self.acct().map(|a| a.mode)
    }

    pub(super) fn acct(&self) -> Option<&Accounting> {
        self.accounting.get()
    }

    /// What the sender waits on for new records; `None` while accounting is off.
    pub fn outbox_wakeup(&self) -> Option<&tokio::sync::Notify> {
        self.acct().map(|a| &a.wake)
    }

    /// Devices whose access ran out (the gatekeeper closed them): their sessions stop.
    ///
    /// # Errors
    /// On a database failure.
    pub fn account_closed(&self, macs: &[MacAddr], now: Timestamp) -> Result<(), StoreError> {
        let mode = self.acct();
        if mode.is_none() || macs.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for &mac in macs {
            account(&tx, mode, mac, now, Change::Closed(StopCause::SessionTimeout))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The device's addresses as the neighbour table shows them now: a Start if it was waiting
    /// for one, a Stop and a Start if they changed.
    ///
    /// # Errors
    /// On a database failure.
    pub fn account_addresses(&self, mac: MacAddr, addresses: Addresses, now: Timestamp) -> Result<(), StoreError> {
        let mode = self.acct();
        if mode.is_none() || addresses.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        account(&tx, mode, mac, now, Change::Moved(addresses))?;
        tx.commit()?;
        Ok(())
    }

    /// Sessions against devices' access: Stops for those whose access ended unseen (while the
    /// daemon was down), Starts for devices open by a consent without one (accounting just
    /// turned on). Only the devices out of line are looked at one by one (two index scans find
    /// them), and at most `SWEEP_BATCH` in one transaction, so an accept never waits long
    /// behind it. Returns how many were looked at and how many of those it changed: call again
    /// while a full batch changed something (a device it cannot start, with no usable address,
    /// is found by every batch).
    ///
    /// # Errors
    /// On a database failure.
    pub fn account_all(&self, now: Timestamp) -> Result<(usize, usize), StoreError> {
        let mode = self.acct();
        if mode.is_none() {
            return Ok((0, 0));
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let macs: Vec<MacAddr> = {
            let mut stmt = tx.prepare_cached(
                "SELECT s.mac FROM accounting_sessions s
                 WHERE NOT EXISTS (SELECT 1 FROM consents c WHERE c.mac = s.mac AND c.ended_at IS NULL AND c.expires_at > ?1)
                   AND NOT EXISTS (SELECT 1 FROM exceptions e WHERE e.mac = s.mac AND e.ended_at IS NULL AND e.until > ?1)
                 UNION
                 SELECT c.mac FROM consents c WHERE c.ended_at IS NULL AND c.expires_at > ?1
                   AND NOT EXISTS (SELECT 1 FROM accounting_sessions s WHERE s.mac = c.mac)
                 LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![ts(now), SWEEP_BATCH as i64], |r| r.get::<_, String>(0))?;
            rows.map(|m| parse_mac(&m?)).collect::<Result<_, _>>()?
        };
        let mut changed = 0;
        for &mac in &macs {
            changed += usize::from(account(&tx, mode, mac, now, Change::Opened)?);
        }
        tx.commit()?;
        Ok((macs.len(), changed))
    }

    /// Devices let through by an exception that have no session yet: their Start waits for
    /// the neighbour table to show an address (a consent has the accept's). Exceptions are few
    /// (staff grant them one by one), so this is cheap to ask often.
    ///
    /// # Errors
    /// On a database failure.
    pub fn accounting_waiting(&self, now: Timestamp) -> Result<Vec<MacAddr>, StoreError> {
        if self.acct().is_none() {
            return Ok(Vec::new());
        }
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT mac FROM exceptions WHERE ended_at IS NULL AND until > ?1
             AND mac NOT IN (SELECT mac FROM accounting_sessions)",
        )?;
        let rows = stmt.query_map([ts(now)], |r| r.get::<_, String>(0))?;
        rows.map(|m| parse_mac(&m?)).collect()
    }

    /// Every open accounting session (for Interim-Updates and the address follower).
    ///
    /// # Errors
    /// On a database failure.
    pub fn accounting_sessions(&self) -> Result<Vec<AccountingRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT mac, session, started_at, user_name, class, ipv4, ipv6 FROM accounting_sessions ORDER BY started_at",
        )?;
        let rows = stmt.query_map([], session_row)?;
        rows.map(|row| session_record(row?)).collect()
    }

    /// The oldest record waiting in `channel`'s outbox.
    ///
    /// # Errors
    /// On a database failure.
    pub fn outbox_next(&self, channel: &str) -> Result<Option<Pending>, StoreError> {
        let row: Option<(i64, String, String, u32)> = self
            .lock()
            .prepare_cached(
                "SELECT id, payload, created_at, attempts FROM outbox WHERE channel = ?1 ORDER BY id LIMIT 1",
            )?
            .query_row([channel], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        row.map(|(id, payload, created, attempts)| {
            Ok(Pending {
                id,
                payload,
                created_at: parse_ts(&created)?,
                attempts,
            })
        })
        .transpose()
    }

    /// A record was delivered: it leaves the outbox.
    ///
    /// # Errors
    /// On a database failure.
    pub fn outbox_delivered(&self, id: i64) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    /// A round of sending a record failed: counted, with why, for the dashboard.
    ///
    /// # Errors
    /// On a database failure.
    pub fn outbox_failed(&self, id: i64, why: &str) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached("UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1")?
            .execute(params![id, why])?;
        Ok(())
    }

    /// How many records `channel` has waiting, and since when.
    ///
    /// # Errors
    /// On a database failure.
    pub fn outbox_backlog(&self, channel: &str) -> Result<Backlog, StoreError> {
        let (pending, oldest, last_error): (i64, Option<String>, Option<String>) = self
            .lock()
            .prepare_cached(
                "SELECT count(*), min(created_at),
                        (SELECT last_error FROM outbox WHERE channel = ?1 ORDER BY id LIMIT 1)
                 FROM outbox WHERE channel = ?1",
            )?
            .query_row([channel], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(Backlog {
            pending: pending.unsigned_abs(),
            oldest: oldest.as_deref().map(parse_ts).transpose()?,
            last_error,
        })
    }
}

#[cfg(test)]
mod tests;
