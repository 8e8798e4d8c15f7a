//! Who may pass: the domain service between the surfaces (the portal, the admin, the control
//! socket) and the mechanisms (the store, the firewall writer, the neighbour table). Decisions
//! here return typed outcomes and use no HTTP types; each surface translates them into its own
//! form (a page, a status, a JSON line).

pub mod accept;
pub mod gatekeeper;
pub mod staff;

pub use accept::{Admissions, Admitted, Application, Refusal, Unavailable};
