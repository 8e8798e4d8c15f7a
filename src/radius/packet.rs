//! RFC 2866 Accounting-Request and Accounting-Response, encoded and checked by hand.
//!
//! Why not the `radius` crate (0.4): it builds its own client on tokio's "full" features and
//! chrono, which this daemon has no other use for, and its response check hashes the whole
//! datagram rather than the packet's own Length, so a padded answer would not verify. What
//! accounting needs is about a dozen attributes and two MD5s, checked here against FreeRADIUS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use md5::{Digest, Md5};

/// Accounting-Request.
pub const ACCOUNTING_REQUEST: u8 = 4;
/// Accounting-Response.
pub const ACCOUNTING_RESPONSE: u8 = 5;
/// The header: code, identifier, length, authenticator.
const HEADER: usize = 20;
/// The largest packet RFC 2865 allows.
pub const MAX_PACKET: usize = 4096;
/// The longest value an attribute holds.
const MAX_VALUE: usize = 253;

// Attribute types (RFC 2865, 2866, 2869, 3162, 6911).
const USER_NAME: u8 = 1;
const NAS_IP_ADDRESS: u8 = 4;
const SERVICE_TYPE: u8 = 6;
const FRAMED_IP_ADDRESS: u8 = 8;
const CLASS: u8 = 25;
const CALLING_STATION_ID: u8 = 31;
const NAS_IDENTIFIER: u8 = 32;
const ACCT_STATUS_TYPE: u8 = 40;
const ACCT_DELAY_TIME: u8 = 41;
const ACCT_SESSION_ID: u8 = 44;
const ACCT_AUTHENTIC: u8 = 45;
const ACCT_SESSION_TIME: u8 = 46;
const ACCT_TERMINATE_CAUSE: u8 = 49;
const EVENT_TIMESTAMP: u8 = 55;
const NAS_PORT_TYPE: u8 = 61;
const NAS_IPV6_ADDRESS: u8 = 95;
const FRAMED_IPV6_ADDRESS: u8 = 168;

/// Acct-Status-Type values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Start (1).
    Start = 1,
    /// Stop (2).
    Stop = 2,
    /// Interim-Update (3).
    InterimUpdate = 3,
}

/// One Accounting-Request's contents.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Acct-Status-Type.
    pub status: Status,
    /// Acct-Session-Id.
    pub session_id: &'a str,
    /// User-Name.
    pub user_name: &'a str,
    /// Calling-Station-Id (`02-99-00-00-00-01`).
    pub calling_station_id: &'a str,
    /// Class.
    pub class: &'a str,
    /// NAS-Identifier.
    pub nas_identifier: &'a str,
    /// NAS-IP-Address or NAS-IPv6-Address: the router's address towards the server.
    pub nas_ip: Option<IpAddr>,
    /// Framed-IP-Address.
    pub framed_ipv4: Option<Ipv4Addr>,
    /// Framed-IPv6-Address, each.
    pub framed_ipv6: &'a [Ipv6Addr],
    /// Event-Timestamp (seconds since 1970).
    pub event_timestamp: u32,
    /// Acct-Delay-Time: how long the record waited before this send.
    pub delay: u32,
    /// Acct-Session-Time (Stop and Interim-Update).
    pub session_time: Option<u32>,
    /// Acct-Terminate-Cause (Stop).
    pub terminate_cause: Option<u32>,
}

fn put(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    // Text is cut to what an attribute holds, at a character boundary; empty text is left out
    // (RFC 2865 forbids empty strings).
    let value = &value[..value.len().min(MAX_VALUE)];
    if value.is_empty() {
        return;
    }
    out.push(kind);
    out.push(u8::try_from(value.len() + 2).unwrap_or(u8::MAX));
    out.extend_from_slice(value);
}

fn put_text(out: &mut Vec<u8>, kind: u8, text: &str) {
    let mut end = text.len().min(MAX_VALUE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    put(out, kind, &text.as_bytes()[..end]);
}

fn put_u32(out: &mut Vec<u8>, kind: u8, value: u32) {
    put(out, kind, &value.to_be_bytes());
}

/// The attributes of `r`, in the order a packet carries them.
fn attributes(r: &Request<'_>) -> Vec<u8> {
    let mut a = Vec::with_capacity(256);
    put_u32(&mut a, ACCT_STATUS_TYPE, r.status as u32);
    put_text(&mut a, ACCT_SESSION_ID, r.session_id);
    put_text(&mut a, USER_NAME, r.user_name);
    put_text(&mut a, CALLING_STATION_ID, r.calling_station_id);
    if let Some(ip) = r.framed_ipv4 {
        put(&mut a, FRAMED_IP_ADDRESS, &ip.octets());
    }
    for ip in r.framed_ipv6 {
        put(&mut a, FRAMED_IPV6_ADDRESS, &ip.octets());
    }
    put_text(&mut a, CLASS, r.class);
    put_text(&mut a, NAS_IDENTIFIER, r.nas_identifier);
    match r.nas_ip {
        Some(IpAddr::V4(ip)) => put(&mut a, NAS_IP_ADDRESS, &ip.octets()),
        Some(IpAddr::V6(ip)) => put(&mut a, NAS_IPV6_ADDRESS, &ip.octets()),
        None => {}
    }
    // Wireless-802.11, Framed, authorised locally (by the portal, not by RADIUS).
    put_u32(&mut a, NAS_PORT_TYPE, 19);
    put_u32(&mut a, SERVICE_TYPE, 2);
    put_u32(&mut a, ACCT_AUTHENTIC, 2);
    put_u32(&mut a, EVENT_TIMESTAMP, r.event_timestamp);
    put_u32(&mut a, ACCT_DELAY_TIME, r.delay);
    if let Some(t) = r.session_time {
        put_u32(&mut a, ACCT_SESSION_TIME, t);
    }
    if let Some(c) = r.terminate_cause {
        put_u32(&mut a, ACCT_TERMINATE_CAUSE, c);
    }
    a
}

/// `r` as an Accounting-Request with `identifier`, its Request Authenticator computed with
/// `secret` (RFC 2866 §3: MD5 over the packet with sixteen zeros in its place, then the secret).
pub fn encode(r: &Request<'_>, identifier: u8, secret: &[u8]) -> Vec<u8> {
    let attrs = attributes(r);
    let len = u16::try_from(HEADER + attrs.len()).unwrap_or(u16::MAX);
    let mut packet = Vec::with_capacity(usize::from(len));
    packet.push(ACCOUNTING_REQUEST);
    packet.push(identifier);
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&[0; 16]);
    packet.extend_from_slice(&attrs);
    let mut md5 = Md5::new();
    md5.update(&packet);
    md5.update(secret);
    let authenticator = md5.finalize();
    packet[4..HEADER].copy_from_slice(&authenticator);
    packet
}

/// Whether `answer` is the server's Accounting-Response to `request`: the right code and
/// identifier, a Length within what arrived, and a Response Authenticator that only a holder
/// of `secret` could have made (MD5 over code, identifier, length, the request's authenticator,
/// the response's attributes and the secret). Anything else (a stray or forged datagram, one
/// from a server with another secret) is not.
pub fn is_response_to(answer: &[u8], request: &[u8], secret: &[u8]) -> bool {
    if answer.len() < HEADER || request.len() < HEADER {
        return false;
    }
    let len = usize::from(u16::from_be_bytes([answer[2], answer[3]]));
    if answer[0] != ACCOUNTING_RESPONSE || answer[1] != request[1] || !(HEADER..=answer.len()).contains(&len) {
        return false;
    }
    let mut md5 = Md5::new();
    md5.update(&answer[..4]);
    md5.update(&request[4..HEADER]);
    md5.update(&answer[HEADER..len]);
    md5.update(secret);
    let expected = md5.finalize();
    // Not secret data (an attacker who can see the answer sees its authenticator), but the
    // comparison is kept constant-time anyway.
    expected
        .iter()
        .zip(&answer[4..HEADER])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request<'static> {
        Request {
            status: Status::Start,
            session_id: "0011223344556677",
            user_name: "Ann Example",
            calling_station_id: "02-99-00-00-00-01",
            class: "Phonics",
            nas_identifier: "claremont-gw",
            nas_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            framed_ipv4: Some(Ipv4Addr::new(192, 0, 2, 11)),
            framed_ipv6: &[],
            event_timestamp: 1_795_000_000,
            delay: 0,
            session_time: None,
            terminate_cause: None,
        }
    }

    /// The attributes of an encoded packet, as (type, value).
    fn parse(packet: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = &packet[HEADER..];
        while let [kind, len, ..] = *rest {
            out.push((kind, rest[2..usize::from(len)].to_vec()));
            rest = &rest[usize::from(len)..];
        }
        out
    }

    fn response(request: &[u8], secret: &[u8], attrs: &[u8]) -> Vec<u8> {
        let len = u16::try_from(HEADER + attrs.len()).unwrap();
        let mut r = vec![ACCOUNTING_RESPONSE, request[1]];
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(&request[4..HEADER]);
        r.extend_from_slice(attrs);
        r.extend_from_slice(secret);
        let auth = Md5::digest(&r);
        r.truncate(usize::from(len));
        r[4..HEADER].copy_from_slice(&auth);
        r
    }

    #[test]
    fn a_request_carries_its_attributes_and_authenticator() {
        let secret = b"testing123";
        let p = encode(&request(), 7, secret);
        assert_eq!((p[0], p[1]), (ACCOUNTING_REQUEST, 7));
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        // The Request Authenticator as RFC 2866 defines it, computed independently here.
        let mut zeroed = p.clone();
        zeroed[4..HEADER].fill(0);
        zeroed.extend_from_slice(secret);
        assert_eq!(&p[4..HEADER], Md5::digest(&zeroed).as_slice());
        let attrs = parse(&p);
        let get = |kind: u8| attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.clone());
        assert_eq!(get(ACCT_STATUS_TYPE), Some(vec![0, 0, 0, 1]));
        assert_eq!(get(USER_NAME).as_deref(), Some(b"Ann Example".as_slice()));
        assert_eq!(
            get(CALLING_STATION_ID).as_deref(),
            Some(b"02-99-00-00-00-01".as_slice())
        );
        assert_eq!(get(FRAMED_IP_ADDRESS), Some(vec![192, 0, 2, 11]));
        assert_eq!(get(NAS_IP_ADDRESS), Some(vec![10, 0, 0, 1]));
        assert_eq!(get(CLASS).as_deref(), Some(b"Phonics".as_slice()));
        assert_eq!(get(ACCT_TERMINATE_CAUSE), None);
    }

    #[test]
    fn a_stop_carries_its_time_and_cause_and_long_text_is_cut_at_a_character() {
        let long = "é".repeat(200);
        let six = ["2001:db8::1".parse().unwrap()];
        let r = Request {
            status: Status::Stop,
            user_name: &long,
            framed_ipv6: &six,
            session_time: Some(3600),
            terminate_cause: Some(6),
            ..request()
        };
        let p = encode(&r, 1, b"s");
        let attrs = parse(&p);
        let get = |kind: u8| attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.clone());
        assert_eq!(get(ACCT_SESSION_TIME), Some(3600u32.to_be_bytes().to_vec()));
        assert_eq!(get(ACCT_TERMINATE_CAUSE), Some(vec![0, 0, 0, 6]));
        assert_eq!(get(FRAMED_IPV6_ADDRESS).map(|v| v.len()), Some(16));
        let name = get(USER_NAME).unwrap();
        assert_eq!(name.len(), 252, "253 bytes would split a character");
        assert!(std::str::from_utf8(&name).is_ok());
    }

    #[test]
    fn only_an_answer_made_with_the_secret_is_a_response() {
        let req = encode(&request(), 9, b"right");
        assert!(is_response_to(&response(&req, b"right", &[]), &req, b"right"));
        assert!(
            !is_response_to(&response(&req, b"wrong", &[]), &req, b"right"),
            "another secret"
        );
        let mut other_id = response(&req, b"right", &[]);
        other_id[1] = 10;
        assert!(!is_response_to(&other_id, &req, b"right"));
        let mut tampered = response(&req, b"right", &[18, 4, b'o', b'k']);
        tampered[22] = b'K';
        assert!(!is_response_to(&tampered, &req, b"right"), "an attribute changed");
        // Padding after the packet's Length is not part of it.
        let mut padded = response(&req, b"right", &[]);
        padded.extend_from_slice(&[0; 8]);
        assert!(is_response_to(&padded, &req, b"right"));
        // Truncated, or claiming more than arrived: not an answer, and no panic.
        let whole = response(&req, b"right", &[18, 4, b'o', b'k']);
        for cut in 0..whole.len() {
            assert!(!is_response_to(&whole[..cut], &req, b"right"), "cut at {cut}");
        }
        assert!(!is_response_to(&req, &req, b"right"), "the request itself");
    }
}
