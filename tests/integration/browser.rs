//! The portal in a real browser: Debian's Chromium on a phone-sized screen, driven by
//! playwright-core (tests/e2e/portal.mjs) inside a lab client namespace, so the daemon sees a
//! real device. Needs chromium and `npm ci --prefix tests/e2e` (scripts/test
//! does both); like the namespace tests it skips only outside CI.

use std::path::Path;
use std::process::Command;

use jiff::SignedDuration;

use crate::harness::Gateway;
use crate::netns::{GW_V4, Lab, NET_V4};

/// Whether a browser test may go on, given whether what it needs is there (`ready`): if not, it
/// fails in CI (AUPGATE_REQUIRE_NETNS=1) and elsewhere skips, printing why.
pub fn may_run(ready: Result<(), String>, what: &str) -> bool {
    let Err(why) = ready else { return true };
    assert!(
        std::env::var("AUPGATE_REQUIRE_NETNS").as_deref() != Ok("1"),
        "{what} cannot run in CI: {why}"
    );
    eprintln!("SKIP: {what}: {why}");
    false
}

pub fn browser_ready() -> Result<(), String> {
    if !Path::new("/usr/bin/chromium").exists() {
        return Err("/usr/bin/chromium is missing (apt-get install chromium)".into());
    }
    if !Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/node_modules/playwright-core")
        .exists()
    {
        return Err("playwright-core is missing (npm ci --prefix tests/e2e)".into());
    }
    Ok(())
}

/// Runs the browser script on `client` with JavaScript `js` ("on"/"off"); returns its output.
fn run_phone(lab: &Lab, gw: &Gateway<'_>, client: usize, js: &str, code: &str) -> String {
    let shots = std::env::var("AUPGATE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts/browser"));
    std::fs::create_dir_all(&shots).unwrap();
    node(
        &lab.clients[client].ns,
        "portal.mjs",
        &[
            js,
            &format!("http://{NET_V4}/some/page?x=1"),
            &format!("http://{GW_V4}:8080/"),
            &format!("http://{NET_V4}/"),
            code,
            shots.to_str().unwrap(),
        ],
        &[],
        gw,
    )
}

/// Runs `tests/e2e/SCRIPT ARGS` with node inside namespace `ns`, with `env`; asserts that it
/// succeeded (printing its output and the daemon's log if not) and returns what it printed.
pub fn node(ns: &str, script: &str, args: &[&str], env: &[(&str, &str)], gw: &Gateway<'_>) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e").join(script);
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "node"])
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
    stdout
}

fn assert_checks(stdout: &str, checks: &[&str]) {
    for check in checks {
        assert!(
            stdout.lines().any(|l| l.starts_with("ok ") && l.contains(check)),
            "check {check:?} missing:\n{stdout}"
        );
    }
}

/// The guest flow twice, on two phones: JavaScript off (as in many captive pop-ups) and on.
/// With it on, the page is measured first: under 30 kB in one request, no script, axe-core
/// clean of serious and critical issues, no horizontal scroll at 360 px and at 200 % zoom, 44 px
/// tap targets. Screenshots at 390x844 go to target/test-artefacts/browser/.
#[test]
fn a_phone_accepts_in_a_real_browser_with_and_without_javascript() {
    let Some(lab) = Lab::new(2) else { return };
    if !may_run(browser_ready(), "browser test") {
        return;
    }
    let gw = Gateway::start(&lab);
    let (_, code) = gw.add_course(
        "Phonics training",
        SignedDuration::from_hours(-1),
        SignedDuration::from_hours(6),
        40,
    );
    let flow = [
        "lands on the portal",
        "DSL contact",
        "wrong code",
        "You're connected",
        "no cookies",
        "internet answers",
    ];
    let off = run_phone(&lab, &gw, 0, "off", &code);
    assert_checks(&off, &flow);
    let on = run_phone(&lab, &gw, 1, "on", &code);
    assert_checks(&on, &flow);
    assert_checks(
        &on,
        &[
            "page weight",
            "no script",
            "axe-core: no serious or critical",
            "200 % zoom",
            "44 px",
        ],
    );
    let sessions = gw.sessions();
    assert_eq!(sessions.len(), 2);
    for (s, c) in sessions.iter().zip(&lab.clients) {
        assert_eq!(s["mac"], c.mac.as_str());
        assert_eq!(s["name"], "Ann Smith");
    }
}

/// Staff pages in a real browser with JavaScript off: sign in, dashboard, live guests and the
/// course poster, saved as artefacts; the poster's QR code, decoded from the screenshot by an
/// independent decoder (zbarimg), joins the guest Wi-Fi.
#[test]
fn staff_pages_in_a_real_browser_and_the_poster_qr_joins_the_wifi() {
    let Some(lab) = Lab::new(1) else { return };
    if !may_run(browser_ready(), "browser test") {
        return;
    }
    let mut gw = Gateway::start(&lab);
    gw.stop();
    let text = std::fs::read_to_string(&gw.config)
        .unwrap()
        .replace("[guest]\n", "[guest]\nssid = \"Claremont Guest\"\n")
        + "\n[admin]\nlisten = \"198.51.100.1:8443\"\n";
    std::fs::write(&gw.config, text).unwrap();
    gw.start_again();
    let (ok, _, err) = gw.add_admin("office", "staff", "correct horse battery");
    assert!(ok, "{err}");
    let (id, code) = gw.add_course(
        "Phonics training",
        SignedDuration::from_hours(-1),
        SignedDuration::from_hours(6),
        40,
    );
    assert_eq!(crate::harness::accept(&lab.clients[0], &code, "Ann Smith").status, 200);

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts/browser");
    std::fs::create_dir_all(&shots).unwrap();
    let stdout = node(
        &lab.net,
        "admin.mjs",
        &[
            "https://198.51.100.1:8443",
            "office",
            "correct horse battery",
            &id.to_string(),
            shots.to_str().unwrap(),
        ],
        &[],
        &gw,
    );
    assert!(stdout.contains(&format!("with code {code}")), "{stdout}");
    assert!(stdout.contains("no Content-Security-Policy violations"), "{stdout}");
    let poster = shots.join("admin-poster.png");
    let decoded = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&poster)
        .output()
        .expect("zbarimg (apt-get install zbar-tools)");
    assert_eq!(
        String::from_utf8_lossy(&decoded.stdout).trim(),
        "WIFI:T:nopass;S:Claremont Guest;;",
        "the poster's QR code"
    );
}
