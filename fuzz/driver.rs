//! The fuzzing engine, shared by the `fuzz` example and `tests/fuzz_short.rs`: a seeded
//! mutation engine over a corpus folder, one `catch_unwind` per case, and the per-target report.
//! It knows nothing about aupgate; what to call and which properties hold is in `targets/`.
//! No coverage feedback (that needs nightly): an input joins the corpus when the target files it
//! under an outcome class it had not produced before.

use std::collections::HashSet;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

/// One fuzzed function and the properties it must keep.
pub(crate) trait Target {
    /// The name on the command line and of the corpus folder.
    fn name(&self) -> &'static str;
    /// Tokens the mutator splices in, on top of [`COMMON_TOKENS`].
    fn tokens(&self) -> &'static [&'static str];
    /// Runs one case. `Ok` carries an outcome class (inputs with a new class join the corpus);
    /// `Err` is a broken property, described for the report.
    fn check(&mut self, input: &[u8]) -> Result<u64, String>;
}

/// Tokens every target gets: the separators and escapes of the formats under test, unicode
/// that is awkward for byte-oriented code, and invalid UTF-8.
const COMMON_TOKENS: &[&str] = &[
    "%", "&", "=", "+", ";q=", "*/*", "[", "]", "\"", "\\", ",", ";", ":", "'", ".", "/", "-", "@", "\t", "\r", "\n",
    "\r\n", " ", "%00", "%FF", "%C3%AB", "%zz", "%2", "0", "1", "9", "é", "ë", "\u{FEFF}", "\u{202E}", "\u{1F}",
    "\u{0}", "𝔘", "\u{FFFD}", "\u{FF1D}",
];

/// Raw bytes that are not UTF-8 on their own.
const BAD_UTF8: &[&[u8]] = &[b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf"];

/// Largest input the mutator builds (a little over the portal's 16 KiB body limit).
const MAX_LEN: usize = 20 * 1024;

/// How a run is set up.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Cases per target, the corpus replay included.
    pub(crate) cases: u64,
    /// Seed of the mutation engine; the same seed gives the same cases.
    pub(crate) seed: u64,
    /// Holds one folder per target: the seeds, and the crash files this run writes.
    pub(crate) corpus: PathBuf,
}

/// What one target's run saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// The target's name.
    pub(crate) target: &'static str,
    /// Cases run.
    pub(crate) cases: u64,
    /// Cases that panicked.
    pub(crate) panics: u64,
    /// Cases that broke a property without panicking.
    pub(crate) failures: u64,
    /// Wall time of the run.
    pub(crate) elapsed: Duration,
    /// Inputs in the corpus at the end (seeds plus those with a new outcome class).
    pub(crate) corpus: usize,
    /// The first panic or broken property, with its input escaped, and where it was saved.
    pub(crate) first: Option<String>,
}

impl Report {
    /// No panic and no broken property.
    pub(crate) fn ok(&self) -> bool {
        self.panics == 0 && self.failures == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{:<7} cases {:>9}  panics {}  property failures {}  {:>8.1} s  {:>9.0} cases/s  corpus {}",
            self.target,
            self.cases,
            self.panics,
            self.failures,
            secs,
            self.cases as f64 / secs.max(1e-9),
            self.corpus,
        )?;
        if let Some(first) = &self.first {
            write!(f, "\n  first: {first}")?;
        }
        Ok(())
    }
}

/// Runs `target` for `opts.cases` cases: first every file of its corpus folder as it is (so a
/// saved crash stays a regression test), then mutants of the corpus.
pub(crate) fn run(target: &mut dyn Target, opts: &Options) -> Report {
    install_quiet_panic_hook();
    let name = target.name();
    let dir = opts.corpus.join(name);
    let mut corpus = load_corpus(&dir);
    let seeds = corpus.len();
    let mut tokens: Vec<&[u8]> = COMMON_TOKENS.iter().map(|t| t.as_bytes()).collect();
    tokens.extend(target.tokens().iter().map(|t| t.as_bytes()));
    tokens.extend_from_slice(BAD_UTF8);
    let mut rng = Rng::new(opts.seed ^ fnv1a(name.as_bytes()));
    let mut classes = HashSet::new();
    let mut report = Report {
        target: name,
        ..Report::default()
    };
    let started = Instant::now();
    for case in 0..opts.cases {
        let input = match usize::try_from(case).ok().filter(|&i| i < seeds) {
            Some(i) => corpus[i].clone(),
            None => mutate(&mut rng, &corpus, &tokens),
        };
        let failed = match run_one(target, &input) {
            Outcome::Passed(class) => {
                if classes.insert(class) && case >= seeds as u64 && corpus.len() < 4096 {
                    corpus.push(input);
                }
                continue;
            }
            Outcome::Panicked(msg) => {
                report.panics += 1;
                format!("panic: {msg}")
            }
            Outcome::Broke(msg) => {
                report.failures += 1;
                format!("property: {msg}")
            }
        };
        if report.first.is_none() {
            let saved = save_crash(&dir, &input);
            report.first = Some(format!("{failed}\n  input: b\"{}\"\n  saved: {saved}", escape(&input)));
        }
    }
    report.cases = opts.cases;
    report.elapsed = started.elapsed();
    report.corpus = corpus.len();
    report
}

enum Outcome {
    Passed(u64),
    Panicked(String),
    Broke(String),
}

fn run_one(target: &mut dyn Target, input: &[u8]) -> Outcome {
    IN_CASE.with(|c| c.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| target.check(input)));
    IN_CASE.with(|c| c.set(false));
    match result {
        Ok(Ok(class)) => Outcome::Passed(class),
        Ok(Err(msg)) => Outcome::Broke(msg),
        Err(payload) => Outcome::Panicked(LAST_PANIC.with(|p| p.take()).unwrap_or_else(|| panic_text(&*payload))),
    }
}

thread_local! {
    static IN_CASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Panics inside a case are counted, not printed a million times: the hook keeps the message
/// and where it happened for the report. Panics anywhere else (a failing test) print as usual.
fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(std::cell::Cell::get) {
                let at = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
                let msg = format!("{}{at}", panic_text(info.payload()));
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
            } else {
                default(info);
            }
        }));
    });
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".to_owned())
}

/// Every file in `dir`, in name order so a seed gives the same run on every machine; an empty
/// input if there are none.
fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    let mut corpus: Vec<Vec<u8>> = paths.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    corpus
}

/// Writes `input` to `dir/crash-<hash>`, to be committed once fixed (it is then replayed first
/// on every run). Returns the path, or why it could not be written.
fn save_crash(dir: &Path, input: &[u8]) -> String {
    let path = dir.join(format!("crash-{:016x}", fnv1a(input)));
    match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, input)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("not saved ({}: {e})", path.display()),
    }
}

/// Bytes as a Rust byte-string body: printable ASCII as is, everything else `\xNN`.
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(2048) {
        out.extend(std::ascii::escape_default(b).map(char::from));
    }
    if bytes.len() > 2048 {
        out.push_str(&format!("... ({} bytes in all)", bytes.len()));
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// SplitMix64: small, fast and fully determined by its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the bias is negligible for the sizes used here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// A corpus entry with one to five mutations stacked on it.
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..=rng.below(5) {
        mutate_once(rng, &mut data, corpus, tokens);
    }
    data.truncate(MAX_LEN);
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], tokens: &[&[u8]]) {
    let len = data.len();
    let at = rng.below(len + 1);
    match rng.below(12) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // Overwrite a byte with anything.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.next() as u8;
        }
        // Insert a random byte, mostly printable ASCII.
        2 => {
            let b = if rng.chance(4) {
                rng.next() as u8
            } else {
                0x20 + rng.below(0x5f) as u8
            };
            data.insert(at, b);
        }
        // Delete a range.
        3 if len > 0 => {
            let start = at.min(len - 1);
            let n = 1 + rng.below((len - start).min(16));
            data.drain(start..start + n);
        }
        // Insert a token.
        4 | 5 => {
            let t = tokens[rng.below(tokens.len())];
            data.splice(at..at, t.iter().copied());
        }
        // Overwrite with a token.
        6 if len > 0 => {
            let t = tokens[rng.below(tokens.len())];
            let end = (at + t.len()).min(len);
            data.splice(at..end, t.iter().copied());
        }
        // Splice: this entry's head with another's tail.
        7 => {
            let other = &corpus[rng.below(corpus.len())];
            let from = rng.below(other.len() + 1);
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        // Insert a piece of another entry.
        8 => {
            let other = &corpus[rng.below(corpus.len())];
            let from = rng.below(other.len() + 1);
            let n = rng.below(other.len() - from + 1);
            data.splice(at..at, other[from..from + n].iter().copied());
        }
        // A very long run of one byte or token.
        9 if rng.chance(3) => {
            let unit: Vec<u8> = if rng.chance(2) {
                vec![if rng.chance(2) {
                    rng.next() as u8
                } else {
                    b"a=%;,[:.\"'-"[rng.below(11)]
                }]
            } else {
                tokens[rng.below(tokens.len())].to_vec()
            };
            // Up to the whole length, but mostly far shorter: each halving of the cap is as likely.
            let cap = (MAX_LEN / unit.len().max(1)) >> rng.below(12);
            let times = 1 + rng.below(1 + cap);
            let run: Vec<u8> = unit.iter().copied().cycle().take(unit.len() * times).collect();
            data.splice(at..at, run);
        }
        9 => {
            let t = tokens[rng.below(tokens.len())];
            data.splice(at..at, t.iter().copied());
        }
        // Duplicate a range in place.
        10 if len > 0 => {
            let start = at.min(len - 1);
            let n = 1 + rng.below((len - start).min(64));
            let piece: Vec<u8> = data[start..start + n].to_vec();
            data.splice(start..start, piece);
        }
        // Change the case of an ASCII stretch, or nudge a digit.
        11 if len > 0 => {
            let start = at.min(len - 1);
            for b in data.iter_mut().skip(start).take(1 + rng.below(16)) {
                if b.is_ascii_digit() && rng.chance(2) {
                    *b = b'0' + (*b - b'0' + 1 + rng.below(9) as u8) % 10;
                } else if b.is_ascii_alphabetic() {
                    *b ^= 0x20;
                }
            }
        }
        // Truncate.
        _ => data.truncate(at),
    }
}
