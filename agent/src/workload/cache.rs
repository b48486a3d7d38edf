//! Parsed identities by cgroup path, so naming the workload of a record costs a hash lookup.
//! Bounded with two generations: when the current map fills up it becomes the previous one and
//! the one before is dropped, so the cgroups still in use survive (a hit in the previous map
//! moves the entry back) while those of finished pods and units age out. Parsing needs no
//! filesystem access, so a path whose cgroup is gone is served like any other.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use super::identity::{CgroupIdentity, parse};

/// Entries per generation (at most twice as many are kept).
const GENERATION: usize = 4096;
/// Longer paths are parsed every time rather than kept (the kernel's PATH_MAX).
const MAX_KEY_LEN: usize = 4096;

#[derive(Debug)]
pub struct IdentityCache {
    current: HashMap<Box<str>, Arc<CgroupIdentity>>,
    previous: HashMap<Box<str>, Arc<CgroupIdentity>>,
    generation: usize,
}

impl IdentityCache {
    pub fn new(generation: usize) -> Self {
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation: generation.max(1),
        }
    }

    /// The identity of `path`, parsed at most once while it stays in use.
    pub fn get(&mut self, path: &str) -> Arc<CgroupIdentity> {
        if let Some(id) = self.current.get(path) {
            return Arc::clone(id);
        }
        if path.len() > MAX_KEY_LEN {
            return Arc::new(parse(path));
        }
        let id = self
            .previous
            .remove(path)
            .unwrap_or_else(|| Arc::new(parse(path)));
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(path.into(), Arc::clone(&id));
        id
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

static CACHE: LazyLock<Mutex<IdentityCache>> =
    LazyLock::new(|| Mutex::new(IdentityCache::new(GENERATION)));

/// The identity of a cgroup path, from the process-wide cache.
pub fn identity_of(path: &str) -> Arc<CgroupIdentity> {
    // The cache holds no invariant a panic elsewhere could break: keep using it.
    CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_what_is_in_use() {
        let mut c = IdentityCache::new(8);
        let hot = "/system.slice/hot.service";
        let first = c.get(hot);
        for i in 0..1000 {
            c.get(&format!("/system.slice/u{i}.service"));
            // Still served without a new parse while in use.
            assert!(Arc::ptr_eq(&first, &c.get(hot)), "evicted at {i}");
            assert!(c.len() <= 16, "{} entries", c.len());
        }
        assert_eq!(c.get(hot).unit.as_deref(), Some("hot.service"));
    }

    #[test]
    fn very_long_paths_are_parsed_not_kept() {
        let mut c = IdentityCache::new(8);
        let long = format!("/{}/x.service", "a/".repeat(5000));
        assert_eq!(c.get(&long).unit.as_deref(), Some("x.service"));
        assert!(c.is_empty());
    }
}
