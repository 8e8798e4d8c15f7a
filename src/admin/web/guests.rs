//! Live guests and exceptions: the list (optionally one course's), revoking one device or a whole
//! course, and granting or ending an exception. Closing devices goes through `actions`, which
//! writes the store first and then the firewall.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use jiff::civil::DateTime;
use serde::Serialize;

use super::{CsrfForm, Reply, Staff, WebState, local, ser};
use crate::access::staff as actions;
use crate::clients::MacAddr;

#[derive(Serialize)]
struct GuestRow {
    mac: String,
    randomised: bool,
    ip: String,
    name: String,
    organisation: String,
    course: String,
    since: String,
    until: String,
}

#[derive(serde::Deserialize)]
pub(super) struct GuestFilter {
    course: Option<String>,
}

pub(super) async fn guests(State(st): State<WebState>, staff: Staff, Query(filter): Query<GuestFilter>) -> Response {
    let reply = Reply::new(&st, &staff, "/");
    let now = st.actions.clock.now();
    let selected: Option<i64> = filter.course.as_deref().and_then(|c| c.parse().ok());
    let Ok((sessions, courses, exceptions)) = st
        .actions
        .store
        .run(move |s| Ok((s.sessions(now)?, s.courses()?, s.exceptions(now)?)))
        .await
    else {
        return reply.unavailable();
    };
    let rows: Vec<GuestRow> = sessions
        .iter()
        .filter(|s| selected.is_none_or(|id| s.course_id == id))
        .map(|s| GuestRow {
            mac: s.mac.to_string(),
            // The locally administered bit: phones set it on their private (random) addresses.
            randomised: s.mac.octets()[0] & 0x02 != 0,
            ip: s.ip.clone(),
            name: s.name.clone(),
            organisation: s.organisation.clone(),
            course: s.course.clone(),
            since: local(&st, s.accepted_at),
            until: local(&st, s.expires_at),
        })
        .collect();
    #[derive(Serialize)]
    struct Opt {
        id: i64,
        title: String,
    }
    let options: Vec<Opt> = courses
        .iter()
        .map(|c| Opt {
            id: c.id,
            title: c.title.clone(),
        })
        .collect();
    #[derive(Serialize)]
    struct ExceptionRow {
        id: i64,
        mac: String,
        reason: String,
        granted_by: String,
        until: String,
    }
    let exceptions: Vec<ExceptionRow> = exceptions
        .iter()
        .map(|e| ExceptionRow {
            id: e.id,
            mac: e.mac.to_string(),
            reason: e.reason.clone(),
            granted_by: e.granted_by.clone(),
            until: local(&st, e.until),
        })
        .collect();
    reply.page(
        "admin/guests.html",
        minijinja::context! {
        guests => ser(&rows), courses => ser(&options), selected, exceptions => ser(&exceptions),
        timezone => &st.config.school.timezone_name },
    )
}

pub(super) async fn revoke(State(st): State<WebState>, staff: Staff, CsrfForm(fields): CsrfForm) -> Response {
    let reply = Reply::new(&st, &staff, "/guests");
    let Ok(mac) = fields.get("mac").parse::<MacAddr>() else {
        return reply.message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_revoked",
            "revoke_not_mac",
            minijinja::context! {},
        );
    };
    match actions::revoke(&st.actions, mac, &staff.name).await {
        Ok(_) => reply.done(
            "revoked",
            "revoked_text",
            minijinja::context! { mac => mac.to_string() },
        ),
        Err(e) => reply.refused("not_revoked", &e),
    }
}

pub(super) async fn revoke_course(
    State(st): State<WebState>,
    staff: Staff,
    Path(id): Path<i64>,
    _: CsrfForm,
) -> Response {
    let reply = Reply::new(&st, &staff, "/guests");
    match actions::revoke_course(&st.actions, id, &staff.name).await {
        Ok(n) => reply.back(&format!("/guests?course={id}")).done(
            "revoked",
            "course_revoked_text",
            minijinja::context! { count => n },
        ),
        Err(e) => reply.refused("not_all_revoked", &e),
    }
}

pub(super) async fn grant_exception(State(st): State<WebState>, staff: Staff, CsrfForm(fields): CsrfForm) -> Response {
    let reply = Reply::new(&st, &staff, "/guests");
    let not_granted = |why: &str| {
        reply.message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_exception_granted",
            why,
            minijinja::context! {},
        )
    };
    let Ok(mac) = fields.get("mac").parse::<MacAddr>() else {
        return not_granted("exception_mac");
    };
    let tz = st.config.school.timezone.clone();
    let Some(until) = fields
        .get("until")
        .parse::<DateTime>()
        .ok()
        .and_then(|d| d.to_zoned(tz).ok())
        .map(|z| z.timestamp())
    else {
        return not_granted("exception_until");
    };
    match actions::grant_exception(&st.actions, mac, fields.get("reason"), until, &staff.name).await {
        Ok(_) => reply.done(
            "exception_granted",
            "exception_granted_text",
            minijinja::context! { mac => mac.to_string(), until => local(&st, until) },
        ),
        Err(e) => reply.refused("no_exception_granted", &e),
    }
}

pub(super) async fn end_exception(
    State(st): State<WebState>,
    staff: Staff,
    Path(id): Path<i64>,
    _: CsrfForm,
) -> Response {
    let reply = Reply::new(&st, &staff, "/guests");
    match actions::end_exception(&st.actions, id, &staff.name).await {
        Ok(mac) => reply.done(
            "exception_ended",
            "exception_ended_text",
            minijinja::context! { mac => mac.to_string() },
        ),
        Err(e) => reply.refused("exception_not_ended", &e),
    }
}
