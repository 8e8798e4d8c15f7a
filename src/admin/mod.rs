//! Staff-facing surfaces: the HTTPS web UI and the local control socket the CLI talks to. What
//! staff can do is `access::staff`, shared by both; the daemon stays the one owner of the
//! firewall, so every change staff make goes through it.

pub mod control;
pub mod oidc;
pub mod tls;
pub mod web;
