//! OTLP export, end to end: the real agent exporting to a real collector (rotel, see
//! `keytrail_tests::collector`) over gRPC and HTTP, what arrives there (access and use log
//! records with their event name, severity, attributes and resource; metrics; spans), never a secret, and a collector
//! outage that neither stops the agent nor grows its memory, after which export resumes and
//! the losses are counted.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use keytrail_tests::{
    Agent, CgroupGuard, Launch, Workload, assert_no_leak,
    aws::{AwsKey, KeyFiles},
    collector::{Collector, Protocol, ReceivedLog},
    run_in_cgroup,
    servers::TlsServer,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");

/// How long a record may take from the agent to the collector (batching, metric period and,
/// after an outage, the export backoff).
const ARRIVAL: Duration = Duration::from_secs(30);

/// A test cgroup with one idle process in it: the agent reads a credential file through a
/// live process of the reader's cgroup, and `cat` is gone by then.
struct Readers {
    // Dropped first: the process leaves before its cgroup goes.
    _sibling: Workload,
    cgroup: CgroupGuard,
}

impl Readers {
    fn new(label: &str) -> Self {
        let cgroup = CgroupGuard::new(label);
        Self {
            _sibling: Workload::spawn(WORKLOAD.as_ref(), &cgroup),
            cgroup,
        }
    }

    /// `cat FILE` from the cgroup; returns its pid.
    fn cat(&self, path: &Path) -> u32 {
        let (pid, out) = run_in_cgroup(&self.cgroup, "/bin/cat", &[path.to_str().unwrap()], &[]);
        assert!(out.status.success(), "cat: {out:?}");
        pid
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}: has it exited?"))
}

fn is_access_of(log: &ReceivedLog, key: &AwsKey) -> bool {
    log.event_name == "keytrail.credential.access"
        && log.attributes.get("keytrail.credential.id") == Some(&key.id)
}

fn records_reach_the_collector(protocol: Protocol) {
    let collector = Collector::start(protocol);
    let files = KeyFiles::plant(1);
    let key = &files.keys[0];
    let config = files.config(
        "output:\n  stats_interval: 1s\n  otlp:\n    metrics_interval: 1s\n    spans: true\n",
    );
    let args = collector.agent_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("keytrail.db");
    let mut agent = Agent::launch(Launch {
        config: Some(&config),
        args: &args,
        state: Some(&state),
        ..Launch::default()
    });
    let readers = Readers::new("otlp");
    let pid = readers.cat(&key.path);

    let log = collector.wait_for_log("the access record", ARRIVAL, |l| is_access_of(l, key));
    let a = &log.attributes;
    assert_eq!(log.severity_text, "WARN", "{log:#?}");
    assert_eq!(log.severity_number, 13, "{log:#?}");
    assert!(
        log.timestamp > 0 && log.observed_timestamp >= log.timestamp,
        "{log:#?}"
    );
    assert_eq!(log.scope, "keytrail", "{log:#?}");
    assert_eq!(a["keytrail.credential.kind"], "aws_access_key", "{log:#?}");
    assert_eq!(a["keytrail.credential.lifetime"], "static", "{log:#?}");
    assert_eq!(a["keytrail.credential.source"], "file", "{log:#?}");
    assert_eq!(a["file.path"], key.path.to_str().unwrap(), "{log:#?}");
    assert_eq!(a["process.pid"], pid.to_string(), "{log:#?}");
    assert_eq!(log.attribute_types["process.pid"], "Int", "{log:#?}");
    assert_eq!(
        a["keytrail.cgroup.path"],
        readers.cgroup.rel_path(),
        "{log:#?}"
    );
    assert_eq!(log.resource["service.name"], "keytrail", "{log:#?}");
    assert_eq!(log.resource["host.name"], host_name(), "{log:#?}");
    assert!(log.resource.contains_key("service.version"), "{log:#?}");

    // The JSON line of the same read says the same.
    let line = agent.wait_for("the access in the JSON lines", |e| {
        e["event.name"] == "keytrail.credential.access" && e["process.pid"] == pid
    });
    assert_eq!(
        line["keytrail.credential.fingerprint"].as_str(),
        a.get("keytrail.credential.fingerprint").map(String::as_str),
        "{line}"
    );

    collector.wait_for_metrics(
        &["keytrail.credential.accesses", "keytrail.probe.events.seen"],
        ARRIVAL,
    );
    let point = collector.wait_until("the accesses counter of the key's kind", ARRIVAL, |r| {
        r.metrics
            .iter()
            .find(|m| {
                m.name == "keytrail.credential.accesses"
                    && m.attributes.get("keytrail.credential.kind")
                        == Some(&"aws_access_key".to_string())
                    && m.attributes.get("keytrail.credential.lifetime")
                        == Some(&"static".to_string())
            })
            .cloned()
    });
    assert!(point.value >= 1.0, "{point:?}");
    assert_eq!(point.data_type, "Sum", "{point:?}");
    // Metric attributes stay low-cardinality: never a path, pid or fingerprint.
    for m in collector.metric_points() {
        for (k, v) in &m.attributes {
            assert!(
                !v.contains('/') && v.len() <= 64 && k != "process.pid",
                "high-cardinality metric attribute {k}={v} in {m:?}"
            );
        }
    }

    // The same key read by a process that then sends it (SigV4) to a TLS server: a use with
    // wire evidence toward the server's SNI, as a log record, a metric and a span.
    let server = TlsServer::start("127.0.0.1");
    let sender = key.sign_and_send(&readers.cgroup, &server);
    let fingerprint = a["keytrail.credential.fingerprint"].clone();
    let used = collector.wait_for_log("the use record with wire evidence", ARRIVAL, |l| {
        l.event_name == "keytrail.credential.use"
            && l.attributes.get("keytrail.credential.fingerprint") == Some(&fingerprint)
            && l.attributes.get("keytrail.evidence").map(String::as_str) == Some("wire")
    });
    let u = &used.attributes;
    assert_eq!(used.severity_text, "WARN", "{used:#?}");
    assert_eq!(u["keytrail.credential.kind"], "aws_access_key", "{used:#?}");
    assert_eq!(u["keytrail.credential.id"], key.id, "{used:#?}");
    assert_eq!(u["server.address"], "s3.example.test", "{used:#?}");
    assert_eq!(u["server.port"], server.port.to_string(), "{used:#?}");
    assert_eq!(used.attribute_types["server.port"], "Int", "{used:#?}");
    assert_eq!(u["process.pid"], sender.to_string(), "{used:#?}");
    // Two workloads hold the key: `cat` and `python3` (plain processes are their own workload).
    assert_eq!(u["keytrail.credential.shared_by"], "2", "{used:#?}");
    for k in [
        "keytrail.use.count",
        "keytrail.use.first_seen",
        "keytrail.use.last_seen",
    ] {
        assert!(u.contains_key(k), "{k} missing: {used:#?}");
    }
    collector.wait_until("the uses counter with wire evidence", ARRIVAL, |r| {
        r.metrics
            .iter()
            .find(|m| {
                m.name == "keytrail.credential.uses"
                    && m.attributes.get("keytrail.evidence").map(String::as_str) == Some("wire")
                    && m.value >= 1.0
            })
            .cloned()
    });
    collector.wait_for_metrics(&["keytrail.credentials.static_in_use"], ARRIVAL);
    let span = collector.wait_until("the span of the use", ARRIVAL, |r| {
        r.spans
            .iter()
            .find(|s| {
                s.name == "keytrail.credential.use"
                    && s.attributes.get("keytrail.credential.fingerprint") == Some(&fingerprint)
            })
            .cloned()
    });
    assert_eq!(span.kind, "SPAN_KIND_CLIENT", "{span:#?}");

    let run = agent.stop();
    assert_eq!(run.exit_code, Some(0), "agent log:\n{}", run.stderr);
    assert_no_leak("collector output", &collector.raw_output(), &key.secret);
    assert_no_leak("agent log", &run.stderr, &key.secret);
    let lines: String = run.events.iter().map(|e| e.to_string() + "\n").collect();
    assert_no_leak("JSON lines", &lines, &key.secret);
    // The inventory holds the key (by fingerprint and id), never its secret.
    let mut inventory = Vec::new();
    for suffix in ["", "-wal"] {
        inventory.extend(std::fs::read(format!("{}{suffix}", state.display())).unwrap_or_default());
    }
    let inventory = String::from_utf8_lossy(&inventory);
    assert!(
        inventory.contains(key.id.as_str()),
        "the key id is not in the inventory"
    );
    assert_no_leak("inventory", &inventory, &key.secret);
}

#[test]
fn accesses_and_uses_reach_the_collector_over_grpc() {
    records_reach_the_collector(Protocol::Grpc);
}

#[test]
fn accesses_and_uses_reach_the_collector_over_http() {
    records_reach_the_collector(Protocol::Http);
}

#[test]
fn collector_outage_does_not_stop_the_agent() {
    const OUTAGE: Duration = Duration::from_secs(30);
    /// The agent's resident memory may grow this much during the outage, at most.
    const RSS_GROWTH_KIB: u64 = 64 * 1024;
    /// output.otlp.queue and output.otlp.batch.
    const QUEUE: u32 = 16;
    const BATCH: u32 = 8;

    let mut collector = Collector::start(Protocol::Grpc);
    // Five keys read over and over during the outage, one read only after it.
    let files = KeyFiles::plant(6);
    let (during, after) = files.keys.split_at(5);
    let config = files.config(&format!(
        "output:\n  stats_interval: 1s\n  otlp:\n    endpoint: {}\n    protocol: grpc\n    \
         queue: {QUEUE}\n    batch: {BATCH}\n    timeout: 2s\n    metrics_interval: 1s\n",
        collector.endpoint()
    ));
    let mut agent = Agent::launch(Launch {
        config: Some(&config),
        ..Launch::default()
    });
    let agent_pid = agent.pid();
    let readers = Readers::new("otlp-outage");

    // Export works before the outage.
    readers.cat(&during[0].path);
    collector.wait_for_log("a record before the outage", ARRIVAL, |l| {
        is_access_of(l, &during[0])
    });
    let rss_before = rss_kib(agent_pid);

    collector.stop();
    let started = Instant::now();
    let mut reads = 0u32;
    let mut rss_max = rss_before;
    let mut last_pid = 0;
    while started.elapsed() < OUTAGE {
        for key in during {
            last_pid = readers.cat(&key.path);
            reads += 1;
        }
        rss_max = rss_max.max(rss_kib(agent_pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still alive, and the JSON lines sink kept going through the outage.
    agent.wait_for("the last read of the outage in the JSON lines", |e| {
        e["event.name"] == "keytrail.credential.access" && e["process.pid"] == last_pid
    });
    rss_max = rss_max.max(rss_kib(agent_pid));
    assert!(
        rss_max < rss_before + RSS_GROWTH_KIB,
        "agent RSS grew from {rss_before} KiB to {rss_max} KiB during the outage ({reads} reads)"
    );

    collector.restart();
    let pid = readers.cat(&after[0].path);
    let log = collector.wait_for_log("a record made after the restart", ARRIVAL, |l| {
        is_access_of(l, &after[0])
    });
    assert_eq!(log.attributes["process.pid"], pid.to_string(), "{log:#?}");
    collector.wait_for_metrics(&["keytrail.credential.accesses"], ARRIVAL);

    let run = agent.stop();
    assert_eq!(run.exit_code, Some(0), "agent log:\n{}", run.stderr);
    let last: &Value = run
        .events
        .iter()
        .rev()
        .find(|e| e["event.name"] == "keytrail.agent.stats")
        .expect("final stats");
    assert_eq!(last["keytrail.agent.final"], true, "{last}");
    let count = |key: &str| {
        last[key]
            .as_u64()
            .unwrap_or_else(|| panic!("final stats have no {key}: {last}"))
    };
    let dropped = count("keytrail.sink.otlp.dropped");
    let failed = count("keytrail.otlp.failed");
    eprintln!(
        "outage: {reads} reads, agent RSS {rss_before} -> {rss_max} KiB, otlp queue drops \
         {dropped}, export losses {failed}"
    );
    // A queue of 16 cannot hold what an outage of 30 s brings: the losses are counted, and
    // all but what the queue and one batch hold were let go (memory stays bounded).
    assert!(
        dropped + failed + u64::from(QUEUE + BATCH) >= u64::from(reads),
        "{reads} reads during the outage, only {dropped} + {failed} counted as lost: {last}"
    );
    let output = collector.raw_output();
    for key in &files.keys {
        assert_no_leak("collector output", &output, &key.secret);
        assert_no_leak("agent log", &run.stderr, &key.secret);
    }
}
