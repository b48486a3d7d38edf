use super::*;

const FP: &str = "kt1:00000000000000000000000000000001";
const FP2: &str = "kt1:00000000000000000000000000000002";

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn config(max_edges: usize) -> CorrelateConfig {
    CorrelateConfig {
        process_window: Duration::from_secs(600),
        emit_interval: Duration::from_secs(60),
        max_edges,
    }
}

fn who(r: &mut Record, pid: u32, workload: &str, namespace: Option<&str>) {
    let (kind, name) = workload.split_once('/').unwrap();
    r.set("process.pid", pid)
        .set("process.executable.path", "/usr/bin/client")
        .set("keytrail.workload.kind", kind)
        .set("keytrail.workload.name", name)
        .set_opt("k8s.namespace.name", namespace);
}

fn access(time: u64, pid: u32, workload: &str, fp: &str, source: &str) -> Record {
    let mut r = Record::new(names::CREDENTIAL_ACCESS, t(time));
    who(&mut r, pid, workload, None);
    r.set("keytrail.credential.source", source)
        .set("keytrail.credential.kind", "aws_access_key")
        .set("keytrail.credential.lifetime", "static")
        .set("keytrail.credential.fingerprint", fp)
        .set("keytrail.credential.id", "AKIAEXAMPLEEXAMPLE00")
        .set("file.path", "/home/app/.aws/credentials");
    r
}

fn wire(time: u64, pid: u32, workload: &str, fp: &str) -> Record {
    let mut r = access(time, pid, workload, fp, "wire");
    r.set("server.address", "api.example.test")
        .set("server.port", 443u32);
    r
}

fn connection(time: u64, pid: u32, workload: &str, outcome: &str) -> Record {
    let mut r = Record::new(names::CONNECTION, t(time));
    who(&mut r, pid, workload, None);
    r.set("network.peer.address", "127.0.0.1")
        .set("server.port", 443u32)
        .set("server.address", "api.example.test")
        .set("keytrail.connection.outcome", outcome);
    r
}

fn get<'a>(r: &'a Record, key: &str) -> &'a Value {
    r.get(key)
        .unwrap_or_else(|| panic!("{key} missing in {r:?}"))
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

#[test]
fn a_process_that_read_a_credential_then_connected_used_it() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(100));
    assert!(
        c.on_access(&mut access(0, 10, "container/a", FP, "file"), &counters)
            .is_empty()
    );
    let uses = c.on_connection(&connection(1, 10, "container/a", "established"), &counters);
    assert_eq!(uses.len(), 1);
    let u = &uses[0];
    assert_eq!(u.name, names::CREDENTIAL_USE);
    assert_eq!(u.severity, Severity::Warn);
    assert_eq!(get(u, "keytrail.evidence"), &s("process"));
    assert_eq!(get(u, "keytrail.credential.fingerprint"), &s(FP));
    assert_eq!(get(u, "keytrail.credential.kind"), &s("aws_access_key"));
    assert_eq!(get(u, "keytrail.credential.id"), &s("AKIAEXAMPLEEXAMPLE00"));
    assert_eq!(get(u, "server.address"), &s("api.example.test"));
    assert_eq!(get(u, "server.port"), &Value::Int(443));
    assert_eq!(get(u, "network.peer.address"), &s("127.0.0.1"));
    assert_eq!(get(u, "keytrail.use.count"), &Value::Int(1));
    assert_eq!(get(u, "keytrail.credential.shared_by"), &Value::Int(1));
    assert_eq!(get(u, "keytrail.workload.name"), &s("a"));
    assert_eq!(get(u, "process.pid"), &Value::Int(10));
    // The file's attributes describe the access, not the use.
    assert!(u.get("file.path").is_none());
    assert_eq!(counters.emitted.load(Ordering::Relaxed), 1);
}

#[test]
fn wire_evidence_upgrades_an_edge_without_counting_the_request_twice() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(100));
    c.on_access(&mut access(0, 10, "container/a", FP, "file"), &counters);
    assert_eq!(
        c.on_connection(&connection(1, 10, "container/a", "established"), &counters)
            .len(),
        1
    );
    let uses = c.on_access(&mut wire(1, 10, "container/a", FP), &counters);
    assert_eq!(uses.len(), 1, "stronger evidence is written at once");
    assert_eq!(get(&uses[0], "keytrail.evidence"), &s("wire"));
    assert_eq!(get(&uses[0], "keytrail.use.count"), &Value::Int(1));
    // A later process connection does not weaken it.
    assert!(
        c.on_connection(&connection(2, 10, "container/a", "established"), &counters)
            .is_empty()
    );
    let due = c.due(t(2), true, &counters);
    assert_eq!(get(&due[0], "keytrail.evidence"), &s("wire"));
    assert_eq!(get(&due[0], "keytrail.use.count"), &Value::Int(2));
}

#[test]
fn repeated_uses_are_written_once_per_interval_with_counters() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(100));
    c.on_access(&mut access(0, 10, "container/a", FP, "file"), &counters);
    assert_eq!(
        c.on_connection(&connection(1, 10, "container/a", "established"), &counters)
            .len(),
        1
    );
    for i in 2..100 {
        assert!(
            c.on_connection(&connection(i, 10, "container/a", "established"), &counters)
                .is_empty()
        );
    }
    assert!(
        c.due(t(30), false, &counters).is_empty(),
        "the interval has not passed"
    );
    let due = c.due(t(61), false, &counters);
    assert_eq!(due.len(), 1);
    assert_eq!(get(&due[0], "keytrail.use.count"), &Value::Int(99));
    assert_eq!(get(&due[0], "keytrail.use.last_seen"), &s(&rfc3339(t(99))));
    assert_eq!(get(&due[0], "keytrail.use.first_seen"), &s(&rfc3339(t(1))));
    assert!(
        c.due(t(200), false, &counters).is_empty(),
        "nothing changed since"
    );
    assert_eq!(counters.emitted.load(Ordering::Relaxed), 2);
}

#[test]
fn another_process_of_the_workload_is_workload_evidence() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(100));
    c.on_access(&mut access(0, 11, "pod/ns/api", FP, "env"), &counters);
    let uses = c.on_connection(&connection(1, 12, "pod/ns/api", "established"), &counters);
    assert_eq!(uses.len(), 1);
    assert_eq!(get(&uses[0], "keytrail.evidence"), &s("workload"));
    // Plain processes are their own workload: no evidence across them.
    c.on_access(
        &mut access(0, 21, "process//usr/bin/x", FP2, "env"),
        &counters,
    );
    assert!(
        c.on_connection(
            &connection(1, 22, "process//usr/bin/x", "established"),
            &counters
        )
        .is_empty()
    );
}

#[test]
fn old_reads_exits_and_failed_connections_are_not_uses() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(100));
    c.on_access(&mut access(0, 10, "container/a", FP, "file"), &counters);
    assert!(
        c.on_connection(&connection(1, 10, "container/a", "failed"), &counters)
            .is_empty()
    );
    assert!(
        c.on_connection(
            &connection(601, 10, "container/b", "established"),
            &counters
        )
        .is_empty()
    );
    assert!(
        c.on_connection(
            &connection(601, 10, "container/a", "established"),
            &counters
        )
        .is_empty(),
        "read longer ago than the window"
    );
    c.on_access(
        &mut access(700, 30, "process//usr/bin/y", FP2, "file"),
        &counters,
    );
    c.on_exit(30);
    assert!(
        c.on_connection(
            &connection(701, 30, "process//usr/bin/y", "established"),
            &counters
        )
        .is_empty()
    );
}

#[test]
fn a_credential_in_two_workloads_is_shared_by_two_on_both() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(100));
    c.on_access(&mut access(0, 10, "container/a", FP, "file"), &counters);
    let a = c.on_connection(&connection(1, 10, "container/a", "established"), &counters);
    assert_eq!(get(&a[0], "keytrail.credential.shared_by"), &Value::Int(1));
    c.on_access(&mut access(2, 20, "container/b", FP, "file"), &counters);
    let b = c.on_connection(&connection(3, 20, "container/b", "established"), &counters);
    assert_eq!(get(&b[0], "keytrail.credential.shared_by"), &Value::Int(2));
    // a's edge is written again at the next sweep, interval or not.
    let due = c.due(t(4), false, &counters);
    assert_eq!(due.len(), 1);
    assert_eq!(get(&due[0], "keytrail.workload.name"), &s("a"));
    assert_eq!(
        get(&due[0], "keytrail.credential.shared_by"),
        &Value::Int(2)
    );
    assert_eq!(get(&due[0], "keytrail.use.count"), &Value::Int(1));
}

#[test]
fn the_same_credential_in_two_namespaces_is_flagged() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(100));
    let mut a = access(0, 10, "pod/prod/api", FP, "file");
    a.set("k8s.namespace.name", "prod");
    let mut b = access(0, 20, "pod/dev/api", FP, "file");
    b.set("k8s.namespace.name", "dev");
    c.on_access(&mut a, &counters);
    c.on_access(&mut b, &counters);
    let uses = c.on_connection(&connection(1, 20, "pod/dev/api", "established"), &counters);
    assert_eq!(
        get(&uses[0], "keytrail.credential.cross_namespace"),
        &Value::Bool(true)
    );
}

#[test]
fn edges_past_the_cap_are_evicted_and_counted() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(2));
    for (i, w) in ["container/a", "container/b", "container/c"]
        .iter()
        .enumerate()
    {
        let pid = 10 + i as u32;
        c.on_access(&mut access(0, pid, w, FP, "file"), &counters);
        assert_eq!(
            c.on_connection(&connection(1, pid, w, "established"), &counters)
                .len(),
            1
        );
    }
    assert_eq!(counters.evicted.load(Ordering::Relaxed), 1);
    assert_eq!(counters.edges.load(Ordering::Relaxed), 2);
}

#[test]
fn seeded_edges_continue_their_counts() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(100));
    c.seed(
        &[StoredUse {
            workload: "container/a".into(),
            fingerprint: FP.into(),
            server_address: "api.example.test".into(),
            server_port: 443,
            evidence: "wire".into(),
            count: 5,
            first_seen: t(0),
            last_seen: t(10),
        }],
        &[StoredHolder {
            fingerprint: FP.into(),
            workload: "container/z".into(),
            namespace: None,
        }],
        &counters,
    );
    c.on_access(&mut access(20, 10, "container/a", FP, "file"), &counters);
    assert!(
        c.on_connection(&connection(21, 10, "container/a", "established"), &counters)
            .is_empty(),
        "not new, not stronger: waits for the interval"
    );
    let due = c.due(t(100), false, &counters);
    assert_eq!(due.len(), 1);
    assert_eq!(get(&due[0], "keytrail.use.count"), &Value::Int(6));
    assert_eq!(get(&due[0], "keytrail.evidence"), &s("wire"));
    assert_eq!(get(&due[0], "keytrail.use.first_seen"), &s(&rfc3339(t(0))));
    assert_eq!(
        get(&due[0], "keytrail.credential.shared_by"),
        &Value::Int(2)
    );
}

#[test]
fn an_aws_key_id_on_the_wire_is_the_key_read_from_a_file() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(100));
    c.on_access(&mut access(0, 10, "container/a", FP, "file"), &counters);
    let mut w = wire(1, 10, "container/a", FP2);
    let uses = c.on_access(&mut w, &counters);
    assert_eq!(get(&w, "keytrail.credential.fingerprint"), &s(FP));
    assert_eq!(get(&uses[0], "keytrail.credential.fingerprint"), &s(FP));
    assert_eq!(get(&uses[0], "keytrail.evidence"), &s("wire"));
    // Another kind's id says nothing about which secret was sent.
    let mut other = wire(2, 10, "container/a", FP2);
    other.attrs.retain(|(k, _)| k != "keytrail.credential.kind");
    other.set("keytrail.credential.kind", "bearer_token");
    c.on_access(&mut other, &counters);
    assert_eq!(get(&other, "keytrail.credential.fingerprint"), &s(FP2));
}

#[test]
fn a_flood_of_holding_processes_pushes_out_the_oldest_not_every_holder() {
    let counters = CorrelateCounters::default();
    let mut c = Correlator::new(&config(100));
    // A process that holds a credential, then more holding processes than the table keeps.
    c.on_access(&mut access(0, 10, "process/victim", FP, "file"), &counters);
    let flood = super::MAX_HOLDERS as u32 + 10;
    for pid in 100..100 + flood {
        c.on_access(&mut access(0, pid, "process/flood", FP, "file"), &counters);
    }
    // The oldest (the first process) is gone; the recent ones, but for the very last few,
    // are still known (clearing the whole table when full kept only those few).
    let gone = c.on_connection(
        &connection(1, 10, "process/victim", "established"),
        &counters,
    );
    assert!(gone.is_empty());
    let recent = 100 + flood - 100;
    let uses = c.on_connection(
        &connection(1, recent, "process/flood", "established"),
        &counters,
    );
    assert_eq!(uses.len(), 1, "a recent holder was forgotten");
}
