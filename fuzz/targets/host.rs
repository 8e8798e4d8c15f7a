//! Target `host`: `Config::is_portal_host`, which decides whether a request's `Host` is the
//! portal (its page is shown) or not (302 to `Config::portal_url`, the only `Location` the portal
//! ever sends). Checked against three configs: with a name, v4 and v6; v4 only on port 80; and a
//! v6 address whose last group is all digits. A `Host` with one clear meaning (RFC 3986
//! authority, or a bare IPv6 address read whole) must be decided by that meaning; letter case
//! never matters; and the redirect's own URL must be recognised, or guests would loop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use aupgate::config::Config;
use axum::http::{HeaderValue, Uri};

use crate::driver::Target;

const SCHOOL: &str = "[school]\nname = \"S\"\ntimezone = \"UTC\"\ndsl_contact = \"D\"\n";
/// Each is the `[portal]` section, then `[guest]` up to its interface.
const CONFIGS: [&str; 3] = [
    "hostname = \"wifi.school.test\"\n[guest]\naddress = \"10.50.0.1\"\naddress6 = \"fd00::1\"\n",
    "port = 80\n[guest]\naddress = \"192.0.2.1\"\n",
    "hostname = \"portal.example.org\"\n[guest]\naddress = \"10.0.0.1\"\naddress6 = \"2001:db8::1:80\"\n",
];

pub(crate) struct Host {
    configs: Vec<Config>,
}

impl Host {
    pub(crate) fn new() -> Self {
        let configs = CONFIGS
            .iter()
            .map(|extra| {
                let text = format!("{SCHOOL}[portal]\n{extra}interface = \"guest0\"\n");
                Config::parse(&text, Path::new("host-target.toml")).expect("the host target's configs are valid")
            })
            .collect();
        Self { configs }
    }
}

impl Target for Host {
    fn name(&self) -> &'static str {
        "host"
    }

    fn tokens(&self) -> &'static [&'static str] {
        &[
            "wifi.school.test",
            "WIFI.School.Test.",
            "10.50.0.1",
            "192.0.2.1",
            "fd00::1",
            "[fd00::1]",
            "2001:db8::1:80",
            "portal.example.org",
            ":8080",
            ":80",
            ":",
            "::",
            "::ffff:",
            "%25eth0",
            "xn--",
            "0x0a",
            "localhost",
            "]:",
            "..",
            "[::1]",
        ]
    }

    fn check(&mut self, input: &[u8]) -> Result<u64, String> {
        let host = String::from_utf8_lossy(input);
        let reading = reading(&host);
        let mut class = u64::from(reading.is_some());
        for (i, c) in self.configs.iter().enumerate() {
            let got = c.is_portal_host(&host);
            class = class * 4 + u64::from(got);
            if let Some(meaning) = &reading {
                let expected = names_portal(c, meaning);
                if got != expected {
                    return Err(format!(
                        "config {i}: Host {host:?} means {meaning:?}, is_portal_host said {got}, expected {expected}"
                    ));
                }
            }
            for (how, other) in [
                ("upper", host.to_ascii_uppercase()),
                ("lower", host.to_ascii_lowercase()),
            ] {
                if c.is_portal_host(&other) != got {
                    return Err(format!(
                        "config {i}: Host {host:?} is {got} but {how}-cased {other:?} is not"
                    ));
                }
            }
            let location = c.portal_url();
            let uri: Option<Uri> = location.parse().ok();
            let served = uri
                .as_ref()
                .and_then(Uri::authority)
                .is_some_and(|a| c.is_portal_host(a.as_str()));
            if HeaderValue::from_str(&location).is_err() || !location.starts_with("http://") || !served {
                return Err(format!(
                    "config {i}: the redirect's Location {location:?} is not a portal URL"
                ));
            }
        }
        Ok(class)
    }
}

/// What a `Host` value names, when that is not in doubt.
#[derive(Debug)]
enum Meaning {
    Ip(IpAddr),
    Name(String),
}

/// The one reading of `host` as `uri-host [":" port]` (RFC 3986): a bracketed IPv6 literal, an
/// IPv4 address or a DNS name (any case, one final dot allowed). A bare IPv6 address is not
/// valid there but some clients send one; it is read whole, since its last group may be all
/// digits and cannot be told from a port. `None` when the syntax is broken or a browser could
/// read the name as a number (WHATWG URL takes `10.1` or `0x0a.0.0.1` for an IPv4 address).
fn reading(host: &str) -> Option<Meaning> {
    if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
        return port_ok
            .then(|| inside.parse::<Ipv6Addr>().ok())
            .flatten()
            .map(|a| Meaning::Ip(IpAddr::V6(a)));
    }
    if let Ok(a) = host.parse::<Ipv6Addr>() {
        return Some(Meaning::Ip(IpAddr::V6(a)));
    }
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        Some(_) => return None,
        None => host,
    };
    if let Ok(a) = name.parse::<Ipv4Addr>() {
        return Some(Meaning::Ip(IpAddr::V4(a)));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    let dns = labels
        .iter()
        .all(|l| (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let numeric = labels.last().is_some_and(|l| {
        l.bytes().all(|b| b.is_ascii_digit()) || l.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
    });
    (dns && !numeric).then(|| Meaning::Name(name.to_ascii_lowercase()))
}

fn names_portal(c: &Config, meaning: &Meaning) -> bool {
    match meaning {
        Meaning::Ip(IpAddr::V4(a)) => *a == c.guest.address,
        Meaning::Ip(IpAddr::V6(a)) => Some(*a) == c.guest.address6,
        Meaning::Name(n) => c.portal.hostname.as_deref() == Some(n.as_str()),
    }
}
