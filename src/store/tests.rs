use jiff::Timestamp;

use super::*;
use crate::clients::{AccessCode, MacAddr};
use crate::store::Role;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn codes() -> impl FnMut() -> AccessCode {
    let mut n = 0u8;
    move || {
        n += 1;
        AccessCode::from_random(&[n, n, n, n, n, n, n, n]).unwrap()
    }
}

fn consent(course: &Course, mac: &str, at: &str) -> NewConsent {
    NewConsent {
        course_id: course.id,
        max_devices: course.max_devices,
        mac: mac.parse().unwrap(),
        ip: "192.0.2.10".into(),
        accepted_at: t(at),
        expires_at: course.ends_at,
        name: "Ann".into(),
        organisation: "Org".into(),
        user_agent: "UA".into(),
        policy_hash: "abc".into(),
    }
}

use crate::clients::Course;

fn setup(max: u32) -> (Store, Course) {
    setup_on(Store::open_in_memory().unwrap(), max)
}

/// `setup` on a store of the caller's (a file, say).
fn setup_on(s: Store, max: u32) -> (Store, Course) {
    s.record_policy("abc", "# Policy", t("2026-11-23T08:00:00Z")).unwrap();
    let c = s
        .add_course(
            "Phonics",
            t("2026-11-23T09:00:00Z"),
            t("2026-11-23T16:00:00Z"),
            max,
            t("2026-11-23T08:00:00Z"),
            "test",
            codes(),
        )
        .unwrap();
    (s, c)
}

#[test]
fn timestamps_sort_as_text() {
    let a = ts(t("2026-11-23T09:00:00Z"));
    let b = ts(t("2026-11-23T09:00:00.5Z"));
    assert_eq!(a, "2026-11-23T09:00:00.000Z");
    assert!(a < b);
    assert_eq!(parse_ts(&b).unwrap(), t("2026-11-23T09:00:00.5Z"));
}

#[test]
fn codes_never_repeat() {
    let s = Store::open_in_memory().unwrap();
    let now = t("2026-11-23T08:00:00Z");
    let same = || AccessCode::normalise("ABCDEFGH").unwrap();
    s.add_course("a", now, now, 1, now, "test", same).unwrap();
    let mut n = 0;
    let second = s
        .add_course("b", now, now, 1, now, "test", || {
            n += 1;
            if n == 1 {
                AccessCode::normalise("ABCDEFGH").unwrap()
            } else {
                AccessCode::normalise("ABCDEFGJ").unwrap()
            }
        })
        .unwrap();
    assert_eq!(second.code.as_str(), "ABCDEFGJ");
    assert!(s.add_course("c", now, now, 1, now, "test", same).is_err());
    assert_eq!(s.course_by_code(&same()).unwrap().unwrap().title, "a");
}

#[test]
fn consent_sessions_and_capacity() {
    let (s, c) = setup(2);
    s.record_consent(&consent(&c, "02:00:00:00:00:01", "2026-11-23T09:05:00Z"))
        .unwrap();
    // The same device again does not take a second place.
    s.record_consent(&consent(&c, "02:00:00:00:00:01", "2026-11-23T09:06:00Z"))
        .unwrap();
    s.record_consent(&consent(&c, "02:00:00:00:00:02", "2026-11-23T09:07:00Z"))
        .unwrap();
    assert!(matches!(
        s.record_consent(&consent(&c, "02:00:00:00:00:03", "2026-11-23T09:08:00Z")),
        Err(StoreError::CourseFull)
    ));
    let now = t("2026-11-23T10:00:00Z");
    let sessions = s.sessions(now).unwrap();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions[0].policy_hash, "abc");
    assert_eq!(s.allowed(now).unwrap().len(), 2);
    let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
    assert_eq!(s.allowed_until(mac, now).unwrap(), Some(c.ends_at));
    // After the course's end nothing is open, without anyone acting.
    assert!(s.sessions(t("2026-11-23T16:00:00Z")).unwrap().is_empty());
    assert!(s.allowed(t("2026-11-23T16:00:00Z")).unwrap().is_empty());
}

#[test]
fn revoke_and_end_course() {
    let (s, c) = setup(5);
    s.record_consent(&consent(&c, "02:00:00:00:00:01", "2026-11-23T09:05:00Z"))
        .unwrap();
    s.record_consent(&consent(&c, "02:00:00:00:00:02", "2026-11-23T09:05:00Z"))
        .unwrap();
    let now = t("2026-11-23T10:00:00Z");
    assert_eq!(s.revoke("02:00:00:00:00:01".parse().unwrap(), now, "test").unwrap(), 1);
    assert_eq!(s.revoke("02:00:00:00:00:01".parse().unwrap(), now, "test").unwrap(), 0);
    let (ended, macs) = s.end_course(c.id, now, "test").unwrap();
    assert_eq!(ended.ended_early_at, Some(now));
    assert_eq!(macs, vec!["02:00:00:00:00:02".parse().unwrap()]);
    assert!(s.allowed(now).unwrap().is_empty());
    assert!(matches!(s.end_course(99, now, "test"), Err(StoreError::NotFound(_))));
}

const DEV: &str = "02:00:00:00:00:0d";

#[test]
fn code_attempts_lock_out_atomically_per_device_in_window() {
    let s = Store::open_in_memory().unwrap();
    let since = t("2026-11-23T08:59:00Z");
    for m in 0..4 {
        let id = s
            .begin_code_attempt(DEV, "ip", t(&format!("2026-11-23T09:0{m}:00Z")), since, 5)
            .unwrap()
            .unwrap();
        s.finish_code_attempt(id, "wrong-code", t(&format!("2026-11-23T09:0{m}:01Z")))
            .unwrap();
    }
    // Right or empty codes do not count.
    let ok = s
        .begin_code_attempt(DEV, "ip", t("2026-11-23T09:04:30Z"), since, 5)
        .unwrap()
        .unwrap();
    s.finish_code_attempt(ok, "right-code", t("2026-11-23T09:04:31Z"))
        .unwrap();
    // A pending (unfinished) attempt counts: the fifth slot is taken until it finishes.
    s.begin_code_attempt(DEV, "ip", t("2026-11-23T09:05:00Z"), since, 5)
        .unwrap()
        .unwrap();
    let (n, oldest) = s
        .begin_code_attempt(DEV, "ip", t("2026-11-23T09:05:30Z"), since, 5)
        .unwrap()
        .unwrap_err();
    assert_eq!((n, oldest), (5, Some(t("2026-11-23T09:00:00Z"))));
    // A pending attempt older than a minute (its request died) no longer counts.
    assert!(
        s.begin_code_attempt(DEV, "ip", t("2026-11-23T09:06:30Z"), since, 5)
            .unwrap()
            .is_ok()
    );
    // Other devices and later windows are unaffected.
    assert!(
        s.begin_code_attempt("other", "ip", t("2026-11-23T09:06:00Z"), since, 5)
            .unwrap()
            .is_ok()
    );
    assert!(
        s.begin_code_attempt(DEV, "ip", t("2026-11-23T09:20:00Z"), t("2026-11-23T09:10:00Z"), 5)
            .unwrap()
            .is_ok()
    );
}

#[test]
fn ended_course_and_revoked_device_cannot_consent() {
    let (s, c) = setup(5);
    let mac = "02:00:00:00:00:01";
    s.record_consent(&consent(&c, mac, "2026-11-23T09:05:00Z")).unwrap();
    s.revoke(mac.parse().unwrap(), t("2026-11-23T09:10:00Z"), "t").unwrap();
    assert!(matches!(
        s.record_consent(&consent(&c, mac, "2026-11-23T09:11:00Z")),
        Err(StoreError::RevokedForCourse)
    ));
    assert!(matches!(
        s.record_consent(&consent(&c, "02:00:00:00:00:02", "2026-11-23T08:00:00Z")),
        Err(StoreError::CourseNotRunning)
    ));
    s.end_course(c.id, t("2026-11-23T10:00:00Z"), "test").unwrap();
    assert!(matches!(
        s.record_consent(&consent(&c, "02:00:00:00:00:02", "2026-11-23T10:01:00Z")),
        Err(StoreError::CourseNotRunning)
    ));
    assert_eq!(
        s.addresses_of(mac.parse().unwrap()).unwrap(),
        vec!["192.0.2.10".to_owned()]
    );
}

#[test]
fn file_store_survives_reopen_and_reads_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    {
        let (s, _) = (Store::open(&path).unwrap(), ());
        s.add_course(
            "x",
            t("2026-11-23T09:00:00Z"),
            t("2026-11-23T16:00:00Z"),
            1,
            t("2026-11-23T08:00:00Z"),
            "test",
            codes(),
        )
        .unwrap();
    }
    let ro = Store::open_read_only(&path).unwrap();
    assert_eq!(ro.courses().unwrap().len(), 1);
    assert!(ro.check_writable().is_err());
    let sync: i64 = Store::open(&path)
        .unwrap()
        .lock()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous must be FULL");
}

#[test]
fn a_new_policy_ends_consents_to_the_old_one() {
    let (s, c) = setup(5);
    s.record_consent(&consent(&c, "02:00:00:00:00:01", "2026-11-23T09:05:00Z"))
        .unwrap();
    let now = t("2026-11-23T10:00:00Z");
    assert!(
        s.end_consents_to_other_policies("abc", now).unwrap().is_empty(),
        "same policy: nothing ends"
    );
    s.record_policy("def", "# Policy v2", now).unwrap();
    assert_eq!(
        s.end_consents_to_other_policies("def", now).unwrap(),
        vec!["02:00:00:00:00:01".parse().unwrap()]
    );
    assert!(s.allowed(now).unwrap().is_empty());
    // Accepting the new policy is allowed (this is not a staff revocation).
    let mut again = consent(&c, "02:00:00:00:00:01", "2026-11-23T10:01:00Z");
    again.policy_hash = "def".into();
    s.record_consent(&again).unwrap();
}

#[test]
fn exceptions_allow_a_device_until_ended_or_revoked() {
    let s = Store::open_in_memory().unwrap();
    let now = t("2026-11-23T10:00:00Z");
    let mac: MacAddr = "02:00:00:00:00:05".parse().unwrap();
    let id = s
        .grant_exception(
            mac,
            "contractor laptop, approved by the head",
            "office",
            now,
            t("2026-11-23T18:00:00Z"),
        )
        .unwrap();
    assert_eq!(s.allowed(now).unwrap(), vec![(mac, t("2026-11-23T18:00:00Z"))]);
    assert_eq!(s.allowed_until(mac, now).unwrap(), Some(t("2026-11-23T18:00:00Z")));
    assert_eq!(s.exceptions(now).unwrap()[0].granted_by, "office");
    assert_eq!(s.end_exception(id, now, "office").unwrap(), mac);
    assert!(s.allowed(now).unwrap().is_empty());
    assert!(matches!(
        s.end_exception(id, now, "office"),
        Err(StoreError::NotFound(_))
    ));
    // Revoking a device ends its exceptions too.
    s.grant_exception(mac, "again", "office", now, t("2026-11-23T18:00:00Z"))
        .unwrap();
    assert_eq!(s.revoke(mac, now, "dsl").unwrap(), 1);
    assert!(s.allowed(now).unwrap().is_empty());
    // And an exception past its time is not open.
    s.grant_exception(mac, "short", "office", now, t("2026-11-23T10:30:00Z"))
        .unwrap();
    assert!(s.allowed(t("2026-11-23T10:30:00Z")).unwrap().is_empty());
}

#[test]
fn admin_sessions_end_after_idle_time_and_with_their_account() {
    let s = Store::open_in_memory().unwrap();
    let t0 = t("2026-11-23T09:00:00Z");
    s.add_admin("office", Role::Staff, "$argon2id$hash", t0).unwrap();
    s.create_session("h1", "office", "csrf1", t0).unwrap();
    let idle = jiff::SignedDuration::from_mins(30);
    // Used 20 minutes later: still signed in, and the idle clock restarts.
    let t1 = t("2026-11-23T09:20:00Z");
    assert_eq!(s.use_session("h1", t1 - idle, t1).unwrap().unwrap().csrf, "csrf1");
    let t2 = t("2026-11-23T09:45:00Z");
    assert!(
        s.use_session("h1", t2 - idle, t2).unwrap().is_some(),
        "25 min after the last use"
    );
    // 31 minutes without a request: ended, and gone for good.
    let t3 = t("2026-11-23T10:16:00Z");
    assert!(s.use_session("h1", t3 - idle, t3).unwrap().is_none());
    assert!(s.use_session("h1", t3 - idle, t3).unwrap().is_none());
    // Removing the account ends its sessions.
    s.create_session("h2", "office", "csrf2", t3).unwrap();
    assert!(s.remove_admin("office", t3).unwrap());
    assert!(s.use_session("h2", t3 - idle, t3).unwrap().is_none());
}

fn chained() -> (Store, Course) {
    let (s, c) = setup(5);
    s.record_consent(&consent(&c, "02:00:00:00:00:01", "2026-11-23T09:05:00Z"))
        .unwrap();
    s.record_consent(&consent(&c, "02:00:00:00:00:02", "2026-11-23T09:06:00Z"))
        .unwrap();
    s.revoke("02:00:00:00:00:01".parse().unwrap(), t("2026-11-23T10:00:00Z"), "dsl")
        .unwrap();
    (s, c)
}

#[test]
fn the_event_log_is_a_hash_chain_that_verifies() {
    let (s, _) = chained();
    let ok = s.verify().unwrap().unwrap();
    // course-added, two consents, one revoke.
    assert_eq!(ok.events, 4);
    assert_eq!(ok.head, s.chain_head().unwrap());
    assert_ne!(ok.head, GENESIS);
}

#[test]
fn verify_names_an_edited_or_deleted_event() {
    let (s, _) = chained();
    s.lock()
        .execute(
            "UPDATE events SET detail = replace(detail, 'dsl', 'nobody') WHERE kind = 'revoked'",
            [],
        )
        .unwrap();
    let brk = s.verify().unwrap().unwrap_err();
    assert_eq!(brk.event, 4);
    assert!(brk.problem.contains("edited"), "{brk}");

    let (s, _) = chained();
    s.lock().execute("DELETE FROM events WHERE id = 2", []).unwrap();
    let brk = s.verify().unwrap().unwrap_err();
    assert_eq!(brk.event, 3, "the event after the gap");
    assert!(brk.problem.contains("link"), "{brk}");
}

#[test]
fn verify_catches_an_edited_or_deleted_consent() {
    let (s, _) = chained();
    s.lock()
        .execute("UPDATE consents SET name = 'Someone Else' WHERE id = 2", [])
        .unwrap();
    let brk = s.verify().unwrap().unwrap_err();
    assert!(
        brk.problem.contains("consent 2") && brk.problem.contains("name"),
        "{brk}"
    );

    let (s, _) = chained();
    // A tamperer with the sqlite3 shell would switch foreign keys off first.
    s.lock()
        .execute_batch("PRAGMA foreign_keys = OFF; UPDATE consents SET policy_hash = 'other' WHERE id = 1;")
        .unwrap();
    assert!(s.verify().unwrap().unwrap_err().problem.contains("policy version"));

    let (s, _) = chained();
    s.lock().execute("DELETE FROM consents WHERE id = 1", []).unwrap();
    assert!(
        s.verify()
            .unwrap()
            .unwrap_err()
            .problem
            .contains("consent 1 was deleted")
    );
}

#[test]
fn events_written_before_the_chain_are_sealed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    {
        let s = Store::open(&path).unwrap();
        s.add_course(
            "x",
            t("2026-11-23T09:00:00Z"),
            t("2026-11-23T16:00:00Z"),
            1,
            t("2026-11-23T08:00:00Z"),
            "test",
            codes(),
        )
        .unwrap();
        // As a database from before migration 4 would look.
        s.lock()
            .execute("UPDATE events SET prev_hash = NULL, hash = NULL", [])
            .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.verify().unwrap().unwrap().events, 1);
}

#[test]
fn events_name_devices_only_through_an_erasable_salted_link() {
    let (s, _) = chained();
    let details: Vec<String> = {
        let conn = s.lock();
        let mut stmt = conn.prepare("SELECT detail FROM events").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        details.iter().all(|d| !d.contains("02:00:00:00:00")),
        "no MAC in any event: {details:?}"
    );
    // Editing the device an event names is caught.
    s.lock()
        .execute("UPDATE event_subjects SET mac = '02:00:00:00:00:09'", [])
        .unwrap();
    let brk = s.verify().unwrap().unwrap_err();
    assert_eq!(brk.event, 4);
    assert!(brk.problem.contains("device"), "{brk}");
    // So is detaching it without an erasure.
    let (s, _) = chained();
    s.lock().execute("DELETE FROM event_subjects", []).unwrap();
    assert!(s.verify().unwrap().unwrap_err().problem.contains("without an erasure"));
}

#[test]
fn erase_blanks_one_device_keeps_the_skeleton_and_verify_passes() {
    let (s, c) = chained();
    let (one, two): (MacAddr, MacAddr) = (
        "02:00:00:00:00:01".parse().unwrap(),
        "02:00:00:00:00:02".parse().unwrap(),
    );
    let id = s
        .begin_code_attempt(
            &one.to_string(),
            "ip",
            t("2026-11-23T09:01:00Z"),
            t("2026-11-23T08:00:00Z"),
            5,
        )
        .unwrap()
        .unwrap();
    s.finish_code_attempt(id, "wrong-code", t("2026-11-23T09:01:01Z"))
        .unwrap();
    s.grant_exception(
        one,
        "Ann's laptop",
        "dsl",
        t("2026-11-23T10:30:00Z"),
        t("2026-11-23T18:00:00Z"),
    )
    .unwrap();
    let now = t("2026-11-23T11:00:00Z");
    let erased = s.erase(one, "subject request 42", "dpo", now).unwrap();
    assert_eq!(erased.consents, vec![1]);
    assert_eq!(erased.exceptions.len(), 1);
    assert_eq!(
        erased.events.len(),
        3,
        "wrong code, revoke, exception granted: {erased:?}"
    );
    assert_eq!(erased.code_attempts, 1);
    assert_eq!(erased.sessions_ended, 1, "the open exception");
    assert!(s.allowed_until(one, now).unwrap().is_none());

    let subject = s.subject(&one.to_string()).unwrap();
    for key in ["consents", "exceptions", "code_attempts", "events"] {
        assert_eq!(subject[key], serde_json::json!([]), "{key}: {subject}");
    }
    let dump = s.subject("").unwrap().to_string();
    for personal in ["Ann's laptop", "192.0.2.10", "02:00:00:00:00:01"] {
        assert!(!dump.contains(personal), "{personal} left in {dump}");
    }
    // The skeleton stays: the consent row with its course, times and policy.
    let kept: (i64, String, String) = s
        .lock()
        .query_row(
            "SELECT course_id, accepted_at, name FROM consents WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(kept, (c.id, "2026-11-23T09:05:00.000Z".to_owned(), String::new()));
    // The other device is untouched, the chain verifies and records the erasure.
    assert_eq!(s.subject(&two.to_string()).unwrap()["consents"][0]["name"], "Ann");
    s.verify().unwrap().unwrap();
    let last: String = s
        .lock()
        .query_row("SELECT detail FROM events ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert!(
        last.contains("subject request 42") && last.contains("\"by\":\"dpo\""),
        "{last}"
    );
    // Nothing left to erase is an error, not an empty record.
    assert!(matches!(
        s.erase(one, "again", "dpo", now),
        Err(StoreError::NotFound(_))
    ));
    // Blanking another consent by hand is caught: only the erasure record covers consent 1.
    s.lock()
        .execute("UPDATE consents SET name = '', erased_at = 'x' WHERE id = 2", [])
        .unwrap();
    assert!(
        s.verify()
            .unwrap()
            .unwrap_err()
            .problem
            .contains("consent 2 was blanked")
    );
}

#[test]
fn purge_removes_old_records_records_the_head_and_verify_passes() {
    let (s, c) = chained();
    let old_head = s.chain_head().unwrap();
    // A second course a year later, still running at the purge.
    let later = s
        .add_course(
            "Maths",
            t("2027-12-01T09:00:00Z"),
            t("2027-12-01T16:00:00Z"),
            5,
            t("2027-11-30T08:00:00Z"),
            "test",
            codes(),
        )
        .unwrap();
    s.record_consent(&consent(&later, "02:00:00:00:00:03", "2027-12-01T09:05:00Z"))
        .unwrap();
    let now = t("2027-12-01T10:00:00Z");
    let year = jiff::SignedDuration::from_hours(24 * 365);

    let plan = s.purge_plan(year, now).unwrap();
    assert_eq!(plan.events, 4, "{plan:?}");
    assert_eq!(plan.continues_from.as_deref(), Some(old_head.as_str()));
    assert_eq!((plan.consents_deleted, plan.consents_blanked), (2, 0));
    assert_eq!(s.verify().unwrap().unwrap().events, 6, "a plan removes nothing");

    let done = s.purge(year, now).unwrap();
    assert_eq!(done, plan);
    let ok = s.verify().unwrap().unwrap();
    assert_eq!(ok.events, 3, "course added, consent, purge");
    assert_eq!(ok.continues_from.as_deref(), Some(old_head.as_str()));
    assert!(
        s.subject("02:00:00:00:00:01").unwrap()["consents"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.subject("02:00:00:00:00:03").unwrap()["consents"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let _ = c;
    // Deleting the oldest remaining event is not a purge: the chain no longer starts where one
    // left it.
    let first: i64 = s
        .lock()
        .query_row("SELECT min(id) FROM events", [], |r| r.get(0))
        .unwrap();
    s.lock().execute("DELETE FROM events WHERE id = ?1", [first]).unwrap();
    assert!(s.verify().unwrap().unwrap_err().problem.contains("does not start"));
}

/// `setup`'s course with consent 1 (02:..:01), and a year-long course with consent 2
/// (02:..:02): its consent is older than a purge's cut-off in 2027, but its session still runs.
fn a_long_session() -> (Store, Course) {
    let (s, c) = setup(5);
    let long = s
        .add_course(
            "Apprenticeship",
            t("2026-11-23T09:00:00Z"),
            t("2028-01-01T00:00:00Z"),
            5,
            t("2026-11-23T08:00:00Z"),
            "test",
            codes(),
        )
        .unwrap();
    s.record_consent(&consent(&c, "02:00:00:00:00:01", "2026-11-23T09:05:00Z"))
        .unwrap();
    s.record_consent(&consent(&long, "02:00:00:00:00:02", "2026-11-23T09:06:00Z"))
        .unwrap();
    (s, c)
}

#[test]
fn purge_keeps_what_a_running_session_needs_and_never_reuses_ids() {
    let (s, c) = a_long_session();
    let year = jiff::SignedDuration::from_hours(24 * 365);
    s.record_consent(&consent(&c, "02:00:00:00:00:04", "2026-11-23T09:07:00Z"))
        .unwrap();
    let now = t("2027-12-01T10:00:00Z");
    let p = s.purge(year, now).unwrap();
    // Events up to the long course's consent go; the later short consent's event stays, so its
    // row stays too, blanked.
    assert_eq!((p.events, p.consents_deleted, p.consents_blanked), (3, 1, 1), "{p:?}");
    s.verify().unwrap().unwrap();
    assert!(
        s.allowed_until("02:00:00:00:00:02".parse().unwrap(), now)
            .unwrap()
            .is_some()
    );
    // A second purge once everything is old removes the rest and the chain still verifies.
    let later = t("2029-06-01T00:00:00Z");
    let p = s.purge(year, later).unwrap();
    assert_eq!(p.first_kept_event, None, "{p:?}");
    let ok = s.verify().unwrap().unwrap();
    assert_eq!(ok.events, 1, "only the last purge's own event");
    assert!(p.continues_from.is_some());
    assert_eq!(ok.continues_from, p.continues_from, "linked to the chain before it");
    let max_consent: i64 = s
        .lock()
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'consents'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(max_consent, 3, "AUTOINCREMENT remembers ids the purge removed");
    // Nothing left to purge: nothing happens and nothing is recorded.
    assert!(s.purge(year, later).unwrap().is_empty());
    assert_eq!(s.verify().unwrap().unwrap().events, 1);
}

#[test]
fn an_erased_consent_that_names_a_device_again_is_caught() {
    let (s, _) = chained();
    let one: MacAddr = "02:00:00:00:00:01".parse().unwrap();
    s.erase(one, "request", "dpo", t("2026-11-23T11:00:00Z")).unwrap();
    s.verify().unwrap().unwrap();
    // Covered by the erasure record, but given a MAC back: allowed() would match it.
    s.lock()
        .execute("UPDATE consents SET mac = '02:00:00:00:00:09' WHERE id = 1", [])
        .unwrap();
    let brk = s.verify().unwrap().unwrap_err();
    assert!(
        brk.problem
            .contains("consent 1 is marked erased but still holds personal fields"),
        "{brk}"
    );
}

/// Issue 10: a store whose every kind of session has ended honestly: consent 1 revoked (event
/// 4), consent 2 ended with its course (event 5), exception 1 open, exception 2 ended by staff,
/// exception 3 revoked with its device.
fn ended() -> Store {
    let (s, c) = chained();
    s.end_course(c.id, t("2026-11-23T10:30:00Z"), "office").unwrap();
    let (five, six): (MacAddr, MacAddr) = (
        "02:00:00:00:00:05".parse().unwrap(),
        "02:00:00:00:00:06".parse().unwrap(),
    );
    let (now, until) = (t("2026-11-23T11:00:00Z"), t("2026-11-23T18:00:00Z"));
    s.grant_exception(five, "contractor", "office", now, until).unwrap();
    let two = s.grant_exception(six, "visitor", "office", now, until).unwrap();
    s.end_exception(two, t("2026-11-23T11:30:00Z"), "office").unwrap();
    s.grant_exception(six, "again", "office", t("2026-11-23T12:00:00Z"), until)
        .unwrap();
    s.revoke(six, t("2026-11-23T12:30:00Z"), "dsl").unwrap();
    s.verify().unwrap().unwrap();
    s
}

/// Applies `sql` to a fresh `ended()` store and checks that verify names `problem`.
fn caught(sql: &str, problem: &str) -> ChainBreak {
    let s = ended();
    s.lock().execute_batch(sql).unwrap();
    let brk = s.verify().unwrap().unwrap_err();
    assert!(brk.problem.contains(problem), "{sql}: {brk}");
    brk
}

#[test]
fn issue_10_verify_catches_a_consent_reopened_or_ended_by_hand() {
    let reopen = "UPDATE consents SET ended_at = NULL, end_reason = NULL, ended_by = NULL WHERE id =";
    assert_eq!(
        caught(&format!("{reopen} 1"), "consent 1 was reopened").event,
        4,
        "the revoke"
    );
    assert_eq!(
        caught(&format!("{reopen} 2"), "consent 2 was reopened").event,
        5,
        "the course's end"
    );
    for (sql, problem) in [
        // A revocation turned into a course's end lets the device accept again.
        (
            "UPDATE consents SET end_reason = 'course ended' WHERE id = 1",
            "consent 1 no longer matches the event that ended it (end reason was changed)",
        ),
        (
            "UPDATE consents SET ended_by = 'nobody' WHERE id = 2",
            "(who ended it was changed)",
        ),
        (
            "UPDATE consents SET ended_at = '2026-11-23T10:45:00.000Z' WHERE id = 2",
            "(end time was changed)",
        ),
    ] {
        caught(sql, problem);
    }

    // An open consent marked revoked by hand: the device could never accept again.
    let (s, c) = setup(5);
    s.record_consent(&consent(&c, "02:00:00:00:00:01", "2026-11-23T09:05:00Z"))
        .unwrap();
    s.lock()
        .execute("UPDATE consents SET end_reason = 'revoked' WHERE id = 1", [])
        .unwrap();
    let brk = s.verify().unwrap().unwrap_err();
    assert_eq!(brk.event, 2, "the consent's own event: {brk}");
    assert!(
        brk.problem.contains("consent 1 is marked ended but no event ended it"),
        "{brk}"
    );
}

#[test]
fn issue_10_verify_catches_an_exception_lengthened_reopened_or_forged() {
    let reopen = "UPDATE exceptions SET ended_at = NULL, end_reason = NULL WHERE id =";
    for (sql, problem) in [
        (
            "UPDATE exceptions SET until = '2027-11-23T18:00:00.000Z' WHERE id = 1",
            "exception 1 no longer matches its event (its end was changed)",
        ),
        (&format!("{reopen} 2"), "exception 2 was reopened"),
        // Revoked with its device.
        (&format!("{reopen} 3"), "exception 3 was reopened"),
        (
            "UPDATE exceptions SET end_reason = 'erased' WHERE id = 2",
            "exception 2 no longer matches the event that ended it (end reason was changed)",
        ),
        (
            "UPDATE exceptions SET ended_at = '2026-11-23T11:30:00.000Z', end_reason = 'ended by staff' WHERE id = 1",
            "exception 1 is marked ended but no event ended it",
        ),
        // Another device in an open exception's row.
        (
            "UPDATE exceptions SET mac = '02:00:00:00:00:07' WHERE id = 1",
            "(device or reason was changed)",
        ),
        (
            "UPDATE exceptions SET granted_by = 'head' WHERE id = 1",
            "(who granted it was changed)",
        ),
        ("DELETE FROM exceptions WHERE id = 2", "exception 2 was deleted"),
        (
            "UPDATE exceptions SET mac = '', reason = '', erased_at = 'x' WHERE id = 1",
            "exception 1 was blanked without an erasure record",
        ),
    ] {
        caught(sql, problem);
    }
    let forged = "INSERT INTO exceptions (mac, reason, granted_by, granted_at, until)
         VALUES ('02:00:00:00:00:07', 'forged', 'office', '2026-11-23T11:00:00.000Z', '2027-01-01T00:00:00.000Z')";
    assert_eq!(caught(forged, "exception 4 has no event in the chain").event, 0);
}

#[test]
fn issue_10_every_honest_ending_records_its_rows_and_verifies() {
    let (s, c) = setup(5);
    let last = |s: &Store| -> serde_json::Value {
        let detail: String = s
            .lock()
            .query_row("SELECT detail FROM events ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
            .unwrap();
        serde_json::from_str(&detail).unwrap()
    };
    let mac = |n: u8| -> MacAddr { format!("02:00:00:00:00:0{n}").parse().unwrap() };
    for n in 1..=4 {
        s.record_consent(&consent(&c, &mac(n).to_string(), &format!("2026-11-23T09:0{n}:00Z")))
            .unwrap();
    }
    s.withdraw_consent(4, t("2026-11-23T09:05:00Z"), "firewall error")
        .unwrap();
    assert_eq!(last(&s)["ended"]["consents"], serde_json::json!([4]));
    s.verify().unwrap().unwrap();
    // Withdrawing it again ends nothing, and says so.
    s.withdraw_consent(4, t("2026-11-23T09:06:00Z"), "firewall error")
        .unwrap();
    assert_eq!(last(&s)["ended"]["consents"], serde_json::json!([]));
    s.verify().unwrap().unwrap();

    s.grant_exception(
        mac(1),
        "laptop",
        "office",
        t("2026-11-23T09:10:00Z"),
        t("2026-11-23T18:00:00Z"),
    )
    .unwrap();
    s.revoke(mac(1), t("2026-11-23T10:00:00Z"), "dsl").unwrap();
    assert_eq!(
        last(&s)["ended"],
        serde_json::json!({"consents": [1], "exceptions": [1], "end_reason": "revoked", "ended_by": "dsl"})
    );
    s.verify().unwrap().unwrap();

    s.record_policy("def", "# Policy v2", t("2026-11-23T10:10:00Z"))
        .unwrap();
    s.end_consents_to_other_policies("def", t("2026-11-23T10:10:00Z"))
        .unwrap();
    assert_eq!(last(&s)["ended"]["consents"], serde_json::json!([2, 3]));
    s.verify().unwrap().unwrap();

    let mut again = consent(&c, &mac(2).to_string(), "2026-11-23T10:20:00Z");
    again.policy_hash = "def".into();
    s.record_consent(&again).unwrap();
    s.end_course(c.id, t("2026-11-23T10:30:00Z"), "office").unwrap();
    assert_eq!(last(&s)["ended"]["consents"], serde_json::json!([5]));
    s.verify().unwrap().unwrap();

    let x = s
        .grant_exception(
            mac(6),
            "visitor",
            "office",
            t("2026-11-23T11:00:00Z"),
            t("2026-11-23T18:00:00Z"),
        )
        .unwrap();
    s.end_exception(x, t("2026-11-23T11:30:00Z"), "office").unwrap();
    assert_eq!(last(&s)["ended"]["exceptions"], serde_json::json!([x]));
    s.grant_exception(
        mac(6),
        "again",
        "office",
        t("2026-11-23T12:00:00Z"),
        t("2026-11-23T18:00:00Z"),
    )
    .unwrap();
    s.verify().unwrap().unwrap();
    s.erase(mac(6), "request", "dpo", t("2026-11-23T12:30:00Z")).unwrap();
    assert_eq!(last(&s)["ended"]["exceptions"], serde_json::json!([x + 1]));
    s.verify().unwrap().unwrap();

    // A year later everything goes, and what is left verifies.
    let year = jiff::SignedDuration::from_hours(24 * 365);
    s.purge(year, t("2027-12-01T00:00:00Z")).unwrap();
    s.verify().unwrap().unwrap();
}

#[test]
fn issue_10_a_purge_keeps_endings_and_exceptions_checkable() {
    let (s, _) = a_long_session();
    let year = jiff::SignedDuration::from_hours(24 * 365);
    // Kept (the long consent's event keeps everything after it), naming consent 1, which goes.
    s.revoke("02:00:00:00:00:01".parse().unwrap(), t("2026-11-23T10:00:00Z"), "dsl")
        .unwrap();
    let five: MacAddr = "02:00:00:00:00:05".parse().unwrap();
    // A short exception whose grant stays but whose row goes, and a long one that stays.
    s.grant_exception(
        five,
        "day pass",
        "office",
        t("2026-11-23T10:00:00Z"),
        t("2026-11-23T18:00:00Z"),
    )
    .unwrap();
    let long_pass = s
        .grant_exception(
            five,
            "contractor",
            "office",
            t("2026-11-23T10:00:00Z"),
            t("2028-01-01T00:00:00Z"),
        )
        .unwrap();
    let p = s.purge(year, t("2027-12-01T10:00:00Z")).unwrap();
    assert_eq!((p.consents_deleted, p.exceptions), (1, 1), "{p:?}");
    s.verify().unwrap().unwrap();
    assert!(s.allowed_until(five, t("2027-12-01T10:00:00Z")).unwrap().is_some());
    // The kept exception's device is still checked after the purge.
    s.lock()
        .execute(
            "UPDATE exceptions SET mac = '02:00:00:00:00:07' WHERE id = ?1",
            [long_pass],
        )
        .unwrap();
    let brk = s.verify().unwrap().unwrap_err();
    assert!(brk.problem.contains("(device or reason was changed)"), "{brk}");
    s.lock()
        .execute("DELETE FROM event_subjects WHERE mac = '02:00:00:00:00:05'", [])
        .unwrap();
    let brk = s.verify().unwrap().unwrap_err();
    assert!(brk.problem.contains("lost the device link"), "{brk}");
}

#[test]
fn issue_10_endings_recorded_before_their_rows_were_named_are_accepted_unchecked() {
    // As a store written before events said which rows they ended: the revoke's event has
    // only counts. Its consent cannot be checked, and is not reported.
    let (s, c) = setup(5);
    s.record_consent(&consent(&c, "02:00:00:00:00:01", "2026-11-23T09:05:00Z"))
        .unwrap();
    let now = t("2026-11-23T10:00:00Z");
    {
        let conn = s.lock();
        conn.execute(
            "UPDATE consents SET ended_at = ?1, end_reason = 'revoked', ended_by = 'dsl'",
            [ts(now)],
        )
        .unwrap();
        insert_event(
            &conn,
            now,
            EventKind::Revoked,
            &serde_json::json!({"consents": 1, "exceptions": 0, "by": "dsl"}),
        )
        .unwrap();
    }
    s.verify().unwrap().unwrap();
    // An end at any other time is still one no event explains.
    s.lock()
        .execute("UPDATE consents SET ended_at = '2026-11-23T10:01:00.000Z'", [])
        .unwrap();
    assert!(s.verify().unwrap().unwrap_err().problem.contains("no event ended it"));
}

#[test]
fn issue_10_sign_in_attempts_are_reserved_before_the_check_and_expire_with_the_window() {
    let store = Store::open_in_memory().unwrap();
    let now = t("2026-11-23T10:00:00Z");
    let window = jiff::SignedDuration::from_mins(15);
    let limits = (5, 20);
    let reserve = |user: &str, at: Timestamp| store.reserve_login(user, "10.0.0.9", at, at - window, limits).unwrap();
    // Five reservations, none settled yet: the sixth is refused, as if all five had failed.
    let ids: Vec<i64> = (0..5).map(|_| reserve("office", now).unwrap()).collect();
    assert_eq!(reserve("office", now), None);
    // A success stops counting; a check that never ran is withdrawn.
    store.settle_login(ids[0], true, now).unwrap();
    store.cancel_login(ids[1]).unwrap();
    let again = reserve("office", now).unwrap();
    let last = reserve("office", now).unwrap();
    assert_eq!(reserve("office", now), None);
    for id in [ids[2], ids[3], ids[4], again, last] {
        store.settle_login(id, false, now).unwrap();
    }
    // Cancelling a settled failure changes nothing.
    store.cancel_login(last).unwrap();
    assert_eq!(reserve("office", now), None);
    // Per address too: 20 failures from one address lock out every name from it.
    for i in 0..15 {
        let id = reserve(&format!("guess{i}"), now).unwrap();
        store.settle_login(id, false, now).unwrap();
    }
    assert_eq!(reserve("someone-else", now), None);
    // Once the window has passed, the account may try again.
    let later = now + window + jiff::SignedDuration::from_secs(1);
    assert!(reserve("office", later).is_some());
    let events: i64 = store
        .lock()
        .query_row(
            "SELECT count(*) FROM events WHERE kind IN ('sign-in', 'sign-in-failed')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(events, 1 + 5 + 15, "one event per settled attempt");
}

/// Two processes writing one file (the daemon, and the CLI recording an export): events
/// appended at the same time from both never fork the chain.
#[test]
fn events_from_two_connections_at_once_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    drop(Store::open(&path).unwrap());
    let writers: Vec<_> = (0..2)
        .map(|n| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                for i in 0..50 {
                    let detail = serde_json::json!({"writer": n, "i": i});
                    store
                        .record_event(t("2026-11-23T10:00:00Z"), EventKind::CourseAdded, &detail)
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let ok = Store::open(&path)
        .unwrap()
        .verify()
        .unwrap()
        .expect("one unbroken chain");
    assert_eq!(ok.events, 100);
}

/// Issue 12: several accepts in one transaction. Each is decided on its own, one that fails in
/// the store (its policy was never recorded) undoes only its own writes, and every consent is
/// committed when `admit_all` returns: a second connection to the file sees them at once.
#[test]
fn admit_all_writes_each_accept_in_its_own_savepoint_and_commits_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let (s, course) = setup_on(Store::open(&path).unwrap(), 5);
    let attempt = |mac: &str, code: Option<AccessCode>, policy: &'static str| {
        let c = consent(&course, mac, "2026-11-23T10:00:00Z");
        Attempt {
            mac: mac.parse().unwrap(),
            ip: "192.0.2.10".into(),
            addresses: vec![],
            now: t("2026-11-23T10:00:00Z"),
            since: t("2026-11-23T09:45:00Z"),
            max_wrong: 5,
            code,
            empty: false,
            consent: Box::new(move |_| {
                Some(NewConsent {
                    policy_hash: policy.into(),
                    ..c.clone()
                })
            }),
        }
    };
    let right = Some(course.code.clone());
    let outcomes = s
        .admit_all(&[
            attempt("02:00:00:00:00:01", right.clone(), "abc"),
            attempt("02:00:00:00:00:02", right.clone(), "never-recorded"),
            attempt("02:00:00:00:00:03", AccessCode::normalise("WRNGWRNG"), "abc"),
            attempt("02:00:00:00:00:04", right.clone(), "abc"),
        ])
        .unwrap();
    assert!(
        matches!(outcomes[0], Ok(Admission::Consented { .. })),
        "{:?}",
        outcomes[0]
    );
    assert!(outcomes[1].is_err(), "{:?}", outcomes[1]);
    assert!(matches!(outcomes[2], Ok(Admission::NoCourse)), "{:?}", outcomes[2]);
    assert!(
        matches!(outcomes[3], Ok(Admission::Consented { .. })),
        "{:?}",
        outcomes[3]
    );
    let other = Connection::open(&path).unwrap();
    let count = |sql: &str| other.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(
        count("SELECT count(*) FROM consents"),
        2,
        "both good consents, committed"
    );
    assert_eq!(
        count("SELECT count(*) FROM code_attempts WHERE device = '02:00:00:00:00:02'"),
        0,
        "the failed accept's attempt was rolled back with it"
    );
    assert_eq!(
        count("SELECT count(*) FROM code_attempts WHERE outcome = 'wrong-code'"),
        1
    );
    assert!(s.verify().unwrap().is_ok(), "the audit chain holds");
}

/// Alone in its transaction, a failed accept leaves nothing behind either (no savepoint then:
/// the transaction itself is rolled back), and the next one is written as usual.
#[test]
fn admit_all_rolls_back_a_lone_failed_accept_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let (s, course) = setup_on(Store::open(&path).unwrap(), 5);
    let attempt = |policy: &'static str| {
        let c = consent(&course, "02:00:00:00:00:01", "2026-11-23T10:00:00Z");
        Attempt {
            mac: "02:00:00:00:00:01".parse().unwrap(),
            ip: "192.0.2.10".into(),
            addresses: vec![],
            now: t("2026-11-23T10:00:00Z"),
            since: t("2026-11-23T09:45:00Z"),
            max_wrong: 5,
            code: Some(course.code.clone()),
            empty: false,
            consent: Box::new(move |_| {
                Some(NewConsent {
                    policy_hash: policy.into(),
                    ..c.clone()
                })
            }),
        }
    };
    let failed = s.admit_all(&[attempt("never-recorded")]).unwrap();
    assert!(matches!(failed.as_slice(), [Err(_)]), "{failed:?}");
    let other = Connection::open(&path).unwrap();
    let count = |sql: &str| other.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(
        count("SELECT count(*) FROM code_attempts"),
        0,
        "its attempt rolled back"
    );
    assert_eq!(count("SELECT count(*) FROM consents"), 0);
    let written = s.admit_all(&[attempt("abc")]).unwrap();
    assert!(
        matches!(written.as_slice(), [Ok(Admission::Consented { .. })]),
        "{written:?}"
    );
    assert_eq!(
        count("SELECT count(*) FROM consents"),
        1,
        "committed when admit_all returns"
    );
    assert_eq!(count("SELECT count(*) FROM code_attempts"), 1);
    assert!(s.verify().unwrap().is_ok(), "the audit chain holds");
}
