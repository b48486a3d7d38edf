//! `keytrail.agent.stats` records: per-probe kernel counters, per-program kernel cost (when
//! bpf_stats is on), attach results, and the userspace stages' counters.

use std::{
    sync::{Arc, atomic::Ordering},
    time::SystemTime,
};

use crate::{
    budgets::BudgetTotals,
    correlate::CorrelateCounters,
    env::EnvCounters,
    events::DecodeCounters,
    files::FileCounters,
    net::NetCounters,
    probes::Probes,
    record::{Record, Severity, names},
    sink::{Fanout, otlp::OtlpCounters},
};

/// Userspace counters shared by the agent's tasks.
#[derive(Debug, Default)]
pub struct AgentCounters {
    pub decode: Arc<DecodeCounters>,
    pub files: FileCounters,
    pub env: EnvCounters,
    pub net: NetCounters,
    pub correlate: CorrelateCounters,
    pub otlp: Arc<OtlpCounters>,
    /// Access records handed to the sinks.
    pub accesses: std::sync::atomic::AtomicU64,
    /// Exec and exit records the kernel lost (its ring full), as last read from the probes,
    /// and the repairs of the process table from /proc they caused.
    pub lifecycle_lost: std::sync::atomic::AtomicU64,
    pub lifecycle_repairs: std::sync::atomic::AtomicU64,
    /// libc/libssl files not probed: the node's or a mount namespace's limit was reached.
    pub libraries_refused: std::sync::atomic::AtomicU64,
}

/// Builds one stats record. `final_report` marks the last one, written at shutdown.
pub fn stats_record(
    probes: &Probes,
    counters: &AgentCounters,
    sinks: &Fanout,
    budgets: &BudgetTotals,
    final_report: bool,
) -> Record {
    let mut r = Record::new(names::AGENT_STATS, SystemTime::now());
    if !probes.failed.is_empty() {
        r.severity = Severity::Warn;
    }
    r.set("keytrail.agent.final", final_report)
        .set("keytrail.probes.attached", probes.attached.len() as u64)
        .set("keytrail.probes.failed", probes.failed.len() as u64);
    if !probes.failed.is_empty() {
        let names: Vec<&str> = probes.failed.iter().map(|f| f.program).collect();
        r.set("keytrail.probes.failed_names", names.join(","));
    }
    for (probe, c) in probes.counters() {
        let name = probe.name();
        r.set(format!("keytrail.probe.{name}.seen"), c.seen)
            .set(format!("keytrail.probe.{name}.dropped"), c.dropped)
            .set(format!("keytrail.probe.{name}.folded"), c.folded)
            .set(format!("keytrail.probe.{name}.over_budget"), c.over_budget)
            .set(format!("keytrail.probe.{name}.read_failed"), c.read_failed);
    }
    for (family, n) in keytrail_common::record_family::NAMES
        .iter()
        .zip(budgets.dropped)
    {
        r.set(format!("keytrail.budget.{family}.dropped"), n);
    }
    r.set("keytrail.budget.workloads_over", budgets.workloads_over);
    for cost in probes.costs() {
        r.set(
            format!("keytrail.program.{}.run_time_ns", cost.program),
            cost.run_time.as_nanos() as u64,
        )
        .set(
            format!("keytrail.program.{}.run_count", cost.program),
            cost.run_count,
        );
    }
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    r.set("keytrail.events.received", load(&counters.decode.received))
        .set(
            "keytrail.events.malformed",
            load(&counters.decode.malformed),
        )
        .set("keytrail.accesses.emitted", load(&counters.accesses))
        .set(
            "keytrail.lifecycle.repairs",
            load(&counters.lifecycle_repairs),
        )
        .set(
            "keytrail.accesses.deduplicated",
            load(&counters.files.deduplicated),
        )
        .set(
            "keytrail.opens.not_matched",
            load(&counters.files.not_matched),
        )
        .set("keytrail.opens.excluded", load(&counters.files.excluded))
        .set(
            "keytrail.opens.unresolved",
            load(&counters.files.unresolved),
        )
        .set(
            "keytrail.opens.directory_changed",
            load(&counters.files.directory_changed),
        )
        .set("keytrail.opens.truncated", load(&counters.files.truncated))
        .set("keytrail.homes.known", load(&counters.files.homes.known))
        .set(
            "keytrail.libraries.refused",
            load(&counters.libraries_refused),
        )
        .set(
            "keytrail.homes.refused",
            load(&counters.files.homes.refused),
        )
        .set(
            "keytrail.env_paths.watched",
            load(&counters.files.env_paths.watched),
        )
        .set(
            "keytrail.env_paths.refused",
            load(&counters.files.env_paths.refused),
        )
        .set("keytrail.env.malformed", load(&counters.env.malformed))
        .set(
            "keytrail.env.deduplicated",
            load(&counters.env.deduplicated),
        )
        .set(
            "keytrail.getenv.not_credentials",
            load(&counters.env.not_credentials),
        )
        .set("keytrail.getenv.libraries", probes.getenv_libraries)
        .set("keytrail.getenv.attach_failed", probes.getenv_attach_failed)
        .set("keytrail.tls.libraries", probes.tls_libraries)
        .set("keytrail.tls.attach_failed", probes.tls_attach_failed)
        .set("keytrail.net.tls_hellos", load(&counters.net.tls_hellos))
        .set("keytrail.net.http_heads", load(&counters.net.http_heads))
        .set("keytrail.net.unparsed", load(&counters.net.unparsed))
        .set("keytrail.net.unmatched", load(&counters.net.unmatched))
        .set("keytrail.net.evicted", load(&counters.net.evicted))
        .set("keytrail.net.folded", load(&counters.net.folded))
        .set("keytrail.net.held_taken", load(&counters.net.held_taken))
        .set("keytrail.uses.edges", load(&counters.correlate.edges))
        .set("keytrail.uses.evicted", load(&counters.correlate.evicted))
        .set("keytrail.uses.emitted", load(&counters.correlate.emitted))
        .set("keytrail.otlp.exported", load(&counters.otlp.exported))
        .set("keytrail.otlp.failed", load(&counters.otlp.failed))
        .set("keytrail.otlp.retries", load(&counters.otlp.retries));
    r.set_opt(
        "keytrail.otlp.latency_p50_ms",
        counters.otlp.latency.quantile_ms(0.5),
    )
    .set_opt(
        "keytrail.otlp.latency_p99_ms",
        counters.otlp.latency.quantile_ms(0.99),
    );
    for (reason, n) in crate::rootfs::ReadError::REASONS
        .iter()
        .zip(&counters.files.unreadable)
    {
        r.set(format!("keytrail.files.unreadable.{reason}"), load(n));
    }
    // Records dropped because a sink's queue was full: per sink, and in total.
    let dropped = sinks.dropped();
    for (sink, n) in &dropped {
        r.set(format!("keytrail.sink.{sink}.dropped"), *n);
    }
    r.set(
        "keytrail.sink.dropped",
        dropped.iter().map(|(_, n)| n).sum::<u64>(),
    );
    r
}
