//! A guest's path through the real portal over real TCP from a client namespace: bad input of
//! every kind gets a clear page, nothing panics, nothing opens (invariant 9).

use jiff::SignedDuration;

use crate::harness::{Gateway, accept, assert_closed, get, policy_field, reaches_internet};
use crate::netns::{GW_V4, Lab};

#[test]
fn bad_input_gets_a_clear_page_and_opens_nothing() {
    let Some(lab) = Lab::new(1) else { return };
    let gw = Gateway::start(&lab);
    let c1 = &lab.clients[0];
    let code = gw.add_running_course();
    let url = format!("http://{GW_V4}:8080/accept");
    let page = get(c1, &format!("http://{GW_V4}:8080/"), &[]).unwrap();
    let policy = policy_field(&page.body);
    let big_name = "x".repeat(10_000);
    let oversized = "a".repeat(20_000);
    let cases: Vec<(&str, Vec<String>, u16, &str)> = vec![
        (
            "malformed",
            vec!["--data-binary".into(), "%%%&&&==\u{1}garbage".into()],
            400,
            "couldn",
        ),
        (
            "oversized",
            vec!["--data-binary".into(), format!("name={oversized}")],
            413,
            "too much text",
        ),
        (
            "missing fields",
            vec!["--data-binary".into(), format!("policy={policy}")],
            422,
            "access code",
        ),
        (
            "no agree",
            vec!["--data-binary".into(), format!("code={code}&name=Ann&policy={policy}")],
            422,
            "tick the box",
        ),
        (
            "no name",
            vec!["--data-binary".into(), format!("code={code}&agree=yes&policy={policy}")],
            422,
            "enter your name",
        ),
        (
            "non-UTF-8 name",
            vec![
                "--data-binary".into(),
                format!("code={code}&name=%FF%FEAnn&agree=yes&policy={policy}"),
            ],
            400,
            "not valid text",
        ),
        (
            "10 kB name",
            vec![
                "--data-binary".into(),
                format!("code={code}&name={big_name}&agree=yes&policy={policy}"),
            ],
            422,
            "too long",
        ),
        (
            "JSON instead of a form",
            vec![
                "-H".into(),
                "Content-Type: application/json".into(),
                "--data-binary".into(),
                "{\"code\":1}".into(),
            ],
            422,
            "access code",
        ),
    ];
    for (what, args, status, text) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let a = get(c1, &url, &args).unwrap_or_else(|e| panic!("{what}: curl exit {e}"));
        assert_eq!(a.status, status, "{what}: {}", a.body);
        assert!(a.body.contains(text), "{what}: expected {text:?} in {}", a.body);
        assert!(a.body.contains("<html"), "{what}: a page, not a bare error");
    }
    assert_closed(c1);
    assert!(gw.sessions().is_empty());
    // Still serving, and the right answer still works afterwards.
    assert_eq!(accept(c1, &code, "Ann").status, 200);
    assert!(reaches_internet(c1));
    assert!(!gw.log_text().contains("panicked"));
}

#[test]
fn full_course_and_unknown_device_are_refused_politely() {
    let Some(lab) = Lab::new(2) else { return };
    let gw = Gateway::start(&lab);
    let (c1, c2) = (&lab.clients[0], &lab.clients[1]);
    let (_, code) = gw.add_course(
        "One seat",
        SignedDuration::from_hours(-1),
        SignedDuration::from_hours(6),
        1,
    );
    assert_eq!(accept(c1, &code, "Ann").status, 200);
    let full = accept(c2, &code, "Bob");
    assert_eq!(full.status, 409);
    assert!(full.body.contains("all taken"), "{}", full.body);
    assert_closed(c2);
    // Accepting twice from the same device does not use a second seat.
    assert_eq!(accept(c1, &code, "Ann").status, 200);
    let (_, upcoming) = gw.add_course(
        "Tomorrow",
        SignedDuration::from_hours(20),
        SignedDuration::from_hours(26),
        5,
    );
    let early = accept(c2, &upcoming, "Bob");
    assert!(early.body.contains("starts at"), "{}", early.body);
    assert_closed(c2);
}

/// One guest holding many half-sent requests: connections over its cap are dropped at once,
/// the rest are closed after the header timeout, and another guest is served all along.
#[test]
fn idle_connections_cannot_starve_the_portal() {
    let Some(lab) = Lab::new(2) else { return };
    let _gw = Gateway::start(&lab);
    let (c1, c2) = (&lab.clients[0], &lab.clients[1]);
    let script = format!(
        r#"
import socket, time
socks = []
for i in range(100):
    s = socket.create_connection(("{GW_V4}", 8080), timeout=5)
    s.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
    socks.append(s)
def closed(s):
    try:
        s.settimeout(0.05)
        return s.recv(100) == b""
    except socket.timeout:
        return False
    except OSError:
        return True
time.sleep(1.5)
print("early", sum(closed(s) for s in socks), flush=True)
time.sleep({wait})
print("late", sum(closed(s) for s in socks), flush=True)
"#,
        wait = aupgate::web::HEADER_TIMEOUT.as_secs() + 2
    );
    let flood = std::process::Command::new("ip")
        .args(["netns", "exec", &c1.ns, "python3", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let page = get(c2, &format!("http://{GW_V4}:8080/"), &[]).expect("another guest is still served");
    assert_eq!(page.status, 200);
    let out = flood.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |k: &str| -> usize {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(count("early ") >= 100 - aupgate::web::MAX_PER_CLIENT, "{text}");
    assert_eq!(
        count("late "),
        100,
        "every idle connection closed after the header timeout: {text}"
    );
    // And the flooding guest itself can use the portal again.
    assert_eq!(get(c1, &format!("http://{GW_V4}:8080/"), &[]).unwrap().status, 200);
}

/// A full disk: the consent cannot be recorded, so nothing is opened and the guest is told what
/// to do; once there is space again, accepting works.
#[test]
fn full_disk_opens_nothing_and_recovers() {
    let Some(lab) = Lab::new(1) else { return };
    // The store lives on a small tmpfs of its own, mounted before the daemon starts.
    let state = lab.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let (ok, _, err) = crate::netns::sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=2m",
        "aupgate-test",
        state.to_str().unwrap(),
    ]);
    assert!(ok, "mount tmpfs: {err}");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            crate::netns::sh(&["umount", "-l", self.0.to_str().unwrap()]);
        }
    }
    let _unmount = Unmount(state.clone());
    let gw = Gateway::start(&lab);
    let c1 = &lab.clients[0];
    let code = gw.add_running_course();
    // Fill the filesystem to the last byte.
    let filler = state.join("filler");
    let (_, _, _) = crate::netns::sh(&["dd", "if=/dev/zero", &format!("of={}", filler.display()), "bs=64k"]);
    let a = accept(c1, &code, "Ann");
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(
        a.body.contains("couldn") && a.body.contains("Nothing has been opened"),
        "{}",
        a.body
    );
    assert_closed(c1);
    assert!(
        gw.log_text().contains("disk holding the store is full"),
        "{}",
        gw.log_text()
    );
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(accept(c1, &code, "Ann").status, 200);
    assert!(reaches_internet(c1));
}
