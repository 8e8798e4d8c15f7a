//! Integration tests: one binary. Everything here runs the real `aupgate` binary.
//! - `netns`: the namespace lab (gateway, access point, clients, "internet"); RAII cleanup.
//! - `harness`: starting/stopping the daemon inside the lab, the CLI, a guest's requests.
//! - `boot`: closed from the first packet after a reboot, whatever part is broken (issue 10).
//! - `firewall`: the invariants of ARCHITECTURE.md through the real kernel (fail closed, survives
//!   restarts and crashes, revoke, expiry, table restore, other tables untouched).
//! - `fairness`: slow-header floods from one device or many cannot starve the portal (issue 10).
//! - `portal`: a guest's path through the portal over real TCP, bad input included.
//! - `cli`: `check` and the CLI's own errors.
//! - `dhcp`: the shipped dnsmasq snippet hands out the API URL (RFC 8910) to a real client.
//! - `https`: HTTPS and the RFC 8908 API with a throwaway CA.
//! - `probes`: the OS captive-portal probes through real DNS, v4 and v6, before and after.
//! - `audit`: the hash-chained log; verify catches edits made with the sqlite3 shell.
//! - `admin`: the staff web UI over HTTPS, end to end with a guest.
//! - `service`: SIGHUP reload, running unprivileged with two capabilities, the systemd unit.
//! - `radius`: RADIUS accounting to a real FreeRADIUS: Start, Interim, Stop, failover, a server
//!   that is down across a restart, a wrong secret (issue 13).
//! - `browser`: the guest flow in Debian's Chromium with JavaScript off, at 360 px.
//! - `hub`: the trust hub's store on a real PostgreSQL (`postgres`: a server of the test's
//!   own, as the postgres user, on a private socket), fed by real school stores (issue 15).
//! - `oidc`: staff sign-in with the school's account against a real OpenID provider
//!   (oidc-provider over HTTPS with a throwaway CA), in Chromium (issue 14).
//!
//! Tests that need root skip with a message when not root; with AUPGATE_REQUIRE_NETNS=1 (set by
//! .ci/run) they fail instead, so CI can never pass by skipping them.
// These tests drive a real daemon in real time, so they read the wall clock directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    unreachable_pub
)]

mod admin;
mod audit;
mod boot;
mod browser;
mod cli;
mod dhcp;
mod fairness;
mod firewall;
mod harness;
mod https;
mod hub;
mod netns;
mod oidc;
mod portal;
mod postgres;
mod probes;
mod radius;
mod service;
