//! The audit chain: every event carries the hash of the one before and of its own content, and
//! every consent row is bound to its event by the non-personal fields and a SHA-256 commitment
//! over the personal ones. `verify` re-computes all of it and names the first thing that differs.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, params};
use serde_json::Value;

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
    let mut stmt = conn.prepare(sql)?;
    let mut ids: Vec<i64> = stmt.query_map(args, |r| r.get(0))?.collect::<Result<_, _>>()?;
    ids.sort_unstable();
    Ok(ids)
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
        let ids = |key: &str| {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        match kind {
            "erased" => {
                self.erased_consents.extend(ids("consents"));
                self.erased_events.extend(ids("events"));
            }
            "purge" => {
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

impl Store {
    /// Re-computes the hash chain over all events and checks every consent, and every device an
    /// event names, against its event. Data removed by `erase` or the retention purge is
    /// accepted as gone only where the chain itself records its removal.
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
                if let Some(d) = v.get("device").and_then(Value::as_str) {
                    device_events.push((*id, at.clone(), d.to_owned()));
                }
                if kind == "consent"
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
                "SELECT id, course_id, accepted_at, expires_at, policy_hash, mac, ip, name, organisation, user_agent, salt, erased_at
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
        }
        if let Some((id, (event, _))) = consent_events.into_iter().min_by_key(|(_, (e, _))| *e) {
            return brk(event, format!("consent {id} was deleted"));
        }
        Ok(Ok(ChainOk {
            events: events.len() as u64,
            head: prev.unwrap_or_else(|| GENESIS.to_owned()),
            continues_from: first.map(|(_, link)| link).filter(|l| l != GENESIS),
        }))
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
