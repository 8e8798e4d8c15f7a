//! The trust hub (issue 15, in progress): one consent log for a multi-academy trust. Each
//! school's router keeps its own store as the source of truth and ships its audit events to
//! the hub, which keeps them in PostgreSQL exactly as sent and checks each site's hash chain as
//! they arrive.
//!
//! Built so far: the chain check (`chain`) and the hub's store (`store`: schema migrations,
//! the in-order, idempotent intake of a site's events, `sites` and `verify`). Not yet: the
//! school's shipper, the HTTPS intake with mutual TLS, consent rows, erasure, retention and
//! the `aupgate hub` commands.

pub mod chain;
pub mod store;
