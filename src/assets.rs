//! Portal assets: templates and the policy. Defaults are embedded in the binary; an operator's
//! override folder is layered on top, file by file. Read at start; nothing here is written.

use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser};
use sha2::{Digest, Sha256};

/// Built-in templates, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../portal-assets/templates/base.html")),
    ("terms.html", include_str!("../portal-assets/templates/terms.html")),
    (
        "accepted.html",
        include_str!("../portal-assets/templates/accepted.html"),
    ),
    ("message.html", include_str!("../portal-assets/templates/message.html")),
    ("refusals.txt", include_str!("../portal-assets/templates/refusals.txt")),
    ("policy.html", include_str!("../portal-assets/templates/policy.html")),
    ("portal.css", include_str!("../portal-assets/templates/portal.css")),
    (
        "admin/base.html",
        include_str!("../portal-assets/templates/admin/base.html"),
    ),
    (
        "admin/login.html",
        include_str!("../portal-assets/templates/admin/login.html"),
    ),
    (
        "admin/message.html",
        include_str!("../portal-assets/templates/admin/message.html"),
    ),
    (
        "admin/dashboard.html",
        include_str!("../portal-assets/templates/admin/dashboard.html"),
    ),
    (
        "admin/courses.html",
        include_str!("../portal-assets/templates/admin/courses.html"),
    ),
    (
        "admin/guests.html",
        include_str!("../portal-assets/templates/admin/guests.html"),
    ),
    (
        "admin/poster.html",
        include_str!("../portal-assets/templates/admin/poster.html"),
    ),
    (
        "admin/audit.html",
        include_str!("../portal-assets/templates/admin/audit.html"),
    ),
    (
        "admin/signed_in.html",
        include_str!("../portal-assets/templates/admin/signed_in.html"),
    ),
    (
        "admin/words.txt",
        include_str!("../portal-assets/templates/admin/words.txt"),
    ),
];

/// The admin stylesheet (served as a file: the admin's CSP allows no inline style).
pub const ADMIN_CSS: &str = include_str!("../portal-assets/templates/admin/admin.css");

/// The built-in example policy.
pub const DEFAULT_POLICY: &str = include_str!("../portal-assets/policy.md");

/// Problems reading assets; each names the config key to fix.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The policy file cannot be read.
    #[error(
        "config key portal.policy: cannot read {path}: {source} (fix: point it at a readable Markdown file, or remove the key to use the built-in policy)"
    )]
    Policy {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The policy file is empty.
    #[error("config key portal.policy: {0} is empty (fix: write the policy guests must accept into it)")]
    EmptyPolicy(PathBuf),
    /// The override folder is not a readable folder.
    #[error(
        "config key portal.assets: {path} is not a readable folder: {detail} (fix: create it, or remove the key to use the built-in assets)"
    )]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A template does not compile.
    #[error("template {name}: {detail} (fix: correct the template in the portal.assets folder)")]
    Template {
        /// Which template.
        name: String,
        /// minijinja's description.
        detail: String,
    },
}

/// The policy as guests see it, with its version.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The exact Markdown text.
    pub markdown: String,
    /// SHA-256 of the Markdown bytes, lower-case hex: the policy version.
    pub hash: String,
    /// Rendered HTML (raw HTML in the Markdown is dropped, so nothing can inject script).
    pub html: String,
}

impl Policy {
    /// Renders and hashes `markdown`.
    pub fn new(markdown: String) -> Self {
        let hash = Sha256::digest(markdown.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let parser = Parser::new_ext(&markdown, Options::ENABLE_TABLES).map(|e| match e {
            // Raw HTML is shown as text rather than interpreted.
            Event::Html(t) | Event::InlineHtml(t) => Event::Text(t),
            other => other,
        });
        let mut html = String::new();
        pulldown_cmark::html::push_html(&mut html, parser);
        Self { markdown, hash, html }
    }

    /// Loads the configured policy, or the built-in one.
    ///
    /// # Errors
    /// If the file cannot be read or is empty.
    pub fn load(path: Option<&Path>) -> Result<Self, AssetError> {
        let Some(path) = path else {
            return Ok(Self::new(DEFAULT_POLICY.to_owned()));
        };
        let text = std::fs::read_to_string(path).map_err(|source| AssetError::Policy {
            path: path.to_owned(),
            source,
        })?;
        if text.trim().is_empty() {
            return Err(AssetError::EmptyPolicy(path.to_owned()));
        }
        Ok(Self::new(text))
    }
}

/// The template environment: override folder first, then the built-in defaults.
///
/// # Errors
/// If the override folder is unreadable or any template fails to compile.
pub fn templates(overrides: Option<&Path>) -> Result<minijinja::Environment<'static>, AssetError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    if let Some(dir) = overrides {
        std::fs::read_dir(dir).map_err(|e| AssetError::Folder {
            path: dir.to_owned(),
            detail: e.to_string(),
        })?;
    }
    for (name, builtin) in TEMPLATES {
        let source = overrides
            .map(|dir| dir.join("templates").join(name))
            .filter(|p| p.is_file())
            .map(|p| {
                std::fs::read_to_string(&p).map_err(|e| AssetError::Folder {
                    path: p,
                    detail: e.to_string(),
                })
            })
            .transpose()?
            .unwrap_or_else(|| (*builtin).to_owned());
        env.add_template_owned(*name, source)
            .map_err(|e| AssetError::Template {
                name: (*name).to_owned(),
                detail: e.to_string(),
            })?;
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_hash_is_of_the_exact_bytes_and_html_is_inert() {
        let p = Policy::new("# Title\n\n<script>alert(1)</script>\n".into());
        assert_eq!(p.hash.len(), 64);
        assert_ne!(p.hash, Policy::new("# Title\n\n<script>alert(1)</script>".into()).hash);
        assert!(p.html.contains("<h1>Title</h1>"));
        assert!(!p.html.contains("<script>"), "{}", p.html);
    }

    #[test]
    fn builtin_policy_is_the_wifi_aup() {
        let p = Policy::load(None).unwrap();
        assert!(p.html.contains("Wi-Fi Acceptable Use Policy"));
        assert!(p.markdown.contains("training courses only"));
    }

    #[test]
    fn overrides_replace_by_name_and_bad_templates_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("templates/accepted.html"), "custom {{ until }}").unwrap();
        let env = templates(Some(dir.path())).unwrap();
        let out = env
            .get_template("accepted.html")
            .unwrap()
            .render(minijinja::context! { until => "16:00" })
            .unwrap();
        assert_eq!(out, "custom 16:00");
        std::fs::write(dir.path().join("templates/message.html"), "{% if %}").unwrap();
        let e = templates(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("message.html"), "{e}");
        assert!(templates(Some(Path::new("/nonexistent/x"))).is_err());
    }
}
