//! The trust hub (issue 15, in progress): one consent log for a multi-academy trust. Each
//! school's router keeps its own store as the source of truth and ships its audit events to
//! the hub, which keeps them in PostgreSQL exactly as sent and checks each site's hash chain as
//! they arrive.
//!
//! Built so far: the chain check (`chain`), the hub's store (`store`: schema migrations, the
//! in-order, idempotent intake of a site's events, `sites` and `verify`), its config
//! (`settings`) and `aupgate hub sites|verify` (`cli`). Not yet: the school's shipper, the
//! service with its HTTPS intake and mutual TLS, consent rows, erasure, retention, export.

pub mod chain;
pub mod cli;
pub mod settings;
pub mod store;
