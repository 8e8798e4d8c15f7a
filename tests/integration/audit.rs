//! The audit log through the real daemon and CLI: `audit verify` passes on the real store,
//! then catches a row edited, a session reopened and an event deleted with the sqlite3 shell;
//! the chain head is in the daemon's log.

use std::process::Command;

use jiff::SignedDuration;

use crate::harness::{BIN, Gateway, accept, assert_closed, reaches_internet};
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

/// Runs `sql` with the sqlite3 shell on `db`; returns what it printed.
fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 (apt-get install sqlite3)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn audit_verify_passes_then_catches_an_edit_and_a_deletion() {
    let Some(lab) = Lab::new(2) else { return };
    let mut gw = Gateway::start(&lab);
    let code = gw.add_running_course();
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

/// Issue 10: how sessions end is part of the record. A consent closed with `session revoke`,
/// one closed with `course end`, and exceptions granted and ended (the CLI has no exception
/// command, so through the store on the stopped daemon's file, as the staff web UI does it)
/// verify. Each reopened, reworded, lengthened or forged with the sqlite3 shell makes `audit
/// verify` exit 1 naming it; with the row put back it passes again.
#[test]
fn issue_10_audit_verify_catches_a_session_or_exception_reopened_by_hand() {
    let Some(lab) = Lab::new(2) else { return };
    let mut gw = Gateway::start(&lab);
    let (c1, c2) = (&lab.clients[0], &lab.clients[1]);
    let code = gw.add_running_course();
    assert_eq!(accept(c1, &code, "Ann Smith").status, 200);
    gw.cli_ok(&["session", "revoke", &c1.mac]);
    let (course, code) = gw.add_course(
        "Second",
        SignedDuration::from_hours(-1),
        SignedDuration::from_hours(6),
        40,
    );
    assert_eq!(accept(c2, &code, "Bob Jones").status, 200);
    gw.cli_ok(&["course", "end", &course.to_string()]);
    assert_closed(c2);
    gw.stop();
    {
        let s = aupgate::store::Store::open(&gw.store).unwrap();
        let (now, mac) = (jiff::Timestamp::now(), "02:00:5e:00:00:42".parse().unwrap());
        let until = now + SignedDuration::from_hours(8);
        s.grant_exception(mac, "Contractor laptop", "office", now, until)
            .unwrap();
        let visitor = s.grant_exception(mac, "Visitor", "office", now, until).unwrap();
        s.end_exception(visitor, now, "office").unwrap();
    }
    let (db, config) = copy_of(&lab, &gw, "endings");
    let (code, out) = verify(&config);
    assert_eq!(code, Some(0), "{out}");
    let event = |kind: &str| sqlite(&db, &format!("SELECT id FROM events WHERE kind = '{kind}'"));
    let (revoked, course_ended, exception_ended) = (event("revoked"), event("course-ended"), event("exception-ended"));
    // The row as it is, as SQL literals, to put it back after each edit.
    let saved = |table: &str, id: u32, columns: &str| {
        let quoted: Vec<String> = columns.split(", ").map(|c| format!("quote({c})")).collect();
        let values = sqlite(
            &db,
            &format!("SELECT {} FROM {table} WHERE id = {id}", quoted.join(", ")),
        );
        let sets: Vec<String> = columns
            .split(", ")
            .zip(values.split('|'))
            .map(|(c, v)| format!("{c} = {v}"))
            .collect();
        format!("UPDATE {table} SET {} WHERE id = {id}", sets.join(", "))
    };
    let consent_end = "ended_at, end_reason, ended_by";
    let (one, two) = (saved("consents", 1, consent_end), saved("consents", 2, consent_end));
    let (long, visitor) = (
        saved("exceptions", 1, "until"),
        saved("exceptions", 2, "ended_at, end_reason"),
    );
    let cases = [
        (
            "UPDATE consents SET ended_at = NULL, end_reason = NULL, ended_by = NULL WHERE id = 1",
            one.clone(),
            format!("ALTERED: event {revoked}: consent 1 was reopened"),
        ),
        (
            "UPDATE consents SET ended_at = NULL, end_reason = NULL, ended_by = NULL WHERE id = 2",
            two,
            format!("ALTERED: event {course_ended}: consent 2 was reopened"),
        ),
        // A revocation reworded as a course's end would let the device accept again.
        (
            "UPDATE consents SET end_reason = 'course ended' WHERE id = 1",
            one,
            format!(
                "ALTERED: event {revoked}: consent 1 no longer matches the event that ended it (end reason was changed)"
            ),
        ),
        (
            "UPDATE exceptions SET until = '2099-01-01T00:00:00.000Z' WHERE id = 1",
            long,
            "exception 1 no longer matches its event (its end was changed)".to_owned(),
        ),
        (
            "UPDATE exceptions SET ended_at = NULL, end_reason = NULL WHERE id = 2",
            visitor,
            format!("ALTERED: event {exception_ended}: exception 2 was reopened"),
        ),
        (
            "INSERT INTO exceptions (mac, reason, granted_by, granted_at, until)
             SELECT '02:00:5e:00:00:43', 'forged', granted_by, granted_at, until FROM exceptions WHERE id = 1",
            "DELETE FROM exceptions WHERE id = 3".to_owned(),
            "ALTERED: event 0: exception 3 has no event in the chain".to_owned(),
        ),
    ];
    for (edit, restore, named) in cases {
        sqlite(&db, edit);
        let (code, out) = verify(&config);
        assert_eq!(code, Some(1), "{edit}: {out}");
        assert!(out.contains(&named), "{edit}: {out}");
        sqlite(&db, &restore);
        let (code, out) = verify(&config);
        assert_eq!(code, Some(0), "after {restore}: {out}");
    }
}

/// The export, parsed with a real CSV library and serde: BOM, RFC 4180 quoting, CRLF, a
/// formula-like name kept as text in CSV and exact in JSON, filters, and a 0600 file.
#[test]
fn audit_export_is_excel_safe_csv_and_exact_jsonl() {
    let Some(lab) = Lab::new(2) else { return };
    let mut gw = Gateway::start(&lab);
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

    // Issue 11: each export given was first recorded, as the admin UI's are: who ran it (the
    // Unix user), the range, the filter, the format and the rows; a device's MAC only beside
    // the chain. The refused one is not recorded.
    let by = match std::env::var("SUDO_USER") {
        Ok(user) if !user.trim().is_empty() => format!("{} via sudo (cli)", user.trim()),
        _ => "root (cli)".to_owned(),
    };
    let ann = Command::new(BIN)
        .args(["--config", gw.config.to_str().unwrap(), "audit", "export"])
        .args(["--from", &yesterday, "--to", &tomorrow, "--format", "csv"])
        .env("SUDO_USER", "ann")
        .output()
        .unwrap();
    assert!(ann.status.success(), "{}", String::from_utf8_lossy(&ann.stderr));
    let exports = || -> Vec<serde_json::Value> {
        let db = rusqlite::Connection::open_with_flags(&gw.store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut stmt = db
            .prepare("SELECT detail FROM events WHERE kind = 'exported' ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|d| serde_json::from_str(&d.unwrap()).unwrap())
            .collect()
    };
    let found = exports();
    let summary: Vec<_> = found
        .iter()
        .map(|e| {
            (
                e["by"].as_str().unwrap(),
                e["format"].as_str().unwrap(),
                e["course"].as_i64(),
                e["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (by.as_str(), "csv", None, 2),
            (by.as_str(), "jsonl", None, 1),
            (by.as_str(), "jsonl", Some(999), 0),
            ("ann via sudo (cli)", "csv", None, 2),
        ],
        "{found:?}"
    );
    for e in &found {
        assert!(e["from"].as_str().unwrap().starts_with(&format!("{yesterday}T")), "{e}");
        assert!(!e.to_string().contains(&c1.mac), "no MAC in the event itself: {e}");
    }
    assert!(
        found[1].get("device").is_some(),
        "the device export names it, erasably: {}",
        found[1]
    );
    let subject = gw.cli_ok(&["audit", "subject", "--mac", &c1.mac]);
    assert!(subject.contains("\"kind\": \"exported\""), "{subject}");
    let (code, out) = verify(&gw.config);
    assert_eq!(code, Some(0), "{out}");

    // An export that cannot be recorded is not given: nothing on stdout, no file, one line.
    gw.stop();
    let (db, config) = copy_of(&lab, &gw, "frozen");
    sqlite(
        &db,
        "CREATE TRIGGER frozen BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'events are frozen'); END;",
    );
    let frozen = lab.path("frozen.csv");
    for output in [None, Some(&frozen)] {
        let mut cmd = Command::new(BIN);
        cmd.args(["--config", config.to_str().unwrap(), "audit", "export"])
            .args(["--from", &yesterday, "--to", &tomorrow, "--format", "csv"]);
        if let Some(file) = output {
            cmd.arg("--output").arg(file);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            out.stdout.is_empty(),
            "given anyway: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("the export cannot be recorded in the audit log")
                && err.contains("so it is not given")
                && err.contains("fix: "),
            "{err}"
        );
    }
    assert!(!frozen.exists(), "no file for an export not recorded");
}

/// `policy list` shows each version with its acceptances; `audit subject --mac` shows everything
/// held about one device and nothing about another.
#[test]
fn policy_versions_and_a_subject_access_request() {
    let Some(lab) = Lab::new(2) else { return };
    let gw = Gateway::start(&lab);
    let code = gw.add_running_course();
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

/// Writes records from two years ago into the lab's store before the daemon first starts, as a
/// school's database would hold them: a course, a consent, a revoke and a wrong code.
fn seed_old_records(lab: &Lab, mac: &str) {
    use aupgate::clients::AccessCode;
    use aupgate::store::{NewConsent, Store};
    let store = lab.path("state/aupgate.db");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    let s = Store::open(&store).unwrap();
    let long_ago = jiff::Timestamp::now() - SignedDuration::from_hours(2 * 365 * 24);
    s.record_policy("old-policy", "# Old policy", long_ago).unwrap();
    let course = s
        .add_course(
            "Old course",
            long_ago,
            long_ago + SignedDuration::from_hours(6),
            5,
            long_ago,
            "test",
            || AccessCode::from_random(&[7; 8]).unwrap(),
        )
        .unwrap();
    let at = long_ago + SignedDuration::from_mins(5);
    s.record_consent(&NewConsent {
        course_id: course.id,
        max_devices: 5,
        mac: mac.parse().unwrap(),
        ip: "192.0.2.99".into(),
        accepted_at: at,
        expires_at: course.ends_at,
        name: "Olga Oldname".into(),
        organisation: "Old Org".into(),
        user_agent: "Old UA".into(),
        policy_hash: "old-policy".into(),
    })
    .unwrap();
    s.revoke(mac.parse().unwrap(), at + SignedDuration::from_mins(1), "dsl")
        .unwrap();
}

/// The raw bytes of the store's files (database and WAL): what a copy of the disk would show.
fn raw_store_contains(db: &std::path::Path, needle: &str) -> bool {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db.to_path_buf(), std::path::PathBuf::from(wal)].iter().any(|p| {
        std::fs::read(p)
            .unwrap_or_default()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    })
}

/// Retention and erasure through the real daemon and CLI: `purge --dry-run` shows what would
/// go and removes nothing; the daemon purges at start; `audit erase` closes a device and removes
/// its personal fields from the database file itself; `verify` passes after each.
#[test]
fn audit_purge_and_erase_keep_the_chain_verifiable() {
    let Some(lab) = Lab::new(2) else { return };
    let (c1, c2) = (&lab.clients[0], &lab.clients[1]);
    let old_mac = "02:00:5e:00:00:99";
    seed_old_records(&lab, old_mac);
    std::fs::write(lab.path("aupgate.toml"), crate::harness::config_text(&lab)).unwrap();
    let config = lab.path("aupgate.toml");
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // A dry run, without the daemon: what would go, and nothing goes.
    let plan: serde_json::Value = serde_json::from_str(&cli(&["audit", "purge", "--dry-run", "--json"])).unwrap();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["purge"]["events"], 3, "course, consent, revoke: {plan}");
    assert_eq!(plan["purge"]["consents_deleted"], 1, "{plan}");
    let text = cli(&["audit", "purge", "--dry-run"]);
    assert!(text.contains("retention 365 days: would remove"), "{text}");
    assert_eq!(verify(&config).1.trim().split(',').next(), Some("ok: 3 events"));

    // The daemon purges at start; the chain verifies from the head the purge recorded.
    let mut gw = Gateway::start(&lab);
    assert!(gw.log_text().contains("old personal data purged"), "{}", gw.log_text());
    let (code, out) = verify(&gw.config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("ok: 1 events") && out.contains("the chain continues from"),
        "{out}"
    );
    let old: serde_json::Value = serde_json::from_str(&gw.cli_ok(&["audit", "subject", "--mac", old_mac])).unwrap();
    assert_eq!(old["consents"], serde_json::json!([]), "{old}");
    assert_eq!(old["events"], serde_json::json!([]), "{old}");
    assert!(
        !raw_store_contains(&gw.store, "Olga Oldname"),
        "purged name left on disk"
    );
    assert!(gw.cli_ok(&["audit", "purge"]).contains("nothing older than 365 days"));

    // Erasure of a live device: it is closed, its personal data leaves the file, and the other
    // guest is untouched.
    let code = gw.add_running_course();
    assert_eq!(accept(c1, &code, "Ann Erasable").status, 200);
    assert_eq!(accept(c2, &code, "Bob Keeps").status, 200);
    assert!(reaches_internet(c1));
    let said = gw.cli_ok(&["audit", "erase", "--mac", &c1.mac, "--reason", "subject request SAR-17"]);
    assert!(
        said.contains("1 consent(s)") && said.contains("its access was ended first"),
        "{said}"
    );
    assert_closed(c1);
    assert!(reaches_internet(c2), "the other guest stays connected");
    let subject: serde_json::Value = serde_json::from_str(&gw.cli_ok(&["audit", "subject", "--mac", &c1.mac])).unwrap();
    assert_eq!(subject["consents"], serde_json::json!([]), "{subject}");
    assert!(
        !raw_store_contains(&gw.store, "Ann Erasable"),
        "erased name left on disk"
    );
    assert!(raw_store_contains(&gw.store, "Bob Keeps"));
    let (code, out) = verify(&gw.config);
    assert_eq!(code, Some(0), "{out}");
    // The export still lists the erased consent's skeleton, without its personal fields.
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let export = gw.cli_ok(&["audit", "export", "--from", &today, "--to", &today, "--format", "jsonl"]);
    let rows: Vec<serde_json::Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{export}");
    assert_eq!(
        (rows[0]["mac"].as_str(), rows[0]["name"].as_str()),
        (Some(""), Some("")),
        "{export}"
    );
    assert!(!rows[0]["erased_local"].as_str().unwrap().is_empty(), "{export}");
    assert_eq!(rows[0]["ended_how"], "erased", "{export}");
    assert_eq!(
        (rows[1]["name"].as_str(), rows[1]["erased_local"].as_str()),
        (Some("Bob Keeps"), Some(""))
    );
    let (ok, _, err) = gw.cli(&["audit", "erase", "--mac", &c1.mac, "--reason", "again"]);
    assert!(!ok && err.contains("nothing is held about"), "{err}");
    let (ok, _, err) = gw.cli(&["audit", "erase", "--mac", &c2.mac, "--reason", " "]);
    assert!(!ok && err.contains("reason"), "{err}");
    gw.stop();
    let (db, config) = copy_of(&lab, &gw, "erased");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT detail FROM events WHERE kind = 'erased'")
        .output()
        .unwrap();
    let detail = String::from_utf8_lossy(&out.stdout);
    assert!(detail.contains("SAR-17") && !detail.contains(&c1.mac), "{detail}");
    // Blanking the other guest's consent by hand is not an erasure.
    sqlite(
        &db,
        "UPDATE consents SET name = '', erased_at = 'x' WHERE name = 'Bob Keeps';",
    );
    let (code, out) = verify(&config);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("was blanked without an erasure or purge record"), "{out}");
}
