//! Which root to read a workload's file through, when the process that opened it may already
//! be gone (`cat`, a cron job, a CI step: the common case on VMs).
//!
//! The kernel tells each open's mount namespace. A file is read through the opener's own root
//! while it lives; else through another live process of the same mount namespace: first one of
//! its cgroup, then any process seen living in that namespace, then any process on the node
//! (one scan of /proc, remembered when it finds none). Only when no process is left in the
//! namespace is the file unreadable: the namespace, and the view of the files it gave, is gone.

use std::{
    collections::{HashMap, HashSet},
    os::fd::OwnedFd,
    path::Path,
};

use crate::rootfs::{ReadError, mount_ns, open_root};

/// Processes whose root handle is kept, at most.
const MAX_PROCESS_ROOTS: usize = 4096;
/// Mount namespaces tracked, and live processes remembered per namespace.
const MAX_NAMESPACES: usize = 8192;
const MAX_MEMBERS: usize = 8;
/// Namespaces found empty, remembered so that reads from one cost one /proc scan in all.
const MAX_GONE: usize = 4096;

/// How the root used for a read was found (reported, so a reader knows how exact it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The opening process itself.
    Process,
    /// Another live process of the same cgroup and mount namespace.
    CgroupPeer,
    /// Another live process of the same mount namespace, in another cgroup.
    NamespacePeer,
}

impl RootSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RootSource::Process => "process",
            RootSource::CgroupPeer => "cgroup_peer",
            RootSource::NamespacePeer => "namespace_peer",
        }
    }
}

/// Finds a root to read through for a process, alive or not.
#[derive(Default)]
pub struct Roots {
    /// The root of each live process seen opening files, with its mount namespace then, so a
    /// busy reader costs one dup per open rather than a procfs lookup and a namespace stat.
    /// Used only for opens made in that same namespace (a process that unshares its mount
    /// namespace gets a new root); forgotten at exec and exit. (A process that chroots
    /// without changing namespace keeps being read through the old root until its next exec.)
    by_pid: HashMap<u32, (OwnedFd, u64)>,
    /// Processes seen living in each mount namespace (at exec, at opens), most recent last.
    members: HashMap<u64, Vec<u32>>,
    /// Namespaces a /proc scan found empty.
    gone: HashSet<u64>,
}

impl Roots {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers every running process's mount namespace (at start: processes that began
    /// before the agent exec nothing it would see).
    pub fn seed_from_proc(&mut self) {
        for (pid, ns) in proc_namespaces() {
            self.observe(pid, ns);
        }
    }

    /// Remembers that `pid` lives in mount namespace `mnt_ns` (0: unknown).
    pub fn observe(&mut self, pid: u32, mnt_ns: u64) {
        if mnt_ns == 0 {
            return;
        }
        self.gone.remove(&mnt_ns);
        if self.members.len() >= MAX_NAMESPACES && !self.members.contains_key(&mnt_ns) {
            // Namespaces come and go with containers; when too many piled up, drop those whose
            // processes are all gone.
            self.members
                .retain(|ns, pids| pids.iter().any(|&p| mount_ns(p) == Some(*ns)));
            if self.members.len() >= MAX_NAMESPACES {
                return;
            }
        }
        let pids = self.members.entry(mnt_ns).or_default();
        if let Some(i) = pids.iter().position(|&p| p == pid) {
            pids.remove(i);
        } else if pids.len() >= MAX_MEMBERS {
            pids.remove(0);
        }
        pids.push(pid);
    }

    /// Forgets the root handle of a process that exec'd or exited.
    pub fn forget_process(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }

    /// A root for `pid` of mount namespace `mnt_ns` (0: unknown): its own while it lives,
    /// else a peer's. `cgroup_dir` is its cgroup's directory under the cgroup2 mount.
    pub fn root_for(
        &mut self,
        pid: u32,
        mnt_ns: u64,
        cgroup_dir: Option<&Path>,
    ) -> Result<(OwnedFd, RootSource), ReadError> {
        if let Some((root, ns)) = self.by_pid.get(&pid)
            && (mnt_ns == 0 || *ns == mnt_ns)
            && let Ok(root) = root.try_clone()
        {
            return Ok((root, RootSource::Process));
        }
        let own_ns = mount_ns(pid);
        // A process that is gone, or a reused pid now in another namespace, is no reader.
        if own_ns.is_some()
            && (mnt_ns == 0 || own_ns == Some(mnt_ns))
            && let Ok(root) = open_root(pid)
        {
            let ns = own_ns.unwrap_or(0);
            self.observe(pid, ns);
            if self.by_pid.len() >= MAX_PROCESS_ROOTS {
                self.by_pid.clear();
            }
            if let Ok(kept) = root.try_clone() {
                self.by_pid.insert(pid, (kept, ns));
            }
            return Ok((root, RootSource::Process));
        }
        if let Some(root) = cgroup_dir.and_then(|dir| cgroup_peer(dir, mnt_ns)) {
            return Ok((root, RootSource::CgroupPeer));
        }
        if mnt_ns == 0 {
            return Err(ReadError::NoRoot);
        }
        self.namespace_peer(mnt_ns)
            .map(|root| (root, RootSource::NamespacePeer))
    }

    /// A live process of `mnt_ns`: one remembered, else one found by scanning /proc.
    fn namespace_peer(&mut self, mnt_ns: u64) -> Result<OwnedFd, ReadError> {
        if let Some(pids) = self.members.get_mut(&mnt_ns) {
            pids.retain(|&p| mount_ns(p) == Some(mnt_ns));
            for &p in pids.iter().rev() {
                if let Ok(root) = open_root(p) {
                    return Ok(root);
                }
            }
        }
        if self.gone.contains(&mnt_ns) {
            return Err(ReadError::NamespaceGone);
        }
        let found = proc_namespaces().find(|&(_, ns)| ns == mnt_ns);
        match found.and_then(|(p, _)| open_root(p).ok().map(|root| (p, root))) {
            Some((p, root)) => {
                self.observe(p, mnt_ns);
                Ok(root)
            }
            None => {
                if self.gone.len() >= MAX_GONE {
                    self.gone.clear();
                }
                self.gone.insert(mnt_ns);
                self.members.remove(&mnt_ns);
                Err(ReadError::NamespaceGone)
            }
        }
    }
}

/// A live process of the cgroup at `dir` in mount namespace `mnt_ns` (any, when 0).
fn cgroup_peer(dir: &Path, mnt_ns: u64) -> Option<OwnedFd> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter(|&p| mnt_ns == 0 || mount_ns(p) == Some(mnt_ns))
        .find_map(|p| open_root(p).ok())
}

/// (pid, mount namespace) of every process in /proc.
fn proc_namespaces() -> impl Iterator<Item = (u32, u64)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, mount_ns(pid)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_reader_is_read_through_a_live_process_of_its_namespace() {
        let me = std::process::id();
        let ns = mount_ns(me).unwrap();
        let mut roots = Roots::new();
        // Never seen: found by the /proc scan (this test process lives in it).
        let (_, source) = roots.root_for(u32::MAX, ns, None).unwrap();
        assert_eq!(source, RootSource::NamespacePeer);
        // The process found is remembered.
        assert!(roots.members[&ns].iter().all(|&p| mount_ns(p) == Some(ns)));
        let (_, source) = roots.root_for(me, ns, None).unwrap();
        assert_eq!(source, RootSource::Process);
    }

    #[test]
    fn a_namespace_without_processes_is_gone() {
        let mut roots = Roots::new();
        assert_eq!(
            roots.root_for(u32::MAX, 1, None).unwrap_err(),
            ReadError::NamespaceGone
        );
        assert!(roots.gone.contains(&1));
        // Unknown namespace and no cgroup: nothing to read through.
        assert_eq!(
            roots.root_for(u32::MAX, 0, None).unwrap_err(),
            ReadError::NoRoot
        );
    }

    #[test]
    fn a_reused_pid_in_another_namespace_is_not_the_reader() {
        let me = std::process::id();
        let mut roots = Roots::new();
        // This process is alive but not in namespace 1.
        assert_eq!(
            roots.root_for(me, 1, None).unwrap_err(),
            ReadError::NamespaceGone
        );
    }
}
