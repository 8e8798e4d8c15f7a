//! Courses: the list, creating one, ending one early, and its printable poster (the network, a QR
//! code that joins it, and the access code). The rules for a course live in `actions`; this only
//! reads the form and words the answer.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use jiff::civil::DateTime;
use serde::Serialize;

use super::{CsrfForm, Reply, Staff, WebState, local, ser};
use crate::access::staff as actions;
use crate::clients::CourseState;

#[derive(Serialize)]
struct CourseRow {
    id: i64,
    title: String,
    code: String,
    starts: String,
    ends: String,
    max_devices: u32,
    state: &'static str,
}

pub(super) async fn courses(State(st): State<WebState>, staff: Staff) -> Response {
    let reply = Reply::new(&st, &staff, "/");
    let now = st.actions.clock.now();
    let Ok(list) = st.actions.store.run(|s| s.courses()).await else {
        return reply.unavailable();
    };
    let rows: Vec<CourseRow> = list
        .iter()
        .map(|c| CourseRow {
            id: c.id,
            title: c.title.clone(),
            code: c.code.to_string(),
            starts: local(&st, c.starts_at),
            ends: local(&st, c.ends_at),
            max_devices: c.max_devices,
            state: match c.state(now) {
                CourseState::Upcoming => "upcoming",
                CourseState::Running => "running",
                CourseState::Ended => "ended",
            },
        })
        .collect();
    reply.page(
        "admin/courses.html",
        minijinja::context! {
        courses => ser(&rows), timezone => &st.config.school.timezone_name },
    )
}

pub(super) async fn create_course(State(st): State<WebState>, staff: Staff, CsrfForm(fields): CsrfForm) -> Response {
    let reply = Reply::new(&st, &staff, "/courses");
    let not_created = |why: &str| {
        reply.message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "course_not_created",
            why,
            minijinja::context! {},
        )
    };
    let tz = st.config.school.timezone.clone();
    let when = |k: &str| -> Option<Timestamp> {
        fields
            .get(k)
            .parse::<DateTime>()
            .ok()?
            .to_zoned(tz.clone())
            .ok()
            .map(|z| z.timestamp())
    };
    let (Some(starts), Some(ends)) = (when("starts"), when("ends")) else {
        return not_created("course_times");
    };
    let Ok(max) = fields.get("max_devices").parse::<u32>() else {
        return not_created("course_limit_number");
    };
    match actions::add_course(&st.actions, fields.get("title"), starts, ends, max, &staff.name).await {
        Ok(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, "/courses")]).into_response(),
        Err(e) => reply.refused("course_not_created", &e),
    }
}

pub(super) async fn end_course(State(st): State<WebState>, staff: Staff, Path(id): Path<i64>, _: CsrfForm) -> Response {
    let reply = Reply::new(&st, &staff, "/courses");
    match actions::end_course(&st.actions, id, &staff.name).await {
        Ok((course, closed)) => reply.done(
            "course_ended",
            "course_ended_text",
            minijinja::context! { title => course.title, closed },
        ),
        Err(e) => reply.refused("course_not_ended", &e),
    }
}

/// GET /courses/{id}/poster: one printable A4 page with the course, the network, a QR code that
/// joins it, the access code in large type, and what accepting means.
pub(super) async fn poster(State(st): State<WebState>, staff: Staff, Path(id): Path<i64>) -> Response {
    let reply = Reply::new(&st, &staff, "/courses");
    let Ok(courses) = st.actions.store.run(|s| s.courses()).await else {
        return reply.unavailable();
    };
    let Some(course) = courses.into_iter().find(|c| c.id == id) else {
        return reply.message(
            StatusCode::NOT_FOUND,
            "no_such_course",
            "course_missing",
            minijinja::context! {},
        );
    };
    let guest = &st.config.guest;
    let qr_svg = match &guest.ssid {
        Some(ssid) => {
            let text = crate::clients::wifi_qr_text(ssid, guest.wifi_password.as_deref());
            match qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M) {
                Ok(code) => code
                    .render::<qrcode::render::svg::Color<'_>>()
                    .min_dimensions(240, 240)
                    .quiet_zone(true)
                    .build(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot make the poster's QR code");
                    String::new()
                }
            }
        }
        None => String::new(),
    };
    #[derive(Serialize)]
    struct PosterCourse {
        title: String,
        code: String,
        starts: String,
        ends: String,
    }
    let c = PosterCourse {
        title: course.title.clone(),
        code: course.code.to_string(),
        starts: local(&st, course.starts_at),
        ends: local(&st, course.ends_at),
    };
    reply.page(
        "admin/poster.html",
        minijinja::context! {
            course => ser(&c),
            ssid => guest.ssid.as_deref(),
            // Made here from our own text; the SVG holds only rects and paths.
            qr_svg => minijinja::Value::from_safe_string(qr_svg),
        },
    )
}
