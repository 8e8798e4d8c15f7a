//! The closed table kept for the next boot. The daemon writes it beside the store each time it
//! starts successfully; `aupgate-closed.service` loads it with `nft -f` before any interface is
//! up. That unit reads no config and runs no aupgate code, so a broken config, policy, template,
//! store or binary cannot stop it: guests are closed from the first packet (ARCHITECTURE.md, invariant 1).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::TableSpec;

/// The file's name, in the store's folder.
pub const FILE_NAME: &str = "closed.nft";
/// The systemd unit that loads it at boot.
pub const UNIT: &str = "aupgate-closed.service";
/// Where the shipped unit loads it from: the default store folder.
pub const UNIT_PATH: &str = "/var/lib/aupgate/closed.nft";

const HEADER: &str = "# aupgate: the guest network's closed table, loaded at boot by aupgate-closed.service (nft -f)
# before any interface is up, whether or not the daemon can start. The daemon rewrites this file
# each time it starts; do not edit it (`aupgate check` reports it stale if it differs).
";

/// The boot file that goes with the store at `store_path`.
pub fn path_for(store_path: &Path) -> PathBuf {
    store_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(FILE_NAME)
}

/// The file's text: our whole table with an empty `allowed` set, for this config.
pub fn script(spec: &TableSpec) -> String {
    format!("{HEADER}{}", spec.ruleset(Vec::new()).script())
}

/// Writes the file for `spec` at `path`, atomically: a new file is written and flushed to disk
/// beside it, then renamed over the old one, so a power cut leaves the old file or the new one,
/// never half of either. Mode 0600, owned like the folder it is in.
///
/// # Errors
/// If the folder cannot be written.
pub fn save(path: &Path, spec: &TableSpec) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("nft.new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(script(spec).as_bytes())?;
    // The boot unit reads it as the user that owns the store's folder (the service's): when
    // the daemon was run by hand as root, give the file to that user, or the next boot could
    // not read it. (As the service, the owners match already and nothing is called.)
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (folder, mine) = (std::fs::metadata(dir)?, file.metadata()?);
    use std::os::unix::fs::MetadataExt as _;
    if (folder.uid(), folder.gid()) != (mine.uid(), mine.gid()) {
        std::os::unix::fs::fchown(&file, Some(folder.uid()), Some(folder.gid()))?;
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// How the boot file compares with what this config needs.
#[derive(Debug)]
pub enum State {
    /// It is there and is exactly the closed table for this config.
    Current,
    /// There is none: after a reboot nothing closes guests until the daemon has started.
    Missing,
    /// It was written for another config (interface or ports) or another aupgate version.
    Stale,
    /// It cannot be read.
    Unreadable(std::io::Error),
}

/// Compares the file at `path` with the closed table for `spec`.
pub fn state(path: &Path, spec: &TableSpec) -> State {
    match std::fs::read_to_string(path) {
        Ok(text) if text == script(spec) => State::Current,
        Ok(_) => State::Stale,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::Missing,
        Err(e) => State::Unreadable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(port: u16) -> TableSpec {
        TableSpec {
            interface: "guest0".into(),
            portal_port: port,
            https_port: None,
            garden_secs: None,
        }
    }

    #[test]
    fn the_file_is_the_closed_table_and_goes_stale_when_the_config_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("aupgate.db"));
        assert_eq!(path, dir.path().join("closed.nft"));
        assert!(matches!(state(&path, &spec(8080)), State::Missing));
        save(&path, &spec(8080)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# aupgate: the guest network's closed table"));
        assert!(text.ends_with(&spec(8080).ruleset(Vec::new()).script()));
        assert!(!text.contains("elements"), "closed: no device is let through");
        assert!(matches!(state(&path, &spec(8080)), State::Current));
        assert!(matches!(state(&path, &spec(8081)), State::Stale));
        assert!(
            !dir.path().join("closed.nft.new").exists(),
            "the temporary file is renamed"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the aupgate user, which loads it at boot");
        use std::os::unix::fs::MetadataExt as _;
        let (file, folder) = (
            std::fs::metadata(&path).unwrap(),
            std::fs::metadata(dir.path()).unwrap(),
        );
        assert_eq!((file.uid(), file.gid()), (folder.uid(), folder.gid()));
    }

    /// Run by hand as root, the daemon still leaves a file the service's user can read.
    #[test]
    fn the_file_belongs_to_the_folders_owner() {
        let dir = tempfile::tempdir().unwrap();
        if std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).is_err() {
            eprintln!("SKIP: giving a folder to nobody needs root");
            return;
        }
        let path = path_for(&dir.path().join("aupgate.db"));
        save(&path, &spec(8080)).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    }

    #[test]
    fn the_shipped_unit_loads_the_file_from_the_default_store_folder() {
        let unit = include_str!("../../systemd/aupgate-closed.service");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        assert_eq!(exec, format!("/usr/sbin/nft -f {UNIT_PATH}"));
        // The config's default [store] path.
        assert_eq!(
            path_for(Path::new("/var/lib/aupgate/aupgate.db")),
            PathBuf::from(UNIT_PATH)
        );
    }
}
