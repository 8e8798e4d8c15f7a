//! The operating systems' captive-portal probes, as each OS sends them (request line, headers,
//! User-Agent), resolved through real DNS (dnsmasq on the gateway), over IPv4 and IPv6. Before
//! acceptance every probe must get a 302 to the portal (never 511, never 4xx), so every OS shows
//! its sign-in prompt; right after acceptance every probe must get the real answer, so the OS
//! flips its pop-up to "Done".

use jiff::SignedDuration;

use crate::harness::{Gateway, accept_via, get};
use crate::netns::Lab;

const PORTAL_NAME: &str = "wifi.school.test";

struct Probe {
    os: &'static str,
    url: &'static str,
    headers: &'static [&'static str],
    online_status: u16,
    online_body: &'static str,
}

const PROBES: &[Probe] = &[
    Probe {
        os: "iOS/macOS",
        url: "http://captive.apple.com/hotspot-detect.html",
        headers: &[
            "User-Agent: CaptiveNetworkSupport-491.1 wispr",
            "Accept: */*",
            "Accept-Language: en-GB",
            "Connection: close",
        ],
        online_status: 200,
        online_body: "Success",
    },
    Probe {
        os: "Android",
        url: "http://connectivitycheck.gstatic.com/generate_204",
        headers: &[
            "User-Agent: Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP2A.240805.005)",
            "Connection: close",
        ],
        online_status: 204,
        online_body: "",
    },
    Probe {
        os: "Android (fallback)",
        url: "http://www.google.com/gen_204",
        headers: &[
            "User-Agent: Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP2A.240805.005)",
            "Connection: close",
        ],
        online_status: 204,
        online_body: "",
    },
    Probe {
        os: "Windows",
        url: "http://www.msftconnecttest.com/connecttest.txt",
        headers: &["User-Agent: Microsoft NCSI", "Connection: Close"],
        online_status: 200,
        online_body: "Microsoft Connect Test",
    },
    Probe {
        os: "Firefox",
        url: "http://detectportal.firefox.com/canonical.html",
        headers: &[
            "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Accept: */*",
            "Cache-Control: no-cache",
            "Pragma: no-cache",
        ],
        online_status: 200,
        online_body: "support.mozilla.org/kb/captive-portal",
    },
    Probe {
        os: "Chromium/ChromeOS",
        url: "http://www.gstatic.com/generate_204",
        headers: &[
            "User-Agent: Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
        ],
        online_status: 204,
        online_body: "",
    },
];

fn probe_args(p: &Probe, family: &'static str) -> Vec<&'static str> {
    let mut args = vec![family];
    for h in p.headers {
        args.push("-H");
        args.push(h);
    }
    args
}

#[test]
fn every_os_probe_is_redirected_before_and_online_after_accepting() {
    let Some(mut lab) = Lab::new(1) else { return };
    let hosts: Vec<&str> = PROBES
        .iter()
        .map(|p| p.url.trim_start_matches("http://").split('/').next().unwrap())
        .collect();
    lab.start_dns(&hosts, PORTAL_NAME);
    let mut gw = Gateway::start(&lab);
    gw.restart_with_portal(&format!("hostname = \"{PORTAL_NAME}\""));
    let c1 = &lab.clients[0];
    let portal = format!("http://{PORTAL_NAME}:8080/");

    for family in ["-4", "-6"] {
        for p in PROBES {
            let a =
                get(c1, p.url, &probe_args(p, family)).unwrap_or_else(|e| panic!("{} {family}: curl exit {e}", p.os));
            assert_eq!(a.status, 302, "{} {family} before accepting: {a:?}", p.os);
            assert_eq!(a.location, portal, "{} {family}", p.os);
        }
    }
    // The redirect target resolves (through the same DNS) and is the portal page.
    let page = get(c1, &portal, &[]).unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Wi-Fi Acceptable Use Policy"));

    let (_, code) = gw.add_course(
        "Phonics training",
        SignedDuration::from_hours(-1),
        SignedDuration::from_hours(6),
        40,
    );
    let done = accept_via(c1, &format!("http://{PORTAL_NAME}:8080"), &code, "Ann");
    assert_eq!(done.status, 200, "{}", done.body);
    // Immediately after the answer: the element is already in the kernel, so no probe can
    // still be redirected.
    for family in ["-4", "-6"] {
        for p in PROBES {
            let a =
                get(c1, p.url, &probe_args(p, family)).unwrap_or_else(|e| panic!("{} {family}: curl exit {e}", p.os));
            assert_eq!(a.status, p.online_status, "{} {family} after accepting: {a:?}", p.os);
            assert!(a.body.contains(p.online_body), "{} {family}: {:?}", p.os, a.body);
            assert!(a.location.is_empty(), "{} {family}: still redirected", p.os);
        }
    }
}
