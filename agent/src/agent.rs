//! `keytrail agent`: checks, loads the probes, then runs one task per stage
//! (ring buffer reader -> pipeline -> sink) until a signal or `--duration`, and shuts down in
//! order so that events already in the kernel's ring buffer still reach the sink.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    correlate::Correlator,
    credential::Classifier,
    env::EnvAccess,
    events,
    files::{CgroupFilter, FileAccess, FirstSeen},
    fingerprint_key::{KeyError, KeySource, load_key},
    inspect::Inspector,
    inventory::{Inventory, InventoryError},
    libc::{LibcFinder, Library, SymbolReader},
    net::NetAccess,
    pipeline::{BootClock, Pipeline},
    probe_requests::{
        ProbeRequest, SECRET_VOLUME_SYNC, SecretVolumes, attach_library, host_homes,
        note_lifecycle_losses, watch_homes,
    },
    probes::{self, ProbeError, Probes},
    procs::ProcessTable,
    record::Record,
    sink::{
        Fanout,
        jsonl::{Destination, JsonlError, JsonlSink},
        otlp::{OtlpError, OtlpResource, OtlpSink},
    },
    stats::{AgentCounters, stats_record},
    watch::WatchRules,
    workload::CgroupPaths,
};

/// Kernel events between the ring reader and the pipeline.
const EVENT_QUEUE: usize = 8192;
/// Records between the pipeline and a sink.
const RECORD_QUEUE: usize = 8192;

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
    /// A stage ended before shutdown: the agent exits non-zero rather than run blind, so its
    /// supervisor (the DaemonSet, systemd) restarts it.
    #[error("the {stage} stage stopped ({how}); exiting so the agent is restarted")]
    StageStopped { stage: &'static str, how: String },
}

/// Waits for a stage that may not run: never, when it does not.
async fn optional<T>(
    task: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// The error for a stage whose task ended before shutdown, logged as it is found.
fn stage_stopped<E: std::fmt::Display>(
    stage: &'static str,
    ended: Result<Result<(), E>, tokio::task::JoinError>,
) -> AgentError {
    let how = match ended {
        Ok(Ok(())) => "it ended".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(e) if e.is_panic() => "it panicked".to_string(),
        Err(_) => "it was cancelled".to_string(),
    };
    tracing::error!(stage, how = %how, "a stage stopped before shutdown");
    AgentError::StageStopped { stage, how }
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
    // The agent holds secrets in memory while it classifies them: no core dump may carry
    // them, and no process of the same user may attach to it.
    // SAFETY: plain prctl on this process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    raise_fd_limit();
    let _tracefs = probes::ensure_tracefs()?;
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
        let mut inventory = Inventory::open(&opts.state)?;
        inventory.prune_logged(config.output.inventory_retention);
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
    let conn_folds = if config.network.connections {
        probes.take_conn_folds()
    } else {
        None
    };
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
    let mut sink_task = tokio::spawn(sink.run(fanout.add("jsonl", RECORD_QUEUE)));
    let mut inventory_task = inventory.map(|inventory| {
        tokio::spawn(crate::inventory::run(
            inventory,
            fanout.add("inventory", RECORD_QUEUE),
            config.output.inventory_retention,
        ))
    });
    let otlp = &config.output.otlp;
    let mut otlp_task = if otlp.endpoint.is_empty() {
        None
    } else {
        let resource = OtlpResource {
            host_name: host_name(),
            node_name: std::env::var(&config.kubernetes.node_name_env).ok(),
        };
        let sink = OtlpSink::new(otlp, resource, Arc::clone(&counters.otlp))?;
        tracing::info!(
            endpoint = %crate::sink::otlp::endpoint_for_logs(&otlp.endpoint),
            protocol = ?otlp.protocol,
            "exporting over OTLP"
        );
        Some(tokio::spawn(sink.run(fanout.add("otlp", otlp.queue))))
    };
    let mut reader = tokio::spawn(events::read_rings(
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
        conn_folds,
        panic_on_exec: cfg!(debug_assertions)
            .then(|| std::env::var("KEYTRAIL_TEST_PANIC_ON_EXEC").ok())
            .flatten(),
    };
    let mut pipeline_task =
        tokio::spawn(pipeline.run(event_rx, fanout.clone(), Arc::clone(&counters)));

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
            // Every stage runs until shutdown: one that stops earlier is a fault.
            ended = &mut reader => return Err(stage_stopped("ring reader", ended)),
            ended = &mut pipeline_task => {
                return Err(stage_stopped("pipeline", ended.map(Ok::<(), std::convert::Infallible>)));
            }
            ended = &mut sink_task => return Err(stage_stopped("JSON lines sink", ended)),
            ended = optional(&mut inventory_task) => return Err(stage_stopped("inventory sink", ended)),
            ended = optional(&mut otlp_task) => {
                return Err(stage_stopped("OTLP sink", ended.map(Ok::<(), std::convert::Infallible>)));
            }
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

/// Root handles of workloads, libraries being read and sockets are descriptors, and a busy node
/// has thousands of workloads: the soft limit on open files (often 1024) is raised to the hard
/// one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            tracing::info!(
                from = lim.rlim_cur,
                to = lim.rlim_max,
                "open file limit raised"
            );
        } else {
            tracing::warn!(
                limit = lim.rlim_cur,
                error = %std::io::Error::last_os_error(),
                "cannot raise the open file limit"
            );
        }
    }
}

/// `keytrail bench-floor`: attaches the empty floor programs of one family, prints a stats line when ready
/// and another at shutdown. Benchmarks use it to measure the cost of tracing itself.
pub async fn run_floor(family: &str, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    probes::check_privileges()?;
    let _tracefs = probes::ensure_tracefs()?;
    let cgroup_root = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| crate::workload::find_cgroup2_mount(&m));
    let mut probes = Probes::load_floor(family, cgroup_root.as_deref())?;
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
