//! Where the fingerprint key comes from: a file or an environment variable named in the config
//! (the same key on every node makes reuse across nodes visible), else a random per-node key
//! created once, with mode 0600, in the state directory (created with mode 0700 when missing;
//! an existing directory keeps its mode).

use std::{
    io::{Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

/// Bytes of a generated key.
const KEY_LEN: usize = 32;
/// Name of the generated key in the state directory.
pub const NODE_KEY_FILE: &str = "fingerprint.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("fingerprint key file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fingerprint key file {0} is empty")]
    Empty(PathBuf),
    #[error("fingerprint key variable {0} is not set or empty")]
    Env(String),
    #[error("creating the per-node fingerprint key in {dir}: {source}")]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the key came from, for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
    /// Generated (or reused) in the state directory: fingerprints are comparable on this node
    /// only.
    NodeLocal(PathBuf),
}

/// Loads the configured key, or the node-local one (created on first use).
pub fn load_key(
    key_file: Option<&Path>,
    key_env: Option<&str>,
    state_dir: &Path,
) -> Result<(Vec<u8>, KeySource), KeyError> {
    if let Some(path) = key_file {
        let key = std::fs::read(path).map_err(|source| KeyError::File {
            path: path.to_path_buf(),
            source,
        })?;
        let key = trim_ascii(&key).to_vec();
        if key.is_empty() {
            return Err(KeyError::Empty(path.to_path_buf()));
        }
        return Ok((key, KeySource::File(path.to_path_buf())));
    }
    if let Some(var) = key_env {
        let value = std::env::var(var).unwrap_or_default();
        if value.trim().is_empty() {
            return Err(KeyError::Env(var.to_string()));
        }
        return Ok((value.trim().as_bytes().to_vec(), KeySource::Env(var.into())));
    }
    let path = state_dir.join(NODE_KEY_FILE);
    let key = node_key(state_dir, &path).map_err(|source| KeyError::Create {
        dir: state_dir.to_path_buf(),
        source,
    })?;
    Ok((key, KeySource::NodeLocal(path)))
}

/// Reads the node key, creating it atomically (0600, create_new) when missing.
fn node_key(dir: &Path, path: &Path) -> std::io::Result<Vec<u8>> {
    if let Ok(key) = std::fs::read(path)
        && !key.is_empty()
    {
        return Ok(key);
    }
    // Owner-only when created here; an existing directory (perhaps the caller's working
    // directory, for a bare `--state keytrail.db`) keeps its mode.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut key = vec![0u8; KEY_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(key)
        }
        // Another agent won the race: use its key.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(e),
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn node_key_is_created_once_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (k1, src) = load_key(None, None, &state).unwrap();
        assert_eq!(k1.len(), KEY_LEN);
        let KeySource::NodeLocal(path) = src else {
            panic!("expected a node key")
        };
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let (k2, _) = load_key(None, None, &state).unwrap();
        assert_eq!(k1, k2);
    }

    #[test]
    fn state_dir_mode_is_set_only_when_created_here() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // An existing directory (a caller's working directory) keeps its mode.
        let existing = dir.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
        load_key(None, None, &existing).unwrap();
        assert_eq!(std::fs::metadata(&existing).unwrap().mode() & 0o777, 0o755);
        assert!(existing.join(NODE_KEY_FILE).is_file());
        // A directory created for the key is owner-only, parents included.
        let created = dir.path().join("new").join("state");
        load_key(None, None, &created).unwrap();
        for d in [&created, &dir.path().join("new")] {
            assert_eq!(std::fs::metadata(d).unwrap().mode() & 0o777, 0o700, "{d:?}");
        }
    }

    #[test]
    fn configured_sources_win_and_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "shared-fleet-key\n").unwrap();
        let (k, _) = load_key(Some(&f), None, dir.path()).unwrap();
        assert_eq!(k, b"shared-fleet-key");
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(
            load_key(Some(&f), None, dir.path()),
            Err(KeyError::Empty(_))
        ));
        let e = load_key(None, Some("KT_TEST_SURELY_UNSET_VAR"), dir.path()).unwrap_err();
        assert!(e.to_string().contains("KT_TEST_SURELY_UNSET_VAR"));
    }
}
