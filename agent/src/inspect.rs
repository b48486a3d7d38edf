//! Credential files -> credentials: reads a file the way its workload sees it (`rootfs`),
//! classifies the content (`credential`), and remembers the result per file identity
//! (device, inode, mtime, size) so a file read a thousand times is read and parsed once: an
//! open whose identity is cached is revalidated by `fstat` without reading. Every open and
//! read of a workload's file runs on a reader thread with a timeout (`file_reads`), so a
//! stalled filesystem costs the pipeline at most one timeout.

use std::{
    collections::{HashMap, HashSet},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use crate::{
    credential::{Classifier, Credential, Kind},
    file_reads::{FileReads, key_for, key_for_descriptor, key_for_path},
    rootfs::{self, FileIdentity, ReadError},
    roots::{RootSource, Roots},
};

/// How long a workload's file may take to open and read before it is reported as timed out.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a mount namespace's list of mount points is reused before it is read again.
const MOUNTS_TTL: Duration = Duration::from_secs(5);
/// Mount namespaces whose mount points are remembered, at most.
const MAX_MOUNT_TABLES: usize = 4096;

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
    /// How the file was reached.
    pub via: Option<ReadVia>,
}

/// How a file was reached for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadVia {
    /// By path, through a root found this way.
    Root(RootSource),
    /// Through the opener's own descriptor (the path leads there from no root the agent can
    /// name: `/proc/PID/root/...`, a path longer than the kernel's window).
    Descriptor,
}

impl ReadVia {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadVia::Root(r) => r.as_str(),
            ReadVia::Descriptor => "descriptor",
        }
    }
}

/// Who opened a file, and how to reach what it opened.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    pub pid: u32,
    /// The opener's mount namespace at the open (0: unknown).
    pub mnt_ns: u64,
    pub cgroup_path: Option<&'a str>,
    /// The path lies in this process's root rather than the opener's.
    pub root_pid: Option<u32>,
    /// Read through this descriptor of the opener, which must hold the file of this
    /// identity (inode, device as stat(2) reports it).
    pub descriptor: Option<(i32, u64, u64)>,
    /// The open was reported because it returned this known credential file (inode,
    /// device): what it held is known even when the descriptor is gone.
    pub known_file: Option<(u64, u64)>,
}

pub struct Inspector {
    roots: Roots,
    classifier: Classifier,
    max_file_bytes: u64,
    cgroup_mount: Option<PathBuf>,
    cache: HashMap<FileIdentity, Arc<Content>>,
    /// The identities in `cache`, for reader threads to skip reading what is cached.
    cached_ids: Arc<Mutex<HashSet<FileIdentity>>>,
    reads: FileReads,
    /// Mount points by mount namespace (as its processes see them), to key reads by the mount
    /// they lie on.
    mounts: HashMap<u64, (std::time::Instant, Arc<Vec<String>>)>,
    /// Files found to hold credentials, by (inode, device): what the kernel checks every open
    /// against (KNOWN_FILES), and what such an open held.
    known: HashMap<(u64, u64), Arc<Content>>,
    newly_known: Option<(u64, u64)>,
    known_reset: bool,
}

/// Known credential files at most (the kernel map's size).
pub const MAX_KNOWN_FILES: usize = 4096;
/// Files classified, and directory levels walked, when a namespace's watched trees are seeded.
pub const SEED_MAX_FILES: usize = 64;
pub const SEED_MAX_DEPTH: u32 = 6;

impl Inspector {
    pub fn new(classifier: Classifier, max_file_bytes: u64, cgroup_mount: Option<PathBuf>) -> Self {
        Self {
            roots: Roots::new(),
            classifier,
            max_file_bytes,
            cgroup_mount,
            cache: HashMap::new(),
            cached_ids: Arc::default(),
            reads: FileReads::new(READ_TIMEOUT),
            mounts: HashMap::new(),
            known: HashMap::new(),
            newly_known: None,
            known_reset: false,
        }
    }

    /// Remembers a process seen alive in mount namespace `mnt_ns` (at exec; `fresh` also
    /// drops the root handle kept from before the exec).
    pub fn observe(&mut self, pid: u32, mnt_ns: u64, fresh: bool) {
        if fresh {
            self.roots.forget_process(pid);
        }
        self.roots.observe(pid, mnt_ns);
    }

    /// Remembers the mount namespace of every running process (at start).
    pub fn seed_namespaces(&mut self) {
        self.roots.seed_from_proc();
    }

    /// Reads and classifies `path` as `reader` sees it.
    pub fn inspect(
        &mut self,
        reader: &Reader<'_>,
        path: &str,
        env_hint: Option<&str>,
        now: SystemTime,
    ) -> Inspection {
        let key = match reader.descriptor {
            Some((fd, _, _)) => key_for_descriptor(reader.mnt_ns, reader.pid, fd),
            None => {
                let mounts =
                    self.mount_points(reader.mnt_ns, reader.root_pid.unwrap_or(reader.pid));
                key_for_path(reader.mnt_ns, reader.pid, &mounts, path)
            }
        };
        let (plan, via, root) = if let Some((fd, ino, dev)) = reader.descriptor {
            let plan = OpenPlan::Descriptor {
                pid: reader.pid,
                fd,
                ino,
                dev,
            };
            (plan, ReadVia::Descriptor, None)
        } else if reader.known_file.is_some() {
            return self.known_or(reader, ReadError::NoRoot);
        } else {
            let cgroup_dir = match (&self.cgroup_mount, reader.cgroup_path) {
                (Some(m), Some(p)) if reader.root_pid.is_none() => {
                    Some(m.join(p.trim_start_matches('/')))
                }
                _ => None,
            };
            let found = match reader.root_pid {
                Some(other) => self.roots.root_for(other, 0, None),
                None => self
                    .roots
                    .root_for(reader.pid, reader.mnt_ns, cgroup_dir.as_deref()),
            };
            let (r, source) = match found {
                Ok(r) => r,
                Err(e) => return failed(e, None),
            };
            // Kept for the sibling certificate lookup once the file is classified.
            let kept = r.try_clone().ok();
            let plan = OpenPlan::InRoot {
                root: r,
                path: path.to_string(),
            };
            (plan, ReadVia::Root(source), kept)
        };
        let cached = Arc::clone(&self.cached_ids);
        let cap = self.max_file_bytes;
        // A read that times out is held stuck under its mount as the namespace has it now
        // (the cached mount table may predate the mount).
        let (mnt_ns, pid, root_pid) = (
            reader.mnt_ns,
            reader.pid,
            reader.root_pid.unwrap_or(reader.pid),
        );
        let fresh_key = || match reader.descriptor {
            Some(_) => key,
            None => key_for_path(mnt_ns, pid, &read_mount_points(root_pid), path),
        };
        let opened = self
            .reads
            .run_keyed(key, fresh_key, move || plan.open_and_read(cap, &cached));
        if let Err(ReadError::TimedOut) = &opened {
            // The mount table is read afresh next time; at most one warning per stalled
            // mount: later reads there are skipped, not waited for.
            self.mounts.remove(&mnt_ns);
            tracing::warn!(
                path,
                pid = reader.pid,
                "a workload's file did not open or read in time (a stalled file system?); \
                 later reads on its mount are skipped until it returns"
            );
        }
        let (identity, read) = match opened {
            Ok(o) => o,
            Err(e) if via == ReadVia::Descriptor => return self.known_or(reader, e),
            Err(e) => return failed(e, Some(via)),
        };
        if let Some(hit) = self.cache.get(&identity) {
            return Inspection {
                content: Ok(Arc::clone(hit)),
                identity: Some(identity),
                via: Some(via),
            };
        }
        let bytes = match read {
            Ok(Read::Bytes(b)) => Ok(b),
            // Cached when the reader thread looked, evicted since: read it after all.
            Ok(Read::Cached(handle)) => self.reads.run(key, move || {
                let file = rootfs::open_resolved(&handle, &identity)?;
                rootfs::read_capped(file, &identity, cap)
            }),
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                return Inspection {
                    content: Err(e),
                    identity: Some(identity),
                    via: Some(via),
                };
            }
        };
        let mut content = self.classify(&bytes, path, env_hint, now);
        if let (Content::Credentials(creds), Some(root)) = (&mut content, root) {
            self.lifetime_from_sibling_certificate(key, root, path, creds, now);
        }
        let content = Arc::new(content);
        self.cache_insert(identity, Arc::clone(&content));
        if matches!(*content, Content::Credentials(_)) {
            self.newly_known = Some((identity.ino, identity.dev));
            if self.known.len() >= MAX_KNOWN_FILES {
                self.known.clear();
                self.known_reset = true;
            }
            self.known
                .insert((identity.ino, identity.dev), Arc::clone(&content));
        }
        Inspection {
            content: Ok(content),
            identity: Some(identity),
            via: Some(via),
        }
    }

    /// The mount points of mount namespace `mnt_ns` as process `pid` sees them (read from its
    /// mountinfo, a procfs file no workload can stall; reused for a few seconds); empty when
    /// unknown.
    fn mount_points(&mut self, mnt_ns: u64, pid: u32) -> Arc<Vec<String>> {
        let now = std::time::Instant::now();
        if mnt_ns != 0
            && let Some((at, mounts)) = self.mounts.get(&mnt_ns)
            && now.duration_since(*at) < MOUNTS_TTL
        {
            return Arc::clone(mounts);
        }
        let mounts = Arc::new(read_mount_points(pid));
        if mounts.is_empty() {
            return mounts;
        }
        if mnt_ns != 0 {
            if self.mounts.len() >= MAX_MOUNT_TABLES {
                self.mounts.clear();
            }
            self.mounts.insert(mnt_ns, (now, Arc::clone(&mounts)));
        }
        mounts
    }

    /// Remembers what a file of this identity held (cleared wholesale when full).
    fn cache_insert(&mut self, identity: FileIdentity, content: Arc<Content>) {
        let mut ids = self
            .cached_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
            ids.clear();
        }
        self.cache.insert(identity, content);
        ids.insert(identity);
    }

    /// What a known credential file held, for an open by identity whose descriptor could not
    /// be read; else the read error.
    fn known_or(&self, reader: &Reader<'_>, e: ReadError) -> Inspection {
        match reader.known_file.and_then(|k| self.known.get(&k)) {
            Some(content) => Inspection {
                content: Ok(Arc::clone(content)),
                identity: None,
                via: Some(ReadVia::Descriptor),
            },
            None => failed(e, Some(ReadVia::Descriptor)),
        }
    }

    /// A credential file classified by the last inspection, to be added to the kernel's
    /// KNOWN_FILES (inode, device); and whether the known set was reset since last asked
    /// (the kernel's copy must be emptied too).
    pub fn take_known(&mut self) -> (Option<(u64, u64)>, bool) {
        (
            self.newly_known.take(),
            std::mem::take(&mut self.known_reset),
        )
    }

    /// Walks directories of a workload's watched trees (`/var/run/secrets/`, a Secret volume's
    /// mount point) as process `pid` of mount namespace `mnt_ns` sees them, classifies the
    /// regular files found (bounded: [`SEED_MAX_FILES`] files, [`SEED_MAX_DEPTH`] levels), and
    /// returns the (inode, device) of those holding credentials, now known: an open of one
    /// by any other name, before or after, is then caught by identity.
    pub fn seed_known(
        &mut self,
        pid: u32,
        mnt_ns: u64,
        dirs: &[String],
        now: SystemTime,
    ) -> Vec<(u64, u64)> {
        let Ok((root, _)) = self.roots.root_for(pid, mnt_ns, None) else {
            return Vec::new();
        };
        let dirs = dirs.to_vec();
        let skip: HashSet<(u64, u64)> = self.known.keys().copied().collect();
        let cap = self.max_file_bytes;
        let found = self
            .reads
            .run(key_for(mnt_ns, pid), move || {
                Ok(read_trees(&root, dirs, &skip, cap))
            })
            .unwrap_or_default();
        let mut known = Vec::new();
        for (path, identity, bytes) in found {
            let key = (identity.ino, identity.dev);
            if self.known.contains_key(&key) || known.contains(&key) {
                continue;
            }
            let content = self.classify(&bytes, &path, None, now);
            if matches!(content, Content::Credentials(_)) && self.known.len() < MAX_KNOWN_FILES {
                let content = Arc::new(content);
                self.cache_insert(identity, Arc::clone(&content));
                self.known.insert(key, content);
                known.push(key);
            }
        }
        known
    }

    /// Reads a small file of a workload's own (its /etc/passwd), as process `pid` of mount
    /// namespace `mnt_ns` sees it, under the same rules as credential files.
    pub fn read_workload_file(
        &mut self,
        pid: u32,
        mnt_ns: u64,
        path: &str,
        cap: u64,
    ) -> Result<Vec<u8>, ReadError> {
        let (root, _) = self.roots.root_for(pid, mnt_ns, None)?;
        let path = path.to_string();
        self.reads.run(key_for(mnt_ns, pid), move || {
            rootfs::read_in_root(&root, &path, cap).map(|c| c.bytes)
        })
    }

    /// A process exited: its root handle goes.
    pub fn forget(&mut self, pid: u32) {
        self.roots.forget_process(pid);
    }

    /// The credentials in the environment of process `pid` (its /proc/PID/environ, as read by
    /// another process). Values stay inside this function's classification.
    pub fn inspect_environ(&self, pid: u32, now: SystemTime) -> Inspection {
        let path = format!("/proc/{pid}/environ");
        // Reading another process's environment waits for its memory map lock, which that
        // process can hold: a reader thread, with the timeout, keyed by that process.
        let read = self.reads.run(key_for(0, pid), move || {
            std::fs::read(&path).map_err(|_| ReadError::NotFound)
        });
        let bytes = match read {
            Ok(b) if b.len() as u64 <= self.max_file_bytes => b,
            Ok(b) => {
                return failed(
                    ReadError::TooLarge {
                        size: b.len() as u64,
                        cap: self.max_file_bytes,
                    },
                    None,
                );
            }
            Err(e) => return failed(e, None),
        };
        let text = String::from_utf8_lossy(&bytes);
        let vars = text
            .split('\0')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| !k.is_empty());
        let creds = self.classifier.classify_env(vars, now);
        let content = if creds.is_empty() {
            Content::Nothing("no credential in the environment".into())
        } else {
            Content::Credentials(creds)
        };
        Inspection {
            content: Ok(Arc::new(content)),
            identity: None,
            via: None,
        }
    }

    /// A private key with no certificate in its own file takes the lifetime of a certificate
    /// in the same directory (`tls.key` beside `tls.crt` in a mounted Secret, `key.pem` beside
    /// `svid.pem` from a SPIFFE helper).
    fn lifetime_from_sibling_certificate(
        &self,
        key: u64,
        root: OwnedFd,
        path: &str,
        creds: &mut [Credential],
        now: SystemTime,
    ) {
        let is_cert = |c: &Credential| matches!(c.kind, Kind::X509Certificate | Kind::SpiffeSvid);
        if creds.iter().any(is_cert) || !creds.iter().any(|c| c.kind == Kind::X509PrivateKey) {
            return;
        }
        let (classifier, path, cap) = (
            self.classifier.clone(),
            path.to_string(),
            self.max_file_bytes,
        );
        let found = self.reads.run(key, move || {
            Ok(sibling_certificate(&root, &path, &classifier, cap, now))
        });
        let Ok(Some(cert)) = found else {
            return;
        };
        for c in creds.iter_mut().filter(|c| c.kind == Kind::X509PrivateKey) {
            c.lifetime = cert.lifetime;
            c.expires_at = cert.expires_at;
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

/// The mount points process `pid` sees (its mountinfo, a procfs file no workload can stall);
/// empty when it is gone.
fn read_mount_points(pid: u32) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(crate::workload::unescape_mountinfo)
        .collect()
}

/// How a reader thread reaches a file.
enum OpenPlan {
    /// Through the opener's descriptor, which must hold this identity.
    Descriptor {
        pid: u32,
        fd: i32,
        ino: u64,
        dev: u64,
    },
    /// By path inside a root.
    InRoot { root: OwnedFd, path: String },
}

/// What a reader thread got from an opened file.
enum Read {
    Bytes(Vec<u8>),
    /// Not read: its identity was cached (its handle is handed back in case it no longer is).
    Cached(std::fs::File),
}

impl OpenPlan {
    /// Opens the file and reads it unless `cached` holds its identity. The outer error is the
    /// open's; the inner one the read's, once the identity is known.
    fn open_and_read(
        self,
        cap: u64,
        cached: &Mutex<HashSet<FileIdentity>>,
    ) -> Result<(FileIdentity, Result<Read, ReadError>), ReadError> {
        // By path, the file is resolved without being opened: a cached one is not opened at all.
        let (file, identity) = match self {
            OpenPlan::Descriptor { pid, fd, ino, dev } => {
                rootfs::open_descriptor(pid, fd, ino, dev)?
            }
            OpenPlan::InRoot { root, path } => rootfs::resolve_in_root(&root, &path)?,
        };
        let is_cached = cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&identity);
        if is_cached {
            return Ok((identity, Ok(Read::Cached(file))));
        }
        let read = rootfs::open_resolved(&file, &identity)
            .and_then(|file| rootfs::read_capped(file, &identity, cap))
            .map(Read::Bytes);
        Ok((identity, read))
    }
}

/// Walks directories of watched trees inside `root` (bounded: [`SEED_MAX_FILES`] files,
/// [`SEED_MAX_DEPTH`] levels) and reads the regular files found, except those in `skip`
/// (inode, device). Runs on a reader thread.
fn read_trees(
    root: &OwnedFd,
    dirs: Vec<String>,
    skip: &HashSet<(u64, u64)>,
    cap: u64,
) -> Vec<(String, FileIdentity, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending: Vec<(String, u32)> = dirs.into_iter().map(|d| (d, 0)).collect();
    while let Some((dir, depth)) = pending.pop() {
        let Ok(names) = rootfs::list_dir_in_root(root, &dir, SEED_MAX_FILES) else {
            continue;
        };
        for name in names {
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            match rootfs::open_in_root(root, &path) {
                Ok((file, identity)) => files.push((path, file, identity)),
                Err(ReadError::NotRegular) if depth < SEED_MAX_DEPTH => {
                    pending.push((path, depth + 1))
                }
                Err(_) => {}
            }
            if files.len() >= SEED_MAX_FILES {
                pending.clear();
                break;
            }
        }
    }
    files
        .into_iter()
        .filter(|(_, _, identity)| !skip.contains(&(identity.ino, identity.dev)))
        .filter_map(|(path, file, identity)| {
            let bytes = rootfs::read_capped(file, &identity, cap).ok()?;
            Some((path, identity, bytes))
        })
        .collect()
}

/// The first certificate found in the files beside `path` (bounded: a few dozen names, each
/// read under the cap). Runs on a reader thread.
fn sibling_certificate(
    root: &OwnedFd,
    path: &str,
    classifier: &Classifier,
    cap: u64,
    now: SystemTime,
) -> Option<Credential> {
    const MAX_SIBLINGS: usize = 32;
    let (dir, own) = path.rsplit_once('/')?;
    let dir = if dir.is_empty() { "/" } else { dir };
    let mut names = rootfs::list_dir_in_root(root, dir, MAX_SIBLINGS).ok()?;
    names.sort();
    names
        .iter()
        .filter(|n| n.as_str() != own && !n.starts_with(".."))
        .filter(|n| {
            [".crt", ".pem", ".cer", ".cert"]
                .iter()
                .any(|ext| n.ends_with(ext))
        })
        .find_map(|name| {
            let sibling = format!("{}/{name}", dir.trim_end_matches('/'));
            let (file, identity) = rootfs::open_in_root(root, &sibling).ok()?;
            let bytes = rootfs::read_capped(file, &identity, cap).ok()?;
            let creds = classifier.classify_file(&bytes, &sibling, None, now).ok()?;
            creds
                .into_iter()
                .find(|c| matches!(c.kind, Kind::X509Certificate | Kind::SpiffeSvid))
        })
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

fn failed(e: ReadError, via: Option<ReadVia>) -> Inspection {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::credential::Lifetime;

    fn short_lived_cert_and_key() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["svc.test".into()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::hours(1);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn key_takes_the_lifetime_of_a_certificate_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = short_lived_cert_and_key();
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &key).unwrap();
        let classifier = Classifier::new(b"test key", Duration::from_secs(24 * 3600));
        let mut inspector = Inspector::new(classifier, 1 << 20, None);
        let path = dir.path().join("tls.key");
        let reader = Reader {
            pid: std::process::id(),
            mnt_ns: 0,
            cgroup_path: None,
            root_pid: None,
            descriptor: None,
            known_file: None,
        };
        let got = inspector.inspect(&reader, path.to_str().unwrap(), None, SystemTime::now());
        let Ok(content) = got.content else {
            panic!("unreadable: {:?}", got.content)
        };
        let Content::Credentials(creds) = &*content else {
            panic!("nothing found")
        };
        assert_eq!(creds[0].kind, Kind::X509PrivateKey);
        assert_eq!(creds[0].lifetime, Lifetime::ShortLived);
        assert!(creds[0].expires_at.is_some());

        // Alone, the same key is static.
        let alone = tempfile::tempdir().unwrap();
        std::fs::write(alone.path().join("tls.key"), &key).unwrap();
        let got = inspector.inspect(
            &reader,
            alone.path().join("tls.key").to_str().unwrap(),
            None,
            SystemTime::now(),
        );
        let content = got.content.unwrap();
        let Content::Credentials(creds) = &*content else {
            panic!("nothing found")
        };
        assert_eq!(creds[0].lifetime, Lifetime::Static);
    }
}
