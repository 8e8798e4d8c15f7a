use std::net::IpAddr;

use super::*;
use crate::clock::ManualClock;
use crate::neighbours::StaticNeighbours;
use crate::store::accounting::{EXCEPTION_CLASS, UserName};

fn t(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn settings() -> Settings {
    Settings {
        servers: vec![settings::Server {
            host: "127.0.0.1".into(),
            port: 9,
        }],
        secret_file: "/nonexistent/radius-secret".into(),
        nas_identifier: "gw".into(),
        interim: None,
        user_name: UserName::Name,
    }
}

fn sender(store: &Store, table: &[(&str, MacAddr)], now: &str) -> Sender {
    let table = table
        .iter()
        .map(|(ip, mac)| (ip.parse::<IpAddr>().unwrap(), *mac))
        .collect();
    let clock = Arc::new(ManualClock::new(t(now)));
    Sender::new(&settings(), store.clone(), Arc::new(StaticNeighbours(table)), clock)
}

const NOW: &str = "2026-11-23T10:00:00Z";

/// A store with accounting on, and a device let in by an exception at `NOW` (no address yet).
fn excepted() -> (Store, MacAddr) {
    let store = Store::open_in_memory().unwrap();
    store.set_accounting(UserName::Name);
    let mac: MacAddr = "02:99:00:00:00:07".parse().unwrap();
    store
        .grant_exception(mac, "visiting speaker", "staff", t(NOW), t("2026-11-23T12:00:00Z"))
        .unwrap();
    (store, mac)
}

fn waiting(store: &Store) -> Vec<AccountingRecord> {
    let mut out = Vec::new();
    while let Some(p) = store.outbox_next(RADIUS).unwrap() {
        out.push(serde_json::from_str(&p.payload).unwrap());
        store.outbox_delivered(p.id).unwrap();
    }
    out
}

#[tokio::test]
async fn an_exceptions_device_starts_when_its_address_appears_and_a_new_lease_moves_it() {
    let (store, mac) = excepted();
    let now = NOW;
    // Not in the neighbour table yet: nothing to say.
    sender(&store, &[], now).follow().await;
    assert!(waiting(&store).is_empty());
    // It appears.
    let mut s = sender(&store, &[("192.0.2.20", mac)], now);
    s.follow().await;
    let start = waiting(&store);
    assert_eq!(start.len(), 1, "{start:?}");
    assert_eq!(
        (start[0].status, start[0].class.as_str()),
        (AcctStatus::Start, EXCEPTION_CLASS)
    );
    assert_eq!(start[0].addresses.ipv4, Some("192.0.2.20".parse().unwrap()));
    // Seen again at the same address: nothing more.
    s.follow().await;
    assert!(waiting(&store).is_empty());
    // A new lease (after a restart of the daemon: the sender starts from the store's sessions).
    let mut s = sender(&store, &[("192.0.2.20", mac), ("192.0.2.21", mac)], now);
    s.sweep().await;
    s.follow().await;
    let moved = waiting(&store);
    let kinds: Vec<AcctStatus> = moved.iter().map(|r| r.status).collect();
    assert_eq!(kinds, [AcctStatus::Stop, AcctStatus::Start]);
    assert_eq!(moved[1].addresses.ipv4, Some("192.0.2.21".parse().unwrap()));
    assert_eq!(moved[0].session, start[0].session);
}

#[tokio::test]
async fn without_a_readable_secret_nothing_is_delivered_and_the_record_waits() {
    let (store, mac) = excepted();
    let now = NOW;
    let mut s = sender(&store, &[("192.0.2.20", mac)], now);
    s.follow().await;
    assert_eq!(s.send_next().await, Some(false));
    let backlog = store.outbox_backlog(RADIUS).unwrap();
    assert_eq!(backlog.pending, 1);
    let why = backlog.last_error.unwrap();
    assert!(
        why.starts_with("radius.secret_file /nonexistent/radius-secret: cannot read it"),
        "{why}"
    );
    assert_eq!(s.status.failed_rounds.get(), 1);
}

#[tokio::test]
async fn ipv6_addresses_moving_about_in_the_order_are_not_a_change_but_a_new_one_is() {
    let (store, mac) = excepted();
    let now = NOW;
    let v6 = ["2001:db8::1", "2001:db8::2", "2001:db8::3"];
    let table = |order: &[&'static str]| -> Vec<(&'static str, MacAddr)> { order.iter().map(|a| (*a, mac)).collect() };
    let mut s = sender(&store, &table(&["192.0.2.20", v6[0], v6[1], v6[2]]), now);
    s.follow().await;
    assert_eq!(waiting(&store).len(), 1, "the Start");
    let mut s = sender(&store, &table(&[v6[2], "192.0.2.20", v6[1], v6[0]]), now);
    s.sweep().await;
    s.follow().await;
    assert!(waiting(&store).is_empty(), "the same addresses in another order");
    let mut s = sender(&store, &table(&["192.0.2.20", v6[0], v6[1], v6[2], "2001:db8::4"]), now);
    s.sweep().await;
    s.follow().await;
    let moved = waiting(&store);
    assert_eq!(moved.len(), 2, "a new address: {moved:?}");
    assert_eq!(moved[1].addresses.ipv6.len(), 4);
}

#[tokio::test]
async fn addresses_are_followed_while_no_server_takes_the_records() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-long-enough-shared-secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Nothing listens on the server's port: every round is refused.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = settings();
    settings.secret_file = secret;
    settings.servers[0].port = port;
    let store = Store::open_in_memory().unwrap();
    store.set_accounting(UserName::Name);
    let (first, second): (MacAddr, MacAddr) = (
        "02:99:00:00:00:07".parse().unwrap(),
        "02:99:00:00:00:08".parse().unwrap(),
    );
    let now = t("2026-11-23T10:00:00Z");
    let until = t("2026-11-23T12:00:00Z");
    store.grant_exception(first, "x", "staff", now, until).unwrap();
    let table = vec![
        ("192.0.2.20".parse().unwrap(), first),
        ("192.0.2.21".parse().unwrap(), second),
    ];
    let clock = Arc::new(ManualClock::new(now));
    let s = Sender::new(&settings, store.clone(), Arc::new(StaticNeighbours(table)), clock);
    let status = s.status();
    let (_stop, stopped) = watch::channel(false);
    let task = s.spawn(stopped);
    async fn pending(store: &Store, n: u64) -> bool {
        for _ in 0..100 {
            if store.outbox_backlog(RADIUS).unwrap().pending == n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
    assert!(pending(&store, 1).await, "the first device's Start is written");
    // The server refuses: the Start waits. A second device is let in meanwhile.
    store.grant_exception(second, "y", "staff", now, until).unwrap();
    assert!(
        pending(&store, 2).await,
        "its Start is written within a follow, though the first record is not taken"
    );
    assert!(status.failed_rounds.get() >= 1);
    task.abort();
}
