//! A PostgreSQL server of the test's own, from Debian's packages: `initdb` into a folder of its
//! own, run as the `postgres` user (initdb and postgres refuse root), listening on a unix socket
//! in that folder only (no TCP port), and stopped and removed on drop. No system cluster is
//! touched.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::browser::may_run;

static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// The user the server runs as (the Debian package's).
const USER: &str = "postgres";
/// The port names the socket (`.s.PGSQL.PORT`); nothing listens on TCP.
const PORT: &str = "5432";

pub struct Postgres {
    dir: PathBuf,
    child: Option<Child>,
    /// A libpq connection string for the `postgres` database, as superuser `aupgate`.
    pub conninfo: String,
}

/// The newest server's binaries, e.g. /usr/lib/postgresql/15/bin.
fn bin_dir() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL's server is missing (scripts/setup installs it)".to_owned())?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists() && b.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "PostgreSQL's server is missing (scripts/setup installs it)".to_owned())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `args` as the postgres user (setpriv execs it, so a child's PID is the program's).
fn as_postgres(args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", USER, "--regid", USER, "--clear-groups", "--"])
        .args(args);
    cmd.current_dir("/");
    cmd
}

impl Postgres {
    /// A fresh server, ready for connections; `None` (with the reason printed) when this
    /// machine cannot run one, which fails in CI.
    pub fn start() -> Option<Self> {
        let ready = if is_root() {
            bin_dir().map(|_| ())
        } else {
            Err("needs root (to run PostgreSQL as the postgres user)".into())
        };
        if !may_run(ready, "PostgreSQL test") {
            return None;
        }
        let bin = bin_dir().unwrap();
        // Not under a root-only temporary folder: the postgres user must reach it.
        let dir = PathBuf::from(format!(
            "/var/tmp/aupgate-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let chown = Command::new("chown")
            .args([USER, dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success(), "chown {USER} {}", dir.display());
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let data = dir.join("data");
        let out = as_postgres(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "--locale=C",
            "-E",
            "UTF8",
            "-A",
            "trust",
            "-U",
            "aupgate",
        ])
        .output()
        .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = as_postgres(&[
            bin.join("postgres").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-k",
            dir.to_str().unwrap(),
            "-p",
            PORT,
            "-c",
            "listen_addresses=",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
        let pg = Self {
            conninfo: format!("host={} port={PORT} user=aupgate dbname=postgres", dir.display()),
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pg.dir.join(format!(".s.PGSQL.{PORT}")).exists() || !pg.psql_ok("SELECT 1") {
            assert!(Instant::now() < deadline, "PostgreSQL did not start:\n{}", pg.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(pg)
    }

    fn psql_ok(&self, sql: &str) -> bool {
        self.psql(sql).0
    }

    /// Runs `sql` with Debian's psql: (success, stdout, stderr).
    pub fn psql(&self, sql: &str) -> (bool, String, String) {
        let out = Command::new("psql")
            .args([
                &self.conninfo,
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: a fast shutdown, which ends its own children.
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
