//! The portal's TLS: the school's certificate and key, loaded once at start into a rustls
//! server config (aws-lc-rs, TLS 1.2 and 1.3, HTTP/1.1 by ALPN). Errors name the config key.

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
        "config key portal.tls_cert: {path}: {detail} (fix: point it at the PEM certificate chain for portal.hostname)"
    )]
    Cert {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The key file is unreadable or holds no private key.
    #[error(
        "config key portal.tls_key: {path}: {detail} (fix: point it at the PEM private key, readable by the service)"
    )]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The key does not fit the certificate, or rustls refused them.
    #[error(
        "config keys portal.tls_cert and portal.tls_key do not go together: {0} (fix: use the key the certificate was issued for)"
    )]
    Mismatch(String),
}

/// Loads `tls`'s files into a server config.
///
/// # Errors
/// [`TlsError`], naming the key and the fix.
pub fn server_config(tls: &Tls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let show = |p: &Path| p.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| TlsError::Cert {
            path: show(&tls.cert),
            detail: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: show(&tls.cert),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: show(&tls.cert),
            detail: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| TlsError::Key {
        path: show(&tls.key),
        detail: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
