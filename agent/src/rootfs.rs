//! Reading credential files the way the workload sees them, and only that way: through the
//! workload's own root (`/proc/PID/root`) with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`,
//! so a symlink planted in a container cannot point the agent at a host file. Regular files
//! only, opened non-blocking (a FIFO cannot stall the agent), never more than a size cap.
//!
//! The reader of a credential is often gone before the agent gets to it (`cat`, cron jobs, CLIs).
//! Then the file is read through another live process of the same cgroup that shares the
//! reader's mount namespace as last seen, or through a root handle kept from an earlier process
//! of that cgroup.

use std::{
    collections::HashMap,
    ffi::CString,
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::Path,
    time::{Duration, SystemTime},
};

/// `struct open_how` (linux/openat2.h).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Why a file could not be read. The text never contains file content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no live process shares the reader's root")]
    NoRoot,
    #[error("not found inside the workload's root")]
    NotFound,
    #[error("permission denied")]
    Denied,
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than the {cap}-byte read cap ({size} bytes)")]
    TooLarge { size: u64, cap: u64 },
    #[error("{0}")]
    Io(String),
}

/// A file's content with the identity used for caching.
#[derive(Debug, Clone)]
pub struct FileContent {
    pub bytes: Vec<u8>,
    pub identity: FileIdentity,
}

/// (device, inode, mtime, size): a file whose identity did not change need not be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i128,
    pub size: u64,
}

impl FileIdentity {
    pub fn mtime(&self) -> SystemTime {
        let d = Duration::from_nanos(self.mtime_ns.unsigned_abs() as u64);
        if self.mtime_ns >= 0 {
            SystemTime::UNIX_EPOCH + d
        } else {
            SystemTime::UNIX_EPOCH - d
        }
    }
}

/// Opens `/proc/PID/root` as a handle usable with [`read_in_root`].
pub fn open_root(pid: u32) -> Result<OwnedFd, ReadError> {
    let path = CString::new(format!("/proc/{pid}/root")).expect("no NUL");
    // SAFETY: valid C string; O_PATH handle, no I/O on it.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(ReadError::NoRoot);
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads `path` (absolute, as the workload sees it) through `root`, at most `cap` bytes.
pub fn read_in_root(root: &OwnedFd, path: &str, cap: u64) -> Result<FileContent, ReadError> {
    let (file, identity) = open_in_root(root, path)?;
    let bytes = read_capped(file, &identity, cap)?;
    Ok(FileContent { bytes, identity })
}

/// Opens `path` through `root` and checks it is a regular file; no content is read yet, so a
/// caller holding a cached result for the same identity can skip the read.
pub fn open_in_root(
    root: &OwnedFd,
    path: &str,
) -> Result<(std::fs::File, FileIdentity), ReadError> {
    let file = openat2_in_root(
        root,
        path,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
    )?;
    let meta = file.metadata().map_err(|e| ReadError::Io(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular);
    }
    let identity = FileIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        size: meta.len(),
    };
    Ok((file, identity))
}

/// The names in directory `dir` (as the workload sees it), at most `limit` of them.
pub fn list_dir_in_root(root: &OwnedFd, dir: &str, limit: usize) -> Result<Vec<String>, ReadError> {
    let dir = openat2_in_root(
        root,
        dir,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )?;
    // Our own descriptor, so this magic link cannot lead anywhere else.
    let entries = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(|e| ReadError::Io(e.to_string()))?;
    Ok(entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .take(limit)
        .collect())
}

/// openat2 relative to `root`: never leaves it (RESOLVE_IN_ROOT, so absolute symlinks resolve
/// inside it too) and never follows /proc magic links.
fn openat2_in_root(root: &OwnedFd, path: &str, flags: i32) -> Result<std::fs::File, ReadError> {
    let rel = CString::new(path.trim_start_matches('/'))
        .map_err(|_| ReadError::Io("path contains NUL".into()))?;
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid fd, C string and open_how of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => ReadError::NotFound,
            Some(libc::EACCES) | Some(libc::EPERM) => ReadError::Denied,
            Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENXIO) => ReadError::NotRegular,
            _ => ReadError::Io(err.to_string()),
        });
    }
    // SAFETY: fresh descriptor we own.
    Ok(std::fs::File::from(unsafe {
        OwnedFd::from_raw_fd(fd as i32)
    }))
}

/// Reads an opened file, refusing one larger than `cap`.
pub fn read_capped(
    file: std::fs::File,
    identity: &FileIdentity,
    cap: u64,
) -> Result<Vec<u8>, ReadError> {
    if identity.size > cap {
        return Err(ReadError::TooLarge {
            size: identity.size,
            cap,
        });
    }
    let mut bytes = Vec::with_capacity(identity.size as usize);
    // The file may grow between fstat and read: never take more than the cap.
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::Io(e.to_string()))?;
    Ok(bytes)
}

/// The inode of a process's mount namespace.
pub fn mount_ns(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// Root handles kept per cgroup, for readers that are gone by the time their open is handled.
const MAX_ROOT_HANDLES: usize = 1024;

/// A workload's root as last seen: which mount namespace, and a handle on its root.
struct RootHandle {
    mnt_ns: u64,
    root: OwnedFd,
}

/// Processes whose root handle is kept, at most.
const MAX_PROCESS_ROOTS: usize = 4096;

/// Finds a root to read through for a process, alive or not.
#[derive(Default)]
pub struct Roots {
    by_cgroup: HashMap<u64, RootHandle>,
    /// The root of each live process seen opening files, so a busy reader costs one dup per
    /// open rather than a procfs lookup and a namespace stat. Forgotten at exec and exit (a
    /// root changes with exec; a process that changes its root without exec (chroot, unshare)
    /// keeps being read through the old one until its next exec).
    by_pid: HashMap<u32, OwnedFd>,
}

/// How the root used for a read was found (reported, so a reader knows how exact it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The opening process itself.
    Process,
    /// Another live process of the same cgroup and mount namespace.
    CgroupPeer,
    /// A handle kept from an earlier process of the same cgroup.
    KeptHandle,
}

impl RootSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RootSource::Process => "process",
            RootSource::CgroupPeer => "cgroup_peer",
            RootSource::KeptHandle => "kept_handle",
        }
    }
}

impl Roots {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the root handle of a process that exec'd or exited.
    pub fn forget_process(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }

    /// Remembers the root of a live process of `cgroup_id` (called at exec and at opens).
    /// `mnt_ns` is the process's mount namespace ([`mount_ns`]), read once per exec by the caller.
    pub fn observe(&mut self, pid: u32, cgroup_id: u64, mnt_ns: Option<u64>) {
        let Some(ns) = mnt_ns else { return };
        if self
            .by_cgroup
            .get(&cgroup_id)
            .is_some_and(|h| h.mnt_ns == ns)
        {
            return;
        }
        let Ok(root) = open_root(pid) else { return };
        if self.by_cgroup.len() >= MAX_ROOT_HANDLES && !self.by_cgroup.contains_key(&cgroup_id) {
            // Simple bound: start over rather than track recency for a rare case.
            self.by_cgroup.clear();
        }
        self.by_cgroup
            .insert(cgroup_id, RootHandle { mnt_ns: ns, root });
    }

    /// A root for `pid` of `cgroup_id`: its own while it lives, else a peer's, else the kept one.
    /// `cgroup_dir` is the cgroup's directory under the cgroup2 mount, to list peers.
    pub fn root_for(
        &mut self,
        pid: u32,
        cgroup_id: u64,
        cgroup_dir: Option<&Path>,
    ) -> Result<(OwnedFd, RootSource), ReadError> {
        if let Some(root) = self.by_pid.get(&pid).and_then(|r| r.try_clone().ok()) {
            return Ok((root, RootSource::Process));
        }
        if let Ok(root) = open_root(pid) {
            self.observe(pid, cgroup_id, mount_ns(pid));
            if self.by_pid.len() >= MAX_PROCESS_ROOTS {
                self.by_pid.clear();
            }
            if let Ok(kept) = root.try_clone() {
                self.by_pid.insert(pid, kept);
            }
            return Ok((root, RootSource::Process));
        }
        let kept_ns = self.by_cgroup.get(&cgroup_id).map(|h| h.mnt_ns);
        if let (Some(dir), Some(ns)) = (cgroup_dir, kept_ns) {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for peer in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                if mount_ns(peer) == Some(ns)
                    && let Ok(root) = open_root(peer)
                {
                    return Ok((root, RootSource::CgroupPeer));
                }
            }
        }
        match self.by_cgroup.get(&cgroup_id) {
            Some(h) => h
                .root
                .try_clone()
                .map(|fd| (fd, RootSource::KeptHandle))
                .map_err(|e| ReadError::Io(e.to_string())),
            None => Err(ReadError::NoRoot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_under_the_cap_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pem");
        std::fs::write(&f, b"0123456789").unwrap();
        let root = open_root(std::process::id()).unwrap();
        let c = read_in_root(&root, f.to_str().unwrap(), 1024).unwrap();
        assert_eq!(c.bytes, b"0123456789");
        assert_eq!(c.identity.size, 10);
        assert!(matches!(
            read_in_root(&root, f.to_str().unwrap(), 5),
            Err(ReadError::TooLarge { size: 10, cap: 5 })
        ));
        assert_eq!(
            read_in_root(&root, dir.path().to_str().unwrap(), 1024).unwrap_err(),
            ReadError::NotRegular
        );
        assert_eq!(
            read_in_root(&root, "/nonexistent/x", 1024).unwrap_err(),
            ReadError::NotFound
        );
    }

    #[test]
    fn fifo_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let root = open_root(std::process::id()).unwrap();
        assert_eq!(
            read_in_root(&root, fifo.to_str().unwrap(), 1024).unwrap_err(),
            ReadError::NotRegular
        );
    }

    #[test]
    fn sparse_huge_file_is_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.key");
        let file = std::fs::File::create(&f).unwrap();
        file.set_len(1 << 30).unwrap();
        let root = open_root(std::process::id()).unwrap();
        assert!(matches!(
            read_in_root(&root, f.to_str().unwrap(), 1 << 20),
            Err(ReadError::TooLarge { .. })
        ));
    }

    #[test]
    fn gone_process_has_no_root_unless_kept() {
        let mut roots = Roots::new();
        assert_eq!(
            roots.root_for(u32::MAX, 7, None).unwrap_err(),
            ReadError::NoRoot
        );
        roots.observe(std::process::id(), 7, mount_ns(std::process::id()));
        let (_, source) = roots.root_for(u32::MAX, 7, None).unwrap();
        assert_eq!(source, RootSource::KeptHandle);
    }
}
