//! The fuzzer, on stable Rust: `cargo run --release --example fuzz -- --cases 1000000
//! [--target NAME] [--seed N] [--corpus DIR]`. Runs each target (or the one named) for that many
//! cases, prints its cases, panics, property failures and cases/s, and exits 1 if any case
//! panicked or broke a property. The engine is `driver.rs`; what is fuzzed is `targets/`; the
//! seeds and saved crashes are `corpus/<target>/`. `tests/fuzz_short.rs` is the CI run.

mod driver;
mod targets;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: fuzz [--cases N] [--target form|accept|config|host|csv] [--seed N] [--corpus DIR]";

fn main() -> ExitCode {
    let (opts, only) = match parse_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("fuzz: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let mut targets = targets::all();
    if let Some(name) = &only {
        targets.retain(|t| t.name() == name);
        if targets.is_empty() {
            eprintln!("fuzz: no target {name:?}\n{USAGE}");
            return ExitCode::from(64);
        }
    }
    println!(
        "fuzz: {} cases per target, seed {}, corpus {}",
        opts.cases,
        opts.seed,
        opts.corpus.display()
    );
    let mut ok = true;
    for target in &mut targets {
        let report = driver::run(target.as_mut(), &opts);
        println!("{report}");
        ok &= report.ok();
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(driver::Options, Option<String>), String> {
    let mut opts = driver::Options {
        cases: 100_000,
        seed: 1,
        corpus: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"),
    };
    let mut only = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--cases" => opts.cases = value()?.parse().map_err(|e| format!("--cases: {e}"))?,
            "--seed" => opts.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--target" => only = Some(value()?),
            "--corpus" => opts.corpus = PathBuf::from(value()?),
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((opts, only))
}
