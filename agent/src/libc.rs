//! Finding the shared libraries uprobes attach to, once per file: libc (getenv, glibc and musl)
//! and libssl (SSL_write, OpenSSL 3 and 1.1), the host's and those inside container roots. The
//! kernel keys uprobes on the inode, so one attach covers every process that maps the file, in
//! any mount namespace.
//!
//! Sources: at start, the standard locations on the host and every running process's maps; at
//! run time, the standard locations inside the root of each new mount namespace (at its first
//! exec, before the loader maps anything) and, a moment after exec, the maps of the first
//! processes of each mount namespace (libcs in unusual places).
//!
//! A library found is the workload's file: [`SymbolReader`] reads where the probed functions
//! are in it (see `elf`) on the blocking pool, a few files at a time and each within a time
//! limit, so a slow or crafted file costs a warning and never holds up the agent.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use crate::{
    elf::{self, ElfError},
    file_reads::{FileReads, key_for},
    probe_point, probes, rootfs,
};

/// Processes per mount namespace whose maps are read after exec.
const MAPS_CHECKS_PER_NAMESPACE: u32 = 16;
/// How long after exec the maps are read (the loader has mapped libc by then).
pub const MAPS_CHECK_DELAY: Duration = Duration::from_millis(100);
/// Distinct library files attached at most, on the node and per mount namespace (an image
/// has one libc and a libssl or two): one workload cannot use up the node's share.
const MAX_LIBRARIES: usize = 1024;
const MAX_LIBRARIES_PER_NAMESPACE: usize = 8;
/// How long opening a library in a workload's root, or reading a process's maps, may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long reading one library's symbols may take, once a reader has it, before the library
/// is skipped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a library may wait for a free reader before it is skipped.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Libraries read at once. A read that never ends (a hung network or FUSE file system) keeps
/// its blocking thread and its slot, so no more threads than this are ever held by them.
const READERS: usize = 4;

/// Which library a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    Libc,
    Libssl,
}

impl Library {
    /// The functions the probes attach to in this library.
    pub fn functions(self) -> Vec<&'static str> {
        match self {
            Library::Libc => probes::GETENV_SYMBOLS.to_vec(),
            Library::Libssl => [probes::TLS_WRITE_SYMBOLS, probes::TLS_FREE_SYMBOLS].concat(),
        }
    }
}

/// A library file found and not read yet. `file` keeps it open: [`SymbolReader::read`] reads
/// it through the descriptor.
#[derive(Debug)]
pub struct LibcFile {
    pub library: Library,
    /// Where it was found (for logs): a path inside a process's root, or the host path.
    pub found_at: String,
    file: File,
}

/// A library with the file offsets of its probed functions. `file` keeps it open: attach
/// through [`ResolvedLibrary::attach_path`].
#[derive(Debug)]
pub struct ResolvedLibrary {
    pub library: Library,
    /// Where it was found (for logs).
    pub found_at: String,
    file: File,
    /// The functions it defines, with their file offsets.
    functions: Vec<(&'static str, u64)>,
}

impl ResolvedLibrary {
    /// A path that opens exactly this file in the agent (`/proc/self/fd/N`), valid while
    /// `self` lives. The kernel resolves it at attach time; nothing reads through it.
    pub fn attach_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// The file offset of `function`, when the library defines it.
    pub fn offset(&self, function: &str) -> Option<u64> {
        self.functions
            .iter()
            .find(|(name, _)| *name == function)
            .map(|(_, offset)| *offset)
    }
}

/// A library whose symbols could not be read: it gets no probe.
#[derive(Debug)]
pub struct SkippedLibrary {
    pub library: Library,
    pub found_at: String,
    pub reason: SkipReason,
}

/// Why a library was skipped. Never carries the file's bytes.
#[derive(Debug, thiserror::Error)]
pub enum SkipReason {
    #[error("no reader was free within {0:?}")]
    NoReader(Duration),
    #[error("reading its symbols took longer than {0:?}")]
    TimedOut(Duration),
    #[error("reading its symbols failed")]
    Failed,
    #[error(transparent)]
    Elf(#[from] ElfError),
}

/// What reading a library's symbols gave.
pub type Resolution = Result<ResolvedLibrary, SkippedLibrary>;

/// Reads libraries' function offsets on the blocking pool, [`READERS`] files at a time, each
/// within a time limit. Clones share the readers.
#[derive(Debug, Clone)]
pub struct SymbolReader {
    slots: Arc<Semaphore>,
    read_timeout: Duration,
    queue_timeout: Duration,
}

impl Default for SymbolReader {
    fn default() -> Self {
        Self::new(READERS, READ_TIMEOUT, QUEUE_TIMEOUT)
    }
}

impl SymbolReader {
    pub fn new(readers: usize, read_timeout: Duration, queue_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(readers)),
            read_timeout,
            queue_timeout,
        }
    }

    /// How long one read may take.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// The file offsets of `lib`'s probed functions.
    pub async fn read(&self, lib: LibcFile) -> Resolution {
        let (library, found_at) = (lib.library, lib.found_at.clone());
        let result = self
            .off_loop(move || {
                let functions = lib.function_offsets();
                (lib, functions)
            })
            .await;
        let reason = match result {
            Ok((lib, Ok(functions))) => {
                return Ok(ResolvedLibrary {
                    library,
                    found_at,
                    file: lib.file,
                    functions,
                });
            }
            Ok((_, Err(e))) => SkipReason::Elf(e),
            Err(reason) => reason,
        };
        Err(SkippedLibrary {
            library,
            found_at,
            reason,
        })
    }

    /// Runs `work` on the blocking pool once a reader is free, giving up on it after the read
    /// timeout (it then finishes, or not, on its own, and keeps its reader until it does).
    async fn off_loop<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, SkipReason> {
        let permit =
            tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned())
                .await
                .map_err(|_| SkipReason::NoReader(self.queue_timeout))?
                .map_err(|_| SkipReason::Failed)?;
        let task = tokio::task::spawn_blocking(move || {
            let _reader = permit;
            work()
        });
        tokio::time::timeout(self.read_timeout, task)
            .await
            .map_err(|_| SkipReason::TimedOut(self.read_timeout))?
            .map_err(|_| SkipReason::Failed)
    }
}

impl LibcFile {
    /// Reads the file (through the descriptor held) and finds the library's probed functions.
    /// Blocking: [`SymbolReader::read`] runs it off the event loop.
    fn function_offsets(&self) -> Result<Vec<(&'static str, u64)>, ElfError> {
        let data = elf::read_library(&self.file)?;
        let names = self.library.functions();
        let offsets = elf::function_offsets(&data, &names)?;
        Ok(names
            .into_iter()
            .zip(offsets)
            .filter_map(|(name, offset)| {
                let offset = offset?;
                // Called on every TLS write: trap where the kernel need not single-step.
                if probes::TLS_WRITE_SYMBOLS.contains(&name)
                    && let Some(segment) = elf::executable_segment(&data, offset)
                {
                    return Some((name, probe_point::cheap_entry(&data, offset, &segment)));
                }
                Some((name, offset))
            })
            .collect())
    }
}

pub struct LibcFinder {
    /// The libraries looked for.
    wanted: Vec<Library>,
    /// (device, inode) of every libc already handed out.
    known: HashSet<(u64, u64)>,
    /// Libraries handed out per mount namespace they were found in (0: the host's look).
    per_namespace: HashMap<u64, usize>,
    /// Libraries not handed out because a limit was reached.
    refused: u64,
    /// Opens in workloads' roots and reads of their maps (a workload can stall both).
    reads: FileReads,
    /// Mount namespaces already looked at, with how many maps checks each has had.
    namespaces: HashMap<u64, u32>,
    /// Processes whose maps are due for a look, with their mount namespace.
    due: Vec<(Instant, u32, u64)>,
}

/// Whether a file name is a C library that exports getenv.
pub fn is_libc_name(base: &str) -> bool {
    base == "libc.so.6"
        || (base.starts_with("libc-2.") && base.ends_with(".so"))
        || (base.starts_with("ld-musl-") && base.ends_with(".so.1"))
        || (base.starts_with("libc.musl-") && base.ends_with(".so.1"))
}

/// Whether a file name is OpenSSL's libssl (3.x or 1.1).
pub fn is_libssl_name(base: &str) -> bool {
    base == "libssl.so.3" || base == "libssl.so.1.1"
}

/// Which wanted library a file name is.
fn library_of(base: &str, wanted: &[Library]) -> Option<Library> {
    wanted.iter().copied().find(|l| match l {
        Library::Libc => is_libc_name(base),
        Library::Libssl => is_libssl_name(base),
    })
}

/// Where distributions put the libraries (Debian/Ubuntu multiarch, Fedora/RHEL, Alpine, Arch).
fn standard_paths(library: Library) -> Vec<String> {
    let arch = std::env::consts::ARCH;
    let dirs = [
        format!("/lib/{arch}-linux-gnu"),
        format!("/usr/lib/{arch}-linux-gnu"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ];
    let names: Vec<String> = match library {
        Library::Libc => vec!["libc.so.6".into(), format!("ld-musl-{arch}.so.1")],
        Library::Libssl => vec!["libssl.so.3".into(), "libssl.so.1.1".into()],
    };
    dirs.iter()
        .flat_map(|d| names.iter().map(move |n| format!("{d}/{n}")))
        .collect()
}

impl LibcFinder {
    /// A finder for the given libraries.
    pub fn new(wanted: &[Library]) -> Self {
        Self {
            wanted: wanted.to_vec(),
            known: HashSet::new(),
            per_namespace: HashMap::new(),
            refused: 0,
            reads: FileReads::new(LOOK_TIMEOUT),
            namespaces: HashMap::new(),
            due: Vec::new(),
        }
    }

    /// Libraries not attached because the node's or a namespace's limit was reached.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Whether it looks for anything.
    pub fn is_active(&self) -> bool {
        !self.wanted.is_empty()
    }

    fn wanted_paths(&self) -> Vec<(Library, String)> {
        self.wanted
            .iter()
            .flat_map(|&l| standard_paths(l).into_iter().map(move |p| (l, p)))
            .collect()
    }

    /// The libcs on the host and in every running process.
    pub fn scan_all(&mut self) -> Vec<LibcFile> {
        let mut out = Vec::new();
        for (library, path) in self.wanted_paths() {
            if let Ok(file) = File::open(&path) {
                self.keep(&mut out, 0, library, file, path);
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    let ns = rootfs::mount_ns(pid);
                    if let Some(ns) = ns {
                        self.namespaces
                            .entry(ns)
                            .or_insert(MAPS_CHECKS_PER_NAMESPACE);
                    }
                    self.read_maps(pid, ns.unwrap_or(0), &mut out);
                }
            }
        }
        out
    }

    /// A process just exec'd: look in its root if its mount namespace is new, and plan a look
    /// at its maps.
    /// `mnt_ns` keys the process's mount namespace: the id the kernel never reuses when it gives
    /// one (namespace inode numbers are reused at once).
    pub fn on_exec(&mut self, pid: u32, mnt_ns: Option<u64>) -> Vec<LibcFile> {
        let mut out = Vec::new();
        if !self.is_active() {
            return out;
        }
        let Some(ns) = mnt_ns else {
            return out;
        };
        let checks = self.namespaces.entry(ns).or_insert(0);
        let first = *checks == 0;
        if *checks < MAPS_CHECKS_PER_NAMESPACE {
            *checks += 1;
            self.due.push((Instant::now() + MAPS_CHECK_DELAY, pid, ns));
        }
        if first && let Ok(root) = rootfs::open_root(pid) {
            let wanted = self.wanted_paths();
            let opened = self.reads.run(key_for(ns, pid), move || {
                Ok(wanted
                    .into_iter()
                    .filter_map(|(library, path)| {
                        let (file, _) = rootfs::open_in_root(&root, &path).ok()?;
                        Some((library, file, path))
                    })
                    .collect::<Vec<_>>())
            });
            for (library, file, path) in opened.unwrap_or_default() {
                self.keep(
                    &mut out,
                    ns,
                    library,
                    file,
                    format!("/proc/{pid}/root{path}"),
                );
            }
        }
        out
    }

    /// Reads the maps of processes whose look is due.
    pub fn check_due(&mut self, now: Instant) -> Vec<LibcFile> {
        let mut out = Vec::new();
        if self.due.is_empty() {
            return out;
        }
        let due: Vec<(u32, u64)> = self
            .due
            .iter()
            .filter(|(t, _, _)| *t <= now)
            .map(|(_, p, ns)| (*p, *ns))
            .collect();
        self.due.retain(|(t, _, _)| *t > now);
        for (pid, ns) in due {
            self.read_maps(pid, ns, &mut out);
        }
        out
    }

    /// Whether a maps check is planned.
    pub fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    /// The libcs a process maps, opened through its map_files (exact even when the path is
    /// shadowed by a mount or the file was replaced).
    /// Runs on a reader thread: reading another process's maps waits for its memory map lock,
    /// which that process can keep busy.
    fn read_maps(&mut self, pid: u32, ns: u64, out: &mut Vec<LibcFile>) {
        let wanted = self.wanted.clone();
        let found = self
            .reads
            .run(key_for(ns, pid), move || Ok(maps_libraries(pid, &wanted)));
        for (library, file, path) in found.unwrap_or_default() {
            self.keep(out, ns, library, file, format!("/proc/{pid}/root{path}"));
        }
    }

    fn keep(
        &mut self,
        out: &mut Vec<LibcFile>,
        ns: u64,
        library: Library,
        file: File,
        found_at: String,
    ) {
        let Ok(meta) = file.metadata() else {
            return;
        };
        if !meta.is_file() || self.known.contains(&(meta.dev(), meta.ino())) {
            return;
        }
        let here = self.per_namespace.get(&ns).copied().unwrap_or(0);
        if self.known.len() >= MAX_LIBRARIES || (ns != 0 && here >= MAX_LIBRARIES_PER_NAMESPACE) {
            if self.refused == 0 {
                tracing::warn!(
                    found_at,
                    "library limit reached: later libraries of this namespace, or of the node, \
                     are not probed (counted as keytrail.libraries.refused)"
                );
            }
            self.refused += 1;
            return;
        }
        self.known.insert((meta.dev(), meta.ino()));
        *self.per_namespace.entry(ns).or_default() += 1;
        out.push(LibcFile {
            library,
            found_at,
            file,
        });
    }
}

/// The wanted libraries process `pid` maps, opened through its map_files (exact even when the
/// path is shadowed by a mount or the file was replaced), with their paths.
fn maps_libraries(pid: u32, wanted: &[Library]) -> Vec<(Library, File, String)> {
    let mut found = Vec::new();
    {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return found;
        };
        let mut seen_here: HashSet<&str> = HashSet::new();
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (Some(range), Some(_perms), Some(_off), Some(_dev), Some(_ino), Some(path)) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                continue;
            };
            let base = path.rsplit('/').next().unwrap_or(path);
            let Some(library) = library_of(base, wanted) else {
                continue;
            };
            if !seen_here.insert(path) {
                continue;
            }
            if let Ok(file) = File::open(format!("/proc/{pid}/map_files/{range}")) {
                found.push((library, file, path.to_string()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_namespace_cannot_use_up_the_library_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = LibcFinder::new(&[Library::Libc]);
        let mut out = Vec::new();
        let mut plant = |f: &mut LibcFinder, ns: u64, i: usize| {
            let p = dir.path().join(format!("libc-{ns}-{i}.so.6"));
            std::fs::write(&p, b"x").unwrap();
            let file = File::open(&p).unwrap();
            f.keep(&mut out, ns, Library::Libc, file, p.display().to_string());
        };
        for i in 0..MAX_LIBRARIES_PER_NAMESPACE + 5 {
            plant(&mut f, 7, i);
        }
        assert_eq!(f.refused(), 5);
        // Another namespace still gets its libraries.
        plant(&mut f, 8, 0);
        assert_eq!(f.refused(), 5);
        assert_eq!(out.len(), MAX_LIBRARIES_PER_NAMESPACE + 1);
    }

    use super::*;

    #[test]
    fn libc_names() {
        for n in [
            "libc.so.6",
            "libc-2.31.so",
            "ld-musl-x86_64.so.1",
            "libc.musl-aarch64.so.1",
        ] {
            assert!(is_libc_name(n), "{n}");
        }
        for n in [
            "libcrypto.so.3",
            "libc.so",
            "libcap.so.2",
            "ld-linux-x86-64.so.2",
        ] {
            assert!(!is_libc_name(n), "{n}");
        }
    }

    #[tokio::test]
    async fn reads_the_probed_functions_of_the_host_libc() {
        let lib = LibcFinder::new(&[Library::Libc])
            .scan_all()
            .into_iter()
            .next()
            .expect("a libc on this host");
        let found_at = lib.found_at.clone();
        let resolved = SymbolReader::default().read(lib).await.unwrap();
        assert_eq!(resolved.found_at, found_at);
        for f in Library::Libc.functions() {
            assert!(resolved.offset(f).is_some_and(|o| o > 0), "{f}");
        }
        assert!(
            resolved
                .attach_path()
                .to_str()
                .unwrap()
                .starts_with("/proc/self/fd/")
        );
    }

    #[tokio::test]
    async fn a_file_that_is_no_elf_is_skipped_with_its_reason() {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"#!/bin/sh\necho not a library\n").unwrap();
        let lib = LibcFile {
            library: Library::Libssl,
            found_at: "/proc/1/root/usr/lib/libssl.so.3".into(),
            file,
        };
        let skipped = SymbolReader::default().read(lib).await.unwrap_err();
        assert_eq!(skipped.library, Library::Libssl);
        assert_eq!(skipped.found_at, "/proc/1/root/usr/lib/libssl.so.3");
        assert!(matches!(skipped.reason, SkipReason::Elf(ElfError::NotElf)));
    }

    #[tokio::test]
    async fn a_read_that_does_not_end_is_given_up_and_keeps_its_reader() {
        let reader = SymbolReader::new(1, Duration::from_millis(100), Duration::from_millis(300));
        let start = tokio::time::Instant::now();
        let stuck = reader
            .off_loop(|| std::thread::sleep(Duration::from_millis(1000)))
            .await;
        assert!(matches!(stuck, Err(SkipReason::TimedOut(_))), "{stuck:?}");
        assert!(start.elapsed() < Duration::from_millis(900));
        // Its thread still holds the one reader: the next library waits, then is skipped.
        let queued = reader.off_loop(|| ()).await;
        assert!(matches!(queued, Err(SkipReason::NoReader(_))), "{queued:?}");
        // Once the stuck read ends, its reader is free again.
        tokio::time::sleep_until(start + Duration::from_millis(1200)).await;
        assert_eq!(reader.off_loop(|| 7).await.unwrap(), 7);
    }

    #[test]
    fn finds_the_libc_this_test_runs_on_once() {
        let mut f = LibcFinder::new(&[Library::Libc]);
        let found = f.scan_all();
        assert!(!found.is_empty(), "no libc found on this host");
        assert!(found.iter().all(|l| l.library == Library::Libc));
        // The same files are not handed out twice.
        assert!(f.scan_all().is_empty());
    }
}
