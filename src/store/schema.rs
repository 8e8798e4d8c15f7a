//! Ordered schema migrations. Append new ones; never edit one that has shipped. The version is
//! kept in SQLite's `user_version`, and each migration runs in a transaction.

use rusqlite_migration::{M, Migrations};

/// The number of migrations (the schema version a fully migrated database has).
pub(super) const LATEST: u32 = 9;

/// All migrations, oldest first.
pub(super) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        // 1: courses, consents, code attempts, policies, events.
        M::up(
            r#"
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Every policy text ever shown, once, keyed by the SHA-256 of its exact bytes.
CREATE TABLE policies (
    hash           TEXT PRIMARY KEY,
    text           TEXT NOT NULL,
    first_shown_at TEXT NOT NULL
) STRICT;

CREATE TABLE courses (
    id             INTEGER PRIMARY KEY,
    title          TEXT NOT NULL,
    code           TEXT NOT NULL UNIQUE,
    starts_at      TEXT NOT NULL,
    ends_at        TEXT NOT NULL,
    max_devices    INTEGER NOT NULL CHECK (max_devices > 0),
    created_at     TEXT NOT NULL,
    ended_early_at TEXT
) STRICT;

-- One row per acceptance. Rows are never deleted by normal operation; ending access sets
-- ended_at and end_reason.
CREATE TABLE consents (
    id           INTEGER PRIMARY KEY,
    course_id    INTEGER NOT NULL REFERENCES courses(id),
    mac          TEXT NOT NULL,
    ip           TEXT NOT NULL,
    accepted_at  TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    name         TEXT NOT NULL,
    organisation TEXT NOT NULL,
    user_agent   TEXT NOT NULL,
    policy_hash  TEXT NOT NULL REFERENCES policies(hash),
    ended_at     TEXT,
    end_reason   TEXT
) STRICT;
CREATE INDEX consents_by_mac ON consents(mac);
CREATE INDEX consents_open ON consents(expires_at) WHERE ended_at IS NULL;

-- Access-code attempts that failed, for the brute-force guard and for the record.
CREATE TABLE code_attempts (
    id      INTEGER PRIMARY KEY,
    device  TEXT NOT NULL,
    ip      TEXT NOT NULL,
    at      TEXT NOT NULL,
    outcome TEXT NOT NULL
) STRICT;
CREATE INDEX code_attempts_by_device ON code_attempts(device, at);

-- Append-only log of what staff and the daemon did.
CREATE TABLE events (
    id     INTEGER PRIMARY KEY,
    at     TEXT NOT NULL,
    kind   TEXT NOT NULL,
    detail TEXT NOT NULL
) STRICT;
"#,
        ),
        // 2: staff accounts for the admin web UI, their sessions, and sign-in attempts.
        M::up(
            r#"
CREATE TABLE admins (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('staff', 'auditor')),
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
) STRICT;

-- Only a hash of the session id is stored: a copy of the database does not sign anyone in.
CREATE TABLE admin_sessions (
    id_hash    TEXT PRIMARY KEY,
    admin      TEXT NOT NULL REFERENCES admins(name) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen  TEXT NOT NULL
) STRICT;

CREATE TABLE login_attempts (
    id       INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    address  TEXT NOT NULL,
    at       TEXT NOT NULL,
    ok       INTEGER NOT NULL
) STRICT;
CREATE INDEX login_attempts_by_user ON login_attempts(username, at);
CREATE INDEX login_attempts_by_address ON login_attempts(address, at);
"#,
        ),
        // 3: exceptions: a device let in without the portal, for a stated reason and time.
        M::up(
            r#"
CREATE TABLE exceptions (
    id         INTEGER PRIMARY KEY,
    mac        TEXT NOT NULL,
    reason     TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    until      TEXT NOT NULL,
    ended_at   TEXT,
    end_reason TEXT
) STRICT;
CREATE INDEX exceptions_open ON exceptions(until) WHERE ended_at IS NULL;
"#,
        ),
        // 4: the hash chain over events (filled in by Store::open for events written before it).
        M::up(
            r#"
ALTER TABLE events ADD COLUMN prev_hash TEXT;
ALTER TABLE events ADD COLUMN hash TEXT;
"#,
        ),
        // 5: who ended a consent (a staff account, "root (cli)", or the daemon), for exports.
        M::up("ALTER TABLE consents ADD COLUMN ended_by TEXT;"),
        // 6: erasure and retention. Events and consents get AUTOINCREMENT, so an id removed by the
        // retention purge is never given to a new row (erasure and purge records name ids). A
        // consent's personal fields are committed to with a random salt, forgotten on erasure. An
        // event that names a device keeps the MAC (and any free-text note) beside the chain in
        // event_subjects, and only a salted commitment in its detail, so erasing the device
        // leaves the chain intact.
        M::up(
            r#"
CREATE TABLE events_v6 (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT,
    hash      TEXT
) STRICT;
INSERT INTO events_v6 (id, at, kind, detail, prev_hash, hash)
    SELECT id, at, kind, detail, prev_hash, hash FROM events;
DROP TABLE events;
ALTER TABLE events_v6 RENAME TO events;
CREATE INDEX events_by_at ON events(at);

CREATE TABLE consents_v6 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    course_id    INTEGER NOT NULL REFERENCES courses(id),
    mac          TEXT NOT NULL,
    ip           TEXT NOT NULL,
    accepted_at  TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    name         TEXT NOT NULL,
    organisation TEXT NOT NULL,
    user_agent   TEXT NOT NULL,
    policy_hash  TEXT NOT NULL REFERENCES policies(hash),
    ended_at     TEXT,
    end_reason   TEXT,
    ended_by     TEXT,
    salt         TEXT,
    erased_at    TEXT
) STRICT;
INSERT INTO consents_v6 (id, course_id, mac, ip, accepted_at, expires_at, name, organisation,
                         user_agent, policy_hash, ended_at, end_reason, ended_by)
    SELECT id, course_id, mac, ip, accepted_at, expires_at, name, organisation,
           user_agent, policy_hash, ended_at, end_reason, ended_by FROM consents;
DROP TABLE consents;
ALTER TABLE consents_v6 RENAME TO consents;
CREATE INDEX consents_by_mac ON consents(mac);
CREATE INDEX consents_open ON consents(expires_at) WHERE ended_at IS NULL;

CREATE TABLE event_subjects (
    event_id INTEGER PRIMARY KEY REFERENCES events(id) ON DELETE CASCADE,
    salt     TEXT NOT NULL,
    mac      TEXT NOT NULL,
    note     TEXT NOT NULL
) STRICT;
CREATE INDEX event_subjects_by_mac ON event_subjects(mac);

ALTER TABLE exceptions ADD COLUMN erased_at TEXT;
"#,
        ),
        // 7: a course's open consents by course, so an accept's device count does not scan
        // every open consent (measured: 50,000 open consents made each accept 2x slower).
        M::up("CREATE INDEX consents_open_by_course ON consents(course_id, mac) WHERE ended_at IS NULL;"),
        // 8: RADIUS accounting. A device's open accounting session (its Acct-Session-Id and
        // what its Start said), and the outbox: records waiting to be delivered, per channel,
        // in id order, each deleted once its receiver has it. `subject` is the MAC a record
        // names, so an erasure finds it.
        M::up(
            r#"
CREATE TABLE accounting_sessions (
    mac        TEXT PRIMARY KEY,
    session    TEXT NOT NULL UNIQUE,
    started_at TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    class      TEXT NOT NULL,
    ipv4       TEXT,
    ipv6       TEXT NOT NULL
) STRICT;

CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    channel    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    subject    TEXT NOT NULL,
    payload    TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
) STRICT;
CREATE INDEX outbox_by_channel ON outbox(channel, id);
CREATE INDEX outbox_by_subject ON outbox(subject);
"#,
        ),
        // 9: staff signed in with the school's account (OpenID Connect) have no row in admins, so
        // a session no longer references it. `via` says how it was signed in; a password
        // session's role is its account's, read at each request (the account's removal ends it),
        // an OpenID session's role is the one it signed in with, checked against the config's
        // lists at each request.
        M::up(
            r#"
CREATE TABLE admin_sessions_v9 (
    id_hash    TEXT PRIMARY KEY,
    admin      TEXT NOT NULL,
    via        TEXT NOT NULL DEFAULT 'password' CHECK (via IN ('password', 'oidc')),
    role       TEXT CHECK (role IN ('staff', 'auditor')),
    csrf       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    CHECK ((via = 'oidc') = (role IS NOT NULL))
) STRICT;
INSERT INTO admin_sessions_v9 (id_hash, admin, csrf, created_at, last_seen)
    SELECT id_hash, admin, csrf, created_at, last_seen FROM admin_sessions;
DROP TABLE admin_sessions;
ALTER TABLE admin_sessions_v9 RENAME TO admin_sessions;
CREATE INDEX admin_sessions_by_admin ON admin_sessions(admin);
"#,
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::migrations().to_latest(&mut conn).unwrap();
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, super::LATEST, "LATEST names the last migration");
    }

    /// Migration 9 keeps every session signed in with a password, as one.
    #[test]
    fn sessions_survive_migration_9_as_password_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        super::migrations().to_version(&mut conn, 8).unwrap();
        conn.execute_batch(
            "INSERT INTO admins VALUES ('sam', 'staff', 'x', '2026-11-23T09:00:00Z');
             INSERT INTO admin_sessions VALUES ('h', 'sam', 'csrf', '2026-11-23T09:00:00Z', '2026-11-23T09:59:00Z');",
        )
        .unwrap();
        drop(conn);
        let store = crate::store::Store::open(&path).unwrap();
        let s = store
            .use_session(
                "h",
                "2026-11-23T09:30:00Z".parse().unwrap(),
                "2026-11-23T10:00:00Z".parse().unwrap(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.admin.as_str(), s.via, s.role, s.csrf.as_str()),
            (
                "sam",
                crate::store::SignedInWith::Password,
                crate::store::Role::Staff,
                "csrf"
            )
        );
        // Its account removed, it is gone.
        store
            .remove_admin("sam", "2026-11-23T10:01:00Z".parse().unwrap())
            .unwrap();
        assert!(
            store
                .use_session(
                    "h",
                    "2026-11-23T09:30:00Z".parse().unwrap(),
                    "2026-11-23T10:02:00Z".parse().unwrap()
                )
                .unwrap()
                .is_none()
        );
    }
}
