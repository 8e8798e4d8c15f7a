//! Issue 10, part 2: no guest can starve the portal. Devices hold slow-header connections (and
//! reopen each one the daemon closes) while a fresh guest loads the portal page and accepts.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Gateway, accept, get, reaches_internet};
use crate::netns::{Client, GW_V4, Lab};

/// Holds `per` slow connections from each of `sources` to the portal, reopening any the daemon
/// closes, for `seconds`: in mode `head` each sends half a request head and stops; in mode
/// `body` each sends a whole head for a 16,000-byte form and then one byte of it a second.
const SLOWLORIS: &str = r#"
import socket, sys, time
sources, per, seconds, dst, mode = sys.argv[1].split(","), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
HEAD = b"GET / HTTP/1.1\r\nHost: portal\r\nUser-Agent: slow"
if mode == "body":
    HEAD = b"POST /accept HTTP/1.1\r\nHost: portal\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 16000\r\n\r\ncode="
def connect(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.bind((src, 0))
        s.connect((dst, 8080))
        s.send(HEAD)
        s.setblocking(False)
        return s
    except OSError:
        s.close()
        return None
def alive(s):
    if s is None:
        return False
    try:
        s.recv(1)  # closed, reset, or answered: either way no longer held
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
conns = {}
end = time.time() + seconds
while time.time() < end:
    for src in sources:
        for i in range(per):
            s = conns.get((src, i))
            if not alive(s):
                if s is not None:
                    s.close()
                conns[(src, i)] = connect(src)
            elif mode == "body":
                try:
                    s.send(b"a")
                except OSError:
                    pass
    time.sleep(1)
"#;

struct Attack(Vec<Child>);

impl Attack {
    fn start(
        clients: &[&Client],
        sources: impl Fn(&Client) -> Vec<String>,
        per: usize,
        seconds: u32,
        mode: &str,
    ) -> Self {
        let children = clients
            .iter()
            .map(|c| {
                Command::new("ip")
                    .args(["netns", "exec", &c.ns, "python3", "-c", SLOWLORIS])
                    .arg(sources(c).join(","))
                    .arg(per.to_string())
                    .arg(seconds.to_string())
                    .arg(GW_V4)
                    .arg(mode)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        Self(children)
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Connections to the portal port the gateway has open, by the client's address.
fn held(lab: &Lab) -> Vec<String> {
    let (_, out, _) = lab.gw(&["ss", "-Htn", "state", "established", "( sport = :8080 )"]);
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|peer| {
            peer.rsplit_once(':')
                .map(|(ip, _)| ip.trim_start_matches("::ffff:").to_owned())
        })
        .collect()
}

/// Waits until the attack holds at least `n` connections at the gateway.
fn wait_held(lab: &Lab, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = held(lab).len();
        if now >= n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the attack holds only {now} connections, wanted {n}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The fresh guest: the page loads within a second, and accepting lets it out.
fn fresh_guest_is_served(gw: &Gateway<'_>, guest: &Client, code: &str) {
    let started = Instant::now();
    let page = get(guest, &format!("http://{GW_V4}:8080/"), &["--max-time", "3"]).expect("the portal answers");
    let took = started.elapsed();
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("Wi-Fi Acceptable Use Policy"));
    assert!(took < Duration::from_secs(1), "the page took {took:?}");
    eprintln!("fresh guest's page under attack: {took:?}");
    assert_eq!(accept(guest, code, "Fresh Guest").status, 200);
    assert!(reaches_internet(guest));
    // Refusals are summarised, not logged one by one.
    gw.wait_log("connections refused or closed in the last minute", 1);
    let log = gw.log_text();
    assert_eq!(
        log.matches("connections refused or closed").count(),
        1,
        "one summary a minute:\n{log}"
    );
}

/// (a) One device with 20 addresses, 32 slow connections from each (640, more than the 512
/// slots): counted by its MAC, it holds 32 in all.
#[test]
fn issue_10_one_device_with_20_addresses_cannot_starve_the_portal() {
    let Some(lab) = Lab::new(2) else { return };
    let gw = Gateway::start(&lab);
    let code = gw.add_running_course();
    let (attacker, guest) = (&lab.clients[0], &lab.clients[1]);
    let mut sources = vec![attacker.v4.clone()];
    for i in 0..19 {
        let ip = format!("192.0.2.{}", 100 + i);
        let (ok, _, err) = attacker.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        assert!(ok, "{err}");
        sources.push(ip);
    }
    let _attack = Attack::start(&[attacker], |_| sources.clone(), 32, 60, "head");
    // Every address has connected (so the gateway knows it as the device's) and the device
    // holds its whole share.
    wait_held(&lab, aupgate::web::MAX_PER_CLIENT);
    std::thread::sleep(Duration::from_secs(2));
    // The fewest seen: a refused connection is established for an instant before it is closed.
    let held = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            held(&lab)
        })
        .min_by_key(Vec::len)
        .unwrap();
    assert!(
        held.len() <= aupgate::web::MAX_PER_CLIENT + 2,
        "one device holds {} connections",
        held.len()
    );
    // Its other addresses were turned away as the same device.
    let refused = format!("client={} why=PerDevice", attacker.mac);
    assert!(gw.log_text().contains(&refused), "{refused} not in the log");
    fresh_guest_is_served(&gw, guest, &code);
}

/// (b) 20 devices with 32 slow connections each (640): when the slots are full a newcomer gets
/// the longest-idle connection of a device holding the most.
#[test]
fn issue_10_twenty_devices_with_32_slow_connections_cannot_starve_the_portal() {
    let Some(lab) = Lab::new(21) else { return };
    let gw = Gateway::start(&lab);
    let code = gw.add_running_course();
    let attackers: Vec<&Client> = lab.clients[..20].iter().collect();
    let guest = &lab.clients[20];
    let _attack = Attack::start(&attackers, |c| vec![c.v4.clone()], 32, 60, "head");
    let full = wait_held(&lab, aupgate::web::MAX_TOTAL - 8);
    eprintln!("the attack holds {full} of {} slots", aupgate::web::MAX_TOTAL);
    fresh_guest_is_served(&gw, guest, &code);
}

/// (c) 16 devices with 33 connections each that trickle a request body (so each is busy in a
/// handler, not idle): every slot is taken (16 x 32), and each device keeps trying one more;
/// a newcomer still gets a slot, from a device holding the most. (With exactly 32 each, the
/// newcomer sometimes came while an attacker was reconnecting, took the free slot, and nothing
/// was refused or closed for the summary line to report; seen once in CI.)
#[test]
fn issue_10_sixteen_devices_trickling_request_bodies_cannot_starve_the_portal() {
    let Some(lab) = Lab::new(17) else { return };
    let gw = Gateway::start(&lab);
    let code = gw.add_running_course();
    let attackers: Vec<&Client> = lab.clients[..16].iter().collect();
    let guest = &lab.clients[16];
    let per = aupgate::web::MAX_PER_CLIENT + 1;
    let _attack = Attack::start(&attackers, |c| vec![c.v4.clone()], per, 60, "body");
    let full = wait_held(&lab, aupgate::web::MAX_TOTAL - 8);
    eprintln!("the attack holds {full} of {} slots", aupgate::web::MAX_TOTAL);
    fresh_guest_is_served(&gw, guest, &code);
}
