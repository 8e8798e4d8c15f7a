//! Staff accounts, their sessions and sign-in attempts. Passwords arrive here already hashed
//! (argon2id, in `admin::auth`); session ids only as SHA-256 hashes.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::EventKind;
use super::{Store, StoreError, insert_event, parse_ts, ts};

/// `login_attempts.ok`: the password was right.
const OK: i64 = 1;
/// `login_attempts.ok`: the password was wrong.
const FAILED: i64 = 0;
/// `login_attempts.ok`: reserved, its check not finished; counted as a failure (also if the
/// daemon stopped before it finished).
const RESERVED: i64 = 2;

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

/// How a session was signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignedInWith {
    /// A local account's password (`admin` is its name).
    Password,
    /// The school's account, through its OpenID provider (`admin` is the e-mail address).
    Oidc,
}

impl SignedInWith {
    /// Its text in `admin_sessions.via`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Oidc => "oidc",
        }
    }
}

/// A signed-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    /// The account: a local account's name, or the e-mail address of a school account.
    pub admin: String,
    /// How it was signed in.
    pub via: SignedInWith,
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
        insert_event(&tx, now, EventKind::AdminAdded, &json!({"admin": name, "role": role}))?;
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
        tx.execute(
            "DELETE FROM admin_sessions WHERE admin = ?1 AND via = 'password'",
            [name],
        )?;
        let n = tx.execute("DELETE FROM admins WHERE name = ?1", [name])?;
        if n > 0 {
            insert_event(&tx, now, EventKind::AdminRemoved, &json!({"admin": name}))?;
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

    /// Reserves a sign-in attempt before its password is checked: if `username` has fewer than
    /// `per_account` failures since `since`, and `address` fewer than `per_address`, a row is
    /// added that counts as a failure until `settle_login` says otherwise, and its id returned.
    /// Counting and adding are one IMMEDIATE transaction under the store's lock, so however
    /// many attempts arrive at once, no more than the limits are ever let through to a check.
    /// `None`: locked out.
    ///
    /// # Errors
    /// On a database failure.
    pub fn reserve_login(
        &self,
        username: &str,
        address: &str,
        now: Timestamp,
        since: Timestamp,
        (per_account, per_address): (u32, u32),
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let failures = |col: &str, value: &str| -> Result<u32, StoreError> {
            Ok(tx.query_row(
                &format!("SELECT count(*) FROM login_attempts WHERE {col} = ?1 AND at > ?2 AND ok != {OK}"),
                params![value, ts(since)],
                |r| r.get(0),
            )?)
        };
        if failures("username", username)? >= per_account || failures("address", address)? >= per_address {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO login_attempts (username, address, at, ok) VALUES (?1, ?2, ?3, ?4)",
            params![username, address, ts(now), RESERVED],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Some(id))
    }

    /// Settles reserved attempt `id` once its password was checked: a success stops counting
    /// as a failure. Either way it is recorded as an event, with who and from where.
    ///
    /// # Errors
    /// On a database failure.
    pub fn settle_login(&self, id: i64, ok: bool, now: Timestamp) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (username, address): (String, String) = tx
            .query_row(
                "SELECT username, address FROM login_attempts WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("sign-in attempt {id}")))?;
        tx.execute(
            "UPDATE login_attempts SET ok = ?2 WHERE id = ?1",
            params![id, if ok { OK } else { FAILED }],
        )?;
        let kind = if ok { EventKind::SignIn } else { EventKind::SignInFailed };
        insert_event(&tx, now, kind, &json!({"admin": username, "address": address}))?;
        tx.commit()?;
        Ok(())
    }

    /// Withdraws reserved attempt `id` whose password was never checked (the checks were all
    /// busy): it was not an attempt at guessing, so it does not count.
    ///
    /// # Errors
    /// On a database failure.
    pub fn cancel_login(&self, id: i64) -> Result<(), StoreError> {
        self.lock().execute(
            "DELETE FROM login_attempts WHERE id = ?1 AND ok = ?2",
            params![id, RESERVED],
        )?;
        Ok(())
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

    /// Starts the session of a member of staff signed in with the school's account (`email`,
    /// as the provider vouched for it), with the role the config's lists gave them, and records
    /// the sign-in as an event, in one transaction.
    ///
    /// # Errors
    /// On a database failure (then there is no session).
    pub fn start_school_account_session(
        &self,
        id_hash: &str,
        (email, role): (&str, Role),
        csrf: &str,
        address: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO admin_sessions (id_hash, admin, via, role, csrf, created_at, last_seen) VALUES (?1, ?2, 'oidc', ?3, ?4, ?5, ?5)",
            params![id_hash, email, role.to_string(), csrf, ts(now)],
        )?;
        insert_event(
            &tx,
            now,
            EventKind::SignIn,
            &json!({"admin": email, "address": address, "via": "oidc", "role": role}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a refused sign-in with the school's account: `email` as the provider vouched
    /// for it, and `reason` (e.g. "not listed").
    ///
    /// # Errors
    /// On a database failure.
    pub fn school_account_refused(
        &self,
        email: &str,
        address: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        insert_event(
            &tx,
            now,
            EventKind::SignInFailed,
            &json!({"admin": email, "address": address, "via": "oidc", "reason": reason}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The session with this id hash if it has been used since `idle_since`; marks it used now.
    /// An idle session is deleted, and so is a password session whose account is gone.
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
        type Row = (String, String, Option<String>, String, String);
        let raw: Option<Row> = tx
            .query_row(
                "SELECT s.admin, s.via, CASE s.via WHEN 'oidc' THEN s.role ELSE a.role END, s.csrf, s.last_seen
                 FROM admin_sessions s LEFT JOIN admins a ON a.name = s.admin AND s.via = 'password'
                 WHERE s.id_hash = ?1",
                [id_hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((admin, via, r, csrf, last)) = raw else {
            return Ok(None);
        };
        let via = match via.as_str() {
            "password" => SignedInWith::Password,
            "oidc" => SignedInWith::Oidc,
            other => return Err(StoreError::Corrupt(format!("session signed in by {other:?}"))),
        };
        let last_seen = parse_ts(&last)?;
        let (Some(r), true) = (r, last_seen > idle_since) else {
            tx.execute("DELETE FROM admin_sessions WHERE id_hash = ?1", [id_hash])?;
            tx.commit()?;
            return Ok(None);
        };
        tx.execute(
            "UPDATE admin_sessions SET last_seen = ?2 WHERE id_hash = ?1",
            params![id_hash, ts(now)],
        )?;
        tx.commit()?;
        Ok(Some(AdminSession {
            admin,
            via,
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
