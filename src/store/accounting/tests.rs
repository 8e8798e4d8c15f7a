use jiff::Timestamp;

use super::*;
use crate::clients::{AccessCode, Course};
use crate::store::NewConsent;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const MAC: &str = "02:99:00:00:00:01";

fn mac() -> MacAddr {
    MAC.parse().unwrap()
}

fn store(mode: Option<UserName>) -> (Store, Course) {
    let s = Store::open_in_memory().unwrap();
    if let Some(mode) = mode {
        s.set_accounting(mode);
    }
    s.record_policy("abc", "# Policy", t("2026-11-23T08:00:00Z")).unwrap();
    let c = course(&s, "Phonics", "2026-11-23T16:00:00Z", 0);
    (s, c)
}

/// A course running from 09:00 to `ends`, its codes drawn from `seed` on.
fn course(s: &Store, title: &str, ends: &str, seed: u8) -> Course {
    let mut n = seed;
    s.add_course(
        title,
        t("2026-11-23T09:00:00Z"),
        t(ends),
        5,
        t("2026-11-23T08:00:00Z"),
        "test",
        || {
            n += 1;
            AccessCode::from_random(&[n; 8]).unwrap()
        },
    )
    .unwrap()
}

fn accept(s: &Store, c: &Course, ip: &str, name: &str, at: &str) {
    s.record_consent(&NewConsent {
        course_id: c.id,
        max_devices: c.max_devices,
        mac: mac(),
        ip: ip.into(),
        accepted_at: t(at),
        expires_at: c.ends_at,
        name: name.into(),
        organisation: "Org".into(),
        user_agent: "UA".into(),
        policy_hash: "abc".into(),
    })
    .unwrap();
}

/// Every record waiting, oldest first, delivering each (as a server would take them).
fn drain(s: &Store) -> Vec<AccountingRecord> {
    let mut out = Vec::new();
    while let Some(p) = s.outbox_next(RADIUS).unwrap() {
        out.push(serde_json::from_str(&p.payload).unwrap());
        s.outbox_delivered(p.id).unwrap();
    }
    out
}

#[test]
fn nothing_is_written_while_accounting_is_off() {
    let (s, c) = store(None);
    accept(&s, &c, "192.0.2.10", "Ann", "2026-11-23T10:00:00Z");
    s.revoke(mac(), t("2026-11-23T10:05:00Z"), "staff").unwrap();
    assert!(s.outbox_next(RADIUS).unwrap().is_none());
    assert!(s.accounting_sessions().unwrap().is_empty());
    assert_eq!(s.account_all(t("2026-11-23T10:06:00Z")).unwrap(), (0, 0));
}

#[test]
fn an_accept_starts_a_session_and_a_revoke_stops_it_with_the_same_id() {
    let (s, c) = store(Some(UserName::Name));
    accept(&s, &c, "192.0.2.10", "Ann Example", "2026-11-23T10:00:00Z");
    let open = s.accounting_sessions().unwrap();
    assert_eq!(open.len(), 1);
    s.revoke(mac(), t("2026-11-23T10:05:00Z"), "staff").unwrap();
    assert!(s.accounting_sessions().unwrap().is_empty());
    let records = drain(&s);
    assert_eq!(records.len(), 2, "{records:?}");
    let (start, stop) = (&records[0], &records[1]);
    assert_eq!(start.status, AcctStatus::Start);
    assert_eq!(start.user_name, "Ann Example");
    assert_eq!(start.class, "Phonics");
    assert_eq!(start.mac, mac());
    assert_eq!(start.addresses.ipv4, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(start.session, open[0].session);
    assert_eq!(start.session.len(), 16);
    assert_eq!(stop.status, AcctStatus::Stop);
    assert_eq!(stop.session, start.session);
    assert_eq!(stop.cause, Some(StopCause::AdminReset));
    assert_eq!(stop.started_at, t("2026-11-23T10:00:00Z"));
    assert_eq!(stop.at, t("2026-11-23T10:05:00Z"));
}

#[test]
fn user_name_carries_what_the_school_chose() {
    for (mode, want) in [
        (UserName::Name, "Ann"),
        (UserName::Course, "Phonics"),
        (UserName::Device, "02-99-00-00-00-01"),
    ] {
        let (s, c) = store(Some(mode));
        accept(&s, &c, "192.0.2.10", "Ann", "2026-11-23T10:00:00Z");
        assert_eq!(drain(&s)[0].user_name, want, "{mode:?}");
    }
}

#[test]
fn an_exception_starts_once_its_address_is_seen() {
    let (s, _) = store(Some(UserName::Name));
    let now = t("2026-11-23T10:00:00Z");
    s.grant_exception(mac(), "speaker's laptop", "staff", now, t("2026-11-23T12:00:00Z"))
        .unwrap();
    assert!(drain(&s).is_empty(), "no address known yet, so no Start");
    let seen = Addresses::from_recent(&["fe80::1".parse().unwrap(), "192.0.2.20".parse().unwrap()]);
    s.account_addresses(mac(), seen, now).unwrap();
    let records = drain(&s);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].user_name, "02-99-00-00-00-01",
        "the reason is staff's note, never sent"
    );
    assert_eq!(records[0].class, EXCEPTION_CLASS);
    assert_eq!(records[0].addresses.ipv4, Some("192.0.2.20".parse().unwrap()));
    assert!(records[0].addresses.ipv6.is_empty(), "link-local is not reported");
}

#[test]
fn a_changed_address_is_a_stop_and_a_start_and_the_same_one_nothing() {
    let (s, c) = store(Some(UserName::Name));
    accept(&s, &c, "192.0.2.10", "Ann", "2026-11-23T10:00:00Z");
    let first = drain(&s);
    let now = t("2026-11-23T10:30:00Z");
    let same = Addresses::from_recent(&["192.0.2.10".parse().unwrap()]);
    s.account_addresses(mac(), same, now).unwrap();
    assert!(drain(&s).is_empty());
    // A second address, IPv6: the filter learns it.
    let v6 = Addresses::from_recent(&["192.0.2.10".parse().unwrap(), "2001:db8::5".parse().unwrap()]);
    s.account_addresses(mac(), v6, now).unwrap();
    let moved = drain(&s);
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert_eq!(
        (moved[0].status, moved[0].cause),
        (AcctStatus::Stop, Some(StopCause::NasRequest))
    );
    assert_eq!(moved[0].session, first[0].session);
    assert_eq!(moved[0].addresses.ipv6, Vec::<Ipv6Addr>::new());
    assert_eq!(moved[1].status, AcctStatus::Start);
    assert_ne!(moved[1].session, first[0].session);
    assert_eq!(moved[1].addresses.ipv4, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(
        moved[1].addresses.ipv6,
        vec!["2001:db8::5".parse::<Ipv6Addr>().unwrap()]
    );
    // A new lease: the newest IPv4 is the one reported; the IPv6 is kept.
    let lease = Addresses::from_recent(&["192.0.2.10".parse().unwrap(), "192.0.2.99".parse().unwrap()]);
    s.account_addresses(mac(), lease, now).unwrap();
    let moved = drain(&s);
    assert_eq!(moved.len(), 2);
    assert_eq!(moved[1].addresses.ipv4, Some("192.0.2.99".parse().unwrap()));
    assert_eq!(moved[1].addresses.ipv6.len(), 1);
    // The sweep keeps what the session has; it does not go back to the accept's address.
    s.account_all(t("2026-11-23T10:31:00Z")).unwrap();
    assert!(drain(&s).is_empty());
}

#[test]
fn access_that_ran_out_stops_its_session() {
    let (s, c) = store(Some(UserName::Name));
    accept(&s, &c, "192.0.2.10", "Ann", "2026-11-23T10:00:00Z");
    let start = drain(&s);
    // Still open: nothing.
    s.account_closed(&[mac()], t("2026-11-23T15:00:00Z")).unwrap();
    assert!(drain(&s).is_empty());
    s.account_closed(&[mac()], t("2026-11-23T16:00:01Z")).unwrap();
    let stop = drain(&s);
    assert_eq!(stop.len(), 1);
    assert_eq!(
        (stop[0].cause, &stop[0].session),
        (Some(StopCause::SessionTimeout), &start[0].session)
    );
}

#[test]
fn the_sweep_stops_what_ended_unseen_and_starts_what_is_open_without_a_session() {
    let (off, c) = store(None);
    accept(&off, &c, "192.0.2.10", "Ann", "2026-11-23T10:00:00Z");
    // Accounting turned on later: the sweep starts the device already open.
    off.set_accounting(UserName::Name);
    assert_eq!(off.account_all(t("2026-11-23T10:01:00Z")).unwrap(), (1, 1));
    let start = drain(&off);
    assert_eq!(start.len(), 1);
    assert_eq!(start[0].status, AcctStatus::Start);
    assert_eq!(start[0].addresses.ipv4, Some("192.0.2.10".parse().unwrap()));
    // The course ended while nobody looked: the sweep stops it.
    off.account_all(t("2026-11-23T17:00:00Z")).unwrap();
    let stop = drain(&off);
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0].status, AcctStatus::Stop);
    assert_eq!(stop[0].session, start[0].session);
    assert_eq!(
        stop[0].at, c.ends_at,
        "stopped when the course ended, not when the sweep saw it"
    );
}

#[test]
fn a_consent_that_runs_out_while_another_holds_the_device_changes_the_sessions_holder() {
    let (s, c) = store(Some(UserName::Name));
    let later = course(&s, "Evening class", "2026-11-23T20:00:00Z", 100);
    accept(&s, &later, "192.0.2.10", "Ann", "2026-11-23T10:00:00Z");
    accept(&s, &c, "192.0.2.10", "Ann", "2026-11-23T10:01:00Z");
    let records = drain(&s);
    assert_eq!(records.last().unwrap().class, "Phonics", "the latest accept holds it");
    s.account_closed(&[mac()], t("2026-11-23T16:00:01Z")).unwrap();
    let moved = drain(&s);
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert_eq!(
        (moved[0].status, moved[0].cause),
        (AcctStatus::Stop, Some(StopCause::SessionTimeout))
    );
    assert_eq!(
        (moved[1].status, moved[1].class.as_str()),
        (AcctStatus::Start, "Evening class")
    );
}

#[test]
fn ending_the_course_or_the_policy_stops_the_session() {
    let (s, c) = store(Some(UserName::Name));
    accept(&s, &c, "192.0.2.10", "Ann", "2026-11-23T10:00:00Z");
    s.end_course(c.id, t("2026-11-23T11:00:00Z"), "staff").unwrap();
    let records = drain(&s);
    assert_eq!(records.last().unwrap().cause, Some(StopCause::AdminReset));

    let (s, c) = store(Some(UserName::Name));
    accept(&s, &c, "192.0.2.10", "Ann", "2026-11-23T10:00:00Z");
    s.end_consents_to_other_policies("newer", t("2026-11-23T11:00:00Z"))
        .unwrap();
    let records = drain(&s);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].cause, Some(StopCause::NasRequest));
}

#[test]
fn erasure_stops_the_session_and_leaves_no_name_waiting() {
    let (s, c) = store(Some(UserName::Name));
    accept(&s, &c, "192.0.2.10", "Ann Example", "2026-11-23T10:00:00Z");
    s.erase(mac(), "asked", "dpo", t("2026-11-23T10:10:00Z")).unwrap();
    let records = drain(&s);
    assert_eq!(records.len(), 2, "the Start still waiting, and the Stop");
    assert_eq!(records[1].status, AcctStatus::Stop);
    for r in &records {
        assert_eq!(r.user_name, "02-99-00-00-00-01", "{r:?}");
    }
}

#[test]
fn a_refused_accept_writes_nothing() {
    let (s, c) = store(Some(UserName::Name));
    s.end_course(c.id, t("2026-11-23T09:30:00Z"), "staff").unwrap();
    let refused = s.record_consent(&NewConsent {
        course_id: c.id,
        max_devices: c.max_devices,
        mac: mac(),
        ip: "192.0.2.10".into(),
        accepted_at: t("2026-11-23T10:00:00Z"),
        expires_at: c.ends_at,
        name: "Ann".into(),
        organisation: "Org".into(),
        user_agent: "UA".into(),
        policy_hash: "abc".into(),
    });
    assert!(matches!(refused, Err(StoreError::CourseNotRunning)));
    assert!(drain(&s).is_empty());
}

#[test]
fn the_outbox_keeps_order_counts_failures_and_is_purged_by_retention() {
    let (s, c) = store(Some(UserName::Name));
    accept(&s, &c, "192.0.2.10", "Ann", "2026-11-23T10:00:00Z");
    s.revoke(mac(), t("2026-11-23T10:05:00Z"), "staff").unwrap();
    let backlog = s.outbox_backlog(RADIUS).unwrap();
    assert_eq!(backlog.pending, 2);
    assert_eq!(backlog.oldest, Some(t("2026-11-23T10:00:00Z")));
    let first = s.outbox_next(RADIUS).unwrap().unwrap();
    s.outbox_failed(first.id, "no answer").unwrap();
    let again = s.outbox_next(RADIUS).unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (first.id, 1), "a failure keeps it first");
    assert_eq!(
        s.outbox_backlog(RADIUS).unwrap().last_error.as_deref(),
        Some("no answer")
    );
    assert!(s.outbox_next("hub").unwrap().is_none(), "channels are apart");
    s.purge(jiff::SignedDuration::from_hours(24), t("2026-11-25T10:00:00Z"))
        .unwrap();
    assert_eq!(s.outbox_backlog(RADIUS).unwrap().pending, 0);
}

#[test]
fn an_accept_starts_with_every_address_the_neighbour_table_has_for_the_device() {
    let (s, c) = store(Some(UserName::Name));
    let attempt = |ip: &str| crate::store::Attempt {
        mac: mac(),
        ip: ip.into(),
        addresses: vec![
            "fe80::1".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
            "2001:db8::5".parse().unwrap(),
        ],
        now: t("2026-11-23T10:00:00Z"),
        since: t("2026-11-23T09:45:00Z"),
        max_wrong: 5,
        code: Some(c.code.clone()),
        empty: false,
        consent: {
            let (course, ip) = (c.clone(), ip.to_owned());
            Box::new(move |_| {
                Some(NewConsent {
                    course_id: course.id,
                    max_devices: course.max_devices,
                    mac: mac(),
                    ip: ip.clone(),
                    accepted_at: t("2026-11-23T10:00:00Z"),
                    expires_at: course.ends_at,
                    name: "Ann".into(),
                    organisation: "Org".into(),
                    user_agent: "UA".into(),
                    policy_hash: "abc".into(),
                })
            })
        },
    };
    // Accepted over IPv6: the Start has the device's IPv4 address too, so no second session
    // follows at once.
    let out = s.admit_all(&[attempt("2001:db8::5")]).unwrap();
    assert!(
        matches!(out[0], Ok(crate::store::Admission::Consented { .. })),
        "{out:?}"
    );
    let start = drain(&s);
    assert_eq!(start.len(), 1);
    assert_eq!(start[0].addresses.ipv4, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(
        start[0].addresses.ipv6,
        vec!["2001:db8::5".parse::<Ipv6Addr>().unwrap()]
    );
}
