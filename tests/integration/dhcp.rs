//! RFC 8910: the shipped dnsmasq snippet (deploy/dnsmasq-guest.conf), with the lab's names and
//! addresses put in, runs as the gateway's DHCP server; a real DHCP client (dhclient) in a
//! client namespace receives the captive-portal API URL as DHCPv4 option 114 and as DHCPv6
//! option 103.

use std::process::{Command, Stdio};

use crate::netns::{Lab, sh};

const NAME: &str = "wifi.school.test";

#[test]
fn the_dnsmasq_snippet_sends_the_api_url_by_dhcp_v4_and_v6() {
    let Some(lab) = Lab::new(1) else { return };
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/dnsmasq-guest.conf")).unwrap();
    let conf = shipped
        .replace("wlan-guest", "guest0")
        // The range first: "10.50.0.1" is a prefix of its start.
        .replace("10.50.0.100,10.50.0.250", "192.0.2.100,192.0.2.150")
        .replace("10.50.0.1", "192.0.2.1")
        .replace("wifi.claremont.sch.uk", NAME);
    let conf_path = lab.path("dnsmasq-guest.conf");
    std::fs::write(&conf_path, &conf).unwrap();
    let log = lab.path("dnsmasq.log");
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.gw,
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
        ])
        .arg(format!("--conf-file={}", conf_path.display()))
        .arg(format!("--dhcp-leasefile={}", lab.path("dnsmasq.leases").display()))
        .arg(format!("--pid-file={}", lab.path("dnsmasq-dhcp.pid").display()))
        .arg(format!("--log-facility={}", log.display()))
        .arg("--log-dhcp")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsmasq");
    std::thread::sleep(std::time::Duration::from_millis(300));
    if let Some(status) = server.try_wait().unwrap() {
        let mut err = String::new();
        std::io::Read::read_to_string(server.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("dnsmasq refused the shipped snippet ({status}): {err}");
    }
    // dhclient asks for option 114 (which it knows as default-url), tries once, and runs no
    // script: it must not touch any interface or resolv.conf, only write its lease file.
    let client_conf = lab.path("dhclient.conf");
    std::fs::write(&client_conf, "timeout 15;\nretry 1;\nalso request default-url;\n").unwrap();
    let lease = lab.path("dhclient.leases");
    let c1 = &lab.clients[0];
    let (ok, _, err) = sh(&[
        "ip",
        "netns",
        "exec",
        &c1.ns,
        "dhclient",
        "-1",
        "-v",
        "-sf",
        "/bin/true",
        "-cf",
        client_conf.to_str().unwrap(),
        "-lf",
        lease.to_str().unwrap(),
        "-pf",
        lab.path("dhclient.pid").to_str().unwrap(),
        "eth0",
    ]);
    let _ = sh(&[
        "ip",
        "netns",
        "exec",
        &c1.ns,
        "dhclient",
        "-x",
        "-pf",
        lab.path("dhclient.pid").to_str().unwrap(),
    ]);
    // DHCPv6 (stateless information request): option 103. dhclient writes no lease in this
    // mode, so its script (which only records what it was given) shows what arrived.
    let conf6 = lab.path("dhclient6.conf");
    std::fs::write(
        &conf6,
        "option dhcp6.captive-portal code 103 = string;\nalso request dhcp6.captive-portal;\ntimeout 15;\n",
    )
    .unwrap();
    let script = lab.path("record.sh");
    let seen = lab.path("dhclient6.env");
    std::fs::write(&script, format!("#!/bin/sh\nenv >> {}\n", seen.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pid6 = lab.path("dhclient6.pid");
    let (ok6, _, err6) = sh(&[
        "ip",
        "netns",
        "exec",
        &c1.ns,
        "dhclient",
        "-6",
        "-S",
        "-1",
        "-v",
        "-sf",
        script.to_str().unwrap(),
        "-cf",
        conf6.to_str().unwrap(),
        "-lf",
        lab.path("dhclient6.leases").to_str().unwrap(),
        "-pf",
        pid6.to_str().unwrap(),
        "eth0",
    ]);
    let _ = sh(&[
        "ip",
        "netns",
        "exec",
        &c1.ns,
        "dhclient",
        "-6",
        "-x",
        "-pf",
        pid6.to_str().unwrap(),
    ]);
    let _ = server.kill();
    let _ = server.wait();
    let env6 = std::fs::read_to_string(&seen).unwrap_or_default();
    assert!(ok6, "dhclient -6 failed: {err6}");
    assert!(
        env6.lines()
            .any(|l| l == format!("new_dhcp6_captive_portal=https://{NAME}/api/captive")),
        "option 103 missing:\n{env6}\n--- dnsmasq ---\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let leases = std::fs::read_to_string(&lease).unwrap_or_default();
    assert!(
        ok,
        "dhclient got no lease: {err}\n--- dnsmasq ---\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        leases.contains(&format!("option default-url \"https://{NAME}/api/captive\"")),
        "option 114 missing from the lease:\n{leases}\n--- dnsmasq ---\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        leases.contains("fixed-address 192.0.2.1"),
        "an address from the snippet's range: {leases}"
    );
}
