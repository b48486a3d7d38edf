//! File opens -> `keytrail.credential.access` records: resolves the path the kernel saw
//! (`openpath`), applies the exact glob match and the cgroup include/exclude lists, folds
//! repeats within the dedup window, and turns what the inspection of the file found into one
//! record per credential.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use globset::{Glob, GlobSet, GlobSetBuilder};
use keytrail_common::{EventHeader, FileOpen, OpenSyscall, filter};

use crate::{
    credential::{Credential, Lifetime},
    dedup::RecentSet,
    env_paths::{EnvPathCounters, EnvPaths},
    events::text,
    homes::{HomeCounters, Homes},
    inspect::{Content, Inspection, ReadVia, Reader},
    openpath::{self, Unresolved},
    procs::{ProcInfo, read_exe},
    record::{Record, Severity, names},
    rootfs::ReadError,
    roots::RootSource,
    watch::{KernelEntry, WatchRules},
    workload::proc_cgroup_path,
};

/// Counters of this stage, reported in agent stats.
#[derive(Debug, Default)]
pub struct FileCounters {
    /// Opens the kernel passed that the exact glob match rejected.
    pub not_matched: AtomicU64,
    /// Opens folded into an earlier identical one.
    pub deduplicated: AtomicU64,
    /// Opens by processes outside the cgroup include/exclude lists.
    pub excluded: AtomicU64,
    /// Opens whose path could not be resolved, reported as they were captured: in all, and
    /// those whose working directory changed before it was read, and those longer than the
    /// kernel's copy window whose descriptor was gone.
    pub unresolved: AtomicU64,
    pub directory_changed: AtomicU64,
    pub truncated: AtomicU64,
    /// Credential files that could not be read, by [`ReadError::REASONS`].
    pub unreadable: [AtomicU64; ReadError::REASONS.len()],
    /// Home directories known, and refused.
    pub homes: HomeCounters,
    /// Paths named by environments watched, and refused.
    pub env_paths: EnvPathCounters,
}

impl FileCounters {
    /// Counts an unreadable file by its reason.
    pub fn count_unreadable(&self, e: &ReadError) {
        self.unreadable[e.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// What makes two opens the same for dedup: process, path, outcome and access mode.
type DedupKey = (u32, String, bool, &'static str);

/// Which processes to report, by cgroup path.
#[derive(Debug, Clone)]
pub struct CgroupFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl CgroupFilter {
    /// Patterns are validated by the config layer.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, globset::Error> {
        let build = |patterns: &[String]| -> Result<Option<GlobSet>, globset::Error> {
            if patterns.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                b.add(Glob::new(p)?);
            }
            b.build().map(Some)
        };
        Ok(Self {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    /// An unknown cgroup passes unless an include list is set.
    pub fn allows(&self, cgroup_path: Option<&str>) -> bool {
        match cgroup_path {
            Some(p) => {
                self.include.as_ref().is_none_or(|s| s.is_match(p))
                    && !self.exclude.as_ref().is_some_and(|s| s.is_match(p))
            }
            None => self.include.is_none(),
        }
    }
}

/// Who made an open, as resolved by the process and workload stages.
pub struct Opener<'a> {
    pub proc: &'a ProcInfo,
    pub cgroup_path: Option<&'a str>,
}

pub struct FileAccess {
    rules: WatchRules,
    cgroups: CgroupFilter,
    recent: RecentSet<DedupKey>,
    /// Paths named by a workload's environment (`KUBECONFIG=/etc/app/kubeconfig`), watched for
    /// that workload (cgroup id) only, with the variable's name.
    env_paths: EnvPaths,
    /// Home directories found at run time, for the `~/` patterns that need one.
    homes: Homes,
}

/// A home directory and the kernel entries that watch below it.
pub type HomeEntries = (String, Vec<KernelEntry>);

impl FileAccess {
    pub fn new(rules: WatchRules, cgroups: CgroupFilter, dedup_window: Duration) -> Self {
        Self {
            rules,
            cgroups,
            recent: RecentSet::new(dedup_window),
            env_paths: EnvPaths::new(),
            homes: Homes::new(),
        }
    }

    /// Adds system homes (a mount namespace's passwd file, read through its root; the
    /// directories under /home). Returns the new ones with their kernel entries.
    pub fn add_system_homes(
        &mut self,
        homes: Vec<String>,
        counters: &FileCounters,
    ) -> Vec<HomeEntries> {
        self.homes
            .add_system(homes, &counters.homes)
            .into_iter()
            .map(|h| self.with_entries(h))
            .collect()
    }

    /// Adds a home named by `HOME` in cgroup `cgroup`; returns it when new.
    pub fn add_env_home(
        &mut self,
        cgroup: u64,
        home: &str,
        counters: &FileCounters,
    ) -> Option<HomeEntries> {
        self.homes
            .add_env(cgroup, home, &counters.homes)
            .map(|h| self.with_entries(h))
    }

    /// Directories whose whole tree is watched (see [`WatchRules::watched_trees`]).
    pub fn watched_trees(&self) -> Vec<String> {
        self.rules.watched_trees()
    }

    /// True when mount namespace `ns` has not been looked at for homes yet.
    pub fn first_look_at(&mut self, ns: u64) -> bool {
        self.homes.first_look_at(ns)
    }

    /// A cgroup was removed: what it alone named goes. Returns the homes and the exact paths
    /// whose kernel entries can go.
    pub fn cgroup_gone(
        &mut self,
        cgroup: u64,
        counters: &FileCounters,
    ) -> (Vec<HomeEntries>, Vec<String>) {
        let paths = self.env_paths.cgroup_gone(cgroup, &counters.env_paths);
        let homes = self
            .homes
            .cgroup_gone(cgroup, &counters.homes)
            .into_iter()
            .map(|h| self.with_entries(h))
            .collect();
        (homes, paths)
    }

    fn with_entries(&self, home: String) -> HomeEntries {
        let entries = self.rules.home_entries(&home);
        (home, entries)
    }

    /// The access to report for an open, or None when it is not reported (counted in
    /// `counters`).
    pub fn on_open(
        &mut self,
        ev: &FileOpen,
        who: &Opener<'_>,
        time: SystemTime,
        counters: &FileCounters,
    ) -> Option<OpenAccess> {
        let pid = ev.header.pid;
        let raw = text(&ev.path, ev.path_len);
        let opened = openpath::resolve(ev, &raw, || same_pid_namespace(pid, ev.pid_ns));
        let path = opened.path.clone();
        let resolved = opened.is_resolved();
        // A file known to hold credentials is reported under whatever name it was opened.
        let by_identity = ev.matched & filter::IDENTITY != 0;
        let env_hint = self
            .env_paths
            .named_by(ev.header.cgroup_id, &path)
            .map(str::to_string);
        // A resolved path gets the exact match; one that could not be resolved passed the
        // kernel's filter and is reported as it was captured.
        if resolved
            && !by_identity
            && env_hint.is_none()
            && !self.rules.matches(&path)
            && !self.rules.matches_in_homes(&path, &self.homes)
            && !in_secret_volume(who.cgroup_path, &path)
        {
            counters.not_matched.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if let Some(why) = opened.unresolved {
            counters.unresolved.fetch_add(1, Ordering::Relaxed);
            match why {
                Unresolved::BaseChanged => {
                    counters.directory_changed.fetch_add(1, Ordering::Relaxed)
                }
                Unresolved::Truncated => counters.truncated.fetch_add(1, Ordering::Relaxed),
                Unresolved::ProcessGone | Unresolved::ForeignPid | Unresolved::DescriptorClosed => {
                    0
                }
            };
        }
        if !self.cgroups.allows(who.cgroup_path) {
            counters.excluded.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let ok = ev.ret >= 0;
        let access = access_mode(ev.open_flags);
        if self.recent.is_repeat((pid, path.clone(), ok, access)) {
            counters.deduplicated.fetch_add(1, Ordering::Relaxed);
            return None;
        }

        let environ = match proc_environ_target(&path, pid) {
            EnvironRead::NotEnviron => None,
            // A process reading its own environment learns nothing new.
            EnvironRead::Own => return None,
            EnvironRead::Other(target) => Some(target),
        };
        let mut r = Record::new(names::CREDENTIAL_ACCESS, time);
        r.set(
            "keytrail.credential.source",
            if environ.is_some() {
                "proc_environ"
            } else {
                "file"
            },
        )
        .set("file.path", path.clone());
        if let Some(why) = opened.unresolved {
            r.set("keytrail.file.path_resolved", false)
                .set("keytrail.file.unresolved", why.as_str());
        }
        if opened.truncated {
            r.set("keytrail.file.path_truncated", true);
        }
        r.set_opt("keytrail.file.opened_as", opened.opened_as.clone());
        if by_identity {
            r.set("keytrail.file.matched_by", "identity");
        }
        r.set(
            "keytrail.file.open.outcome",
            if ok { "ok" } else { "failed" },
        );
        if !ok {
            r.set("error.type", errno_name(-ev.ret));
        }
        r.set("keytrail.file.open.syscall", syscall_name(ev.syscall))
            .set("keytrail.file.open.access", access);
        set_process(&mut r, &ev.header, who);
        let environ_of = environ.and_then(|t| set_target(&mut r, pid, t));
        Some(OpenAccess {
            record: r,
            readable: ok && (resolved || by_identity) && environ.is_none(),
            known_file: by_identity.then_some((ev.file_ino, openpath::user_dev(ev.file_dev))),
            environ_of: if ok { environ_of } else { None },
            env_hint,
            mnt_ns: u64::from(ev.mnt_ns),
            root_pid: opened.root_pid,
            descriptor: opened
                .via_descriptor
                .map(|fd| (fd, ev.file_ino, openpath::user_dev(ev.file_dev))),
            path,
        })
    }

    /// Forgets a process's repeats when it exits (its pid may be reused).
    pub fn on_exit(&mut self, pid: u32) {
        self.recent.retain(|(p, ..)| *p != pid);
    }

    /// Watches `path` (absolute, as the workload sees it) for the processes of cgroup
    /// `cgroup_id`, because variable `env_name` names it. Returns the path when the kernel
    /// needs an entry for it.
    pub fn watch_env_path(
        &mut self,
        cgroup_id: u64,
        path: &str,
        env_name: &str,
        counters: &FileCounters,
    ) -> Option<String> {
        self.env_paths
            .add(cgroup_id, path, env_name, &counters.env_paths)
    }
}

/// An open to report, before its content is known.
pub struct OpenAccess {
    /// Everything but the credential attributes.
    pub record: Record,
    /// Absolute path as the process sees it.
    pub path: String,
    /// The open succeeded and the path is known: the content can be inspected.
    pub readable: bool,
    /// For a successful read of another process's /proc/PID/environ: that process's pid in
    /// the agent's pid namespace, so its environment can be inspected.
    pub environ_of: Option<u32>,
    /// The environment variable that named this path, when that is why it is watched.
    pub env_hint: Option<String>,
    /// The opener's mount namespace at the open (0: unknown).
    pub mnt_ns: u64,
    /// The path lies in this process's root (`/proc/PID/root/...`).
    pub root_pid: Option<u32>,
    /// Read through the opener's descriptor: (fd, inode, device).
    pub descriptor: Option<(i32, u64, u64)>,
    /// Opened by identity: the (inode, device) of the known credential file.
    pub known_file: Option<(u64, u64)>,
}

impl OpenAccess {
    /// Who reads the file, and how to reach it.
    pub fn reader<'a>(&self, pid: u32, cgroup_path: Option<&'a str>) -> Reader<'a> {
        Reader {
            pid,
            mnt_ns: self.mnt_ns,
            cgroup_path,
            root_pid: self.root_pid,
            descriptor: self.descriptor,
            known_file: self.known_file,
        }
    }
}

/// What a /proc/PID/environ path names, seen from the opening process.
#[derive(Debug, PartialEq, Eq)]
enum EnvironRead {
    NotEnviron,
    Own,
    /// Another process, by its pid in the opener's pid namespace.
    Other(u32),
}

fn proc_environ_target(path: &str, opener: u32) -> EnvironRead {
    let Some(middle) = path
        .strip_prefix("/proc/")
        .and_then(|p| p.strip_suffix("/environ"))
    else {
        return EnvironRead::NotEnviron;
    };
    if middle == "self" || middle == "thread-self" {
        return EnvironRead::Own;
    }
    // /proc/PID/task/TID/environ is the same file as /proc/PID/environ.
    let pid_part = middle.split('/').next().unwrap_or(middle);
    let Ok(target) = pid_part.parse::<u32>() else {
        return EnvironRead::NotEnviron;
    };
    // The opener names pids in its own pid namespace.
    let own = ns_pid(opener).unwrap_or(opener);
    if target == own {
        EnvironRead::Own
    } else {
        EnvironRead::Other(target)
    }
}

/// A pid as the process sees itself: the last field of NSpid in /proc/PID/status.
fn ns_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The target of a /proc/PID/environ read (`keytrail.target.*`). Returns the target's pid in
/// the agent's namespace when the reader shares it (else the pid is the reader's view only).
fn set_target(r: &mut Record, reader: u32, target: u32) -> Option<u32> {
    r.set("keytrail.target.pid", target);
    if pid_namespace(reader).is_none() || pid_namespace(reader) != agent_pid_namespace() {
        r.set("keytrail.target.pid_namespace", "reader");
        return None;
    }
    let exe = read_exe(target);
    let cgroup = proc_cgroup_path(target);
    let comm = std::fs::read_to_string(format!("/proc/{target}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default();
    let identity = cgroup.as_deref().map(crate::workload::identity_of);
    let w = crate::workload::Workload::of(identity.as_deref(), exe.as_deref(), &comm);
    r.set_opt("keytrail.target.executable.path", exe)
        .set_opt("keytrail.target.cgroup.path", cgroup)
        .set("keytrail.target.workload.kind", w.kind)
        .set("keytrail.target.workload.name", w.name);
    for (attr, value) in identity.iter().flat_map(|i| i.attributes()) {
        r.set(attr.target_key, value);
    }
    Some(target)
}

/// The inode of a process's pid namespace.
fn pid_namespace(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

/// The agent's own pid namespace, read once.
fn agent_pid_namespace() -> Option<u64> {
    static NS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *NS.get_or_init(|| pid_namespace(std::process::id()))
}

/// The access records for an open: one per credential found, or one saying why none was.
/// A credential's age is its file's age (mtime) when it came from a file, else what
/// `first_seen` says.
pub fn access_records(
    base: Record,
    inspection: Option<&Inspection>,
    now: SystemTime,
    first_seen: &mut FirstSeen,
) -> Vec<Record> {
    let unknown = |mut r: Record, key: Option<(&'static str, String)>| {
        r.set("keytrail.credential.kind", "unknown")
            .set("keytrail.credential.lifetime", "unknown");
        if let Some((k, v)) = key {
            r.set(k, v);
        }
        r
    };
    let Some(inspection) = inspection else {
        return vec![unknown(base, None)];
    };
    let mut base = base;
    if let Some(via) = inspection.via
        && via != ReadVia::Root(RootSource::Process)
    {
        base.set("keytrail.file.read_via", via.as_str());
    }
    let age = inspection
        .identity
        .and_then(|id| now.duration_since(id.mtime()).ok())
        .map(|d| d.as_secs());
    match inspection.content.as_deref() {
        Err(e) => vec![unknown(
            base,
            Some(("keytrail.credential.unreadable", e.to_string())),
        )],
        Ok(Content::Nothing(reason)) => vec![unknown(
            base,
            Some(("keytrail.credential.unrecognised", reason.clone())),
        )],
        Ok(Content::Credentials(creds)) => creds
            .iter()
            .map(|c| {
                let mut r = base.clone();
                let seen_age = first_seen.age(&c.fingerprint, now);
                set_credential(&mut r, c, age.or(Some(seen_age)));
                r
            })
            .collect(),
    }
}

/// When the agent first saw each fingerprint: the age of credentials that carry none of their
/// own (environment values). Bounded; when full it starts over, so ages restart low rather
/// than memory growing.
#[derive(Debug, Default)]
pub struct FirstSeen {
    seen: HashMap<String, SystemTime>,
}

impl FirstSeen {
    const MAX: usize = 65_536;

    /// Seconds since `fingerprint` was first seen (0 the first time).
    pub fn age(&mut self, fingerprint: &str, now: SystemTime) -> u64 {
        if self.seen.len() >= Self::MAX && !self.seen.contains_key(fingerprint) {
            self.seen.clear();
        }
        let first = match self.seen.get(fingerprint) {
            Some(t) => *t,
            None => *self.seen.entry(fingerprint.to_string()).or_insert(now),
        };
        now.duration_since(first).map(|d| d.as_secs()).unwrap_or(0)
    }
}

/// The credential attributes of the contract; severity WARN for a static credential.
pub fn set_credential(r: &mut Record, c: &Credential, age_s: Option<u64>) {
    r.set("keytrail.credential.kind", c.kind.as_str())
        .set("keytrail.credential.lifetime", c.lifetime.as_str())
        .set("keytrail.credential.fingerprint", c.fingerprint.clone())
        .set_opt("keytrail.credential.id", c.id.clone())
        .set_opt(
            "keytrail.credential.expires_at",
            c.expires_at
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        )
        .set_opt("keytrail.credential.age_s", age_s)
        .set_opt("keytrail.credential.location", c.location.clone())
        .set_opt(
            "keytrail.credential.env_var",
            c.location
                .as_deref()
                .and_then(|l| l.strip_prefix("env "))
                .map(str::to_string),
        );
    if c.lifetime == Lifetime::Static {
        r.severity = Severity::Warn;
    }
}

/// The process and workload attributes shared by access records.
pub fn set_process(r: &mut Record, header: &EventHeader, who: &Opener<'_>) {
    // Parsed once per cgroup path (cached), so this is a hash lookup per record.
    let identity = who.cgroup_path.map(crate::workload::identity_of);
    let w =
        crate::workload::Workload::of(identity.as_deref(), who.proc.exe.as_deref(), &who.proc.comm);
    r.set("process.pid", header.pid)
        .set_opt("process.executable.path", who.proc.exe.clone())
        .set("process.executable.name", who.proc.comm.clone())
        .set_opt(
            "process.creation.time",
            who.proc
                .creation_time
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        )
        .set("process.user.id", header.uid)
        .set_opt("keytrail.cgroup.path", who.cgroup_path.map(str::to_string))
        .set("keytrail.cgroup.id", header.cgroup_id)
        .set("keytrail.workload.kind", w.kind)
        .set("keytrail.workload.name", w.name);
    // container.id, container.runtime, k8s.pod.uid, keytrail.k8s.qos_class,
    // keytrail.systemd.unit, keytrail.user_session: only those the path gives.
    for (attr, value) in identity.iter().flat_map(|i| i.attributes()) {
        r.set(attr.key, value);
    }
    // Pod, namespace, container, owner and volume names when the Kubernetes index knows them.
    crate::k8s::enrich(r, identity.as_deref());
}

/// True when `path` lies in a Kubernetes Secret or projected volume of the opener's container.
fn in_secret_volume(cgroup_path: Option<&str>, path: &str) -> bool {
    let identity = cgroup_path.map(crate::workload::identity_of);
    crate::k8s::in_secret_volume(identity.as_deref(), path)
}

/// Whether process `pid` names pids as the agent does (its pid namespace is the agent's): as
/// the kernel recorded it at the open (`pid_ns`), else as procfs says while it lives.
fn same_pid_namespace(pid: u32, pid_ns: u32) -> bool {
    let theirs = match pid_ns {
        0 => pid_namespace(pid),
        ns => Some(u64::from(ns)),
    };
    theirs.is_some() && theirs == agent_pid_namespace()
}

fn syscall_name(id: u32) -> &'static str {
    match id {
        x if x == OpenSyscall::Open as u32 => "open",
        x if x == OpenSyscall::Openat as u32 => "openat",
        x if x == OpenSyscall::Openat2 as u32 => "openat2",
        _ => "unknown",
    }
}

fn access_mode(flags: u64) -> &'static str {
    match flags & libc::O_ACCMODE as u64 {
        0 => "read",
        1 => "write",
        _ => "read_write",
    }
}

/// The symbolic name of an errno, as OpenTelemetry's `error.type` wants a low-cardinality value.
pub fn errno_name(errno: i64) -> String {
    let name = match errno as i32 {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ELOOP => "ELOOP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::E2BIG => "E2BIG",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_filter() {
        let f = CgroupFilter::new(&["/kubepods/**".into()], &["/kubepods/skip/**".into()]).unwrap();
        assert!(f.allows(Some("/kubepods/pod1/c1")));
        assert!(!f.allows(Some("/kubepods/skip/c1")));
        assert!(!f.allows(Some("/system.slice/x.service")));
        assert!(!f.allows(None));
        assert!(CgroupFilter::new(&[], &[]).unwrap().allows(None));
    }

    #[test]
    fn first_seen_ages_grow_from_zero() {
        let mut f = FirstSeen::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(f.age("kt1:a", t0), 0);
        assert_eq!(f.age("kt1:a", t0 + Duration::from_secs(90)), 90);
        assert_eq!(f.age("kt1:b", t0 + Duration::from_secs(90)), 0);
    }

    #[test]
    fn environ_paths() {
        let me = std::process::id();
        assert_eq!(
            proc_environ_target("/proc/self/environ", me),
            EnvironRead::Own
        );
        assert_eq!(
            proc_environ_target(&format!("/proc/{me}/environ"), me),
            EnvironRead::Own
        );
        assert_eq!(
            proc_environ_target("/proc/1/task/1/environ", me),
            EnvironRead::Other(1)
        );
        assert_eq!(
            proc_environ_target("/proc/x/environ", me),
            EnvironRead::NotEnviron
        );
        assert_eq!(
            proc_environ_target("/srv/environ", me),
            EnvironRead::NotEnviron
        );
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(9999), "errno 9999");
        assert_eq!(access_mode(libc::O_RDWR as u64), "read_write");
    }
}
