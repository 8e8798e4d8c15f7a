//! aupgate: a captive-portal gateway for a school's guest Wi-Fi. A device on the guest interface
//! reaches nothing but DHCP, DNS and the portal until it accepts the Wi-Fi Acceptable Use Policy
//! with a training course's access code; then its consent is committed and only then its MAC
//! is let through, until the course ends.
//!
//! Codemap:
//! - [`config`]: the TOML file → validated `Config`.
//! - [`clients`]: domain core, no I/O (MAC, access codes, courses, sessions, rules).
//! - [`access`]: who may pass: the accept decision (typed refusals, no HTTP), and the
//!   gatekeeper that keeps the kernel equal to the store.
//! - [`store`]: SQLite; the only SQL.
//! - [`firewall`]: the only netfilter code, mechanism only; owns table `inet aupgate` and
//!   nothing else.
//! - [`neighbours`]: IP → MAC from the kernel's neighbour table.
//! - [`portal`]: the guest-facing HTTP server.
//! - [`admin`]: staff surfaces: the control socket and the HTTPS web UI.
//! - [`audit`]: exports of the consent log (the hash chain itself lives in `store`).
//! - [`assets`], [`web`]: templates, policy, rendering.
//! - [`daemon`], [`cli`]: wiring.
//!
//! Invariants: fail closed; consent is committed before access; access survives restarts; only
//! our own table is touched; nothing lost or altered unseen; guests never reach staff surfaces
//! (ARCHITECTURE.md states each, with the tests that show it).

pub mod access;
pub mod admin;
pub mod assets;
pub mod audit;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod firewall;
pub mod hub;
pub mod metrics;
pub mod neighbours;
pub mod portal;
pub mod radius;
pub mod secret;
pub mod store;
#[cfg(test)]
mod testing;
pub mod web;
