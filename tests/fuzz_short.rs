//! The fuzzer's short run, for CI: 4,000 cases per target (20,000 in all) with a fixed seed,
//! through the same driver and targets as `cargo run --example fuzz`, so a saved crash in
//! `fuzz/corpus/` fails here until it is fixed. About a second per target in a debug build.

#[path = "../fuzz/driver.rs"]
mod driver;
#[path = "../fuzz/targets/mod.rs"]
mod targets;

use std::path::PathBuf;

const CASES: u64 = 4_000;
const SEED: u64 = 20_261_123;

fn short(name: &str) {
    let mut target = targets::all()
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    let opts = driver::Options {
        cases: CASES,
        seed: SEED,
        corpus: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"),
    };
    let report = driver::run(target.as_mut(), &opts);
    println!("{report}");
    assert!(report.ok(), "{report}");
}

#[test]
fn fuzz_form() {
    short("form");
}

#[test]
fn fuzz_accept() {
    short("accept");
}

#[test]
fn fuzz_config() {
    short("config");
}

#[test]
fn fuzz_host() {
    short("host");
}

#[test]
fn fuzz_csv() {
    short("csv");
}
