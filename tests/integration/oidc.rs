//! Issue 14: staff sign in with the school's account. A real OpenID provider (the npm
//! `oidc-provider`, tests/e2e/idp.mjs) runs in the lab's staff-side namespace over HTTPS with a
//! throwaway CA that the config passes as `ca_file`; Debian's Chromium, driven by playwright-core
//! (tests/e2e/oidc.mjs), goes through the whole flow against the real daemon.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::browser::{browser_ready, may_run, node};
use crate::harness::{BIN, Gateway};
use crate::https::throwaway_ca;
use crate::netns::{Lab, NET_V4};

const ADMIN: &str = "https://198.51.100.1:8443";
const SECRET: &str = "aupgate-test-client-secret-3b9f0c71d2";

/// The provider's process, killed on drop (also when the test fails).
struct Idp(Child);

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts idp.mjs in the staff-side namespace; returns once it listens.
fn start_idp(lab: &Lab, issuer: &str, cert: &str, key: &str) -> Idp {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/idp.mjs");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.net, "node"])
        .arg(&script)
        .args([
            issuer,
            NET_V4,
            "9443",
            cert,
            key,
            &format!("{ADMIN}/login/oidc/callback"),
            SECRET,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node idp.mjs");
    let stdout = child.stdout.take().unwrap();
    let idp = Idp(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("idp: {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("idp listening") => return idp,
            Ok(_) => {}
            Err(e) => panic!("the OpenID provider did not start: {e}"),
        }
    }
}

fn provider_ready() -> Result<(), String> {
    browser_ready()?;
    if !Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/node_modules/oidc-provider")
        .exists()
    {
        return Err("oidc-provider is missing (npm ci --prefix tests/e2e)".into());
    }
    Ok(())
}

/// The whole flow in a real browser: staff and the DPO signed in with their roles, a stranger
/// and an unverified address refused by name with no session, a tampered or replayed state and
/// forged tokens (another client id, a signature not the provider's, expired) refused, a
/// rolled key fetched again, local sign-in beside it; `check` validates the section and prints
/// the redirect URI; every sign-in and refusal by e-mail is in the audit log, which verifies.
#[test]
fn staff_sign_in_with_the_school_account_against_a_real_openid_provider() {
    let Some(lab) = Lab::new(1) else { return };
    if !may_run(provider_ready(), "OpenID test") {
        return;
    }
    let (ca, cert, key) = throwaway_ca(lab.dir.path(), &format!("IP:{NET_V4}"));
    let issuer = format!("https://{NET_V4}:9443");
    let _idp = start_idp(&lab, &issuer, &cert, &key);
    let secret = lab.path("oidc-secret");
    // With the newline an editor leaves, which must be trimmed.
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let mut gw = Gateway::start(&lab);
    gw.stop();
    let text = std::fs::read_to_string(&gw.config).unwrap()
        + &format!(
            r#"
[admin]
listen = "198.51.100.1:8443"

[admin.oidc]
issuer = "{issuer}"
client_id = "aupgate"
client_secret_file = "{secret}"
ca_file = "{ca}"
display_name = "Claremont account"
staff = ["it.support@claremont.example.sch.uk", "@claremont.example.sch.uk"]
auditors = ["dpo@claremont.example.sch.uk"]
"#,
            secret = secret.display()
        );
    std::fs::write(&gw.config, text).unwrap();
    gw.start_again();
    gw.wait_log("school account sign-in ready", 1);

    // `check` (in the gateway's namespace, where the router's routes are) reads the secret,
    // fetches discovery through ca_file, and prints the redirect URI to register.
    let (_, check, err) = lab.gw(&[BIN, "--config", gw.config.to_str().unwrap(), "check"]);
    let ours: Vec<&str> = check.lines().filter(|l| l.contains("staff sign-in:")).collect();
    assert!(
        ours.iter().any(|l| l.starts_with("ok")
            && l.contains(&format!(
                "register this redirect URI at the provider: {ADMIN}/login/oidc/callback"
            ))),
        "{check}\n{err}"
    );
    assert!(
        ours.iter()
            .any(|l| l.starts_with("ok") && l.contains("answers discovery")),
        "{check}\n{err}"
    );
    assert!(
        ours.iter().all(|l| !l.starts_with("FAIL") && !l.starts_with("warn")),
        "{check}"
    );
    assert!(!check.contains(SECRET), "check shows the secret");

    let (ok, _, err) = gw.add_admin("office", "staff", "correct horse battery");
    assert!(ok, "{err}");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts/oidc");
    std::fs::create_dir_all(&shots).unwrap();
    let stdout = node(
        &lab.net,
        "oidc.mjs",
        &[
            ADMIN,
            &issuer,
            "office",
            "correct horse battery",
            shots.to_str().unwrap(),
        ],
        &[("NODE_EXTRA_CA_CERTS", &ca)],
        &gw,
    );
    for step in [
        "staff signed in with the school account and see the dashboard",
        "staff are not auditors",
        "a replayed callback is refused",
        "the DPO signed in as an auditor and opened /audit",
        "a stranger is refused by name and gets no session",
        "an unverified address is refused",
        "a sign-in cancelled at the provider is said plainly",
        "a tampered state is refused, with no session",
        "a token for another client id is refused",
        "a token not signed by the provider is refused",
        "an expired token is refused",
        "a token signed with a new key is accepted",
        "local sign-in still works",
    ] {
        assert!(stdout.contains(&format!("ok {step}")), "missing: {step}\n{stdout}");
    }

    // One log line for each refusal, saying which check failed.
    let log = gw.log_text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("school account sign-in refused"))
        .collect();
    for (needle, times) in [
        ("state refused: no sign-in under way", 1),
        ("state refused: it does not match", 1),
        ("ID token refused", 3),
        ("not listed in admin.oidc.staff", 1),
        ("is not verified", 1),
        ("the provider answered access_denied", 1),
    ] {
        assert_eq!(
            refusals.iter().filter(|l| l.contains(needle)).count(),
            times,
            "{needle}:\n{}",
            refusals.join("\n")
        );
    }
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("ID token refused") && l.to_lowercase().contains("audience")),
        "{}",
        refusals.join("\n")
    );
    assert!(!log.contains(SECRET), "the log shows the secret");

    // Counted for monitoring, by how and outcome.
    let (ok, metrics, err) = lab.net(&["curl", "-sk", &format!("{ADMIN}/metrics")]);
    assert!(ok, "{err}");
    for line in [
        r#"aupgate_staff_sign_ins_total{via="oidc",outcome="ok"} 3"#,
        r#"aupgate_staff_sign_ins_total{via="oidc",outcome="not-listed"} 1"#,
        r#"aupgate_staff_sign_ins_total{via="oidc",outcome="token-refused"} 3"#,
        r#"aupgate_staff_sign_ins_total{via="oidc",outcome="no-pending-sign-in"} 1"#,
        r#"aupgate_staff_sign_ins_total{via="oidc",outcome="state-mismatch"} 1"#,
        r#"aupgate_staff_sign_ins_total{via="password",outcome="ok"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }

    // Every sign-in and refusal by e-mail is an audit event, and the chain verifies.
    let (ok, events, err) = crate::netns::sh(&[
        "sqlite3",
        gw.store.to_str().unwrap(),
        "SELECT kind || ' ' || detail FROM events WHERE kind LIKE 'sign-in%' ORDER BY id",
    ]);
    assert!(ok, "{err}");
    let has = |kind: &str, parts: &[&str]| {
        events
            .lines()
            .any(|l| l.starts_with(&format!("{kind} ")) && parts.iter().all(|p| l.contains(p)))
    };
    assert!(
        has(
            "sign-in",
            &[
                "teacher@claremont.example.sch.uk",
                "\"via\":\"oidc\"",
                "\"role\":\"staff\""
            ]
        ),
        "{events}"
    );
    assert!(
        has("sign-in", &["dpo@claremont.example.sch.uk", "\"role\":\"auditor\""]),
        "{events}"
    );
    assert!(
        has("sign-in-failed", &["stranger@gmail.example", "not-listed"]),
        "{events}"
    );
    assert!(
        has(
            "sign-in-failed",
            &["unverified@claremont.example.sch.uk", "email-unverified"]
        ),
        "{events}"
    );
    assert!(has("sign-in", &["\"admin\":\"office\""]), "{events}");
    let verify = gw.cli_ok(&["audit", "verify"]);
    assert!(verify.starts_with("ok: "), "{verify}");
}
