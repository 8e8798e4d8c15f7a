//! Staff-facing surfaces. For now the local control socket the CLI talks to; the daemon stays the
//! one owner of the firewall, so every change staff make goes through here.

pub mod actions;
pub mod control;
pub mod tls;
pub mod web;
