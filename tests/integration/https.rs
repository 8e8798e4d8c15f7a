//! HTTPS and the RFC 8908 captive-portal API, through the real daemon: a throwaway CA made at
//! test time (openssl), a certificate for the portal's hostname, DNS from dnsmasq, and a client
//! that trusts only that CA.

use std::path::Path;

use serde_json::Value;

use crate::harness::{Gateway, accept_via, assert_closed_to};
use crate::netns::{Client, Lab, sh};

const NAME: &str = "wifi.school.test";

/// A CA and a server certificate for `san` (e.g. `DNS:wifi.school.test`, `IP:198.51.100.2`),
/// valid for a day; returns (ca, cert, key) paths.
pub fn throwaway_ca(dir: &Path, san: &str) -> (String, String, String) {
    let p = |f: &str| dir.join(f).display().to_string();
    let run = |args: &[&str]| {
        let (ok, _, err) = sh(args);
        assert!(ok, "{args:?}: {err}");
    };
    run(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=aupgate test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]);
    run(&[
        "openssl",
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN={}", san.split_once(':').map_or(san, |(_, name)| name)),
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]);
    std::fs::write(
        dir.join("san.ext"),
        format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    run(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p("san.ext"),
        "-out",
        &p("server.pem"),
    ]);
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

/// An HTTPS GET from `client` trusting only `ca`: (status, headers lower-cased, body).
fn https_get(client: &Client, ca: &str, url: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut args = vec!["curl", "-s", "-i", "--max-time", "5", "--cacert", ca];
    let header;
    if let Some(a) = accept {
        header = format!("Accept: {a}");
        args.extend(["-H", &header]);
    }
    args.push(url);
    let (ok, out, err) = client.run(&args);
    assert!(ok, "curl {url}: {err}");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn https_portal_and_captive_api_follow_the_device() {
    let Some(mut lab) = Lab::new(1) else { return };
    let (ca, cert, key) = throwaway_ca(lab.dir.path(), &format!("DNS:{NAME}"));
    lab.start_dns(&[], NAME);
    let mut gw = Gateway::start(&lab);
    gw.restart_with_portal(&format!(
        "hostname = \"{NAME}\"\nhttps_port = 443\ntls_cert = \"{cert}\"\ntls_key = \"{key}\""
    ));
    let c1 = &lab.clients[0];
    let api = format!("https://{NAME}/api/captive");

    // Closed: the API says captive, names the HTTPS portal and the policy page.
    let (status, head, body) = https_get(c1, &ca, &api, Some("application/captive+json"));
    assert_eq!(status, 200, "{head}{body}");
    assert!(head.contains("content-type: application/captive+json"), "{head}");
    assert!(head.contains("cache-control: private"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["captive"], true);
    assert_eq!(v["user-portal-url"], format!("https://{NAME}/"));
    assert_eq!(v["venue-info-url"], format!("https://{NAME}/policy"));
    assert!(v.get("seconds-remaining").is_none());
    // Accept is parsed: lists and parameters work, a refusal gets 406.
    assert_eq!(
        https_get(c1, &ca, &api, Some("text/html;q=0.9, application/*;q=0.5")).0,
        200
    );
    assert_eq!(https_get(c1, &ca, &api, Some("text/html")).0, 406);
    assert_eq!(
        https_get(c1, &ca, &api, Some("*/*, application/captive+json;q=0")).0,
        406
    );
    // The portal and the policy over HTTPS, trusted through the throwaway CA.
    let (status, _, page) = https_get(c1, &ca, &format!("https://{NAME}/"), None);
    assert_eq!(status, 200);
    assert!(page.contains("name=\"agree\""));
    let (status, _, policy) = https_get(c1, &ca, &format!("https://{NAME}/policy"), None);
    assert_eq!(status, 200);
    assert!(policy.contains("Wi-Fi Acceptable Use Policy"));
    // HTTPS to the internet is refused at once, never intercepted (no certificate warnings).
    assert_closed_to(c1, &format!("http://{NAME}:8080/"));

    // Open: the API says so, with the time left and no extension.
    let code = gw.add_running_course();
    assert_eq!(accept_via(c1, &format!("http://{NAME}:8080"), &code, "Ann").status, 200);
    let (_, _, body) = https_get(c1, &ca, &api, Some("application/captive+json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["captive"], false, "{body}");
    let left = v["seconds-remaining"].as_i64().unwrap();
    assert!((6 * 3600 - 120..=6 * 3600).contains(&left), "{left}");
    assert_eq!(v["can-extend-session"], false);

    // The HTTPS port is for guests only, like the plain portal.
    let (ok, _, _) = sh(&[
        "ip",
        "netns",
        "exec",
        &lab.net,
        "curl",
        "-sk",
        "--max-time",
        "5",
        "https://198.51.100.1/",
    ]);
    assert!(!ok, "HTTPS portal answered the WAN side");
}

#[test]
fn a_key_that_does_not_fit_the_certificate_is_a_config_error() {
    let Some(lab) = Lab::new(1) else { return };
    let (ca, cert, _) = throwaway_ca(lab.dir.path(), &format!("DNS:{NAME}"));
    let config = lab.path("tls.toml");
    let text = crate::harness::config_text(&lab).replace(
        "[portal]\n",
        &format!(
            "[portal]\nhostname = \"{NAME}\"\ntls_cert = \"{cert}\"\ntls_key = \"{}\"\n",
            ca.replace("ca.pem", "ca.key")
        ),
    );
    std::fs::write(&config, text).unwrap();
    let (ok, out, _) = lab.gw(&[crate::harness::BIN, "check", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("portal.tls_cert and portal.tls_key do not go together"),
        "{out}"
    );
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.gw,
            crate::harness::BIN,
            "run",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
}
