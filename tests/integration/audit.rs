//! The audit log through the real daemon and CLI: `audit verify` passes on the real store,
//! then catches a row edited and an event deleted with the sqlite3 shell; the chain head is in
//! the daemon's log.

use std::process::Command;

use jiff::SignedDuration;

use crate::harness::{BIN, Gateway, accept};
use crate::netns::Lab;

fn verify(config: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "audit", "verify"])
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A copy of the stopped gateway's store and a config pointing at it.
fn copy_of(lab: &Lab, gw: &Gateway<'_>, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let db = lab.path(&format!("{name}.db"));
    std::fs::copy(&gw.store, &db).unwrap();
    let config = lab.path(&format!("{name}.toml"));
    let text = std::fs::read_to_string(&gw.config)
        .unwrap()
        .replace(gw.store.to_str().unwrap(), db.to_str().unwrap());
    std::fs::write(&config, text).unwrap();
    (db, config)
}

fn sqlite(db: &std::path::Path, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 (apt-get install sqlite3)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn audit_verify_passes_then_catches_an_edit_and_a_deletion() {
    let Some(lab) = Lab::new(2) else { return };
    let mut gw = Gateway::start(&lab);
    let (_, code) = gw.add_course(
        "Course",
        SignedDuration::from_hours(-1),
        SignedDuration::from_hours(6),
        40,
    );
    assert_eq!(accept(&lab.clients[0], &code, "Ann Smith").status, 200);
    assert_eq!(accept(&lab.clients[1], &code, "Bob Jones").status, 200);
    gw.cli_ok(&["session", "revoke", &lab.clients[0].mac]);

    let (code_ok, out) = verify(&gw.config);
    assert_eq!(code_ok, Some(0), "{out}");
    let head = out
        .trim()
        .strip_prefix("ok: ")
        .and_then(|r| r.split(", head ").nth(1))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    assert!(out.starts_with("ok: 4 events"), "course, 2 consents, revoke: {out}");
    // The daemon writes the head to its log at start (and daily): after a restart, it is this one.
    gw.stop();
    gw.start_again();
    let log = gw.log_text();
    assert!(
        log.lines().any(|l| l.contains("audit chain head") && l.contains(&head)),
        "the current head is logged: {log}"
    );
    gw.stop();

    // Someone changes a guest's name in the database.
    let (db, config) = copy_of(&lab, &gw, "edited");
    sqlite(
        &db,
        "UPDATE consents SET name = 'Someone Else' WHERE name = 'Bob Jones';",
    );
    let (code, out) = verify(&config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("ALTERED: event 3: consent 2 no longer matches"),
        "{out}"
    );

    // Someone deletes the first consent's event (and its row) to hide it.
    let (db, config) = copy_of(&lab, &gw, "deleted");
    sqlite(
        &db,
        "PRAGMA foreign_keys = OFF; DELETE FROM events WHERE kind = 'consent' AND id = 2; DELETE FROM consents WHERE id = 1;",
    );
    let (code, out) = verify(&config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("ALTERED: event 3: its link to the previous event does not match"),
        "{out}"
    );

    // Someone edits an event's text (who revoked) and recomputes nothing.
    let (db, config) = copy_of(&lab, &gw, "reworded");
    sqlite(
        &db,
        "UPDATE events SET detail = replace(detail, 'root (cli)', 'nobody') WHERE kind = 'revoked';",
    );
    let (code, out) = verify(&config);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("its content does not match its hash"), "{out}");
}
