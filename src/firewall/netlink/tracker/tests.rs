use super::*;
use crate::firewall::netlink::wire::conntrack_message;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

/// A state that has read the table and follows the events.
fn trusted() -> State {
    State {
        trusted: true,
        subscribed: true,
        joined: true,
        ..State::default()
    }
}

/// An entry from 192.0.2.`last` with `id`, learnt now.
fn learn(st: &mut State, last: u8, id: u32, redirected: bool) {
    st.apply_all(&conntrack_message(true, [192, 0, 2, last], id, redirected));
}

fn rule(st: &State, became: Became) -> Rule {
    Rule {
        mark: st.mark().expect("trusted"),
        became,
    }
}

#[test]
fn entries_are_kept_by_source_until_destroyed() {
    let mut st = trusted();
    learn(&mut st, 10, 1, false);
    learn(&mut st, 10, 2, false);
    learn(&mut st, 11, 3, false);
    // The same entry twice (a dump part and its event) is one entry.
    learn(&mut st, 11, 3, false);
    assert_eq!(st.count, 3);
    st.apply_all(&conntrack_message(false, [192, 0, 2, 10], 1, false));
    // A destroy of what was never seen changes nothing.
    st.apply_all(&conntrack_message(false, [192, 0, 2, 12], 9, false));
    assert_eq!(st.count, 2);

    let all = rule(&st, Became::Open);
    let deletes = st.take(&[ip(10)], all).expect("trusted");
    assert_eq!(deletes.len(), 1, "only the live entry of .10");
    let expected = conntrack_message(true, [192, 0, 2, 10], 2, false);
    assert_eq!(
        Some(Ok(deletes[0].clone())),
        wire::conntrack_delete(&wire::replies(&expected).next().unwrap(), &[ip(10)], 0),
        "the delete of exactly that entry"
    );
    assert_eq!(st.take(&[ip(10)], all), Some(vec![]), "taken out of the map");
    assert_eq!(st.count, 1, ".11 is still there");
    assert_eq!(st.take(&[ip(11), ip(12)], all).map(|d| d.len()), Some(1));
    assert_eq!(st.count, 0);
    assert!(st.by_source.is_empty());
}

/// Opening forgets everything from before the element went in, and of what came after the
/// mark only what was redirected (made just before the element went in); closing forgets
/// everything from before, and of what came after only what was not redirected: a connection
/// redirected to the portal after closing is left alone.
#[test]
fn what_came_after_the_change_is_forgotten_only_if_it_belongs_to_the_old_state() {
    for (became, kept_after) in [(Became::Open, false), (Became::Closed, true)] {
        let mut st = trusted();
        learn(&mut st, 10, 1, false);
        learn(&mut st, 10, 2, true);
        let r = rule(&st, became);
        learn(&mut st, 10, 3, false);
        learn(&mut st, 10, 4, true);
        let deletes = st.take(&[ip(10)], r).unwrap();
        assert_eq!(deletes.len(), 3, "{became:?}");
        let left: Vec<bool> = st.by_source[&ip(10)].values().map(|t| t.redirected).collect();
        assert_eq!(left, vec![kept_after], "{became:?}: the one left");
        assert_eq!(st.count, 1);
    }
}

#[test]
fn a_loss_means_dumping_until_the_table_is_read_again() {
    let mut st = trusted();
    learn(&mut st, 10, 1, false);
    let r = rule(&st, Became::Open);
    st.lose("test");
    assert_eq!(st.mark(), None, "not to be trusted");
    assert_eq!(st.take(&[ip(10)], r), None, "not to be trusted");
    assert_eq!(st.count, 0);
    assert!(st.reread.is_some(), "a read of the table is due");
}

#[test]
fn too_many_entries_leave_the_groups_for_a_while() {
    let mut st = trusted();
    let r = rule(&st, Became::Open);
    let mut datagram = Vec::new();
    for n in 0..=MAX_TRACKED as u32 {
        datagram.extend(conntrack_message(
            true,
            [10, (n >> 16) as u8, (n >> 8) as u8, n as u8],
            n,
            false,
        ));
    }
    st.apply_all(&datagram);
    assert_eq!(st.take(&[ip(10)], r), None);
    assert!(!st.subscribed, "out of the groups");
    assert_eq!(st.count, 0, "and nothing kept");
    assert!(
        st.reread.is_some_and(|at| at > Instant::now() + RETRY / 2),
        "read again later"
    );
    // Events still queued are ignored.
    learn(&mut st, 10, 1, false);
    assert_eq!(st.count, 0);
}
