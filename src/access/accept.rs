//! A guest's accept, decided: which device it is, the brute-force guard, the code and its
//! course, the policy in force, the form's text; then the consent committed durably; then the
//! firewall opened (ARCHITECTURE.md, invariant 2). `Admissions` is the portal's whole view of the system:
//! it cannot reach admin state.

use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;

use crate::access::gatekeeper::FirewallHandle;
use crate::assets::Policy;
use crate::clients::{self, AccessCode, Course, CourseState, MAX_WRONG_CODES, MacAddr, WRONG_CODE_WINDOW};
use crate::clock::Clock;
use crate::neighbours::Neighbours;
use crate::store::{NewConsent, Store, StoreError};
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

/// The portal's narrow handle: who is this device, may it pass, let it through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admissions {
    store: Store,
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
            store,
            firewall,
            neighbours,
            clock,
            policy,
        }
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
    /// in one transaction, so parallel guesses count); the code (only a wrong one counts towards
    /// the lock-out); the policy in force; the course's state; the name, organisation and tick
    /// box; then the consent, committed; then the firewall. On success the device is open.
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
        let device = mac.to_string();
        let now = self.now();

        // 2. Brute-force guard: too many wrong codes lately means wait, whatever was typed now.
        let since = now - WRONG_CODE_WINDOW;
        let (dev, at) = (device.clone(), ip.to_string());
        let attempt = match self
            .store
            .run(move |s| s.begin_code_attempt(&dev, &at, now, since, MAX_WRONG_CODES))
            .await
        {
            Ok(Ok(id)) => id,
            Ok(Err((n, oldest))) => {
                tracing::warn!(%mac, failures = n, "code attempt refused: device is locked out");
                return Err(Refusal::LockedOut {
                    until: oldest.unwrap_or(now) + WRONG_CODE_WINDOW,
                });
            }
            Err(e) => return Err(Self::store_failed(mac, &e)),
        };

        // 3. The code. Only a wrong one counts towards the lock-out (an empty one does not).
        let course = match AccessCode::normalise(&app.code) {
            Some(code) => match self.store.run(move |s| s.course_by_code(&code)).await {
                Ok(c) => c,
                Err(e) => return Err(Self::store_failed(mac, &e)),
            },
            None => None,
        };
        let empty = app.code.trim().is_empty();
        let outcome = match (&course, empty) {
            (Some(_), _) => "right-code",
            (None, true) => "empty",
            (None, false) => "wrong-code",
        };
        if let Err(e) = self
            .store
            .run(move |s| s.finish_code_attempt(attempt, outcome, now))
            .await
        {
            return Err(Self::store_failed(mac, &e));
        }
        let Some(course) = course else {
            if empty {
                return Err(Refusal::EmptyCode);
            }
            tracing::warn!(%mac, "wrong access code");
            return Err(Refusal::WrongCode);
        };

        // 4. The rest of the form. The policy shown must be the policy in force now.
        let policy = self.policy.get();
        if app.policy_version != policy.hash {
            return Err(Refusal::PolicyChanged);
        }
        match course.state(now) {
            CourseState::Running => {}
            CourseState::Upcoming => {
                tracing::info!(%mac, course = course.id, "code of a course not started yet");
                return Err(Refusal::CourseNotStarted {
                    starts_at: course.starts_at,
                });
            }
            CourseState::Ended => {
                tracing::info!(%mac, course = course.id, "code of an ended course");
                return Err(Refusal::CourseEnded);
            }
        }
        let name = match clients::clean_text("Your name", &app.name) {
            Ok(n) if n.is_empty() => return Err(Refusal::BadName("Please enter your name.".into())),
            Ok(n) => n,
            Err(problem) => return Err(Refusal::BadName(problem)),
        };
        let organisation = clients::clean_text("Organisation", &app.organisation).map_err(Refusal::BadOrganisation)?;
        if !app.agreed {
            return Err(Refusal::NotAgreed);
        }

        // 5. Consent, committed durably before anything is opened.
        let consent = NewConsent {
            course_id: course.id,
            max_devices: course.max_devices,
            mac,
            ip: ip.to_string(),
            accepted_at: now,
            expires_at: course.ends_at,
            name,
            organisation,
            user_agent: app.user_agent,
            policy_hash: policy.hash.clone(),
        };
        let consent_id = match self.store.run(move |s| s.record_consent(&consent)).await {
            Ok(id) => id,
            Err(StoreError::CourseFull) => {
                tracing::info!(%mac, course = course.id, "course full");
                // Counted for the staff dashboard's refusals; failing to count does not change
                // the answer.
                let detail = serde_json::json!({"course": course.id});
                let _ = self
                    .store
                    .run(move |s| s.record_device_event(now, crate::store::EventKind::RefusedCourseFull, detail, mac))
                    .await;
                return Err(Refusal::CourseFull);
            }
            Err(StoreError::CourseNotRunning) => {
                tracing::info!(%mac, course = course.id, "course ended while the guest was accepting");
                return Err(Refusal::CourseEnded);
            }
            Err(StoreError::RevokedForCourse) => {
                tracing::info!(%mac, course = course.id, "revoked device tried to accept again");
                return Err(Refusal::Revoked);
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
