//! Issue 10, part 1: from the first packet after a boot, a device that has not accepted is
//! closed, whatever else is broken. A reboot is simulated by stopping the daemon, deleting our
//! table and flushing conntrack (as a fresh kernel has neither), then starting the daemon fresh.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{BIN, Gateway, accept, get, reaches_internet};
use crate::netns::{Client, INTERNET_BODY, Lab, NET_V4, NET_V6};

/// A fresh kernel: no table of ours, no tracked connections.
fn reboot(lab: &Lab) {
    let _ = lab.gw(&["nft", "delete", "table", "inet", "aupgate"]);
    let _ = lab.gw(&["conntrack", "-F"]);
}

/// Nothing from the internet host reaches `client`, on the web port or the portal's port, over
/// IPv4 or IPv6 (refused, redirected to a portal that is not there, or timed out).
fn gets_nothing(client: &Client, when: &str) {
    for url in [
        format!("http://{NET_V4}/"),
        format!("http://{NET_V4}:8080/"),
        format!("http://[{NET_V6}]/"),
        format!("http://[{NET_V6}]:8080/"),
    ] {
        if let Ok(a) = get(client, &url, &["--connect-timeout", "3"]) {
            assert!(
                !a.body.contains(INTERNET_BODY),
                "{when}: {url} answered a never-accepted device: {a:?}"
            );
        }
    }
}

/// Runs `aupgate run` in the gateway namespace and waits for it to give up; returns its exit
/// status and what it printed.
fn run_failing(gw: &Gateway<'_>) -> (i32, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &gw.lab.gw, BIN, "run", "--config"])
        .arg(&gw.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon kept running with a broken part");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one line that says what is wrong and how to fix it.
fn the_line<'a>(stderr: &'a str, names: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.starts_with("aupgate: ") && l.contains(names) && l.contains("fix"))
        .unwrap_or_else(|| panic!("no one-line error naming {names:?} with its fix:\n{stderr}"))
}

/// The shipped boot unit's own commands (its condition, then its start), pointed at the lab's
/// store folder instead of /var/lib/aupgate, run in the gateway namespace. Returns whether the
/// condition let it load the file.
fn boot_unit(lab: &Lab) -> bool {
    let unit = include_str!("../../systemd/aupgate-closed.service");
    let line = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .replace("/var/lib/aupgate/", &format!("{}/", lab.path("state").display()))
    };
    let condition = line("ExecCondition=");
    let script = condition
        .strip_prefix("/bin/sh -c '")
        .and_then(|c| c.strip_suffix('\''))
        .unwrap();
    let (go, _, _) = lab.gw(&["/bin/sh", "-c", script]);
    if !go {
        return false;
    }
    let exec = line("ExecStart=");
    let mut args = vec!["ip", "netns", "exec", &lab.gw];
    args.extend(exec.split_whitespace());
    let (ok, _, err) = crate::netns::sh(&args);
    assert!(ok, "{exec}: {err}");
    true
}

/// The unit's `ExecReload`, as `systemctl reload nftables` runs it, in the gateway namespace.
fn boot_unit_reload(lab: &Lab) {
    let unit = include_str!("../../systemd/aupgate-closed.service");
    let reload = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecReload="))
        .unwrap()
        .replace("/var/lib/aupgate/", &format!("{}/", lab.path("state").display()));
    let script = reload
        .strip_prefix("/bin/sh -c '")
        .and_then(|c| c.strip_suffix('\''))
        .unwrap();
    let (ok, _, err) = lab.gw(&["/bin/sh", "-c", script]);
    assert!(ok, "{reload}: {err}");
}

#[test]
fn issue_10_guests_are_closed_after_a_reboot_whatever_is_broken() {
    let Some(lab) = Lab::new(2) else { return };
    let (c1, c2) = (&lab.clients[0], &lab.clients[1]);
    let mut gw = Gateway::start(&lab);
    let code = gw.add_running_course();
    assert_eq!(accept(c1, &code, "Ann Smith").status, 200);
    let saved = lab.path("state/closed.nft");
    let text = std::fs::read_to_string(&saved).expect("a successful start saves the closed table");
    assert!(
        text.contains("table inet aupgate") && !text.contains("elements"),
        "{text}"
    );
    gw.stop();
    let good_config = std::fs::read_to_string(&gw.config).unwrap();

    // Without protection the hole is real: a fresh kernel and the school's own forwarding let a
    // never-accepted guest straight out. (This is what every case below must prevent.)
    reboot(&lab);
    assert!(
        reaches_internet(c2),
        "precondition: with no table the lab forwards guests"
    );

    // The boot unit alone, with no daemon at all (as if the binary did not start).
    assert!(boot_unit(&lab), "the table is absent, so the unit loads the file");
    gets_nothing(c2, "boot unit only");
    gets_nothing(c1, "boot unit only: the saved table lets nobody through");
    assert!(
        !boot_unit(&lab),
        "run again with the table in place, it leaves it alone"
    );

    // The daemon's own first act, with no boot unit: each broken part after a fresh boot.
    let policy = lab.path("policy.md");
    let assets = lab.path("assets");
    std::fs::create_dir_all(assets.join("templates")).unwrap();
    let with_portal = |lines: &str| good_config.replace("[portal]\n", &format!("[portal]\n{lines}\n"));
    // A policy saved as Windows-1252 (the pound sign), not UTF-8.
    std::fs::write(&policy, b"# Wi-Fi policy\n\nPrinting costs \xa35.\n").unwrap();
    std::fs::write(&gw.config, with_portal(&format!("policy = \"{}\"", policy.display()))).unwrap();
    reboot(&lab);
    let (status, err) = run_failing(&gw);
    assert_eq!(status, 78, "{err}");
    the_line(&err, "portal.policy");
    gets_nothing(c2, "unreadable policy");
    gets_nothing(c1, "unreadable policy");

    std::fs::write(assets.join("templates/terms.html"), "{% if %}broken").unwrap();
    std::fs::write(&gw.config, with_portal(&format!("assets = \"{}\"", assets.display()))).unwrap();
    reboot(&lab);
    let (status, err) = run_failing(&gw);
    assert_ne!(status, 0, "{err}");
    the_line(&err, "terms.html");
    gets_nothing(c2, "broken template override");

    std::fs::write(&gw.config, &good_config).unwrap();
    let db = std::fs::read(&gw.store).unwrap();
    std::fs::write(&gw.store, vec![0x5a; 64 * 1024]).unwrap();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", gw.store.display()));
    }
    reboot(&lab);
    let (status, err) = run_failing(&gw);
    assert_ne!(status, 0, "{err}");
    the_line(&err, "damaged");
    gets_nothing(c2, "corrupt store");
    std::fs::write(&gw.store, db).unwrap();

    // An invalid config: the daemon cannot know the interface, so the boot unit is what holds.
    std::fs::write(
        &gw.config,
        good_config.replace("port = 8080", "port = 8080\nprot = 8081"),
    )
    .unwrap();
    reboot(&lab);
    assert!(boot_unit(&lab));
    let (status, err) = run_failing(&gw);
    assert_eq!(status, 78, "{err}");
    the_line(&err, "prot");
    gets_nothing(c2, "invalid config");

    // The school reloads its own rules with a `flush ruleset` while the daemon is down: the
    // unit's reload (propagated from nftables.service) puts the closed table back.
    lab.gw(&["nft", "flush", "ruleset"]);
    assert!(reaches_internet(c2), "precondition: the flush opened the guest network");
    boot_unit_reload(&lab);
    gets_nothing(c2, "after the school's rules were reloaded");

    // Mended: the daemon starts, the device that accepted is back, the other stays closed.
    std::fs::write(&gw.config, &good_config).unwrap();
    reboot(&lab);
    gw.start_again();
    assert!(
        reaches_internet(c1),
        "the accepted device is let through again from the store"
    );
    gets_nothing(c2, "after mending");
}

/// `aupgate check` says when the boot-time protection is missing or stale.
#[test]
fn issue_10_check_reports_a_missing_or_stale_boot_ruleset() {
    let Some(lab) = Lab::new(1) else { return };
    let mut gw = Gateway::start(&lab);
    gw.stop();
    let config = gw.config.to_str().unwrap().to_owned();
    let finding = |lab: &Lab, config: &str| {
        let (_, out, err) = lab.gw(&[BIN, "check", "--json", "--config", config]);
        let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
        let f = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == "boot ruleset")
            .unwrap_or_else(|| panic!("no boot ruleset finding: {report:#}"))
            .clone();
        (
            f["level"].as_str().unwrap().to_owned(),
            f["message"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(finding(&lab, &config).0, "ok");
    // The portal port changed since the daemon last started: the saved table is for the old one.
    let moved = lab.path("moved.toml");
    std::fs::write(
        &moved,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("port = 8080", "port = 8081"),
    )
    .unwrap();
    let (level, message) = finding(&lab, moved.to_str().unwrap());
    assert_eq!(level, "warn");
    assert!(
        message.contains("stale") && message.contains("systemctl restart aupgate"),
        "{message}"
    );
    std::fs::remove_file(lab.path("state/closed.nft")).unwrap();
    let (level, message) = finding(&lab, &config);
    assert_eq!(level, "warn");
    assert!(message.contains("missing"), "{message}");
}

/// The boot unit passes `systemd-analyze verify` beside the daemon's unit, and is ordered as a
/// careful engineer needs: early (no default dependencies), after the school's own rules,
/// before the network and the daemon, and wanted at boot.
#[test]
fn issue_10_the_boot_unit_verifies_and_is_ordered_before_the_network() {
    if !crate::service::systemd_analyze() {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let closed = std::fs::read_to_string(root.join("systemd/aupgate-closed.service")).unwrap();
    let daemon = std::fs::read_to_string(root.join("systemd/aupgate.service")).unwrap();
    std::fs::write(dir.path().join("aupgate-closed.service"), &closed).unwrap();
    // verify checks that ExecStart exists: point the daemon's at the binary under test.
    std::fs::write(
        dir.path().join("aupgate.service"),
        daemon.replace("ExecStart=/usr/bin/aupgate", &format!("ExecStart={BIN}")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("aupgate-closed.service"))
        .arg(dir.path().join("aupgate.service"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    assert!(!err.lines().any(|l| l.contains("aupgate")), "verify warned: {err}");
    for line in [
        "DefaultDependencies=no",
        "After=local-fs.target nftables.service",
        "Before=network-pre.target aupgate.service shutdown.target",
        "Type=oneshot",
        "WantedBy=sysinit.target",
        "WantedBy=nftables.service",
        "PartOf=nftables.service",
        "ReloadPropagatedFrom=nftables.service",
        "User=aupgate",
    ] {
        assert!(closed.lines().any(|l| l == line), "{line} missing:\n{closed}");
    }
    assert!(daemon.lines().any(|l| l == "Also=aupgate-closed.service"), "{daemon}");
    assert!(
        !closed.contains("aupgate run") && !closed.contains("aupgate.toml"),
        "needs neither the daemon nor its config"
    );
}
