//! What staff can do, once, for every surface: the control socket (CLI) and the web UI both call
//! these. Each validates its input, writes the store first and then brings the firewall in line,
//! and names the acting account in the event it records.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use jiff::Timestamp;

use crate::clients::{AccessCode, Course, MacAddr};
use crate::clock::Clock;
use crate::firewall::FirewallHandle;
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

/// A refusal or failure, as one line for whoever asked.
pub type Outcome<T> = Result<T, String>;

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
        return Err("the title must be 1 to 200 printable characters".into());
    }
    if ends_at <= starts_at {
        return Err("the end must be after the start".into());
    }
    if ends_at <= now {
        return Err("the end is in the past: a course must end in the future".into());
    }
    if !(1..=10_000).contains(&max_devices) {
        return Err("the device limit must be between 1 and 10000".into());
    }
    let by = by.to_owned();
    let course = st
        .store
        .run(move |s| s.add_course(&title, starts_at, ends_at, max_devices, now, &by, new_code))
        .await
        .map_err(|e| format!("could not add the course: {e}"))?;
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
        Err(StoreError::NotFound(_)) => return Err(format!("no course with id {id}")),
        Err(e) => return Err(format!("could not end the course: {e}")),
    };
    let closed = macs.len();
    st.firewall.sync(macs).await.map_err(|e| {
        format!("course {id} ended in the store, but closing its devices failed: {e}; the daemon retries every second")
    })?;
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
        .map_err(|e| format!("could not revoke {mac}: {e}"))?;
    st.firewall.sync(vec![mac]).await.map_err(|e| {
        format!("{mac} revoked in the store, but closing it failed: {e}; the daemon retries every second")
    })?;
    tracing::info!(%mac, consents = ended, by, "device revoked");
    Ok(ended)
}

/// Lets `mac` through without the portal until `until`, for `reason`; returns the exception's id.
///
/// # Errors
/// A bad address, reason or time, or a store or firewall failure.
pub async fn grant_exception(st: &AdminState, mac: MacAddr, reason: &str, until: Timestamp, by: &str) -> Outcome<i64> {
    let now = st.clock.now();
    let reason = reason.trim().to_owned();
    if !mac.is_unicast() {
        return Err(format!("{mac} is not a device address"));
    }
    if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        return Err("give a reason of 1 to 200 printable characters".into());
    }
    if until <= now {
        return Err("the end is in the past".into());
    }
    if until > now + jiff::SignedDuration::from_hours(24 * 31) {
        return Err("an exception lasts at most 31 days; grant a new one after that".into());
    }
    let who = by.to_owned();
    let id = st
        .store
        .run(move |s| s.grant_exception(mac, &reason, &who, now, until))
        .await
        .map_err(|e| format!("could not record the exception: {e}"))?;
    st.firewall.sync(vec![mac]).await.map_err(|e| {
        format!("the exception is recorded, but opening {mac} failed: {e}; the daemon retries every second")
    })?;
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
        Err(StoreError::NotFound(_)) => return Err(format!("no open exception {id}")),
        Err(e) => return Err(format!("could not end the exception: {e}")),
    };
    st.firewall
        .sync(vec![mac])
        .await
        .map_err(|e| format!("the exception ended, but closing {mac} failed: {e}"))?;
    tracing::info!(%mac, exception = id, by, "exception ended");
    Ok(mac)
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
        return Err("the account name must be 1 to 64 letters, digits or . - _ @".into());
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!("the password must have at least {MIN_PASSWORD} characters"));
    }
    let hash = tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(|_| "hashing the password failed".to_owned())?
    .map_err(|e| format!("hashing the password failed: {e}"))?;
    let now = st.clock.now();
    let who = name.clone();
    st.store
        .run(move |s| s.add_admin(&who, role, &hash, now))
        .await
        .map_err(|e| match e {
            StoreError::AdminExists(n) => format!("an account named {n:?} exists already"),
            other => format!("could not add the account: {other}"),
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
        Ok(false) => Err(format!("no account named {name:?}")),
        Err(e) => Err(format!("could not remove the account: {e}")),
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
        return Err("the reason must be 1 to 500 printable characters (say why, e.g. the request's reference, without personal data)".into());
    }
    let (now, who) = (st.clock.now(), by.to_owned());
    let erased = st
        .store
        .run(move |s| s.erase(mac, &reason, &who, now))
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => format!("nothing is held about {mac}"),
            e => format!("could not erase {mac}: {e}"),
        })?;
    if erased.sessions_ended > 0 {
        st.firewall.sync(vec![mac]).await.map_err(|e| {
            format!("{mac} erased in the store, but closing it failed: {e}; the daemon retries every second")
        })?;
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
        .map_err(|e| format!("could not purge old records: {e}"))?;
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

/// Checks a password against the account's stored hash. Unknown accounts cost the same time
/// as known ones, so the answer does not reveal which names exist.
pub async fn verify_password(st: &AdminState, name: &str, password: String) -> Option<Role> {
    let who = name.to_owned();
    let stored = st.store.run(move |s| s.admin_credentials(&who)).await.ok().flatten();
    tokio::task::spawn_blocking(move || {
        let (hash, role) = match &stored {
            Some((h, r)) => (h.as_str(), Some(*r)),
            None => (DUMMY_HASH, None),
        };
        let ok = Argon2::default().verify_password(password.as_bytes(), hash).is_ok();
        role.filter(|_| ok)
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use argon2::PasswordHash;

    #[test]
    fn dummy_hash_is_a_real_argon2id_hash() {
        // If it did not parse, unknown names would be answered faster than known ones.
        let h = PasswordHash::new(super::DUMMY_HASH).unwrap();
        assert_eq!(h.algorithm.as_str(), "argon2id");
    }
}
