//! Consents (one row per acceptance), the sessions derived from them, and code attempts.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::accounting::{self, Accounting, Addresses, Change, StopCause};
use super::audit::{ended, returning_ids};
use super::{EndReason, EventKind};
use super::{Store, StoreError, insert_event, insert_subject_event, parse_mac, parse_ts, ts};
use crate::clients::{AccessCode, Course, MacAddr, Session};

/// Everything recorded when a guest accepts.
#[derive(Debug, Clone)]
pub struct NewConsent {
    /// The course whose code was given.
    pub course_id: i64,
    /// Maximum devices of that course (checked inside the same transaction as the insert).
    pub max_devices: u32,
    /// The device.
    pub mac: MacAddr,
    /// Its address.
    pub ip: String,
    /// When it accepted.
    pub accepted_at: Timestamp,
    /// When access ends (the course's end).
    pub expires_at: Timestamp,
    /// Name given.
    pub name: String,
    /// Organisation given.
    pub organisation: String,
    /// The browser's User-Agent, as sent.
    pub user_agent: String,
    /// SHA-256 (hex) of the policy text shown; must already be recorded with `record_policy`.
    pub policy_hash: String,
}

/// How long an unfinished code attempt counts towards the lock-out.
const PENDING_COUNTS_FOR: jiff::SignedDuration = jiff::SignedDuration::from_mins(1);

fn max_expiry(conn: &Connection, mac: MacAddr, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
    let raw: Option<String> = conn
        .prepare_cached(
            "SELECT max(until) FROM (
             SELECT expires_at AS until FROM consents WHERE mac = ?1 AND ended_at IS NULL AND expires_at > ?2
             UNION ALL
             SELECT until FROM exceptions WHERE mac = ?1 AND ended_at IS NULL AND until > ?2)",
        )?
        .query_row(params![mac.to_string(), ts(now)], |r| r.get(0))?;
    raw.as_deref().map(parse_ts).transpose()
}

/// Runs an `UPDATE consents … RETURNING id, mac` that ends consents. Returns the ids ended
/// (sorted, for the event's record) and their devices (sorted, each once: the caller closes them
/// in the firewall).
pub(super) fn end_consents(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<(Vec<i64>, Vec<MacAddr>), StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let (mut ids, mut macs) = (Vec::new(), Vec::new());
    for row in rows {
        let (id, mac) = row?;
        ids.push(id);
        macs.push(parse_mac(&mac)?);
    }
    ids.sort_unstable();
    macs.sort();
    macs.dedup();
    Ok((ids, macs))
}

/// Ends every open consent and exception of `mac` with `reason`, given by `by`. Returns the ids
/// ended (consents, exceptions), for the event the caller writes in the same transaction.
pub(super) fn end_device(
    conn: &Connection,
    mac: MacAddr,
    now: Timestamp,
    reason: &str,
    by: &str,
) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
    let (m, at) = (mac.to_string(), ts(now));
    let consents = returning_ids(
        conn,
        "UPDATE consents SET ended_at = ?2, end_reason = ?3, ended_by = ?4
         WHERE mac = ?1 AND ended_at IS NULL AND expires_at > ?2 RETURNING id",
        params![m, at, reason, by],
    )?;
    let exceptions = returning_ids(
        conn,
        "UPDATE exceptions SET ended_at = ?2, end_reason = ?3 WHERE mac = ?1 AND ended_at IS NULL AND until > ?2 RETURNING id",
        params![m, at, reason],
    )?;
    Ok((consents, exceptions))
}

/// `record_consent`'s checks and insert, inside the caller's transaction.
pub(super) fn insert_consent(tx: &Connection, c: &NewConsent) -> Result<i64, StoreError> {
    let now = ts(c.accepted_at);
    // Re-read the course inside the transaction: staff may have ended it since the caller
    // looked, and an ended course must never gain a device.
    let running: bool = tx
        .prepare_cached(
            "SELECT ended_early_at IS NULL AND starts_at <= ?2 AND ends_at > ?2 FROM courses WHERE id = ?1",
        )?
        .query_row(params![c.course_id, now], |r| r.get(0))?;
    if !running {
        return Err(StoreError::CourseNotRunning);
    }
    let revoked: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM consents WHERE course_id = ?1 AND mac = ?2 AND end_reason = 'revoked')",
        )?
        .query_row(params![c.course_id, c.mac.to_string()], |r| r.get(0))?;
    if revoked {
        return Err(StoreError::RevokedForCourse);
    }
    let (devices, already_in): (u32, bool) = tx
        .prepare_cached(
            "SELECT count(DISTINCT mac), coalesce(max(mac = ?3), 0) FROM consents
         WHERE course_id = ?1 AND ended_at IS NULL AND expires_at > ?2",
        )?
        .query_row(params![c.course_id, now, c.mac.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if !already_in && devices >= c.max_devices {
        return Err(StoreError::CourseFull);
    }
    let (salt, mac) = (super::new_salt()?, c.mac.to_string());
    tx.prepare_cached("INSERT INTO consents (course_id, mac, ip, accepted_at, expires_at, name, organisation, user_agent, policy_hash, salt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")?.execute(
        params![
            c.course_id,
            c.mac.to_string(),
            c.ip,
            now,
            ts(c.expires_at),
            c.name,
            c.organisation,
            c.user_agent,
            c.policy_hash,
            salt
        ],
    )?;
    let id = tx.last_insert_rowid();
    insert_event(
        tx,
        c.accepted_at,
        EventKind::Consent,
        &json!({
            "consent": id,
            "course": c.course_id,
            "policy": c.policy_hash,
            "accepted_at": now,
            "expires_at": ts(c.expires_at),
            "personal": super::audit::personal_commitment(Some(&salt), &mac, &c.ip, &c.name, &c.organisation, &c.user_agent),
        }),
    )?;
    Ok(id)
}

/// The brute-force guard's count: `Err((failures, oldest))` if `device` has `max` or more
/// counted attempts since `since` (wrong codes, and unfinished ones for a minute).
fn lockout(
    conn: &Connection,
    device: &str,
    now: Timestamp,
    since: Timestamp,
    max: u32,
) -> Result<Result<(), (u32, Option<Timestamp>)>, StoreError> {
    let (n, oldest): (u32, Option<String>) = conn
        .prepare_cached(
            "SELECT count(*), min(at) FROM code_attempts
         WHERE device = ?1 AND at > ?2 AND (outcome = 'wrong-code' OR (outcome = 'pending' AND at > ?3))",
        )?
        .query_row(params![device, ts(since), ts(now - PENDING_COUNTS_FOR)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if n >= max {
        return Ok(Err((n, oldest.as_deref().map(parse_ts).transpose()?)));
    }
    Ok(Ok(()))
}

/// Given the course a code names, the consent the accept's rules allow, if any.
pub type ConsentRule = Box<dyn Fn(&Course) -> Option<NewConsent> + Send>;

/// One guest's accept as the store sees it (`Store::admit_all`).
pub struct Attempt {
    /// The device.
    pub mac: MacAddr,
    /// Its address.
    pub ip: String,
    /// Its other addresses in the neighbour table (for accounting's Start: a dual-stack
    /// device's first session then carries both).
    pub addresses: Vec<std::net::IpAddr>,
    /// When it asked.
    pub now: Timestamp,
    /// The brute-force guard's window starts here ...
    pub since: Timestamp,
    /// ... and allows this many wrong codes in it.
    pub max_wrong: u32,
    /// The code typed, if it has the form of one.
    pub code: Option<AccessCode>,
    /// Nothing was typed (an empty code does not count towards the lock-out).
    pub empty: bool,
    /// Given the course the code names, the consent to record, or `None` if the rules refuse
    /// (the policy, the course's state, the form): then only the attempt is recorded.
    pub consent: ConsentRule,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("mac", &self.mac)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// What the store made of one `Attempt`.
#[derive(Debug)]
pub enum Admission {
    /// Too many wrong codes lately: nothing recorded.
    LockedOut {
        /// Counted attempts in the window.
        failures: u32,
        /// The oldest of them.
        oldest: Option<Timestamp>,
    },
    /// The code names no course (the attempt is recorded, a wrong code in the audit log).
    NoCourse,
    /// The code names this course, but the rules refused before any consent.
    NotConsented(Course),
    /// The consent is recorded (durable once `admit_all` returns).
    Consented {
        /// The course.
        course: Course,
        /// The consent's id.
        consent: i64,
    },
    /// The course refused the device: `CourseFull` (recorded in the audit log),
    /// `CourseNotRunning` or `RevokedForCourse`.
    Refused {
        /// The course.
        course: Course,
        /// Why.
        why: StoreError,
    },
}

/// `attempt`, inside the caller's transaction, in the accept's order: the guard, the code,
/// the rules, the consent.
fn admit_one(conn: &Connection, a: &Attempt, acct: Option<&Accounting>) -> Result<Admission, StoreError> {
    let device = a.mac.to_string();
    if let Err((failures, oldest)) = lockout(conn, &device, a.now, a.since, a.max_wrong)? {
        return Ok(Admission::LockedOut { failures, oldest });
    }
    let course = match &a.code {
        Some(code) => super::courses::course_by_code_in(conn, code)?,
        None => None,
    };
    let outcome = match (&course, a.empty) {
        (Some(_), _) => "right-code",
        (None, true) => "empty",
        (None, false) => "wrong-code",
    };
    conn.prepare_cached("INSERT INTO code_attempts (device, ip, at, outcome) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![device, a.ip, ts(a.now), outcome])?;
    // A wrong code is a refusal worth keeping in the audit log; an empty one is not.
    if outcome == "wrong-code" {
        insert_subject_event(conn, a.now, EventKind::RefusedWrongCode, json!({}), a.mac, "")?;
    }
    let Some(course) = course else {
        return Ok(Admission::NoCourse);
    };
    let Some(consent) = (a.consent)(&course) else {
        return Ok(Admission::NotConsented(course));
    };
    match insert_consent(conn, &consent) {
        Ok(id) => {
            let from = Addresses::of_accept(&consent.ip, &a.addresses);
            accounting::account(conn, acct, a.mac, a.now, Change::Accepted(from))?;
            Ok(Admission::Consented { course, consent: id })
        }
        Err(StoreError::CourseFull) => {
            let detail = json!({"course": course.id});
            insert_subject_event(conn, a.now, EventKind::RefusedCourseFull, detail, a.mac, "")?;
            Ok(Admission::Refused {
                course,
                why: StoreError::CourseFull,
            })
        }
        Err(why @ (StoreError::CourseNotRunning | StoreError::RevokedForCourse)) => {
            Ok(Admission::Refused { course, why })
        }
        Err(e) => Err(e),
    }
}

impl Store {
    /// Several guests' accepts in one IMMEDIATE transaction, so one fsync makes all of them
    /// durable: each in a savepoint of its own, so a store failure in one undoes only its own
    /// writes. Every consent is durable when this returns, before anything is opened.
    ///
    /// # Errors
    /// If the transaction cannot begin or commit (then nothing of any is recorded); one
    /// attempt's own failure is its entry's `Err`.
    pub fn admit_all(&self, attempts: &[Attempt]) -> Result<Vec<Result<Admission, StoreError>>, StoreError> {
        let acct = self.acct();
        let mut conn = self.lock();
        let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let [a] = attempts {
            // Alone, the transaction is the attempt's savepoint: on failure it is rolled back.
            let one = admit_one(&tx, a, acct);
            if one.is_ok() {
                tx.commit()?;
            }
            return Ok(vec![one]);
        }
        let mut out = Vec::with_capacity(attempts.len());
        for a in attempts {
            let one = tx.savepoint()?;
            match admit_one(&one, a, acct) {
                Ok(admission) => {
                    one.commit()?;
                    out.push(Ok(admission));
                }
                // Dropping the savepoint rolls back this attempt's writes only.
                Err(e) => out.push(Err(e)),
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Records a consent durably. The course's device limit is checked in the same transaction,
    /// so two guests accepting at once cannot both take the last place. A device that already
    /// has an open consent for this course does not count twice.
    ///
    /// # Errors
    /// `CourseFull`; `DiskFull`; any database failure. Nothing is written on error.
    pub fn record_consent(&self, c: &NewConsent) -> Result<i64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let id = insert_consent(&tx, c)?;
        let from = Addresses::of_ip(&c.ip);
        accounting::account(&tx, self.acct(), c.mac, c.accepted_at, Change::Accepted(from))?;
        tx.commit()?;
        Ok(id)
    }

    /// Ends one consent (used when opening the firewall failed after the consent was written).
    ///
    /// # Errors
    /// On a database failure.
    pub fn withdraw_consent(&self, id: i64, now: Timestamp, reason: &str) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ids = returning_ids(
            &tx,
            "UPDATE consents SET ended_at = ?2, end_reason = ?3 WHERE id = ?1 AND ended_at IS NULL RETURNING id",
            params![id, ts(now), reason],
        )?;
        insert_event(
            &tx,
            now,
            EventKind::ConsentWithdrawn,
            &json!({"consent": id, "reason": reason, "ended": ended(&ids, &[], reason, None)}),
        )?;
        let mac: Option<String> = tx
            .query_row("SELECT mac FROM consents WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        if let Some(mac) = mac {
            let closed = Change::Closed(StopCause::NasError);
            accounting::account(&tx, self.acct(), parse_mac(&mac)?, now, closed)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Ends every open consent given to a policy other than `current`: when the policy text
    /// changes, devices must accept again (a consent names the exact text it accepted). Returns the MACs affected.
    ///
    /// # Errors
    /// On a database failure.
    pub fn end_consents_to_other_policies(&self, current: &str, now: Timestamp) -> Result<Vec<MacAddr>, StoreError> {
        const REASON: &str = EndReason::PolicyChanged.as_str();
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (ids, macs) = end_consents(
            &tx,
            "UPDATE consents SET ended_at = ?2, end_reason = ?3
             WHERE ended_at IS NULL AND expires_at > ?2 AND policy_hash != ?1 RETURNING id, mac",
            params![current, ts(now), REASON],
        )?;
        if !ids.is_empty() {
            insert_event(
                &tx,
                now,
                EventKind::PolicyChanged,
                &json!({"policy": current, "devices_closed": macs.len(), "ended": ended(&ids, &[], REASON, None)}),
            )?;
        }
        for &mac in &macs {
            accounting::account(&tx, self.acct(), mac, now, Change::Closed(StopCause::NasRequest))?;
        }
        tx.commit()?;
        Ok(macs)
    }

    /// Ends every open consent of `mac`. Returns how many ended (0: it had no access).
    ///
    /// # Errors
    /// On a database failure.
    pub fn revoke(&self, mac: MacAddr, now: Timestamp, by: &str) -> Result<usize, StoreError> {
        const REASON: &str = EndReason::Revoked.as_str();
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (consents, exceptions) = end_device(&tx, mac, now, REASON, by)?;
        insert_subject_event(
            &tx,
            now,
            EventKind::Revoked,
            json!({
                "consents": consents.len(),
                "exceptions": exceptions.len(),
                "by": by,
                "ended": ended(&consents, &exceptions, REASON, Some(by)),
            }),
            mac,
            "",
        )?;
        accounting::account(&tx, self.acct(), mac, now, Change::Closed(StopCause::AdminReset))?;
        tx.commit()?;
        Ok(consents.len() + exceptions.len())
    }

    /// Until when `mac` may pass (the latest end among its open consents and exceptions), or
    /// `None`.
    ///
    /// # Errors
    /// On a database failure.
    pub fn allowed_until(&self, mac: MacAddr, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
        max_expiry(&self.lock(), mac, now)
    }

    /// Every MAC that may pass now (an open consent or exception), with when its access ends:
    /// exactly what the firewall set must hold.
    ///
    /// # Errors
    /// On a database failure.
    pub fn allowed(&self, now: Timestamp) -> Result<Vec<(MacAddr, Timestamp)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT mac, max(until) FROM (
                 SELECT mac, expires_at AS until FROM consents WHERE ended_at IS NULL AND expires_at > ?1
                 UNION ALL
                 SELECT mac, until FROM exceptions WHERE ended_at IS NULL AND until > ?1)
             GROUP BY mac ORDER BY mac",
        )?;
        let rows = stmt.query_map([ts(now)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|r| {
            let (m, until) = r?;
            Ok((parse_mac(&m)?, parse_ts(&until)?))
        })
        .collect()
    }

    /// Open sessions (one per open consent), oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub fn sessions(&self, now: Timestamp) -> Result<Vec<Session>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT c.id, c.mac, c.ip, c.name, c.organisation, c.course_id, k.title, c.accepted_at, c.expires_at, c.policy_hash
             FROM consents c JOIN courses k ON k.id = c.course_id
             WHERE c.ended_at IS NULL AND c.expires_at > ?1 ORDER BY c.accepted_at, c.id",
        )?;
        let rows = stmt.query_map([ts(now)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, String>(9)?,
            ))
        })?;
        rows.map(|r| {
            let (consent_id, m, ip, name, organisation, course_id, course, accepted, expires, policy_hash) = r?;
            Ok(Session {
                consent_id,
                mac: parse_mac(&m)?,
                ip,
                name,
                organisation,
                course_id,
                course,
                accepted_at: parse_ts(&accepted)?,
                expires_at: parse_ts(&expires)?,
                policy_hash,
            })
        })
        .collect()
    }

    /// Brute-force guard, atomically (a pending attempt counts for a minute at most, so one
    /// whose request failed half-way does not lock a guest out for the whole window): if `device` has fewer than `max` counted attempts since
    /// `since`, records a new pending one and returns its id; otherwise returns how many there
    /// were and the oldest. Pending attempts count, so parallel guesses cannot slip past.
    ///
    /// # Errors
    /// On a database failure.
    pub fn begin_code_attempt(
        &self,
        device: &str,
        ip: &str,
        now: Timestamp,
        since: Timestamp,
        max: u32,
    ) -> Result<Result<i64, (u32, Option<Timestamp>)>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let Err(locked) = lockout(&tx, device, now, since, max)? {
            return Ok(Err(locked));
        }
        tx.execute(
            "INSERT INTO code_attempts (device, ip, at, outcome) VALUES (?1, ?2, ?3, 'pending')",
            params![device, ip, ts(now)],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Ok(id))
    }

    /// Records how an attempt begun with `begin_code_attempt` ended: `wrong-code` counts towards
    /// the lock-out; anything else (`right-code`, `empty`) does not.
    ///
    /// # Errors
    /// On a database failure.
    pub fn finish_code_attempt(&self, id: i64, outcome: &str, now: Timestamp) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let device: String = tx.query_row(
            "UPDATE code_attempts SET outcome = ?2 WHERE id = ?1 RETURNING device",
            params![id, outcome],
            |r| r.get(0),
        )?;
        // A wrong code is a refusal worth keeping in the audit log; an empty one is not.
        if outcome == "wrong-code" {
            insert_subject_event(
                &tx,
                now,
                EventKind::RefusedWrongCode,
                json!({}),
                parse_mac(&device)?,
                "",
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every address `mac` accepted from (to forget its connections when it is closed).
    ///
    /// # Errors
    /// On a database failure.
    pub fn addresses_of(&self, mac: MacAddr) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT DISTINCT ip FROM consents WHERE mac = ?1")?;
        let rows = stmt.query_map([mac.to_string()], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Dashboard counts since `since`: (consents accepted, wrong access codes, refusals because
    /// the course was full).
    ///
    /// # Errors
    /// On a database failure.
    pub fn counts_since(&self, since: Timestamp) -> Result<(u32, u32, u32), StoreError> {
        let conn = self.lock();
        let count = |sql: &str| -> Result<u32, StoreError> { Ok(conn.query_row(sql, [ts(since)], |r| r.get(0))?) };
        Ok((
            count("SELECT count(*) FROM consents WHERE accepted_at >= ?1")?,
            count("SELECT count(*) FROM code_attempts WHERE at >= ?1 AND outcome = 'wrong-code'")?,
            count("SELECT count(*) FROM events WHERE at >= ?1 AND kind = 'refused-course-full'")?,
        ))
    }

    /// Consents accepted in `[from, to)`, optionally of one course or one device, oldest first,
    /// with their course title: the rows of an audit export.
    ///
    /// # Errors
    /// On a database failure.
    pub fn consents_between(
        &self,
        from: Timestamp,
        to: Timestamp,
        course: Option<i64>,
        mac: Option<MacAddr>,
    ) -> Result<Vec<ConsentRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT c.id, c.accepted_at, c.mac, c.ip, c.name, c.organisation, c.user_agent, c.course_id, k.title,
                    c.policy_hash, c.expires_at, c.ended_at, c.end_reason, c.ended_by, c.erased_at
             FROM consents c JOIN courses k ON k.id = c.course_id
             WHERE c.accepted_at >= ?1 AND c.accepted_at < ?2 AND (?3 IS NULL OR c.course_id = ?3) AND (?4 IS NULL OR c.mac = ?4)
             ORDER BY c.accepted_at, c.id",
        )?;
        let rows = stmt.query_map(params![ts(from), ts(to), course, mac.map(|m| m.to_string())], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, String>(9)?,
                r.get::<_, String>(10)?,
                r.get::<_, Option<String>>(11)?,
                r.get::<_, Option<String>>(12)?,
                r.get::<_, Option<String>>(13)?,
                r.get::<_, Option<String>>(14)?,
            ))
        })?;
        rows.map(|r| {
            let (
                id,
                accepted,
                m,
                ip,
                name,
                organisation,
                user_agent,
                course_id,
                course,
                policy,
                expires,
                ended,
                reason,
                by,
                erased,
            ) = r?;
            Ok(ConsentRecord {
                id,
                accepted_at: parse_ts(&accepted)?,
                // An erased consent keeps its skeleton with the MAC blanked.
                mac: if erased.is_some() { None } else { Some(parse_mac(&m)?) },
                ip,
                name,
                organisation,
                user_agent,
                course_id,
                course,
                policy_hash: policy,
                expires_at: parse_ts(&expires)?,
                ended_at: ended.as_deref().map(parse_ts).transpose()?,
                end_reason: reason,
                ended_by: by,
                erased_at: erased.as_deref().map(parse_ts).transpose()?,
            })
        })
        .collect()
    }
}

/// One consent as an audit export shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// Consent id.
    pub id: i64,
    /// When the guest accepted.
    pub accepted_at: Timestamp,
    /// The device (`None` once erased).
    pub mac: Option<MacAddr>,
    /// Its address.
    pub ip: String,
    /// Name given.
    pub name: String,
    /// Organisation given.
    pub organisation: String,
    /// The browser's User-Agent.
    pub user_agent: String,
    /// Course id.
    pub course_id: i64,
    /// Course title.
    pub course: String,
    /// SHA-256 of the policy accepted.
    pub policy_hash: String,
    /// When access was to end.
    pub expires_at: Timestamp,
    /// When it ended early, if it did.
    pub ended_at: Option<Timestamp>,
    /// Why it ended early.
    pub end_reason: Option<String>,
    /// Who ended it.
    pub ended_by: Option<String>,
    /// When its personal fields were erased (on request or by the retention purge).
    pub erased_at: Option<Timestamp>,
}
