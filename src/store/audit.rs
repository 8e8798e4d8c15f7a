//! The audit chain: every event carries the hash of the one before and of its own content, and
//! every consent row is bound to its event by the non-personal fields and a SHA-256 commitment
//! over the personal ones. Exception rows are bound to their grant the same way, and every row
//! that ended to the event that ended it (`ended`). `verify` re-computes all of it and names the
//! first thing that differs.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, params};
use serde_json::Value;

use super::EventKind;
use super::{GENESIS, Store, StoreError, device_commitment, event_hash, sha256_lines};

/// The commitment a consent's event carries (as `"personal"`) to its personal fields: SHA-256
/// over the salt and the fields, one per line. Consents written before salts existed have none.
pub(super) fn personal_commitment(
    salt: Option<&str>,
    mac: &str,
    ip: &str,
    name: &str,
    organisation: &str,
    user_agent: &str,
) -> String {
    match salt {
        Some(salt) => sha256_lines(&[salt, mac, ip, name, organisation, user_agent]),
        None => sha256_lines(&[mac, ip, name, organisation, user_agent]),
    }
}

/// Runs an `UPDATE … RETURNING id` (or a `DELETE`) and returns the ids it touched, sorted, so a
/// record of them reads the same whatever order SQLite visited the rows in.
pub(super) fn returning_ids(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut ids: Vec<i64> = stmt.query_map(args, |r| r.get(0))?.collect::<Result<_, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// The record an event that ends sessions carries under `"ended"`: the consents and exceptions
/// it ended, and the `end_reason` (and, for consents, `ended_by`) it gave them; their `ended_at`
/// is the event's own time. `verify` holds every ended row to it, so a row reopened or reworded
/// by hand is caught. Every UPDATE that ends a row writes one in the same transaction.
pub(super) fn ended(consents: &[i64], exceptions: &[i64], end_reason: &str, ended_by: Option<&str>) -> Value {
    serde_json::json!({
        "consents": consents,
        "exceptions": exceptions,
        "end_reason": end_reason,
        "ended_by": ended_by,
    })
}

/// The chain and the consents agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainOk {
    /// Events checked.
    pub events: u64,
    /// The last event's hash.
    pub head: String,
    /// Where the chain starts, when a retention purge removed its beginning: the hash of the
    /// last event removed, as the purge recorded it.
    pub continues_from: Option<String>,
}

/// One audit event's row, exactly as stored (the text is what the hash covers), as a school
/// ships it to the trust hub. `seq` is its id, which only grows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainEvent {
    /// The school's event id.
    pub seq: i64,
    /// When, as stored (RFC 3339).
    pub at: String,
    /// The event kind's text.
    pub kind: String,
    /// The detail, exactly as stored.
    pub detail: String,
    /// The hash of the event before it.
    pub prev_hash: String,
    /// Its own hash.
    pub hash: String,
}

/// The first place where the record was altered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event}: {problem}")]
pub struct ChainBreak {
    /// The event id where the chain or a consent stops matching.
    pub event: i64,
    /// What does not match.
    pub problem: String,
}

type Row = (i64, String, String, String, Option<String>, Option<String>);

/// A consent as verify reads it.
struct ConsentRow {
    id: i64,
    course: i64,
    accepted: String,
    expires: String,
    policy: String,
    /// mac, ip, name, organisation, user agent.
    personal: [String; 5],
    salt: Option<String>,
    erased: bool,
    end: RowEnd,
}

/// How a consent or exception row says it ended: `ended_at`, `end_reason` and (consents only)
/// `ended_by`.
struct RowEnd {
    at: Option<String>,
    reason: Option<String>,
    /// `None` for an exception, which has no such column.
    by: Option<Option<String>>,
}

/// How an event says a row ended (`ended_at` is the event's time).
#[derive(Clone)]
struct End {
    event: i64,
    at: String,
    reason: String,
    by: Option<String>,
}

/// An exception as its grant event records it.
struct Grant {
    event: i64,
    at: String,
    until: String,
    by: String,
    /// The event commits to the device and reason (through its device link). Grants written
    /// before device links existed do not, and their row's device cannot be checked.
    committed: bool,
    /// An erasure after this grant blanked the exception.
    erased: bool,
}

/// The kinds of event that end consents or exceptions.
const ENDING_KINDS: [&str; 6] = [
    EventKind::Revoked.as_str(),
    EventKind::CourseEnded.as_str(),
    EventKind::PolicyChanged.as_str(),
    EventKind::ConsentWithdrawn.as_str(),
    EventKind::Erased.as_str(),
    EventKind::ExceptionEnded.as_str(),
];

/// What the chain says about how rows ended, and which exceptions it granted.
#[derive(Default)]
struct Endings {
    consents: HashMap<i64, End>,
    exceptions: HashMap<i64, End>,
    grants: HashMap<i64, Grant>,
    /// The times of ending events written before events recorded what they ended (`ended`).
    /// Which rows those ended is unknown, so a row ended at exactly such a time is accepted
    /// unchecked, and one such an event ended cannot be caught if reopened.
    unrecorded: HashSet<String>,
}

fn ids(v: &Value, key: &str) -> Vec<i64> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

impl Endings {
    fn note(&mut self, event: i64, at: &str, kind: &str, v: &Value) {
        let end = |reason: String, by: Option<String>| End {
            event,
            at: at.to_owned(),
            reason,
            by,
        };
        if kind == EventKind::ExceptionGranted.as_str() {
            if let Some(x) = v.get("exception").and_then(Value::as_i64) {
                // A purge can delete the newest exception, and the table then gives its id
                // again: a grant starts that id's story afresh.
                self.exceptions.remove(&x);
                let (until, by) = (text(v, "until"), text(v, "by"));
                self.grants.insert(
                    x,
                    Grant {
                        event,
                        at: at.to_owned(),
                        until,
                        by,
                        committed: v.get("device").is_some(),
                        erased: false,
                    },
                );
            }
            return;
        }
        if kind == EventKind::Erased.as_str() {
            for x in ids(v, "exceptions") {
                if let Some(g) = self.grants.get_mut(&x) {
                    g.erased = true;
                }
            }
        }
        match v.get("ended") {
            Some(e) => {
                let by = e.get("ended_by").and_then(Value::as_str).map(str::to_owned);
                let end = end(text(e, "end_reason"), by);
                // A row is only ever ended once (every UPDATE requires `ended_at IS NULL`).
                for c in ids(e, "consents") {
                    self.consents.entry(c).or_insert_with(|| end.clone());
                }
                for x in ids(e, "exceptions") {
                    self.exceptions.entry(x).or_insert_with(|| end.clone());
                }
            }
            // Before `ended` existed, ending an exception already named it, and was recorded
            // only when its UPDATE had found the row open.
            None if kind == EventKind::ExceptionEnded.as_str() => {
                if let Some(x) = v.get("exception").and_then(Value::as_i64) {
                    self.exceptions
                        .entry(x)
                        .or_insert_with(|| end("ended by staff".into(), None));
                }
            }
            None if ENDING_KINDS.contains(&kind) => {
                self.unrecorded.insert(at.to_owned());
            }
            None => {}
        }
    }

    /// Checks how row `id` of `table` (whose own event is `own`) ended against the event that
    /// ended it, if any. Expiry at `expires_at`/`until` leaves the row open, so needs no event.
    fn check(&self, end: Option<&End>, table: &str, id: i64, own: i64, row: &RowEnd) -> Option<ChainBreak> {
        let Some(end) = end else {
            let marked = row.at.is_some() || row.reason.is_some() || row.by.as_ref().is_some_and(Option::is_some);
            let unrecorded = row.at.as_ref().is_some_and(|t| self.unrecorded.contains(t));
            return (marked && !unrecorded).then(|| ChainBreak {
                event: own,
                problem: format!(
                    "{table} {id} is marked ended but no event ended it (it was ended behind the log's back)"
                ),
            });
        };
        let field = if row.at.is_none() {
            return Some(ChainBreak {
                event: end.event,
                problem: format!("{table} {id} was reopened (this event ended it, but its row has no end any more)"),
            });
        } else if row.at.as_deref() != Some(end.at.as_str()) {
            "end time"
        } else if row.reason.as_deref() != Some(end.reason.as_str()) {
            "end reason"
        } else if row.by.as_ref().is_some_and(|by| *by != end.by) {
            "who ended it"
        } else {
            return None;
        };
        Some(ChainBreak {
            event: end.event,
            problem: format!("{table} {id} no longer matches the event that ended it ({field} was changed)"),
        })
    }
}

/// What the chain itself says was removed on purpose: by erasure (ids) and by purges (the
/// latest cut-off, and the heads the chain may continue from).
#[derive(Default)]
struct Removals {
    erased_consents: HashSet<i64>,
    erased_events: HashSet<i64>,
    purged_before: Option<String>,
    anchors: HashSet<String>,
}

impl Removals {
    fn note(&mut self, kind: &str, v: &Value) {
        const ERASED: &str = EventKind::Erased.as_str();
        const PURGE: &str = EventKind::Purge.as_str();
        match kind {
            ERASED => {
                self.erased_consents.extend(ids(v, "consents"));
                self.erased_events.extend(ids(v, "events"));
            }
            PURGE => {
                if let Some(cutoff) = v.get("cutoff").and_then(Value::as_str)
                    && self.purged_before.as_deref().is_none_or(|c| cutoff > c)
                {
                    self.purged_before = Some(cutoff.to_owned());
                }
                if let Some(h) = v.get("continues_from").and_then(Value::as_str) {
                    self.anchors.insert(h.to_owned());
                }
            }
            _ => {}
        }
    }

    /// Personal data dated `at` may be gone: a purge's cut-off is after it.
    fn purged(&self, at: &str) -> bool {
        self.purged_before.as_deref().is_some_and(|c| at < c)
    }
}

/// An exception as verify reads it.
struct ExceptionRow {
    id: i64,
    mac: String,
    reason: String,
    granted_by: String,
    granted_at: String,
    until: String,
    erased: bool,
    end: RowEnd,
}

/// Every exception row matches its grant event (device, reason, who, when, until) and the event
/// that ended it; every granted exception still has its row unless a purge removed it.
/// `links` holds the device and reason each grant event names, by event id. Exception ids can
/// be given again after a purge, so only what the chain says after an id's latest grant counts.
fn check_exceptions(
    conn: &Connection,
    endings: &Endings,
    removals: &Removals,
    links: &HashMap<i64, (String, String)>,
) -> Result<Option<ChainBreak>, StoreError> {
    let rows: Vec<ExceptionRow> = {
        let mut stmt = conn.prepare(
            "SELECT id, mac, reason, granted_by, granted_at, until, erased_at, ended_at, end_reason FROM exceptions ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ExceptionRow {
                id: r.get(0)?,
                mac: r.get(1)?,
                reason: r.get(2)?,
                granted_by: r.get(3)?,
                granted_at: r.get(4)?,
                until: r.get(5)?,
                erased: r.get::<_, Option<String>>(6)?.is_some(),
                end: RowEnd {
                    at: r.get(7)?,
                    reason: r.get(8)?,
                    by: None,
                },
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let brk = |event: i64, problem: String| Ok(Some(ChainBreak { event, problem }));
    for x in &rows {
        let Some(g) = endings.grants.get(&x.id) else {
            return brk(
                0,
                format!(
                    "exception {} has no event in the chain (it was added behind the log's back)",
                    x.id
                ),
            );
        };
        let field = if x.until != g.until {
            Some("its end")
        } else if x.granted_at != g.at {
            Some("when it was granted")
        } else if x.granted_by != g.by {
            Some("who granted it")
        } else if x.erased {
            if !g.erased {
                return brk(
                    g.event,
                    format!("exception {} was blanked without an erasure record", x.id),
                );
            }
            if !x.mac.is_empty() || !x.reason.is_empty() {
                return brk(
                    g.event,
                    format!("exception {} is marked erased but still holds personal fields", x.id),
                );
            }
            None
        } else {
            match links.get(&g.event) {
                Some((mac, note)) if *mac != x.mac || *note != x.reason => Some("device or reason"),
                Some(_) => None,
                None if !g.committed => None,
                // A purge keeps the link of a kept exception's grant, and only an erasure
                // (handled above) removes it earlier: without it the MAC cannot be checked.
                None => {
                    return brk(
                        g.event,
                        format!(
                            "exception {} has lost the device link of its event (its device can no longer be checked)",
                            x.id
                        ),
                    );
                }
            }
        };
        if let Some(field) = field {
            return brk(
                g.event,
                format!("exception {} no longer matches its event ({field} was changed)", x.id),
            );
        }
        if let Some(b) = endings.check(endings.exceptions.get(&x.id), "exception", x.id, g.event, &x.end) {
            return Ok(Some(b));
        }
    }
    // A granted exception with no row is gone on purpose only if a purge's cut-off is after its
    // end (as the chain tells it), or after an ending event that did not say what it ended.
    let present: HashSet<i64> = rows.iter().map(|x| x.id).collect();
    let deleted = endings
        .grants
        .iter()
        .filter(|(id, g)| {
            let end = endings.exceptions.get(id).map_or(g.until.as_str(), |e| e.at.as_str());
            !present.contains(id)
                && !removals.purged(end)
                && !endings
                    .unrecorded
                    .iter()
                    .any(|t| t.as_str() >= g.at.as_str() && removals.purged(t))
        })
        .min_by_key(|(_, g)| g.event);
    match deleted {
        Some((id, g)) => brk(g.event, format!("exception {id} was deleted")),
        None => Ok(None),
    }
}

impl Store {
    /// Re-computes the hash chain over all events and checks every consent, every exception,
    /// and every device an event names, against its event: a consent's or exception's end
    /// (time, reason, who) against the event that ended it, and a row marked ended against the
    /// lack of one. Data removed by `erase` or the retention purge is accepted as gone only
    /// where the chain itself records its removal.
    ///
    /// # Errors
    /// The outer error is a database failure; the inner one is the first mismatch found.
    pub fn verify(&self) -> Result<Result<ChainOk, ChainBreak>, StoreError> {
        let conn = self.lock();
        let events: Vec<Row> = {
            let mut stmt = conn.prepare("SELECT id, at, kind, detail, prev_hash, hash FROM events ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let brk = |event: i64, problem: String| Ok(Err(ChainBreak { event, problem }));
        let mut prev: Option<String> = None;
        let mut first: Option<(i64, String)> = None;
        let mut removals = Removals::default();
        let mut endings = Endings::default();
        let mut consent_events = HashMap::new();
        let mut device_events = Vec::new();
        for (id, at, kind, detail, prev_hash, hash) in &events {
            let Some(link) = prev_hash.as_deref() else {
                return brk(*id, "it has no link to the previous event".into());
            };
            match &prev {
                None => first = Some((*id, link.to_owned())),
                Some(p) if p != link => {
                    return brk(
                        *id,
                        "its link to the previous event does not match (an event before it was deleted or changed)"
                            .into(),
                    );
                }
                Some(_) => {}
            }
            let expected = event_hash(link, at, kind, detail);
            if hash.as_deref() != Some(expected.as_str()) {
                return brk(*id, "its content does not match its hash (it was edited)".into());
            }
            if let Ok(v) = serde_json::from_str::<Value>(detail) {
                removals.note(kind, &v);
                endings.note(*id, at, kind, &v);
                if let Some(d) = v.get("device").and_then(Value::as_str) {
                    device_events.push((*id, at.clone(), d.to_owned()));
                }
                if kind == EventKind::Consent.as_str()
                    && let Some(c) = v.get("consent").and_then(Value::as_i64)
                {
                    consent_events.insert(c, (*id, v));
                }
            }
            prev = Some(expected);
        }
        // The chain starts at the beginning, or exactly where a recorded purge left it.
        if let Some((id, link)) = &first
            && link != GENESIS
            && !removals.anchors.contains(link)
        {
            return brk(
                *id,
                "the chain does not start at the beginning or where a recorded purge left it (events before it were deleted)"
                    .into(),
            );
        }
        // Every device an event names is still attached, unchanged, unless erased or purged.
        let mut subjects: HashMap<i64, (String, String, String)> = {
            let mut stmt = conn.prepare("SELECT event_id, salt, mac, note FROM event_subjects")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?;
            rows.collect::<Result<_, _>>()?
        };
        // The device and reason each grant names, to hold the exception rows to below.
        let grant_links: HashMap<i64, (String, String)> = endings
            .grants
            .values()
            .filter_map(|g| {
                subjects
                    .get(&g.event)
                    .map(|(_, mac, note)| (g.event, (mac.clone(), note.clone())))
            })
            .collect();
        for (id, at, commitment) in &device_events {
            match subjects.remove(id) {
                Some((salt, mac, note)) if device_commitment(&salt, &mac, &note) != *commitment => {
                    return brk(*id, "the device or note it names was changed".into());
                }
                Some(_) => {}
                None if removals.erased_events.contains(id) || removals.purged(at) => {}
                None => {
                    return brk(
                        *id,
                        "the device it names was removed without an erasure or purge record".into(),
                    );
                }
            }
        }
        if let Some(id) = subjects.keys().min() {
            return brk(*id, "a device was attached to an event that never named one".into());
        }
        // Every consent row matches its event, and every consent event still has its row.
        let consents: Vec<ConsentRow> = {
            let mut stmt = conn.prepare(
                "SELECT id, course_id, accepted_at, expires_at, policy_hash, mac, ip, name, organisation, user_agent, salt, erased_at,
                        ended_at, end_reason, ended_by
                 FROM consents ORDER BY id",
            )?;
            let rows = stmt.query_map(params![], |r| {
                Ok(ConsentRow {
                    id: r.get(0)?,
                    course: r.get(1)?,
                    accepted: r.get(2)?,
                    expires: r.get(3)?,
                    policy: r.get(4)?,
                    personal: [r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?],
                    salt: r.get(10)?,
                    erased: r.get::<_, Option<String>>(11)?.is_some(),
                    end: RowEnd {
                        at: r.get(12)?,
                        reason: r.get(13)?,
                        by: Some(r.get(14)?),
                    },
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for c in &consents {
            let Some((event, v)) = consent_events.remove(&c.id) else {
                return brk(
                    0,
                    format!(
                        "consent {} has no event in the chain (it was added behind the log's back)",
                        c.id
                    ),
                );
            };
            let differs = |field: &str, stored: &str| v.get(field).and_then(Value::as_str).is_some_and(|e| e != stored);
            let [mac, ip, name, org, ua] = &c.personal;
            let mismatch = if v.get("course").and_then(Value::as_i64) != Some(c.course) {
                Some("course")
            } else if differs("policy", &c.policy) {
                Some("policy version")
            } else if differs("accepted_at", &c.accepted) {
                Some("time of acceptance")
            } else if differs("expires_at", &c.expires) {
                Some("end of access")
            } else if c.erased {
                if !(removals.erased_consents.contains(&c.id) || removals.purged(&c.accepted)) {
                    return brk(
                        event,
                        format!("consent {} was blanked without an erasure or purge record", c.id),
                    );
                }
                // Erasure blanks every personal field; a row marked erased that still names a
                // device would let that device through unchecked.
                if c.salt.is_some() || c.personal.iter().any(|f| !f.is_empty()) {
                    return brk(
                        event,
                        format!("consent {} is marked erased but still holds personal fields", c.id),
                    );
                }
                None
            } else if differs(
                "personal",
                &personal_commitment(c.salt.as_deref(), mac, ip, name, org, ua),
            ) {
                Some("MAC, IP, name, organisation or user agent")
            } else {
                None
            };
            if let Some(field) = mismatch {
                return brk(
                    event,
                    format!("consent {} no longer matches its event ({field} was changed)", c.id),
                );
            }
            if let Some(b) = endings.check(endings.consents.get(&c.id), "consent", c.id, event, &c.end) {
                return Ok(Err(b));
            }
        }
        if let Some((id, (event, _))) = consent_events.into_iter().min_by_key(|(_, (e, _))| *e) {
            return brk(event, format!("consent {id} was deleted"));
        }
        if let Some(b) = check_exceptions(&conn, &endings, &removals, &grant_links)? {
            return Ok(Err(b));
        }
        Ok(Ok(ChainOk {
            events: events.len() as u64,
            head: prev.unwrap_or_else(|| GENESIS.to_owned()),
            continues_from: first.map(|(_, link)| link).filter(|l| l != GENESIS),
        }))
    }

    /// Up to `limit` events after id `after`, in id order, exactly as stored: what a school
    /// ships to the trust hub next.
    ///
    /// # Errors
    /// On a database failure.
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<ChainEvent>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, kind, detail, prev_hash, hash FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            rusqlite::params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(ChainEvent {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    kind: r.get(2)?,
                    detail: r.get(3)?,
                    prev_hash: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    hash: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The current chain head (the last event's hash).
    ///
    /// # Errors
    /// On a database failure.
    pub fn chain_head(&self) -> Result<String, StoreError> {
        super::chain_head(&self.lock())
    }
}

/// A policy version as `policy list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyVersion {
    /// SHA-256 of the text.
    pub hash: String,
    /// When it was first shown.
    pub first_shown_at: String,
    /// First and last acceptance, if any.
    pub first_accepted_at: Option<String>,
    /// Last acceptance.
    pub last_accepted_at: Option<String>,
    /// How many consents name it.
    pub consents: u32,
}

impl Store {
    /// Every policy version, oldest first, with its acceptances.
    ///
    /// # Errors
    /// On a database failure.
    pub fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT p.hash, p.first_shown_at, min(c.accepted_at), max(c.accepted_at), count(c.id)
             FROM policies p LEFT JOIN consents c ON c.policy_hash = p.hash
             GROUP BY p.hash ORDER BY p.first_shown_at, p.hash",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PolicyVersion {
                hash: r.get(0)?,
                first_shown_at: r.get(1)?,
                first_accepted_at: r.get(2)?,
                last_accepted_at: r.get(3)?,
                consents: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Everything held about one device (a subject access request): its consents with every
    /// field, its exceptions, its code attempts and the events that name it.
    ///
    /// # Errors
    /// On a database failure.
    pub fn subject(&self, mac: &str) -> Result<Value, StoreError> {
        let conn = self.lock();
        let rows = |sql: &str| -> Result<Vec<Value>, StoreError> {
            let mut stmt = conn.prepare(sql)?;
            let names: Vec<String> = stmt.column_names().iter().map(|n| (*n).to_owned()).collect();
            let rows = stmt.query_map([mac], |r| {
                let mut obj = serde_json::Map::new();
                for (i, name) in names.iter().enumerate() {
                    let v: rusqlite::types::Value = r.get(i)?;
                    obj.insert(
                        name.clone(),
                        match v {
                            rusqlite::types::Value::Null => Value::Null,
                            rusqlite::types::Value::Integer(n) => Value::from(n),
                            rusqlite::types::Value::Real(f) => Value::from(f),
                            rusqlite::types::Value::Text(t) => Value::from(t),
                            rusqlite::types::Value::Blob(_) => Value::from("(binary)"),
                        },
                    );
                }
                Ok(Value::Object(obj))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        Ok(serde_json::json!({
            "mac": mac,
            "consents": rows("SELECT c.*, k.title AS course FROM consents c JOIN courses k ON k.id = c.course_id WHERE c.mac = ?1 ORDER BY c.id")?,
            "exceptions": rows("SELECT * FROM exceptions WHERE mac = ?1 ORDER BY id")?,
            "code_attempts": rows("SELECT * FROM code_attempts WHERE device = ?1 ORDER BY id")?,
            // Events name a device through event_subjects; a consent's event through its id.
            "events": rows(
                "SELECT e.id, e.at, e.kind, e.detail, s.note FROM events e JOIN event_subjects s ON s.event_id = e.id WHERE s.mac = ?1
                 UNION ALL
                 SELECT e.id, e.at, e.kind, e.detail, NULL FROM events e
                 WHERE e.kind = 'consent' AND json_extract(e.detail, '$.consent') IN (SELECT id FROM consents WHERE mac = ?1)
                 ORDER BY 1"
            )?,
        }))
    }
}

/// The CLI's own audit records. The daemon's appends are serialised by its connection's mutex;
/// the CLI is a second process on the same file, so its append takes SQLite's write lock
/// (IMMEDIATE) before it reads the chain head, and waits for the daemon's writes (busy_timeout).
impl Store {
    /// Opens an existing database read-write, for a record the CLI appends beside the running
    /// daemon: never created (a missing file is an error) and never migrated (migrations are
    /// the daemon's, at start). Callers check `schema_versions` before writing.
    ///
    /// # Errors
    /// If the file does not exist or cannot be opened for writing.
    pub fn open_existing(path: &std::path::Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // As the daemon's connection: a committed record survives a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Self::wrap(conn))
    }

    /// Records an audit export (`detail`: who, range, filter, format, rows) as an `exported`
    /// event, naming the device when the export was for one. One IMMEDIATE transaction, so it is
    /// safe from a second process beside the daemon.
    ///
    /// # Errors
    /// On a database failure (then nothing is recorded, and the export must not be given).
    pub fn record_export(
        &self,
        now: jiff::Timestamp,
        detail: Value,
        mac: Option<crate::clients::MacAddr>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        match mac {
            Some(mac) => super::insert_subject_event(&tx, now, EventKind::Exported, detail, mac, "")?,
            None => super::insert_event(&tx, now, EventKind::Exported, &detail)?,
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_11_a_second_process_records_exports_in_the_daemons_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aupgate.db");
        assert!(Store::open_existing(&path).is_err(), "never creates a store");
        assert!(!path.exists());
        let daemon = Store::open(&path).unwrap();
        let cli = Store::open_existing(&path).unwrap();
        let mac: crate::clients::MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        daemon
            .record_event(now, EventKind::CourseAdded, &serde_json::json!({"course": 1}))
            .unwrap();
        cli.record_export(now, serde_json::json!({"by": "root (cli)", "rows": 2}), None)
            .unwrap();
        daemon
            .record_event(now, EventKind::CourseEnded, &serde_json::json!({"course": 1}))
            .unwrap();
        cli.record_export(now, serde_json::json!({"by": "root (cli)", "rows": 1}), Some(mac))
            .unwrap();
        let ok = daemon.verify().unwrap().unwrap();
        assert_eq!(ok.events, 4);
        let subject = daemon.subject(&mac.to_string()).unwrap();
        assert_eq!(subject["events"][0]["kind"], "exported", "{subject}");
        assert!(
            !subject["events"][0]["detail"].as_str().unwrap().contains("02:00"),
            "{subject}"
        );
    }
}
