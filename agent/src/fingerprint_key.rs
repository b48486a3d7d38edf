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
    #[error(
        "fingerprint key file {0} (fingerprint.key_file) is empty or only whitespace: write the \
         key shared by all nodes into it, or remove fingerprint.key_file to use a per-node key"
    )]
    Empty(PathBuf),
    #[error(
        "fingerprint key variable {0} (fingerprint.key_env) is not set or empty: set it to the \
         key shared by all nodes, or remove fingerprint.key_env to use a per-node key"
    )]
    Env(String),
    #[error(
        "per-node fingerprint key {0} is empty or only whitespace: delete it and the agent \
         creates a new one (this node's fingerprints then change), or set fingerprint.key_file \
         or fingerprint.key_env to a key shared by all nodes"
    )]
    NodeKeyEmpty(PathBuf),
    #[error("reading the per-node fingerprint key {path}: {source}")]
    NodeKeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the per-node fingerprint key in {dir}: {source}")]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl KeyError {
    /// Whether the fix is in the configuration or in a key file's content (bad configuration,
    /// exit 2) rather than on the machine (reading or creating the node key, exit 1).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            KeyError::File { .. }
                | KeyError::Empty(_)
                | KeyError::Env(_)
                | KeyError::NodeKeyEmpty(_)
        )
    }
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
    let key = node_key(state_dir, &path)?;
    Ok((key, KeySource::NodeLocal(path)))
}

/// Reads the node key, creating it when missing. An empty or whitespace-only key file is
/// refused rather than used (every fingerprint would be keyed with nothing) or replaced (the
/// fingerprints already recorded with the lost key would no longer match).
fn node_key(dir: &Path, path: &Path) -> Result<Vec<u8>, KeyError> {
    let read = |path: &Path| match std::fs::read(path) {
        Ok(key) if trim_ascii(&key).is_empty() => Err(KeyError::NodeKeyEmpty(path.to_path_buf())),
        Ok(key) => Ok(Some(key)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::NodeKeyRead {
            path: path.to_path_buf(),
            source,
        }),
    };
    if let Some(key) = read(path)? {
        return Ok(key);
    }
    let create = |source| KeyError::Create {
        dir: dir.to_path_buf(),
        source,
    };
    match create_node_key(dir, path).map_err(create)? {
        Some(key) => Ok(key),
        // Another agent won the race: use its key (complete, see create_node_key).
        None => read(path)?.ok_or_else(|| create(std::io::ErrorKind::NotFound.into())),
    }
}

/// Writes a new random key to a private temporary file, then links it to `path`: the key file
/// appears complete or not at all, so a concurrent reader never sees it empty. `None` when
/// `path` already exists (another agent made it first).
fn create_node_key(dir: &Path, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    // Owner-only when created here; an existing directory (perhaps the caller's working
    // directory, for a bare `--state keytrail.db`) keeps its mode.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut key = vec![0u8; KEY_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    // Unique among agents sharing the directory (pids may repeat across pid namespaces).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let tmp = dir.join(format!(
        ".{NODE_KEY_FILE}.{}.{nanos}.tmp",
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let linked = f
        .write_all(&key)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(Some(key)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
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
    fn empty_key_files_are_refused_naming_the_file_and_never_a_key() {
        let dir = tempfile::tempdir().unwrap();
        // A real node key next to the empty configured one: its bytes must not show.
        let (node, _) = load_key(None, None, dir.path()).unwrap();
        let node_hex: String = node.iter().map(|b| format!("{b:02x}")).collect();
        let node_text = String::from_utf8_lossy(&node).into_owned();
        let configured = dir.path().join("fleet.key");
        for content in ["", "\n", " \t\r\n  "] {
            std::fs::write(&configured, content).unwrap();
            let e = load_key(Some(&configured), None, dir.path()).unwrap_err();
            assert!(matches!(e, KeyError::Empty(_)), "{e:?}");
            assert!(e.is_config());
            let msg = e.to_string();
            assert!(msg.contains(&configured.display().to_string()), "{msg}");
            assert!(
                msg.contains("empty") && msg.contains("fingerprint.key_file"),
                "{msg}"
            );
            assert!(
                !msg.contains(&node_hex) && !msg.contains(&node_text),
                "{msg}"
            );
        }

        // An empty node key is refused, not used and not replaced.
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let node_key = state.join(NODE_KEY_FILE);
        for content in ["", "\n\n"] {
            std::fs::write(&node_key, content).unwrap();
            let e = load_key(None, None, &state).unwrap_err();
            assert!(matches!(e, KeyError::NodeKeyEmpty(_)), "{e:?}");
            assert!(e.is_config());
            let msg = e.to_string();
            assert!(msg.contains(&node_key.display().to_string()), "{msg}");
            assert!(msg.contains("delete it"), "{msg}");
            assert_eq!(std::fs::read_to_string(&node_key).unwrap(), content);
        }
        // Deleted, a new one is made; no temporary file is left behind.
        std::fs::remove_file(&node_key).unwrap();
        let (k, _) = load_key(None, None, &state).unwrap();
        assert_eq!(k.len(), KEY_LEN);
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);
    }

    #[test]
    fn key_error_exit_classes() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(KeyError::Env("K".into()).is_config());
        assert!(
            KeyError::File {
                path: "/k".into(),
                source: io()
            }
            .is_config()
        );
        assert!(
            !KeyError::Create {
                dir: "/d".into(),
                source: io()
            }
            .is_config()
        );
        assert!(
            !KeyError::NodeKeyRead {
                path: "/d/k".into(),
                source: io()
            }
            .is_config()
        );
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
