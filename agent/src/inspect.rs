//! Credential files -> credentials: reads a file the way its workload sees it (`rootfs`),
//! classifies the content (`credential`), and remembers the result per file identity
//! (device, inode, mtime, size) so a file read a thousand times is read and parsed once.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use crate::{
    credential::{Classifier, Credential},
    rootfs::{self, FileIdentity, ReadError, RootSource, Roots},
};

/// Cached classifications; cleared wholesale when full (a rare event: distinct credential
/// files on one node are few).
const MAX_CACHED: usize = 4096;

/// What a credential file held.
#[derive(Debug, Clone)]
pub enum Content {
    /// One or more credentials.
    Credentials(Vec<Credential>),
    /// Read, but no credential recognised (the reason names no content).
    Nothing(String),
}

/// The result of inspecting one open.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub content: Result<Arc<Content>, ReadError>,
    /// The file's identity when it could be opened (its mtime gives the credential's age).
    pub identity: Option<FileIdentity>,
    /// How the workload's root was reached.
    pub via: Option<RootSource>,
}

pub struct Inspector {
    roots: Roots,
    classifier: Classifier,
    max_file_bytes: u64,
    cgroup_mount: Option<PathBuf>,
    cache: HashMap<FileIdentity, Arc<Content>>,
}

impl Inspector {
    pub fn new(classifier: Classifier, max_file_bytes: u64, cgroup_mount: Option<PathBuf>) -> Self {
        Self {
            roots: Roots::new(),
            classifier,
            max_file_bytes,
            cgroup_mount,
            cache: HashMap::new(),
        }
    }

    /// Keeps a root handle for the cgroup of a process seen alive (at exec).
    pub fn observe(&mut self, pid: u32, cgroup_id: u64) {
        self.roots.observe(pid, cgroup_id);
    }

    /// Reads and classifies `path` as process `pid` (in cgroup `cgroup_id` at `cgroup_path`)
    /// sees it.
    pub fn inspect(
        &mut self,
        pid: u32,
        cgroup_id: u64,
        cgroup_path: Option<&str>,
        path: &str,
        env_hint: Option<&str>,
        now: SystemTime,
    ) -> Inspection {
        let cgroup_dir = match (&self.cgroup_mount, cgroup_path) {
            (Some(m), Some(p)) => Some(m.join(p.trim_start_matches('/'))),
            _ => None,
        };
        let (root, via) = match self.roots.root_for(pid, cgroup_id, cgroup_dir.as_deref()) {
            Ok(r) => r,
            Err(e) => return failed(e, None),
        };
        let (file, identity) = match rootfs::open_in_root(&root, path) {
            Ok(f) => f,
            Err(e) => return failed(e, Some(via)),
        };
        if let Some(hit) = self.cache.get(&identity) {
            return Inspection {
                content: Ok(Arc::clone(hit)),
                identity: Some(identity),
                via: Some(via),
            };
        }
        let bytes = match rootfs::read_capped(file, &identity, self.max_file_bytes) {
            Ok(b) => b,
            Err(e) => {
                return Inspection {
                    content: Err(e),
                    identity: Some(identity),
                    via: Some(via),
                };
            }
        };
        let content = Arc::new(self.classify(&bytes, path, env_hint, now));
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(identity, Arc::clone(&content));
        Inspection {
            content: Ok(content),
            identity: Some(identity),
            via: Some(via),
        }
    }

    fn classify(
        &self,
        bytes: &[u8],
        path: &str,
        env_hint: Option<&str>,
        now: SystemTime,
    ) -> Content {
        classify_bytes(&self.classifier, bytes, path, env_hint, now)
    }
}

/// Classifies file content; shared with `keytrail classify`.
pub fn classify_bytes(
    classifier: &Classifier,
    bytes: &[u8],
    path: &str,
    env_hint: Option<&str>,
    now: SystemTime,
) -> Content {
    match classifier.classify_file(bytes, path, env_hint, now) {
        Ok(creds) if !creds.is_empty() => Content::Credentials(creds),
        // A known format that holds no secret (a docker config using a credential helper, a
        // public key).
        Ok(_) => Content::Nothing("known format, no secret in it".to_string()),
        Err(skip) => Content::Nothing(skip.to_string()),
    }
}

fn failed(e: ReadError, via: Option<RootSource>) -> Inspection {
    Inspection {
        content: Err(e),
        identity: None,
        via,
    }
}

/// Reads a file from the agent's own view (for `keytrail classify`), with the same cap and
/// regular-file checks as for workloads.
pub fn read_local(path: &Path, cap: u64) -> Result<(Vec<u8>, FileIdentity), ReadError> {
    let root = rootfs::open_root(std::process::id())?;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| ReadError::Io(e.to_string()))?
            .join(path)
    };
    let content = rootfs::read_in_root(&root, &abs.to_string_lossy(), cap)?;
    Ok((content.bytes, content.identity))
}
