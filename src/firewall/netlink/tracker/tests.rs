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

#[test]
fn entries_are_kept_by_source_until_destroyed() {
    let mut st = trusted();
    st.apply_all(&conntrack_message(true, [192, 0, 2, 10], 1));
    st.apply_all(&conntrack_message(true, [192, 0, 2, 10], 2));
    st.apply_all(&conntrack_message(true, [192, 0, 2, 11], 3));
    // The same entry twice (a dump part and its event) is one entry.
    st.apply_all(&conntrack_message(true, [192, 0, 2, 11], 3));
    assert_eq!(st.count, 3);
    st.apply_all(&conntrack_message(false, [192, 0, 2, 10], 1));
    // A destroy of what was never seen changes nothing.
    st.apply_all(&conntrack_message(false, [192, 0, 2, 12], 9));
    assert_eq!(st.count, 2);

    let deletes = st.take(&[ip(10)]).expect("trusted");
    assert_eq!(deletes.len(), 1, "only the live entry of .10");
    assert_eq!(
        deletes[0],
        wire::conntrack_delete(
            &wire::replies(&conntrack_message(true, [192, 0, 2, 10], 2)).next().unwrap(),
            &[ip(10)],
            0
        )
        .unwrap()
        .unwrap(),
        "the delete of exactly that entry"
    );
    assert_eq!(st.take(&[ip(10)]), Some(vec![]), "taken out of the map");
    assert_eq!(st.count, 1, ".11 is still there");
    assert_eq!(st.take(&[ip(11), ip(12)]).map(|d| d.len()), Some(1));
    assert_eq!(st.count, 0);
    assert!(st.by_source.is_empty());
}

#[test]
fn a_loss_means_dumping_until_the_table_is_read_again() {
    let mut st = trusted();
    st.apply_all(&conntrack_message(true, [192, 0, 2, 10], 1));
    st.lose("test");
    assert_eq!(st.take(&[ip(10)]), None, "not to be trusted");
    assert_eq!(st.count, 0);
    assert!(st.reread.is_some(), "a read of the table is due");
}

#[test]
fn too_many_entries_leave_the_groups_for_a_while() {
    let mut st = trusted();
    let mut datagram = Vec::new();
    for n in 0..=MAX_TRACKED as u32 {
        datagram.extend(conntrack_message(true, [10, (n >> 16) as u8, (n >> 8) as u8, n as u8], n));
    }
    st.apply_all(&datagram);
    assert_eq!(st.take(&[ip(10)]), None);
    assert!(!st.subscribed, "out of the groups");
    assert_eq!(st.count, 0, "and nothing kept");
    assert!(st.reread.is_some_and(|at| at > Instant::now() + RETRY / 2), "read again later");
    // Events still queued are ignored.
    st.apply_all(&conntrack_message(true, [192, 0, 2, 10], 1));
    assert_eq!(st.count, 0);
}
