//! `Admissions::accept` against the in-memory store, the fake firewall and a static neighbour
//! table: one test per `Refusal`, and the way through. The same paths run through the real
//! kernel in tests/integration.

use std::net::IpAddr;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::clock::ManualClock;
use crate::firewall::fake::FakeFirewall;
use crate::neighbours::{Lookup, NeighbourError, StaticNeighbours, Table};

const ANN: &str = "192.0.2.10";
const BOB: &str = "192.0.2.11";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

struct Fixture {
    access: Admissions,
    store: Store,
    fake: FakeFirewall,
    clock: ManualClock,
    policy: String,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// A kernel whose neighbour table cannot be read.
#[derive(Debug)]
struct Broken;

impl Neighbours for Broken {
    fn table(&self) -> Table<'_> {
        Box::pin(async { Err(NeighbourError::Netlink("test".into())) })
    }
    fn lookup(&self, _: IpAddr) -> Lookup<'_> {
        Box::pin(async { Err(NeighbourError::Netlink("test".into())) })
    }
}

/// Courses: ABCDEFGH running with room for one device, ZZZZZZZZ tomorrow, ENDEDEND over.
async fn fixture_with(neighbours: Arc<dyn Neighbours>) -> Fixture {
    let clock = ManualClock::new(t("2026-11-23T10:00:00Z"));
    let store = Store::open_in_memory().unwrap();
    let policy = Policy::load(None).unwrap();
    store
        .record_policy(&policy.hash, &policy.markdown, clock.now())
        .unwrap();
    for (title, from, to, code) in [
        ("Phonics", "2026-11-23T09:00:00Z", "2026-11-23T16:00:00Z", "ABCDEFGH"),
        ("Tomorrow", "2026-11-24T09:00:00Z", "2026-11-24T16:00:00Z", "ZZZZZZZZ"),
        ("Over", "2026-11-22T09:00:00Z", "2026-11-22T16:00:00Z", "ENDEDEND"),
    ] {
        store
            .add_course(title, t(from), t(to), 1, t("2026-11-20T10:00:00Z"), "test", || {
                AccessCode::normalise(code).unwrap()
            })
            .unwrap();
    }
    let (fake, firewall, stop) = crate::access::gatekeeper::fake(&store, Arc::new(clock.clone())).await;
    let hash = policy.hash.clone();
    let access = Admissions::new(
        store.clone(),
        firewall,
        neighbours,
        Arc::new(clock.clone()),
        Live::new(policy),
    );
    Fixture {
        access,
        store,
        fake,
        clock,
        policy: hash,
        _stop: stop,
    }
}

async fn fixture() -> Fixture {
    fixture_with(Arc::new(StaticNeighbours(vec![
        (ANN.parse().unwrap(), "02:00:00:00:00:10".parse().unwrap()),
        (BOB.parse().unwrap(), "02:00:00:00:00:11".parse().unwrap()),
    ])))
    .await
}

impl Fixture {
    /// A complete, acceptable application from `ip` with `code`.
    fn application(&self, ip: &str, code: &str) -> Application {
        Application {
            ip: ip.parse().unwrap(),
            code: code.into(),
            name: "Ann Smith".into(),
            organisation: "Kent Training Hub".into(),
            agreed: true,
            policy_version: self.policy.clone(),
            user_agent: "test".into(),
        }
    }

    async fn refusal(&self, app: Application) -> Refusal {
        self.access.accept(app).await.expect_err("refused")
    }

    fn open(&self) -> usize {
        self.fake.0.lock().unwrap().set.len()
    }
}

#[tokio::test]
async fn a_complete_application_is_admitted_and_opened() {
    let f = fixture().await;
    let admitted = f.access.accept(f.application(ANN, "abcd-efgh")).await.unwrap();
    assert_eq!(admitted.mac.to_string(), "02:00:00:00:00:10");
    assert_eq!(admitted.course.title, "Phonics");
    assert_eq!(f.open(), 1);
    assert_eq!(
        f.access.open_until(ANN.parse().unwrap()).await,
        Some(t("2026-11-23T16:00:00Z"))
    );
    assert_eq!(f.access.open_until(BOB.parse().unwrap()).await, None);
}

#[tokio::test]
async fn an_unknown_device_is_refused() {
    let f = fixture().await;
    assert_eq!(
        f.refusal(f.application("192.0.2.99", "ABCDEFGH")).await,
        Refusal::UnknownDevice
    );
    assert_eq!(f.open(), 0);
}

#[tokio::test]
async fn an_unreadable_neighbour_table_is_unavailable() {
    let f = fixture_with(Arc::new(Broken)).await;
    assert_eq!(
        f.refusal(f.application(ANN, "ABCDEFGH")).await,
        Refusal::Unavailable(Unavailable::Neighbours)
    );
}

#[tokio::test]
async fn five_wrong_codes_lock_the_device_out_until_the_first_leaves_the_window() {
    let f = fixture().await;
    for _ in 0..5 {
        assert_eq!(f.refusal(f.application(ANN, "WRNGWRNG")).await, Refusal::WrongCode);
        f.clock.set(f.clock.now() + SignedDuration::from_secs(1));
    }
    assert_eq!(
        f.refusal(f.application(ANN, "ABCDEFGH")).await,
        Refusal::LockedOut {
            until: t("2026-11-23T10:00:00Z") + WRONG_CODE_WINDOW
        },
        "even with the right code"
    );
    assert!(
        f.access.accept(f.application(BOB, "ABCDEFGH")).await.is_ok(),
        "other devices are not"
    );
}

#[tokio::test]
async fn an_empty_code_is_asked_for_and_does_not_count_towards_the_lock_out() {
    let f = fixture().await;
    for _ in 0..6 {
        assert_eq!(f.refusal(f.application(ANN, "  ")).await, Refusal::EmptyCode);
    }
    assert!(f.access.accept(f.application(ANN, "ABCDEFGH")).await.is_ok());
}

#[tokio::test]
async fn a_page_showing_an_older_policy_is_refused() {
    let f = fixture().await;
    let mut app = f.application(ANN, "ABCDEFGH");
    app.policy_version = "an older text".into();
    assert_eq!(f.refusal(app).await, Refusal::PolicyChanged);
}

#[tokio::test]
async fn codes_of_courses_not_started_or_over_are_refused() {
    let f = fixture().await;
    assert_eq!(
        f.refusal(f.application(ANN, "ZZZZZZZZ")).await,
        Refusal::CourseNotStarted {
            starts_at: t("2026-11-24T09:00:00Z")
        }
    );
    assert_eq!(f.refusal(f.application(ANN, "ENDEDEND")).await, Refusal::CourseEnded);
}

#[tokio::test]
async fn a_full_course_refuses_the_next_device() {
    let f = fixture().await;
    f.access.accept(f.application(ANN, "ABCDEFGH")).await.unwrap();
    assert_eq!(f.refusal(f.application(BOB, "ABCDEFGH")).await, Refusal::CourseFull);
    assert_eq!(f.open(), 1);
}

#[tokio::test]
async fn a_revoked_device_may_not_accept_again_for_that_course() {
    let f = fixture().await;
    let admitted = f.access.accept(f.application(ANN, "ABCDEFGH")).await.unwrap();
    f.store.revoke(admitted.mac, f.clock.now(), "test").unwrap();
    assert_eq!(f.refusal(f.application(ANN, "ABCDEFGH")).await, Refusal::Revoked);
}

#[tokio::test]
async fn names_organisations_and_the_tick_box_are_checked() {
    let f = fixture().await;
    let mut app = f.application(ANN, "ABCDEFGH");
    app.name = "   ".into();
    assert_eq!(f.refusal(app).await, Refusal::BadName("Please enter your name.".into()));
    let mut app = f.application(ANN, "ABCDEFGH");
    app.name = "n".repeat(500);
    assert!(matches!(f.refusal(app).await, Refusal::BadName(p) if p.contains("too long")));
    let mut app = f.application(ANN, "ABCDEFGH");
    app.organisation = "o".repeat(500);
    assert!(matches!(f.refusal(app).await, Refusal::BadOrganisation(p) if p.contains("too long")));
    let mut app = f.application(ANN, "ABCDEFGH");
    app.agreed = false;
    assert_eq!(f.refusal(app).await, Refusal::NotAgreed);
    assert_eq!(f.open(), 0);
}

#[tokio::test]
async fn a_firewall_failure_withdraws_the_consent_and_opens_nothing() {
    let f = fixture().await;
    f.fake.0.lock().unwrap().fail_conntrack = true;
    assert_eq!(
        f.refusal(f.application(ANN, "ABCDEFGH")).await,
        Refusal::Unavailable(Unavailable::Firewall)
    );
    assert_eq!(f.open(), 0);
    assert!(
        f.store.sessions(f.clock.now()).unwrap().is_empty(),
        "the consent was withdrawn"
    );
}

#[test]
fn every_refusal_has_its_own_label() {
    let all = [
        Refusal::UnknownDevice,
        Refusal::LockedOut {
            until: Timestamp::UNIX_EPOCH,
        },
        Refusal::EmptyCode,
        Refusal::WrongCode,
        Refusal::PolicyChanged,
        Refusal::CourseNotStarted {
            starts_at: Timestamp::UNIX_EPOCH,
        },
        Refusal::CourseEnded,
        Refusal::CourseFull,
        Refusal::Revoked,
        Refusal::BadName(String::new()),
        Refusal::BadOrganisation(String::new()),
        Refusal::NotAgreed,
        Refusal::Unavailable(Unavailable::Store),
    ];
    let labels: std::collections::BTreeSet<_> = all.iter().map(Refusal::as_str).collect();
    assert_eq!(labels.len(), all.len());
}

/// Issue 12: accepts that arrive together are written in one transaction (one fsync), each
/// still decided on its own: here 20 phones at once on a course with room for 10, plus one
/// wrong code and one locked-out device among them. Every admitted device is open, and its
/// consent was in the store before its element went in (the gatekeeper opens only what the
/// store already allows).
#[tokio::test]
async fn accepts_that_arrive_together_share_one_transaction_and_keep_their_own_answers() {
    let phones: Vec<(String, MacAddr)> = (0..22u8)
        .map(|i| {
            (
                format!("192.0.2.{}", 100 + i),
                format!("02:00:00:00:01:{i:02x}").parse().unwrap(),
            )
        })
        .collect();
    let table = phones.iter().map(|(ip, mac)| (ip.parse().unwrap(), *mac)).collect();
    let f = fixture_with(Arc::new(StaticNeighbours(table))).await;
    f.store
        .add_course(
            "Hall",
            t("2026-11-23T09:00:00Z"),
            t("2026-11-23T16:00:00Z"),
            10,
            f.clock.now(),
            "test",
            || AccessCode::normalise("HQHQHQHQ").unwrap(),
        )
        .unwrap();
    // The last phone is locked out already.
    let (locked_ip, locked_mac) = phones[21].clone();
    for _ in 0..MAX_WRONG_CODES {
        let mut wrong = f.application(&locked_ip, "WRNGWRNG");
        wrong.name = "L".into();
        assert_eq!(f.refusal(wrong).await, Refusal::WrongCode);
    }
    let before = f.access.commits();
    let apps: Vec<Application> = phones
        .iter()
        .enumerate()
        .map(|(i, (ip, _))| f.application(ip, if i == 20 { "WRNGWRNG" } else { "HQHQHQHQ" }))
        .collect();
    let answers = futures_util::future::join_all(apps.into_iter().map(|a| f.access.accept(a))).await;
    assert_eq!(f.access.commits() - before, 1, "one transaction for all 22");
    let admitted: Vec<&Admitted> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert_eq!(admitted.len(), 10, "the course's 10 places, no more");
    let full = answers.iter().filter(|a| matches!(a, Err(Refusal::CourseFull))).count();
    assert_eq!(full, 10);
    assert_eq!(answers[20].as_ref().err(), Some(&Refusal::WrongCode));
    assert!(
        matches!(answers[21], Err(Refusal::LockedOut { .. })),
        "{:?}",
        answers[21]
    );
    for a in &admitted {
        assert!(f.fake.0.lock().unwrap().set.contains_key(&a.mac));
        assert!(f.store.allowed_until(a.mac, f.clock.now()).unwrap().is_some());
    }
    assert!(!f.fake.0.lock().unwrap().set.contains_key(&locked_mac));
    assert_eq!(f.open(), 10);
    let batches = f.fake.0.lock().unwrap().batches.clone();
    assert!(batches.iter().any(|&n| n > 1), "devices opened together: {batches:?}");
}
