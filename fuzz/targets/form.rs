//! Target `form`: `web::form::parse`, the strict urlencoded parser behind POST /accept and the
//! staff sign-in. What it accepts must decode exactly as the WHATWG parser (`form_urlencoded`)
//! decodes it, its refusals must be the ones its contract names, and any text a browser encodes
//! must come back unchanged.

use std::collections::HashMap;

use aupgate::web::form::{self, FormError};
use percent_encoding::percent_decode;

use crate::driver::Target;

pub(crate) struct Form;

impl Target for Form {
    fn name(&self) -> &'static str {
        "form"
    }

    fn tokens(&self) -> &'static [&'static str] {
        &[
            "name=",
            "code=",
            "organisation=",
            "agree=yes",
            "policy=",
            "%2B",
            "%25",
            "%26",
            "%3D",
            "%20",
            "%e2%82%ac",
            "%ED%A0%80",
            "&&",
            "==",
            "a=1&a=2",
        ]
    }

    fn check(&mut self, input: &[u8]) -> Result<u64, String> {
        let class = match form::parse(input) {
            Ok(fields) => {
                accepted(input, &fields)?;
                fields.len().min(8) as u64
            }
            Err(FormError::NotUtf8(name)) => {
                if !pairs(input).any(|(k, v)| {
                    well_formed(k)
                        && well_formed(v)
                        && decoded(k).as_deref() == Some(name.as_str())
                        && decoded(v).is_none()
                }) {
                    return Err(format!(
                        "NotUtf8({name:?}) but no well-escaped field of that name has a non-UTF-8 value"
                    ));
                }
                20
            }
            Err(FormError::Malformed) => {
                if pairs(input).all(|(k, v)| well_formed(k) && well_formed(v) && decoded(k).is_some()) {
                    return Err("Malformed, but every field is printable, well escaped and named in UTF-8".into());
                }
                30
            }
        };
        browser_encoded_round_trip(input)?;
        Ok(class)
    }
}

/// An accepted body: the same fields as the WHATWG decoder gives (first value wins), and
/// re-encoding them parses back to the same.
fn accepted(input: &[u8], fields: &HashMap<String, String>) -> Result<(), String> {
    let mut reference = HashMap::new();
    for (k, v) in form_urlencoded::parse(input) {
        reference.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    if *fields != reference {
        return Err(format!("parsed {fields:?}, the WHATWG decoder gives {reference:?}"));
    }
    let again =
        form::parse(encode(sorted(fields)).as_bytes()).map_err(|e| format!("re-encoded fields refused: {e}"))?;
    if again != *fields {
        return Err(format!("re-encoded {fields:?} parsed as {again:?}"));
    }
    Ok(())
}

/// Pairs taken from the input's text (`\x1f` separates them), plus the whole text as one value,
/// encoded exactly as a browser submits a form: they must parse, to exactly those strings.
fn browser_encoded_round_trip(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let parts: Vec<&str> = text.split('\u{1F}').collect();
    let mut pairs: Vec<(&str, &str)> = parts
        .chunks(2)
        .map(|c| (c[0], c.get(1).copied().unwrap_or("")))
        .collect();
    pairs.push(("name", &*text));
    let mut expected = HashMap::new();
    for (k, v) in &pairs {
        expected.entry((*k).to_owned()).or_insert_with(|| (*v).to_owned());
    }
    let body = encode(pairs);
    match form::parse(body.as_bytes()) {
        Ok(got) if got == expected => Ok(()),
        Ok(got) => Err(format!("browser-encoded {body:?} parsed as {got:?}, not {expected:?}")),
        Err(e) => Err(format!("browser-encoded {body:?} refused: {e}")),
    }
}

fn sorted(fields: &HashMap<String, String>) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.sort_unstable();
    pairs
}

fn encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The body's fields, raw: name and value, split at the first `=`.
fn pairs(input: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    input
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        })
}

/// Only printable ASCII, and every `%` followed by two hex digits: what browsers send.
fn well_formed(raw: &[u8]) -> bool {
    raw.iter().enumerate().all(|(i, &b)| {
        (0x21..0x7f).contains(&b)
            && (b != b'%'
                || raw
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)))
    })
}

/// `raw` with `+` as a space and percent escapes decoded, if that is UTF-8.
fn decoded(raw: &[u8]) -> Option<String> {
    let plus: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    String::from_utf8(percent_decode(&plus).collect()).ok()
}
