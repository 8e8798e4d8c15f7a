//! The trust hub's intake, measured at its store (issue 15; BENCHMARKS.md): SITES sites' chains
//! of EVENTS events each, made in memory with the school's own hash and consent-sized details,
//! sent in batches of BATCH, PARALLEL sites at a time, to the PostgreSQL that bench/hub started.
//! Prints events per second, each site's verify, and this process's peak RSS. Asserts nothing.
//!   hub_ingest CONNINFO SITES EVENTS BATCH PARALLEL

// A benchmark reads the wall clock for its figures and its events' arrival times.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Instant;

use aupgate::hub::chain::Event;
use aupgate::hub::store::HubStore;
use aupgate::store::{GENESIS, event_hash};

fn chain(site: usize, n: usize) -> Vec<Event> {
    let mut prev = GENESIS.to_owned();
    (1..=n)
        .map(|i| {
            let at = format!("2026-11-{:02}T{:02}:{:02}:{:02}.000000Z", 1 + i % 28, i % 24, i % 60, (i / 60) % 60);
            let kind = "consent".to_owned();
            let detail = format!(
                r#"{{"accepted_at":"{at}","consent":{i},"course":{},"expires_at":"{at}","personal":"{:064x}","policy":"{:064x}"}}"#,
                1 + i / 500,
                (site as u128) << 64 | i as u128,
                site
            );
            let hash = event_hash(&prev, &at, &kind, &detail);
            Event {
                seq: i as i64,
                at,
                kind,
                detail,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            }
        })
        .collect()
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [conninfo, sites, events, batch, parallel] = args.as_slice() else {
        eprintln!("usage: hub_ingest CONNINFO SITES EVENTS BATCH PARALLEL");
        std::process::exit(64);
    };
    let num = |s: &str| s.parse::<usize>().expect("a number");
    let (sites, events, batch, parallel) = (num(sites), num(events), num(batch), num(parallel));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let hub = Arc::new(HubStore::new(conninfo, parallel).expect("conninfo"));
        hub.migrate().await.expect("migrate");
        let made = Instant::now();
        let one = chain(0, events);
        println!(
            "one site's {events} events made in {:.2} s; each task makes its site's as it goes (sites x events are never all in memory)",
            made.elapsed().as_secs_f64()
        );
        drop(one);
        let before = peak_rss_mb();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..parallel {
            let (hub, next) = (hub.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let s = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if s >= sites {
                        return;
                    }
                    let events = chain(s, events);
                    for part in events.chunks(batch) {
                        let took = hub
                            .ingest(&format!("site{s:02}"), part, jiff::Timestamp::now())
                            .await
                            .expect("ingest");
                        assert!(took.broken.is_none());
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let secs = started.elapsed().as_secs_f64();
        let after_intake = peak_rss_mb();
        let total = sites * events;
        println!(
            "ingested {total} events ({sites} sites x {events}, batches of {batch}, {parallel} sites at a time) in {secs:.1} s: {:.0} events/s",
            total as f64 / secs
        );
        let verified = Instant::now();
        let mut ok = 0;
        for s in 0..sites {
            if hub.verify(&format!("site{s:02}")).await.expect("verify").is_ok() {
                ok += 1;
            }
        }
        println!(
            "verify: {ok} of {sites} sites ok in {:.1} s ({:.0} events/s)",
            verified.elapsed().as_secs_f64(),
            total as f64 / verified.elapsed().as_secs_f64()
        );
        println!(
            "peak RSS of this process: {before:.1} MB before the intake, {after_intake:.1} MB after it (the store's side of a hub, and {parallel} sites' events in memory), {:.1} MB after verify",
            peak_rss_mb()
        );
    });
}
