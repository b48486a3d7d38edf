//! The per-event stages, owned by one task so they need no locks: kernel events in, records
//! out to the sinks; what needs the probes goes back to the main task as a `ProbeRequest`.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use keytrail_common::{EnvSource, EventHeader};
use tokio::sync::mpsc;

use crate::{
    conn_folds::ConnFolds,
    correlate::Correlator,
    env::{EnvAccess, NamedFile},
    events::{KernelEvent, comm},
    files::{FileAccess, FirstSeen, Opener, access_records},
    inspect::Inspector,
    libc::{LibcFile, LibcFinder, SymbolReader},
    net::{NetAccess, NetOutcome},
    probe_requests::{PASSWD, PASSWD_CAP, ProbeRequest},
    procs::{ProcInfo, ProcessTable},
    record::{Record, names},
    sink::Fanout,
    stats::AgentCounters,
    workload::CgroupPaths,
};

/// How often use records whose interval has passed are looked for.
const USE_SWEEP: Duration = Duration::from_secs(1);

/// Converts the kernel's CLOCK_BOOTTIME stamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BootClock {
    /// Wall-clock time at boot.
    boot: SystemTime,
}

impl BootClock {
    pub(crate) fn now() -> Self {
        Self {
            boot: SystemTime::now() - Duration::from_nanos(boot_ns_now()),
        }
    }

    fn wall(&self, boot_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(boot_ns)
    }
}

/// CLOCK_BOOTTIME now, in nanoseconds: the kernel's record clock.
fn boot_ns_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32).as_nanos() as u64
}

/// The per-event stages, owned by one task so they need no locks.
pub(crate) struct Pipeline {
    pub(crate) procs: ProcessTable,
    pub(crate) cgroups: CgroupPaths,
    pub(crate) files: FileAccess,
    pub(crate) env: EnvAccess,
    pub(crate) net: NetAccess,
    /// Write `keytrail.connection` records too (they feed correlation either way).
    pub(crate) report_connections: bool,
    pub(crate) correlator: Correlator,
    pub(crate) inspector: Inspector,
    pub(crate) first_seen: FirstSeen,
    /// Known credential files go into the kernel's identity check.
    pub(crate) by_identity: bool,
    /// Lifecycle records lost, as of the last process table repair.
    pub(crate) lifecycle_lost_seen: u64,
    pub(crate) clock: BootClock,
    /// None when the getenv probe is off.
    pub(crate) libcs: Option<LibcFinder>,
    /// Reads the symbols of the libraries found, off this task.
    pub(crate) symbols: SymbolReader,
    pub(crate) probe_tx: mpsc::UnboundedSender<ProbeRequest>,
    /// Connections the kernel folds (None without the network programs).
    pub(crate) conn_folds: Option<ConnFolds>,
    /// Test-only fault switch, in debug builds: the pipeline panics at the exec of a program
    /// of this name (`KEYTRAIL_TEST_PANIC_ON_EXEC`), to prove a stopped stage is not missed.
    pub(crate) panic_on_exec: Option<String>,
}

impl Pipeline {
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<KernelEvent>,
        out: Fanout,
        counters: Arc<AgentCounters>,
    ) {
        let mut libc_ticker = tokio::time::interval(crate::libc::MAPS_CHECK_DELAY / 2);
        libc_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut use_ticker = tokio::time::interval(USE_SWEEP);
        use_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                event = rx.recv() => match event {
                    Some(e) => e,
                    None => break,
                },
                _ = use_ticker.tick() => {
                    for record in self.sweep_conn_folds(&counters) {
                        out.send(record);
                    }
                    for record in self.correlator.due(SystemTime::now(), false, &counters.correlate) {
                        out.send(record);
                    }
                    self.repair_after_losses(&counters);
                    continue;
                }
                _ = libc_ticker.tick(), if self.libcs.as_ref().is_some_and(LibcFinder::has_due) => {
                    let found = self.libcs.as_mut().map(|f| f.check_due(std::time::Instant::now()));
                    self.attach_libcs(found.unwrap_or_default());
                    if let Some(f) = &self.libcs {
                        counters.libraries_refused.store(f.refused(), Ordering::Relaxed);
                    }
                    continue;
                }
            };
            for mut record in self.handle(&event, &counters) {
                if record.name == names::CREDENTIAL_ACCESS {
                    counters.accesses.fetch_add(1, Ordering::Relaxed);
                }
                let uses = self.correlator.on_access(&mut record, &counters.correlate);
                out.send(record);
                for u in uses {
                    out.send(u);
                }
            }
        }
        // Counters that changed since their last record are written before the agent stops.
        for record in self
            .correlator
            .due(SystemTime::now(), true, &counters.correlate)
        {
            out.send_wait(record).await;
        }
    }

    /// Has the symbols of each library read off this task, then attached by the main task.
    /// Repairs the process table from /proc when the kernel has lost exec or exit records
    /// since the last repair.
    fn repair_after_losses(&mut self, counters: &AgentCounters) {
        let lost = counters.lifecycle_lost.load(Ordering::Relaxed);
        if lost <= self.lifecycle_lost_seen {
            return;
        }
        self.lifecycle_lost_seen = lost;
        let fixed = self.procs.repair();
        counters.lifecycle_repairs.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            lost,
            fixed,
            "exec or exit records were lost (lifecycle ring full): process table repaired from /proc"
        );
    }

    fn attach_libcs(&self, found: Vec<LibcFile>) {
        for lib in found {
            let (reader, tx) = (self.symbols.clone(), self.probe_tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(ProbeRequest::AttachLibrary(reader.read(lib).await));
            });
        }
    }

    /// The process, cgroup path and wall-clock time of a kernel record.
    fn who(&mut self, h: &EventHeader) -> (ProcInfo, Option<String>, SystemTime) {
        let proc = self.procs.lookup(h.pid, &comm(h));
        let cgroup_path = self.cgroups.resolve(h.cgroup_id, h.pid);
        (proc, cgroup_path, self.clock.wall(h.time_ns))
    }

    /// Uses of the connection, its record when connections are written, then its wire
    /// credentials (after the connection, so a wire sighting upgrades the same use).
    fn net_outcome(&mut self, outcome: NetOutcome, counters: &AgentCounters) -> Vec<Record> {
        if let Some(cookie) = outcome.forget_cookie {
            let _ = self.probe_tx.send(ProbeRequest::ForgetConnection(cookie));
        }
        let mut records = Vec::new();
        if let Some(connection) = outcome.connection {
            if let (Some(folds), Some((key, fold))) = (&mut self.conn_folds, outcome.fold) {
                let replaced = folds.install(key, fold, connection.clone());
                records = self.credit_folds(replaced, counters);
            }
            records.extend(
                self.correlator
                    .on_connection(&connection, &counters.correlate),
            );
            if self.report_connections {
                records.push(connection);
            }
        }
        records.extend(outcome.records);
        records
    }

    /// Connect records the kernel held too long, handled now; connections folded since the
    /// last sweep, counted as uses.
    fn sweep_conn_folds(&mut self, counters: &AgentCounters) -> Vec<Record> {
        let Some(folds) = &mut self.conn_folds else {
            return Vec::new();
        };
        let held = folds.take_held(boot_ns_now());
        let folded = folds.take_new();
        counters
            .net
            .held_taken
            .fetch_add(held.len() as u64, Ordering::Relaxed);
        for connect in held {
            self.handle(&KernelEvent::NetConnect(connect), counters);
        }
        self.credit_folds(folded, counters)
    }

    /// Counts connections the kernel folded as uses, each like the connection that was named.
    fn credit_folds(
        &mut self,
        folded: Vec<(Record, u64)>,
        counters: &AgentCounters,
    ) -> Vec<Record> {
        folded
            .into_iter()
            .flat_map(|(r, n)| {
                counters.net.folded.fetch_add(n, Ordering::Relaxed);
                self.correlator.on_connections(&r, n, &counters.correlate)
            })
            .collect()
    }

    /// What an exec teaches: for a mount namespace seen for the first time, the homes of its
    /// passwd and the credential files of its watched trees (known by identity from then on);
    /// the process's `HOME` when the kernel sent it.
    fn learn_from_exec(
        &mut self,
        h: &EventHeader,
        mnt_ns: Option<u64>,
        ns_key: Option<u64>,
        home: Option<&str>,
        counters: &AgentCounters,
    ) {
        let mut add = Vec::new();
        if let (Some(ns), Some(key)) = (mnt_ns, ns_key)
            && self.files.first_look_at(key)
        {
            if let Ok(passwd) = self
                .inspector
                .read_workload_file(h.pid, ns, PASSWD, PASSWD_CAP)
            {
                let homes = crate::homes::passwd_homes(&String::from_utf8_lossy(&passwd));
                add.extend(self.files.add_system_homes(homes, &counters.files));
            }
            let trees = if self.by_identity {
                self.files.watched_trees()
            } else {
                Vec::new()
            };
            for (ino, dev) in self
                .inspector
                .seed_known(h.pid, ns, &trees, SystemTime::now())
            {
                let reset = false;
                let _ = self
                    .probe_tx
                    .send(ProbeRequest::KnowFile { ino, dev, reset });
            }
        }
        if let Some(home) = home {
            add.extend(self.files.add_env_home(h.cgroup_id, home, &counters.files));
        }
        if !add.is_empty() {
            let remove = Vec::new();
            let _ = self.probe_tx.send(ProbeRequest::Homes { add, remove });
        }
    }

    fn watch_named_files(&mut self, named: Vec<NamedFile>, counters: &AgentCounters) {
        let add: Vec<String> = named
            .iter()
            .filter_map(|f| {
                self.files
                    .watch_env_path(f.cgroup_id, &f.path, &f.env_name, &counters.files)
            })
            .collect();
        if !add.is_empty() {
            let remove = Vec::new();
            let _ = self.probe_tx.send(ProbeRequest::ExactPaths { add, remove });
        }
    }

    fn handle(&mut self, event: &KernelEvent, counters: &AgentCounters) -> Vec<Record> {
        match event {
            KernelEvent::ProcExec(e) => {
                let h = &e.header;
                if self.panic_on_exec.as_deref() == Some(comm(h).as_str()) {
                    panic!("fault injected by KEYTRAIL_TEST_PANIC_ON_EXEC");
                }
                self.procs.on_exec(e);
                // The kernel tells the namespace; without BTF offsets, ask procfs.
                let mnt_ns = match e.mnt_ns {
                    0 => crate::rootfs::mount_ns(h.pid),
                    ns => Some(u64::from(ns)),
                };
                self.inspector.observe(h.pid, mnt_ns.unwrap_or(0), true);
                // Inode numbers of namespaces are reused at once: what is learned once per
                // namespace is keyed by the id the kernel never reuses, when it gives one.
                let ns_key = match e.mnt_ns_id {
                    0 => mnt_ns.map(|ns| ns | 1 << 63),
                    id => Some(id),
                };
                if let Some(finder) = &mut self.libcs {
                    let found = finder.on_exec(h.pid, ns_key);
                    counters
                        .libraries_refused
                        .store(finder.refused(), Ordering::Relaxed);
                    self.attach_libcs(found);
                }
                let (proc, cgroup_path, time) = self.who(h);
                let who = Opener {
                    proc: &proc,
                    cgroup_path: cgroup_path.as_deref(),
                };
                let outcome = self
                    .env
                    .on_exec(e, &who, time, &mut self.first_seen, &counters.env);
                self.watch_named_files(outcome.named_files, counters);
                self.learn_from_exec(h, mnt_ns, ns_key, outcome.home.as_deref(), counters);
                outcome.records
            }
            KernelEvent::CgroupChange(e) => {
                let path = crate::events::text(&e.path, e.path_len);
                if e.op == keytrail_common::cgroup_op::MKDIR {
                    self.cgroups.created(e.cgroup_id, path);
                } else {
                    self.cgroups.removed(e.cgroup_id, path);
                    let (homes, paths) = self.files.cgroup_gone(e.cgroup_id, &counters.files);
                    if !homes.is_empty() {
                        let (add, remove) = (Vec::new(), homes);
                        let _ = self.probe_tx.send(ProbeRequest::Homes { add, remove });
                    }
                    if !paths.is_empty() {
                        let (add, remove) = (Vec::new(), paths);
                        let _ = self.probe_tx.send(ProbeRequest::ExactPaths { add, remove });
                    }
                }
                Vec::new()
            }
            KernelEvent::ProcExit(e) => {
                self.procs.on_exit(e);
                self.files.on_exit(e.header.pid);
                // Its folded connections count before what it held stops being evidence.
                let folded = match &mut self.conn_folds {
                    Some(folds) => folds.forget_process(e.header.pid),
                    None => Vec::new(),
                };
                let records = self.credit_folds(folded, counters);
                self.correlator.on_exit(e.header.pid);
                self.inspector.forget(e.header.pid);
                let keys = self.env.on_exit(e.header.pid);
                if !keys.is_empty() {
                    let _ = self.probe_tx.send(ProbeRequest::ForgetGetenv(keys));
                }
                records
            }
            KernelEvent::NetConnect(e) => {
                let h = &e.header;
                let (proc, cgroup_path, time) = self.who(h);
                let who = Opener {
                    proc: &proc,
                    cgroup_path: cgroup_path.as_deref(),
                };
                self.net.on_connect(e, &who, time, &counters.net);
                Vec::new()
            }
            KernelEvent::NetState(e) => {
                let outcome = self.net.on_state(e, &counters.net);
                self.net_outcome(outcome, counters)
            }
            KernelEvent::NetPayload(e) => {
                let outcome = self.net.on_payload(e, &mut self.first_seen, &counters.net);
                self.net_outcome(outcome, counters)
            }
            KernelEvent::TlsWrite(e) => {
                let outcome = self
                    .net
                    .on_tls_write(e, &mut self.first_seen, &counters.net);
                self.net_outcome(outcome, counters)
            }
            KernelEvent::EnvVar(e) if e.source == EnvSource::Exec as u32 => {
                self.env.on_exec_var(e, &counters.env);
                Vec::new()
            }
            KernelEvent::EnvVar(e) => {
                let h = &e.header;
                let (proc, cgroup_path, time) = self.who(h);
                let who = Opener {
                    proc: &proc,
                    cgroup_path: cgroup_path.as_deref(),
                };
                self.env
                    .on_getenv(e, &who, time, &mut self.first_seen, &counters.env)
            }
            KernelEvent::FileOpen(e) => {
                let h = &e.header;
                let (proc, cgroup_path, time) = self.who(h);
                let who = Opener {
                    proc: &proc,
                    cgroup_path: cgroup_path.as_deref(),
                };
                let Some(access) = self.files.on_open(e, &who, time, &counters.files) else {
                    return Vec::new();
                };
                if let Some(target) = access.environ_of {
                    let inspection = self.inspector.inspect_environ(target, SystemTime::now());
                    return access_records(
                        access.record,
                        Some(&inspection),
                        SystemTime::now(),
                        &mut self.first_seen,
                    );
                }
                if access.mnt_ns != 0 {
                    self.inspector.observe(h.pid, access.mnt_ns, false);
                }
                let inspection = access.readable.then(|| {
                    let reader = access.reader(h.pid, cgroup_path.as_deref());
                    self.inspector.inspect(
                        &reader,
                        &access.path,
                        access.env_hint.as_deref(),
                        SystemTime::now(),
                    )
                });
                if let Some(Err(e)) = inspection.as_ref().map(|i| &i.content) {
                    counters.files.count_unreadable(e);
                }
                if let (Some((ino, dev)), reset) = self.inspector.take_known()
                    && self.by_identity
                {
                    let _ = self
                        .probe_tx
                        .send(ProbeRequest::KnowFile { ino, dev, reset });
                }
                access_records(
                    access.record,
                    inspection.as_ref(),
                    SystemTime::now(),
                    &mut self.first_seen,
                )
            }
        }
    }
}
