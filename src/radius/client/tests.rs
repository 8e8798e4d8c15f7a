use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use md5::{Digest, Md5};

use super::*;
use crate::store::accounting::{Addresses, StopCause};

/// A server on loopback: answers each request with a response made with `secret`, after
/// ignoring the first `drop` copies it gets. Returns its port and every datagram it got.
async fn server(secret: &'static [u8], drop: usize) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let count = AtomicUsize::new(0);
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            let req = buf[..n].to_vec();
            seen.lock().unwrap().push(req.clone());
            if count.fetch_add(1, Ordering::SeqCst) < drop {
                continue;
            }
            let mut answer = vec![5, req[1], 0, 20];
            answer.extend_from_slice(&req[4..20]);
            answer.extend_from_slice(secret);
            let auth = Md5::digest(&answer);
            answer.truncate(20);
            answer[4..20].copy_from_slice(&auth);
            socket.send_to(&answer, from).await.unwrap();
        }
    });
    (port, got)
}

use std::sync::Mutex;

fn record() -> AccountingRecord {
    AccountingRecord {
        status: AcctStatus::Stop,
        session: "00AA11BB22CC33DD".into(),
        mac: "02:99:00:00:00:01".parse().unwrap(),
        user_name: "Ann".into(),
        class: "Phonics".into(),
        addresses: Addresses {
            ipv4: Some("192.0.2.11".parse().unwrap()),
            ipv6: vec![],
        },
        started_at: "2026-11-23T10:00:00Z".parse().unwrap(),
        at: "2026-11-23T11:00:00Z".parse().unwrap(),
        cause: Some(StopCause::AdminReset),
    }
}

fn local(port: u16) -> Server {
    Server {
        host: "127.0.0.1".into(),
        port,
    }
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn attribute(packet: &[u8], kind: u8) -> Option<Vec<u8>> {
    let mut rest = &packet[20..];
    while let [k, len, ..] = *rest {
        if k == kind {
            return Some(rest[2..usize::from(len)].to_vec());
        }
        rest = &rest[usize::from(len)..];
    }
    None
}

#[tokio::test]
async fn a_record_is_taken_once_the_answer_verifies() {
    let (port, got) = server(b"shared", 0).await;
    let mut c = Client::new(vec![local(port)], Secret::of(b"shared"), "gw".into());
    let now: jiff::Timestamp = "2026-11-23T11:00:05Z".parse().unwrap();
    assert_eq!(c.deliver(&record(), now).await, Ok(format!("127.0.0.1:{port}")));
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1);
    let p = &got[0];
    assert_eq!(attribute(p, 40), Some(vec![0, 0, 0, 2]), "Stop");
    assert_eq!(
        attribute(p, 46),
        Some(3600u32.to_be_bytes().to_vec()),
        "Acct-Session-Time"
    );
    assert_eq!(attribute(p, 41), Some(5u32.to_be_bytes().to_vec()), "Acct-Delay-Time");
    assert_eq!(attribute(p, 49), Some(vec![0, 0, 0, 6]), "Admin-Reset");
    assert_eq!(
        attribute(p, 4),
        Some(vec![127, 0, 0, 1]),
        "NAS-IP-Address: the address towards the server"
    );
    assert_eq!(attribute(p, 32).as_deref(), Some(b"gw".as_slice()));
}

#[tokio::test]
async fn a_lost_request_is_sent_again_unchanged() {
    let (port, got) = server(b"shared", 1).await;
    let mut c = Client::new(vec![local(port)], Secret::of(b"shared"), "gw".into());
    let now = record().at;
    assert!(c.deliver(&record(), now).await.is_ok());
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], got[1], "the retransmission is the same packet");
}

#[tokio::test]
async fn an_answer_made_with_another_secret_is_never_taken() {
    let (port, got) = server(b"other", 0).await;
    let mut c = Client::new(vec![local(port)], Secret::of(b"shared"), "gw".into());
    let why = c.deliver(&record(), record().at).await.unwrap_err();
    assert!(why.contains("3 answer(s) that did not verify"), "{why}");
    assert_eq!(got.lock().unwrap().len(), TRIES.len());
}

#[tokio::test]
async fn a_dead_first_server_passes_the_record_to_the_next_and_stays_behind() {
    let (port, got) = server(b"shared", 0).await;
    let dead = closed_port();
    let mut c = Client::new(vec![local(dead), local(port)], Secret::of(b"shared"), "gw".into());
    let taken = c.deliver(&record(), record().at).await;
    assert_eq!(taken, Ok(format!("127.0.0.1:{port}")));
    // The next record goes to the one that answered first.
    assert!(c.deliver(&record(), record().at).await.is_ok());
    assert_eq!(c.first, 1);
    assert_eq!(got.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn nobody_listening_anywhere_is_a_failure_naming_each_server() {
    let (a, b) = (closed_port(), closed_port());
    let mut c = Client::new(vec![local(a), local(b)], Secret::of(b"shared"), "gw".into());
    let why = c.deliver(&record(), record().at).await.unwrap_err();
    assert!(why.contains(&format!("127.0.0.1:{a}: refused")), "{why}");
    assert!(why.contains(&format!("127.0.0.1:{b}: refused")), "{why}");
    assert!(!why.contains("shared"), "the secret is never in a message: {why}");
}
