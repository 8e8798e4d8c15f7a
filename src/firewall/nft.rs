//! The real firewall: spawns `nft` (JSON via the `nftables` crate's types, or a text script for
//! the whole table) and `conntrack`. We spawn them ourselves rather than use the crate's helper,
//! which loses nft's stderr; every call has a timeout. Only ever names `inet aupgate`.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use jiff::SignedDuration;
use nftables::expr::{Elem, Expression, NamedExpression};
use nftables::schema::{Element, NfCmd, NfListObject, NfObject, Nftables};
use nftables::types::NfFamily;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::ruleset::timeout_secs;
use super::{Firewall, FirewallError, Ruleset, SET, TABLE};
use crate::clients::MacAddr;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `nft` and `conntrack`, found on `PATH` unless told otherwise.
#[derive(Debug, Clone)]
pub struct NftFirewall {
    nft: PathBuf,
    conntrack: PathBuf,
}

impl Default for NftFirewall {
    fn default() -> Self {
        Self {
            nft: "nft".into(),
            conntrack: "conntrack".into(),
        }
    }
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl NftFirewall {
    /// Uses the given programs (tests point these at missing paths).
    pub fn with_programs(nft: PathBuf, conntrack: PathBuf) -> Self {
        Self { nft, conntrack }
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
            std::io::ErrorKind::NotFound if program == &self.conntrack => FirewallError::ConntrackMissing,
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

    /// Checks that nft and conntrack are installed and that we may use netfilter.
    ///
    /// # Errors
    /// `NftMissing`, `ConntrackMissing`, `NotPermitted` or a failure naming the tool.
    pub async fn probe(&self) -> Result<(), FirewallError> {
        let out = self.nft("listing tables", &["list", "tables"], None).await?;
        if !out.ok {
            return Err(failed("listing tables", out));
        }
        self.run(&self.conntrack, "conntrack --version", &["--version"], None)
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

    /// The set's elements with the seconds each has left (`None`: no timeout, so not ours).
    async fn listed_elements(&self) -> Result<Vec<(MacAddr, Option<u32>)>, FirewallError> {
        const WHAT: &str = "listing set allowed";
        let out = self.nft(WHAT, &["-j", "list", "set", "inet", TABLE, SET], None).await?;
        if !out.ok {
            return Err(failed(WHAT, out));
        }
        let doc: Nftables<'_> = serde_json::from_str(&out.stdout).map_err(|e| FirewallError::Unparsable {
            what: WHAT,
            detail: e.to_string(),
        })?;
        let unparsable = |detail: String| FirewallError::Unparsable { what: WHAT, detail };
        let mut listed = Vec::new();
        for obj in doc.objects.iter() {
            let NfObject::ListObject(NfListObject::Set(set)) = obj else {
                continue;
            };
            for e in set.elem.iter().flat_map(|v| v.iter()) {
                let (text, expires) = match e {
                    Expression::String(s) => (s, None),
                    Expression::Named(NamedExpression::Elem(Elem { val, expires, .. })) => match val.as_ref() {
                        Expression::String(s) => (s, *expires),
                        other => return Err(unparsable(format!("{other:?}"))),
                    },
                    other => return Err(unparsable(format!("{other:?}"))),
                };
                let mac = text
                    .parse()
                    .map_err(|e: crate::clients::MacParseError| unparsable(e.to_string()))?;
                listed.push((mac, expires));
            }
        }
        Ok(listed)
    }

    async fn nft(&self, what: &'static str, args: &[&str], stdin: Option<&str>) -> Result<Output, FirewallError> {
        self.run(&self.nft, what, args, stdin).await
    }

    async fn nft_json(&self, what: &'static str, cmds: Vec<NfCmd<'_>>) -> Result<Output, FirewallError> {
        let doc = Nftables {
            objects: Cow::Owned(cmds.into_iter().map(NfObject::CmdObject).collect()),
        };
        let json = serde_json::to_string(&doc).map_err(|e| FirewallError::Unparsable {
            what,
            detail: e.to_string(),
        })?;
        self.nft(what, &["-j", "-f", "-"], Some(&json)).await
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

fn element(mac: MacAddr, timeout: Option<u32>) -> NfListObject<'static> {
    let val = Expression::String(Cow::Owned(mac.to_string()));
    let elem = match timeout {
        None => val,
        Some(t) => Expression::Named(NamedExpression::Elem(Elem {
            val: Box::new(val),
            timeout: Some(t),
            expires: None,
            comment: None,
            counter: None,
        })),
    };
    NfListObject::Element(Element {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(SET),
        elem: Cow::Owned(vec![elem]),
    })
}

fn missing(stderr: &str) -> bool {
    stderr.contains("No such file or directory")
}

impl Firewall for NftFirewall {
    async fn replace(&self, ruleset: &Ruleset) -> Result<(), FirewallError> {
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
        Ok(self.listed_elements().await?.into_iter().map(|(mac, _)| mac).collect())
    }

    async fn timeouts(&self) -> Result<Vec<(MacAddr, SignedDuration)>, FirewallError> {
        Ok(self
            .listed_elements()
            .await?
            .into_iter()
            .filter_map(|(mac, expires)| Some((mac, SignedDuration::from_secs(i64::from(expires?)))))
            .collect())
    }

    async fn allow(&self, mac: MacAddr, left: SignedDuration) -> Result<(), FirewallError> {
        const WHAT: &str = "adding to set allowed";
        let t = Some(timeout_secs(left));
        // `create` fails if the element exists. Re-adding does not refresh the timeout on every
        // kernel, so an existing element is replaced by delete + add in one transaction.
        let out = self.nft_json(WHAT, vec![NfCmd::Create(element(mac, t))]).await?;
        if out.ok {
            return Ok(());
        }
        if !out.stderr.contains("File exists") {
            return Err(failed(WHAT, out));
        }
        let out = self
            .nft_json(
                WHAT,
                vec![NfCmd::Delete(element(mac, None)), NfCmd::Add(element(mac, t))],
            )
            .await?;
        if out.ok { Ok(()) } else { Err(failed(WHAT, out)) }
    }

    async fn deny(&self, mac: MacAddr) -> Result<(), FirewallError> {
        const WHAT: &str = "deleting from set allowed";
        let out = self.nft_json(WHAT, vec![NfCmd::Delete(element(mac, None))]).await?;
        // Deleting an absent element fails with ENOENT (nft 1.0.6 has no `destroy`): that is
        // the state we wanted.
        if out.ok || missing(&out.stderr) {
            Ok(())
        } else {
            Err(failed(WHAT, out))
        }
    }

    async fn forget_connections(&self, ip: IpAddr) -> Result<(), FirewallError> {
        const WHAT: &str = "conntrack -D";
        let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        let ip = ip.to_string();
        let out = self
            .run(&self.conntrack, WHAT, &["-D", "-f", family, "--orig-src", &ip], None)
            .await?;
        // conntrack exits 1 when there was nothing to delete; it says so on stderr.
        if out.ok || out.stderr.contains("0 flow entries") {
            Ok(())
        } else {
            Err(failed(WHAT, out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn element_json_is_what_nft_expects() {
        let doc = Nftables {
            objects: Cow::Owned(vec![NfObject::CmdObject(NfCmd::Create(element(
                "02:00:00:00:00:01".parse().unwrap(),
                Some(60),
            )))]),
        };
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"nftables": [{"create": {"element": {"family": "inet", "table": "aupgate", "name": "allowed",
                "elem": [{"elem": {"val": "02:00:00:00:00:01", "timeout": 60, "expires": null, "comment": null, "counter": null}}]}}}]})
        );
    }

    #[tokio::test]
    async fn missing_programs_are_named() {
        let fw = NftFirewall::with_programs("/nonexistent/nft".into(), "/nonexistent/conntrack".into());
        assert!(matches!(fw.fingerprint().await, Err(FirewallError::NftMissing)));
        assert!(matches!(
            fw.forget_connections("192.0.2.1".parse().unwrap()).await,
            Err(FirewallError::ConntrackMissing)
        ));
        assert!(
            FirewallError::NftMissing
                .to_string()
                .contains("apt-get install nftables")
        );
    }
}
