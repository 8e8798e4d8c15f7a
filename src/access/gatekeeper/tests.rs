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

/// Issue 12: the check every second costs nothing that grows with the guests unless something
/// changed: no listing of the kernel's table or set while the firewall reports no outside
/// change; one full check, putting things right, when it does; and one a minute regardless.
#[tokio::test]
async fn the_tick_lists_the_kernel_only_after_an_outside_change_or_a_minute() {
    let (_store, _clock, fake, writer) = setup();
    writer.reconcile_all().await.unwrap();
    writer.tick().await.unwrap(); // the first tick looks once: nothing has been looked at yet
    let listings = fake.0.lock().unwrap().listings;
    for _ in 0..5 {
        writer.tick().await.unwrap();
    }
    assert_eq!(fake.0.lock().unwrap().listings, listings, "quiet ticks list nothing");
    // A stranger added from outside, and the change reported: the next tick removes it.
    let stranger: MacAddr = "02:00:00:00:00:77".parse().unwrap();
    {
        let mut s = fake.0.lock().unwrap();
        s.set.insert(stranger, SignedDuration::from_hours(1));
        s.outside.elements += 1;
    }
    writer.tick().await.unwrap();
    assert!(!fake.0.lock().unwrap().set.contains_key(&stranger));
    assert!(fake.0.lock().unwrap().listings > listings);
    // Unreported (lost events): found by the minute's safety check.
    fake.0
        .lock()
        .unwrap()
        .set
        .insert(stranger, SignedDuration::from_hours(1));
    writer.tick().await.unwrap();
    assert!(
        fake.0.lock().unwrap().set.contains_key(&stranger),
        "not yet: nothing reported"
    );
    *writer.last_full.lock().unwrap() = Instant::now() - FULL_CHECK_INTERVAL;
    writer.tick().await.unwrap();
    assert!(!fake.0.lock().unwrap().set.contains_key(&stranger));
    let status = writer.status.lock().unwrap().clone();
    assert_eq!(status.full_checks, 3);
    assert_eq!(status.checks, 9);
    // A chain changed from outside, and reported: the table is rebuilt.
    let replaced = fake.0.lock().unwrap().replaced;
    {
        let mut s = fake.0.lock().unwrap();
        s.chains = "flushed".into();
        s.outside.table += 1;
    }
    writer.tick().await.unwrap();
    assert_eq!(fake.0.lock().unwrap().replaced, replaced + 1);
}

/// Issue 12: access that runs out is noticed from memory, each second: the device is closed
/// and forgotten without listing the kernel; one extended meanwhile is kept.
#[tokio::test]
async fn access_that_runs_out_is_closed_without_listing_the_kernel() {
    let (store, clock, fake, writer) = setup();
    writer.reconcile_all().await.unwrap();
    writer.tick().await.unwrap();
    let listings = fake.0.lock().unwrap().listings;
    let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
    // The course ends at 16:00; at 16:00:01 the store no longer allows the device.
    clock.set(t("2026-11-23T16:00:01Z"));
    writer.tick().await.unwrap();
    assert!(!fake.0.lock().unwrap().set.contains_key(&mac), "closed at once");
    assert_eq!(lock(&writer.expiries).len(), 0);
    assert_eq!(fake.0.lock().unwrap().listings, listings);
    assert!(store.allowed_until(mac, clock.now()).unwrap().is_none());
}

#[test]
fn expiries_come_out_soonest_first_and_follow_changes() {
    let mut e = Expiries::default();
    let (a, b, c): (MacAddr, MacAddr, MacAddr) = (
        "02:00:00:00:00:0a".parse().unwrap(),
        "02:00:00:00:00:0b".parse().unwrap(),
        "02:00:00:00:00:0c".parse().unwrap(),
    );
    e.insert(a, t("2026-11-23T12:00:00Z"));
    e.insert(b, t("2026-11-23T11:00:00Z"));
    e.insert(c, t("2026-11-23T13:00:00Z"));
    e.insert(a, t("2026-11-23T14:00:00Z")); // extended
    e.remove(c);
    assert!(e.take_due(t("2026-11-23T10:59:59Z")).is_empty());
    assert_eq!(e.take_due(t("2026-11-23T13:30:00Z")), vec![b]);
    assert_eq!(e.take_due(t("2026-11-23T14:00:00Z")), vec![a]);
    assert_eq!(e.len(), 0);
    e.insert(a, t("2026-11-23T14:00:00Z"));
    e.insert(b, t("2026-11-23T14:00:00Z"));
    assert_eq!(e.replace_all(&[(b, t("2026-11-23T15:00:00Z"))]), vec![a]);
    assert_eq!(e.len(), 1);
}

/// Issue 12: the running writer makes the minute's check in the background (listing 50,000
/// elements must not hold up accepts): a stranger nobody reported is still found and removed,
/// and a device the store allows is left alone.
#[tokio::test]
async fn the_running_writer_finds_unreported_strangers_in_the_background() {
    let (_store, _clock, fake, writer) = setup();
    writer.reconcile_all().await.unwrap();
    *writer.last_full.lock().unwrap() = Instant::now() - FULL_CHECK_INTERVAL;
    let stranger: MacAddr = "02:00:00:00:00:77".parse().unwrap();
    fake.0
        .lock()
        .unwrap()
        .set
        .insert(stranger, SignedDuration::from_hours(1));
    let (tx, rx) = watch::channel(false);
    let (handle, task) = writer.spawn(rx);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.0.lock().unwrap().set.contains_key(&stranger) {
        assert!(Instant::now() < deadline, "the stranger was not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fake.0
            .lock()
            .unwrap()
            .set
            .contains_key(&"02:00:00:00:00:01".parse().unwrap())
    );
    assert!(handle.status().full_checks >= 1);
    tx.send(true).unwrap();
    task.await.unwrap();
}
