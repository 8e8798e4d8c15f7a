//! The audit pages, for auditor accounts only (the [`Auditor`] extractor): the chain's state, the
//! policy versions, and the consents export. An export is recorded in the log before it is given.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;

use super::{Auditor, CsrfForm, Reply, WebState, local};
use crate::access::staff as actions;
use crate::clients::MacAddr;

pub(super) async fn audit(State(st): State<WebState>, Auditor(staff): Auditor) -> Response {
    let reply = Reply::new(&st, &staff, "/");
    let Ok((chain, versions, courses)) = st
        .actions
        .store
        .run(|s| Ok((s.verify()?, s.policy_versions()?, s.courses()?)))
        .await
    else {
        return reply.unavailable();
    };
    let chain = match chain {
        Ok(ok) => {
            minijinja::context! { ok => true, events => ok.events, head => ok.head, continues_from => ok.continues_from }
        }
        Err(brk) => minijinja::context! { ok => false, event => brk.event, problem => brk.problem },
    };
    let when = |t: Option<&str>| {
        t.and_then(|t| t.parse::<Timestamp>().ok())
            .map_or_else(|| "-".to_owned(), |t| local(&st, t))
    };
    let versions: Vec<minijinja::Value> = versions
        .iter()
        .map(|v| {
            minijinja::context! {
                hash => &v.hash,
                first_shown => when(Some(&v.first_shown_at)),
                first_accepted => when(v.first_accepted_at.as_deref()),
                last_accepted => when(v.last_accepted_at.as_deref()),
                consents => v.consents,
            }
        })
        .collect();
    let courses: Vec<minijinja::Value> = courses
        .iter()
        .map(|c| minijinja::context! { id => c.id, title => &c.title })
        .collect();
    let today = st
        .actions
        .clock
        .now()
        .to_zoned(st.config.school.timezone.clone())
        .date();
    let month_start = today.first_of_month();
    reply.page(
        "admin/audit.html",
        minijinja::context! {
            chain, versions, courses, retention_days => st.config.retention_days,
            default_from => month_start.to_string(), default_to => today.to_string(),
        },
    )
}

/// The export as a download, recorded in the log (who, what range, how many rows) first: an
/// export that cannot be recorded is not given.
pub(super) async fn audit_export(
    State(st): State<WebState>,
    Auditor(staff): Auditor,
    CsrfForm(fields): CsrfForm,
) -> Response {
    let reply = Reply::new(&st, &staff, "/audit");
    let bad = |text: &str| reply.message(StatusCode::BAD_REQUEST, "export_not_made", text, minijinja::context! {});
    let tz = st.config.school.timezone.clone();
    let day = |k: &str, next: bool| {
        let date: jiff::civil::Date = fields.get(k).parse().ok()?;
        let date = if next { date.tomorrow().ok()? } else { date };
        date.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
    };
    let (Some(from), Some(to)) = (day("from", false), day("to", true)) else {
        return bad("export_dates");
    };
    if to <= from {
        return bad("export_order");
    }
    let course = match fields.get("course") {
        "" => None,
        c => match c.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => return bad("export_course"),
        },
    };
    let mac = match fields.get("mac") {
        "" => None,
        m => match m.parse::<MacAddr>() {
            Ok(mac) => Some(mac),
            Err(_) => return bad("export_mac"),
        },
    };
    let (format, extension, content_type) = match fields.get("format") {
        "csv" => (crate::audit::Format::Csv, "csv", "text/csv; charset=utf-8"),
        "jsonl" => (crate::audit::Format::Jsonl, "jsonl", "application/jsonl; charset=utf-8"),
        _ => return bad("export_format"),
    };
    let now = st.actions.clock.now();
    let export = actions::Export {
        by: staff.name.clone(),
        from,
        to,
        course,
        mac,
        format,
    };
    let records = st
        .actions
        .store
        .run(move |s| {
            let records = s.consents_between(from, to, course, mac)?;
            actions::record_export(s, &export, records.len(), now)?;
            Ok(records)
        })
        .await;
    let Ok(records) = records else {
        return reply.unavailable();
    };
    let rows: Vec<crate::audit::Row> = records.iter().map(|r| crate::audit::Row::new(r, &tz, now)).collect();
    let mut out = Vec::new();
    if crate::audit::write(&rows, format, &mut out).is_err() {
        return reply.unavailable();
    }
    tracing::info!(admin = %staff.name, rows = rows.len(), from = %from, to = %to, "audit export downloaded");
    let name = format!(
        "attachment; filename=\"aupgate-consents-{}-to-{}.{extension}\"",
        fields.get("from"),
        fields.get("to")
    );
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        out,
    )
        .into_response()
}
