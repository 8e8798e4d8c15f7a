//! Issue 13's RADIUS accounting against a real FreeRADIUS from Debian, unpacked by
//! `scripts/freeradius` (never installed: its package starts a system service). The server runs
//! in the lab's internet namespace (which plays the staff network) with a private config folder
//! (`freeradius -X -d DIR`), writing what it takes to a `detail` file that the tests read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Gateway, accept, assert_closed, get, reaches_internet};
use crate::netns::{Lab, NET_V4, NET_V6};

/// The router's address towards the server (the gateway's end of the internet link).
const GW_WAN: &str = "198.51.100.1";
const SECRET: &str = "lab-shared-secret-6f1c2a";

/// One accounting record as FreeRADIUS's detail file writes it: attribute → value (quotes off).
type Record = HashMap<String, String>;

/// Where `scripts/freeradius` unpacked the server; `None` (skip) when it did not, unless CI.
fn freeradius_root() -> Option<PathBuf> {
    let root =
        PathBuf::from(std::env::var("AUPGATE_FREERADIUS").unwrap_or_else(|_| "/opt/aupgate-lab/freeradius".into()));
    if root.join("usr/sbin/freeradius").exists() {
        return Some(root);
    }
    assert!(
        std::env::var("AUPGATE_REQUIRE_NETNS").as_deref() != Ok("1"),
        "AUPGATE_REQUIRE_NETNS=1 but FreeRADIUS is not unpacked in {} (fix: scripts/freeradius)",
        root.display()
    );
    eprintln!(
        "SKIP: FreeRADIUS not unpacked in {} (run scripts/freeradius as root)",
        root.display()
    );
    None
}

/// FreeRADIUS in the lab's internet namespace, accounting on `NET_V4:1813` for the gateway.
struct Radius {
    root: PathBuf,
    conf: PathBuf,
    ns: String,
    child: Option<Child>,
}

impl Radius {
    fn start(lab: &Lab, secret: &str) -> Option<Self> {
        let root = freeradius_root()?;
        let conf = lab.path("freeradius");
        for dir in ["", "log", "run", "acct", "var"] {
            std::fs::create_dir_all(conf.join(dir)).unwrap();
        }
        std::fs::write(conf.join("dictionary"), "").unwrap();
        let text = format!(
            r#"prefix = {root}/usr
exec_prefix = ${{prefix}}
sysconfdir = {conf}
localstatedir = {conf}/var
sbindir = ${{exec_prefix}}/sbin
logdir = {conf}/log
raddbdir = {conf}
radacctdir = {conf}/acct
name = freeradius
confdir = ${{raddbdir}}
modconfdir = ${{confdir}}/mods-config
run_dir = {conf}/run
db_dir = ${{raddbdir}}
libdir = {root}/usr/lib/freeradius
pidfile = ${{run_dir}}/${{name}}.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
	destination = stderr
}}
security {{
	allow_core_dumps = no
}}
client gateway {{
	ipaddr = {GW_WAN}
	secret = {secret}
}}
modules {{
	detail {{
		filename = {conf}/acct/detail
		escape_filenames = no
		permissions = 0600
		header = "%t"
	}}
}}
server default {{
	listen {{
		type = acct
		ipaddr = {NET_V4}
		port = 1813
	}}
	accounting {{
		detail
	}}
}}
"#,
            root = root.display(),
            conf = conf.display(),
        );
        std::fs::write(conf.join("radiusd.conf"), text).unwrap();
        let mut r = Self {
            root,
            conf,
            ns: lab.net.clone(),
            child: None,
        };
        r.start_again();
        Some(r)
    }

    fn log(&self) -> PathBuf {
        self.conf.join("server.log")
    }

    /// Starts the server (again); returns once it is ready.
    fn start_again(&mut self) {
        assert!(self.child.is_none());
        let _ = std::fs::remove_file(self.log());
        let log = std::fs::File::create(self.log()).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(self.root.join("usr/sbin/freeradius"))
            .arg("-X")
            .arg("-d")
            .arg(&self.conf)
            .arg("-D")
            .arg(self.root.join("usr/share/freeradius"))
            .env("LD_LIBRARY_PATH", self.root.join("usr/lib/freeradius"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.log_text().contains("Ready to process requests") {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("freeradius exited with {status}:\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "freeradius not ready:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log()).unwrap_or_default()).into_owned()
    }

    /// Every record in the detail file, oldest first.
    fn records(&self) -> Vec<Record> {
        let text = std::fs::read_to_string(self.conf.join("acct/detail")).unwrap_or_default();
        text.split("\n\n")
            .filter(|block| block.contains("Acct-Status-Type"))
            .map(|block| {
                block
                    .lines()
                    .filter_map(|l| l.trim().split_once(" = "))
                    .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                    .collect()
            })
            .collect()
    }

    /// Waits until the detail file has a record that `want` picks; returns it.
    fn wait_for(&self, what: &str, limit: Duration, want: impl Fn(&Record) -> bool) -> Record {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| want(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}; the server has {:#?}\nserver log tail:\n{}",
                self.records(),
                tail(&self.log_text())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Drop for Radius {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is(r: &Record, key: &str, value: &str) -> bool {
    r.get(key).is_some_and(|v| v == value)
}

/// Restarts `gw` with `[radius]` added, its secret file written 0600.
fn with_radius(gw: &mut Gateway<'_>, lab: &Lab, servers: &str, secret: &str, extra: &str) {
    use std::os::unix::fs::PermissionsExt;
    let file = lab.path("radius-secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    gw.stop();
    let mut text = std::fs::read_to_string(&gw.config).unwrap();
    if let Some(at) = text.find("\n[radius]\n") {
        text.truncate(at + 1);
    }
    text.push_str(&format!(
        "\n[radius]\nservers = {servers}\nsecret_file = \"{}\"\nnas_identifier = \"claremont-gw\"\n{extra}",
        file.display()
    ));
    std::fs::write(&gw.config, text).unwrap();
    gw.start_again();
}

#[test]
fn the_filter_learns_who_holds_each_address_from_start_to_stop() {
    let Some(lab) = Lab::new(1) else { return };
    let Some(radius) = Radius::start(&lab, SECRET) else {
        return;
    };
    let mut gw = Gateway::start(&lab);
    // The first server is down (no host answers there): every record goes to the second.
    let servers = format!("[\"198.51.100.77:1813\", \"{NET_V4}:1813\"]");
    with_radius(&mut gw, &lab, &servers, SECRET, "interim_minutes = 1\n");
    let c1 = &lab.clients[0];
    let code = gw.add_running_course();
    assert_closed(c1);
    let a = accept(c1, &code, "Ann Example");
    assert_eq!(a.status, 200, "{a:?}");

    let start = radius.wait_for("the Start", Duration::from_secs(20), |r| {
        is(r, "Acct-Status-Type", "Start")
    });
    for (key, want) in [
        ("User-Name", "Ann Example"),
        ("Calling-Station-Id", "02-00-00-00-00-11"),
        ("Framed-IP-Address", c1.v4.as_str()),
        ("NAS-Identifier", "claremont-gw"),
        ("NAS-IP-Address", GW_WAN),
        ("Acct-Delay-Time", "0"),
    ] {
        assert!(is(&start, key, want), "{key} should be {want}: {start:#?}");
    }
    // Class carries the course, as octets.
    let class = start.get("Class").expect("Class");
    let title_hex: String = "Course".bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        class.to_ascii_lowercase().contains(&title_hex),
        "Class {class} should carry the course title"
    );
    let first = start.get("Acct-Session-Id").unwrap().clone();
    assert!(start.contains_key("Event-Timestamp"));

    // The guest's IPv6 address appears (it talks to the internet over IPv6): the filter is
    // told, as a Stop of the IPv4-only session and a Start carrying both.
    let v6 = get(c1, &format!("http://[{NET_V6}]/"), &[]);
    assert!(
        v6.is_ok_and(|a| a.status == 200),
        "the guest reaches the internet over IPv6"
    );
    let moved = radius.wait_for("the Start with the IPv6 address", Duration::from_secs(20), |r| {
        is(r, "Acct-Status-Type", "Start") && r.get("Framed-IPv6-Address").is_some()
    });
    let second = moved.get("Acct-Session-Id").unwrap().clone();
    assert_ne!(second, first);
    assert!(is(&moved, "Framed-IPv6-Address", &c1.v6), "{moved:#?}");
    assert!(is(&moved, "Framed-IP-Address", &c1.v4), "{moved:#?}");
    let stopped = radius.wait_for("the first session's Stop", Duration::from_secs(5), |r| {
        is(r, "Acct-Status-Type", "Stop") && is(r, "Acct-Session-Id", &first)
    });
    assert!(is(&stopped, "Acct-Terminate-Cause", "NAS-Request"), "{stopped:#?}");

    // Interim-Updates while it is open, on the same session.
    let interim = radius.wait_for("an Interim-Update", Duration::from_secs(90), |r| {
        is(r, "Acct-Status-Type", "Interim-Update")
    });
    assert!(is(&interim, "Acct-Session-Id", &second), "{interim:#?}");
    assert!(interim.contains_key("Acct-Session-Time"));

    // Revoked: a Stop on the same session, from staff.
    gw.cli_ok(&["session", "revoke", &c1.mac]);
    let stop = radius.wait_for("the Stop on revoke", Duration::from_secs(20), |r| {
        is(r, "Acct-Status-Type", "Stop") && is(r, "Acct-Session-Id", &second)
    });
    assert!(is(&stop, "Acct-Terminate-Cause", "Admin-Reset"), "{stop:#?}");
    assert!(is(&stop, "User-Name", "Ann Example"));
    assert!(stop.contains_key("Acct-Session-Time"));
    assert!(!reaches_internet(c1));
    // Nothing is left waiting, and the secret was never logged.
    let check = gw.cli(&["check"]).1;
    assert!(check.contains("all accounting records delivered"), "{check}");
    assert!(!gw.log_text().contains(SECRET) && !check.contains(SECRET));
}

#[test]
fn records_wait_for_a_server_that_takes_them_across_restarts_and_never_on_a_wrong_secret() {
    let Some(lab) = Lab::new(2) else { return };
    let Some(mut radius) = Radius::start(&lab, SECRET) else {
        return;
    };
    let mut gw = Gateway::start(&lab);
    let servers = format!("[\"{NET_V4}:1813\"]");
    with_radius(
        &mut gw,
        &lab,
        &servers,
        "not-the-shared-secret",
        "interim_minutes = 0\n",
    );
    let (c1, c2) = (&lab.clients[0], &lab.clients[1]);
    let code = gw.add_running_course();
    assert_eq!(accept(c1, &code, "Ben").status, 200);
    // The server gets it, and drops it: it was not made with the secret the server has.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !radius.log_text().contains("invalid Request Authenticator") {
        assert!(Instant::now() < deadline, "server log:\n{}", tail(&radius.log_text()));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(radius.records().is_empty());
    let waiting = |gw: &Gateway<'_>, n: usize| {
        let check = gw.cli(&["check"]).1;
        assert!(check.contains(&format!("{n} accounting record(s) waiting")), "{check}");
    };
    waiting(&gw, 1);

    // The server goes down; the school fixes the secret (restarting the daemon).
    radius.stop();
    with_radius(&mut gw, &lab, &servers, SECRET, "interim_minutes = 0\n");
    assert!(
        get(c1, &format!("http://{NET_V4}/"), &[]).is_ok_and(|a| a.status == 200),
        "still open"
    );
    // With the server down, a second guest accepts and the first is revoked; the daemon
    // restarts once more.
    assert_eq!(accept(c2, &code, "Cat").status, 200, "accepts never wait on the server");
    gw.cli_ok(&["session", "revoke", &c1.mac]);
    waiting(&gw, 3);
    gw.stop();
    gw.start_again();

    // The server is back: everything arrives, in order, once each.
    radius.start_again();
    radius.wait_for("the last record", Duration::from_secs(150), |r| {
        is(r, "Acct-Status-Type", "Stop")
    });
    std::thread::sleep(Duration::from_secs(1));
    let records = radius.records();
    let seen: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["Acct-Status-Type"].as_str(), r["User-Name"].as_str()))
        .collect();
    assert_eq!(
        seen,
        [("Start", "Ben"), ("Start", "Cat"), ("Stop", "Ben")],
        "{records:#?}"
    );
    assert_eq!(records[0]["Acct-Session-Id"], records[2]["Acct-Session-Id"]);
    assert!(is(&records[1], "Framed-IP-Address", &c2.v4));
    let delay: u32 = records[0]["Acct-Delay-Time"].parse().unwrap();
    assert!(delay >= 2, "the Start says how long it waited: {delay}");
    let check = gw.cli(&["check"]).1;
    assert!(check.contains("all accounting records delivered"), "{check}");
}
