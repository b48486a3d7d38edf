//! Folding repeats: a key seen again within the window is a repeat (counted by the caller, not
//! reported). Bounded: past the limit, expired keys are pruned, and if that is not enough the
//! set starts afresh (at worst one extra report per key).

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// Keys kept before old ones are pruned.
const MAX_KEYS: usize = 16_384;

#[derive(Debug)]
pub struct RecentSet<K> {
    window: Duration,
    seen: HashMap<K, Instant>,
}

impl<K: Hash + Eq> RecentSet<K> {
    /// A zero window reports everything.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
        }
    }

    /// True when `key` was seen within the window; otherwise remembers it now.
    pub fn is_repeat(&mut self, key: K) -> bool {
        if self.window.is_zero() {
            return false;
        }
        let now = Instant::now();
        if let Some(last) = self.seen.get(&key)
            && now.duration_since(*last) < self.window
        {
            return true;
        }
        if self.seen.len() >= MAX_KEYS {
            let window = self.window;
            self.seen.retain(|_, t| now.duration_since(*t) < window);
            if self.seen.len() >= MAX_KEYS {
                self.seen.clear();
            }
        }
        self.seen.insert(key, now);
        false
    }

    /// Forgets the keys `f` rejects (a process that exited: its pid may be reused).
    pub fn retain(&mut self, mut f: impl FnMut(&K) -> bool) {
        if !self.seen.is_empty() {
            self.seen.retain(|k, _| f(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_only() {
        let mut r = RecentSet::new(Duration::from_secs(3600));
        assert!(!r.is_repeat(1));
        assert!(r.is_repeat(1));
        assert!(!r.is_repeat(2));
        r.retain(|k| *k != 1);
        assert!(!r.is_repeat(1));
        let mut every = RecentSet::new(Duration::ZERO);
        assert!(!every.is_repeat(1));
        assert!(!every.is_repeat(1));
    }
}
