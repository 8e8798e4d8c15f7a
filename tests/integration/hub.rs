//! Issue 15, part 1: the trust hub's store on a real PostgreSQL (tests/integration/postgres.rs),
//! fed with the events of real school stores (SQLite files): migrations once, intake in order
//! and exactly once, each site's chain as sent, and its first break named, on arrival and by
//! verify after an edit made with psql.

use aupgate::hub::store::{HubStore, LATEST};
use aupgate::store::{Role, Store};
use jiff::Timestamp;

use crate::harness::run_cli;
use crate::postgres::Postgres;

/// `aupgate --config HUB_TOML hub ARGS`: (success, stdout, stderr).
fn hub_cli(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    run_cli(config, &[&["hub"], args].concat())
}

/// The hub's config, with the test's database (the TLS files are not read by these commands).
fn hub_config(dir: &std::path::Path, conninfo: &str) -> std::path::PathBuf {
    let path = dir.join("hub.toml");
    std::fs::write(
        &path,
        format!(
            "[hub]\nlisten = \"127.0.0.1:8743\"\ndatabase = \"{conninfo}\"\ntls_cert = \"/etc/aupgate/hub.pem\"\ntls_key = \"/etc/aupgate/hub.key\"\nclient_ca = \"/etc/aupgate/sites-ca.pem\"\nretention_days = 365\n"
        ),
    )
    .unwrap();
    path
}

/// A school's store with `n` events on its chain (staff accounts added and removed).
fn school(dir: &std::path::Path, n: usize) -> Store {
    let store = Store::open(&dir.join("aupgate.db")).unwrap();
    let now: Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
    for i in 0..n {
        if i % 2 == 0 {
            store.add_admin(&format!("staff{i}"), Role::Staff, "hash", now).unwrap();
        } else {
            assert!(store.remove_admin(&format!("staff{}", i - 1), now).unwrap());
        }
    }
    store
}

/// Ships `store`'s events after `after` to the hub in batches of `batch`; returns the head.
async fn ship(hub: &HubStore, site: &str, store: &Store, mut after: i64, batch: usize) -> i64 {
    let now = Timestamp::now();
    loop {
        let events = store.events_after(after, batch).unwrap();
        if events.is_empty() {
            return after;
        }
        let took = hub.ingest(site, &events, now).await.unwrap();
        assert_eq!(took.broken, None, "{site}");
        after = took.head;
    }
}

#[test]
fn the_hub_keeps_each_sites_chain_as_sent_exactly_once_and_names_its_first_break() {
    let Some(pg) = Postgres::start() else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hub = HubStore::new(&pg.conninfo, 4).unwrap();
        assert_eq!(hub.version().await.unwrap(), 0);
        assert_eq!(hub.migrate().await.unwrap(), 0, "a new database");
        assert_eq!(hub.migrate().await.unwrap(), LATEST, "migrated once");
        assert_eq!(hub.version().await.unwrap(), LATEST);

        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (school(dir_a.path(), 40), school(dir_b.path(), 10));
        let head_a = ship(&hub, "claremont", &a, 0, 15).await;
        let head_b = ship(&hub, "hillside", &b, 0, 100).await;

        // A resend (the school did not hear the acknowledgement) changes nothing.
        let again = hub
            .ingest("claremont", &a.events_after(0, 15).unwrap(), Timestamp::now())
            .await
            .unwrap();
        assert_eq!((again.taken, again.resent, again.head), (0, 15, head_a));
        let (_, count, err) = pg.psql("SELECT count(*) FROM events WHERE site = 'claremont'");
        assert_eq!(count.trim(), "40", "{err}");

        let sites = hub.sites().await.unwrap();
        let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["claremont", "hillside"]);
        assert_eq!((sites[0].head_seq, sites[0].events), (head_a, 40));
        assert_eq!((sites[1].head_seq, sites[1].events), (head_b, 10));
        assert_eq!(sites[0].head_hash, a.chain_head().unwrap(), "the school's own head");
        assert!(sites.iter().all(|s| s.broken.is_none()));
        let (n, head) = hub.verify("claremont").await.unwrap().unwrap();
        assert_eq!((n, head.hash), (40, a.chain_head().unwrap()));

        // The same through the CLI, against the hub's config.
        let conf_dir = tempfile::tempdir().unwrap();
        let conf = hub_config(conf_dir.path(), &pg.conninfo);
        let (ok, out, err) = hub_cli(&conf, &["verify"]);
        assert!(ok, "{out}{err}");
        assert_eq!(
            out,
            format!(
                "ok: site claremont, 40 events, head {}\nok: site hillside, 10 events, head {}\n",
                a.chain_head().unwrap(),
                b.chain_head().unwrap()
            )
        );
        let (ok, out, err) = hub_cli(&conf, &["sites"]);
        assert!(ok, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("SITE") && lines[0].contains("LAG"), "{out}");
        assert!(
            lines[1].starts_with("claremont") && lines[1].contains(&format!("#{head_a} 2026-12-01 09:00 UTC")),
            "{out}"
        );
        // The last two columns: events, chain.
        let tail = |l: &str| l.split_whitespace().rev().take(2).collect::<Vec<&str>>().join(" ");
        assert_eq!(
            (tail(lines[1]), tail(lines[2])),
            ("intact 40".into(), "intact 10".into()),
            "{out}"
        );
        let (ok, _, err) = hub_cli(&conf, &["verify", "--site", "nowhere"]);
        assert!(
            !ok && err.contains("no site \"nowhere\" at the hub") && err.contains("fix:"),
            "{err}"
        );

        // An edit made at the hub with psql is found by verify, at the event edited.
        let (ok, _, err) = pg
            .psql("UPDATE events SET detail = replace(detail, 'staff', 'admin') WHERE site = 'claremont' AND seq = 7");
        assert!(ok, "{err}");
        let broken = hub.verify("claremont").await.unwrap().unwrap_err();
        assert!(broken.starts_with("event 7: its hash does not match"), "{broken}");
        assert!(
            hub.verify("hillside").await.unwrap().is_ok(),
            "other sites are not touched"
        );
        let (ok, out, _) = hub_cli(&conf, &["verify"]);
        assert!(!ok, "a break is exit 1");
        assert!(
            out.contains("BROKEN: site claremont: event 7: its hash does not match"),
            "{out}"
        );
        let (ok, out, _) = hub_cli(&conf, &["verify", "--site", "hillside"]);
        assert!(ok && out.starts_with("ok: site hillside, 10 events"), "{out}");
        let (_, json, _) = hub_cli(&conf, &["verify", "--json"]);
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(report[0]["ok"], false);
        assert_eq!(report[1]["ok"], true);

        // A site whose events arrive with one missing: kept as sent, and the break recorded
        // once, at the first event that does not follow.
        let dir_c = tempfile::tempdir().unwrap();
        let c = school(dir_c.path(), 12);
        let mut events = c.events_after(0, 100).unwrap();
        events.remove(4);
        let took = hub.ingest("oakfield", &events, Timestamp::now()).await.unwrap();
        assert_eq!(took.taken, 11);
        let why = took.broken.expect("a break");
        assert!(why.starts_with("event 6: it does not follow event 4"), "{why}");
        // Sent again with other content: still the first break that is kept.
        let mut changed = c.events_after(0, 2).unwrap();
        changed[1].detail.push(' ');
        let later = hub.ingest("oakfield", &changed, Timestamp::now()).await.unwrap();
        assert_eq!(later.broken.as_deref(), Some(why.as_str()));
        let oak = hub
            .sites()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.name == "oakfield")
            .unwrap();
        assert_eq!(oak.broken.as_deref(), Some(why.as_str()));
        assert!(
            hub.verify("oakfield")
                .await
                .unwrap()
                .unwrap_err()
                .starts_with("event 6:")
        );
        let (_, out, _) = hub_cli(&conf, &["sites"]);
        let oak = out.lines().find(|l| l.starts_with("oakfield")).unwrap();
        assert!(oak.contains("BROKEN at event 6: it does not follow event 4"), "{out}");

        // The same event twice in one batch, after the head: kept once.
        let dir_d = tempfile::tempdir().unwrap();
        let d = school(dir_d.path(), 3);
        let mut twice = d.events_after(0, 10).unwrap();
        twice.insert(1, twice[0].clone());
        let took = hub.ingest("dup", &twice, Timestamp::now()).await.unwrap();
        assert_eq!((took.taken, took.resent, took.broken), (3, 1, None));
    });
}
