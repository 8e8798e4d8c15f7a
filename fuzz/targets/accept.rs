//! Target `accept`: `portal::api::captive_json_weight` and `accepts_captive_json`, the `Accept`
//! parser of the RFC 8908 API. The weight is a qvalue in 0..=1, the yes/no answer is that weight
//! being above 0, and the answer depends on what the header says (RFC 9110), not on its spelling:
//! letter case, ranges for other types, or parameters whose quoted values hold `,` or `;`.

use aupgate::portal::api::{accepts_captive_json, captive_json_weight};

use crate::driver::Target;

pub(crate) struct Accept;

impl Target for Accept {
    fn name(&self) -> &'static str {
        "accept"
    }

    fn tokens(&self) -> &'static [&'static str] {
        &[
            "application/captive+json",
            "Application/Captive+JSON",
            "application/*",
            "application/json",
            "text/html",
            "*/*",
            "q=0",
            "q=1",
            "q=0.5",
            "q=0.001",
            "q=1.000",
            "q=NaN",
            "q=inf",
            "q=2",
            "q=-1",
            "q=1e-9",
            "q=",
            "Q=0",
            ";charset=utf-8",
            "\"a,b\"",
            ";p=\"x;q=0\"",
            " ; ",
            ", ",
            "q = 0",
        ]
    }

    fn check(&mut self, input: &[u8]) -> Result<u64, String> {
        let text = String::from_utf8_lossy(input);
        let w = captive_json_weight(Some(&text));
        if !(0.0..=1.0).contains(&w) {
            return Err(format!("weight {w} is not a qvalue (0 to 1)"));
        }
        if accepts_captive_json(Some(&text)) != (w > 0.0) {
            return Err(format!("accepts_captive_json disagrees with weight {w}"));
        }
        if text.trim().is_empty() && w != 1.0 {
            return Err(format!("an empty header must allow everything, got weight {w}"));
        }
        same(w, &text.to_ascii_uppercase(), "upper-cased")?;
        same(w, &text.to_ascii_lowercase(), "lower-cased")?;
        // Rewrites that assume the commas and semicolons are all separators.
        // Only with ranges to compare (no header at all allows everything), and no quotes.
        if !text.trim().is_empty() && !text.contains(['"', '\\']) {
            same(
                w,
                &format!("{text}, text/html;q=0.7"),
                "with a text/html range appended",
            )?;
            same(w, &format!("text/plain, {text}"), "with a text/plain range prepended")?;
            for param in [";level=1", ";p=\"x,y\"", ";p=\"x;q=0\"", ";p=\"a=b, */*\""] {
                same(
                    w,
                    &with_param(&text, param),
                    &format!("with {param} after each media type"),
                )?;
            }
        }
        Ok((w * 10.0).round() as u64)
    }
}

fn same(w: f32, header: &str, how: &str) -> Result<(), String> {
    let other = captive_json_weight(Some(header));
    if other.to_bits() == w.to_bits() {
        Ok(())
    } else {
        Err(format!("weight {w}, but {other} {how}: {header:?}"))
    }
}

/// `header` with `param` inserted right after the media type of every range.
fn with_param(header: &str, param: &str) -> String {
    header
        .split(',')
        .map(|range| match range.split_once(';') {
            Some((media, rest)) => format!("{media}{param};{rest}"),
            None => format!("{range}{param}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}
