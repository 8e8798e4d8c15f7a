//! Strict `application/x-www-form-urlencoded` parsing. Unlike lossy decoders it refuses bytes
//! that are not UTF-8, so a guest's name is stored exactly as typed or not at all.

use std::collections::HashMap;

use percent_encoding::percent_decode;

/// Why a form body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A field's name or value is not valid UTF-8.
    #[error("field {0:?} is not valid text")]
    NotUtf8(String),
    /// The body is not a form at all.
    #[error("the body is not a form")]
    Malformed,
}

/// Parses `body`; the first value of a repeated field wins. Field names are decoded too.
///
/// # Errors
/// `NotUtf8` naming the field, or `Malformed`.
pub fn parse(body: &[u8]) -> Result<HashMap<String, String>, FormError> {
    let mut fields = HashMap::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let key = decode(k).map_err(|_| FormError::Malformed)?;
        let value = decode(v).map_err(|e| match e {
            Invalid::Malformed => FormError::Malformed,
            Invalid::NotUtf8 => FormError::NotUtf8(key.clone()),
        })?;
        fields.entry(key).or_insert(value);
    }
    Ok(fields)
}

/// Decodes one name or value. Browsers percent-encode everything but printable ASCII, so a raw
/// control or non-ASCII byte, or a `%` not followed by two hex digits, means this is not a form.
fn decode(raw: &[u8]) -> Result<String, Invalid> {
    for (i, &b) in raw.iter().enumerate() {
        if !(0x21..0x7f).contains(&b) {
            return Err(Invalid::Malformed);
        }
        if b == b'%'
            && !(raw.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && raw.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(Invalid::Malformed);
        }
    }
    let plus_as_space: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    String::from_utf8(percent_decode(&plus_as_space).collect()).map_err(|_| Invalid::NotUtf8)
}

enum Invalid {
    Malformed,
    NotUtf8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_percent_and_utf8() {
        let f = parse(b"name=Zo%C3%AB+Smith&agree=yes&code=&x").unwrap();
        assert_eq!(f["name"], "Zoë Smith");
        assert_eq!(f["agree"], "yes");
        assert_eq!(f["code"], "");
        assert_eq!(f["x"], "");
    }

    #[test]
    fn first_value_wins_and_bad_bytes_are_named() {
        assert_eq!(parse(b"a=1&a=2").unwrap()["a"], "1");
        assert_eq!(parse(b"name=%FF%FE").unwrap_err(), FormError::NotUtf8("name".into()));
        assert_eq!(parse(b"%FF=1").unwrap_err(), FormError::Malformed);
        assert!(parse(b"").unwrap().is_empty());
        assert_eq!(parse(b"a=%%%").unwrap_err(), FormError::Malformed);
        assert_eq!(parse(b"a=%4").unwrap_err(), FormError::Malformed);
        assert_eq!(parse(b"a=b\x01c").unwrap_err(), FormError::Malformed);
        assert_eq!(parse("name=Zoë".as_bytes()).unwrap_err(), FormError::Malformed);
    }
}
