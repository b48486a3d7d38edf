//! Paths a workload's environment names as credential files (`KUBECONFIG=/etc/app/kubeconfig`,
//! `GOOGLE_APPLICATION_CREDENTIALS=...`), watched for that workload (cgroup) only.
//!
//! The workload controls the value, so it must not be able to widen what every other
//! workload's opens cost, nor crowd out other workloads' paths: each path is one exact entry in
//! the kernel's exact-path trie (never a prefix: `KUBECONFIG=/pr` passes only `/pr`), a cgroup
//! names at most [`MAX_PER_CGROUP`] paths, the node at most [`MAX_PATHS`], and a cgroup's
//! paths are released when the cgroup is removed. What does not fit is counted.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::openpath::normalize;

/// Paths one cgroup can have watched.
pub const MAX_PER_CGROUP: usize = 16;
/// Paths watched at most, node-wide (the kernel trie's size is larger).
pub const MAX_PATHS: usize = 2048;

/// Counters of this stage, reported in agent stats.
#[derive(Debug, Default)]
pub struct EnvPathCounters {
    /// Paths watched now.
    pub watched: AtomicU64,
    /// Paths not watched: over a cgroup's budget or the node-wide bound, or not absolute.
    pub refused: AtomicU64,
}

#[derive(Debug, Default)]
pub struct EnvPaths {
    /// (cgroup, path) -> the variable that named it.
    named: HashMap<(u64, String), String>,
    by_cgroup: HashMap<u64, Vec<String>>,
    /// Path -> cgroups naming it: a kernel entry lives while this is above 0.
    refs: HashMap<String, usize>,
}

impl EnvPaths {
    pub fn new() -> Self {
        Self::default()
    }

    /// The variable that named `path` for `cgroup`, if it did.
    pub fn named_by(&self, cgroup: u64, path: &str) -> Option<&str> {
        self.named
            .get(&(cgroup, path.to_string()))
            .map(String::as_str)
    }

    /// Watches `path` for `cgroup`, named by variable `env_name`. Returns the path when the
    /// kernel needs a new entry for it.
    pub fn add(
        &mut self,
        cgroup: u64,
        path: &str,
        env_name: &str,
        counters: &EnvPathCounters,
    ) -> Option<String> {
        if !path.starts_with('/') {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let path = normalize(path);
        let key = (cgroup, path.clone());
        if self.named.contains_key(&key) {
            return None;
        }
        let mine = self.by_cgroup.entry(cgroup).or_default();
        if mine.len() >= MAX_PER_CGROUP
            || (!self.refs.contains_key(&path) && self.refs.len() >= MAX_PATHS)
        {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        mine.push(path.clone());
        self.named.insert(key, env_name.to_string());
        let refs = self.refs.entry(path.clone()).or_insert(0);
        *refs += 1;
        let new = *refs == 1;
        counters
            .watched
            .store(self.refs.len() as u64, Ordering::Relaxed);
        new.then_some(path)
    }

    /// A cgroup was removed: its paths go. Returns those no other cgroup names (their kernel
    /// entries can go).
    pub fn cgroup_gone(&mut self, cgroup: u64, counters: &EnvPathCounters) -> Vec<String> {
        let mut gone = Vec::new();
        for path in self.by_cgroup.remove(&cgroup).unwrap_or_default() {
            self.named.remove(&(cgroup, path.clone()));
            if let Some(refs) = self.refs.get_mut(&path) {
                *refs -= 1;
                if *refs == 0 {
                    self.refs.remove(&path);
                    gone.push(path);
                }
            }
        }
        counters
            .watched
            .store(self.refs.len() as u64, Ordering::Relaxed);
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_cgroup_shared_and_released() {
        let c = EnvPathCounters::default();
        let mut p = EnvPaths::new();
        for i in 0..MAX_PER_CGROUP + 3 {
            p.add(1, &format!("/etc/app/{i}.yaml"), "KUBECONFIG", &c);
        }
        assert_eq!(c.refused.load(Ordering::Relaxed), 3);
        // Another cgroup still gets its own, and shares one of the first cgroup's.
        assert_eq!(
            p.add(2, "/srv/x//kubeconfig", "KUBECONFIG", &c).as_deref(),
            Some("/srv/x/kubeconfig")
        );
        assert_eq!(p.add(2, "/etc/app/0.yaml", "KUBECONFIG", &c), None);
        assert_eq!(p.named_by(2, "/etc/app/0.yaml"), Some("KUBECONFIG"));
        assert_eq!(p.named_by(3, "/etc/app/0.yaml"), None);
        let gone = p.cgroup_gone(1, &c);
        assert_eq!(gone.len(), MAX_PER_CGROUP - 1);
        assert!(!gone.contains(&"/etc/app/0.yaml".to_string()));
        assert_eq!(p.cgroup_gone(2, &c).len(), 2);
        assert_eq!(c.watched.load(Ordering::Relaxed), 0);
        assert_eq!(p.add(4, "relative", "KUBECONFIG", &c), None);
    }
}
