//! Who a process belongs to: its cgroup v2 path (from the cgroup id the kernel reports: the
//! inode number of the cgroup's directory) and the workload that path names (`identity`: pod,
//! container, systemd unit or user session, from the path alone; cached by path in `cache`).

mod cache;
pub mod identity;

pub use cache::{IdentityCache, identity_of};
pub use identity::{Attr, CgroupIdentity, Kind};

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The cgroup2 mount point, from a mountinfo text (`/proc/self/mountinfo`).
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fstype> ..."
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Kind and name of a workload, as in `keytrail.workload.kind` / `keytrail.workload.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: &'static str,
    pub name: String,
}

impl Workload {
    /// The process itself: its executable's basename, else its `comm`.
    pub fn process(exe: Option<&str>, comm: &str) -> Self {
        let name = exe
            .and_then(|e| e.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or(comm);
        Workload {
            kind: Kind::Process.as_str(),
            name: name.to_string(),
        }
    }

    /// What `identity` names, else the process.
    pub fn of(identity: Option<&CgroupIdentity>, exe: Option<&str>, comm: &str) -> Self {
        match identity.and_then(CgroupIdentity::named) {
            Some((kind, name)) => Workload {
                kind: kind.as_str(),
                name: name.to_string(),
            },
            None => Self::process(exe, comm),
        }
    }
}

/// Names the workload of a process from its cgroup path, else from its executable.
pub fn workload_of(cgroup_path: Option<&str>, exe: Option<&str>, comm: &str) -> Workload {
    let identity = cgroup_path.map(identity_of);
    Workload::of(identity.as_deref(), exe, comm)
}

/// Minimum time between two full scans of the cgroup tree.
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Bounds the cache; cgroups come and go on busy nodes.
const MAX_CACHED: usize = 65_536;

/// cgroup id -> path (relative to the cgroup2 mount, starting with `/`).
#[derive(Debug)]
pub struct CgroupPaths {
    mount: Option<PathBuf>,
    cache: HashMap<u64, String>,
    last_scan: Option<Instant>,
    /// Paths of removed cgroups, oldest first: records read after a short-lived job's cgroup
    /// is gone still name it.
    removed: HashMap<u64, String>,
    removed_order: std::collections::VecDeque<u64>,
}

/// Removed cgroups whose path is remembered.
const MAX_REMOVED: usize = 4096;

impl CgroupPaths {
    /// Finds the cgroup2 mount of this host. Without one, paths are never known.
    pub fn discover() -> Self {
        let mount = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| find_cgroup2_mount(&m));
        if mount.is_none() {
            tracing::warn!("no cgroup2 mount found: events will carry no keytrail.cgroup.path");
        }
        Self::with_mount(mount)
    }

    pub fn with_mount(mount: Option<PathBuf>) -> Self {
        Self {
            mount,
            cache: HashMap::new(),
            last_scan: None,
            removed: HashMap::new(),
            removed_order: std::collections::VecDeque::new(),
        }
    }

    /// A cgroup was created (the kernel said so, with its path).
    pub fn created(&mut self, id: u64, path: String) {
        self.remember(id, path);
    }

    /// A cgroup was removed: its path stays known for the records still on their way.
    pub fn removed(&mut self, id: u64, path: String) {
        let path = self.cache.remove(&id).unwrap_or(path);
        if self.removed_order.len() >= MAX_REMOVED
            && let Some(old) = self.removed_order.pop_front()
        {
            self.removed.remove(&old);
        }
        if self.removed.insert(id, path).is_none() {
            self.removed_order.push_back(id);
        }
    }

    pub fn mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    /// The path of cgroup `id`, trying the process's own /proc entry first (cheap, exact while
    /// it lives), then a scan of the tree (for processes already gone).
    pub fn resolve(&mut self, id: u64, pid: u32) -> Option<String> {
        if let Some(p) = self.cache.get(&id).or_else(|| self.removed.get(&id)) {
            return Some(p.clone());
        }
        let mount = self.mount.clone()?;
        if let Some(p) = proc_cgroup_path(pid)
            && inode_of(&mount, &p) == Some(id)
        {
            self.remember(id, p.clone());
            return Some(p);
        }
        if self
            .last_scan
            .is_some_and(|t| t.elapsed() < RESCAN_INTERVAL)
        {
            return None;
        }
        self.last_scan = Some(Instant::now());
        self.cache.clear();
        scan(&mount, Path::new("/"), &mut self.cache, 0);
        self.cache.get(&id).cloned()
    }

    fn remember(&mut self, id: u64, path: String) {
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(id, path);
    }
}

/// The unified-hierarchy line of /proc/PID/cgroup ("0::/path").
pub(crate) fn proc_cgroup_path(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end().to_string())
}

fn inode_of(mount: &Path, rel: &str) -> Option<u64> {
    let full = mount.join(rel.trim_start_matches('/'));
    std::fs::metadata(full).ok().map(|m| m.ino())
}

/// Walks the cgroup tree, recording directory inode -> path. Depth-bounded against loops.
fn scan(mount: &Path, rel: &Path, out: &mut HashMap<u64, String>, depth: u32) {
    if depth > 32 || out.len() >= MAX_CACHED {
        return;
    }
    let dir = mount.join(rel.strip_prefix("/").unwrap_or(rel));
    let Ok(meta) = std::fs::metadata(&dir) else {
        return;
    };
    out.insert(meta.ino(), rel.to_string_lossy().into_owned());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            scan(mount, &rel.join(entry.file_name()), out, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_and_unified_layouts() {
        let hybrid = "25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 1 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            find_cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(find_cgroup2_mount("garbage\n\n"), None);
    }

    #[test]
    fn systemd_units_name_the_workload() {
        let w = workload_of(
            Some("/system.slice/nginx.service"),
            Some("/usr/sbin/nginx"),
            "x",
        );
        assert_eq!(w.kind, "systemd_unit");
        assert_eq!(w.name, "nginx.service");
        let w = workload_of(Some("/kt-test"), Some("/usr/bin/cat"), "cat");
        assert_eq!((w.kind, w.name.as_str()), ("process", "cat"));
        let w = workload_of(None, None, "cat");
        assert_eq!(w.name, "cat");
    }

    #[test]
    fn own_cgroup_resolves_by_inode() {
        let mut paths = CgroupPaths::discover();
        let Some(mount) = paths.mount().map(Path::to_path_buf) else {
            panic!("this host has no cgroup2 mount");
        };
        let own = proc_cgroup_path(std::process::id()).unwrap();
        let id = inode_of(&mount, &own).unwrap();
        assert_eq!(paths.resolve(id, std::process::id()), Some(own.clone()));
        // From the scan as well, as for a process that is gone.
        let mut fresh = CgroupPaths::with_mount(Some(mount));
        assert_eq!(fresh.resolve(id, u32::MAX), Some(own));
    }
}
