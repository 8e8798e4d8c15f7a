//! Command-line interface: clap definitions and one function per subcommand. `run` starts the
//! daemon; mutating subcommands ask the running daemon over the control socket (it alone owns the
//! firewall); listings read the store directly, read-only, so they work even when it is down.
//! `audit export` is the one listing that also writes: its own record in the audit log.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::admin::control::{self, Request};
use crate::assets::{self, Policy};
use crate::clients::{Course, CourseState, MacAddr, Session};
use crate::clock::{Clock as _, SystemClock};
use crate::config::{self, Config, ConfigError};
use crate::firewall::NftFirewall;
use crate::store::{Role, Store};

/// aupgate: guest Wi-Fi stays closed until a training-course guest accepts the Wi-Fi AUP.
#[derive(Debug, Parser)]
#[command(name = "aupgate", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file [default: /etc/aupgate/aupgate.toml; for `aupgate hub`,
    /// /etc/aupgate/hub.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print records as JSON (objects; lists as arrays).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The command line of a school's commands, with the config's path resolved.
struct SchoolCli {
    config: PathBuf,
    json: bool,
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (portal, firewall, control socket).
    Run,
    /// Validate the configuration and this machine; print each problem on one line.
    Check,
    /// Training courses and their access codes.
    #[command(subcommand)]
    Course(CourseCommand),
    /// Devices that have accepted and are connected.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Staff accounts for the admin web UI.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Versions of the Wi-Fi policy guests have been shown.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// aupgate's nftables table.
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// The trust hub, against its own config: the sites and their chains.
    #[command(subcommand)]
    Hub(crate::hub::cli::HubCommand),
}

/// `aupgate firewall …`
#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Delete the table `inet aupgate` (e.g. when uninstalling). The daemon must be stopped
    /// first, or it would put the table back. Afterwards the guest network is as open as your
    /// own rules make it.
    Remove,
}

/// `aupgate policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Every version (SHA-256 of its text) with its first and last acceptance.
    List,
}

/// `aupgate audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Re-compute the hash chain and check every consent against it; exits 1 if anything was altered.
    Verify,
    /// Everything held about one device (a subject access request), as JSON.
    Subject {
        /// The device's MAC.
        #[arg(long)]
        mac: String,
    },
    /// One row per consent accepted in a date range (school time), as CSV or JSON Lines;
    /// recorded in the audit log (who, range, filter, rows) before it is given.
    Export {
        /// First day (or date and time) included, e.g. 2026-09-01.
        #[arg(long)]
        from: String,
        /// Last day included (a date includes the whole day), e.g. 2026-12-31.
        #[arg(long)]
        to: String,
        /// Only this course.
        #[arg(long)]
        course: Option<i64>,
        /// Only this device.
        #[arg(long)]
        mac: Option<String>,
        /// csv (for spreadsheets) or jsonl.
        #[arg(long, value_enum)]
        format: crate::audit::Format,
        /// Write here (created 0600: it holds personal data) instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Erase everything personal held about one device (a subject's request); closes it first
    /// if it still has access. The records' skeleton and a record of the erasure stay.
    Erase {
        /// The device's MAC.
        #[arg(long)]
        mac: String,
        /// Why, e.g. the request's reference (recorded in the log; no personal data here).
        #[arg(long)]
        reason: String,
    },
    /// Remove personal data older than [audit] retention_days now (the daemon does it daily).
    Purge {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `audit verify` found an alteration (exit 1; the line naming it is already printed).
#[derive(Debug, thiserror::Error)]
#[error("the audit log was altered")]
pub struct AuditAltered;

/// `aupgate admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an account; asks for the password twice on a terminal.
    Add {
        /// Sign-in name.
        user: String,
        /// staff (courses, live guests, revoke) or auditor (also the audit pages).
        #[arg(long, default_value = "staff")]
        role: String,
        /// Read the password from standard input (one line) instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Remove an account; it is signed out everywhere.
    Remove {
        /// Sign-in name.
        user: String,
    },
}

/// `aupgate course …`
#[derive(Debug, Subcommand)]
pub enum CourseCommand {
    /// Create a course and print its access code.
    Add {
        /// Title guests and staff see.
        #[arg(long)]
        title: String,
        /// Start, school local time: 2026-11-23T09:00 (seconds optional; or RFC 3339 with offset).
        #[arg(long)]
        starts: String,
        /// End, same format; guests' access ends then.
        #[arg(long)]
        ends: String,
        /// Most devices connected at once.
        #[arg(long, default_value_t = 40)]
        max_devices: u32,
    },
    /// List courses, newest first.
    List,
    /// End a course now: its code stops working and its devices are closed.
    End {
        /// Course id (from `course list`).
        id: i64,
    },
}

/// `aupgate session …`
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List connected devices.
    List,
    /// Close a device now.
    Revoke {
        /// The device's MAC, e.g. aa:bb:cc:dd:ee:ff.
        mac: String,
    },
}

/// A usage error (exit 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `check` found problems; `config` says whether any was in the configuration (exit 78) rather
/// than only on the machine (exit 69).
#[derive(Debug, thiserror::Error)]
#[error("{problems} problem(s) found")]
pub struct CheckFailed {
    /// How many.
    pub problems: usize,
    /// Any configuration problem among them.
    pub config: bool,
}

/// Runs the parsed command.
///
/// # Errors
/// Whatever failed, as one chain of context for the operator.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let hub_config = cli
        .config
        .clone()
        .unwrap_or_else(|| crate::hub::settings::DEFAULT_PATH.into());
    let cli = SchoolCli {
        config: cli.config.unwrap_or_else(|| config::DEFAULT_PATH.into()),
        json: cli.json,
        command: cli.command,
    };
    match cli.command {
        Command::Hub(cmd) => crate::hub::cli::run(&hub_config, cli.json, cmd, SystemClock.now()),
        Command::Run => {
            let config = Config::load(&cli.config)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(crate::daemon::run(config))
        }
        Command::Check => check(&cli.config, cli.json),
        Command::Course(cmd) => course(&cli.config, cli.json, cmd),
        Command::Session(cmd) => session(&cli.config, cli.json, cmd),
        Command::Admin(cmd) => admin(&cli.config, cli.json, cmd),
        Command::Audit(AuditCommand::Verify) => audit_verify(&cli.config, cli.json),
        Command::Audit(AuditCommand::Subject { mac }) => {
            let config = Config::load(&cli.config)?;
            let mac: MacAddr = mac.parse().map_err(|e| UsageError(format!("--mac: {e}")))?;
            print_json(&read_store(&config)?.subject(&mac.to_string())?)
        }
        Command::Policy(PolicyCommand::List) => policy_list(&cli.config, cli.json),
        Command::Firewall(FirewallCommand::Remove) => firewall_remove(&cli.config),
        Command::Audit(AuditCommand::Erase { mac, reason }) => audit_erase(&cli.config, cli.json, &mac, &reason),
        Command::Audit(AuditCommand::Purge { dry_run }) => audit_purge(&cli.config, cli.json, dry_run),
        Command::Audit(AuditCommand::Export { .. }) if cli.json => Err(UsageError(
            "--json does not apply to audit export, which writes one row per consent (fix: use --format jsonl for JSON Lines)"
                .into(),
        )
        .into()),
        Command::Audit(AuditCommand::Export {
            from,
            to,
            course,
            mac,
            format,
            output,
        }) => audit_export(
            &cli.config,
            &from,
            &to,
            course,
            mac.as_deref(),
            format,
            output.as_deref(),
        ),
    }
}

fn parse_time(text: &str, tz: &TimeZone, flag: &str) -> Result<Timestamp, UsageError> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let dt: DateTime = text.trim().parse().map_err(|_| {
        UsageError(format!(
            "{flag} {text:?}: expected local date and time like 2026-11-23T09:00"
        ))
    })?;
    dt.to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .map_err(|e| UsageError(format!("{flag} {text:?}: {e}")))
}

fn local(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M").to_string()
}

/// Guest-typed text on a terminal: control characters are shown escaped, never interpreted.
fn term_safe(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    config::push_printable(&mut out, text);
    out
}

/// `local`, remembered by minute: a listing of 50,000 sessions has far fewer distinct minutes
/// (every device of a course ends with it), and each conversion costs a time-zone lookup.
struct Local<'a> {
    tz: &'a TimeZone,
    seen: std::collections::HashMap<i64, String>,
}

impl<'a> Local<'a> {
    fn new(tz: &'a TimeZone) -> Self {
        Self {
            tz,
            seen: std::collections::HashMap::new(),
        }
    }

    fn at(&mut self, t: Timestamp) -> String {
        let tz = self.tz;
        self.seen
            .entry(t.as_second().div_euclid(60))
            .or_insert_with(|| local(t, tz))
            .clone()
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value).context("encoding JSON")?);
    Ok(())
}

fn read_store(config: &Config) -> anyhow::Result<Store> {
    if !config.store_path.exists() {
        anyhow::bail!(
            "no store at {} yet (fix: start the daemon once; it creates the store)",
            config.store_path.display()
        );
    }
    Store::open_read_only(&config.store_path)
        .with_context(|| format!("opening the store {}", config.store_path.display()))
}

pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // One buffered writer, not a write per line: 50,000 sessions were 50,000 system calls.
    // A reader that goes away (`| head`) ends the listing quietly.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut written = Ok(());
    let mut line = String::new();
    for cells in std::iter::once(&header).chain(&rows) {
        line.clear();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{c:<w$}");
        }
        written = writeln!(out, "{}", line.trim_end());
        if written.is_err() {
            break;
        }
    }
    let written = written.and_then(|()| out.flush());
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("aupgate: writing the listing failed: {e}");
    }
}

fn course(path: &Path, json: bool, cmd: CourseCommand) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let tz = &config.school.timezone;
    match cmd {
        CourseCommand::Add {
            title,
            starts,
            ends,
            max_devices,
        } => {
            let starts_at = parse_time(&starts, tz, "--starts")?;
            let ends_at = parse_time(&ends, tz, "--ends")?;
            if ends_at <= starts_at {
                return Err(UsageError("--ends must be after --starts".into()).into());
            }
            let req = Request::CourseAdd {
                title,
                starts_at,
                ends_at,
                max_devices,
            };
            let data = control::call(&config.control_socket, &req)?;
            let course: Course = serde_json::from_value(data).context("reading the daemon's reply")?;
            if json {
                return print_json(&course);
            }
            println!("Course {} created: {}", course.id, term_safe(&course.title));
            println!("Access code: {}", course.code);
            println!(
                "Valid {} to {} ({}), up to {} devices",
                local(course.starts_at, tz),
                local(course.ends_at, tz),
                config.school.timezone_name,
                course.max_devices
            );
        }
        CourseCommand::List => {
            let courses = read_store(&config)?.courses()?;
            if json {
                return print_json(&courses);
            }
            let now = SystemClock.now();
            let rows = courses
                .iter()
                .map(|c| {
                    let state = match c.state(now) {
                        CourseState::Upcoming => "upcoming",
                        CourseState::Running => "running",
                        CourseState::Ended => "ended",
                    };
                    vec![
                        c.id.to_string(),
                        term_safe(&c.title),
                        c.code.to_string(),
                        local(c.starts_at, tz),
                        local(c.ends_at, tz),
                        c.max_devices.to_string(),
                        state.into(),
                    ]
                })
                .collect();
            table(&["ID", "TITLE", "CODE", "STARTS", "ENDS", "MAX", "STATE"], rows);
        }
        CourseCommand::End { id } => {
            let data = control::call(&config.control_socket, &Request::CourseEnd { id })?;
            if json {
                return print_json(&data);
            }
            println!("Course {id} ended; {} device(s) closed.", data["devices_closed"]);
        }
    }
    Ok(())
}

fn session(path: &Path, json: bool, cmd: SessionCommand) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let tz = &config.school.timezone;
    match cmd {
        SessionCommand::List => {
            let sessions: Vec<Session> = read_store(&config)?.sessions(SystemClock.now())?;
            if json {
                return print_json(&sessions);
            }
            let mut at = Local::new(tz);
            let rows = sessions
                .iter()
                .map(|s| {
                    let who = if s.organisation.is_empty() {
                        term_safe(&s.name)
                    } else {
                        format!("{} ({})", term_safe(&s.name), term_safe(&s.organisation))
                    };
                    vec![
                        s.mac.to_string(),
                        s.ip.clone(),
                        who,
                        term_safe(&s.course),
                        at.at(s.accepted_at),
                        at.at(s.expires_at),
                    ]
                })
                .collect();
            table(&["MAC", "IP", "NAME", "COURSE", "ACCEPTED", "EXPIRES"], rows);
        }
        SessionCommand::Revoke { mac } => {
            let mac: MacAddr = mac.parse().map_err(|e| UsageError(format!("{e}")))?;
            let data = control::call(&config.control_socket, &Request::SessionRevoke { mac })?;
            if json {
                return print_json(&data);
            }
            match data["sessions_ended"].as_u64() {
                Some(0) => println!("{mac} had no open session; it is closed."),
                _ => println!("{mac} revoked and closed."),
            }
        }
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = rpassword::prompt_password("New password: ")
        .context("reading the password (use --password-stdin without a terminal)")?;
    let second = rpassword::prompt_password("Again: ").context("reading the password")?;
    if first != second {
        return Err(UsageError("the two passwords differ; nothing was changed".into()).into());
    }
    Ok(first)
}

fn admin(path: &Path, json: bool, cmd: AdminCommand) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    match cmd {
        AdminCommand::Add {
            user,
            role,
            password_stdin,
        } => {
            let role: Role = role.parse().map_err(|e: String| UsageError(format!("--role: {e}")))?;
            let password = read_password(password_stdin)?;
            let data = control::call(
                &config.control_socket,
                &Request::AdminAdd {
                    name: user.clone(),
                    role,
                    password,
                },
            )?;
            if json {
                return print_json(&data);
            }
            println!("Account {} created ({role}).", term_safe(&user));
        }
        AdminCommand::List => {
            let admins = read_store(&config)?.admins()?;
            if json {
                return print_json(&admins);
            }
            let tz = &config.school.timezone;
            let rows = admins
                .iter()
                .map(|a| vec![term_safe(&a.name), a.role.to_string(), local(a.created_at, tz)])
                .collect();
            table(&["NAME", "ROLE", "CREATED"], rows);
        }
        AdminCommand::Remove { user } => {
            let data = control::call(&config.control_socket, &Request::AdminRemove { name: user.clone() })?;
            if json {
                return print_json(&data);
            }
            println!("Account {} removed.", term_safe(&user));
        }
    }
    Ok(())
}

/// A `--from`/`--to` bound: a date means the start of that day (`end_of_day` moves `--to` to
/// the start of the next, so the whole day is included); a date and time is taken as is.
fn day_bound(text: &str, tz: &TimeZone, flag: &str, end_of_day: bool) -> Result<Timestamp, UsageError> {
    if let Ok(date) = text.trim().parse::<jiff::civil::Date>() {
        let day = if end_of_day {
            date.tomorrow().map_err(|e| UsageError(format!("{flag}: {e}")))?
        } else {
            date
        };
        return day
            .to_zoned(tz.clone())
            .map(|z| z.timestamp())
            .map_err(|e| UsageError(format!("{flag} {text:?}: {e}")));
    }
    parse_time(text, tz, flag)
}

fn audit_export(
    path: &Path,
    from: &str,
    to: &str,
    course: Option<i64>,
    mac: Option<&str>,
    format: crate::audit::Format,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let tz = &config.school.timezone;
    let (from, to) = (day_bound(from, tz, "--from", false)?, day_bound(to, tz, "--to", true)?);
    if to <= from {
        return Err(UsageError("--to must not be before --from".into()).into());
    }
    let mac = mac
        .map(|m| m.parse::<MacAddr>().map_err(|e| UsageError(format!("--mac: {e}"))))
        .transpose()?;
    let store = write_store(&config)?;
    let now = SystemClock.now();
    let records = store.consents_between(from, to, course, mac)?;
    let rows: Vec<crate::audit::Row> = records.iter().map(|r| crate::audit::Row::new(r, tz, now)).collect();
    let mut out = Vec::new();
    crate::audit::write(&rows, format, &mut out).context("writing the export")?;
    // Recorded before it is given, as in the admin UI: an export that cannot be recorded is not
    // given. The MAC, if any, goes beside the chain (erasable), not into the event.
    let export = crate::access::staff::Export {
        by: invoker(),
        from,
        to,
        course,
        mac,
        format,
    };
    crate::access::staff::record_export(&store, &export, rows.len(), now).map_err(|e| {
        let fix = if e.to_string().contains("(fix: ") {
            ""
        } else {
            " (fix: make sure the store can be written, then export again)"
        };
        anyhow::anyhow!(
            "the export cannot be recorded in the audit log of {}, so it is not given: {e}{fix}",
            config.store_path.display()
        )
    })?;
    match output {
        None => std::io::Write::write_all(&mut std::io::stdout().lock(), &out).context("writing the export")?,
        Some(file) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(file)
                .with_context(|| format!("creating {}", file.display()))?;
            // `mode` only applies to a new file; an existing one is restricted too.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .with_context(|| format!("restricting {}", file.display()))?;
            std::io::Write::write_all(&mut f, &out).with_context(|| format!("writing {}", file.display()))?;
            eprintln!("{} consent(s) written to {}", rows.len(), file.display());
        }
    }
    Ok(())
}

/// The store opened for the CLI's own audit record (an export), beside the daemon if it runs.
/// Only a store at this build's schema is written: migrating is the daemon's job.
fn write_store(config: &Config) -> anyhow::Result<Store> {
    let shown = config.store_path.display();
    if !config.store_path.exists() {
        anyhow::bail!("no store at {shown} yet (fix: start the daemon once; it creates the store)");
    }
    let store = Store::open_existing(&config.store_path)
        .with_context(|| format!("opening the store {shown} to record the export"))?;
    let (have, latest) = store.schema_versions()?;
    if have != latest {
        let fix = if have < latest {
            "systemctl restart aupgate, which migrates the store, then export again"
        } else {
            "install the newer aupgate that wrote it again"
        };
        anyhow::bail!(
            "the store {shown} has schema {have} and this aupgate writes schema {latest}, so the export cannot be recorded and is not given (fix: {fix})"
        );
    }
    Ok(store)
}

/// Who runs this command, for the audit log: the real user's name (the real uid from
/// /proc/self/status, resolved through /etc/passwd), or, when root runs it through sudo, the
/// user sudo names. Environment variables alone are not trusted: anyone can set `USER`, and
/// only root's `SUDO_USER` is believed (sudo runs the command as root).
fn invoker() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let sudo_user = std::env::var("SUDO_USER").ok();
    invoker_from(&status, &passwd, sudo_user.as_deref())
}

fn invoker_from(status: &str, passwd: &str, sudo_user: Option<&str>) -> String {
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|id| id.parse::<u32>().ok());
    let Some(uid) = uid else {
        return "an unknown user (cli)".to_owned();
    };
    let name = passwd.lines().find_map(|l| {
        let mut fields = l.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    });
    let name = name.unwrap_or_else(|| format!("uid {uid}"));
    match sudo_user.map(str::trim).filter(|u| !u.is_empty()) {
        Some(user) if uid == 0 => format!("{} via sudo (cli)", term_safe(user)),
        _ => format!("{name} (cli)"),
    }
}

fn firewall_remove(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if std::os::unix::net::UnixStream::connect(&config.control_socket).is_ok() {
        anyhow::bail!("the aupgate daemon is running and would put the table back (fix: systemctl stop aupgate first)");
    }
    let removed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(NftFirewall::default().remove_table())?;
    if removed {
        println!("table inet aupgate deleted: the guest network is no longer restricted by aupgate.");
    } else {
        println!("table inet aupgate was not there; nothing to do.");
    }
    Ok(())
}

fn audit_erase(path: &Path, json: bool, mac: &str, reason: &str) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let mac: MacAddr = mac.parse().map_err(|e| UsageError(format!("--mac: {e}")))?;
    let data = control::call(
        &config.control_socket,
        &Request::AuditErase {
            mac,
            reason: reason.to_owned(),
        },
    )?;
    if json {
        return print_json(&data);
    }
    let n = |key: &str| data[key].as_array().map_or(0, Vec::len);
    println!(
        "{mac} erased: {} consent(s) and {} exception(s) blanked, {} event(s) no longer name it, {} code attempt(s) deleted{}.",
        n("consents"),
        n("exceptions"),
        n("events"),
        data["code_attempts"].as_u64().unwrap_or(0),
        if data["sessions_ended"].as_u64().unwrap_or(0) > 0 {
            "; its access was ended first"
        } else {
            ""
        }
    );
    Ok(())
}

fn audit_purge(path: &Path, json: bool, dry_run: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let purge: crate::store::Purge = if dry_run {
        read_store(&config)?.purge_plan(config.retention(), SystemClock.now())?
    } else {
        serde_json::from_value(control::call(&config.control_socket, &Request::AuditPurge)?)
            .context("reading the daemon's answer")?
    };
    if json {
        return print_json(&serde_json::json!({"dry_run": dry_run, "purge": purge}));
    }
    let tz = &config.school.timezone;
    let verb = if dry_run { "would remove" } else { "removed" };
    if purge.is_empty() {
        println!(
            "nothing older than {} days (before {}) to remove.",
            config.retention_days,
            local(purge.cutoff, tz)
        );
        return Ok(());
    }
    println!(
        "retention {} days: {verb} personal data from before {}:",
        config.retention_days,
        local(purge.cutoff, tz)
    );
    for (n, what) in [
        (purge.events, "audit event(s) from the start of the chain"),
        (purge.consents_deleted, "consent(s) with their events"),
        (
            purge.consents_blanked,
            "consent(s) blanked (their event is still needed)",
        ),
        (purge.device_links, "device link(s) from events"),
        (purge.exceptions, "exception(s)"),
        (purge.code_attempts, "access-code attempt(s)"),
        (purge.sign_in_attempts, "staff sign-in attempt(s)"),
    ] {
        if n > 0 {
            println!("  {n:>6} {what}");
        }
    }
    if let Some(head) = &purge.continues_from {
        println!(
            "the chain {} from {head}",
            if dry_run { "would continue" } else { "continues" }
        );
    }
    Ok(())
}

fn policy_list(path: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let current = Policy::load(config.portal.policy.as_deref())?.hash;
    let versions = read_store(&config)?.policy_versions()?;
    if json {
        let list: Vec<serde_json::Value> = versions
            .iter()
            .map(|v| {
                let mut o = serde_json::to_value(v).unwrap_or_default();
                o["current"] = serde_json::Value::Bool(v.hash == current);
                o
            })
            .collect();
        return print_json(&list);
    }
    let tz = &config.school.timezone;
    let when = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map_or_else(|| "-".to_owned(), |t| local(t, tz))
    };
    let rows = versions
        .iter()
        .map(|v| {
            vec![
                format!(
                    "{}{}",
                    &v.hash[..16.min(v.hash.len())],
                    if v.hash == current { " (current)" } else { "" }
                ),
                when(&Some(v.first_shown_at.clone())),
                when(&v.first_accepted_at),
                when(&v.last_accepted_at),
                v.consents.to_string(),
            ]
        })
        .collect();
    table(
        &["VERSION", "FIRST SHOWN", "FIRST ACCEPTED", "LAST ACCEPTED", "CONSENTS"],
        rows,
    );
    Ok(())
}

fn audit_verify(path: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    match read_store(&config)?.verify()? {
        Ok(ok) => {
            if json {
                print_json(
                    &serde_json::json!({"ok": true, "events": ok.events, "head": ok.head, "continues_from": ok.continues_from}),
                )?;
            } else {
                match &ok.continues_from {
                    None => println!("ok: {} events, head {}", ok.events, ok.head),
                    Some(from) => println!(
                        "ok: {} events, head {} (older events were purged; the chain continues from {from})",
                        ok.events, ok.head
                    ),
                }
            }
            Ok(())
        }
        Err(brk) => {
            if json {
                print_json(&serde_json::json!({"ok": false, "event": brk.event, "problem": brk.problem}))?;
            } else {
                println!("ALTERED: {brk}");
            }
            Err(AuditAltered.into())
        }
    }
}

fn check(path: &Path, json: bool) -> anyhow::Result<()> {
    let report = match Config::load(path) {
        Ok(config) => crate::doctor::examine(&config, path),
        Err(e) => {
            let mut r = crate::doctor::Report::default();
            r.findings.push(crate::doctor::Finding {
                level: crate::doctor::Level::Fail,
                check: "config",
                message: e.to_string(),
                machine: false,
            });
            r
        }
    };
    let (fails, config_fails) = report.failures();
    if json {
        print_json(&serde_json::json!({"ok": fails == 0, "findings": report.findings}))?;
    } else {
        print!("{}", report.text());
        let warns = report
            .findings
            .iter()
            .filter(|f| f.level == crate::doctor::Level::Warn)
            .count();
        if fails == 0 {
            println!(
                "{}: configuration and machine OK{}",
                path.display(),
                if warns > 0 {
                    format!(", {warns} warning(s)")
                } else {
                    String::new()
                }
            );
        }
    }
    if fails > 0 {
        return Err(CheckFailed {
            problems: fails,
            config: config_fails > 0,
        }
        .into());
    }
    Ok(())
}

/// The exit status for an error from [`run`]: 78 bad config, 69 machine not ready, 64 usage, 1 else.
pub fn exit_status(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<CheckFailed>() {
        return if c.config { 78 } else { 69 };
    }
    if e.downcast_ref::<ConfigError>().is_some()
        || e.downcast_ref::<assets::AssetError>().is_some()
        || e.downcast_ref::<crate::web::tls::TlsError>().is_some()
    {
        return 78;
    }
    if e.downcast_ref::<UsageError>().is_some() {
        return 64;
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_11_the_cli_names_the_real_user_and_believes_sudo_only_for_root() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nann:x:1000:1000:Ann:/home/ann:/bin/bash\n";
        let status = |uid: &str| format!("Name:\taupgate\nUid:\t{uid}\t0\t0\t0\n");
        assert_eq!(invoker_from(&status("0"), passwd, None), "root (cli)");
        assert_eq!(invoker_from(&status("0"), passwd, Some("ann")), "ann via sudo (cli)");
        assert_eq!(invoker_from(&status("0"), passwd, Some(" ")), "root (cli)");
        assert_eq!(invoker_from(&status("1000"), passwd, None), "ann (cli)");
        assert_eq!(
            invoker_from(&status("1000"), passwd, Some("root")),
            "ann (cli)",
            "a user's own SUDO_USER is not believed"
        );
        assert_eq!(invoker_from(&status("1234"), passwd, None), "uid 1234 (cli)");
        assert_eq!(invoker_from("", passwd, None), "an unknown user (cli)");
        assert_eq!(
            invoker_from(&status("0"), passwd, Some("x\u{1b}[2J")),
            "x\\u{1b}[2J via sudo (cli)"
        );
    }
}
