//! The portal in a real browser: Debian's Chromium, JavaScript off, a 360 px phone screen,
//! driven by playwright-core (tests/e2e/portal.mjs) inside a lab client namespace, so the
//! daemon sees a real device. Needs chromium and `npm ci --prefix tests/e2e` (scripts/test
//! does both); like the namespace tests it skips only outside CI.

use std::path::Path;
use std::process::Command;

use jiff::SignedDuration;

use crate::harness::Gateway;
use crate::netns::{GW_V4, Lab, NET_V4};

fn browser_ready() -> Result<(), String> {
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

#[test]
fn a_phone_without_javascript_accepts_in_a_real_browser() {
    let Some(lab) = Lab::new(1) else { return };
    if let Err(why) = browser_ready() {
        assert!(
            std::env::var("AUPGATE_REQUIRE_NETNS").as_deref() != Ok("1"),
            "browser test cannot run in CI: {why}"
        );
        eprintln!("SKIP: browser test: {why}");
        return;
    }
    let gw = Gateway::start(&lab);
    let (_, code) = gw.add_course(
        "Phonics training",
        SignedDuration::from_hours(-1),
        SignedDuration::from_hours(6),
        40,
    );
    let shots = std::env::var("AUPGATE_SCREENSHOTS").unwrap_or_else(|_| lab.path("").display().to_string());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/portal.mjs");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.clients[0].ns, "node"])
        .arg(&script)
        .args([
            &format!("http://{NET_V4}/some/page?x=1"),
            &format!("http://{GW_V4}:8080/"),
            &format!("http://{NET_V4}/"),
            &code,
            &shots,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser run failed:\n{stdout}\n{stderr}\n{}",
        gw.log_text()
    );
    for check in [
        "no horizontal scrolling",
        "44 px",
        "lands on the portal",
        "DSL contact",
        "wrong code",
        "You're connected",
        "no cookies",
        "internet answers",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with("ok ") && l.contains(check)),
            "check {check:?} missing:\n{stdout}"
        );
    }
    let sessions = gw.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["mac"], lab.clients[0].mac.as_str());
    assert!(sessions[0]["name"] == "Ann Smith");
}
