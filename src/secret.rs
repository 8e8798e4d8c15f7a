//! Secrets kept in files of their own (RADIUS's shared secret, the OpenID client secret): one
//! line, in a file nobody but root and the aupgate group may read, and never shown; and the
//! constant-time comparison of tokens.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Constant-time comparison of two tokens (a form's CSRF token, a sign-in's `state`), so a
/// check does not leak a token byte by byte.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A secret read from a file of its own. Its `Debug` shows nothing of it, so no log line can.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Why the secret cannot be used: one line, with the fix.
#[derive(Debug, thiserror::Error)]
#[error("{key} {path}: {problem} (fix: {fix})")]
pub struct SecretError {
    key: &'static str,
    path: String,
    problem: String,
    fix: &'static str,
}

/// How the secret file should be made.
const MAKE_IT: &str = "put the secret on one line, then: chown root:aupgate FILE; chmod 0640 FILE";

impl Secret {
    /// Reads the secret: one line (its newline dropped), from a file nobody else may read.
    /// `key` is the config key that names the file, for the error.
    ///
    /// # Errors
    /// The file is missing or unreadable, readable or writable by others, or empty.
    pub fn load(key: &'static str, path: &Path) -> Result<Self, SecretError> {
        let fail = |problem: String, fix| SecretError {
            key,
            path: path.display().to_string(),
            problem,
            fix,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read it: {e}"), MAKE_IT))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 || mode & 0o020 != 0 {
            return Err(fail(
                format!("its mode is {mode:04o}, so others can read or change it"),
                "chmod 0640 FILE (or 0600), owned by root and the aupgate group",
            ));
        }
        let text = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}"), MAKE_IT))?;
        let mut secret = text.as_slice();
        while let [rest @ .., b'\n' | b'\r'] = secret {
            secret = rest;
        }
        if secret.is_empty() {
            return Err(fail("it is empty".into(), MAKE_IT));
        }
        if secret.contains(&b'\n') {
            return Err(fail(
                "it has more than one line".into(),
                "keep only the shared secret, on one line",
            ));
        }
        Ok(Self(secret.to_vec()))
    }

    /// The secret's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its length (`aupgate check` warns under 16).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a loaded secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A secret for tests.
    #[cfg(test)]
    pub fn of(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_one_line_from_a_private_file_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret-shared-value\r\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let s = Secret::load("radius.secret_file", &path).unwrap();
        assert_eq!(s.bytes(), b"s3cret-shared-value");
        assert!(!format!("{s:?}").contains("s3cret"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::load("radius.secret_file", &path).unwrap_err().to_string();
        assert!(e.contains("mode is 0644") && e.contains("chmod 0640"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        std::fs::write(&path, "\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            Secret::load("radius.secret_file", &path)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        std::fs::write(&path, "one\ntwo\n").unwrap();
        assert!(
            Secret::load("radius.secret_file", &path)
                .unwrap_err()
                .to_string()
                .contains("more than one line")
        );
        let missing = Secret::load("radius.secret_file", &dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("radius.secret_file ") && missing.contains("fix:"),
            "{missing}"
        );
    }
}
