//! Loading and attaching the kernel programs: privilege and tracefs checks, the prefilter maps
//! filled from the watch rules, one attach per program (a failure is reported and the rest keep
//! running), and the counters read back for agent stats.

use std::{collections::BTreeSet, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, SockOps, TracePoint,
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};
use keytrail_common::{
    ENV_VALUE_PREFIX_MAX, EnvGates, FilterGates, KernelConfig, MAX_BASENAME_PREFIX_LENS,
    PREFIX_MAX, ProbeCounters, ProbeId, SUFFIX_MAX, env_match, env_name_hash, env_word_hash,
    filter, names,
};

use crate::{
    credential::EnvNameRules,
    libc::{Library, ResolvedLibrary},
    watch::KernelEntry,
};

/// The kernel object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keytrail"));

/// One program and the tracepoint it attaches to.
#[derive(Debug, Clone, Copy)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub category: &'static str,
    pub tracepoint: &'static str,
}

const fn tp(name: &'static str, category: &'static str, tracepoint: &'static str) -> ProgramSpec {
    ProgramSpec {
        name,
        category,
        tracepoint,
    }
}

/// The agent's programs. Lifecycle first, so the exec of a process is known before its opens.
pub const AGENT_PROGRAMS: &[ProgramSpec] = &[
    tp("proc_exec", "sched", "sched_process_exec"),
    tp("proc_exit", "sched", "sched_process_exit"),
    tp("file_exit_openat", "syscalls", "sys_exit_openat"),
    tp("file_exit_openat2", "syscalls", "sys_exit_openat2"),
    tp("file_exit_open", "syscalls", "sys_exit_open"),
    tp("file_enter_openat", "syscalls", "sys_enter_openat"),
    tp("file_enter_openat2", "syscalls", "sys_enter_openat2"),
    tp("file_enter_open", "syscalls", "sys_enter_open"),
    tp("exec_env_execve", "syscalls", "sys_enter_execve"),
    tp("exec_env_execveat", "syscalls", "sys_enter_execveat"),
    tp("cgroup_mkdir", "cgroup", "cgroup_mkdir"),
    tp("cgroup_rmdir", "cgroup", "cgroup_rmdir"),
];

/// The connection programs, attached at the cgroup2 root.
pub const NET_CONNECT4: &str = "net_connect4";
pub const NET_CONNECT6: &str = "net_connect6";
pub const NET_STATE: &str = "net_state";
pub const NET_PAYLOAD: &str = "net_payload";

/// The uprobe program for SSL_write and SSL_write_ex; attached per libssl file.
pub const TLS_WRITE_PROGRAM: &str = "tls_write";
/// The libssl functions it attaches to.
pub const TLS_WRITE_SYMBOLS: &[&str] = &["SSL_write", "SSL_write_ex"];
/// The uprobe program that forgets an SSL object at SSL_free/SSL_clear, and its symbols.
pub const TLS_FREE_PROGRAM: &str = "tls_free";
pub const TLS_FREE_SYMBOLS: &[&str] = &["SSL_free", "SSL_clear"];

/// The variable naming a process's home directory: its value leaves the kernel once per new
/// home, so homes anywhere (service users, CI jobs) are watched.
pub const HOME_VAR: &str = "HOME";

/// The uprobe program for getenv and secure_getenv; attached per libc file as libcs are found.
pub const GETENV_PROGRAM: &str = "getenv_enter";
/// The libc functions it attaches to (glibc and musl both export both).
pub const GETENV_SYMBOLS: &[&str] = &["getenv", "secure_getenv"];

/// Empty programs on the exec tracepoints.
pub const FLOOR_EXEC_PROGRAMS: &[ProgramSpec] = &[
    tp("floor_enter_execve", "syscalls", "sys_enter_execve"),
    tp("floor_enter_execveat", "syscalls", "sys_enter_execveat"),
];

/// The empty uprobe for getenv/secure_getenv.
pub const FLOOR_GETENV_PROGRAM: &str = "floor_getenv";

/// Empty programs on the file-open tracepoints: the cost floor for benchmarks.
pub const FLOOR_PROGRAMS: &[ProgramSpec] = &[
    tp("floor_enter_openat", "syscalls", "sys_enter_openat"),
    tp("floor_exit_openat", "syscalls", "sys_exit_openat"),
    tp("floor_enter_openat2", "syscalls", "sys_enter_openat2"),
    tp("floor_exit_openat2", "syscalls", "sys_exit_openat2"),
    tp("floor_enter_open", "syscalls", "sys_enter_open"),
    tp("floor_exit_open", "syscalls", "sys_exit_open"),
];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "missing privileges: {missing} (run as root, or grant CAP_BPF, CAP_PERFMON and \
         CAP_SYS_ADMIN)"
    )]
    Privileges { missing: String },
    #[error("tracefs is not mounted and mounting it on /sys/kernel/tracing failed: {0}")]
    Tracefs(#[source] std::io::Error),
    #[error("loading the kernel object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("kernel map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("kernel map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("kernel program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("uprobe: {0}")]
    Uprobe(String),
    #[error("watch rules do not fit the kernel filter: {0}")]
    Filter(String),
    #[error("no program could be attached; failures: {0}")]
    NothingAttached(String),
}

/// A program that could not be loaded or attached.
#[derive(Debug, Clone)]
pub struct AttachFailure {
    pub program: &'static str,
    pub error: String,
}

/// Loaded programs; dropping this detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    pub attached: Vec<&'static str>,
    pub failed: Vec<AttachFailure>,
    /// Libc files whose getenv/secure_getenv carry the uprobe.
    pub getenv_libraries: u64,
    /// Libc files where attaching failed.
    pub getenv_attach_failed: u64,
    /// libssl files whose SSL_write/SSL_write_ex carry the uprobe, and failures.
    pub tls_libraries: u64,
    pub tls_attach_failed: u64,
    /// Filter bits in CONFIG, kept to extend them at run time.
    kernel_config: KernelConfig,
    gates: FilterGates,
    /// Prefix entries added at run time (below homes), with how many homes need each.
    dynamic_prefixes: std::collections::HashMap<String, usize>,
    /// Exact paths in FILTER_EXACT, with how many owners each has.
    exact_paths: std::collections::HashMap<String, usize>,
    /// Prefix entries of the config.
    static_prefixes: std::collections::HashSet<String>,
}

/// What the agent's kernel programs are loaded with, besides the filter lists.
#[derive(Debug, Clone)]
pub struct KernelSettings {
    pub getenv_probe: bool,
    pub ring_buffer_bytes: u32,
    /// Repeats of an open within this window are folded in the kernel.
    pub fold_window: Duration,
    /// Per-cgroup, per-family record budget (0: none).
    pub budget_per_sec: u32,
    pub budget_burst: u32,
}

/// Kernel-side cost of one program (needs `kernel.bpf_stats_enabled=1`).
#[derive(Debug, Clone)]
pub struct ProgramCost {
    pub program: &'static str,
    pub run_time: Duration,
    pub run_count: u64,
}

/// Checks the effective capabilities needed to load and attach.
pub fn check_privileges() -> Result<(), ProbeError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    // CAP_SYS_ADMIN alone also grants BPF and perf on every kernel.
    if !has(CAP_SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN (mount tracefs, attach to the cgroup root)");
        if !has(CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ProbeError::Privileges {
            missing: missing.join(", "),
        })
    }
}

/// Tracepoint attach reads ids from tracefs, which many hosts do not mount at boot.
pub fn ensure_tracefs() -> Result<(), ProbeError> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if std::path::Path::new(dir).join("events").is_dir() {
            return Ok(());
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: constant NUL-terminated strings; no data pointer for tracefs.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ProbeError::Tracefs(std::io::Error::last_os_error()));
    }
    tracing::info!("mounted tracefs on /sys/kernel/tracing");
    Ok(())
}

impl Probes {
    /// Loads the object, fills the prefilter from `entries`, and attaches the agent's programs.
    pub fn load_agent(
        entries: &BTreeSet<KernelEntry>,
        env: &EnvNameRules,
        settings: &KernelSettings,
    ) -> Result<Self, ProbeError> {
        let mut ebpf = load_object(settings.ring_buffer_bytes)?;
        let filters = fill_filters(&mut ebpf, entries)?;
        fill_env_filters(&mut ebpf, env, &crate::credential::value_prefixes())?;
        set_slot(&mut ebpf, names::OFFSETS, kernel_offsets())?;
        let kernel_config = KernelConfig {
            agent_tgid: std::process::id(),
            filters: filters.bits,
            basename_prefix_lens: filters.basename_prefix_lens,
            known_files: 0,
            fold_window_ns: settings.fold_window.as_nanos().min(u64::MAX as u128) as u64,
            budget_per_sec: settings.budget_per_sec,
            budget_burst: settings.budget_burst,
        };
        set_slot(&mut ebpf, names::CONFIG, kernel_config)?;
        let mut probes = Self::attach_all(ebpf, AGENT_PROGRAMS)?;
        probes.kernel_config = kernel_config;
        probes.gates = filters.gates;
        probes.static_prefixes = entries
            .iter()
            .filter_map(|e| match e {
                KernelEntry::Prefix(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        if settings.getenv_probe {
            probes.load_getenv();
        }
        Ok(probes)
    }

    /// Per-cgroup budget counters: every (cgroup, family) whose bucket the kernel keeps.
    pub fn budgets(&self) -> Vec<(keytrail_common::BudgetKey, keytrail_common::Budget)> {
        let Some(map) = self.ebpf.map(names::BUDGETS) else {
            return Vec::new();
        };
        let Ok(budgets) =
            BpfHashMap::<_, keytrail_common::BudgetKey, keytrail_common::Budget>::try_from(map)
        else {
            return Vec::new();
        };
        budgets.iter().flatten().collect()
    }

    /// Loads the getenv uprobe program; it is attached per libc by [`Probes::attach_getenv`].
    fn load_getenv(&mut self) {
        self.load_uprobe(GETENV_PROGRAM);
    }

    /// Loads a uprobe program (attached per library later) and records the outcome.
    fn load_uprobe(&mut self, name: &'static str) {
        let result = (|| -> Result<(), String> {
            let program: &mut UProbe = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| "program missing from the kernel object".to_string())?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            program
                .load()
                .map_err(|e| format!("load: {}", verifier_summary(&e.to_string())))
        })();
        self.record(name, result);
    }

    fn record(&mut self, program: &'static str, result: Result<(), String>) {
        match result {
            Ok(()) => self.attached.push(program),
            Err(error) => {
                tracing::warn!(program, %error, "probe not attached; the others keep running");
                self.failed.push(AttachFailure { program, error });
            }
        }
    }

    /// Whether the getenv program is loaded (so libcs should be looked for).
    pub fn getenv_loaded(&self) -> bool {
        self.attached.contains(&GETENV_PROGRAM)
    }

    /// Whether the SSL_write program is loaded (so libssls should be looked for).
    pub fn tls_write_loaded(&self) -> bool {
        self.attached.contains(&TLS_WRITE_PROGRAM)
    }

    /// Attaches the connection programs at the cgroup2 root (every workload below it) and
    /// loads the SSL_write uprobe. Each failure is reported and the rest keep running.
    pub fn load_network(&mut self, cgroup_root: Option<&std::path::Path>, tls_write: bool) {
        let Some(root) = cgroup_root else {
            for p in [NET_CONNECT4, NET_CONNECT6, NET_STATE, NET_PAYLOAD] {
                self.record(p, Err("no cgroup2 mount found".into()));
            }
            return;
        };
        let dir = match std::fs::File::open(root) {
            Ok(d) => d,
            Err(e) => {
                for p in [NET_CONNECT4, NET_CONNECT6, NET_STATE, NET_PAYLOAD] {
                    self.record(p, Err(format!("opening {}: {e}", root.display())));
                }
                return;
            }
        };
        // Links always coexist with other programs on the cgroup (the kernel rejects attach
        // flags on link creation), so the default mode is the right one here.
        let mode = CgroupAttachMode::Single;
        for name in [NET_CONNECT4, NET_CONNECT6] {
            let r = self.with_program(name, |p: &mut CgroupSockAddr| {
                p.load()?;
                p.attach(&dir, mode).map(|_| ())
            });
            self.record(name, r);
        }
        let r = self.with_program(NET_STATE, |p: &mut SockOps| {
            p.load()?;
            p.attach(&dir, mode).map(|_| ())
        });
        self.record(NET_STATE, r);
        let r = self.with_program(NET_PAYLOAD, |p: &mut CgroupSkb| {
            p.load()?;
            p.attach(&dir, CgroupSkbAttachType::Egress, mode)
                .map(|_| ())
        });
        self.record(NET_PAYLOAD, r);
        if tls_write {
            self.load_uprobe(TLS_WRITE_PROGRAM);
            self.load_uprobe(TLS_FREE_PROGRAM);
        }
    }

    /// Runs `f` on program `name` as its concrete type; errors become text.
    fn with_program<P>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut P) -> Result<(), aya::programs::ProgramError>,
    ) -> Result<(), String>
    where
        for<'a> &'a mut P:
            TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| "program missing from the kernel object".to_string())?;
        let p: &mut P = program
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        f(p).map_err(|e| verifier_summary(&with_sources(&e)))
    }

    /// Attaches the SSL_write uprobe to SSL_write and SSL_write_ex of a libssl.
    pub fn attach_tls_write(&mut self, lib: &ResolvedLibrary) -> Result<usize, String> {
        // Not a libssl after all (a workload's file by that name): one failure, one warning.
        if TLS_WRITE_SYMBOLS.iter().all(|s| lib.offset(s).is_none()) {
            self.tls_attach_failed += 1;
            return Err(format!(
                "{} not defined in the library",
                TLS_WRITE_SYMBOLS.join(" and ")
            ));
        }
        // Without the free hook a reused SSL address would hide later connections' writes.
        if self.attached.contains(&TLS_FREE_PROGRAM)
            && let Err(e) = self.attach_symbols(TLS_FREE_PROGRAM, TLS_FREE_SYMBOLS, lib)
        {
            tracing::warn!(library = %lib.found_at, error = %e, "SSL_free/SSL_clear not probed: later connections reusing an SSL object's address are not inspected");
        }
        let r = self.attach_symbols(TLS_WRITE_PROGRAM, TLS_WRITE_SYMBOLS, lib);
        match r {
            Ok(_) => self.tls_libraries += 1,
            Err(_) => self.tls_attach_failed += 1,
        }
        r
    }

    /// Attaches a loaded uprobe program to each of `symbols` of a library, at the file offsets
    /// read from it (aya never looks at the file: resolving a symbol itself, it would follow the
    /// file's debuglink to whatever path it names). Succeeds when at least one attached.
    fn attach_symbols(
        &mut self,
        program: &str,
        symbols: &[&str],
        lib: &ResolvedLibrary,
    ) -> Result<usize, String> {
        let p: &mut UProbe = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| "program missing".to_string())?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        let path = lib.attach_path();
        let mut attached = 0;
        let mut errors = Vec::new();
        for symbol in symbols {
            let Some(offset) = lib.offset(symbol) else {
                errors.push(format!("{symbol}: not defined in the library"));
                continue;
            };
            match p.attach(
                UProbeAttachLocation::AbsoluteOffset(offset),
                &path,
                UProbeScope::AllProcesses,
            ) {
                Ok(_) => attached += 1,
                Err(e) => errors.push(format!("{symbol}: {}", with_sources(&e))),
            }
        }
        if attached == 0 {
            return Err(errors.join("; "));
        }
        Ok(attached)
    }

    /// Counts a library whose symbols could not be read as one its probe failed on.
    pub fn count_unreadable(&mut self, library: Library) {
        match library {
            Library::Libc => self.getenv_attach_failed += 1,
            Library::Libssl => self.tls_attach_failed += 1,
        }
    }

    /// Stops awaiting payload on a connection (its handshake was found).
    pub fn forget_connection(&mut self, cookie: u64) {
        if let Some(map) = self.ebpf.map_mut(names::AWAITING_PAYLOAD)
            && let Ok(mut m) = BpfHashMap::<_, u64, u32>::try_from(map)
        {
            let _ = m.remove(&cookie);
        }
    }

    /// Attaches the getenv uprobe to getenv and secure_getenv of a libc (the kernel keys
    /// uprobes on the inode, so one attach covers every process mapping that file). Returns the
    /// symbols attached.
    pub fn attach_getenv(&mut self, lib: &ResolvedLibrary) -> Result<usize, String> {
        let r = self.attach_symbols(GETENV_PROGRAM, GETENV_SYMBOLS, lib);
        match r {
            Ok(_) => self.getenv_libraries += 1,
            Err(_) => self.getenv_attach_failed += 1,
        }
        r
    }

    /// Forgets getenv de-duplication keys (`(tgid << 32) | name hash`) of an exited process.
    pub fn forget_getenv(&mut self, keys: &[u64]) {
        let Some(map) = self.ebpf.map_mut(names::GETENV_SEEN) else {
            return;
        };
        let Ok(mut seen) = BpfHashMap::<_, u64, u64>::try_from(map) else {
            return;
        };
        for key in keys {
            let _ = seen.remove(key);
        }
    }

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
        match b.get(2) {
            Some(&b2) => set_head_bit(&mut self.gates.prefix_head, b[1], b2),
            None => (0..=255u8).for_each(|b2| set_head_bit(&mut self.gates.prefix_head, b[1], b2)),
        }
        let gates = self.gates;
        set_slot(&mut self.ebpf, names::FILTER_GATES, gates)?;
        if self.kernel_config.filters & filter::EXACT_PATH == 0 {
            self.kernel_config.filters |= filter::EXACT_PATH;
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
        let name = names::KNOWN_FILES;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(ProbeError::MissingMap(name))?;
        let mut known: BpfHashMap<_, u64, u32> =
            BpfHashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        if reset {
            let keys: Vec<u64> = known.keys().flatten().collect();
            for k in keys {
                let _ = known.remove(&k);
            }
            self.kernel_config.known_files = 0;
        }
        // The kernel's dev_t: major << 20 | minor.
        let kdev = (libc::major(dev) << 20) | libc::minor(dev);
        known
            .insert(ino, kdev, 0)
            .map_err(|source| ProbeError::Map { name, source })?;
        self.kernel_config.known_files += 1;
        let config = self.kernel_config;
        set_slot(&mut self.ebpf, names::CONFIG, config)
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
        set_head_bit(&mut self.gates.prefix_head, b[1], b[2]);
        let gates = self.gates;
        set_slot(&mut self.ebpf, names::FILTER_GATES, gates)?;
        if self.kernel_config.filters & filter::PREFIX == 0 {
            self.kernel_config.filters |= filter::PREFIX;
            let config = self.kernel_config;
            set_slot(&mut self.ebpf, names::CONFIG, config)?;
        }
        Ok(())
    }

    /// Loads the object and attaches only the empty floor programs of `family` (`open`,
    /// `exec`; `getenv` loads the empty uprobe, attached with [`Probes::attach_uprobe`]).
    pub fn load_floor(family: &str) -> Result<Self, ProbeError> {
        let mut ebpf = load_object(64 * 1024)?;
        match family {
            "exec" => Self::attach_all(ebpf, FLOOR_EXEC_PROGRAMS),
            "getenv" => {
                let program: &mut UProbe = ebpf
                    .program_mut(FLOOR_GETENV_PROGRAM)
                    .ok_or(ProbeError::MissingProgram(FLOOR_GETENV_PROGRAM))?
                    .try_into()
                    .map_err(|e| ProbeError::Uprobe(format!("{e}")))?;
                program
                    .load()
                    .map_err(|e| ProbeError::Uprobe(format!("{e}")))?;
                let mut probes = Self::attach_all(ebpf, &[])?;
                probes.attached.push(FLOOR_GETENV_PROGRAM);
                Ok(probes)
            }
            _ => Self::attach_all(ebpf, FLOOR_PROGRAMS),
        }
    }

    /// Attaches a loaded uprobe program to getenv and secure_getenv of a libc.
    pub fn attach_uprobe(
        &mut self,
        program: &'static str,
        lib: &ResolvedLibrary,
    ) -> Result<(), ProbeError> {
        let p: &mut UProbe = self
            .ebpf
            .program_mut(program)
            .ok_or(ProbeError::MissingProgram(program))?
            .try_into()
            .map_err(|e| ProbeError::Uprobe(format!("{e}")))?;
        for symbol in GETENV_SYMBOLS {
            let offset = lib.offset(symbol).ok_or_else(|| {
                ProbeError::Uprobe(format!("{program} on {symbol}: not defined in the library"))
            })?;
            p.attach(
                UProbeAttachLocation::AbsoluteOffset(offset),
                lib.attach_path(),
                UProbeScope::AllProcesses,
            )
            .map_err(|e| ProbeError::Uprobe(format!("{program} on {symbol}: {e}")))?;
        }
        Ok(())
    }

    fn attach_all(mut ebpf: Ebpf, specs: &[ProgramSpec]) -> Result<Self, ProbeError> {
        let mut attached = Vec::new();
        let mut failed = Vec::new();
        for spec in specs {
            match attach(&mut ebpf, spec) {
                Ok(()) => attached.push(spec.name),
                Err(error) => {
                    tracing::warn!(
                        program = spec.name,
                        tracepoint = format!("{}/{}", spec.category, spec.tracepoint),
                        %error,
                        "probe not attached; the others keep running"
                    );
                    failed.push(AttachFailure {
                        program: spec.name,
                        error,
                    });
                }
            }
        }
        if attached.is_empty() && !specs.is_empty() {
            let all = failed
                .iter()
                .map(|f| format!("{}: {}", f.program, f.error))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ProbeError::NothingAttached(all));
        }
        Ok(Self {
            ebpf,
            attached,
            failed,
            getenv_libraries: 0,
            getenv_attach_failed: 0,
            tls_libraries: 0,
            tls_attach_failed: 0,
            kernel_config: KernelConfig::default(),
            gates: FilterGates::EMPTY,
            dynamic_prefixes: std::collections::HashMap::new(),
            exact_paths: std::collections::HashMap::new(),
            static_prefixes: std::collections::HashSet::new(),
        })
    }

    /// Takes the ring buffer for the reader task.
    pub fn take_rings(&mut self) -> Result<crate::events::Rings, ProbeError> {
        Ok(crate::events::Rings {
            events: self.take_ring(names::EVENTS)?,
            lifecycle: self.take_ring(names::LIFECYCLE)?,
        })
    }

    fn take_ring(&mut self, name: &'static str) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(ProbeError::MissingMap(name))?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map { name, source })
    }

    /// Seen/dropped per probe, summed over CPUs.
    pub fn counters(&self) -> Vec<(ProbeId, ProbeCounters)> {
        let Some(map) = self.ebpf.map(names::PROBE_STATS) else {
            return Vec::new();
        };
        let Ok(array) = PerCpuArray::<_, ProbeCounters>::try_from(map) else {
            return Vec::new();
        };
        ProbeId::ALL
            .iter()
            .map(|&id| {
                let mut sum = ProbeCounters::default();
                if let Ok(per_cpu) = array.get(&(id as u32), 0) {
                    for c in per_cpu.iter() {
                        sum.seen += c.seen;
                        sum.dropped += c.dropped;
                        sum.folded += c.folded;
                        sum.over_budget += c.over_budget;
                        sum.read_failed += c.read_failed;
                    }
                }
                (id, sum)
            })
            .collect()
    }

    /// Kernel run time and count per attached program; empty unless bpf_stats is enabled.
    pub fn costs(&self) -> Vec<ProgramCost> {
        if !bpf_stats_enabled() {
            return Vec::new();
        }
        self.attached
            .iter()
            .filter_map(|&name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some(ProgramCost {
                    program: name,
                    run_time: info.run_time(),
                    run_count: info.run_count(),
                })
            })
            .collect()
    }
}

/// The kernel structure offsets the programs follow, from BTF. What cannot be resolved is
/// reported once and left out: records then carry no mount namespace or file identity, and
/// reads of gone readers fall back to their cgroup's processes.
fn kernel_offsets() -> keytrail_common::KernelOffsets {
    match crate::kernel_offsets::resolve() {
        Ok(r) => {
            for what in &r.missing {
                tracing::warn!(
                    what,
                    "kernel structure not found in BTF; the programs go without it"
                );
            }
            r.offsets
        }
        Err(error) => {
            tracing::warn!(%error, "no kernel BTF: records carry no mount namespace or file identity");
            keytrail_common::KernelOffsets::default()
        }
    }
}

/// True when `kernel.bpf_stats_enabled` is on.
pub fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

fn load_object(ring_buffer_bytes: u32) -> Result<Ebpf, ProbeError> {
    raise_memlock_limit();
    Ok(EbpfLoader::new()
        .map_max_entries(names::EVENTS, ring_buffer_bytes)
        .load(OBJECT)?)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels with memcg accounting");
    }
}

fn attach(ebpf: &mut Ebpf, spec: &ProgramSpec) -> Result<(), String> {
    let program: &mut TracePoint = ebpf
        .program_mut(spec.name)
        .ok_or_else(|| "program missing from the kernel object".to_string())?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    program.load().map_err(|e| {
        tracing::debug!(program = spec.name, error = %e, "verifier log");
        format!("load: {}", verifier_summary(&e.to_string()))
    })?;
    program
        .attach(spec.category, spec.tracepoint)
        .map_err(|e| format!("attach to {}/{}: {e}", spec.category, spec.tracepoint))?;
    Ok(())
}

/// An error and its chain of causes on one line.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The verifier's log can run to megabytes: keep its first line and its verdict.
fn verifier_summary(error: &str) -> String {
    let lines: Vec<&str> = error.lines().collect();
    if lines.len() <= 6 {
        return error.to_string();
    }
    let head = lines[0];
    let tail = lines[lines.len() - 4..].join(" | ");
    format!("{head} [...] {tail} (set KEYTRAIL_LOG=debug for the whole log)")
}

/// What the prefilter needs in CONFIG besides the maps.
struct FilterSettings {
    bits: u32,
    basename_prefix_lens: [u8; MAX_BASENAME_PREFIX_LENS],
    gates: FilterGates,
}

/// Writes slot 0 of an array map.
fn set_slot<T: aya::Pod>(ebpf: &mut Ebpf, name: &'static str, value: T) -> Result<(), ProbeError> {
    let map = ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))?;
    let mut array: Array<_, T> =
        Array::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
    array
        .set(0, value, 0)
        .map_err(|source| ProbeError::Map { name, source })
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
fn fill_env_filters(
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
fn fill_filters(
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
