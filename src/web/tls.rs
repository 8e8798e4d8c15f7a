//! TLS for the portal and the admin: the school's certificate and key, loaded once at start into
//! a rustls server config (aws-lc-rs, TLS 1.2 and 1.3, HTTP/1.1 by ALPN). Errors name the config
//! key of the surface they are for.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Tls;

/// Why HTTPS cannot start; each names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no certificate.
    #[error(
        "config key {section}.tls_cert: {path}: {detail} (fix: point it at the PEM certificate chain for the host name)"
    )]
    Cert {
        /// `portal` or `admin`.
        section: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The key file is unreadable or holds no private key.
    #[error(
        "config key {section}.tls_key: {path}: {detail} (fix: point it at the PEM private key, readable by the service)"
    )]
    Key {
        /// `portal` or `admin`.
        section: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The key does not fit the certificate, or rustls refused them.
    #[error(
        "config keys {0}.tls_cert and {0}.tls_key do not go together: {1} (fix: use the key the certificate was issued for)"
    )]
    Mismatch(&'static str, String),
}

/// Loads the portal's `tls` files into a server config.
///
/// # Errors
/// [`TlsError`], naming the key and the fix.
pub fn server_config(tls: &Tls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_from(&tls.cert, &tls.key, "portal")
}

/// Loads a PEM certificate chain and key into a server config; errors name `section`'s keys.
///
/// # Errors
/// [`TlsError`], naming the key and the fix.
pub fn server_config_from(
    cert: &Path,
    key: &Path,
    section: &'static str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let show = |p: &Path| p.display().to_string();
    let cert_err = |detail: String| TlsError::Cert {
        section,
        path: show(cert),
        detail,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        section,
        path: show(key),
        detail: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(section, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch(section, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The SHA-256 fingerprint of the first certificate in a PEM file, as colon-separated hex (the
/// form browsers show), so IT support can tell staff what to expect.
///
/// # Errors
/// If the file cannot be read or holds no certificate.
pub fn fingerprint(cert: &Path, section: &'static str) -> Result<String, TlsError> {
    use sha2::{Digest, Sha256};
    let der = CertificateDer::from_pem_file(cert).map_err(|e| TlsError::Cert {
        section,
        path: cert.display().to_string(),
        detail: e.to_string(),
    })?;
    Ok(Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}
