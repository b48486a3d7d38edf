//! `keytrail agent`: checks, loads the probes, then runs one task per stage
//! (ring buffer reader -> pipeline -> sink) until a signal or `--duration`, and shuts down in
//! order so that events already in the kernel's ring buffer still reach the sink.

use std::{
    future::Future,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use keytrail_common::{EnvSource, EventHeader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    correlate::Correlator,
    credential::Classifier,
    env::{EnvAccess, NamedFile},
    events::{self, KernelEvent, comm},
    files::{CgroupFilter, FileAccess, FirstSeen, HomeEntries, Opener, access_records},
    fingerprint_key::{KeyError, KeySource, load_key},
    inspect::Inspector,
    inventory::{Inventory, InventoryError},
    libc::{LibcFile, LibcFinder, Library, Resolution, SymbolReader},
    net::{NetAccess, NetOutcome},
    probes::{self, ProbeError, Probes},
    procs::{ProcInfo, ProcessTable},
    record::{Record, names},
    sink::{
        Fanout,
        jsonl::{Destination, JsonlError, JsonlSink},
        otlp::{OtlpError, OtlpResource, OtlpSink},
    },
    stats::{AgentCounters, stats_record},
    watch::{self, WatchRules},
    workload::CgroupPaths,
};

/// Kernel events between the ring reader and the pipeline.
const EVENT_QUEUE: usize = 8192;
/// Records between the pipeline and a sink.
const RECORD_QUEUE: usize = 8192;
/// How often use records whose interval has passed are looked for.
const USE_SWEEP: Duration = Duration::from_secs(1);

/// Resolved settings for one agent run (config file merged with the command line).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub config: Config,
    pub jsonl: Destination,
    /// Stop after this long; None runs until a signal.
    pub duration: Option<Duration>,
    /// Inventory file; its directory holds the per-node fingerprint key.
    pub state: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Jsonl(#[from] JsonlError),
    #[error("watch rules: {0}")]
    Rules(String),
    #[error("reading the kernel ring buffer: {0}")]
    Ring(#[source] std::io::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("OTLP export: {0}")]
    Otlp(#[from] OtlpError),
}

/// The classifier with the configured (or node-local) fingerprint key.
pub fn classifier(config: &Config, state: &std::path::Path) -> Result<Classifier, KeyError> {
    let state_dir = state
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let (key, source) = load_key(
        config.fingerprint.key_file.as_deref(),
        config.fingerprint.key_env.as_deref(),
        state_dir,
    )?;
    if let KeySource::NodeLocal(path) = &source {
        tracing::warn!(
            key = %path.display(),
            "fingerprints use a key local to this node: the same secret on two nodes gets two \
             fingerprints (set fingerprint.key_file or fingerprint.key_env to compare across nodes)"
        );
    }
    Ok(
        Classifier::new(&key, config.credentials.short_lived_threshold)
            .with_env_names(config.env.rules()),
    )
}

/// What the pipeline asks of the probes, which the main task owns.
enum ProbeRequest {
    /// Attach the getenv or SSL_write uprobe to a newly found library whose symbols were read
    /// (or count and report one that could not be read).
    AttachLibrary(Resolution),
    /// Stop copying a connection's payload (its handshake was found).
    ForgetConnection(u64),
    /// Drop an exited process's getenv de-duplication keys.
    ForgetGetenv(Vec<u64>),
    /// Add and remove exact paths named by environment variables in the kernel prefilter.
    ExactPaths {
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// Check every open against a file found to hold credentials (inode, device), after
    /// emptying the kernel's set when `reset`.
    KnowFile { ino: u64, dev: u64, reset: bool },
    /// Watch below homes found at run time, and stop watching below those gone.
    Homes {
        add: Vec<HomeEntries>,
        remove: Vec<HomeEntries>,
    },
}

impl ProbeRequest {
    fn apply(self, probes: &mut Probes) {
        match self {
            ProbeRequest::AttachLibrary(lib) => attach_library(probes, lib),
            ProbeRequest::ForgetConnection(cookie) => probes.forget_connection(cookie),
            ProbeRequest::ForgetGetenv(keys) => probes.forget_getenv(&keys),
            ProbeRequest::ExactPaths { add, remove } => {
                for path in &remove {
                    if let Err(error) = probes.remove_exact(path) {
                        tracing::warn!(%error, "could not remove a path named by an environment variable from the kernel filter");
                    }
                }
                for path in &add {
                    if let Err(error) = probes.add_exact(path) {
                        tracing::warn!(%error, "could not add a path named by an environment variable to the kernel filter");
                    }
                }
            }
            ProbeRequest::Homes { add, remove } => watch_homes(probes, &add, &remove),
            ProbeRequest::KnowFile { ino, dev, reset } => {
                if let Err(error) = probes.know_file(ino, dev, reset) {
                    tracing::warn!(%error, "could not add a credential file to the kernel's known files");
                }
            }
        }
    }
}

/// Adds and removes the kernel entries of homes.
fn watch_homes(probes: &mut Probes, add: &[HomeEntries], remove: &[HomeEntries]) {
    for (home, entries) in remove {
        if let Err(error) = probes.remove_home(home, entries) {
            tracing::warn!(%error, "could not remove a home's entries from the kernel filter");
        }
    }
    for (home, entries) in add {
        if let Err(error) = probes.add_home(home, entries) {
            tracing::warn!(%error, "could not add a home's entries to the kernel filter");
        }
    }
}

/// Publishes the exec and exit records the kernel lost, for the pipeline to repair its process
/// table.
fn note_lifecycle_losses(probes: &Probes, counters: &AgentCounters) {
    let lost: u64 = probes
        .counters()
        .iter()
        .filter(|(id, _)| {
            matches!(
                id,
                keytrail_common::ProbeId::ProcExec | keytrail_common::ProbeId::ProcExit
            )
        })
        .map(|(_, c)| c.dropped)
        .sum();
    counters.lifecycle_lost.store(lost, Ordering::Relaxed);
}

/// How often the kernel filter follows the Secret volumes of the node's pods.
const SECRET_VOLUME_SYNC: Duration = Duration::from_secs(1);

/// The mount points of the node's Secret and projected volumes in the kernel filter: files
/// there are credentials for their pod even when no watch glob names them.
#[derive(Default)]
struct SecretVolumes {
    generation: Option<u64>,
    watched: std::collections::BTreeSet<String>,
}

impl SecretVolumes {
    /// Follows the pod index: new mount points in, gone ones out.
    fn sync(&mut self, probes: &mut Probes) {
        let Some((generation, mounts)) = crate::k8s::secret_mounts() else {
            return;
        };
        if self.generation == Some(generation) {
            return;
        }
        self.generation = Some(generation);
        for gone in self.watched.difference(&mounts) {
            let _ = probes.remove_dynamic_prefix(&format!("{gone}/"));
        }
        for new in mounts.difference(&self.watched) {
            if let Err(error) = probes.add_dynamic_prefix(&format!("{new}/")) {
                tracing::warn!(%error, "could not add a Secret volume to the kernel filter");
            }
        }
        self.watched = mounts;
    }
}

/// The homes every node has: /root, the directories under /home, and the host's passwd (read
/// through PID 1's root, so a containerised agent sees the host's).
fn host_homes(inspector: &mut Inspector) -> Vec<String> {
    let mut homes = vec!["/root".to_string()];
    homes.extend(watch::host_homes());
    if let Ok(passwd) = inspector.read_workload_file(1, 0, PASSWD, PASSWD_CAP) {
        homes.extend(crate::homes::passwd_homes(&String::from_utf8_lossy(
            &passwd,
        )));
    }
    homes
}

/// Where a workload lists its users and their homes, and how much of it is read.
const PASSWD: &str = "/etc/passwd";
const PASSWD_CAP: u64 = 256 * 1024;

fn probe_of(library: Library) -> &'static str {
    match library {
        Library::Libc => "getenv",
        Library::Libssl => "SSL_write",
    }
}

/// Attaches to a library at the offsets read from it: only kernel calls, nothing that reads
/// the workload's file.
fn attach_library(probes: &mut Probes, resolution: Resolution) {
    let lib = match resolution {
        Ok(lib) => lib,
        Err(skipped) => {
            probes.count_unreadable(skipped.library);
            tracing::warn!(
                library = %skipped.found_at,
                reason = %skipped.reason,
                probe = probe_of(skipped.library),
                "uprobe not attached to this library: its symbols could not be read"
            );
            return;
        }
    };
    let probe = probe_of(lib.library);
    let result = match lib.library {
        Library::Libc => probes.attach_getenv(&lib),
        Library::Libssl => probes.attach_tls_write(&lib),
    };
    match result {
        Ok(n) => tracing::info!(library = %lib.found_at, symbols = n, probe, "uprobe attached"),
        Err(error) => {
            tracing::warn!(library = %lib.found_at, %error, probe, "uprobe not attached to this library")
        }
    }
}

/// The libraries on the host and in every running process, their symbols read off the main
/// task. Waits at most one read timeout (readiness is not held up longer): a scan that takes
/// longer is given up (libraries are then found as processes start), and libraries still
/// being read then are attached through `probe_tx` when they are done.
async fn attach_startup_libraries(
    probes: &mut Probes,
    wanted: &[Library],
    reader: &SymbolReader,
    probe_tx: &mpsc::UnboundedSender<ProbeRequest>,
) -> LibcFinder {
    let deadline = tokio::time::Instant::now() + reader.read_timeout();
    let mut finder = LibcFinder::new(wanted);
    let scan = tokio::task::spawn_blocking(move || {
        let found = finder.scan_all();
        (finder, found)
    });
    let (finder, found) = match tokio::time::timeout_at(deadline, scan).await {
        Ok(Ok(scanned)) => scanned,
        _ => {
            tracing::warn!(
                timeout = ?reader.read_timeout(),
                "the startup scan for libraries did not finish in time; libraries are looked for as processes start"
            );
            return LibcFinder::new(wanted);
        }
    };
    let reads: Vec<_> = found
        .into_iter()
        .map(|lib| {
            let reader = reader.clone();
            tokio::spawn(async move { reader.read(lib).await })
        })
        .collect();
    let mut late = Vec::new();
    for mut read in reads {
        match tokio::time::timeout_at(deadline, &mut read).await {
            Ok(Ok(resolution)) => attach_library(probes, resolution),
            // A panic in the read, already reported by the runtime.
            Ok(Err(_)) => {}
            Err(_) => late.push(read),
        }
    }
    if !late.is_empty() {
        tracing::info!(
            libraries = late.len(),
            "libraries still being read at readiness; their uprobes attach when they are"
        );
        for read in late {
            let tx = probe_tx.clone();
            tokio::spawn(async move {
                if let Ok(resolution) = read.await {
                    let _ = tx.send(ProbeRequest::AttachLibrary(resolution));
                }
            });
        }
    }
    finder
}

/// Runs the agent until `shutdown` completes or the duration passes.
pub async fn run(opts: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let config = &opts.config;
    probes::check_privileges()?;
    probes::ensure_tracefs()?;
    let rules = WatchRules::compile(&config.watch.paths).map_err(AgentError::Rules)?;
    let cgroup_filter = CgroupFilter::new(&config.cgroups.include, &config.cgroups.exclude)
        .map_err(|e| AgentError::Rules(e.to_string()))?;
    tracing::info!(
        globs = rules.globs.len(),
        kernel_entries = rules.kernel.len(),
        "watch rules compiled"
    );
    let classifier = classifier(config, &opts.state)?;
    let sink = JsonlSink::open(&opts.jsonl).await?;
    let mut correlator = Correlator::new(&config.correlate);
    let counters = Arc::new(AgentCounters::default());
    let inventory = if config.output.inventory {
        let inventory = Inventory::open(&opts.state)?;
        let (uses, holders) = inventory.load(config.correlate.max_edges)?;
        correlator.seed(&uses, &holders, &counters.correlate);
        tracing::info!(state = %opts.state.display(), uses = uses.len(), "inventory opened");
        Some(inventory)
    } else {
        None
    };
    let settings = probes::KernelSettings {
        getenv_probe: config.env.getenv_probe,
        ring_buffer_bytes: config.limits.ring_buffer_bytes,
        fold_window: config.output.dedup_window,
        budget_per_sec: config.limits.workload_records_per_second,
        budget_burst: config.limits.workload_burst,
    };
    let mut probes = Probes::load_agent(&rules.kernel, &config.env.rules(), &settings)?;
    let rings = probes.take_rings()?;
    let cgroups = CgroupPaths::discover();
    if config.network.connections {
        probes.load_network(cgroups.mount(), config.network.ssl_write_probe);
    }
    // Libraries found before readiness carry their uprobes when the agent says it is ready.
    let mut wanted = Vec::new();
    if probes.getenv_loaded() {
        wanted.push(Library::Libc);
    }
    if probes.tls_write_loaded() {
        wanted.push(Library::Libssl);
    }
    let symbols = SymbolReader::default();
    let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
    let libcs = if wanted.is_empty() {
        None
    } else {
        Some(attach_startup_libraries(&mut probes, &wanted, &symbols, &probe_tx).await)
    };

    // Kubernetes pod watcher (when enabled): its index names the pipeline's records; stops on drop.
    let _kubernetes = crate::k8s::start(&config.kubernetes);
    let stop_reading = CancellationToken::new();
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let mut fanout = Fanout::default();
    let sink_task = tokio::spawn(sink.run(fanout.add("jsonl", RECORD_QUEUE)));
    let inventory_task = inventory.map(|inventory| {
        tokio::spawn(crate::inventory::run(
            inventory,
            fanout.add("inventory", RECORD_QUEUE),
        ))
    });
    let otlp = &config.output.otlp;
    let otlp_task = if otlp.endpoint.is_empty() {
        None
    } else {
        let resource = OtlpResource {
            host_name: host_name(),
            node_name: std::env::var(&config.kubernetes.node_name_env).ok(),
        };
        let sink = OtlpSink::new(otlp, resource, Arc::clone(&counters.otlp))?;
        tracing::info!(endpoint = %otlp.endpoint, protocol = ?otlp.protocol, "exporting over OTLP");
        Some(tokio::spawn(sink.run(fanout.add("otlp", otlp.queue))))
    };
    let reader = tokio::spawn(events::read_rings(
        rings,
        event_tx,
        Arc::clone(&counters.decode),
        stop_reading.clone(),
    ));
    let inspector_classifier = classifier.clone();
    let mut inspector = Inspector::new(
        classifier,
        config.credentials.max_file_bytes,
        cgroups.mount().map(std::path::Path::to_path_buf),
    );
    inspector.seed_namespaces();
    let mut files = FileAccess::new(rules, cgroup_filter.clone(), config.output.dedup_window);
    let homes = files.add_system_homes(host_homes(&mut inspector), &counters.files);
    watch_homes(&mut probes, &homes, &[]);
    let by_identity = config.watch.by_identity;
    if let Some(ns) = crate::rootfs::mount_ns(1) {
        files.first_look_at(ns);
        let trees = if by_identity {
            files.watched_trees()
        } else {
            Vec::new()
        };
        for (ino, dev) in inspector.seed_known(1, ns, &trees, SystemTime::now()) {
            if let Err(error) = probes.know_file(ino, dev, false) {
                tracing::warn!(%error, "could not add a credential file to the kernel's known files");
            }
        }
    }
    let pipeline = Pipeline {
        procs: ProcessTable::new(),
        cgroups,
        env: EnvAccess::new(
            inspector_classifier.clone(),
            cgroup_filter.clone(),
            config.output.dedup_window,
        ),
        net: NetAccess::new(inspector_classifier.clone(), cgroup_filter.clone()),
        report_connections: config.output.connections,
        correlator,
        files,
        inspector,
        first_seen: FirstSeen::default(),
        by_identity,
        lifecycle_lost_seen: 0,
        clock: BootClock::now(),
        libcs,
        symbols,
        probe_tx,
    };
    let pipeline_task = tokio::spawn(pipeline.run(event_rx, fanout.clone(), Arc::clone(&counters)));

    // Per-workload budget reports, each stats interval (and at shutdown).
    let mut budget_reports = crate::budgets::BudgetReports::default();
    let mut budget_cgroups = CgroupPaths::discover();

    // Readiness: all probes that could attach are attached.
    fanout
        .send_wait(stats_record(
            &probes,
            &counters,
            &fanout,
            &budget_reports.totals(),
            false,
        ))
        .await;
    tracing::info!(
        attached = probes.attached.len(),
        failed = probes.failed.len(),
        "agent ready"
    );

    let interval = config.output.stats_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut secret_volumes = SecretVolumes::default();
    let mut volume_ticker = tokio::time::interval(SECRET_VOLUME_SYNC);
    volume_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown, deadline);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut deadline => break,
            _ = ticker.tick() => {
                note_lifecycle_losses(&probes, &counters);
                for r in budget_reports.update(&probes.budgets(), &mut budget_cgroups) {
                    fanout.send(r);
                }
                fanout.send(stats_record(&probes, &counters, &fanout, &budget_reports.totals(), false));
            }
            _ = volume_ticker.tick() => secret_volumes.sync(&mut probes),
            Some(request) = probe_rx.recv() => request.apply(&mut probes),
        }
    }

    tracing::info!("shutting down");
    stop_reading.cancel();
    let read_result = reader.await.unwrap_or(Ok(()));
    let _ = pipeline_task.await;
    while let Ok(request) = probe_rx.try_recv() {
        request.apply(&mut probes);
    }
    for r in budget_reports.update(&probes.budgets(), &mut budget_cgroups) {
        fanout.send_wait(r).await;
    }
    fanout
        .send_wait(stats_record(
            &probes,
            &counters,
            &fanout,
            &budget_reports.totals(),
            true,
        ))
        .await;
    drop(fanout);
    let sink_result = sink_task.await.unwrap_or(Ok(()));
    if let Some(task) = otlp_task {
        let _ = task.await;
    }
    if let Some(task) = inventory_task {
        task.await.unwrap_or(Ok(()))?;
    }
    drop(probes);
    read_result.map_err(AgentError::Ring)?;
    sink_result?;
    Ok(())
}

/// This host's name, for the OTLP resource.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Converts the kernel's CLOCK_BOOTTIME stamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
struct BootClock {
    /// Wall-clock time at boot.
    boot: SystemTime,
}

impl BootClock {
    fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let since_boot = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        Self {
            boot: SystemTime::now() - since_boot,
        }
    }

    fn wall(&self, boot_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(boot_ns)
    }
}

/// The per-event stages, owned by one task so they need no locks.
struct Pipeline {
    procs: ProcessTable,
    cgroups: CgroupPaths,
    files: FileAccess,
    env: EnvAccess,
    net: NetAccess,
    /// Write `keytrail.connection` records too (they feed correlation either way).
    report_connections: bool,
    correlator: Correlator,
    inspector: Inspector,
    first_seen: FirstSeen,
    /// Known credential files go into the kernel's identity check.
    by_identity: bool,
    /// Lifecycle records lost, as of the last process table repair.
    lifecycle_lost_seen: u64,
    clock: BootClock,
    /// None when the getenv probe is off.
    libcs: Option<LibcFinder>,
    /// Reads the symbols of the libraries found, off this task.
    symbols: SymbolReader,
    probe_tx: mpsc::UnboundedSender<ProbeRequest>,
}

impl Pipeline {
    async fn run(
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
                    for record in self.correlator.due(SystemTime::now(), false, &counters.correlate) {
                        out.send(record);
                    }
                    self.repair_after_losses(&counters);
                    continue;
                }
                _ = libc_ticker.tick(), if self.libcs.as_ref().is_some_and(LibcFinder::has_due) => {
                    let found = self.libcs.as_mut().map(|f| f.check_due(std::time::Instant::now()));
                    self.attach_libcs(found.unwrap_or_default());
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
            records = self
                .correlator
                .on_connection(&connection, &counters.correlate);
            if self.report_connections {
                records.push(connection);
            }
        }
        records.extend(outcome.records);
        records
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
                self.correlator.on_exit(e.header.pid);
                self.inspector.forget(e.header.pid);
                let keys = self.env.on_exit(e.header.pid);
                if !keys.is_empty() {
                    let _ = self.probe_tx.send(ProbeRequest::ForgetGetenv(keys));
                }
                Vec::new()
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

/// `keytrail bench-floor`: attaches the empty floor programs of one family, prints a stats line when ready
/// and another at shutdown. Benchmarks use it to measure the cost of tracing itself.
pub async fn run_floor(family: &str, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    probes::check_privileges()?;
    probes::ensure_tracefs()?;
    let mut probes = Probes::load_floor(family)?;
    if family == "getenv" {
        let reader = SymbolReader::default();
        for lib in LibcFinder::new(&[Library::Libc]).scan_all() {
            match reader.read(lib).await {
                Ok(lib) => probes.attach_uprobe(probes::FLOOR_GETENV_PROGRAM, &lib)?,
                Err(skipped) => tracing::warn!(
                    library = %skipped.found_at,
                    reason = %skipped.reason,
                    "uprobe not attached to this library: its symbols could not be read"
                ),
            }
        }
    }
    let counters = AgentCounters::default();
    let no_sinks = Fanout::default();
    print_line(&stats_record(
        &probes,
        &counters,
        &no_sinks,
        &Default::default(),
        false,
    ));
    shutdown.await;
    print_line(&stats_record(
        &probes,
        &counters,
        &no_sinks,
        &Default::default(),
        true,
    ));
    Ok(())
}

fn print_line(record: &Record) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, record);
    let _ = writeln!(out);
    let _ = out.flush();
}
