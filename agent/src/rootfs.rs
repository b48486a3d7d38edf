//! Reading credential files the way the workload sees them, and only that way: through the
//! workload's own root (`/proc/PID/root`) with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`,
//! so a symlink planted in a container cannot point the agent at a host file. Regular files
//! only: the path is resolved to an `O_PATH` handle (which opens nothing), checked to be a
//! regular file, and only then is that very inode opened for reading, non-blocking, through
//! the agent's own descriptor; a device node or FIFO a workload plants at a watched path is
//! never opened. Never more than a size cap.
//! `roots` picks the root to read through when the reader is gone.

use std::{
    ffi::CString,
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
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
    #[error("the reader's mount namespace is gone (no process lives in it any more)")]
    NamespaceGone,
    #[error("not found inside the workload's root")]
    NotFound,
    #[error("permission denied")]
    Denied,
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than the {cap}-byte read cap ({size} bytes)")]
    TooLarge { size: u64, cap: u64 },
    #[error("the file behind the reader's descriptor is not the one it opened")]
    Changed,
    #[error("{0}")]
    Io(String),
    #[error("the read did not finish in time (a stalled filesystem?)")]
    TimedOut,
    #[error("skipped: an earlier read on the same mount has not finished")]
    Stalled,
}

impl ReadError {
    /// Every reason, in the order of [`ReadError::index`]; the names of its counters.
    pub const REASONS: [&'static str; 10] = [
        "no_root",
        "namespace_gone",
        "not_found",
        "denied",
        "not_regular",
        "too_large",
        "changed",
        "io",
        "timed_out",
        "stalled",
    ];

    /// The position of this reason in [`ReadError::REASONS`].
    pub fn index(&self) -> usize {
        match self {
            ReadError::NoRoot => 0,
            ReadError::NamespaceGone => 1,
            ReadError::NotFound => 2,
            ReadError::Denied => 3,
            ReadError::NotRegular => 4,
            ReadError::TooLarge { .. } => 5,
            ReadError::Changed => 6,
            ReadError::Io(_) => 7,
            ReadError::TimedOut => 8,
            ReadError::Stalled => 9,
        }
    }
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

/// Opens `path` through `root` if it is a regular file; no content is read yet, so a caller
/// holding a cached result for the same identity can skip the read. The path is resolved
/// without opening what it names (`O_PATH`), so a device node's driver or a FIFO's writer never
/// sees an open by the agent.
pub fn open_in_root(
    root: &OwnedFd,
    path: &str,
) -> Result<(std::fs::File, FileIdentity), ReadError> {
    let (handle, identity) = resolve_in_root(root, path)?;
    reopen_checked(&handle, identity.ino, identity.dev)
}

/// Resolves `path` through `root` to an `O_PATH` handle of a regular file, and its identity:
/// enough to tell a cached file without opening it.
pub fn resolve_in_root(
    root: &OwnedFd,
    path: &str,
) -> Result<(std::fs::File, FileIdentity), ReadError> {
    let handle = openat2_in_root(root, path, libc::O_PATH | libc::O_CLOEXEC)?;
    let checked = handle
        .metadata()
        .map_err(|e| ReadError::Io(e.to_string()))?;
    if !checked.file_type().is_file() {
        return Err(ReadError::NotRegular);
    }
    Ok((handle, identity_of(&checked)))
}

/// Opens for reading the file a handle from [`resolve_in_root`] (or any descriptor) holds, if
/// it still is the file of `identity`.
pub fn open_resolved(
    handle: &std::fs::File,
    identity: &FileIdentity,
) -> Result<std::fs::File, ReadError> {
    reopen_checked(handle, identity.ino, identity.dev).map(|(file, _)| file)
}

/// Opens for reading the regular file an `O_PATH` `handle` holds, through the agent's own
/// descriptor (a magic link that leads nowhere else), and checks it is still that inode.
fn reopen_checked(
    handle: &std::fs::File,
    ino: u64,
    dev: u64,
) -> Result<(std::fs::File, FileIdentity), ReadError> {
    let own = CString::new(format!("/proc/self/fd/{}", handle.as_raw_fd())).expect("no NUL");
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: valid C string; the link is our own descriptor of a checked regular file.
    let raw = unsafe { libc::open(own.as_ptr(), flags) };
    if raw < 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => ReadError::Denied,
            _ => ReadError::Io(err.to_string()),
        });
    }
    // SAFETY: fresh descriptor we own.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    let meta = file.metadata().map_err(|e| ReadError::Io(e.to_string()))?;
    if (meta.ino(), meta.dev()) != (ino, dev) || !meta.file_type().is_file() {
        return Err(ReadError::Changed);
    }
    Ok((file, identity_of(&meta)))
}

/// Opens the file process `pid` holds as descriptor `fd`, only if it is a regular file with
/// the identity the kernel saw opened (`ino`, and `dev` as stat(2) reports it): the magic link
/// is followed with O_PATH (no open of the file itself), checked, then that very inode is
/// opened through the agent's own descriptor.
pub fn open_descriptor(
    pid: u32,
    fd: i32,
    ino: u64,
    dev: u64,
) -> Result<(std::fs::File, FileIdentity), ReadError> {
    let link = CString::new(format!("/proc/{pid}/fd/{fd}")).expect("no NUL");
    // SAFETY: valid C string; an O_PATH handle performs no I/O on the file.
    let raw = unsafe { libc::open(link.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(ReadError::NoRoot);
    }
    // SAFETY: fresh descriptor we own.
    let handle = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    let checked = handle
        .metadata()
        .map_err(|e| ReadError::Io(e.to_string()))?;
    if !checked.file_type().is_file() {
        return Err(ReadError::NotRegular);
    }
    if (checked.ino(), checked.dev()) != (ino, dev) {
        return Err(ReadError::Changed);
    }
    reopen_checked(&handle, ino, dev)
}

fn identity_of(meta: &std::fs::Metadata) -> FileIdentity {
    FileIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        size: meta.len(),
    }
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
    fn descriptors_are_read_only_when_they_hold_the_file_seen() {
        use std::os::fd::AsRawFd as _;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pem");
        std::fs::write(&f, b"secret-ish").unwrap();
        let held = std::fs::File::open(&f).unwrap();
        let m = held.metadata().unwrap();
        let me = std::process::id();
        let fd = held.as_raw_fd();
        let (file, id) = open_descriptor(me, fd, m.ino(), m.dev()).unwrap();
        assert_eq!(id.size, 10);
        assert_eq!(read_capped(file, &id, 1024).unwrap(), b"secret-ish");
        assert_eq!(
            open_descriptor(me, fd, m.ino() + 1, m.dev()).unwrap_err(),
            ReadError::Changed
        );
        // A device behind the descriptor is never opened for reading.
        let null = std::fs::File::open("/dev/null").unwrap();
        let n = null.metadata().unwrap();
        assert_eq!(
            open_descriptor(me, null.as_raw_fd(), n.ino(), n.dev()).unwrap_err(),
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
}
