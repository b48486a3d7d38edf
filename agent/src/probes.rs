//! Loading and attaching the kernel programs: privilege and tracefs checks, the prefilter maps
//! filled from the watch rules, one attach per program (a failure is reported and the rest keep
//! running), and the counters read back for agent stats.

use std::{collections::BTreeSet, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, SockOps, TracePoint,
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};
use keytrail_common::{FilterGates, KernelConfig, ProbeCounters, ProbeId, names};

use crate::{
    credential::EnvNameRules,
    libc::{Library, ResolvedLibrary},
    watch::KernelEntry,
};

mod filters;

pub use filters::{HashedList, SuffixPlan, env_gates, env_hashes, filter_gates, suffix_plan};
use filters::{fill_env_filters, fill_filters};

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
/// Empty programs on the network hooks (connect4, connect6, sock_ops, egress).
const FLOOR_NET_PROGRAMS: [&str; 4] = [
    "floor_connect4",
    "floor_connect6",
    "floor_sock_ops",
    "floor_egress",
];

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
pub fn ensure_tracefs() -> Result<Option<TracefsMount>, ProbeError> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if std::path::Path::new(dir).join("events").is_dir() {
            return Ok(None);
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
    Ok(Some(TracefsMount))
}

/// tracefs as the agent mounted it: unmounted when dropped, at the agent's exit, so the node is
/// left as it was found. Attached tracepoints do not need it once attached.
#[must_use = "dropping it unmounts tracefs"]
pub struct TracefsMount;

impl Drop for TracefsMount {
    fn drop(&mut self) {
        // SAFETY: constant NUL-terminated string.
        let rc = unsafe { libc::umount2(c"/sys/kernel/tracing".as_ptr(), libc::MNT_DETACH) };
        if rc == 0 {
            tracing::info!("unmounted the tracefs it mounted from /sys/kernel/tracing");
        } else {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot unmount the tracefs it mounted on /sys/kernel/tracing"
            );
        }
    }
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
        self.attach_at_cgroup(root, [NET_CONNECT4, NET_CONNECT6, NET_STATE, NET_PAYLOAD]);
        if tls_write {
            self.load_uprobe(TLS_WRITE_PROGRAM);
            self.load_uprobe(TLS_FREE_PROGRAM);
        }
    }

    /// Attaches connect4, connect6, sock_ops and egress programs (in that order) at the cgroup
    /// `root`. Each failure is reported and the rest keep running.
    fn attach_at_cgroup(&mut self, root: &std::path::Path, programs: [&'static str; 4]) {
        let [connect4, connect6, state, egress] = programs;
        let dir = match std::fs::File::open(root) {
            Ok(d) => d,
            Err(e) => {
                for p in programs {
                    self.record(p, Err(format!("opening {}: {e}", root.display())));
                }
                return;
            }
        };
        // Links always coexist with other programs on the cgroup (the kernel rejects attach
        // flags on link creation), so the default mode is the right one here.
        let mode = CgroupAttachMode::Single;
        for name in [connect4, connect6] {
            let r = self.with_program(name, |p: &mut CgroupSockAddr| {
                p.load()?;
                p.attach(&dir, mode).map(|_| ())
            });
            self.record(name, r);
        }
        let r = self.with_program(state, |p: &mut SockOps| {
            p.load()?;
            p.attach(&dir, mode).map(|_| ())
        });
        self.record(state, r);
        let r = self.with_program(egress, |p: &mut CgroupSkb| {
            p.load()?;
            p.attach(&dir, CgroupSkbAttachType::Egress, mode)
                .map(|_| ())
        });
        self.record(egress, r);
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
        let mut offsets = Vec::new();
        for symbol in symbols {
            let Some(offset) = lib.offset(symbol) else {
                errors.push(format!("{symbol}: not defined in the library"));
                continue;
            };
            // Two functions probed where both enter a third one: one probe there.
            if offsets.contains(&offset) {
                attached += 1;
                continue;
            }
            offsets.push(offset);
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

    /// Stops awaiting payload on a connection (its handshake was found): its next packet ends
    /// the wait in the kernel.
    pub fn forget_connection(&mut self, cookie: u64) {
        if let Some(map) = self.ebpf.map_mut(names::FORGET_PAYLOAD)
            && let Ok(mut m) = BpfHashMap::<_, u64, u8>::try_from(map)
        {
            let _ = m.insert(cookie, 1, 0);
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

    /// Loads the object and attaches only the empty floor programs of `family` (`open`,
    /// `exec`; `net` at the cgroup2 root `cgroup_root`; `getenv` loads the empty uprobe,
    /// attached with [`Probes::attach_uprobe`]).
    pub fn load_floor(
        family: &str,
        cgroup_root: Option<&std::path::Path>,
    ) -> Result<Self, ProbeError> {
        let mut ebpf = load_object(64 * 1024)?;
        match family {
            "exec" => Self::attach_all(ebpf, FLOOR_EXEC_PROGRAMS),
            "net" => {
                let root = cgroup_root
                    .ok_or_else(|| ProbeError::NothingAttached("no cgroup2 mount found".into()))?;
                let mut probes = Self::attach_all(ebpf, &[])?;
                probes.attach_at_cgroup(root, FLOOR_NET_PROGRAMS);
                if probes.attached.is_empty() {
                    return Err(ProbeError::NothingAttached(
                        "none of the network floor programs attached".into(),
                    ));
                }
                Ok(probes)
            }
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

    /// Takes the connection fold maps for the pipeline, which installs signatures and reads
    /// counts. None when the network programs are not loaded.
    pub fn take_conn_folds(&mut self) -> Option<crate::conn_folds::ConnFolds> {
        let signatures = self.ebpf.take_map(names::CONN_FOLDS)?;
        let counts = self.ebpf.take_map(names::CONN_FOLD_COUNTS)?;
        let pending = self.ebpf.take_map(names::PENDING_CONNS)?;
        Some(crate::conn_folds::ConnFolds::new(
            BpfHashMap::try_from(signatures).ok()?,
            BpfHashMap::try_from(counts).ok()?,
            BpfHashMap::try_from(pending).ok()?,
        ))
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

/// Writes slot 0 of an array map.
fn set_slot<T: aya::Pod>(ebpf: &mut Ebpf, name: &'static str, value: T) -> Result<(), ProbeError> {
    let map = ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))?;
    let mut array: Array<_, T> =
        Array::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
    array
        .set(0, value, 0)
        .map_err(|source| ProbeError::Map { name, source })
}
