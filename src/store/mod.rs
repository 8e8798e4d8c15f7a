//! SQLite: courses, consents, code attempts and events. Nothing outside this module writes SQL.
//! One connection behind a mutex; callers on the async side go through `spawn_blocking`. Every
//! write that records consent is committed with `synchronous=FULL` before it returns.

pub mod accounting;
mod admins;
mod audit;
mod consents;
mod courses;
mod exceptions;
mod retention;
mod schema;

/// The schema version of a store this build has migrated (`aupgate check` reports it).
pub const SCHEMA_VERSION: u32 = schema::LATEST;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

pub use admins::{Admin, AdminSession, Role, SignedInWith};
pub use audit::{ChainBreak, ChainEvent, ChainOk, PolicyVersion};
pub use consents::{Admission, Attempt, ConsentRecord, ConsentRule, NewConsent};
pub use exceptions::Exception;
pub use retention::{Erasure, Purge};

/// What can go wrong in the store.
/// What an audit event records. Stored as `as_str`, which is part of each event's hash: never
/// rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A guest accepted a policy (a consent).
    Consent,
    /// The firewall could not open a device, so its consent was withdrawn.
    ConsentWithdrawn,
    /// A wrong access code was typed.
    RefusedWrongCode,
    /// An accept was refused because the course was full.
    RefusedCourseFull,
    /// Staff revoked a device.
    Revoked,
    /// Staff granted an exception.
    ExceptionGranted,
    /// An exception was ended.
    ExceptionEnded,
    /// A course was created.
    CourseAdded,
    /// A course was ended early.
    CourseEnded,
    /// Consents to an earlier policy text were ended.
    PolicyChanged,
    /// A staff account was created.
    AdminAdded,
    /// A staff account was removed.
    AdminRemoved,
    /// Someone signed in to the admin.
    SignIn,
    /// A sign-in failed.
    SignInFailed,
    /// The consent log was exported.
    Exported,
    /// A device's personal data was erased.
    Erased,
    /// Old records were purged.
    Purge,
}

impl EventKind {
    /// Its text in the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Consent => "consent",
            Self::ConsentWithdrawn => "consent-withdrawn",
            Self::RefusedWrongCode => "refused-wrong-code",
            Self::RefusedCourseFull => "refused-course-full",
            Self::Revoked => "revoked",
            Self::ExceptionGranted => "exception-granted",
            Self::ExceptionEnded => "exception-ended",
            Self::CourseAdded => "course-added",
            Self::CourseEnded => "course-ended",
            Self::PolicyChanged => "policy-changed",
            Self::AdminAdded => "admin-added",
            Self::AdminRemoved => "admin-removed",
            Self::SignIn => "sign-in",
            Self::SignInFailed => "sign-in-failed",
            Self::Exported => "exported",
            Self::Erased => "erased",
            Self::Purge => "purge",
        }
    }
}

/// Why a consent or an exception ended (`end_reason`). Stored as `as_str`, which the audit
/// chain vouches for: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Staff revoked the device.
    Revoked,
    /// Staff ended the course early.
    CourseEnded,
    /// The policy text changed and `[policy] reaccept = "immediately"`.
    PolicyChanged,
    /// Opening the firewall failed, so the consent was withdrawn.
    FirewallError,
    /// The device's personal data was erased.
    Erased,
    /// Staff ended the exception.
    EndedByStaff,
}

impl EndReason {
    /// Its text in the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::CourseEnded => "course ended",
            Self::PolicyChanged => "policy changed",
            Self::FirewallError => "firewall error",
            Self::Erased => "erased",
            Self::EndedByStaff => "ended by staff",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The course id or MAC named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The course already has its maximum number of devices.
    #[error("the course is full")]
    CourseFull,
    /// An account with this name exists already.
    #[error("an account named {0:?} exists already")]
    AdminExists(String),
    /// The course is not running (ended, perhaps just now, or not started).
    #[error("the course is not running")]
    CourseNotRunning,
    /// Staff revoked this device's access for this course; it may not accept again.
    #[error("staff revoked this device for this course")]
    RevokedForCourse,
    /// The disk holding the database is full; nothing was written.
    #[error("the disk holding the store is full (fix: free space on that filesystem)")]
    DiskFull,
    /// The database file cannot be written (permissions, read-only filesystem).
    #[error("the store is read-only (fix: make the store's folder writable by the aupgate service)")]
    ReadOnly,
    /// The file is not an SQLite database, or its pages are damaged.
    #[error(
        "the file is damaged or is not a database (fix: move it aside, e.g. mv FILE FILE.damaged, and restore the latest backup; without a file aupgate starts an empty store)"
    )]
    Damaged,
    /// The schema could not be brought up to date.
    #[error("cannot migrate the store's schema: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// A stored value could not be read back (the database was edited by hand?).
    #[error("corrupt value in the store: {0}")]
    Corrupt(String),
    /// Any other SQLite failure.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// A failure of a transaction several callers shared (group commit), as each is told it.
    #[error("database error: {0}")]
    Shared(String),
}

impl StoreError {
    /// This failure as told to each of the callers who shared the transaction it ended.
    pub fn shared(&self) -> Self {
        match self {
            Self::DiskFull => Self::DiskFull,
            Self::ReadOnly => Self::ReadOnly,
            Self::Damaged => Self::Damaged,
            other => Self::Shared(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Self::DiskFull,
            Some(rusqlite::ErrorCode::ReadOnly) => Self::ReadOnly,
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => Self::Damaged,
            _ => Self::Sqlite(e),
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Set when RADIUS accounting is on: every change of access then writes its record.
    accounting: Arc<std::sync::OnceLock<accounting::Accounting>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it to the latest schema.
    ///
    /// # Errors
    /// If the file cannot be opened or created, or the migration fails.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        Self::prepare(&mut conn)?;
        Ok(Self::wrap(conn))
    }

    /// Opens an existing database read-only (for listings that should work without the daemon).
    ///
    /// # Errors
    /// If the file does not exist or cannot be read.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self::wrap(conn))
    }

    /// An in-memory database, for tests.
    ///
    /// # Errors
    /// Only if SQLite itself fails.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        Self::prepare(&mut conn)?;
        Ok(Self::wrap(conn))
    }

    fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL so readers (the CLI's listings) never block the daemon; FULL so a committed consent
        // survives a power cut. The pragma returns the new mode, hence query_row.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Erased and purged personal data is overwritten with zeros, not left in free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The accept's and the writer's statements are parsed once, not on every call (parsing
        // was a third of an accept's time in SQLite); room for all of them and the staff's.
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrations().to_latest(conn)?;
        Self::seal(conn)?;
        Ok(())
    }

    /// Chains events written before the chain existed (migration 4), oldest first.
    fn seal(conn: &mut Connection) -> Result<(), StoreError> {
        let tx = conn.transaction()?;
        let unsealed: Vec<(i64, String, String, String)> = {
            let mut stmt = tx.prepare("SELECT id, at, kind, detail FROM events WHERE hash IS NULL ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut prev = GENESIS.to_owned();
        for (id, at, kind, detail) in unsealed {
            let hash = event_hash(&prev, &at, &kind, &detail);
            tx.execute(
                "UPDATE events SET prev_hash = ?2, hash = ?3 WHERE id = ?1",
                params![id, prev, hash],
            )?;
            prev = hash;
        }
        tx.commit()?;
        Ok(())
    }

    fn wrap(conn: Connection) -> Self {
        Self {
            conn: Arc::new(Mutex::new(conn)),
            accounting: Arc::default(),
        }
    }

    /// Runs `f` on the blocking pool, for callers on the async side: SQLite calls (FULL sync
    /// included) must never stall a Tokio worker.
    ///
    /// # Errors
    /// Whatever `f` returns; `Corrupt` if `f` panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .unwrap_or_else(|_| Err(StoreError::Corrupt("a store call panicked".into())))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll back
        // on drop), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `text` under its hash, once; later calls with the same hash change nothing.
    ///
    /// # Errors
    /// On a database failure.
    pub fn record_policy(&self, hash: &str, text: &str, now: Timestamp) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT OR IGNORE INTO policies (hash, text, first_shown_at) VALUES (?1, ?2, ?3)",
            params![hash, text, ts(now)],
        )?;
        Ok(())
    }

    /// The full text of a stored policy version.
    ///
    /// # Errors
    /// On a database failure.
    pub fn policy_text(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT text FROM policies WHERE hash = ?1", [hash], |r| r.get(0))
            .optional()?)
    }

    /// Appends an event to the log.
    ///
    /// # Errors
    /// On a database failure.
    pub fn record_event(&self, now: Timestamp, kind: EventKind, detail: &serde_json::Value) -> Result<(), StoreError> {
        // IMMEDIATE: the chain head is read and extended under the write lock, so another
        // process writing the same file (the CLI's export record) cannot fork the chain.
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert_event(&tx, now, kind, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// The schema version of this database, and the latest this build knows.
    ///
    /// # Errors
    /// On a database failure.
    pub fn schema_versions(&self) -> Result<(u32, u32), StoreError> {
        let have: u32 = self.lock().query_row("PRAGMA user_version", [], |r| r.get(0))?;
        Ok((have, SCHEMA_VERSION))
    }

    /// Checks the database can be written, without changing anything visible.
    ///
    /// # Errors
    /// `ReadOnly`, `DiskFull` or another failure.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO settings (key, value) VALUES ('writable-check', '1')",
            [],
        )?;
        tx.rollback()?;
        Ok(())
    }
}

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event's hash: SHA-256 over the previous event's hash and this event's canonical content
/// (time, kind and the detail exactly as stored), one per line.
pub fn event_hash(prev_hash: &str, at: &str, kind: &str, detail: &str) -> String {
    sha256_lines(&[prev_hash, at, kind, detail])
}

/// SHA-256 (hex) over `parts`, each followed by a newline: the one way this store hashes
/// anything, so a value can be re-computed by hand with `printf '%s\n' … | sha256sum`.
fn sha256_lines(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random salt (128 bits, hex) for a commitment to personal data. Without it a
/// commitment to a MAC could be reversed by trying every MAC of a vendor (2^24 guesses); once
/// erasure forgets the salt, the commitment says nothing about the device.
fn new_salt() -> Result<String, StoreError> {
    let mut buf = [0u8; 16];
    getrandom::fill(&mut buf).map_err(|e| StoreError::Corrupt(format!("the kernel's random source failed: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The commitment an event carries (as `"device"`) to the device it names and a free-text note.
fn device_commitment(salt: &str, mac: &str, note: &str) -> String {
    sha256_lines(&[salt, mac, note])
}

fn chain_head(conn: &Connection) -> Result<String, StoreError> {
    Ok(conn
        .prepare_cached("SELECT hash FROM events WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| r.get::<_, String>(0))
        .optional()?
        .unwrap_or_else(|| GENESIS.to_owned()))
}

/// Appends an event to the hash chain. Callers hold the connection's lock (and usually a
/// transaction), so two events can never claim the same predecessor.
fn insert_event(
    conn: &Connection,
    now: Timestamp,
    kind: EventKind,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    let prev = chain_head(conn)?;
    let (at, detail, kind) = (ts(now), detail.to_string(), kind.as_str());
    let hash = event_hash(&prev, &at, kind, &detail);
    conn.prepare_cached("INSERT INTO events (at, kind, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![at, kind, detail, prev, hash])?;
    Ok(())
}

/// After an erasure or purge: copies the WAL into the database and truncates it, so the old
/// versions of the pages (with the personal data) do not linger in the WAL file. Best effort: a
/// reader holding an old snapshot can make it incomplete, and the next one finishes the job.
fn forget_old_pages(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "could not checkpoint the store after removing personal data");
    }
}

/// Appends an event that names a device. The MAC and `note` (free text staff typed, which may
/// be personal) are kept beside the chain in `event_subjects`; the event itself carries only a
/// salted commitment to them, so erasing the device later does not break the chain.
fn insert_subject_event(
    conn: &Connection,
    now: Timestamp,
    kind: EventKind,
    mut detail: serde_json::Value,
    mac: crate::clients::MacAddr,
    note: &str,
) -> Result<(), StoreError> {
    let (salt, mac) = (new_salt()?, mac.to_string());
    if let Some(obj) = detail.as_object_mut() {
        obj.insert("device".into(), device_commitment(&salt, &mac, note).into());
    }
    insert_event(conn, now, kind, &detail)?;
    conn.prepare_cached("INSERT INTO event_subjects (event_id, salt, mac, note) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![conn.last_insert_rowid(), salt, mac, note])?;
    Ok(())
}

/// Timestamps are stored as fixed-width RFC 3339 UTC text (millisecond precision), so that text
/// order is time order and `WHERE at > ?` is correct in SQL.
pub(crate) fn ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A MAC as stored (always written by us, lower-case); anything else means the file was edited.
fn parse_mac(text: &str) -> Result<crate::clients::MacAddr, StoreError> {
    text.parse()
        .map_err(|e: crate::clients::MacParseError| StoreError::Corrupt(e.to_string()))
}

fn parse_ts(text: &str) -> Result<Timestamp, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("timestamp {text:?}: {e}")))
}

#[cfg(test)]
mod tests;
