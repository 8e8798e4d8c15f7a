//! The real firewall. The whole table is installed, listed and checked by spawning `nft` (a
//! text script; we spawn it ourselves, keeping its stderr, with a timeout). Everything done per
//! guest (set elements, conntrack, watching for outside changes) goes over the daemon's own
//! netlink socket (`netlink.rs`), with no process spawned, so it costs microseconds and works
//! without `nft` or `conntrack` on PATH once the table is in. Only ever names `inet aupgate`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;

use jiff::SignedDuration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::netlink::Netlink;
use super::ruleset::timeout_secs;
use super::{Firewall, FirewallError, Ruleset, TABLE};
use crate::clients::MacAddr;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `nft` (found on `PATH` unless told otherwise) and the netlink socket. Clones share the socket.
#[derive(Debug, Clone)]
pub struct NftFirewall {
    nft: PathBuf,
    netlink: Arc<Netlink>,
}

impl Default for NftFirewall {
    fn default() -> Self {
        Self::with_nft("nft".into())
    }
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl NftFirewall {
    /// Uses the given `nft` (tests point it at a missing path).
    pub fn with_nft(nft: PathBuf) -> Self {
        Self {
            nft,
            netlink: Arc::default(),
        }
    }

    /// What dnsmasq has put in the walled garden's sets, with the seconds each has left, to be
    /// carried over when the table is replaced. Nothing for a set that is not there (after a
    /// boot, or with the table deleted from outside): dnsmasq adds an address again when it
    /// next asks upstream for the name.
    async fn garden_addresses(&self) -> Vec<(IpAddr, u32)> {
        let mut found = Vec::new();
        for set in super::ruleset::GARDEN_SETS {
            match self
                .nft(
                    "listing the walled garden",
                    &["-j", "list", "set", "inet", TABLE, set],
                    None,
                )
                .await
            {
                Ok(out) if out.ok => found.extend(garden_elements(&out.stdout)),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the walled garden; its addresses are added again as dnsmasq resolves them")
                }
            }
        }
        found
    }

    /// Runs `op` on the netlink socket, off the async runtime (it blocks, briefly).
    async fn netlink<T: Send + 'static>(
        &self,
        what: &'static str,
        op: impl FnOnce(&Netlink) -> Result<T, FirewallError> + Send + 'static,
    ) -> Result<T, FirewallError> {
        let netlink = self.netlink.clone();
        tokio::task::spawn_blocking(move || op(&netlink))
            .await
            .map_err(|e| FirewallError::Io {
                what,
                source: std::io::Error::other(e.to_string()),
            })?
    }

    async fn run(
        &self,
        program: &PathBuf,
        what: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, FirewallError> {
        let mut cmd = command(program, args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => FirewallError::NftMissing,
            _ => FirewallError::Io { what, source },
        })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .map_err(|source| FirewallError::Io { what, source })?;
            drop(pipe);
        }
        let out = tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| FirewallError::TimedOut(what))?
            .map_err(|source| FirewallError::Io { what, source })?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !out.status.success() && stderr.contains("Operation not permitted") {
            return Err(FirewallError::NotPermitted(what));
        }
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        })
    }

    /// Checks that nft is installed and that we may use netfilter, through nft and through
    /// our own netlink socket.
    ///
    /// # Errors
    /// `NftMissing`, `NotPermitted` or a failure naming the tool.
    pub async fn probe(&self) -> Result<(), FirewallError> {
        let out = self.nft("listing tables", &["list", "tables"], None).await?;
        if !out.ok {
            return Err(failed("listing tables", out));
        }
        self.netlink("reading the ruleset generation", |n| n.generation())
            .await?;
        Ok(())
    }

    /// Has the kernel check `ruleset`, built under a scratch table name, in a transaction that
    /// is then thrown away (`nft --check`): nothing is applied, so guests are never affected.
    ///
    /// # Errors
    /// If nft is missing, or the kernel refuses the ruleset (its message kept).
    pub async fn check_ruleset(&self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        const WHAT: &str = "checking the ruleset in a scratch table";
        let script = ruleset
            .script()
            .replace(&format!("inet {TABLE} "), &format!("inet {TABLE}_check "))
            .replace(&format!("inet {TABLE}\n"), &format!("inet {TABLE}_check\n"));
        let out = self.nft(WHAT, &["-c", "-f", "-"], Some(&script)).await?;
        if out.ok { Ok(()) } else { Err(failed(WHAT, out)) }
    }

    /// The whole ruleset as nft's JSON (for the doctor's look at the school's own rules).
    ///
    /// # Errors
    /// If nft is missing or fails.
    pub async fn ruleset_json(&self) -> Result<String, FirewallError> {
        const WHAT: &str = "listing the ruleset";
        let out = self.nft(WHAT, &["-j", "list", "ruleset"], None).await?;
        if out.ok { Ok(out.stdout) } else { Err(failed(WHAT, out)) }
    }

    /// Deletes our table (`aupgate firewall remove`); returns false if it was not there.
    ///
    /// # Errors
    /// If nft is missing or fails.
    pub async fn remove_table(&self) -> Result<bool, FirewallError> {
        const WHAT: &str = "deleting table inet aupgate";
        let out = self.nft(WHAT, &["delete", "table", "inet", TABLE], None).await?;
        match out.ok {
            true => Ok(true),
            false if missing(&out.stderr) => Ok(false),
            false => Err(failed(WHAT, out)),
        }
    }

    async fn nft(&self, what: &'static str, args: &[&str], stdin: Option<&str>) -> Result<Output, FirewallError> {
        self.run(&self.nft, what, args, stdin).await
    }
}

/// `program` with `args`, in the C locale: whether a table or element is missing is read from
/// the tool's error text, which is translated in other locales.
fn command(program: &PathBuf, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).env("LC_ALL", "C");
    cmd
}

fn failed(what: &'static str, out: Output) -> FirewallError {
    FirewallError::Failed {
        what,
        stderr: one_line(&out.stderr),
    }
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn missing(stderr: &str) -> bool {
    stderr.contains("No such file or directory")
}

impl Firewall for NftFirewall {
    async fn replace(&self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        let mut ruleset = ruleset.clone();
        if let Some(garden) = &mut ruleset.garden {
            garden.addresses = self.garden_addresses().await;
        }
        let out = self
            .nft("replacing table inet aupgate", &["-f", "-"], Some(&ruleset.script()))
            .await?;
        if out.ok {
            Ok(())
        } else {
            Err(failed("replacing table inet aupgate", out))
        }
    }

    async fn fingerprint(&self) -> Result<Option<String>, FirewallError> {
        const WHAT: &str = "listing table inet aupgate";
        // -t (terse) leaves out set elements: cheap with many guests, and unaffected by them.
        let out = self.nft(WHAT, &["-t", "list", "table", "inet", TABLE], None).await?;
        match out.ok {
            true => Ok(Some(out.stdout)),
            false if missing(&out.stderr) => Ok(None),
            false => Err(failed(WHAT, out)),
        }
    }

    async fn elements(&self) -> Result<BTreeSet<MacAddr>, FirewallError> {
        let listed = self.netlink("listing set allowed", |n| n.elements()).await?;
        Ok(listed.into_iter().map(|(mac, _)| mac).collect())
    }

    async fn timeouts(&self) -> Result<Vec<(MacAddr, SignedDuration)>, FirewallError> {
        let listed = self.netlink("listing set allowed", |n| n.elements()).await?;
        Ok(listed
            .into_iter()
            .filter_map(|(mac, left)| Some((mac, SignedDuration::from_millis(i64::try_from(left?).ok()?))))
            .collect())
    }

    async fn allow(&self, mac: MacAddr, left: SignedDuration) -> Result<(), FirewallError> {
        let ms = u64::from(timeout_secs(left)) * 1000;
        self.netlink("adding to set allowed", move |n| n.allow(mac, ms)).await
    }

    async fn allow_all(&self, elements: &[(MacAddr, SignedDuration)]) -> Result<(), FirewallError> {
        let ms: Vec<(MacAddr, u64)> = elements
            .iter()
            .map(|&(mac, left)| (mac, u64::from(timeout_secs(left)) * 1000))
            .collect();
        let one_by_one = ms.clone();
        if self.netlink("adding to set allowed", move |n| n.allow_all(&ms)).await? {
            return Ok(());
        }
        for (mac, ms) in one_by_one {
            self.netlink("adding to set allowed", move |n| n.allow(mac, ms)).await?;
        }
        Ok(())
    }

    async fn deny(&self, mac: MacAddr) -> Result<(), FirewallError> {
        self.netlink("deleting from set allowed", move |n| n.deny(mac)).await
    }

    async fn forget_connections(&self, ips: &[IpAddr], became: super::Became) -> Result<(), FirewallError> {
        simulated_forget_failure()?;
        let ips = ips.to_vec();
        let n = self
            .netlink("forgetting the device's connections", move |n| n.forget(&ips, became))
            .await?;
        tracing::debug!(connections = n, "conntrack entries forgotten");
        Ok(())
    }

    async fn open_device(&self, mac: MacAddr, left: SignedDuration, ips: &[IpAddr]) -> Result<(), FirewallError> {
        let ms = u64::from(timeout_secs(left)) * 1000;
        let ips = ips.to_vec();
        let n = self
            .netlink("opening the device", move |n| {
                n.allow(mac, ms)?;
                simulated_forget_failure()?;
                n.forget(&ips, super::Became::Open)
            })
            .await?;
        tracing::debug!(connections = n, "conntrack entries forgotten");
        Ok(())
    }

    fn outside_changes(&self) -> super::OutsideChanges {
        self.netlink.outside_changes()
    }
}

/// The addresses in one set of `nft -j list set` output, each with the seconds it has left
/// (its timeout when the listing gives no expiry).
fn garden_elements(json: &str) -> Vec<(IpAddr, u32)> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let sets = doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("set"));
    sets.flat_map(|set| set["elem"].as_array().into_iter().flatten())
        .filter_map(|e| {
            let (val, left) = match e.get("elem") {
                Some(inner) => (&inner["val"], inner.get("expires").or_else(|| inner.get("timeout"))),
                None => (e, None),
            };
            let ip: IpAddr = val.as_str()?.parse().ok()?;
            let left = left.and_then(serde_json::Value::as_u64).unwrap_or(0);
            Some((ip, u32::try_from(left).unwrap_or(u32::MAX)))
        })
        .collect()
}

/// Debug builds only: the namespace tests make the conntrack step fail for real, in the running
/// daemon, which the kernel's conntrack cannot be made to do from outside.
fn simulated_forget_failure() -> Result<(), FirewallError> {
    if cfg!(debug_assertions) && std::env::var_os("AUPGATE_FAULT").is_some_and(|v| v == "forget-connections") {
        return Err(FirewallError::Failed {
            what: "forgetting the device's connections",
            stderr: "simulated failure (AUPGATE_FAULT, debug builds only)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As nft 1.0.6 lists a garden set: dnsmasq's address (no timeout of its own, only an
    /// expiry) and one carried over with its own timeout.
    #[test]
    fn garden_elements_are_read_with_the_time_they_have_left() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "garden4", "table": "aupgate", "type": "ipv4_addr", "handle": 5, "flags": ["timeout"], "timeout": 600, "elem": [{"elem": {"val": "1.2.3.4", "expires": 599}}, {"elem": {"val": "198.51.100.7", "timeout": 300, "expires": 299}}]}}]}"#;
        assert_eq!(
            garden_elements(json),
            vec![
                ("1.2.3.4".parse().unwrap(), 599),
                ("198.51.100.7".parse().unwrap(), 299)
            ]
        );
        let empty = r#"{"nftables": [{"set": {"family": "inet", "name": "garden6", "table": "aupgate", "type": "ipv6_addr", "flags": ["timeout"], "timeout": 600}}]}"#;
        assert_eq!(garden_elements(empty), vec![]);
        assert_eq!(garden_elements("not json"), vec![]);
    }

    #[test]
    fn helpers_run_in_the_c_locale() {
        let cmd = command(&"nft".into(), &["list", "tables"]);
        let envs: Vec<_> = cmd.as_std().get_envs().collect();
        assert!(
            envs.contains(&(std::ffi::OsStr::new("LC_ALL"), Some(std::ffi::OsStr::new("C")))),
            "{envs:?}"
        );
    }

    #[test]
    fn nft_error_text_becomes_one_line() {
        let text = "Error: Could not process rule: No such file or directory\ndelete element inet aupgate allowed { 02:00:00:00:00:01 }\n^^^^^^^^^^^^^^^^^\n";
        assert_eq!(
            one_line(text),
            "Error: Could not process rule: No such file or directory / delete element inet aupgate allowed { 02:00:00:00:00:01 }"
        );
    }

    #[tokio::test]
    async fn missing_programs_are_named() {
        let fw = NftFirewall::with_nft("/nonexistent/nft".into());
        assert!(matches!(fw.fingerprint().await, Err(FirewallError::NftMissing)));
        assert!(
            FirewallError::NftMissing
                .to_string()
                .contains("apt-get install nftables")
        );
    }
}
