//! Domain core, no I/O: the MAC address and access-code newtypes and the pure rules about who
//! may be let in. Nothing here talks to the kernel, the database or the network.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// An Ethernet MAC address. Displayed and stored lower-case and colon-separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// Wraps six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// True for addresses no real client sends from: all-zero, broadcast or multicast.
    pub fn is_unicast(self) -> bool {
        self.0 != [0; 6] && self.0[0] & 1 == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (expected six hex pairs like aa:bb:cc:dd:ee:ff)")]
pub struct MacParseError(String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.chars().take(40).collect());
        let mut out = [0u8; 6];
        let mut parts = s.trim().split([':', '-']);
        for slot in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A course access code: 8 characters from an alphabet with no look-alikes (no 0/O, 1/I/L).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccessCode(String);

impl AccessCode {
    /// Letters and digits that cannot be confused when read aloud or typed on a phone.
    pub const ALPHABET: &'static [u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
    /// Length of a generated code.
    pub const LEN: usize = 8;

    /// Builds a code from random bytes; each byte picks one character (rejection sampling keeps
    /// the choice uniform). Returns `None` if `random` ran out before 8 characters were chosen.
    pub fn from_random(random: &[u8]) -> Option<Self> {
        let n = Self::ALPHABET.len();
        // Largest multiple of n that fits in a byte; bytes above it would bias the choice.
        let limit = 256 - 256 % n;
        let code: String = random
            .iter()
            .filter(|&&b| usize::from(b) < limit)
            .take(Self::LEN)
            .map(|&b| char::from(Self::ALPHABET[usize::from(b) % n]))
            .collect();
        (code.len() == Self::LEN).then_some(Self(code))
    }

    /// Normalises what a guest typed: drops spaces and dashes, upper-cases, and maps the
    /// look-alikes a guest might type (O→0 is not in the alphabet, so O and 0 are both invalid;
    /// we do not guess). Returns `None` when the result cannot be a code.
    pub fn normalise(typed: &str) -> Option<Self> {
        let code: String = typed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let valid = code.len() == Self::LEN && code.bytes().all(|b| Self::ALPHABET.contains(&b));
        valid.then_some(Self(code))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccessCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A training course: the only reason a guest may use the Wi-Fi.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Course {
    /// Store id.
    pub id: i64,
    /// What staff called it.
    pub title: String,
    /// The access code guests type.
    pub code: AccessCode,
    /// When guests may start to accept.
    pub starts_at: Timestamp,
    /// When access ends; set elements time out here.
    pub ends_at: Timestamp,
    /// How many devices may be connected at once.
    pub max_devices: u32,
    /// Set when staff ended the course early.
    pub ended_early_at: Option<Timestamp>,
}

/// Where a course stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CourseState {
    /// Not started yet.
    Upcoming,
    /// Guests may accept.
    Running,
    /// Over (its time passed or staff ended it).
    Ended,
}

impl Course {
    /// The course's state at `now`.
    pub fn state(&self, now: Timestamp) -> CourseState {
        if self.ended_early_at.is_some() || now >= self.ends_at {
            CourseState::Ended
        } else if now < self.starts_at {
            CourseState::Upcoming
        } else {
            CourseState::Running
        }
    }
}

/// A device that accepted the policy and whose access has not ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Consent record id.
    pub consent_id: i64,
    /// The device.
    pub mac: MacAddr,
    /// Its address when it accepted.
    pub ip: String,
    /// Name the guest gave.
    pub name: String,
    /// Organisation the guest gave.
    pub organisation: String,
    /// Course id.
    pub course_id: i64,
    /// Course title.
    pub course: String,
    /// When the guest accepted.
    pub accepted_at: Timestamp,
    /// When access ends.
    pub expires_at: Timestamp,
    /// SHA-256 of the policy text accepted.
    pub policy_hash: String,
}

/// The text of a Wi-Fi QR code (the `WIFI:` format phone cameras read) that joins `ssid`, open
/// or with a WPA passphrase. `\`, `;`, `,`, `:` and `"` are escaped with a backslash.
pub fn wifi_qr_text(ssid: &str, password: Option<&str>) -> String {
    let esc = |s: &str| -> String {
        s.chars()
            .flat_map(|c| {
                if matches!(c, '\\' | ';' | ',' | ':' | '"') {
                    vec!['\\', c]
                } else {
                    vec![c]
                }
            })
            .collect()
    };
    match password {
        Some(p) => format!("WIFI:T:WPA;S:{};P:{};;", esc(ssid), esc(p)),
        None => format!("WIFI:T:nopass;S:{};;", esc(ssid)),
    }
}

/// Brute-force guard: this many wrong codes from one device...
pub const MAX_WRONG_CODES: u32 = 5;
/// ...within this window locks the device out until the oldest attempt leaves the window.
pub const WRONG_CODE_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_mins(10);

/// Longest name or organisation we keep; longer input is refused with a message, not truncated.
pub const MAX_NAME_CHARS: usize = 100;

/// Checks a free-text field a guest typed. Returns the trimmed text, or a message for the guest.
///
/// # Errors
/// A guest-readable message when the text is too long or holds control characters.
pub fn clean_text(field_label: &str, text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "{field_label} is too long: please use at most {MAX_NAME_CHARS} characters."
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() || c == '\u{FFFD}' || is_format_char(c))
    {
        return Err(format!(
            "{field_label} contains characters we cannot store. Please type it again."
        ));
    }
    Ok(text.to_owned())
}

/// Invisible formatting characters (Unicode category Cf: bidi overrides, zero-width joiners and
/// the like) that could make a name display as something else in staff listings.
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{AD}' | '\u{600}'..='\u{605}' | '\u{61C}' | '\u{6DD}' | '\u{70F}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_lower_case() {
        let m: MacAddr = "AA-bb-0C-dd-ee-0F".parse().unwrap();
        assert_eq!(m.to_string(), "aa:bb:0c:dd:ee:0f");
        assert!(m.is_unicast());
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:gg",
            "aaa:b:cc:dd:ee:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(!MacAddr::new([1, 0, 0, 0, 0, 1]).is_unicast());
        assert!(!MacAddr::new([0; 6]).is_unicast());
    }

    #[test]
    fn codes_use_only_the_unambiguous_alphabet() {
        for c in b"0O1IL" {
            assert!(!AccessCode::ALPHABET.contains(c));
        }
        let code = AccessCode::from_random(&[0, 1, 2, 250, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(code.as_str().len(), 8);
        // 250 is above the rejection limit for a 31-letter alphabet (248) and is skipped.
        assert_eq!(code.as_str(), "23456789");
        assert!(AccessCode::from_random(&[255; 20]).is_none());
    }

    #[test]
    fn typed_codes_are_normalised() {
        assert_eq!(AccessCode::normalise(" abcd-efgh ").unwrap().as_str(), "ABCDEFGH");
        assert!(AccessCode::normalise("ABCDEFG").is_none());
        assert!(AccessCode::normalise("ABCDEFG0").is_none());
        assert!(AccessCode::normalise("ÄBCDEFGH").is_none());
    }

    #[test]
    fn course_states() {
        let t = |h: i64| Timestamp::from_second(h * 3600).unwrap();
        let mut c = Course {
            id: 1,
            title: "t".into(),
            code: AccessCode::normalise("ABCDEFGH").unwrap(),
            starts_at: t(9),
            ends_at: t(16),
            max_devices: 3,
            ended_early_at: None,
        };
        assert_eq!(c.state(t(8)), CourseState::Upcoming);
        assert_eq!(c.state(t(9)), CourseState::Running);
        assert_eq!(c.state(t(16)), CourseState::Ended);
        c.ended_early_at = Some(t(10));
        assert_eq!(c.state(t(9)), CourseState::Ended);
    }

    #[test]
    fn wifi_qr_text_escapes_specials() {
        assert_eq!(
            wifi_qr_text("Claremont Guest", None),
            "WIFI:T:nopass;S:Claremont Guest;;"
        );
        assert_eq!(
            wifi_qr_text("a;b:c", Some("p\\w,\"x")),
            "WIFI:T:WPA;S:a\\;b\\:c;P:p\\\\w\\,\\\"x;;"
        );
    }

    #[test]
    fn text_fields() {
        assert_eq!(clean_text("Name", "  Ann  ").unwrap(), "Ann");
        assert!(
            clean_text("Name", &"x".repeat(10_000))
                .unwrap_err()
                .contains("too long")
        );
        assert!(clean_text("Name", "a\u{FFFD}b").is_err());
        assert!(clean_text("Name", "a\u{7}b").is_err());
        assert!(clean_text("Name", "Ann\u{202E}nhoJ").is_err(), "bidi override");
        assert!(clean_text("Name", "A\u{200B}nn").is_err(), "zero-width space");
        assert_eq!(clean_text("Name", "Zoë Ødegård").unwrap(), "Zoë Ødegård");
    }
}
