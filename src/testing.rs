//! What the unit tests of several modules share: one school's config and its pages.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::web::{Pages, SchoolView};

/// A small valid config: the school, and the guest side on `guest0` at 192.0.2.1.
pub(crate) const CONFIG: &str = r#"
[school]
name = "Claremont Primary School"
timezone = "Europe/London"
dsl_contact = "Jenny James"
[guest]
interface = "guest0"
address = "192.0.2.1"
"#;

/// `CONFIG`, validated.
#[allow(clippy::unwrap_used)]
pub(crate) fn config() -> Arc<Config> {
    Arc::new(Config::parse(CONFIG, Path::new("t")).unwrap())
}

/// The built-in templates, for `config`'s school.
#[allow(clippy::unwrap_used)]
pub(crate) fn pages(config: &Config) -> Pages {
    Pages::new(crate::assets::templates(None).unwrap(), SchoolView::of(config))
}
