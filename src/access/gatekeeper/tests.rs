use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::watch;

use super::*;
use crate::clients::AccessCode;
use crate::clock::ManualClock;
use crate::firewall::fake::FakeFirewall;
use crate::store::NewConsent;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn setup() -> (Store, ManualClock, FakeFirewall, Writer<FakeFirewall>) {
    let store = Store::open_in_memory().unwrap();
    let clock = ManualClock::new(t("2026-11-23T10:00:00Z"));
    store.record_policy("p", "text", clock.now()).unwrap();
    let course = store
        .add_course(
            "c",
            t("2026-11-23T09:00:00Z"),
            t("2026-11-23T16:00:00Z"),
            5,
            clock.now(),
            "test",
            || AccessCode::normalise("ABCDEFGH").unwrap(),
        )
        .unwrap();
    store
        .record_consent(&NewConsent {
            course_id: course.id,
            max_devices: 5,
            mac: "02:00:00:00:00:01".parse().unwrap(),
            ip: "192.0.2.10".into(),
            accepted_at: clock.now(),
            expires_at: course.ends_at,
            name: "n".into(),
            organisation: "o".into(),
            user_agent: "u".into(),
            policy_hash: "p".into(),
        })
        .unwrap();
    let fake = FakeFirewall::default();
    let writer = Writer::new(fake.clone(), store.clone(), Arc::new(clock.clone()), TEST_SPEC.clone());
    (store, clock, fake, writer)
}

#[tokio::test]
async fn reconcile_builds_the_set_from_the_store_and_drops_strangers() {
    let (_store, _clock, fake, writer) = setup();
    fake.0
        .lock()
        .unwrap()
        .set
        .insert("02:00:00:00:00:99".parse().unwrap(), SignedDuration::from_hours(1));
    assert_eq!(writer.reconcile_all().await.unwrap(), 1);
    let s = fake.0.lock().unwrap();
    assert_eq!(s.set.len(), 1);
    assert_eq!(
        s.set[&"02:00:00:00:00:01".parse().unwrap()],
        SignedDuration::from_hours(6)
    );
}

#[tokio::test]
async fn open_needs_a_consent_and_forgets_connections() {
    let (_store, _clock, fake, writer) = setup();
    writer.reconcile_all().await.unwrap();
    let (tx, rx) = watch::channel(false);
    let (handle, task) = writer.spawn(rx);
    handle
        .open(
            "02:00:00:00:00:01".parse().unwrap(),
            vec!["192.0.2.10".parse().unwrap()],
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        fake.0.lock().unwrap().forgotten,
        vec!["192.0.2.10".parse::<IpAddr>().unwrap()]
    );
    let err = handle
        .open(
            "02:00:00:00:00:02".parse().unwrap(),
            vec!["192.0.2.11".parse().unwrap()],
            99,
        )
        .await;
    assert!(matches!(err, Err(GatekeeperError::Store(StoreError::NotFound(_)))));
    assert!(
        !fake
            .0
            .lock()
            .unwrap()
            .set
            .contains_key(&"02:00:00:00:00:02".parse().unwrap())
    );
    tx.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn failed_conntrack_leaves_nothing_open() {
    let (store, clock, fake, writer) = setup();
    writer.reconcile_all().await.unwrap();
    let mac = "02:00:00:00:00:02".parse().unwrap();
    store
        .record_consent(&NewConsent {
            course_id: 1,
            max_devices: 5,
            mac,
            ip: "192.0.2.11".into(),
            accepted_at: clock.now(),
            expires_at: t("2026-11-23T16:00:00Z"),
            name: "n".into(),
            organisation: "o".into(),
            user_agent: "u".into(),
            policy_hash: "p".into(),
        })
        .unwrap();
    fake.0.lock().unwrap().fail_conntrack = true;
    let (_tx, rx) = watch::channel(false);
    let (handle, _task) = writer.spawn(rx);
    assert!(handle.open(mac, vec!["192.0.2.11".parse().unwrap()], 2).await.is_err());
    assert!(!fake.0.lock().unwrap().set.contains_key(&mac));
    assert_eq!(fake.0.lock().unwrap().set.len(), 1, "the other device is untouched");
    // The writer withdrew the consent itself, so nothing will re-open the device later.
    assert!(store.allowed_until(mac, clock.now()).unwrap().is_none());
}

#[tokio::test]
async fn watch_restores_a_deleted_table_and_removes_unconsented() {
    let (store, clock, fake, writer) = setup();
    writer.reconcile_all().await.unwrap();
    {
        let mut s = fake.0.lock().unwrap();
        s.table = false;
        s.set.clear();
    }
    writer.watch().await.unwrap();
    assert!(fake.0.lock().unwrap().table);
    assert_eq!(fake.0.lock().unwrap().set.len(), 1);
    // A chain flushed from outside: the listing differs, so the table is replaced.
    let replaced = fake.0.lock().unwrap().replaced;
    fake.0.lock().unwrap().chains = "flushed".into();
    writer.watch().await.unwrap();
    assert_eq!(fake.0.lock().unwrap().replaced, replaced + 1);
    writer.watch().await.unwrap();
    assert_eq!(fake.0.lock().unwrap().replaced, replaced + 1, "no change, no replace");
    fake.0
        .lock()
        .unwrap()
        .set
        .insert("02:00:00:00:00:77".parse().unwrap(), SignedDuration::from_hours(1));
    writer.watch().await.unwrap();
    assert_eq!(fake.0.lock().unwrap().set.len(), 1);
    // Revoked in the store but still in the set: the check closes it too.
    store
        .revoke("02:00:00:00:00:01".parse().unwrap(), clock.now(), "t")
        .unwrap();
    writer.watch().await.unwrap();
    assert!(fake.0.lock().unwrap().set.is_empty());
}
