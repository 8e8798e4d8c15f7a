//! What staff can do, once, for every surface: the control socket (CLI) and the web UI both call
//! these. Each validates its input, writes the store first and then brings the firewall in line,
//! and names the acting account in the event it records.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher as _};
use jiff::Timestamp;

use crate::access::gatekeeper::FirewallHandle;
use crate::clients::{AccessCode, Course, MacAddr};
use crate::clock::Clock;
use crate::store::{Role, Store, StoreError};

/// What the actions need; cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The store.
    pub store: Store,
    /// The firewall writer.
    pub firewall: FirewallHandle,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// How long personal data is kept after a session ends (`[audit] retention_days`).
    pub retention: jiff::SignedDuration,
}

/// Why a staff action did not happen. Once the store has recorded an action it has happened:
/// bringing the kernel in line after that is the gatekeeper's, which retries every second, so a
/// failure there is logged, not returned as if nothing had been done. The texts (`Display`) are
/// for the CLI and the journal; the web UI says each in the words of `admin/words.txt`, by
/// `Problem::as_str` and `Missing::as_str`.
#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    /// What was asked is not acceptable.
    #[error("{0}")]
    Invalid(Problem),
    /// The course, device, exception or account named does not exist (or is over).
    #[error("{0}")]
    NotFound(Missing),
    /// An account of that name exists already.
    #[error("an account named {0:?} exists already")]
    Exists(String),
    /// The store failed; nothing was changed.
    #[error("{what}: {source}")]
    Store {
        /// What was being done.
        what: &'static str,
        /// The store's error.
        source: StoreError,
    },
    /// Hashing a new password failed; nothing was changed.
    #[error("hashing the password failed: {0}")]
    Hashing(String),
}

/// What is wrong with what staff asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A course title that is empty, over 200 characters or holds control characters.
    #[error("the title must be 1 to 200 printable characters")]
    Title,
    /// A course that would end before it starts.
    #[error("the end must be after the start")]
    EndBeforeStart,
    /// A course that would end in the past.
    #[error("the end is in the past: a course must end in the future")]
    CourseEndPast,
    /// A device limit outside 1 to 10000.
    #[error("the device limit must be between 1 and 10000")]
    DeviceLimit,
    /// A multicast (or broadcast) address given as a device's.
    #[error("{0} is not a device address")]
    NotDevice(MacAddr),
    /// An exception's reason that is empty, over 200 characters or holds control characters.
    #[error("give a reason of 1 to 200 printable characters")]
    ExceptionReason,
    /// An exception that would end in the past.
    #[error("the end is in the past")]
    ExceptionEndPast,
    /// An exception of more than 31 days.
    #[error("an exception lasts at most 31 days; grant a new one after that")]
    ExceptionTooLong,
    /// An account name that is empty, too long or holds other characters.
    #[error("the account name must be 1 to 64 letters, digits or . - _ @")]
    AccountName,
    /// A password shorter than `MIN_PASSWORD`.
    #[error("the password must have at least {MIN_PASSWORD} characters")]
    PasswordShort,
    /// An erasure's reason that is empty, over 500 characters or holds control characters.
    #[error(
        "the reason must be 1 to 500 printable characters (say why, e.g. the request's reference, without personal data)"
    )]
    ErasureReason,
}

impl Problem {
    /// The problem's name in `admin/words.txt`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::EndBeforeStart => "end_before_start",
            Self::CourseEndPast => "course_end_past",
            Self::DeviceLimit => "device_limit",
            Self::NotDevice(_) => "not_device",
            Self::ExceptionReason => "exception_reason",
            Self::ExceptionEndPast => "exception_end_past",
            Self::ExceptionTooLong => "exception_too_long",
            Self::AccountName => "account_name",
            Self::PasswordShort => "password_short",
            Self::ErasureReason => "erasure_reason",
        }
    }
}

/// What staff named that is not there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// No course with this id.
    #[error("no course with id {0}")]
    Course(i64),
    /// No open exception with this id.
    #[error("no open exception {0}")]
    Exception(i64),
    /// No staff account of this name.
    #[error("no account named {0:?}")]
    Account(String),
    /// Nothing held about this device.
    #[error("nothing is held about {0}")]
    Device(MacAddr),
}

impl Missing {
    /// What is missing's name in `admin/words.txt`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Course(_) => "no_course",
            Self::Exception(_) => "no_exception",
            Self::Account(_) => "no_account",
            Self::Device(_) => "no_device",
        }
    }
}

impl StaffError {
    fn store(what: &'static str) -> impl FnOnce(StoreError) -> Self {
        move |source| Self::Store { what, source }
    }
}

/// A staff action's result.
pub type Outcome<T> = Result<T, StaffError>;

/// Brings the kernel in line with what the store now says for `macs`. The store has it already,
/// so a failure here is the gatekeeper's to retry (every second), not the action's.
async fn follow(st: &AdminState, macs: Vec<MacAddr>, done: &str) {
    if let Err(e) = st.firewall.sync(macs).await {
        tracing::error!(error = %e, "{done}, but bringing the firewall in line failed; the gatekeeper retries every second");
    }
}

/// A fresh random access code.
fn new_code() -> AccessCode {
    loop {
        let mut buf = [0u8; 32];
        // getrandom only fails if the kernel's RNG is unavailable; then retrying is all we can do.
        if getrandom::fill(&mut buf).is_ok()
            && let Some(code) = AccessCode::from_random(&buf)
        {
            return code;
        }
    }
}

/// Creates a course and issues its code.
///
/// # Errors
/// A bad title or times, or a store failure.
pub async fn add_course(
    st: &AdminState,
    title: &str,
    starts_at: Timestamp,
    ends_at: Timestamp,
    max_devices: u32,
    by: &str,
) -> Outcome<Course> {
    let now = st.clock.now();
    let title = title.trim().to_owned();
    if title.is_empty() || title.chars().count() > 200 || title.chars().any(char::is_control) {
        return Err(StaffError::Invalid(Problem::Title));
    }
    if ends_at <= starts_at {
        return Err(StaffError::Invalid(Problem::EndBeforeStart));
    }
    if ends_at <= now {
        return Err(StaffError::Invalid(Problem::CourseEndPast));
    }
    if !(1..=10_000).contains(&max_devices) {
        return Err(StaffError::Invalid(Problem::DeviceLimit));
    }
    let by = by.to_owned();
    let course = st
        .store
        .run(move |s| s.add_course(&title, starts_at, ends_at, max_devices, now, &by, new_code))
        .await
        .map_err(StaffError::store("could not add the course"))?;
    tracing::info!(course = course.id, title = %course.title, "course added");
    Ok(course)
}

/// Ends a course now and closes its devices; returns it and how many devices were closed.
///
/// # Errors
/// An unknown id, or a store or firewall failure.
pub async fn end_course(st: &AdminState, id: i64, by: &str) -> Outcome<(Course, usize)> {
    let now = st.clock.now();
    let by = by.to_owned();
    let (course, macs) = match st.store.run(move |s| s.end_course(id, now, &by)).await {
        Ok(r) => r,
        Err(StoreError::NotFound(_)) => return Err(StaffError::NotFound(Missing::Course(id))),
        Err(e) => return Err(StaffError::store("could not end the course")(e)),
    };
    let closed = macs.len();
    follow(st, macs, &format!("course {id} ended")).await;
    tracing::info!(course = id, devices = closed, "course ended");
    Ok((course, closed))
}

/// Closes a device now; returns how many open sessions it had.
///
/// # Errors
/// A store or firewall failure.
pub async fn revoke(st: &AdminState, mac: MacAddr, by: &str) -> Outcome<usize> {
    let now = st.clock.now();
    let who = by.to_owned();
    let ended = st
        .store
        .run(move |s| s.revoke(mac, now, &who))
        .await
        .map_err(StaffError::store("could not revoke the device"))?;
    follow(st, vec![mac], &format!("{mac} revoked")).await;
    tracing::info!(%mac, consents = ended, by, "device revoked");
    Ok(ended)
}

/// Closes every device with an open session on course `id`; returns how many.
///
/// # Errors
/// A store failure (devices revoked before it stay revoked).
pub async fn revoke_course(st: &AdminState, id: i64, by: &str) -> Outcome<usize> {
    let now = st.clock.now();
    let sessions = st
        .store
        .run(move |s| s.sessions(now))
        .await
        .map_err(StaffError::store("could not list the course's devices"))?;
    let mut macs: Vec<MacAddr> = sessions.iter().filter(|s| s.course_id == id).map(|s| s.mac).collect();
    macs.sort();
    macs.dedup();
    for mac in &macs {
        revoke(st, *mac, by).await?;
    }
    Ok(macs.len())
}

/// Lets `mac` through without the portal until `until`, for `reason`; returns the exception's id.
///
/// # Errors
/// A bad address, reason or time, or a store or firewall failure.
pub async fn grant_exception(st: &AdminState, mac: MacAddr, reason: &str, until: Timestamp, by: &str) -> Outcome<i64> {
    let now = st.clock.now();
    let reason = reason.trim().to_owned();
    if !mac.is_unicast() {
        return Err(StaffError::Invalid(Problem::NotDevice(mac)));
    }
    if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        return Err(StaffError::Invalid(Problem::ExceptionReason));
    }
    if until <= now {
        return Err(StaffError::Invalid(Problem::ExceptionEndPast));
    }
    if until > now + jiff::SignedDuration::from_hours(24 * 31) {
        return Err(StaffError::Invalid(Problem::ExceptionTooLong));
    }
    let who = by.to_owned();
    let id = st
        .store
        .run(move |s| s.grant_exception(mac, &reason, &who, now, until))
        .await
        .map_err(StaffError::store("could not record the exception"))?;
    follow(st, vec![mac], &format!("the exception for {mac} is recorded")).await;
    tracing::info!(%mac, exception = id, by, "exception granted");
    Ok(id)
}

/// Ends an exception now and closes its device unless something else still allows it.
///
/// # Errors
/// An unknown or ended exception, or a store or firewall failure.
pub async fn end_exception(st: &AdminState, id: i64, by: &str) -> Outcome<MacAddr> {
    let now = st.clock.now();
    let who = by.to_owned();
    let mac = match st.store.run(move |s| s.end_exception(id, now, &who)).await {
        Ok(mac) => mac,
        Err(StoreError::NotFound(_)) => return Err(StaffError::NotFound(Missing::Exception(id))),
        Err(e) => return Err(StaffError::store("could not end the exception")(e)),
    };
    follow(st, vec![mac], &format!("exception {id} ended")).await;
    tracing::info!(%mac, exception = id, by, "exception ended");
    Ok(mac)
}

/// The policy rule: when the policy text in force is `current`, which consents end now. With
/// `[policy] reaccept = "next-join"` none (they run until their course ends, and the device
/// accepts the new text next time); with `"immediately"` every open consent to another text,
/// so those devices must accept again. Returns the devices whose consents ended. Called at
/// start, before the table is built from the store, and after each reload.
///
/// # Errors
/// A store failure; nothing is ended then.
pub fn end_consents_to_old_policies(
    store: &Store,
    current: &str,
    reaccept: crate::config::Reaccept,
    now: Timestamp,
) -> Result<Vec<MacAddr>, StoreError> {
    if reaccept != crate::config::Reaccept::Immediately {
        return Ok(Vec::new());
    }
    let ended = store.end_consents_to_other_policies(current, now)?;
    if !ended.is_empty() {
        tracing::info!(devices = ended.len(), policy = %current.get(..12).unwrap_or(current), "policy changed: devices closed until they accept the new policy");
    }
    Ok(ended)
}

/// `end_consents_to_old_policies` for the running daemon: ends them, then closes the devices.
/// Not only when the text changed: if closing failed at an earlier reload, this retries it (it
/// ends nothing when every open consent names the current text).
pub async fn apply_policy_change(st: &AdminState, current: String, reaccept: crate::config::Reaccept) {
    let now = st.clock.now();
    match st
        .store
        .run(move |s| end_consents_to_old_policies(s, &current, reaccept, now))
        .await
    {
        Ok(macs) if !macs.is_empty() => follow(st, macs, "consents to the previous policy ended").await,
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot end consents given to the previous policy"),
    }
}

/// What an export of the consent log covered, for its record in the log.
#[derive(Debug, Clone)]
pub struct Export {
    /// Who asked: the staff account, or the Unix user who ran the CLI.
    pub by: String,
    /// First instant included.
    pub from: Timestamp,
    /// Last instant included.
    pub to: Timestamp,
    /// Only this course, if one was chosen.
    pub course: Option<i64>,
    /// Only this device, if one was chosen (kept beside the chain, erasable, not in the event).
    pub mac: Option<MacAddr>,
    /// The file's format.
    pub format: crate::audit::Format,
}

/// Records that `export` is about to be given with `rows` consents. The rule for every surface:
/// an export is recorded before it is given, and one that cannot be recorded is not given.
///
/// # Errors
/// A store failure; then the export must not be given.
pub fn record_export(store: &Store, export: &Export, rows: usize, now: Timestamp) -> Result<(), StoreError> {
    let detail = serde_json::json!({
        "by": export.by,
        "from": crate::store::ts(export.from),
        "to": crate::store::ts(export.to),
        "course": export.course,
        "format": export.format.as_str(),
        "rows": rows,
    });
    store.record_export(now, detail, export.mac)
}

/// Shortest password accepted for a staff account.
pub const MIN_PASSWORD: usize = 10;

/// Creates a staff account; the password is hashed with argon2id (about 30 ms, off the runtime).
///
/// # Errors
/// A bad name or password, an existing account, or a store failure.
pub async fn add_admin(st: &AdminState, name: &str, role: Role, password: String) -> Outcome<()> {
    let name = name.trim().to_owned();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'))
    {
        return Err(StaffError::Invalid(Problem::AccountName));
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(StaffError::Invalid(Problem::PasswordShort));
    }
    let hash = tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| StaffError::Hashing(e.to_string()))?
    .map_err(|e| StaffError::Hashing(e.to_string()))?;
    let now = st.clock.now();
    let who = name.clone();
    st.store
        .run(move |s| s.add_admin(&who, role, &hash, now))
        .await
        .map_err(|e| match e {
            StoreError::AdminExists(n) => StaffError::Exists(n),
            other => StaffError::store("could not add the account")(other),
        })?;
    tracing::info!(admin = %name, %role, "staff account added");
    Ok(())
}

/// Removes a staff account and signs it out everywhere.
///
/// # Errors
/// An unknown name, or a store failure.
pub async fn remove_admin(st: &AdminState, name: &str) -> Outcome<()> {
    let now = st.clock.now();
    let who = name.to_owned();
    match st.store.run(move |s| s.remove_admin(&who, now)).await {
        Ok(true) => {
            tracing::info!(admin = %name, "staff account removed");
            Ok(())
        }
        Ok(false) => Err(StaffError::NotFound(Missing::Account(name.to_owned()))),
        Err(e) => Err(StaffError::store("could not remove the account")(e)),
    }
}

/// Erases everything personal held about `mac` (a data subject's request): closes it if it
/// still has access, then blanks its records, keeping their skeleton and recording the erasure.
///
/// # Errors
/// An empty or over-long reason, nothing held about `mac`, or a store or firewall failure.
pub async fn erase(st: &AdminState, mac: MacAddr, reason: &str, by: &str) -> Outcome<crate::store::Erasure> {
    let reason = reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(StaffError::Invalid(Problem::ErasureReason));
    }
    let (now, who) = (st.clock.now(), by.to_owned());
    let erased = st
        .store
        .run(move |s| s.erase(mac, &reason, &who, now))
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => StaffError::NotFound(Missing::Device(mac)),
            e => StaffError::store("could not erase the device")(e),
        })?;
    if erased.sessions_ended > 0 {
        follow(st, vec![mac], &format!("{mac} erased")).await;
    }
    // The MAC is in this line (the journal is not the store) so the operator sees what happened;
    // nothing else about the device is.
    tracing::info!(%mac, consents = erased.consents.len(), events = erased.events.len(), by, "device erased");
    Ok(erased)
}

/// Purges personal data older than the retention period now (the daemon also does it daily).
///
/// # Errors
/// A store failure; nothing is removed then.
pub async fn purge(st: &AdminState) -> Outcome<crate::store::Purge> {
    let (now, retention) = (st.clock.now(), st.retention);
    let purged = st
        .store
        .run(move |s| s.purge(retention, now))
        .await
        .map_err(StaffError::store("could not purge old records"))?;
    if !purged.is_empty() {
        tracing::info!(
            cutoff = %purged.cutoff,
            events = purged.events,
            consents = purged.consents_deleted + purged.consents_blanked,
            "old personal data purged"
        );
    }
    Ok(purged)
}

/// An argon2id hash with the default parameters that no password matches in practice; checked
/// for unknown account names so that they cost as long as known ones.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4kQb4Sp0cSL3XSdQxwqDr5iQ8pIBF2Kca+vJmu3Luz0";

/// How many password checks run at once. Each argon2id check takes about 19 MiB for its
/// duration, so this bounds the memory a burst of sign-ins can take (about 40 MiB).
pub const PASSWORD_CHECKS: usize = 2;
/// How long a sign-in waits for a free check before it is refused as busy.
pub const PASSWORD_QUEUE: std::time::Duration = std::time::Duration::from_secs(5);

/// The checks running now (one process, one budget: a static rather than state every test
/// would have to build).
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PASSWORD_CHECKS);

/// One check for a checker thread: the stored hash, the password, where the answer goes, and
/// the permit it holds until it is done (so a sign-in abandoned while waiting for its answer
/// still counts against the two).
type Job = (
    String,
    String,
    tokio::sync::oneshot::Sender<bool>,
    tokio::sync::SemaphorePermit<'static>,
);

/// `PASSWORD_CHECKS` threads of our own that run argon2, each with its own memory for it,
/// allocated once and reused for every check. Freshly allocated for each check (as
/// `PasswordVerifier` does), the 19 MiB were never given back: the daemon's resident memory
/// grew by 19 MiB a check, to 240 MiB after 40 (measured). Started on first use.
fn checkers() -> Option<&'static std::sync::mpsc::Sender<Job>> {
    static CHECKERS: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    CHECKERS
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let rx = Arc::new(std::sync::Mutex::new(rx));
            for n in 0..PASSWORD_CHECKS {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("aupgate-argon2-{n}"))
                    .spawn(move || {
                        let mut memory = Vec::new();
                        loop {
                            // The lock is held only while waiting for the next job.
                            let job = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                            let Ok((hash, password, answer, permit)) = job else {
                                break;
                            };
                            // A panic must not take the thread with it (it would never come back).
                            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                password_matches(&mut memory, password.as_bytes(), &hash)
                            }))
                            .unwrap_or(false);
                            let _ = answer.send(ok);
                            drop(permit);
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a password-checking thread");
                    return None;
                }
            }
            Some(tx)
        })
        .as_ref()
}

/// Whether `password` matches the PHC string `hash`, computed in `memory` (grown to the hash's
/// memory cost the first time, then reused). The same computation as argon2's
/// `PasswordVerifier`, with the output compared in constant time (`Output`'s `PartialEq`).
fn password_matches(memory: &mut Vec<argon2::Block>, password: &[u8], hash: &str) -> bool {
    use argon2::password_hash::phc::{Output, PasswordHash};
    let Ok(hash) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let algorithm = argon2::Algorithm::try_from(hash.algorithm.as_str());
    let version = hash.version.map(argon2::Version::try_from).transpose();
    let params = argon2::Params::try_from(&hash);
    let (Ok(algorithm), Ok(version), Ok(params)) = (algorithm, version, params) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let Some(out) = buffer.get_mut(..expected.len()) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version.unwrap_or_default(), params);
    let Some(memory) = memory.get_mut(..blocks) else {
        return false;
    };
    argon
        .hash_password_into_with_memory(password, salt, out, memory)
        .is_ok()
        && Output::new(out).is_ok_and(|computed| computed == *expected)
}

/// How a password check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The password is the account's; it has this role.
    Valid(Role),
    /// Wrong password, or no such account.
    Invalid,
    /// Every check was busy for `PASSWORD_QUEUE`: nothing was checked.
    Busy,
}

/// Checks a password against the account's stored hash, at most `PASSWORD_CHECKS` at a time.
/// Unknown accounts cost the same time as known ones, so the answer does not reveal which
/// names exist.
pub async fn verify_password(st: &AdminState, name: &str, password: String) -> PasswordCheck {
    let Ok(Ok(permit)) = tokio::time::timeout(PASSWORD_QUEUE, CHECKS.acquire()).await else {
        return PasswordCheck::Busy;
    };
    let Some(checkers) = checkers() else {
        return PasswordCheck::Busy;
    };
    let who = name.to_owned();
    let stored = st.store.run(move |s| s.admin_credentials(&who)).await.ok().flatten();
    let (hash, role) = match stored {
        Some((h, r)) => (h, Some(r)),
        None => (DUMMY_HASH.to_owned(), None),
    };
    let (answer, ok) = tokio::sync::oneshot::channel();
    // The job holds the permit: at most PASSWORD_CHECKS are ever queued for the threads.
    if checkers.send((hash, password, answer, permit)).is_err() {
        return PasswordCheck::Busy;
    }
    let ok = ok.await.unwrap_or(false);
    match role {
        Some(role) if ok => PasswordCheck::Valid(role),
        _ => PasswordCheck::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use argon2::PasswordHash;

    #[test]
    fn reused_memory_gives_the_same_answers_as_argon2s_own_verifier() {
        use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
        let stored = Argon2::default()
            .hash_password(b"correct horse battery")
            .unwrap()
            .to_string();
        let mut memory = Vec::new();
        for (password, hash) in [
            (&b"correct horse battery"[..], stored.as_str()),
            (b"wrong", stored.as_str()),
            (b"anything", super::DUMMY_HASH),
        ] {
            let theirs = Argon2::default().verify_password(password, hash).is_ok();
            assert_eq!(super::password_matches(&mut memory, password, hash), theirs, "{hash}");
        }
        assert!(super::password_matches(&mut memory, b"correct horse battery", &stored));
        assert!(!super::password_matches(&mut memory, b"x", "not a phc string"));
        assert_eq!(memory.len(), 19 * 1024, "allocated once, at the default 19 MiB");
    }

    #[test]
    fn the_policy_rule_ends_old_consents_only_when_told_to_reaccept_immediately() {
        use crate::config::Reaccept;
        let store = crate::store::Store::open_in_memory().unwrap();
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        store
            .record_policy("old", "old text", at("2026-11-23T08:00:00Z"))
            .unwrap();
        let course = store
            .add_course(
                "c",
                at("2026-11-23T09:00:00Z"),
                at("2026-11-23T16:00:00Z"),
                5,
                at("2026-11-23T08:00:00Z"),
                "test",
                || crate::clients::AccessCode::normalise("ABCDEFGH").unwrap(),
            )
            .unwrap();
        let mac: crate::clients::MacAddr = "02:00:00:00:00:10".parse().unwrap();
        store
            .record_consent(&crate::store::NewConsent {
                course_id: course.id,
                max_devices: 5,
                mac,
                ip: "192.0.2.10".into(),
                accepted_at: at("2026-11-23T09:30:00Z"),
                expires_at: course.ends_at,
                name: "Ann".into(),
                organisation: String::new(),
                user_agent: String::new(),
                policy_hash: "old".into(),
            })
            .unwrap();
        store
            .record_policy("new", "new text", at("2026-11-23T10:00:00Z"))
            .unwrap();
        let now = at("2026-11-23T10:00:00Z");
        let ended = super::end_consents_to_old_policies(&store, "new", Reaccept::NextJoin, now).unwrap();
        assert!(ended.is_empty(), "next-join: the session runs until its course ends");
        let ended = super::end_consents_to_old_policies(&store, "new", Reaccept::Immediately, now).unwrap();
        assert_eq!(ended, vec![mac]);
        let again = super::end_consents_to_old_policies(&store, "new", Reaccept::Immediately, now).unwrap();
        assert!(again.is_empty());
    }

    /// Staff actions over the in-memory store and the fake gatekeeper, at 10:00 on 23 November.
    struct Lab {
        st: super::AdminState,
        fake: crate::firewall::fake::FakeFirewall,
        _stop: tokio::sync::watch::Sender<bool>,
    }

    async fn lab() -> Lab {
        let clock: std::sync::Arc<dyn crate::clock::Clock> =
            std::sync::Arc::new(crate::clock::ManualClock::new(at("2026-11-23T10:00:00Z")));
        let store = crate::store::Store::open_in_memory().unwrap();
        let (fake, firewall, stop) = crate::access::gatekeeper::fake(&store, clock.clone()).await;
        let st = super::AdminState {
            store,
            firewall,
            clock,
            retention: jiff::SignedDuration::from_hours(24 * 30),
        };
        Lab { st, fake, _stop: stop }
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn mac(s: &str) -> crate::clients::MacAddr {
        s.parse().unwrap()
    }

    /// How many events the audit chain holds: a refused action must add none.
    fn events(st: &super::AdminState) -> u64 {
        st.store.verify().unwrap().unwrap().events
    }

    fn allowed(l: &Lab) -> Vec<crate::clients::MacAddr> {
        l.fake.0.lock().unwrap().set.keys().copied().collect()
    }

    /// A consent by `device` to course `id` (running 09:00 to 16:00).
    fn consent(st: &super::AdminState, id: i64, device: crate::clients::MacAddr) {
        st.store
            .record_policy("p", "the policy", at("2026-11-23T08:00:00Z"))
            .unwrap();
        st.store
            .record_consent(&crate::store::NewConsent {
                course_id: id,
                max_devices: 5,
                mac: device,
                ip: "192.0.2.10".into(),
                accepted_at: at("2026-11-23T09:30:00Z"),
                expires_at: at("2026-11-23T16:00:00Z"),
                name: "Ann".into(),
                organisation: String::new(),
                user_agent: String::new(),
                policy_hash: "p".into(),
            })
            .unwrap();
    }

    /// A course "Phonics" (09:00 to 16:00) with `device` accepted on it and open.
    async fn on_phonics(l: &Lab, device: crate::clients::MacAddr) -> crate::clients::Course {
        let (start, end) = (at("2026-11-23T09:00:00Z"), at("2026-11-23T16:00:00Z"));
        let course = super::add_course(&l.st, "Phonics", start, end, 5, "sam").await.unwrap();
        consent(&l.st, course.id, device);
        l.st.firewall.sync(vec![device]).await.unwrap();
        course
    }

    /// Issue 11: each check of a new course refuses with its own `Problem` and records nothing;
    /// a good one is recorded with a fresh 8-character code.
    #[tokio::test]
    async fn add_course_refuses_each_bad_input_with_its_problem_and_records_nothing() {
        use super::{Problem, StaffError};
        let l = lab().await;
        let (start, end) = (at("2026-11-23T09:00:00Z"), at("2026-11-23T16:00:00Z"));
        let before = events(&l.st);
        for (title, starts, ends, max, problem) in [
            ("  ", start, end, 5, Problem::Title),
            ("a\u{7}bell", start, end, 5, Problem::Title),
            (&*"x".repeat(201), start, end, 5, Problem::Title),
            ("Phonics", end, start, 5, Problem::EndBeforeStart),
            (
                "Phonics",
                at("2026-11-23T08:00:00Z"),
                at("2026-11-23T09:00:00Z"),
                5,
                Problem::CourseEndPast,
            ),
            ("Phonics", start, end, 0, Problem::DeviceLimit),
            ("Phonics", start, end, 10_001, Problem::DeviceLimit),
        ] {
            match super::add_course(&l.st, title, starts, ends, max, "sam").await {
                Err(StaffError::Invalid(p)) => assert_eq!(p, problem, "{title:?}"),
                other => panic!("{title:?}: {other:?}"),
            }
        }
        assert!(l.st.store.courses().unwrap().is_empty());
        assert_eq!(events(&l.st), before, "a refused course records no event");
        let course = super::add_course(&l.st, " Phonics ", start, end, 5, "sam")
            .await
            .unwrap();
        assert_eq!(course.title, "Phonics");
        assert_eq!(course.code.to_string().len(), 8);
        assert_eq!(l.st.store.courses().unwrap().len(), 1);
    }

    /// Issue 11: ending a course closes its devices and says how many; an unknown course is
    /// `Missing::Course`, not bad input.
    #[tokio::test]
    async fn end_course_closes_its_devices_and_an_unknown_one_is_missing() {
        use super::{Missing, StaffError};
        let l = lab().await;
        let device = mac("02:00:00:00:00:10");
        let course = on_phonics(&l, device).await;
        assert_eq!(allowed(&l), [device]);
        let (ended, closed) = super::end_course(&l.st, course.id, "sam").await.unwrap();
        assert_eq!((ended.id, closed), (course.id, 1));
        assert!(allowed(&l).is_empty(), "the device is closed");
        match super::end_course(&l.st, 9999, "sam").await {
            Err(StaffError::NotFound(m)) => assert_eq!(m, Missing::Course(9999)),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 11: revoking a course closes every device on it and leaves other courses' open.
    #[tokio::test]
    async fn revoke_course_closes_only_that_courses_devices() {
        let l = lab().await;
        let (start, end) = (at("2026-11-23T09:00:00Z"), at("2026-11-23T16:00:00Z"));
        let phonics = super::add_course(&l.st, "Phonics", start, end, 5, "sam").await.unwrap();
        let maths = super::add_course(&l.st, "Maths", start, end, 5, "sam").await.unwrap();
        let (a, b, c) = (
            mac("02:00:00:00:00:0a"),
            mac("02:00:00:00:00:0b"),
            mac("02:00:00:00:00:0c"),
        );
        consent(&l.st, phonics.id, a);
        consent(&l.st, phonics.id, b);
        consent(&l.st, maths.id, c);
        l.st.firewall.sync(vec![a, b, c]).await.unwrap();
        assert_eq!(super::revoke_course(&l.st, phonics.id, "sam").await.unwrap(), 2);
        assert_eq!(allowed(&l), [c]);
        assert_eq!(
            super::revoke_course(&l.st, phonics.id, "sam").await.unwrap(),
            0,
            "nothing left to revoke"
        );
    }

    /// Issue 11: an exception is checked (a device address, a reason, an end within 31 days),
    /// opens its device, and ending it closes the device; an unknown one is `Missing::Exception`.
    #[tokio::test]
    async fn exceptions_are_checked_open_their_device_and_close_it_when_ended() {
        use super::{Missing, Problem, StaffError};
        let l = lab().await;
        let device = mac("02:00:00:00:00:20");
        let tomorrow = at("2026-11-24T10:00:00Z");
        let before = events(&l.st);
        for (m, reason, until, problem) in [
            (
                mac("01:00:5e:00:00:01"),
                "printer",
                tomorrow,
                Problem::NotDevice(mac("01:00:5e:00:00:01")),
            ),
            (device, " ", tomorrow, Problem::ExceptionReason),
            (device, "printer", at("2026-11-23T09:00:00Z"), Problem::ExceptionEndPast),
            (device, "printer", at("2027-01-23T10:00:00Z"), Problem::ExceptionTooLong),
        ] {
            match super::grant_exception(&l.st, m, reason, until, "sam").await {
                Err(StaffError::Invalid(p)) => assert_eq!(p, problem),
                other => panic!("{problem:?}: {other:?}"),
            }
        }
        assert_eq!(events(&l.st), before, "a refused exception records no event");
        assert!(allowed(&l).is_empty());
        let id = super::grant_exception(&l.st, device, "printer", tomorrow, "sam")
            .await
            .unwrap();
        assert_eq!(allowed(&l), [device]);
        assert_eq!(super::end_exception(&l.st, id, "sam").await.unwrap(), device);
        assert!(allowed(&l).is_empty());
        match super::end_exception(&l.st, id, "sam").await {
            Err(StaffError::NotFound(m)) => assert_eq!(m, Missing::Exception(id)),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 11: accounts are checked (name, password length), a second of the same name is
    /// `Exists`, and removing an unknown one is `Missing::Account`.
    #[tokio::test]
    async fn accounts_are_checked_unique_and_removable() {
        use super::{Missing, Problem, StaffError};
        use crate::store::Role;
        let l = lab().await;
        let long = "correct horse battery".to_owned();
        for (name, password, problem) in [
            ("", long.clone(), Problem::AccountName),
            ("sam smith", long.clone(), Problem::AccountName),
            (&*"a".repeat(65), long.clone(), Problem::AccountName),
            ("sam", "short".to_owned(), Problem::PasswordShort),
        ] {
            match super::add_admin(&l.st, name, Role::Staff, password).await {
                Err(StaffError::Invalid(p)) => assert_eq!(p, problem, "{name:?}"),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        super::add_admin(&l.st, "sam", Role::Staff, long.clone()).await.unwrap();
        assert!(matches!(
            super::add_admin(&l.st, "sam", Role::Auditor, long).await,
            Err(StaffError::Exists(n)) if n == "sam"
        ));
        super::remove_admin(&l.st, "sam").await.unwrap();
        match super::remove_admin(&l.st, "sam").await {
            Err(StaffError::NotFound(m)) => assert_eq!(m, Missing::Account("sam".into())),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 11: an erasure needs a reason; erasing a device we hold nothing about is
    /// `Missing::Device`; erasing one with access closes it.
    #[tokio::test]
    async fn erase_needs_a_reason_closes_the_device_and_an_unknown_one_is_missing() {
        use super::{Missing, Problem, StaffError};
        let l = lab().await;
        let device = mac("02:00:00:00:00:30");
        on_phonics(&l, device).await;
        assert!(matches!(
            super::erase(&l.st, device, "", "ada").await,
            Err(StaffError::Invalid(Problem::ErasureReason))
        ));
        assert_eq!(allowed(&l), [device], "a refused erasure changes nothing");
        let erased = super::erase(&l.st, device, "SAR-12", "ada").await.unwrap();
        assert_eq!(erased.sessions_ended, 1);
        assert!(allowed(&l).is_empty());
        let stranger = mac("02:00:00:00:00:31");
        match super::erase(&l.st, stranger, "SAR-13", "ada").await {
            Err(StaffError::NotFound(m)) => assert_eq!(m, Missing::Device(stranger)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dummy_hash_is_a_real_argon2id_hash() {
        // If it did not parse, unknown names would be answered faster than known ones.
        let h = PasswordHash::new(super::DUMMY_HASH).unwrap();
        assert_eq!(h.algorithm.as_str(), "argon2id");
    }
}
