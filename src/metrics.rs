//! Prometheus metrics for `GET /metrics` on the admin listener: counts and timings only, never
//! a MAC, name or address. Counters are bumped where things happen (the portal); the firewall's
//! and the store's figures are read when scraped.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::access::gatekeeper::FirewallStatus;

/// Why an accept was refused, put on the response by the handler that refused it (the status
/// code names the reason otherwise).
#[derive(Debug, Clone, Copy)]
pub struct Refusal(pub &'static str);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignInLabel {
    via: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// The kinds of portal request, counted without a lookup (every request passes here).
const KINDS: [&str; 5] = ["portal", "policy", "api", "accept", "redirect"];

/// Every metric, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    accepts: Counter,
    refusals: Family<ReasonLabel, Counter>,
    requests: Family<KindLabel, Counter>,
    /// The `requests` counter of each of `KINDS`, fetched once.
    by_kind: [Counter; KINDS.len()],
    accept_seconds: Histogram,
    checks: Counter,
    full_checks: Counter,
    restores: Counter,
    guests_allowed: Gauge,
    database_bytes: Gauge,
    connections_refused: Family<ReasonLabel, Counter>,
    connections_evicted: Counter,
    staff_sign_ins: Family<SignInLabel, Counter>,
    store_path: PathBuf,
    /// Scrapes copy the firewall's running totals into counters; one at a time.
    scrape: Mutex<()>,
}

impl Metrics {
    /// Registers every metric; `store_path` is measured for the database size.
    pub fn new(store_path: PathBuf) -> Self {
        let requests = Family::<KindLabel, Counter>::default();
        let by_kind = KINDS.map(|kind| requests.get_or_create(&KindLabel { kind: kind.to_owned() }).clone());
        let mut m = Self {
            registry: Registry::with_prefix("aupgate"),
            accepts: Counter::default(),
            refusals: Family::default(),
            requests,
            by_kind,
            // 0.5 ms to about 1 s: an accept is a few FULL-synced writes and netlink calls.
            accept_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
            checks: Counter::default(),
            full_checks: Counter::default(),
            restores: Counter::default(),
            guests_allowed: Gauge::default(),
            database_bytes: Gauge::default(),
            connections_refused: Family::default(),
            connections_evicted: Counter::default(),
            staff_sign_ins: Family::default(),
            store_path,
            scrape: Mutex::new(()),
        };
        let registry = &mut m.registry;
        registry.register("accepts", "Guests who accepted and were let through", m.accepts.clone());
        registry.register("refusals", "Accepts refused, by reason", m.refusals.clone());
        registry.register("portal_requests", "Portal requests, by kind", m.requests.clone());
        registry.register(
            "accept_duration_seconds",
            "Time from an accept request to its answer",
            m.accept_seconds.clone(),
        );
        registry.register(
            "firewall_reconciles",
            "Checks of the nftables table against the store",
            m.checks.clone(),
        );
        registry.register(
            "firewall_full_checks",
            "Of those, the ones that listed the kernel's table and set (an outside change, or the minute's safety check)",
            m.full_checks.clone(),
        );
        registry.register(
            "firewall_restores",
            "Rebuilds of the nftables table (start-up, or after outside changes)",
            m.restores.clone(),
        );
        registry.register(
            "guests_allowed",
            "Devices in the allowed set at the last check",
            m.guests_allowed.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused by the accept loops, by reason (per_device: a device over its share; total: every slot busy)",
            m.connections_refused.clone(),
        );
        registry.register(
            "connections_evicted",
            "Idle or slow connections closed to make room for a device with fewer",
            m.connections_evicted.clone(),
        );
        registry.register(
            "staff_sign_ins",
            "Sign-ins to the admin, by how (password, oidc) and outcome (ok, or why refused)",
            m.staff_sign_ins.clone(),
        );
        registry.register(
            "database_size_bytes",
            "Size of the SQLite database and its WAL",
            m.database_bytes.clone(),
        );
        m
    }

    /// Registers RADIUS accounting's figures (when `[radius]` is set).
    pub fn add_radius(&mut self, status: &crate::radius::Status) {
        let r = &mut self.registry;
        r.register(
            "radius_pending_records",
            "RADIUS accounting records (Starts and Stops) waiting for a server to take them",
            status.pending.clone(),
        );
        r.register(
            "radius_oldest_pending_timestamp_seconds",
            "When the oldest waiting RADIUS record was written (0 when none waits)",
            status.oldest.clone(),
        );
        r.register(
            "radius_delivered_records",
            "RADIUS Starts and Stops a server took",
            status.delivered.clone(),
        );
        r.register(
            "radius_failed_rounds",
            "Rounds in which no RADIUS server took the record (it stays queued)",
            status.failed_rounds.clone(),
        );
        r.register(
            "radius_interim_updates",
            "RADIUS Interim-Updates a server took",
            status.interims.clone(),
        );
    }

    /// Counts one portal request of `kind`.
    pub fn request(&self, kind: &str) {
        match KINDS.iter().position(|k| *k == kind) {
            Some(i) => self.by_kind[i].inc(),
            None => self.requests.get_or_create(&KindLabel { kind: kind.to_owned() }).inc(),
        };
    }

    /// Counts `n` connections refused for `reason` (`per_device` or `total`).
    pub fn connections_refused(&self, reason: &str, n: u64) {
        self.connections_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts one sign-in to the admin `via` password or oidc, with its `outcome` (`ok`, or the
    /// refusal's label).
    pub fn staff_sign_in(&self, via: &str, outcome: &str) {
        self.staff_sign_ins
            .get_or_create(&SignInLabel {
                via: via.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one connection closed to make room for another device's.
    pub fn connection_evicted(&self) {
        self.connections_evicted.inc();
    }

    /// Records how an accept ended: 200 is an accept; anything else a refusal, by the reason
    /// the handler gave or else by its status.
    pub fn accept_finished(&self, response: &Response, took: Duration) {
        self.accept_seconds.observe(took.as_secs_f64());
        let status = response.status();
        if status == StatusCode::OK {
            self.accepts.inc();
            return;
        }
        let reason = response.extensions().get::<Refusal>().map_or_else(
            || match status {
                StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => "bad_form",
                StatusCode::UNPROCESSABLE_ENTITY => "incomplete_form",
                StatusCode::TOO_MANY_REQUESTS => "locked_out",
                StatusCode::CONFLICT => "course_full",
                StatusCode::FORBIDDEN => "revoked",
                s if s.is_server_error() => "unavailable",
                _ => "other",
            },
            |r| r.0,
        );
        self.refusals
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the firewall's and the store's figures as of now.
    pub fn encode(&self, firewall: &FirewallStatus) -> String {
        let _one = self.scrape.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.checks.inc_by(firewall.checks.saturating_sub(self.checks.get()));
        self.full_checks
            .inc_by(firewall.full_checks.saturating_sub(self.full_checks.get()));
        self.restores
            .inc_by(firewall.rebuilds.saturating_sub(self.restores.get()));
        self.guests_allowed
            .set(i64::try_from(firewall.elements).unwrap_or(i64::MAX));
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.store_path.clone().into_os_string();
        wal.push("-wal");
        let bytes = size(self.store_path.clone()) + size(wal.into());
        self.database_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Marks `response` as a refusal for `reason` (for the refusals metric).
pub fn refused(mut response: Response, reason: &'static str) -> Response {
    response.extensions_mut().insert(Refusal(reason));
    response
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    #[test]
    fn accepts_refusals_and_scraped_figures_are_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        std::fs::write(&db, vec![0u8; 4096]).unwrap();
        let m = Metrics::new(db);
        m.request("portal");
        m.request("portal");
        m.accept_finished(&StatusCode::OK.into_response(), Duration::from_millis(20));
        m.accept_finished(
            &refused(StatusCode::UNPROCESSABLE_ENTITY.into_response(), "wrong_code"),
            Duration::from_millis(3),
        );
        m.accept_finished(&StatusCode::CONFLICT.into_response(), Duration::from_millis(3));
        m.connections_refused("per_device", 3);
        m.connection_evicted();
        let fw = FirewallStatus {
            elements: 7,
            checks: 42,
            rebuilds: 2,
            ..FirewallStatus::default()
        };
        let text = m.encode(&fw);
        for line in [
            "aupgate_accepts_total 1",
            "aupgate_refusals_total{reason=\"wrong_code\"} 1",
            "aupgate_refusals_total{reason=\"course_full\"} 1",
            "aupgate_portal_requests_total{kind=\"portal\"} 2",
            "aupgate_accept_duration_seconds_count 3",
            "aupgate_firewall_reconciles_total 42",
            "aupgate_firewall_restores_total 2",
            "aupgate_guests_allowed 7",
            "aupgate_database_size_bytes 4096",
            "aupgate_connections_refused_total{reason=\"per_device\"} 3",
            "aupgate_connections_evicted_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
        // A second scrape does not count the firewall's totals twice.
        let again = m.encode(&fw);
        assert!(
            again.lines().any(|l| l == "aupgate_firewall_reconciles_total 42"),
            "{again}"
        );
    }

    #[test]
    fn radius_figures_are_encoded_when_accounting_is_on() {
        let mut m = Metrics::new("unused.db".into());
        let off = m.encode(&FirewallStatus::default());
        assert!(!off.contains("radius"), "{off}");
        let status = crate::radius::Status::default();
        m.add_radius(&status);
        status.pending.set(3);
        status.oldest.set(1_795_000_000);
        status.delivered.inc_by(5);
        status.failed_rounds.inc();
        let text = m.encode(&FirewallStatus::default());
        for line in [
            "aupgate_radius_pending_records 3",
            "aupgate_radius_oldest_pending_timestamp_seconds 1795000000",
            "aupgate_radius_delivered_records_total 5",
            "aupgate_radius_failed_rounds_total 1",
            "aupgate_radius_interim_updates_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
    }
}
