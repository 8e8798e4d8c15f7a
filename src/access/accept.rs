//! A guest's accept, decided: which device it is, the brute-force guard, the code and its
//! course, the policy in force, the form's text; then the consent committed durably; then the
//! firewall opened (ARCHITECTURE.md, invariant 2). `Admissions` is the portal's whole view of the system:
//! it cannot reach admin state.

use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::access::gatekeeper::FirewallHandle;
use crate::assets::Policy;
use crate::clients::{self, AccessCode, Course, CourseState, MAX_WRONG_CODES, MacAddr, WRONG_CODE_WINDOW};
use crate::clock::Clock;
use crate::neighbours::Neighbours;
use crate::store::{Admission, Attempt, NewConsent, Store, StoreError};
use crate::web::Live;

/// What a guest sent: the form's fields as typed (not yet checked) and where it came from.
#[derive(Debug, Clone)]
pub struct Application {
    /// The client's address (canonical: an IPv4-mapped IPv6 address is IPv4).
    pub ip: IpAddr,
    /// The access code as typed.
    pub code: String,
    /// The guest's name as typed.
    pub name: String,
    /// Their organisation as typed (may be empty).
    pub organisation: String,
    /// The tick box.
    pub agreed: bool,
    /// The policy version the page showed (its hidden field).
    pub policy_version: String,
    /// The browser's User-Agent, already made printable and short.
    pub user_agent: String,
}

/// A guest let through.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The device.
    pub mac: MacAddr,
    /// The consent recorded.
    pub consent: i64,
    /// The course: its access ends with it.
    pub course: Course,
}

/// What failed on our side; nothing was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The kernel's neighbour table could not be read.
    Neighbours,
    /// The store could not be read or written.
    Store,
    /// The consent was recorded, but opening the firewall failed; it was withdrawn.
    Firewall,
}

/// Why a guest was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The kernel has no MAC for the client's address (not on the guest link, or not yet seen).
    UnknownDevice,
    /// Too many wrong codes lately from this device; it may try again at this time.
    LockedOut {
        /// When the oldest counted failure leaves the window.
        until: Timestamp,
    },
    /// No code was typed.
    EmptyCode,
    /// The code is no course's.
    WrongCode,
    /// The policy changed since the page was loaded.
    PolicyChanged,
    /// The course has not started yet.
    CourseNotStarted {
        /// When it starts.
        starts_at: Timestamp,
    },
    /// The course has ended (perhaps while the guest was accepting).
    CourseEnded,
    /// The course has its maximum number of devices.
    CourseFull,
    /// Staff revoked this device for this course.
    Revoked,
    /// The name is missing or not acceptable; the text says why, for the guest.
    BadName(String),
    /// The organisation is not acceptable; the text says why, for the guest.
    BadOrganisation(String),
    /// The tick box was not ticked.
    NotAgreed,
    /// Something failed on our side.
    Unavailable(Unavailable),
}

impl Refusal {
    /// The label `/metrics` counts it under.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownDevice => "unknown_device",
            Self::LockedOut { .. } => "locked_out",
            Self::EmptyCode => "empty_code",
            Self::WrongCode => "wrong_code",
            Self::PolicyChanged => "policy_changed",
            Self::CourseNotStarted { .. } => "course_not_started",
            Self::CourseEnded => "course_ended",
            Self::CourseFull => "course_full",
            Self::Revoked => "revoked",
            Self::BadName(_) => "bad_name",
            Self::BadOrganisation(_) => "bad_organisation",
            Self::NotAgreed => "not_agreed",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Accepts waiting to be written, and the task that writes them together: while one
/// transaction is being committed, those that arrive queue and go into the next one (one
/// fsync for all of them). Each guest still gets its own outcome.
#[derive(Debug, Clone)]
struct Committer {
    tx: mpsc::Sender<(Attempt, oneshot::Sender<Result<Admission, StoreError>>)>,
    /// Transactions written so far.
    commits: Arc<std::sync::atomic::AtomicU64>,
}

/// The most accepts one transaction holds.
const MAX_BATCH: usize = 128;

impl Committer {
    fn start(store: Store) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Attempt, oneshot::Sender<Result<Admission, StoreError>>)>(1024);
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = commits.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (attempts, replies): (Vec<Attempt>, Vec<_>) = batch.into_iter().unzip();
                if attempts.len() > 1 {
                    tracing::debug!(accepts = attempts.len(), "accepts written in one transaction");
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match store.run(move |s| s.admit_all(&attempts)).await {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(outcome);
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.shared()));
                        }
                    }
                }
            }
        });
        Self { tx, commits }
    }

    /// Writes `attempt` with whatever else is waiting; `Err` if the store failed (nothing of
    /// this attempt was written then) or the committer has stopped.
    async fn admit(&self, attempt: Attempt) -> Result<Admission, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Shared("the store's writer has stopped".into());
        self.tx.send((attempt, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The rules a right code must then pass, in the order refusals are given: the policy in force,
/// the course's state, the name, the organisation, the tick box. `Ok` is the consent to record.
#[derive(Debug, Clone)]
struct Rules {
    mac: MacAddr,
    ip: IpAddr,
    now: Timestamp,
    policy_shown: String,
    policy_in_force: String,
    name: String,
    organisation: String,
    agreed: bool,
    user_agent: String,
}

impl Rules {
    fn judge(&self, course: &Course) -> Result<NewConsent, Refusal> {
        if self.policy_shown != self.policy_in_force {
            return Err(Refusal::PolicyChanged);
        }
        match course.state(self.now) {
            CourseState::Running => {}
            CourseState::Upcoming => {
                return Err(Refusal::CourseNotStarted {
                    starts_at: course.starts_at,
                });
            }
            CourseState::Ended => return Err(Refusal::CourseEnded),
        }
        let name = match clients::clean_text("Your name", &self.name) {
            Ok(n) if n.is_empty() => return Err(Refusal::BadName("Please enter your name.".into())),
            Ok(n) => n,
            Err(problem) => return Err(Refusal::BadName(problem)),
        };
        let organisation = clients::clean_text("Organisation", &self.organisation).map_err(Refusal::BadOrganisation)?;
        if !self.agreed {
            return Err(Refusal::NotAgreed);
        }
        Ok(NewConsent {
            course_id: course.id,
            max_devices: course.max_devices,
            mac: self.mac,
            ip: self.ip.to_string(),
            accepted_at: self.now,
            expires_at: course.ends_at,
            name,
            organisation,
            user_agent: self.user_agent.clone(),
            policy_hash: self.policy_in_force.clone(),
        })
    }
}

/// The portal's narrow handle: who is this device, may it pass, let it through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admissions {
    store: Store,
    committer: Committer,
    firewall: FirewallHandle,
    neighbours: Arc<dyn Neighbours>,
    clock: Arc<dyn Clock>,
    policy: Live<Policy>,
}

impl Admissions {
    /// Over these mechanisms; `policy` is the text in force (replaced on reload).
    pub fn new(
        store: Store,
        firewall: FirewallHandle,
        neighbours: Arc<dyn Neighbours>,
        clock: Arc<dyn Clock>,
        policy: Live<Policy>,
    ) -> Self {
        Self {
            committer: Committer::start(store.clone()),
            store,
            firewall,
            neighbours,
            clock,
            policy,
        }
    }

    /// How many transactions the accepts have been written in (fewer than the accepts when
    /// they came together).
    pub fn commits(&self) -> u64 {
        self.committer.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Until when the device at `ip` may pass, if it may now. An unknown device, or any
    /// failure, is `None`: never open by mistake.
    pub async fn open_until(&self, ip: IpAddr) -> Option<Timestamp> {
        let now = self.now();
        match self.neighbours.lookup(ip).await {
            Ok(Some(n)) => self
                .store
                .run(move |s| s.allowed_until(n.mac, now))
                .await
                .ok()
                .flatten(),
            _ => None,
        }
    }

    fn store_failed(mac: MacAddr, e: &StoreError) -> Refusal {
        tracing::error!(%mac, error = %e, "store failure during accept; nothing opened");
        Refusal::Unavailable(Unavailable::Store)
    }

    /// Decides `app`, in this order: which device; the brute-force guard (checked and recorded
    /// in the same transaction, so parallel guesses count); the code (only a wrong one counts
    /// towards the lock-out); the policy in force; the course's state; the name, organisation
    /// and tick box; then the consent, committed (with any other accepts waiting, in one
    /// transaction); then the firewall. On success the device is open.
    ///
    /// # Errors
    /// The `Refusal`; nothing is opened.
    pub async fn accept(&self, app: Application) -> Result<Admitted, Refusal> {
        let ip = app.ip;
        // 1. Which device is this? Without a MAC nothing can be opened.
        let neighbour = match self.neighbours.lookup(ip).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                tracing::warn!("no neighbour entry for the client; asked it to retry");
                return Err(Refusal::UnknownDevice);
            }
            Err(e) => {
                tracing::error!(error = %e, "neighbour lookup failed");
                return Err(Refusal::Unavailable(Unavailable::Neighbours));
            }
        };
        let mac = neighbour.mac;
        let now = self.now();

        // 2-5. The guard, the code, the rules and the consent, in one transaction.
        let rules = Rules {
            mac,
            ip,
            now,
            policy_shown: app.policy_version,
            policy_in_force: self.policy.get().hash.clone(),
            name: app.name,
            organisation: app.organisation,
            agreed: app.agreed,
            user_agent: app.user_agent,
        };
        let judged = rules.clone();
        let attempt = Attempt {
            mac,
            ip: ip.to_string(),
            addresses: neighbour.addresses.clone(),
            now,
            since: now - WRONG_CODE_WINDOW,
            max_wrong: MAX_WRONG_CODES,
            code: AccessCode::normalise(&app.code),
            empty: app.code.trim().is_empty(),
            consent: Box::new(move |course| judged.judge(course).ok()),
        };
        let (course, consent_id) = match self.committer.admit(attempt).await {
            Ok(Admission::Consented { course, consent }) => (course, consent),
            Ok(Admission::LockedOut { failures, oldest }) => {
                tracing::warn!(%mac, failures, "code attempt refused: device is locked out");
                return Err(Refusal::LockedOut {
                    until: oldest.unwrap_or(now) + WRONG_CODE_WINDOW,
                });
            }
            Ok(Admission::NoCourse) if app.code.trim().is_empty() => return Err(Refusal::EmptyCode),
            Ok(Admission::NoCourse) => {
                tracing::warn!(%mac, "wrong access code");
                return Err(Refusal::WrongCode);
            }
            Ok(Admission::NotConsented(course)) => {
                let refusal = rules
                    .judge(&course)
                    .err()
                    .unwrap_or(Refusal::Unavailable(Unavailable::Store));
                match refusal {
                    Refusal::CourseNotStarted { .. } => {
                        tracing::info!(%mac, course = course.id, "code of a course not started yet");
                    }
                    Refusal::CourseEnded => tracing::info!(%mac, course = course.id, "code of an ended course"),
                    _ => {}
                }
                return Err(refusal);
            }
            Ok(Admission::Refused { course, why }) => {
                return Err(match why {
                    StoreError::CourseFull => {
                        tracing::info!(%mac, course = course.id, "course full");
                        Refusal::CourseFull
                    }
                    StoreError::CourseNotRunning => {
                        tracing::info!(%mac, course = course.id, "course ended while the guest was accepting");
                        Refusal::CourseEnded
                    }
                    StoreError::RevokedForCourse => {
                        tracing::info!(%mac, course = course.id, "revoked device tried to accept again");
                        Refusal::Revoked
                    }
                    e => Self::store_failed(mac, &e),
                });
            }
            Err(e) => return Err(Self::store_failed(mac, &e)),
        };

        // 6. Open the firewall for this MAC, and make its existing connections start afresh.
        // Every address the device has on the guest network is forgotten, not only this one.
        let mut addresses = neighbour.addresses;
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
        // On failure the writer has already withdrawn the consent and closed the MAC, before
        // answering, so its periodic check cannot re-open it behind the guest's back.
        if let Err(e) = self.firewall.open(mac, addresses, consent_id).await {
            tracing::error!(%mac, error = %e, "could not open the firewall; consent withdrawn");
            return Err(Refusal::Unavailable(Unavailable::Firewall));
        }
        tracing::info!(%mac, %ip, course = course.id, consent = consent_id, "consent recorded and device opened");
        Ok(Admitted {
            mac,
            consent: consent_id,
            course,
        })
    }
}

#[cfg(test)]
mod tests;
