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

/// The export, parsed with a real CSV library and serde: BOM, RFC 4180 quoting, CRLF, a
/// formula-like name kept as text in CSV and exact in JSON, filters, and a 0600 file.
#[test]
fn audit_export_is_excel_safe_csv_and_exact_jsonl() {
    let Some(lab) = Lab::new(2) else { return };
    let gw = Gateway::start(&lab);
    let (course, code) = gw.add_course(
        "Phonics, \"advanced\"",
        SignedDuration::from_hours(-1),
        SignedDuration::from_hours(6),
        40,
    );
    let (c1, c2) = (&lab.clients[0], &lab.clients[1]);
    let formula = "=HYPERLINK(\"http://evil.example\",\"click\")";
    assert_eq!(accept(c1, &code, formula).status, 200);
    assert_eq!(accept(c2, &code, "Zoë \"Z\" O'Brien, Jr").status, 200);
    gw.cli_ok(&["session", "revoke", &c1.mac]);
    // Yesterday to tomorrow, so a run across midnight still covers its consents.
    let day = |h: i64| {
        (jiff::Timestamp::now() + SignedDuration::from_hours(h))
            .strftime("%Y-%m-%d")
            .to_string()
    };
    let (yesterday, tomorrow) = (day(-24), day(24));

    let file = lab.path("export.csv");
    gw.cli_ok(&[
        "audit",
        "export",
        "--from",
        &yesterday,
        "--to",
        &tomorrow,
        "--format",
        "csv",
        "--output",
        file.to_str().unwrap(),
    ]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "personal data: owner only"
    );
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with("\u{FEFF}".as_bytes()), "UTF-8 BOM for Excel");
    assert!(String::from_utf8_lossy(&bytes).contains("\r\n"), "CRLF line ends");
    let mut reader = csv::Reader::from_reader(&bytes[3..]);
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header[..6],
        ["accepted_local", "accepted_utc", "mac", "ip", "name", "organisation"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let first = &rows[0];
    assert_eq!(&first[col("mac")], c1.mac);
    assert_eq!(
        &first[col("name")],
        format!("'{formula}"),
        "a formula stays text in a spreadsheet"
    );
    assert_eq!(&first[col("ended_how")], "revoked by root (cli)");
    assert_eq!(&first[col("course")], "Phonics, \"advanced\"");
    assert_eq!(&first[col("course_id")], course.to_string());
    assert_eq!(first[col("policy_version")].len(), 64);
    assert_eq!(&rows[1][col("name")], "Zoë \"Z\" O'Brien, Jr");
    assert_eq!(&rows[1][col("ended_how")], "open");

    // JSON Lines: exact values, one object per line; filters by device and course.
    let out = gw.cli_ok(&[
        "audit", "export", "--from", &yesterday, "--to", &tomorrow, "--format", "jsonl", "--mac", &c1.mac,
    ]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["name"], formula);
    assert_eq!(
        lines[0]["accepted_utc"].as_str().unwrap().len(),
        "2026-11-22T15:04:05.123Z".len()
    );
    let out = gw.cli_ok(&[
        "audit", "export", "--from", &yesterday, "--to", &tomorrow, "--format", "jsonl", "--course", "999",
    ]);
    assert!(out.trim().is_empty(), "no consents for another course");
    let (ok, _, err) = gw.cli(&[
        "audit",
        "export",
        "--from",
        &yesterday,
        "--to",
        "2000-01-01",
        "--format",
        "csv",
    ]);
    assert!(!ok && err.contains("--to must not be before --from"), "{err}");
}

/// `policy list` shows each version with its acceptances; `audit subject --mac` shows everything
/// held about one device and nothing about another.
#[test]
fn policy_versions_and_a_subject_access_request() {
    let Some(lab) = Lab::new(2) else { return };
    let gw = Gateway::start(&lab);
    let (_, code) = gw.add_course(
        "Course",
        SignedDuration::from_hours(-1),
        SignedDuration::from_hours(6),
        40,
    );
    let (c1, c2) = (&lab.clients[0], &lab.clients[1]);
    assert_eq!(accept(c1, &code, "Ann Smith").status, 200);
    assert_eq!(accept(c2, &code, "Bob Jones").status, 200);
    gw.cli_ok(&["session", "revoke", &c1.mac]);

    let versions: serde_json::Value = serde_json::from_str(&gw.cli_ok(&["policy", "list", "--json"])).unwrap();
    let v = &versions.as_array().unwrap()[0];
    assert_eq!(versions.as_array().unwrap().len(), 1);
    assert_eq!(v["consents"], 2);
    assert_eq!(v["current"], true);
    assert!(v["first_accepted_at"].is_string() && v["last_accepted_at"].is_string());
    assert!(gw.cli_ok(&["policy", "list"]).contains("(current)"));

    let subject: serde_json::Value =
        serde_json::from_str(&gw.cli_ok(&["audit", "subject", "--mac", &c1.mac.to_uppercase()])).unwrap();
    let consents = subject["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0]["name"], "Ann Smith");
    assert_eq!(consents[0]["ip"], c1.v4.as_str());
    assert_eq!(consents[0]["end_reason"], "revoked");
    let kinds: Vec<&str> = subject["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["consent", "revoked"]);
    assert!(
        !subject.to_string().contains("Bob Jones"),
        "nothing about another device"
    );
}
