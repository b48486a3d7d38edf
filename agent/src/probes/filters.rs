//! The prefilter maps: filled at load from the watch rules and the environment lists, and the
//! entries added and removed at run time (homes, paths named by environments, Secret volumes,
//! files known to hold credentials), each refcounted by its owners.

use std::collections::BTreeSet;

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, LpmTrie, MapData, lpm_trie::Key},
};
use keytrail_common::{
    ENV_VALUE_PREFIX_MAX, EnvGates, FilterGates, KnownFile, MAX_BASENAME_PREFIX_LENS, PREFIX_MAX,
    SUFFIX_MAX, env_match, env_name_hash, env_word_hash, filter, names,
};

use super::{HOME_VAR, ProbeError, Probes, set_slot};
use crate::{credential::EnvNameRules, watch::KernelEntry};

impl Probes {
    /// Adds an exact absolute path to the kernel's exact-path trie (a path named by an
    /// environment variable): it passes opens of that very path only. Refcounted.
    pub fn add_exact(&mut self, path: &str) -> Result<(), ProbeError> {
        let b = path.as_bytes();
        if b.len() < 2 || b[0] != b'/' {
            return Ok(());
        }
        let refs = self.exact_paths.entry(path.to_string()).or_insert(0);
        *refs += 1;
        if *refs > 1 {
            return Ok(());
        }
        let name = names::FILTER_EXACT;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(ProbeError::MissingMap(name))?;
        let mut trie: LpmTrie<_, [u8; PREFIX_MAX], u32> =
            LpmTrie::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        let key = exact_key(b);
        trie.insert(&key, b.len() as u32, 0)
            .map_err(|source| ProbeError::Map { name, source })?;
        // A one-byte path (`/x`) has no second byte: any may follow.
        self.open_head_gate(b, filter::EXACT_PATH)
    }

    /// Opens the prefix-head gate for an absolute path's first bytes (any second byte for a
    /// one-byte path) and turns on filter `bit`: what an entry added at run time needs.
    fn open_head_gate(&mut self, b: &[u8], bit: u32) -> Result<(), ProbeError> {
        match b.get(2) {
            Some(&b2) => set_head_bit(&mut self.gates.prefix_head, b[1], b2),
            None => (0..=255u8).for_each(|b2| set_head_bit(&mut self.gates.prefix_head, b[1], b2)),
        }
        let gates = self.gates;
        set_slot(&mut self.ebpf, names::FILTER_GATES, gates)?;
        if self.kernel_config.filters & bit == 0 {
            self.kernel_config.filters |= bit;
            let config = self.kernel_config;
            set_slot(&mut self.ebpf, names::CONFIG, config)?;
        }
        Ok(())
    }

    /// Drops one reference to an exact path; its entry goes with the last.
    pub fn remove_exact(&mut self, path: &str) -> Result<(), ProbeError> {
        let Some(refs) = self.exact_paths.get_mut(path) else {
            return Ok(());
        };
        *refs -= 1;
        if *refs > 0 {
            return Ok(());
        }
        self.exact_paths.remove(path);
        let name = names::FILTER_EXACT;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(ProbeError::MissingMap(name))?;
        let mut trie: LpmTrie<_, [u8; PREFIX_MAX], u32> =
            LpmTrie::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        trie.remove(&exact_key(path.as_bytes()))
            .map_err(|source| ProbeError::Map { name, source })
    }

    /// Exact paths in the kernel's trie now.
    pub fn exact_paths(&self) -> usize {
        self.exact_paths.len()
    }

    /// Watches below a home found at run time: its kernel entries (absolute prefixes) join the
    /// prefilter, and its hash joins KNOWN_HOMES so execs with this `HOME` stay in the kernel.
    pub fn add_home(&mut self, home: &str, entries: &[KernelEntry]) -> Result<(), ProbeError> {
        self.known_home(home, true)?;
        for e in entries {
            if let KernelEntry::Prefix(p) = e {
                self.add_dynamic_prefix(p)?;
            }
        }
        Ok(())
    }

    /// Adds a reference to a prefix entry added at run time (below a home, a Secret volume's
    /// mount point); the entry is inserted with the first.
    pub fn add_dynamic_prefix(&mut self, p: &str) -> Result<(), ProbeError> {
        // An entry of the config is there for good: never counted, never removed.
        if self.static_prefixes.contains(p) {
            return Ok(());
        }
        let refs = self.dynamic_prefixes.entry(p.to_string()).or_insert(0);
        *refs += 1;
        if *refs == 1 {
            self.insert_prefix(p, filter::MATCH_ANYWHERE)?;
        }
        Ok(())
    }

    /// Drops a reference to a prefix entry added at run time; the entry goes with the last.
    pub fn remove_dynamic_prefix(&mut self, p: &str) -> Result<(), ProbeError> {
        let Some(refs) = self.dynamic_prefixes.get_mut(p) else {
            return Ok(());
        };
        *refs -= 1;
        if *refs > 0 {
            return Ok(());
        }
        self.dynamic_prefixes.remove(p);
        let name = names::FILTER_PREFIX;
        let mut trie = self.prefix_trie()?;
        let key = Key::new((p.len() * 8) as u32, padded::<PREFIX_MAX>(p.as_bytes()));
        trie.remove(&key)
            .map_err(|source| ProbeError::Map { name, source })
    }

    /// Adds a file found to hold credentials to KNOWN_FILES (`reset`: empty the map first,
    /// the agent's own set having been reset): opens of it by any other name are reported.
    /// `dev` is as stat(2) reports it.
    pub fn know_file(&mut self, ino: u64, dev: u64, reset: bool) -> Result<(), ProbeError> {
        let map_err = |name| move |source| ProbeError::Map { name, source };
        let (files, inos) = (names::KNOWN_FILES, names::KNOWN_INOS);
        if reset {
            let mut known: BpfHashMap<_, KnownFile, u8> = self.hash_map(files)?;
            for k in known.keys().flatten().collect::<Vec<_>>() {
                let _ = known.remove(&k);
            }
            let mut by_ino: BpfHashMap<_, u64, u32> = self.hash_map(inos)?;
            for k in by_ino.keys().flatten().collect::<Vec<_>>() {
                let _ = by_ino.remove(&k);
            }
            self.kernel_config.known_files = 0;
        }
        // The kernel's dev_t: major << 20 | minor.
        let key = KnownFile {
            ino,
            dev: (libc::major(dev) << 20) | libc::minor(dev),
            _reserved: 0,
        };
        let mut known: BpfHashMap<_, KnownFile, u8> = self.hash_map(files)?;
        if known.get(&key, 0).is_ok() {
            return Ok(());
        }
        known.insert(key, 1, 0).map_err(map_err(files))?;
        // Counted per inode number: files of other devices may share it.
        let mut by_ino: BpfHashMap<_, u64, u32> = self.hash_map(inos)?;
        let sharing = by_ino.get(&ino, 0).unwrap_or(0);
        by_ino.insert(ino, sharing + 1, 0).map_err(map_err(inos))?;
        self.kernel_config.known_files += 1;
        let config = self.kernel_config;
        set_slot(&mut self.ebpf, names::CONFIG, config)
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut MapData, K, V>, ProbeError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(ProbeError::MissingMap(name))?;
        BpfHashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })
    }

    /// Stops watching below a home that is gone.
    pub fn remove_home(&mut self, home: &str, entries: &[KernelEntry]) -> Result<(), ProbeError> {
        self.known_home(home, false)?;
        for e in entries {
            if let KernelEntry::Prefix(p) = e {
                self.remove_dynamic_prefix(p)?;
            }
        }
        Ok(())
    }

    fn known_home(&mut self, home: &str, known: bool) -> Result<(), ProbeError> {
        let name = names::KNOWN_HOMES;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(ProbeError::MissingMap(name))?;
        let mut homes: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        let key = keytrail_common::home_hash(home.as_bytes());
        if known {
            homes
                .insert(key, 1, 0)
                .map_err(|source| ProbeError::Map { name, source })
        } else {
            let _ = homes.remove(&key);
            Ok(())
        }
    }

    fn prefix_trie(&mut self) -> Result<LpmTrie<&mut MapData, [u8; PREFIX_MAX], u32>, ProbeError> {
        let name = names::FILTER_PREFIX;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(ProbeError::MissingMap(name))?;
        LpmTrie::try_from(map).map_err(|source| ProbeError::Map { name, source })
    }

    /// Inserts one prefix-trie entry and opens the gates it needs.
    fn insert_prefix(&mut self, p: &str, value: u32) -> Result<(), ProbeError> {
        let b = p.as_bytes();
        if b.len() < 3 || b[0] != b'/' {
            return Ok(());
        }
        let name = names::FILTER_PREFIX;
        let len = b.len().min(PREFIX_MAX);
        let key = Key::new((len * 8) as u32, padded::<PREFIX_MAX>(b));
        self.prefix_trie()?
            .insert(&key, value, 0)
            .map_err(|source| ProbeError::Map { name, source })?;
        self.open_head_gate(b, filter::PREFIX)
    }
}

/// What the prefilter needs in CONFIG besides the maps.
pub(super) struct FilterSettings {
    pub(super) bits: u32,
    pub(super) basename_prefix_lens: [u8; MAX_BASENAME_PREFIX_LENS],
    pub(super) gates: FilterGates,
}

/// (hash, `env_match` bits) pairs of one kernel list.
pub type HashedList = Vec<(u32, u32)>;

/// The kernel's environment lists: word and name hashes with their `env_match` bits.
pub fn env_hashes(rules: &EnvNameRules) -> (HashedList, HashedList) {
    use std::collections::BTreeMap;
    let mut words: BTreeMap<u32, u32> = BTreeMap::new();
    for w in &rules.secret_words {
        *words.entry(env_word_hash(w.as_bytes())).or_default() |= env_match::WORD_SECRET;
    }
    for w in &rules.except_words {
        let bit = if w.eq_ignore_ascii_case(crate::credential::FILE_WORD) {
            env_match::WORD_FILE
        } else {
            env_match::WORD_EXCLUDE
        };
        *words.entry(env_word_hash(w.as_bytes())).or_default() |= bit;
    }
    let mut names: BTreeMap<u32, u32> = BTreeMap::new();
    for n in &rules.secret_names {
        *names.entry(env_name_hash(n.as_bytes())).or_default() |= env_match::NAME_SECRET;
    }
    for n in &rules.file_names {
        *names.entry(env_name_hash(n.as_bytes())).or_default() |= env_match::NAME_FILE;
    }
    for n in &rules.plain_names {
        *names.entry(env_name_hash(n.as_bytes())).or_default() |= env_match::NAME_PLAIN;
    }
    *names.entry(env_name_hash(HOME_VAR.as_bytes())).or_default() |= env_match::NAME_HOME;
    (words.into_iter().collect(), names.into_iter().collect())
}

/// The gate bitmaps of the environment lists (see `EnvGates`).
pub fn env_gates(rules: &EnvNameRules, value_prefixes: &[&str]) -> EnvGates {
    fn set_len(set: &mut [u64; 32], s: &str) {
        if let Some(&first) = s.as_bytes().first() {
            set[((first | 0x20) & 31) as usize] |= 1 << s.len().min(63);
        }
    }
    let mut g = EnvGates::EMPTY;
    for w in rules.secret_words.iter().chain(&rules.except_words) {
        set_len(&mut g.word_len, w);
    }
    for n in rules
        .secret_names
        .iter()
        .chain(&rules.file_names)
        .chain(&rules.plain_names)
    {
        set_len(&mut g.name_len, n);
    }
    set_len(&mut g.name_len, HOME_VAR);
    for p in value_prefixes {
        let b = p.as_bytes();
        match (b.first(), b.get(1)) {
            (Some(&b1), Some(&b2)) => set_head_bit(&mut g.value_head, b1, b2),
            (Some(&b1), None) => (0..=255u8).for_each(|b2| set_head_bit(&mut g.value_head, b1, b2)),
            _ => {}
        }
    }
    g
}

fn set_head_bit(bits: &mut [u64; 1024], b1: u8, b2: u8) {
    let i = ((b1 as usize) << 8) | b2 as usize;
    bits[i >> 6] |= 1 << (i & 63);
}

/// Fills ENV_WORDS, ENV_NAMES, ENV_VALUE_PREFIX and ENV_GATES.
pub(super) fn fill_env_filters(
    ebpf: &mut Ebpf,
    rules: &EnvNameRules,
    value_prefixes: &[&str],
) -> Result<(), ProbeError> {
    let (words, names_list) = env_hashes(rules);
    for (name, list) in [(names::ENV_WORDS, &words), (names::ENV_NAMES, &names_list)] {
        let map = ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))?;
        let mut hashes: BpfHashMap<_, u32, u32> =
            BpfHashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        for (hash, bits) in list {
            hashes
                .insert(hash, bits, 0)
                .map_err(|source| ProbeError::Map { name, source })?;
        }
    }
    {
        let name = names::ENV_VALUE_PREFIX;
        let map = ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))?;
        let mut trie: LpmTrie<_, [u8; ENV_VALUE_PREFIX_MAX], u32> =
            LpmTrie::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        for p in value_prefixes {
            let b = &p.as_bytes()[..p.len().min(ENV_VALUE_PREFIX_MAX)];
            let key = Key::new((b.len() * 8) as u32, padded::<ENV_VALUE_PREFIX_MAX>(b));
            trie.insert(&key, env_match::VALUE_PREFIX, 0)
                .map_err(|source| ProbeError::Map { name, source })?;
        }
    }
    set_slot(ebpf, names::ENV_GATES, env_gates(rules, value_prefixes))
}

/// Fills the prefilter maps from the compiled entries.
pub(super) fn fill_filters(
    ebpf: &mut Ebpf,
    entries: &BTreeSet<KernelEntry>,
) -> Result<FilterSettings, ProbeError> {
    let plan = suffix_plan(entries).map_err(ProbeError::Filter)?;
    let mut bits = plan.bits;
    {
        let name = names::FILTER_SUFFIX;
        let map = ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))?;
        let mut trie: LpmTrie<_, [u8; SUFFIX_MAX], u32> =
            LpmTrie::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        for (bytes, value) in &plan.entries {
            let key = Key::new((bytes.len() * 8) as u32, padded::<SUFFIX_MAX>(bytes));
            trie.insert(&key, value, 0)
                .map_err(|source| ProbeError::Map { name, source })?;
        }
    }
    {
        let name = names::FILTER_PREFIX;
        let map = ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))?;
        let mut trie: LpmTrie<_, [u8; PREFIX_MAX], u32> =
            LpmTrie::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        for e in entries {
            if let KernelEntry::Prefix(p) = e {
                let key = Key::new((p.len() * 8) as u32, padded::<PREFIX_MAX>(p.as_bytes()));
                trie.insert(&key, filter::MATCH_ANYWHERE, 0)
                    .map_err(|source| ProbeError::Map { name, source })?;
                bits |= filter::PREFIX;
            }
        }
    }
    let gates = filter_gates(entries);
    set_slot(ebpf, names::FILTER_GATES, gates)?;
    Ok(FilterSettings {
        bits,
        basename_prefix_lens: plan.basename_prefix_lens,
        gates,
    })
}

/// The gate bitmaps: for every entry, the bytes a path must have for a lookup to find it.
pub fn filter_gates(entries: &BTreeSet<KernelEntry>) -> FilterGates {
    fn set(bits: &mut [u64; 4], b: u8) {
        bits[(b >> 6) as usize] |= 1 << (b & 63);
    }
    let set_head = set_head_bit;
    let mut g = FilterGates::EMPTY;
    for e in entries {
        match e {
            KernelEntry::Suffix(s) => set(&mut g.last_char, *s.as_bytes().last().unwrap_or(&0)),
            KernelEntry::Basename { name, .. } => {
                set(&mut g.last_char, *name.as_bytes().last().unwrap_or(&0))
            }
            KernelEntry::DirSuffix(d) => {
                // "/.ssh/": the byte before the final '/'.
                let b = d.as_bytes();
                set(&mut g.dir_last_char, b[b.len().saturating_sub(2)]);
            }
            KernelEntry::BasenamePrefix(p) => {
                set(&mut g.base_first_char, *p.as_bytes().first().unwrap_or(&0))
            }
            KernelEntry::Prefix(p) => {
                let b = p.as_bytes();
                match (b.get(1), b.get(2)) {
                    (Some(&b1), Some(&b2)) => set_head(&mut g.prefix_head, b1, b2),
                    // "/x": any second byte may follow.
                    (Some(&b1), None) => {
                        (0..=255u8).for_each(|b2| set_head(&mut g.prefix_head, b1, b2))
                    }
                    _ => g.prefix_head = [u64::MAX; 1024],
                }
            }
        }
    }
    g
}

/// The suffix trie's content: reversed keys with their `filter::MATCH_*` values.
#[derive(Debug, Default, PartialEq)]
pub struct SuffixPlan {
    pub entries: std::collections::BTreeMap<Vec<u8>, u32>,
    pub bits: u32,
    pub basename_prefix_lens: [u8; MAX_BASENAME_PREFIX_LENS],
}

/// Lays the suffix-like entries out in the reversed-path trie. An LPM lookup returns only the
/// longest match, so each key also carries the match flags of every shorter key it contains:
/// a relative-only `/id.pem` must not hide `.pem`, which matches everywhere.
pub fn suffix_plan(entries: &BTreeSet<KernelEntry>) -> Result<SuffixPlan, String> {
    let mut plan = SuffixPlan::default();
    let mut lens: BTreeSet<usize> = BTreeSet::new();
    for e in entries {
        let (forward, value, bit) = match e {
            KernelEntry::Suffix(s) => (s.clone(), filter::MATCH_ANYWHERE, filter::SUFFIX),
            KernelEntry::Basename {
                name,
                relative_only,
            } => (
                format!("/{name}"),
                if *relative_only {
                    filter::MATCH_RELATIVE
                } else {
                    filter::MATCH_ANYWHERE
                },
                filter::SUFFIX,
            ),
            KernelEntry::DirSuffix(d) => (d.clone(), filter::MATCH_ANYWHERE, filter::DIR_SUFFIX),
            KernelEntry::BasenamePrefix(p) => {
                lens.insert(p.len());
                (
                    format!("/{p}"),
                    filter::MATCH_ANYWHERE,
                    filter::BASENAME_PREFIX,
                )
            }
            KernelEntry::Prefix(_) => continue,
        };
        let reversed: Vec<u8> = forward.bytes().rev().collect();
        *plan.entries.entry(reversed).or_default() |= value;
        plan.bits |= bit;
    }
    let keys: Vec<Vec<u8>> = plan.entries.keys().cloned().collect();
    for longer in &keys {
        let inherited = keys
            .iter()
            .filter(|k| k.len() < longer.len() && longer.starts_with(k))
            .fold(0, |acc, k| acc | plan.entries[k]);
        *plan.entries.get_mut(longer).expect("key from the map") |= inherited;
    }
    if lens.len() > MAX_BASENAME_PREFIX_LENS {
        return Err(format!(
            "basename prefixes of {} different lengths; the kernel filter handles {}",
            lens.len(),
            MAX_BASENAME_PREFIX_LENS
        ));
    }
    // Longest first: the kernel looks them up at growing offsets.
    for (slot, len) in lens.iter().rev().enumerate() {
        plan.basename_prefix_lens[slot] = *len as u8;
    }
    Ok(plan)
}

/// The FILTER_EXACT key of a path: its first PREFIX_MAX bytes (the value holds the full length).
fn exact_key(b: &[u8]) -> Key<[u8; PREFIX_MAX]> {
    let len = b.len().min(PREFIX_MAX);
    Key::new((len * 8) as u32, padded::<PREFIX_MAX>(b))
}

fn padded<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = bytes.len().min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_keys_inherit_the_flags_of_keys_they_contain() {
        let entries: BTreeSet<KernelEntry> = [
            KernelEntry::Suffix(".pem".into()),
            KernelEntry::Basename {
                name: "id.pem".into(),
                relative_only: true,
            },
            KernelEntry::BasenamePrefix(".env.".into()),
            KernelEntry::DirSuffix("/.ssh/".into()),
            KernelEntry::Prefix("/var/run/secrets/".into()),
        ]
        .into_iter()
        .collect();
        let plan = suffix_plan(&entries).unwrap();
        assert_eq!(plan.entries[b"mep.".as_slice()], filter::MATCH_ANYWHERE);
        assert_eq!(
            plan.entries[b"mep.di/".as_slice()],
            filter::MATCH_ANYWHERE | filter::MATCH_RELATIVE
        );
        assert_eq!(plan.entries[b".vne./".as_slice()], filter::MATCH_ANYWHERE);
        assert_eq!(plan.entries[b"/hss./".as_slice()], filter::MATCH_ANYWHERE);
        assert_eq!(plan.entries.len(), 4);
        assert_eq!(
            plan.bits,
            filter::SUFFIX | filter::DIR_SUFFIX | filter::BASENAME_PREFIX
        );
        assert_eq!(plan.basename_prefix_lens, [5, 0, 0, 0]);
    }

    #[test]
    fn gates_pass_every_default_entry_and_few_common_paths() {
        use keytrail_common::{bit_head, bit256};
        let config = crate::config::Config::embedded();
        let rules = crate::watch::WatchRules::compile(&config.watch.paths).unwrap();
        let g = filter_gates(&rules.kernel);
        for e in &rules.kernel {
            let ok = match e {
                KernelEntry::Suffix(s) => bit256(&g.last_char, *s.as_bytes().last().unwrap()),
                KernelEntry::Basename { name, .. } => {
                    bit256(&g.last_char, *name.as_bytes().last().unwrap())
                }
                KernelEntry::DirSuffix(d) => bit256(&g.dir_last_char, d.as_bytes()[d.len() - 2]),
                KernelEntry::BasenamePrefix(p) => bit256(&g.base_first_char, p.as_bytes()[0]),
                KernelEntry::Prefix(p) => {
                    bit_head(&g.prefix_head, p.as_bytes()[1], p.as_bytes()[2])
                }
            };
            assert!(ok, "{e:?} is gated out");
        }
        // The hot paths of a typical node skip the prefix lookup entirely.
        for hot in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/proc/self/stat",
            "/sys/fs/x",
        ] {
            let b = hot.as_bytes();
            assert!(!bit_head(&g.prefix_head, b[1], b[2]), "{hot}");
        }
    }

    #[test]
    fn env_hashes_are_case_blind_and_built_from_words() {
        use keytrail_common::{ENV_HASH_INIT, env_fold};
        assert_eq!(env_word_hash(b"token"), env_word_hash(b"TOKEN"));
        assert_eq!(
            env_name_hash(b"GITHUB_TOKEN"),
            env_fold(
                env_fold(ENV_HASH_INIT, env_word_hash(b"github")),
                env_word_hash(b"token")
            )
        );
        // Empty words do not count, as in the kernel's scan.
        assert_eq!(
            env_name_hash(b"_GITHUB__TOKEN_"),
            env_name_hash(b"github_token")
        );
        assert_ne!(
            env_name_hash(b"TOKEN_GITHUB"),
            env_name_hash(b"GITHUB_TOKEN")
        );
        let (words, names) = env_hashes(&EnvNameRules::default());
        let word = |w: &str| {
            words
                .iter()
                .find(|(h, _)| *h == env_word_hash(w.as_bytes()))
        };
        assert_eq!(word("Token").map(|w| w.1), Some(env_match::WORD_SECRET));
        assert_eq!(word("file").map(|w| w.1), Some(env_match::WORD_FILE));
        let name = |n: &str| {
            names
                .iter()
                .find(|(h, _)| *h == env_name_hash(n.as_bytes()))
        };
        assert!(name("kubeconfig").is_some_and(|n| n.1 & env_match::NAME_FILE != 0));
        assert!(name("PWD").is_some_and(|n| n.1 & env_match::NAME_PLAIN != 0));
        let g = env_gates(&EnvNameRules::default(), &["AKIA", "ghp_"]);
        assert!(keytrail_common::len_gate(&g.word_len, b't', 5));
        assert!(!keytrail_common::len_gate(&g.word_len, b't', 4));
        assert!(keytrail_common::bit_head(&g.value_head, b'A', b'K'));
        assert!(!keytrail_common::bit_head(&g.value_head, b'/', b'u'));
    }

    #[test]
    fn too_many_prefix_lengths_are_refused() {
        let entries: BTreeSet<KernelEntry> = ["ab", "abc", "abcd", "abcde", "abcdef"]
            .iter()
            .map(|p| KernelEntry::BasenamePrefix((*p).into()))
            .collect();
        assert!(suffix_plan(&entries).is_err());
    }
}
