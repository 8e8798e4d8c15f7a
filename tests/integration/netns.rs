//! The namespace lab. Topology (all names carry a per-lab prefix; nothing touches the host):
//!
//! ```text
//!  c1 (02:00:00:00:00:11, .11) ─┐
//!  c2 (02:00:00:00:00:12, .12) ─┼─ ap (bridge br0) ── guest0 ┌─ gw ─┐ wan0 ── eth0  net 198.51.100.2
//!  c3 (02:00:00:00:00:13, .13) ─┘                    192.0.2.1└──────┘198.51.100.1   (HTTP on :80)
//! ```
//! IPv6 alike, on ULA prefixes: guests fd00:aa:2::/64 (gateway ::1), internet fd00:aa:51::/64.
//! The internet host answers as the OS captive-probe hosts too (internet.py); `start_dns` adds
//! real DNS (dnsmasq) on the gateway.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const GW_V4: &str = "192.0.2.1";
pub const GW_V6: &str = "fd00:aa:2::1";
pub const NET_V4: &str = "198.51.100.2";
pub const NET_V6: &str = "fd00:aa:51::2";
pub const INTERNET_BODY: &str = "INTERNET-OK";

/// Runs `args` and returns (success, stdout, stderr).
pub fn sh(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `args`, panicking with its stderr if it fails.
pub fn must(args: &[&str]) -> String {
    let (ok, out, err) = sh(args);
    assert!(ok, "{args:?} failed: {err}");
    out
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A client on the guest link.
pub struct Client {
    pub ns: String,
    pub mac: String,
    pub v4: String,
    pub v6: String,
}

impl Client {
    /// Runs a command inside this client's namespace.
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut full = vec!["ip", "netns", "exec", &self.ns];
        full.extend_from_slice(args);
        sh(&full)
    }
}

pub struct Lab {
    pub prefix: String,
    pub gw: String,
    pub net: String,
    pub clients: Vec<Client>,
    namespaces: Vec<String>,
    children: Vec<Child>,
    etc_netns: Vec<PathBuf>,
    pub dir: tempfile::TempDir,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Builds the lab with `clients` clients, or returns None (skip) when not root. With
    /// AUPGATE_REQUIRE_NETNS=1, not being root is a failure instead.
    pub fn new(clients: usize) -> Option<Self> {
        if !is_root() {
            assert!(
                std::env::var("AUPGATE_REQUIRE_NETNS").as_deref() != Ok("1"),
                "AUPGATE_REQUIRE_NETNS=1 but not root: the namespace tests cannot run"
            );
            eprintln!("SKIP: namespace test needs root (CAP_NET_ADMIN); run the tests as root");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("aupt{}x{n}", std::process::id() % 100_000);
        let mut lab = Lab {
            gw: format!("{prefix}gw"),
            net: format!("{prefix}net"),
            clients: Vec::new(),
            namespaces: Vec::new(),
            children: Vec::new(),
            etc_netns: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            prefix,
        };
        lab.build(clients);
        Some(lab)
    }

    fn add_ns(&mut self, name: &str) {
        must(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_owned());
        must(&["ip", "-n", name, "link", "set", "lo", "up"]);
        for key in ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"] {
            must(&["ip", "netns", "exec", name, "sysctl", "-qw", key]);
        }
    }

    fn build(&mut self, clients: usize) {
        let (gw, net) = (self.gw.clone(), self.net.clone());
        let ap = format!("{}ap", self.prefix);
        for ns in [&gw, &ap, &net] {
            self.add_ns(ns);
        }
        // Gateway ↔ access point (the guest interface) and gateway ↔ internet.
        must(&[
            "ip", "-n", &gw, "link", "add", "guest0", "type", "veth", "peer", "name", "uplink", "netns", &ap,
        ]);
        must(&[
            "ip", "-n", &gw, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", &net,
        ]);
        for (ns, dev, addrs) in [
            (&gw, "guest0", [format!("{GW_V4}/24"), format!("{GW_V6}/64")]),
            (
                &gw,
                "wan0",
                ["198.51.100.1/24".to_owned(), "fd00:aa:51::1/64".to_owned()],
            ),
            (&net, "eth0", [format!("{NET_V4}/24"), format!("{NET_V6}/64")]),
        ] {
            for a in &addrs {
                must(&["ip", "-n", ns, "addr", "add", a, "dev", dev, "nodad"]);
            }
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        must(&["ip", "netns", "exec", &gw, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        must(&[
            "ip",
            "netns",
            "exec",
            &gw,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        must(&["ip", "-n", &net, "route", "add", "192.0.2.0/24", "via", "198.51.100.1"]);
        must(&[
            "ip",
            "-n",
            &net,
            "-6",
            "route",
            "add",
            "fd00:aa:2::/64",
            "via",
            "fd00:aa:51::1",
        ]);
        // The access point: a plain bridge.
        must(&["ip", "-n", &ap, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &ap, "link", "set", "uplink", "master", "br0", "up"]);
        must(&["ip", "-n", &ap, "link", "set", "br0", "up"]);
        for i in 1..=clients {
            let ns = format!("{}c{i}", self.prefix);
            self.add_ns(&ns);
            let port = format!("port{i}");
            must(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &ap,
            ]);
            must(&["ip", "-n", &ap, "link", "set", &port, "master", "br0", "up"]);
            let c = Client {
                ns: ns.clone(),
                mac: format!("02:00:00:00:00:{:02x}", 0x10 + i),
                v4: format!("192.0.2.{}", 10 + i),
                v6: format!("fd00:aa:2::{}", 10 + i),
            };
            must(&["ip", "-n", &ns, "link", "set", "eth0", "address", &c.mac]);
            must(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", c.v4), "dev", "eth0"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/64", c.v6),
                "dev",
                "eth0",
                "nodad",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", &ns, "route", "add", "default", "via", GW_V4]);
            must(&["ip", "-n", &ns, "-6", "route", "add", "default", "via", GW_V6]);
            self.clients.push(c);
        }
        self.start_internet();
    }

    fn start_internet(&mut self) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/internet.py");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net, "python3"])
            .arg(&script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 internet.py");
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let (ok, body, _) = sh(&[
                "ip",
                "netns",
                "exec",
                &self.net,
                "curl",
                "-s",
                "--max-time",
                "1",
                &format!("http://{NET_V4}/"),
            ]);
            if ok && body.contains(INTERNET_BODY) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the internet namespace's HTTP server did not start");
    }

    /// Starts dnsmasq on the gateway's guest interface as the guests' DNS server: `names` resolve
    /// to the internet host (v4 and v6), `portal` to the gateway; every client's resolv.conf
    /// (per namespace, under /etc/netns, removed on drop) points at it.
    pub fn start_dns(&mut self, names: &[&str], portal: &str) {
        let mut extra = vec!["--interface=guest0".to_owned()];
        for name in names {
            extra.push(format!("--address=/{name}/{NET_V4}"));
            extra.push(format!("--address=/{name}/{NET_V6}"));
        }
        extra.push(format!("--address=/{portal}/{GW_V4}"));
        extra.push(format!("--address=/{portal}/{GW_V6}"));
        let gw = self.gw.clone();
        self.dnsmasq(&gw, "dnsmasq.pid", extra);
        self.clients_resolve_through_gateway();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let (ok, out, _) = self.clients[0].run(&["getent", "ahostsv4", portal]);
            if ok && out.contains(GW_V4) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dnsmasq on the gateway does not answer");
    }

    /// Issue 13's walled garden, as a school runs it: dnsmasq on the gateway answers the guests
    /// and asks an upstream resolver (a second dnsmasq, in the internet namespace, holding
    /// `garden` as the internet host with a 1 s TTL). The gateway's puts each address it gets
    /// from upstream for `garden` in the garden's sets (`nftset=`, the line `aupgate check`
    /// prints). Every client's resolv.conf points at the gateway.
    pub fn start_garden_dns(&mut self, garden: &str) {
        let (net, gw) = (self.net.clone(), self.gw.clone());
        let upstream = vec![
            "--interface=eth0".to_owned(),
            "--local-ttl=1".to_owned(),
            format!("--address=/{garden}/{NET_V4}"),
        ];
        self.dnsmasq(&net, "dnsmasq-upstream.pid", upstream);
        let guests = vec![
            "--interface=guest0".to_owned(),
            format!("--server={NET_V4}"),
            format!("--nftset=/{garden}/4#inet#aupgate#garden4,6#inet#aupgate#garden6"),
        ];
        self.dnsmasq(&gw, "dnsmasq-garden.pid", guests);
        self.clients_resolve_through_gateway();
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Runs a dnsmasq of the lab's own in namespace `ns`, with no configuration file, hosts file
    /// or resolv.conf, and `extra` for what it serves; stopped with the lab.
    fn dnsmasq(&mut self, ns: &str, pid_file: &str, extra: Vec<String>) {
        let mut args: Vec<String> = [
            "netns",
            "exec",
            ns,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--log-facility=-",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(format!("--pid-file={}", self.path(pid_file).display()));
        args.extend(extra);
        let child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq");
        self.children.push(child);
    }

    /// Every client's resolv.conf (per namespace, under /etc/netns, removed on drop) names the
    /// gateway.
    fn clients_resolve_through_gateway(&mut self) {
        for c in &self.clients {
            let dir = PathBuf::from("/etc/netns").join(&c.ns);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("resolv.conf"), format!("nameserver {GW_V4}\n")).unwrap();
            self.etc_netns.push(dir);
        }
    }

    /// Runs a command in the gateway namespace.
    pub fn gw(&self, args: &[&str]) -> (bool, String, String) {
        let mut full = vec!["ip", "netns", "exec", &self.gw];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs a command inside the "internet" namespace (which also plays the staff network).
    pub fn net(&self, args: &[&str]) -> (bool, String, String) {
        let mut full = vec!["ip", "netns", "exec", &self.net];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// A path inside the lab's temporary folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in &self.etc_netns {
            let _ = std::fs::remove_dir_all(dir);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
