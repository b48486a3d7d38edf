//! The path an open really names, from what the kernel saw at the open: the path as spelled
//! (possibly relative, non-canonical, or longer than the kernel's copy window), the identity
//! (device, inode) of the directory a relative path starts from, and the identity of the file
//! opened. A workload cannot hide an open by its spelling, nor make the agent attribute it to
//! another file by changing directory or reusing a descriptor right after: whatever cannot be
//! confirmed is reported as unresolved, with the reason, never dropped.

use std::os::unix::fs::MetadataExt as _;

use keytrail_common::{FileOpen, event_flags, filter};

const AT_FDCWD: i32 = -100;

/// Why an open's path could not be resolved (reported as `keytrail.file.unresolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// The process is gone: its working directory or descriptor cannot be read.
    ProcessGone,
    /// The working directory (or the directory fd) now is not the one of the open.
    BaseChanged,
    /// Longer than the kernel's copy window, and the descriptor no longer shows the file.
    Truncated,
    /// A /proc/PID path of another pid namespace.
    ForeignPid,
    /// A known credential file opened by another name, whose descriptor was closed before its
    /// path could be read.
    DescriptorClosed,
}

impl Unresolved {
    pub fn as_str(self) -> &'static str {
        match self {
            Unresolved::ProcessGone => "process_gone",
            Unresolved::BaseChanged => "directory_changed",
            Unresolved::Truncated => "path_truncated",
            Unresolved::ForeignPid => "foreign_pid_namespace",
            Unresolved::DescriptorClosed => "descriptor_closed",
        }
    }
}

/// The path of one open, as far as it can be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPath {
    /// Absolute and lexically normal when resolved; else what the kernel captured (a head
    /// followed by `...`, or `...` followed by a tail, for a long path).
    pub path: String,
    /// None when resolved.
    pub unresolved: Option<Unresolved>,
    /// The spelling the process used, when it leads to `path` through another root or
    /// directory (`/proc/PID/root/...`, `/proc/PID/cwd/...`) or was cut short.
    pub opened_as: Option<String>,
    /// Whose root `path` is in, when not the opener's (`/proc/PID/root/...`).
    pub root_pid: Option<u32>,
    /// The content must be read through the opener's descriptor: `path` does not lead to the
    /// file from any root the agent can name (the descriptor was checked to hold the very file
    /// the kernel saw opened).
    pub via_descriptor: Option<i32>,
    /// The path was longer than the kernel's copy window.
    pub truncated: bool,
}

impl OpenPath {
    fn resolved(path: String) -> Self {
        Self {
            path,
            unresolved: None,
            opened_as: None,
            root_pid: None,
            via_descriptor: None,
            truncated: false,
        }
    }

    fn unresolved(path: String, why: Unresolved) -> Self {
        Self {
            unresolved: Some(why),
            ..Self::resolved(path)
        }
    }

    pub fn is_resolved(&self) -> bool {
        self.unresolved.is_none()
    }
}

/// Resolves the path of `ev`, whose captured path is `raw`. `same_pid_namespace`: whether
/// the opener names pids as the agent does (for `/proc/PID/...` paths).
pub fn resolve(ev: &FileOpen, raw: &str, same_pid_namespace: impl Fn() -> bool) -> OpenPath {
    let pid = ev.header.pid;
    let descriptor = || descriptor_path(pid, ev);
    if ev.matched & filter::IDENTITY != 0 {
        // A known file by another name: the kernel sent no path, the descriptor names it.
        return match descriptor() {
            Some(path) => OpenPath {
                via_descriptor: Some(ev.ret as i32),
                ..OpenPath::resolved(path)
            },
            None => OpenPath::unresolved(String::new(), Unresolved::DescriptorClosed),
        };
    }
    if ev.header.flags & event_flags::TRUNCATED != 0 {
        if let Some(path) = descriptor() {
            return OpenPath {
                truncated: true,
                via_descriptor: Some(ev.ret as i32),
                ..OpenPath::resolved(path)
            };
        }
        let shown = if ev.header.flags & event_flags::PATH_TAIL != 0 {
            format!("...{raw}")
        } else {
            format!("{raw}...")
        };
        return OpenPath {
            truncated: true,
            ..OpenPath::unresolved(shown, Unresolved::Truncated)
        };
    }
    if raw.starts_with('/') {
        let path = normalize(raw);
        let Some((target, into, rest)) =
            proc_link_path(&path).map(|(t, l, r)| (t, l, r.to_string()))
        else {
            return OpenPath::resolved(path);
        };
        // `/proc/PID/root/x`: the file lives in another root. The descriptor names it exactly.
        if let Some(found) = descriptor() {
            return OpenPath {
                opened_as: Some(path),
                via_descriptor: Some(ev.ret as i32),
                ..OpenPath::resolved(found)
            };
        }
        let target = match target {
            ProcTarget::Opener => pid,
            ProcTarget::Pid(p) if same_pid_namespace() => p,
            ProcTarget::Pid(_) => return OpenPath::unresolved(path, Unresolved::ForeignPid),
        };
        let base = match into {
            ProcLink::Root => Some("/".to_string()),
            ProcLink::Cwd => read_link(&format!("/proc/{target}/cwd")),
        };
        return match base {
            Some(base) => OpenPath {
                opened_as: Some(path),
                // The opener's own root is found as for any of its opens (alive or not).
                root_pid: (target != pid).then_some(target),
                ..OpenPath::resolved(normalize(&format!("{base}/{rest}")))
            },
            None => OpenPath::unresolved(path, Unresolved::ProcessGone),
        };
    }
    // Relative: the file itself when its descriptor still shows it, else the directory the
    // open started from, if it is still the one the kernel saw.
    if let Some(path) = descriptor() {
        return OpenPath::resolved(path);
    }
    let link = if ev.dirfd == AT_FDCWD {
        format!("/proc/{pid}/cwd")
    } else {
        format!("/proc/{pid}/fd/{}", ev.dirfd)
    };
    let Some(base) = read_link(&link) else {
        return OpenPath::unresolved(raw.to_string(), Unresolved::ProcessGone);
    };
    if ev.base_ino != 0 && identity_of(&link) != Some((ev.base_ino, user_dev(ev.base_dev))) {
        return OpenPath::unresolved(raw.to_string(), Unresolved::BaseChanged);
    }
    OpenPath::resolved(normalize(&format!("{base}/{raw}")))
}

/// The path of the file the open returned, read from the opener's descriptor, when the
/// descriptor still holds that very file (same device and inode as the kernel saw).
fn descriptor_path(pid: u32, ev: &FileOpen) -> Option<String> {
    if ev.ret < 0 || ev.file_ino == 0 {
        return None;
    }
    let link = format!("/proc/{pid}/fd/{}", ev.ret);
    let path = read_link(&link)?;
    if !path.starts_with('/') || path.ends_with(" (deleted)") {
        return None;
    }
    (identity_of(&link) == Some((ev.file_ino, user_dev(ev.file_dev)))).then_some(path)
}

/// The kernel's internal `dev_t` (major << 20 | minor) as stat(2) reports it.
pub fn user_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xf_ffff)
}

fn identity_of(path: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.ino(), m.dev()))
}

fn read_link(path: &str) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whose `/proc` entry a path goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcTarget {
    /// `self`, `thread-self`.
    Opener,
    /// A pid as the opener names it.
    Pid(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcLink {
    Root,
    Cwd,
}

/// Splits `/proc/<pid|self|thread-self>[/task/<tid>]/{root,cwd}/<rest>`.
fn proc_link_path(path: &str) -> Option<(ProcTarget, ProcLink, &str)> {
    let mut parts = path.strip_prefix("/proc/")?.splitn(2, '/');
    let who = parts.next()?;
    let mut after = parts.next()?;
    let target = match who {
        "self" | "thread-self" => ProcTarget::Opener,
        n => ProcTarget::Pid(n.parse().ok()?),
    };
    if let Some(task) = after.strip_prefix("task/") {
        after = task.split_once('/')?.1;
    }
    let (link, rest) = after.split_once('/')?;
    let link = match link {
        "root" => ProcLink::Root,
        "cwd" => ProcLink::Cwd,
        _ => return None,
    };
    Some((target, link, rest))
}

/// Lexical normalisation: no `//`, `.` or `..` components. (Symlinks are not followed: the
/// path is reported as the process named it.)
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    use keytrail_common::{EventHeader, PATH_CAP};

    use super::*;

    fn open_event(raw: &str, ret: i64, dirfd: i32) -> FileOpen {
        let mut path = [0u8; PATH_CAP];
        path[..raw.len()].copy_from_slice(raw.as_bytes());
        FileOpen {
            header: EventHeader {
                kind: 100,
                flags: 0,
                time_ns: 0,
                pid: std::process::id(),
                tid: 0,
                uid: 0,
                gid: 0,
                cgroup_id: 0,
                comm: [0; 16],
            },
            ret,
            open_flags: 0,
            base_ino: 0,
            file_ino: 0,
            dirfd,
            syscall: 1,
            mnt_ns: 0,
            base_dev: 0,
            file_dev: 0,
            matched: 0,
            pid_ns: 0,
            path_len: raw.len() as u32,
            path,
        }
    }

    fn kernel_dev(dev: u64) -> u32 {
        (libc::major(dev) << 20) | libc::minor(dev)
    }

    #[test]
    fn normalises_lexically() {
        assert_eq!(normalize("/a//b/./c/../d"), "/a/b/d");
        assert_eq!(normalize("/../x"), "/x");
        assert_eq!(normalize("/"), "/");
    }

    #[test]
    fn proc_links_split() {
        assert_eq!(
            proc_link_path("/proc/self/root/var/run/secrets/t"),
            Some((ProcTarget::Opener, ProcLink::Root, "var/run/secrets/t"))
        );
        assert_eq!(
            proc_link_path("/proc/12/task/13/cwd/x"),
            Some((ProcTarget::Pid(12), ProcLink::Cwd, "x"))
        );
        assert_eq!(proc_link_path("/proc/12/environ"), None);
        assert_eq!(proc_link_path("/proc/self/fd/3"), None);
    }

    #[test]
    fn relative_paths_use_the_descriptor_or_a_confirmed_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.pem");
        std::fs::write(&file, b"x").unwrap();
        let f = std::fs::File::open(&file).unwrap();
        let meta = f.metadata().unwrap();

        // The descriptor still holds the file the kernel saw: its path, exactly.
        let mut ev = open_event("k.pem", f.as_raw_fd() as i64, AT_FDCWD);
        ev.file_ino = meta.ino();
        ev.file_dev = kernel_dev(meta.dev());
        let got = resolve(&ev, "k.pem", || true);
        assert_eq!(got.path, file.to_str().unwrap());
        assert!(got.is_resolved());

        // Another file behind that descriptor number: not trusted; the cwd is used, and only
        // while it is the directory of the open.
        ev.file_ino = meta.ino() + 1;
        let cwd = std::env::current_dir().unwrap();
        let cwd_meta = std::fs::metadata(&cwd).unwrap();
        ev.base_ino = cwd_meta.ino();
        ev.base_dev = kernel_dev(cwd_meta.dev());
        let got = resolve(&ev, "k.pem", || true);
        assert_eq!(got.path, format!("{}/k.pem", cwd.display()));
        ev.base_ino += 1;
        let got = resolve(&ev, "k.pem", || true);
        assert_eq!(got.unresolved, Some(Unresolved::BaseChanged));
        assert_eq!(got.path, "k.pem");

        // A gone process.
        ev.header.pid = u32::MAX;
        assert_eq!(
            resolve(&ev, "k.pem", || true).unresolved,
            Some(Unresolved::ProcessGone)
        );
    }

    #[test]
    fn proc_root_paths_lead_into_that_root() {
        let ev = open_event("/proc/self/root/etc/./x.pem", -2, AT_FDCWD);
        let got = resolve(&ev, "/proc/self/root/etc/./x.pem", || true);
        assert_eq!(got.path, "/etc/x.pem");
        assert_eq!(got.root_pid, None);
        assert_eq!(got.opened_as.as_deref(), Some("/proc/self/root/etc/x.pem"));
        let got = resolve(&ev, "/proc/7/root/etc/x.pem", || false);
        assert_eq!(got.unresolved, Some(Unresolved::ForeignPid));
    }

    #[test]
    fn long_paths_are_reported_truncated() {
        let mut ev = open_event("tail/of/it.pem", -2, AT_FDCWD);
        ev.header.flags = event_flags::TRUNCATED | event_flags::PATH_TAIL;
        let got = resolve(&ev, "tail/of/it.pem", || true);
        assert_eq!(got.path, "...tail/of/it.pem");
        assert!(got.truncated);
        assert_eq!(got.unresolved, Some(Unresolved::Truncated));
    }
}
