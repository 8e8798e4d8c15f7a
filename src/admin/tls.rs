//! The admin listener's certificate: the school's, or a self-signed one made on first start and
//! kept in the state folder (so its fingerprint stays the same across restarts).

use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Where the self-signed certificate and key live: beside the store.
pub fn self_signed_paths(config: &Config) -> (PathBuf, PathBuf) {
    let dir = config
        .store_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("admin-tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The admin's certificate and key paths, making a self-signed pair for `ip` if none is
/// configured and none was made before.
///
/// # Errors
/// If the pair cannot be generated or written.
pub fn certificate(config: &Config, ip: IpAddr) -> anyhow::Result<(PathBuf, PathBuf)> {
    use anyhow::Context as _;
    if let Some(admin) = &config.admin
        && let Some((cert, key)) = &admin.tls
    {
        return Ok((cert.clone(), key.clone()));
    }
    let (cert, key) = self_signed_paths(config);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let dir = cert.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = vec![ip.to_string(), "aupgate-admin".to_owned()];
    let pair = rcgen::generate_simple_self_signed(names).context("generating the admin's self-signed certificate")?;
    std::fs::write(&cert, pair.cert.pem()).with_context(|| format!("writing {}", cert.display()))?;
    // The key is written 0600 from the start, never readable by others even for a moment.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key)
        .with_context(|| format!("writing {}", key.display()))?;
    std::io::Write::write_all(&mut file, pair.signing_key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    tracing::info!(cert = %cert.display(), "made a self-signed certificate for the admin");
    Ok((cert, key))
}
