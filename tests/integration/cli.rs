//! `aupgate check` and the CLI's own errors: one line naming the problem and the fix, and the
//! documented exit statuses.

use std::process::Command;

use crate::harness::{BIN, Gateway, config_text};
use crate::netns::Lab;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_rejects_bad_configs_with_78_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[school]\nname = \"S\"\ntimezone = \"UTC\"\ndsl_contact = \"D\"\n[guest]\ninterface = \"lo\"\naddress = \"192.0.2.1\"\n";
    let cases = [
        (format!("{good}[portal]\nprot = 80\n"), "prot"),
        (good.replace("UTC", "Nowhere/City"), "school.timezone"),
        (good.replace("\"lo\"", "\"nosuchif0\""), "guest.interface"),
        (
            format!("{good}[portal]\npolicy = \"/nonexistent/policy.md\"\n"),
            "portal.policy",
        ),
        (
            format!("{good}[portal]\nassets = \"/nonexistent/assets\"\n"),
            "portal.assets",
        ),
        (
            format!("{good}[store]\npath = \"/proc/version/aupgate.db\"\n"),
            "store.path",
        ),
        ("not toml at all [".to_owned(), "config"),
    ];
    for (text, key) in cases {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).unwrap();
        let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 78, "{key}: {out}{err}");
        let line = out
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("{key} not named: {out}{err}"));
        assert!(line.contains("fix") || key == "prot" || key == "config", "{line}");
    }
    let (code, _, err) = run(&["check", "--config", "/nonexistent/aupgate.toml"]);
    assert_eq!(code, 78, "{err}");
    let (code, _, err) = run(&["run", "--config", "/nonexistent/aupgate.toml"]);
    assert_eq!(code, 78);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let (code, _, _) = run(&["course", "add", "--bogus"]);
    assert_eq!(code, 64, "usage error");
}

/// A missing config file is named once, with the OS's reason once, then the fix: the same line
/// from `run`, a listing and `check`.
#[test]
fn issue_11_a_missing_config_file_says_why_once() {
    let line = "cannot read config file /nonexistent/aupgate.toml: No such file or directory (os error 2) (fix: create it, from deploy/aupgate.toml in the aupgate source, or pass --config FILE)";
    for args in [&["run"][..], &["course", "list"]] {
        let (code, out, err) = run(&[&["--config", "/nonexistent/aupgate.toml"], args].concat());
        assert_eq!((code, out.as_str()), (78, ""), "{args:?}: {err}");
        assert_eq!(err, format!("aupgate: {line}\n"), "{args:?}");
    }
    let (code, out, err) = run(&["check", "--config", "/nonexistent/aupgate.toml"]);
    assert_eq!(code, 78, "{err}");
    assert_eq!(out, format!("FAIL config: {line}\n"));
}

/// `--json` means nothing for `audit export`, whose format is `--format`: a usage error naming
/// `--format jsonl`, before anything is read.
#[test]
fn issue_11_audit_export_refuses_json_and_names_format_jsonl() {
    let (code, out, err) = run(&[
        "--config",
        "/nonexistent/aupgate.toml",
        "audit",
        "export",
        "--from",
        "2026-09-01",
        "--to",
        "2026-09-30",
        "--format",
        "csv",
        "--json",
    ]);
    assert_eq!((code, out.as_str()), (64, ""), "{err}");
    assert_eq!(
        err,
        "aupgate: --json does not apply to audit export, which writes one row per consent (fix: use --format jsonl for JSON Lines)\n"
    );
}

#[test]
fn check_passes_on_a_good_gateway_and_cli_needs_the_daemon() {
    let Some(lab) = Lab::new(1) else { return };
    let config = lab.path("aupgate.toml");
    std::fs::write(&config, config_text(&lab)).unwrap();
    let (ok, out, err) = lab.gw(&[BIN, "check", "--config", config.to_str().unwrap()]);
    assert!(ok, "check on a good gateway: {out}{err}");
    assert!(out.contains("OK"), "{out}");
    // A dual-stack guest interface with no address6 configured: a warning, not a failure.
    let v4_only = lab.path("v4only.toml");
    std::fs::write(
        &v4_only,
        config_text(&lab)
            .lines()
            .filter(|l| !l.starts_with("address6"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let (ok, out, err) = lab.gw(&[BIN, "check", "--config", v4_only.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("warn ipv6: config key guest.address6") && l.contains("fd00:aa:2::1")),
        "{out}"
    );
    // An address the guest interface does not have is caught, naming the key and what it has.
    let wrong = lab.path("wrong.toml");
    std::fs::write(
        &wrong,
        config_text(&lab).replace("address = \"192.0.2.1\"", "address = \"192.0.2.9\""),
    )
    .unwrap();
    let (ok, out, _) = lab.gw(&[BIN, "check", "--config", wrong.to_str().unwrap()]);
    assert!(!ok);
    let line = out
        .lines()
        .find(|l| l.contains("guest.address:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("192.0.2.9 is not an address of guest0") && line.contains("192.0.2.1"),
        "{line}"
    );
    // Mutating commands need the running daemon and say so in one line.
    let (code, _, err) = run(&[
        "--config",
        config.to_str().unwrap(),
        "course",
        "add",
        "--title",
        "T",
        "--starts",
        "2030-01-01T09:00",
        "--ends",
        "2030-01-01T16:00",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not running"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // With the daemon: courses are created, listed and validated.
    let gw = Gateway::start(&lab);
    // The control socket is root's only, or root's and the aupgate group's where that group
    // exists (scripts/package-test creates it on the test machine).
    use std::os::unix::fs::PermissionsExt;
    let group = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("aupgate:"));
    let (sock_mode, dir_mode) = if group { (0o660, 0o750) } else { (0o600, 0o700) };
    let socket = lab.path("run/control.sock");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        sock_mode
    );
    assert_eq!(
        std::fs::metadata(socket.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        dir_mode
    );
    let out = gw.cli_ok(&[
        "course",
        "add",
        "--title",
        "Phonics training",
        "--starts",
        "2030-11-23T09:00",
        "--ends",
        "2030-11-23T16:00",
        "--max-devices",
        "40",
    ]);
    let code_line = out.lines().find(|l| l.starts_with("Access code: ")).expect(&out);
    let code = code_line.trim_start_matches("Access code: ");
    assert_eq!(code.len(), 8);
    assert!(
        code.chars().all(|c| "23456789ABCDEFGHJKMNPQRSTUVWXYZ".contains(c)),
        "{code}"
    );
    let list = gw.cli_ok(&["course", "list"]);
    assert!(
        list.contains("Phonics training") && list.contains(code) && list.contains("upcoming"),
        "{list}"
    );
    let json: serde_json::Value = serde_json::from_str(&gw.cli_ok(&["course", "list", "--json"])).unwrap();
    assert!(json.as_array().unwrap().len() == 1);
    let (ok, _, err) = gw.cli(&[
        "course",
        "add",
        "--title",
        "Backwards",
        "--starts",
        "2030-11-23T16:00",
        "--ends",
        "2030-11-23T09:00",
    ]);
    assert!(!ok && err.contains("--ends must be after --starts"), "{err}");
    let (ok, _, err) = gw.cli(&["session", "revoke", "not-a-mac"]);
    assert!(!ok && err.contains("not a MAC"), "{err}");
    let (ok, _, err) = gw.cli(&["course", "end", "999"]);
    assert!(!ok && err.contains("no course with id 999"), "{err}");
}

#[test]
fn missing_nft_is_one_line_naming_the_package() {
    let Some(lab) = Lab::new(1) else { return };
    let config = lab.path("aupgate.toml");
    std::fs::write(&config, config_text(&lab)).unwrap();
    // A PATH without nft or conntrack, as on a machine where nftables was never installed.
    let bare = lab.path("bin");
    std::fs::create_dir_all(&bare).unwrap();
    // Setting PATH on the command also changes how `ip` itself is found: name it in full.
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(ip)
            .args(["netns", "exec", &lab.gw, BIN])
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("PATH", &bare)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["check"]);
    assert_eq!(code, Some(69), "machine not ready: {out}");
    assert!(out.contains("apt-get install nftables"), "{out}");
    let (code, _, err) = run(&["run"]);
    assert_eq!(code, Some(1), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.starts_with("aupgate: ") && last.contains("apt-get install nftables"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let (ok, tables, _) = lab.gw(&["nft", "list", "tables"]);
    assert!(ok && tables.trim().is_empty(), "nothing installed: {tables}");
}

/// Staff accounts: added through the daemon (password from stdin, hashed with argon2id, never
/// stored in clear), listed without it, refused when weak or duplicate, removed.
#[test]
fn admin_accounts_are_added_listed_and_removed() {
    let Some(lab) = Lab::new(1) else { return };
    let gw = Gateway::start(&lab);
    let add = |user: &str, role: &str, password: &str| gw.add_admin(user, role, password);
    let (ok, out, err) = add("office", "staff", "correct horse battery");
    assert!(ok && out.contains("created (staff)"), "{out}{err}");
    let (ok, _, err) = add("dsl", "auditor", "another long secret");
    assert!(ok, "{err}");
    let (ok, _, err) = add("office", "staff", "correct horse battery");
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, _, err) = add("short", "staff", "tiny");
    assert!(!ok && err.contains("at least 10 characters"), "{err}");
    let (ok, _, err) = add("bad", "owner", "long enough password");
    assert!(!ok && err.contains("not a role"), "{err}");
    let list: serde_json::Value = serde_json::from_str(&gw.cli_ok(&["admin", "list", "--json"])).unwrap();
    let names: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["role"].as_str().unwrap()))
        .collect();
    assert_eq!(names, vec![("dsl", "auditor"), ("office", "staff")]);
    let db = rusqlite::Connection::open_with_flags(&gw.store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let hash: String = db
        .query_row("SELECT password_hash FROM admins WHERE name = 'office'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains("battery"), "{hash}");
    gw.cli_ok(&["admin", "remove", "office"]);
    let (ok, _, err) = gw.cli(&["admin", "remove", "office"]);
    assert!(!ok && err.contains("no account named"), "{err}");
    assert!(!gw.cli_ok(&["admin", "list"]).contains("office"));
}

/// `check` binds `[admin] listen` as `run` will: an address the router lacks is a config
/// failure (78), a port another program holds is a machine failure (69), and the running
/// daemon holding it is fine.
#[test]
fn issue_11_check_fails_on_an_admin_address_the_router_lacks_or_a_port_taken() {
    let Some(lab) = Lab::new(1) else { return };
    let config = lab.path("admin.toml");
    let check = |listen: &str| {
        std::fs::write(
            &config,
            config_text(&lab) + &format!("\n[admin]\nlisten = \"{listen}\"\n"),
        )
        .unwrap();
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.gw,
                BIN,
                "check",
                "--config",
                config.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), out.status.code(), text)
    };
    let (ok, code, out) = check("203.0.113.9:8443");
    assert!(!ok && code == Some(78), "{out}");
    assert!(
        out.lines().any(|l| l
            .starts_with("FAIL admin: config key admin.listen: 203.0.113.9 is not an address of this machine")
            && l.contains("fix: ")),
        "{out}"
    );

    // Another program on the admin port (the staff side is wan0, 198.51.100.1, in the lab).
    let mut squatter = Command::new("ip")
        .args(["netns", "exec", &lab.gw, "python3", "-c"])
        .arg("import socket, time\ns = socket.socket()\ns.bind(('198.51.100.1', 8443))\ns.listen()\nprint('up', flush=True)\ntime.sleep(60)\n")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "up");
    let (ok, code, out) = check("198.51.100.1:8443");
    squatter.kill().unwrap();
    squatter.wait().unwrap();
    assert!(!ok && code == Some(69), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL ports: port 8443 on 198.51.100.1 (admin.listen) is used by another program")),
        "{out}"
    );

    // Free, then held by the running daemon: both ok.
    let (ok, _, out) = check("198.51.100.1:8443");
    assert!(ok, "{out}");
    assert!(
        out.contains("ok   ports: 198.51.100.1:8443 (admin.listen) is free"),
        "{out}"
    );
    let mut gw = Gateway::start(&lab);
    gw.stop();
    std::fs::copy(&config, &gw.config).unwrap();
    gw.start_again();
    let (ok, out, err) = lab.gw(&[BIN, "check", "--config", gw.config.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("ok   ports: 198.51.100.1:8443 (admin.listen) is in use by the running aupgate"),
        "{out}"
    );
}
