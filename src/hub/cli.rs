//! `aupgate hub …`, against the hub's config (`--config`, default /etc/aupgate/hub.toml):
//! `sites` and `verify`, read from the hub's PostgreSQL database. The service itself is not
//! built yet (issue 15).

use std::path::Path;

use anyhow::Context as _;
use clap::Subcommand;
use jiff::Timestamp;

use super::settings::HubSettings;
use super::store::HubStore;
use crate::cli::{AuditAltered, print_json, table};

/// `aupgate hub …`
#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Each site: its last event, how far behind it is, and whether its chain is intact.
    Sites,
    /// Check each site's hash chain as the hub holds it; the first break is named (exit 1).
    Verify {
        /// Only this site.
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
    },
}

/// "3 h", "2 d": how long ago `then` was, as staff read a lag.
fn ago(now: Timestamp, then: Timestamp) -> String {
    let s = now.duration_since(then).as_secs().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// Runs `cmd` with the hub's config at `path`; `now` is for the lag.
///
/// # Errors
/// The config or the database fails; `AuditAltered` when a chain is broken.
pub fn run(path: &Path, json: bool, cmd: HubCommand, now: Timestamp) -> anyhow::Result<()> {
    let settings = HubSettings::load(path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let store = HubStore::new(&settings.database, 1)?;
        match cmd {
            HubCommand::Sites => sites(&store, json, now).await,
            HubCommand::Verify { site } => verify(&store, json, site.as_deref()).await,
        }
    })
}

async fn sites(store: &HubStore, json: bool, now: Timestamp) -> anyhow::Result<()> {
    let sites = store.sites().await?;
    if json {
        let list: Vec<serde_json::Value> = sites
            .iter()
            .map(|s| {
                serde_json::json!({
                    "site": s.name, "last_event": s.head_seq, "last_event_at": s.head_at,
                    "last_contact": s.last_seen, "events": s.events, "intact": s.broken.is_none(),
                    "break": s.broken,
                })
            })
            .collect();
        return print_json(&list);
    }
    let rows = sites
        .iter()
        .map(|s| {
            let at = s
                .head_at
                .map_or_else(|| "-".to_owned(), |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string());
            vec![
                s.name.clone(),
                format!("#{} {at}", s.head_seq),
                s.head_at.map_or_else(|| "-".to_owned(), |t| ago(now, t)),
                ago(now, s.last_seen),
                s.events.to_string(),
                s.broken
                    .as_ref()
                    .map_or_else(|| "intact".to_owned(), |b| format!("BROKEN at {b}")),
            ]
        })
        .collect();
    table(&["SITE", "LAST EVENT", "LAG", "LAST CONTACT", "EVENTS", "CHAIN"], rows);
    Ok(())
}

async fn verify(store: &HubStore, json: bool, only: Option<&str>) -> anyhow::Result<()> {
    let mut names: Vec<String> = store.sites().await?.into_iter().map(|s| s.name).collect();
    if let Some(site) = only {
        if !names.iter().any(|n| n == site) {
            anyhow::bail!("no site {site:?} at the hub (fix: aupgate hub sites lists them)");
        }
        names = vec![site.to_owned()];
    }
    let mut broken = 0;
    let mut report = Vec::new();
    for name in names {
        match store.verify(&name).await? {
            Ok((events, head)) => {
                if !json {
                    println!("ok: site {name}, {events} events, head {}", head.hash);
                }
                report.push(serde_json::json!({"site": name, "ok": true, "events": events, "head": head.hash}));
            }
            Err(why) => {
                broken += 1;
                if !json {
                    println!("BROKEN: site {name}: {why}");
                }
                report.push(serde_json::json!({"site": name, "ok": false, "break": why}));
            }
        }
    }
    if json {
        print_json(&report)?;
    }
    if broken > 0 {
        return Err(AuditAltered.into());
    }
    Ok(())
}
