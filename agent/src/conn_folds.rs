//! Repeated connections the kernel folded: after the agent names a connection by its first
//! payload, it hands the kernel a signature (where the name sits, its hash) for that process
//! and destination; later connections that carry the same name there are only counted in the
//! kernel. This keeps those signatures and credits the counts to the uses they belong to, each
//! folded connection counting as the one that was named. A repeat's connect record waits in
//! the kernel for its first payload; one that waits for long is taken here and reported.

use std::{num::NonZeroUsize, time::Duration};

use aya::maps::{HashMap as BpfHashMap, MapData};
use keytrail_common::{ConnFold, ConnFoldKey, NetConnect};

use crate::record::Record;

/// Signatures kept at most (the kernel maps hold as many).
const MAX_SIGNATURES: usize = 16_384;

/// A connect record the kernel holds longer than this (a connection silent since connect) is
/// taken and reported without waiting for its first payload.
pub const HELD_AT_MOST: Duration = Duration::from_secs(2);

pub struct ConnFolds {
    signatures: BpfHashMap<MapData, ConnFoldKey, ConnFold>,
    counts: BpfHashMap<MapData, ConnFoldKey, u64>,
    /// Socket cookie -> connect record the kernel holds.
    pending: BpfHashMap<MapData, u64, NetConnect>,
    /// Per signature: the connection record that named it, and the kernel's count already
    /// credited.
    named: lru::LruCache<ConnFoldKey, (Record, u64)>,
}

impl ConnFolds {
    pub fn new(
        signatures: BpfHashMap<MapData, ConnFoldKey, ConnFold>,
        counts: BpfHashMap<MapData, ConnFoldKey, u64>,
        pending: BpfHashMap<MapData, u64, NetConnect>,
    ) -> Self {
        Self {
            signatures,
            counts,
            pending,
            named: lru::LruCache::new(NonZeroUsize::new(MAX_SIGNATURES).expect("nonzero")),
        }
    }

    /// Lets the kernel fold repeats of the connection `record` describes. Returns what the
    /// signature it replaces (the same process and destination under another name) folded and
    /// was not credited yet, with the record it counts as.
    pub fn install(
        &mut self,
        key: ConnFoldKey,
        fold: ConnFold,
        record: Record,
    ) -> Vec<(Record, u64)> {
        let n = self.kernel_count(&key);
        let mut uncredited = Vec::new();
        if let Some((old, credited)) = self.named.pop(&key)
            && n > credited
        {
            uncredited.push((old, n - credited));
        }
        if self.signatures.insert(key, fold, 0).is_err() {
            return uncredited;
        }
        if let Some((gone, (old, credited))) = self.named.push(key, (record, n))
            && gone != key
        {
            let left = self.kernel_count(&gone);
            if left > credited {
                uncredited.push((old, left - credited));
            }
            let _ = self.signatures.remove(&gone);
            let _ = self.counts.remove(&gone);
        }
        uncredited
    }

    /// Connections folded since the last call, with the record each counts as.
    pub fn take_new(&mut self) -> Vec<(Record, u64)> {
        let counts: Vec<(ConnFoldKey, u64)> = self
            .named
            .iter()
            .map(|(k, _)| (*k, self.kernel_count(k)))
            .collect();
        let mut out = Vec::new();
        for (key, n) in counts {
            if let Some((record, credited)) = self.named.peek_mut(&key)
                && n > *credited
            {
                out.push((record.clone(), n - *credited));
                *credited = n;
            }
        }
        out
    }

    /// A process exited: its signatures go (its pid may be reused). Returns what it had folded
    /// since the last credit.
    pub fn forget_process(&mut self, tgid: u32) -> Vec<(Record, u64)> {
        let keys: Vec<ConnFoldKey> = self
            .named
            .iter()
            .filter(|(k, _)| k.tgid == tgid)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for key in keys {
            let n = self.kernel_count(&key);
            if let Some((record, credited)) = self.named.pop(&key)
                && n > credited
            {
                out.push((record, n - credited));
            }
            let _ = self.signatures.remove(&key);
            let _ = self.counts.remove(&key);
        }
        out
    }

    /// Connect records the kernel has held for longer than [`HELD_AT_MOST`] at `now_ns`
    /// (CLOCK_BOOTTIME), taken out of its map. One the kernel takes meanwhile (its payload came)
    /// stays the kernel's to send.
    pub fn take_held(&mut self, now_ns: u64) -> Vec<NetConnect> {
        let limit = HELD_AT_MOST.as_nanos() as u64;
        let stale: Vec<(u64, NetConnect)> = self
            .pending
            .iter()
            .flatten()
            .filter(|(_, c)| now_ns.saturating_sub(c.header.time_ns) > limit)
            .collect();
        stale
            .into_iter()
            .filter(|(cookie, _)| self.pending.remove(cookie).is_ok())
            .map(|(_, c)| c)
            .collect()
    }

    fn kernel_count(&self, key: &ConnFoldKey) -> u64 {
        self.counts.get(key, 0).unwrap_or(0)
    }
}
