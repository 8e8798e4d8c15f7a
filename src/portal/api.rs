//! The captive-portal API (RFC 8908) at /api/captive: what this device's state is, as JSON, for
//! the OS to show the portal and the time left without guessing from probe answers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::PortalState;

/// The API's media type.
pub const MEDIA_TYPE: &str = "application/captive+json";

/// Whether an `Accept` header allows `application/captive+json`: a list of media ranges with
/// parameters, where `q=0` refuses and the most specific matching range decides (RFC 9110).
pub fn accepts_captive_json(accept: Option<&str>) -> bool {
    captive_json_weight(accept) > 0.0
}

/// The weight an `Accept` header gives `application/captive+json`: the `q` (0 to 1) of the most
/// specific media range that matches it (the first, among equally specific ones), 0 if none
/// matches, and 1 when there is no header. [`accepts_captive_json`] is this being above 0.
pub fn captive_json_weight(accept: Option<&str>) -> f32 {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return 1.0;
    };
    // (specificity, q) of the best-matching range.
    let mut best: Option<(u8, f32)> = None;
    for range in split_unquoted(accept, ',') {
        let mut parts = split_unquoted(range, ';').into_iter().map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0_f32;
        for param in parts {
            if let Some((k, v)) = param.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = qvalue(v.trim());
            }
        }
        let specificity = match media.as_str() {
            MEDIA_TYPE => 3,
            "application/*" => 2,
            "*/*" => 1,
            _ => continue,
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// A weight is 0 to 1 (RFC 9110 section 12.4.2). A number outside that counts as the nearer
/// end, so `q=2` still allows and `q=-1` refuses; anything that is not a number refuses.
fn qvalue(text: &str) -> f32 {
    match text.parse::<f32>() {
        Ok(q) if !q.is_nan() => q.clamp(0.0, 1.0),
        _ => 0.0,
    }
}

/// `text` split at each `sep` outside a quoted string: a parameter's quoted value may hold `,`
/// and `;` (RFC 9110 section 5.6.4), and inside one a backslash escapes the next character.
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// GET /api/captive.
pub(super) async fn captive(
    State(st): State<Arc<PortalState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if !accepts_captive_json(accept) {
        return (
            StatusCode::NOT_ACCEPTABLE,
            [(header::CACHE_CONTROL, "private")],
            format!("this resource is {MEDIA_TYPE}\n"),
        )
            .into_response();
    }
    let ip = peer.ip().to_canonical();
    let now = st.access.now();
    // Unknown device, lookup failure or no open consent: captive (never open by mistake).
    let until = st.access.open_until(ip).await;
    let config = &st.config;
    let mut body = json!({
        "captive": until.is_none(),
        "user-portal-url": config.portal_https_url("/"),
        "venue-info-url": config.portal_https_url("/policy"),
    });
    if let Some(until) = until {
        let left = until.duration_since(now).as_secs().max(0);
        body["seconds-remaining"] = json!(left);
        body["can-extend-session"] = json!(false);
    }
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    response
}

#[cfg(test)]
mod tests {
    use super::accepts_captive_json as ok;

    #[test]
    fn accept_header_is_parsed_not_compared() {
        assert!(ok(None));
        assert!(ok(Some("application/captive+json")));
        assert!(ok(Some("Application/Captive+JSON; charset=utf-8")));
        assert!(ok(Some("text/html, application/captive+json;q=0.5")));
        assert!(ok(Some("application/json;q=0.9, */*;q=0.1")));
        assert!(ok(Some("application/*")));
        assert!(!ok(Some("text/html")));
        assert!(!ok(Some("application/captive+json;q=0")));
        assert!(!ok(Some("*/*;q=0")));
        // The most specific range decides: refused by name even though */* is allowed.
        assert!(!ok(Some("*/*, application/captive+json;q=0")));
        assert!(ok(Some("application/*;q=0, application/captive+json")));
        assert!(!ok(Some("application/captive+json;q=nonsense")));
    }

    #[test]
    fn quoted_parameter_values_may_hold_commas_and_semicolons() {
        // Found by the fuzzer (issue 10): the parser split inside quotes, so a quoted `,` began a
        // new range and a quoted `;` a new parameter.
        assert!(!ok(Some("application/captive+json;p=\"a,b\";q=0")));
        assert!(ok(Some("application/captive+json;p=\"x;q=0\"")));
        assert!(ok(Some("text/html;p=\"a,*/*;q=0\", application/captive+json")));
        assert!(!ok(Some("text/html;p=\"a\\\",application/captive+json\"")));
        assert!(ok(Some("text/html, application/captive+json;p=\"x\\\"y\";q=0.5")));
    }

    #[test]
    fn weights_outside_0_to_1_count_as_the_nearer_end() {
        // Found by the fuzzer (issue 10): q=2, q=-1 and q=NaN were kept as they were.
        use super::captive_json_weight as w;
        assert_eq!(w(Some("application/captive+json;q=2")), 1.0);
        assert_eq!(w(Some("application/captive+json;q=inf")), 1.0);
        assert_eq!(w(Some("application/captive+json;q=-1")), 0.0);
        assert_eq!(w(Some("application/captive+json;q=NaN")), 0.0);
        assert_eq!(w(Some("application/captive+json;q=0.5")), 0.5);
        assert_eq!(w(Some("text/html")), 0.0);
        assert_eq!(w(None), 1.0);
    }
}
