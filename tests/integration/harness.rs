//! The real daemon inside a lab's gateway namespace, the real CLI, and a guest's requests (curl
//! inside a client namespace). On drop the daemon is killed and, if the test failed, its log is
//! printed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::netns::{Client, GW_V4, GW_V6, INTERNET_BODY, Lab, NET_V4, sh};

pub const BIN: &str = env!("CARGO_BIN_EXE_aupgate");

/// `aupgate --config CONFIG ARGS`: (success, stdout, stderr).
pub fn run_cli(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Gateway<'a> {
    pub lab: &'a Lab,
    pub config: PathBuf,
    pub store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// PATH for the daemon, to stand in broken helper programs; `None` keeps ours.
    pub path: Option<String>,
    /// Extra environment for the daemon (e.g. the debug build's `AUPGATE_FAULT`).
    pub env: Vec<(String, String)>,
    /// A command the daemon is started through inside the namespace (e.g. `setpriv …`), which
    /// must exec it (so the child's PID is the daemon's).
    pub wrapper: Vec<String>,
}

/// A config for the lab's gateway; `extra` is appended verbatim.
pub fn config_text(lab: &Lab) -> String {
    format!(
        r#"[school]
name = "Claremont Primary School"
timezone = "UTC"
dsl_contact = "Jenny James (DSL), via the school office"

[guest]
interface = "guest0"
address = "{GW_V4}"
address6 = "{GW_V6}"

[portal]
port = 8080

[store]
path = "{store}"

[control]
socket = "{socket}"
"#,
        store = lab.path("state/aupgate.db").display(),
        socket = lab.path("run/control.sock").display(),
    )
}

impl<'a> Gateway<'a> {
    /// Writes the config and starts `aupgate run` in the gateway namespace; returns once ready.
    pub fn start(lab: &'a Lab) -> Self {
        let config = lab.path("aupgate.toml");
        std::fs::write(&config, config_text(lab)).unwrap();
        let mut gw = Gateway {
            lab,
            config,
            store: lab.path("state/aupgate.db"),
            log: lab.path("daemon.log"),
            child: None,
            path: None,
            env: Vec::new(),
            wrapper: Vec::new(),
        };
        gw.start_again();
        gw
    }

    /// Starts the daemon (again); returns once it logged that it is ready.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let start_len = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.lab.gw])
            .args(&self.wrapper)
            .args([BIN, "run", "--config"])
            .arg(&self.config);
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .env("AUPGATE_LOG", "info,aupgate=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read(&self.log).unwrap_or_default();
            if String::from_utf8_lossy(&text[start_len as usize..]).contains("aupgate ready") {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status} before it was ready:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready after 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the daemon, adds `lines` to the config's `[portal]` table, and starts it again.
    pub fn restart_with_portal(&mut self, lines: &str) {
        self.stop();
        let text = std::fs::read_to_string(&self.config)
            .unwrap()
            .replace("[portal]\n", &format!("[portal]\n{lines}\n"));
        std::fs::write(&self.config, text).unwrap();
        self.start_again();
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        sh(&["kill", "-TERM", &child.id().to_string()]);
        let status = child.wait().unwrap();
        assert!(status.success(), "daemon exit status {status}:\n{}", self.log_text());
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (e.g. "HUP") to the daemon.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let (ok, _, err) = sh(&["kill", &format!("-{signal}"), &pid]);
        assert!(ok, "kill -{signal}: {err}");
    }

    /// Waits up to 10 s for the log to contain `needle` at least `times` times.
    pub fn wait_log(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log_text().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        let _ = child.wait();
    }

    /// Runs the CLI with this gateway's config.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        run_cli(&self.config, args)
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(args);
        assert!(ok, "aupgate {args:?} failed: {err}\n{}", self.log_text());
        out
    }

    /// `aupgate admin add USER --role ROLE --password-stdin`; returns (success, stdout, stderr).
    pub fn add_admin(&self, user: &str, role: &str, password: &str) -> (bool, String, String) {
        let mut child = Command::new(BIN)
            .args([
                "--config",
                self.config.to_str().unwrap(),
                "admin",
                "add",
                user,
                "--role",
                role,
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), format!("{password}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Creates a course running from `from` to `to` relative to now; returns (id, code).
    /// A course running now (started an hour ago, ends in six hours, 40 devices); its code.
    pub fn add_running_course(&self) -> String {
        self.add_course(
            "Course",
            SignedDuration::from_hours(-1),
            SignedDuration::from_hours(6),
            40,
        )
        .1
    }

    pub fn add_course(&self, title: &str, from: SignedDuration, to: SignedDuration, max: u32) -> (i64, String) {
        let fmt = |d: SignedDuration| (Timestamp::now() + d).strftime("%Y-%m-%dT%H:%M:%S").to_string();
        let out = self.cli_ok(&[
            "course",
            "add",
            "--title",
            title,
            "--starts",
            &fmt(from),
            "--ends",
            &fmt(to),
            "--max-devices",
            &max.to_string(),
            "--json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        (v["id"].as_i64().unwrap(), v["code"].as_str().unwrap().to_owned())
    }

    pub fn sessions(&self) -> Vec<Value> {
        serde_json::from_str::<Vec<Value>>(&self.cli_ok(&["session", "list", "--json"])).unwrap()
    }

    /// The nft listing of `table` in the gateway namespace.
    pub fn nft_list(&self, family: &str, table: &str) -> Option<String> {
        let (ok, out, _) = self.lab.gw(&["nft", "list", "table", family, table]);
        ok.then_some(out)
    }
}

impl Drop for Gateway<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
    }
}

/// An HTTP answer as curl saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: String,
    pub body: String,
}

/// GET `url` from `client` (extra curl args allowed); None if curl could not connect.
pub fn get(client: &Client, url: &str, extra: &[&str]) -> Result<Answer, i32> {
    let mut args = vec!["curl", "-s", "--max-time", "5", "-w", "\n%{http_code}\n%{redirect_url}"];
    args.extend_from_slice(extra);
    args.push(url);
    let (ok, out, _) = client.run(&args);
    if !ok {
        // curl's exit code tells refused (7) from timed out (28).
        let mut full = vec!["ip", "netns", "exec", client.ns.as_str()];
        full.extend_from_slice(&args);
        let code = Command::new(full[0])
            .args(&full[1..])
            .output()
            .unwrap()
            .status
            .code()
            .unwrap_or(-1);
        return Err(code);
    }
    let mut lines: Vec<&str> = out.rsplitn(3, '\n').collect();
    lines.reverse();
    Ok(Answer {
        body: lines[0].to_owned(),
        status: lines[1].parse().unwrap_or(0),
        location: lines[2].to_owned(),
    })
}

/// True if `client` reaches the internet host over IPv4 (its page, not a redirect).
pub fn reaches_internet(client: &Client) -> bool {
    matches!(get(client, &format!("http://{NET_V4}/"), &[]), Ok(a) if a.status == 200 && a.body.contains(INTERNET_BODY))
}

/// Asserts `client` is closed: plain HTTP goes to the portal, other TCP is reset at once.
pub fn assert_closed(client: &Client) {
    assert_closed_to(client, &format!("http://{GW_V4}:8080/"));
}

/// `assert_closed`, for a gateway whose portal URL is `portal`.
pub fn assert_closed_to(client: &Client, portal: &str) {
    let a = get(client, &format!("http://{NET_V4}/"), &[]).expect("HTTP from a closed client must be answered");
    assert_eq!(a.status, 302, "closed client's HTTP must be redirected: {a:?}");
    assert_eq!(a.location, portal);
    assert!(!a.body.contains(INTERNET_BODY));
    let refused = get(client, &format!("http://{NET_V4}:443/"), &["--connect-timeout", "3"]);
    assert_eq!(
        refused.err(),
        Some(7),
        "other TCP must be refused at once (curl exit 7), not time out (28)"
    );
}

/// Asserts `client` cannot get out, also while the daemon is down (then nothing answers on the
/// portal port, so HTTP is refused rather than redirected).
pub fn assert_blocked(client: &Client) {
    match get(client, &format!("http://{NET_V4}/"), &[]) {
        Ok(a) => assert!(
            a.status == 302 && !a.body.contains(INTERNET_BODY),
            "blocked client got {a:?}"
        ),
        Err(code) => assert_eq!(code, 7, "refused at once, not timed out"),
    }
    let refused = get(client, &format!("http://{NET_V4}:443/"), &["--connect-timeout", "3"]);
    assert_eq!(refused.err(), Some(7));
}

/// True if a UDP datagram from `client` to the internet host is refused at once with an ICMP
/// error (admin-prohibited), rather than vanishing.
pub fn udp_refused_at_once(client: &Client) -> bool {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('{NET_V4}', 9999))\ns.send(b'x')\ntry:\n    s.recv(10)\n    print('answered')\nexcept socket.timeout:\n    print('timeout')\nexcept OSError as e:\n    print('refused', e.errno)\n"
    );
    let (_, out, _) = client.run(&["python3", "-c", &script]);
    // ICMP admin-prohibited (type 3 code 13) surfaces as EHOSTUNREACH (113) on Linux.
    out.trim() == "refused 113"
}

/// The policy version on the portal page, as a browser would submit it.
pub fn policy_field(page: &str) -> String {
    let at = page.find("name=\"policy\" value=\"").expect("hidden policy field") + "name=\"policy\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

/// Loads the portal page and submits the form as a guest would.
pub fn accept(client: &Client, code: &str, name: &str) -> Answer {
    accept_via(client, &format!("http://{GW_V4}:8080"), code, name)
}

pub fn accept_via(client: &Client, base: &str, code: &str, name: &str) -> Answer {
    let page = get(client, &format!("{base}/"), &[]).expect("portal page");
    assert_eq!(page.status, 200, "portal page: {page:?}");
    let policy = policy_field(&page.body);
    get(
        client,
        &format!("{base}/accept"),
        &[
            "-A",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) lab",
            "--data-urlencode",
            &format!("code={code}"),
            "--data-urlencode",
            &format!("name={name}"),
            "--data-urlencode",
            "organisation=Kent Training Hub",
            "--data-urlencode",
            "agree=yes",
            "--data-urlencode",
            &format!("policy={policy}"),
        ],
    )
    .expect("accept answered")
}
