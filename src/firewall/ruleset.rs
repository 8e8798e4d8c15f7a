//! Pure: from "who is accepted" to the complete nft script for our own table. No I/O. The script
//! replaces `inet aupgate` in one transaction and touches nothing else; golden-file tested.

use std::fmt::Write as _;

use jiff::SignedDuration;

use crate::clients::MacAddr;

/// Name of the only table aupgate ever creates, edits or deletes.
pub const TABLE: &str = "aupgate";
/// Name of the set of accepted devices.
pub const SET: &str = "allowed";
/// Names of the walled garden's sets (IPv4, IPv6): dnsmasq fills them, aupgate only keeps them.
pub const GARDEN_SETS: [&str; 2] = ["garden4", "garden6"];

/// What the table is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The guest interface; validated by `config` to be a plain interface name.
    pub interface: String,
    /// Portal port; guests' tcp/80 is redirected here.
    pub portal_port: u16,
    /// The portal's HTTPS port, if HTTPS is on.
    pub https_port: Option<u16>,
    /// Accepted devices and how long each has left.
    pub allowed: Vec<(MacAddr, SignedDuration)>,
    /// The walled garden, if it has domains.
    pub garden: Option<Garden>,
}

/// The walled garden's sets: what dnsmasq put in them is theirs; aupgate only carries it over
/// when it replaces the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garden {
    /// Each address's timeout (dnsmasq adds them without one of their own).
    pub timeout_secs: u32,
    /// Addresses already in the sets, each with the seconds it has left.
    pub addresses: Vec<(std::net::IpAddr, u32)>,
}

/// The longest element timeout we give: nft refuses 100,000,000 s or more ("value too large"),
/// which would stop the table going in at all. A device allowed for longer is put back by the
/// gatekeeper's check when its element runs out; courses are limited to a year anyway.
pub(crate) const MAX_TIMEOUT_SECS: u32 = 366 * 24 * 3600;

/// Whole seconds for an element timeout, rounded up, at least 1 (a timeout of 0 would make the
/// element permanent) and at most `MAX_TIMEOUT_SECS`. Up, so the kernel never closes a device
/// before the store says its access ends: `session list` and the firewall agree, and the
/// gatekeeper removes the element in the sub-second overlap.
pub(crate) fn timeout_secs(left: SignedDuration) -> u32 {
    let secs = left.as_secs().saturating_add(i64::from(left.subsec_nanos() > 0));
    u32::try_from(secs.max(1)).map_or(MAX_TIMEOUT_SECS, |s| s.min(MAX_TIMEOUT_SECS))
}

impl Ruleset {
    /// The nft script. Applied with `nft -f -`, it is one atomic transaction: the create-then-
    /// delete prelude makes `delete` safe whether or not the table exists.
    pub fn script(&self) -> String {
        let Self {
            interface: guest,
            portal_port: port,
            https_port,
            allowed,
            garden,
        } = self;
        let ports = match https_port {
            Some(https) => format!("{{ {port}, {https} }}"),
            None => port.to_string(),
        };
        let mut elements = String::new();
        if !allowed.is_empty() {
            let list: Vec<String> = allowed
                .iter()
                .map(|(mac, left)| format!("{mac} timeout {}s", timeout_secs(*left)))
                .collect();
            let _ = write!(elements, "\n\t\telements = {{ {} }}", list.join(",\n\t\t\t     "));
        }
        let (garden_sets, garden_rules) = match garden {
            Some(g) => (
                g.sets(),
                "\n\t\tip daddr @garden4 accept\n\t\tip6 daddr @garden6 accept",
            ),
            None => (String::new(), ""),
        };
        format!(
            r#"# aupgate: generated; the daemon restores it if it is changed or deleted.
table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{
	# One element per accepted device, timing out when its course ends.
	set {SET} {{
		type ether_addr
		flags timeout{elements}
	}}
{garden_sets}
	# The portal port is for guests (and loopback) only: the WAN and staff sides are refused.
	# Guests may reach only DHCP, DNS, ICMP/ND and the portal on the router itself. There is no
	# blanket "established" accept: a connection opened while the table was missing ends when
	# the table is back.
	chain input {{
		type filter hook input priority filter - 10; policy accept;
		iifname != {{ "{guest}", "lo" }} tcp dport {ports} reject with tcp reset
		iifname != "{guest}" accept
		meta l4proto {{ icmp, ipv6-icmp }} accept
		udp dport {{ 67, 547 }} accept
		meta l4proto {{ tcp, udp }} th dport 53 accept
		tcp dport {ports} accept
		meta l4proto tcp reject with tcp reset
		reject with icmpx admin-prohibited
	}}

	# Until a device has accepted, its DNS goes to the router (even to a walled-garden address)
	# and its plain HTTP to the portal.
	# Before dstnat: the first NAT mapping wins, so ours must not tie with the school's chains.
	chain prerouting {{
		type nat hook prerouting priority dstnat - 10; policy accept;
		iifname != "{guest}" accept
		ether saddr @{SET} accept
		meta l4proto {{ tcp, udp }} th dport 53 redirect to :53{garden_rules}
		tcp dport 80 redirect to :{port}
	}}

	# Accepted devices go on to the school's own rules; everything else is refused at once.
	chain forward {{
		type filter hook forward priority filter - 10; policy accept;
		iifname != "{guest}" accept
		ether saddr @{SET} accept{garden_rules}
		meta l4proto tcp reject with tcp reset
		reject with icmpx admin-prohibited
	}}
}}
"#
        )
    }
}

impl Garden {
    /// The two sets, with the addresses carried over.
    fn sets(&self) -> String {
        let mut out = String::from(
            "\n\t# The walled garden: addresses of its domains, put here by dnsmasq (nftset=) as it\n\t# answers for them. Guests may reach them before they accept.\n",
        );
        for (name, kind, v6) in [("garden4", "ipv4_addr", false), ("garden6", "ipv6_addr", true)] {
            let list: Vec<String> = self
                .addresses
                .iter()
                .filter(|(ip, _)| ip.is_ipv6() == v6)
                .map(|(ip, left)| format!("{ip} timeout {}s", left.max(&1)))
                .collect();
            let elements = if list.is_empty() {
                String::new()
            } else {
                format!("\n\t\telements = {{ {} }}", list.join(", "))
            };
            let _ = write!(
                out,
                "\tset {name} {{\n\t\ttype {kind}\n\t\tflags timeout\n\t\ttimeout {}s{elements}\n\t}}\n",
                self.timeout_secs
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_empty_and_with_guests() {
        let mut r = Ruleset {
            interface: "guest0".into(),
            portal_port: 8080,
            https_port: None,
            allowed: vec![],
            garden: None,
        };
        assert_eq!(r.script(), include_str!("../../tests/fixtures/ruleset-empty.nft"));
        r.allowed = vec![
            ("02:00:00:00:00:11".parse().unwrap(), SignedDuration::from_hours(7)),
            ("02:00:00:00:00:12".parse().unwrap(), SignedDuration::from_millis(10)),
        ];
        assert_eq!(r.script(), include_str!("../../tests/fixtures/ruleset-two.nft"));
        // With a walled garden: its two sets, with what was in them carried over (an address
        // with no time left gets a second), and its addresses let through before accepting.
        r.garden = Some(garden_example());
        assert_eq!(r.script(), include_str!("../../tests/fixtures/ruleset-garden.nft"));
    }

    #[test]
    fn https_port_is_open_to_guests_and_refused_elsewhere() {
        let r = Ruleset {
            interface: "guest0".into(),
            portal_port: 8080,
            https_port: Some(443),
            allowed: vec![],
            garden: None,
        };
        let script = r.script();
        assert!(
            script.contains("iifname != { \"guest0\", \"lo\" } tcp dport { 8080, 443 } reject with tcp reset"),
            "{script}"
        );
        assert!(script.contains("\t\ttcp dport { 8080, 443 } accept"), "{script}");
        // Guests' own port 443 traffic to the internet is not redirected, only refused.
        assert!(!script.contains("dport 443 redirect"));
    }

    #[test]
    fn timeouts_are_positive_whole_seconds() {
        assert_eq!(timeout_secs(SignedDuration::from_millis(-5)), 1);
        assert_eq!(timeout_secs(SignedDuration::from_millis(1500)), 2);
        assert_eq!(timeout_secs(SignedDuration::from_secs(3)), 3);
        assert_eq!(timeout_secs(SignedDuration::from_hours(2)), 7200);
    }

    /// A consent ending in 2099 must not stop the table going in (nft refuses timeouts of
    /// 100,000,000 s or more).
    #[test]
    fn timeouts_are_capped_below_what_nft_refuses() {
        assert_eq!(
            timeout_secs(SignedDuration::from_hours(24 * 365 * 73)),
            MAX_TIMEOUT_SECS
        );
        assert_eq!(timeout_secs(SignedDuration::MAX), MAX_TIMEOUT_SECS);
        const { assert!(MAX_TIMEOUT_SECS < 100_000_000) };
    }
}

#[cfg(test)]
#[test]
#[ignore = "writes the golden files; run by hand after an intended change"]
fn write_golden_files() {
    let mut r = Ruleset {
        interface: "guest0".into(),
        portal_port: 8080,
        https_port: None,
        allowed: vec![],
        garden: None,
    };
    std::fs::write("tests/fixtures/ruleset-empty.nft", r.script()).unwrap();
    r.allowed = vec![
        ("02:00:00:00:00:11".parse().unwrap(), SignedDuration::from_hours(7)),
        ("02:00:00:00:00:12".parse().unwrap(), SignedDuration::from_millis(10)),
    ];
    std::fs::write("tests/fixtures/ruleset-two.nft", r.script()).unwrap();
    r.garden = Some(garden_example());
    std::fs::write("tests/fixtures/ruleset-garden.nft", r.script()).unwrap();
}

#[cfg(test)]
fn garden_example() -> Garden {
    Garden {
        timeout_secs: 600,
        addresses: vec![
            ("198.51.100.7".parse().unwrap(), 300),
            ("2001:db8::7".parse().unwrap(), 0),
        ],
    }
}
