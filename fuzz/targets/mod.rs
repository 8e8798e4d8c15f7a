//! The fuzz targets. Each calls one real function of the library, never a copy of it, and checks
//! properties of what it returns, not only that it returns. One file per target; `all` lists
//! them in the order a run takes them.

mod accept;
mod config;
mod csv_export;
mod form;
mod host;

use crate::driver::Target;

/// Every target, freshly set up (the config target makes its temporary folder here).
pub(crate) fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(form::Form),
        Box::new(accept::Accept),
        Box::new(config::ConfigText::new()),
        Box::new(host::Host::new()),
        Box::new(csv_export::CsvExport),
    ]
}

/// A small stable hash, for outcome classes.
fn class_of(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
