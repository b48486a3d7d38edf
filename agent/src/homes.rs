//! Home directories wherever they are: service users live in `/var/lib/jenkins` or
//! `/opt/app`, CI jobs and units set `HOME` to a per-job directory. The watch patterns that need
//! a home (`~/.azure/**`, `~/.ssh/*`) apply below every home known here:
//! - the homes of each mount namespace's `/etc/passwd`, read through its root when the
//!   namespace is first seen (and the host's at start);
//! - the `HOME` of processes at exec: the kernel sends a `HOME` value only while it is not in
//!   its known-homes map, so each home costs one record, not one per exec.
//!
//! A workload controls its `HOME` and its `/etc/passwd`, so both are bounded: a home is an
//! absolute, normal path other than `/`; each cgroup names at most [`MAX_HOMES_PER_CGROUP`]
//! homes by `HOME`, released when the cgroup is removed; a passwd file gives at most
//! [`MAX_PASSWD_HOMES`]; and there are at most [`MAX_HOMES`] in all. What does not fit is
//! counted, never an error.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::openpath::normalize;

/// Homes known at most, node-wide.
pub const MAX_HOMES: usize = 2048;
/// Homes one cgroup can add through `HOME` values.
pub const MAX_HOMES_PER_CGROUP: usize = 16;
/// Homes taken from one passwd file.
pub const MAX_PASSWD_HOMES: usize = 64;
/// Longest home accepted (the kernel filter keys are 128 bytes).
const MAX_HOME_LEN: usize = 100;
/// Mount namespaces whose passwd has been read, remembered at most.
const MAX_NAMESPACES: usize = 8192;

/// Counters of this stage, reported in agent stats.
#[derive(Debug, Default)]
pub struct HomeCounters {
    /// Homes known now.
    pub known: AtomicU64,
    /// Homes not taken: malformed, over a cgroup's budget, or over the node-wide bound.
    pub refused: AtomicU64,
}

/// Who named a home.
#[derive(Debug, Default)]
struct Owners {
    /// A passwd file (never released: bounded by [`MAX_HOMES`]).
    passwd: bool,
    /// Cgroups whose processes had it as `HOME`.
    cgroups: Vec<u64>,
}

/// The set of known homes.
#[derive(Debug, Default)]
pub struct Homes {
    homes: HashMap<String, Owners>,
    by_cgroup: HashMap<u64, Vec<String>>,
    namespaces_read: HashSet<u64>,
}

impl Homes {
    pub fn new() -> Self {
        Self::default()
    }

    /// True for a directory that is a known home.
    pub fn contains(&self, dir: &str) -> bool {
        self.homes.contains_key(dir)
    }

    /// Homes known now.
    pub fn len(&self) -> usize {
        self.homes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.homes.is_empty()
    }

    /// Each (home, path below it) split of `path` whose home is known, innermost home first.
    pub fn splits<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        path.char_indices()
            .filter(|&(i, c)| c == '/' && i > 0)
            .map(|(i, _)| (&path[..i], &path[i + 1..]))
            .filter(|(home, _)| self.contains(home))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
    }

    /// True when passwd homes of mount namespace `ns` were not read yet (and marks them read).
    pub fn first_look_at(&mut self, ns: u64) -> bool {
        if self.namespaces_read.len() >= MAX_NAMESPACES {
            self.namespaces_read.clear();
        }
        self.namespaces_read.insert(ns)
    }

    /// Adds the homes of the system: a passwd file's (see [`passwd_homes`]), or the
    /// directories under /home. They are never released. Returns those that are new.
    pub fn add_system(
        &mut self,
        homes: impl IntoIterator<Item = String>,
        counters: &HomeCounters,
    ) -> Vec<String> {
        let mut added = Vec::new();
        for home in homes.into_iter().take(MAX_PASSWD_HOMES) {
            if let Some(owners) = self.homes.get_mut(&home) {
                owners.passwd = true;
                continue;
            }
            if self.homes.len() >= MAX_HOMES {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.homes.insert(
                home.clone(),
                Owners {
                    passwd: true,
                    cgroups: Vec::new(),
                },
            );
            added.push(home);
        }
        counters
            .known
            .store(self.homes.len() as u64, Ordering::Relaxed);
        added
    }

    /// Adds a home named by a process's `HOME` in cgroup `cgroup`. Returns it when new.
    pub fn add_env(&mut self, cgroup: u64, value: &str, counters: &HomeCounters) -> Option<String> {
        let Some(home) = valid_home(value) else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mine = self.by_cgroup.entry(cgroup).or_default();
        if mine.contains(&home) {
            return None;
        }
        if mine.len() >= MAX_HOMES_PER_CGROUP
            || (!self.homes.contains_key(&home) && self.homes.len() >= MAX_HOMES)
        {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        mine.push(home.clone());
        let owners = self.homes.entry(home.clone()).or_default();
        owners.cgroups.push(cgroup);
        let new = owners.cgroups.len() == 1 && !owners.passwd;
        counters
            .known
            .store(self.homes.len() as u64, Ordering::Relaxed);
        new.then_some(home)
    }

    /// A cgroup was removed: the homes only it named go. Returns them.
    pub fn cgroup_gone(&mut self, cgroup: u64, counters: &HomeCounters) -> Vec<String> {
        let mut gone = Vec::new();
        for home in self.by_cgroup.remove(&cgroup).unwrap_or_default() {
            if let Some(owners) = self.homes.get_mut(&home) {
                owners.cgroups.retain(|&c| c != cgroup);
                if owners.cgroups.is_empty() && !owners.passwd {
                    self.homes.remove(&home);
                    gone.push(home);
                }
            }
        }
        counters
            .known
            .store(self.homes.len() as u64, Ordering::Relaxed);
        gone
    }
}

/// A `HOME` value as a home: absolute, lexically normal, not `/`, not too long.
pub fn valid_home(value: &str) -> Option<String> {
    if !value.starts_with('/') || value.contains('\0') {
        return None;
    }
    let home = normalize(value);
    (home != "/" && home.len() <= MAX_HOME_LEN).then_some(home)
}

/// The home directories of a passwd file (field 6), valid ones only, in file order, without
/// repeats and without the placeholders that mean "no home".
pub fn passwd_homes(passwd: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(':').nth(5))
        .filter(|h| !matches!(*h, "/nonexistent" | "/dev/null" | "/var/empty"))
        .filter_map(valid_home)
        .filter(|h| seen.insert(h.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        postgres:x:105:110::/var/lib/postgresql:/bin/bash\n\
        jenkins:x:106:111::/var/lib/jenkins/:/bin/bash\n\
        weird:x:107:112::relative/home:/bin/sh\n\
        slash:x:108:113::/:/bin/sh\n\
        broken-line\n";

    #[test]
    fn passwd_homes_are_absolute_normal_and_real() {
        assert_eq!(
            passwd_homes(PASSWD),
            ["/root", "/var/lib/postgresql", "/var/lib/jenkins"]
        );
    }

    #[test]
    fn homes_split_paths_innermost_first() {
        let c = HomeCounters::default();
        let mut h = Homes::new();
        h.add_system(passwd_homes(PASSWD), &c);
        h.add_env(7, "/var/lib/jenkins/workspace/job-1", &c);
        let splits: Vec<_> = h
            .splits("/var/lib/jenkins/workspace/job-1/.azure/token.json")
            .collect();
        assert_eq!(
            splits,
            [
                ("/var/lib/jenkins/workspace/job-1", ".azure/token.json"),
                ("/var/lib/jenkins", "workspace/job-1/.azure/token.json"),
            ]
        );
        assert_eq!(h.splits("/srv/x").count(), 0);
    }

    #[test]
    fn env_homes_are_bounded_per_cgroup_and_released_with_it() {
        let c = HomeCounters::default();
        let mut h = Homes::new();
        for i in 0..MAX_HOMES_PER_CGROUP + 5 {
            h.add_env(1, &format!("/tmp/job-{i}"), &c);
        }
        assert_eq!(h.len(), MAX_HOMES_PER_CGROUP);
        assert_eq!(c.refused.load(Ordering::Relaxed), 5);
        // Another cgroup is not starved by the first one's flood.
        assert_eq!(h.add_env(2, "/srv/app", &c).as_deref(), Some("/srv/app"));
        // Shared homes stay while any owner lives; passwd homes stay for good.
        h.add_env(2, "/tmp/job-0", &c);
        h.add_system(["/tmp/job-1".to_string()], &c);
        let gone = h.cgroup_gone(1, &c);
        assert_eq!(gone.len(), MAX_HOMES_PER_CGROUP - 2);
        assert!(h.contains("/tmp/job-0") && h.contains("/tmp/job-1") && h.contains("/srv/app"));
        assert!(h.add_env(3, "/", &c).is_none());
        assert!(h.add_env(3, "relative", &c).is_none());
        assert_eq!(h.add_env(3, "/a/../b//", &c).as_deref(), Some("/b"));
    }
}
