//! The audit chain: every event carries the hash of the one before and of its own content, and
//! every consent row is bound to its event by the non-personal fields and a SHA-256 commitment
//! over the personal ones. `verify` re-computes all of it and names the first thing that differs.

use rusqlite::params;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{GENESIS, Store, StoreError, event_hash};

/// SHA-256 over a consent's personal fields, one per line: the consent event carries this
/// instead of the fields, so it proves them without repeating them.
pub(super) fn personal_commitment(mac: &str, ip: &str, name: &str, organisation: &str, user_agent: &str) -> String {
    let mut h = Sha256::new();
    for part in [mac, ip, name, organisation, user_agent] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The chain and the consents agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainOk {
    /// Events checked.
    pub events: u64,
    /// The last event's hash.
    pub head: String,
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
/// id, course, mac, ip, accepted, expires, name, organisation, user agent, policy.
type ConsentRow = (i64, i64, String, String, String, String, String, String, String, String);

impl Store {
    /// Re-computes the hash chain over all events and checks every consent against its event.
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
        let mut prev = GENESIS.to_owned();
        let mut consent_events = std::collections::HashMap::new();
        for (id, at, kind, detail, prev_hash, hash) in &events {
            let brk = |problem: &str| {
                Ok(Err(ChainBreak {
                    event: *id,
                    problem: problem.to_owned(),
                }))
            };
            if prev_hash.as_deref() != Some(prev.as_str()) {
                return brk(
                    "its link to the previous event does not match (an event before it was deleted or changed)",
                );
            }
            let expected = event_hash(&prev, at, kind, detail);
            if hash.as_deref() != Some(expected.as_str()) {
                return brk("its content does not match its hash (it was edited)");
            }
            if kind == "consent"
                && let Ok(v) = serde_json::from_str::<Value>(detail)
                && let Some(c) = v.get("consent").and_then(Value::as_i64)
            {
                consent_events.insert(c, (*id, v));
            }
            prev = expected;
        }
        // Every consent row matches its event, and every consent event still has its row.
        let consents: Vec<ConsentRow> = {
            let mut stmt = conn.prepare(
                "SELECT id, course_id, mac, ip, accepted_at, expires_at, name, organisation, user_agent, policy_hash FROM consents ORDER BY id",
            )?;
            let rows = stmt.query_map(params![], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, course, mac, ip, accepted, expires, name, org, ua, policy) in &consents {
            let Some((event, v)) = consent_events.remove(id) else {
                return Ok(Err(ChainBreak {
                    event: 0,
                    problem: format!("consent {id} has no event in the chain (it was added behind the log's back)"),
                }));
            };
            let differs = |field: &str, stored: &str| v.get(field).and_then(Value::as_str).is_some_and(|e| e != stored);
            let mismatch = if v.get("course").and_then(Value::as_i64) != Some(*course) {
                Some("course")
            } else if differs("policy", policy) {
                Some("policy version")
            } else if differs("accepted_at", accepted) {
                Some("time of acceptance")
            } else if differs("expires_at", expires) {
                Some("end of access")
            } else if differs("personal", &personal_commitment(mac, ip, name, org, ua)) {
                Some("MAC, IP, name, organisation or user agent")
            } else {
                None
            };
            if let Some(field) = mismatch {
                return Ok(Err(ChainBreak {
                    event,
                    problem: format!("consent {id} no longer matches its event ({field} was changed)"),
                }));
            }
        }
        if let Some((id, (event, _))) = consent_events.into_iter().min_by_key(|(_, (e, _))| *e) {
            return Ok(Err(ChainBreak {
                event,
                problem: format!("consent {id} was deleted"),
            }));
        }
        Ok(Ok(ChainOk {
            events: events.len() as u64,
            head: prev,
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
            // The MAC appears in an event's detail as a JSON string value.
            "events": rows("SELECT id, at, kind, detail FROM events WHERE instr(detail, '\"' || ?1 || '\"') > 0 ORDER BY id")?,
        }))
    }
}
