//! The dashboard: guests now, today's accepts and refusals, running courses, the firewall's
//! last check, and RADIUS accounting's backlog when it is on. It only reads.

use axum::extract::State;
use axum::response::Response;

use super::{Reply, Staff, WebState, local};
use crate::clients::CourseState;
use crate::store::accounting::RADIUS;

pub(super) async fn dashboard(State(st): State<WebState>, staff: Staff) -> Response {
    let reply = Reply::new(&st, &staff, "/");
    let now = st.actions.clock.now();
    let midnight = now
        .to_zoned(st.config.school.timezone.clone())
        .start_of_day()
        .map(|z| z.timestamp())
        .unwrap_or(now);
    let counts = st
        .actions
        .store
        .run(move |s| {
            // RADIUS accounting's backlog, when it is on.
            let backlog = match s.accounting() {
                Some(_) => Some(s.outbox_backlog(RADIUS)?),
                None => None,
            };
            Ok((s.sessions(now)?.len(), s.counts_since(midnight)?, s.courses()?, backlog))
        })
        .await;
    let Ok((guests_now, (accepted_today, wrong_codes_today, full_today), courses, backlog)) = counts else {
        return reply.unavailable();
    };
    let radius = backlog.map(|b| {
        minijinja::context! {
            pending => b.pending,
            since => b.oldest.map(|t| local(&st, t)),
            error => b.last_error,
        }
    });
    let courses_running = courses.iter().filter(|c| c.state(now) == CourseState::Running).count();
    let fw = st.actions.firewall.status();
    let firewall = minijinja::context! {
        present => fw.table_present,
        elements => fw.elements,
        last_check => fw.last_check.map(|t| t.to_zoned(st.config.school.timezone.clone()).strftime("%H:%M:%S").to_string()),
        last_rebuild => fw.last_rebuild.map(|t| local(&st, t)),
        error => fw.last_error,
    };
    reply.page(
        "admin/dashboard.html",
        minijinja::context! {
        guests_now, accepted_today, wrong_codes_today, full_today, courses_running, firewall, radius },
    )
}
