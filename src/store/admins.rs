//! Staff accounts, their sessions and sign-in attempts. Passwords arrive here already hashed
//! (argon2id, in `admin::auth`); session ids only as SHA-256 hashes.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Store, StoreError, insert_event, parse_ts, ts};

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Courses, live guests, revoke.
    Staff,
    /// Everything staff can, plus the audit pages.
    Auditor,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Staff => "staff",
            Self::Auditor => "auditor",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "staff" => Ok(Self::Staff),
            "auditor" => Ok(Self::Auditor),
            other => Err(format!("{other:?} is not a role (staff or auditor)")),
        }
    }
}

/// An account as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    /// Sign-in name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A signed-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    /// The account.
    pub admin: String,
    /// Its role.
    pub role: Role,
    /// The session's CSRF token (every form carries it).
    pub csrf: String,
    /// Last request.
    pub last_seen: Timestamp,
}

fn role(text: &str) -> Result<Role, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

impl Store {
    /// Creates an account.
    ///
    /// # Errors
    /// `AdminExists`, or a database failure.
    pub fn add_admin(&self, name: &str, role: Role, password_hash: &str, now: Timestamp) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let exists: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM admins WHERE name = ?1)", [name], |r| {
            r.get(0)
        })?;
        if exists {
            return Err(StoreError::AdminExists(name.to_owned()));
        }
        tx.execute(
            "INSERT INTO admins (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.to_string(), password_hash, ts(now)],
        )?;
        insert_event(&tx, now, "admin-added", &json!({"admin": name, "role": role}))?;
        tx.commit()?;
        Ok(())
    }

    /// Removes an account and its sessions. Returns false if there was none.
    ///
    /// # Errors
    /// On a database failure.
    pub fn remove_admin(&self, name: &str, now: Timestamp) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM admin_sessions WHERE admin = ?1", [name])?;
        let n = tx.execute("DELETE FROM admins WHERE name = ?1", [name])?;
        if n > 0 {
            insert_event(&tx, now, "admin-removed", &json!({"admin": name}))?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// All accounts, by name.
    ///
    /// # Errors
    /// On a database failure.
    pub fn admins(&self) -> Result<Vec<Admin>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT name, role, created_at FROM admins ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })?;
        rows.map(|r| {
            let (name, r, at) = r?;
            Ok(Admin {
                name,
                role: role(&r)?,
                created_at: parse_ts(&at)?,
            })
        })
        .collect()
    }

    /// The stored password hash and role of `name`.
    ///
    /// # Errors
    /// On a database failure.
    pub fn admin_credentials(&self, name: &str) -> Result<Option<(String, Role)>, StoreError> {
        let raw: Option<(String, String)> = self
            .lock()
            .query_row("SELECT password_hash, role FROM admins WHERE name = ?1", [name], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        raw.map(|(h, r)| Ok((h, role(&r)?))).transpose()
    }

    /// Records a sign-in attempt (and, as an event, who and whether it worked).
    ///
    /// # Errors
    /// On a database failure.
    pub fn record_login(&self, username: &str, address: &str, ok: bool, now: Timestamp) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO login_attempts (username, address, at, ok) VALUES (?1, ?2, ?3, ?4)",
            params![username, address, ts(now), ok],
        )?;
        let kind = if ok { "sign-in" } else { "sign-in-failed" };
        insert_event(&tx, now, kind, &json!({"admin": username, "address": address}))?;
        tx.commit()?;
        Ok(())
    }

    /// Failed sign-ins since `since`: (for this username, from this address).
    ///
    /// # Errors
    /// On a database failure.
    pub fn failed_logins_since(
        &self,
        username: &str,
        address: &str,
        since: Timestamp,
    ) -> Result<(u32, u32), StoreError> {
        let conn = self.lock();
        let count = |col: &str, value: &str| -> Result<u32, StoreError> {
            Ok(conn.query_row(
                &format!("SELECT count(*) FROM login_attempts WHERE {col} = ?1 AND at > ?2 AND ok = 0"),
                params![value, ts(since)],
                |r| r.get(0),
            )?)
        };
        Ok((count("username", username)?, count("address", address)?))
    }

    /// Starts a session.
    ///
    /// # Errors
    /// On a database failure.
    pub fn create_session(&self, id_hash: &str, admin: &str, csrf: &str, now: Timestamp) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO admin_sessions (id_hash, admin, csrf, created_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![id_hash, admin, csrf, ts(now)],
        )?;
        Ok(())
    }

    /// The session with this id hash if it has been used since `idle_since`; marks it used now.
    /// An idle session is deleted.
    ///
    /// # Errors
    /// On a database failure.
    pub fn use_session(
        &self,
        id_hash: &str,
        idle_since: Timestamp,
        now: Timestamp,
    ) -> Result<Option<AdminSession>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let raw: Option<(String, String, String, String)> = tx
            .query_row(
                "SELECT s.admin, a.role, s.csrf, s.last_seen FROM admin_sessions s JOIN admins a ON a.name = s.admin WHERE s.id_hash = ?1",
                [id_hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((admin, r, csrf, last)) = raw else {
            return Ok(None);
        };
        let last_seen = parse_ts(&last)?;
        if last_seen <= idle_since {
            tx.execute("DELETE FROM admin_sessions WHERE id_hash = ?1", [id_hash])?;
            tx.commit()?;
            return Ok(None);
        }
        tx.execute(
            "UPDATE admin_sessions SET last_seen = ?2 WHERE id_hash = ?1",
            params![id_hash, ts(now)],
        )?;
        tx.commit()?;
        Ok(Some(AdminSession {
            admin,
            role: role(&r)?,
            csrf,
            last_seen,
        }))
    }

    /// Ends a session.
    ///
    /// # Errors
    /// On a database failure.
    pub fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM admin_sessions WHERE id_hash = ?1", [id_hash])?;
        Ok(())
    }
}
