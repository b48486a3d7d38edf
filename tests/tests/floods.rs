//! What the kernel does with more records than a workload should send: repeats are folded in
//! the kernel (counted, not sent), and each workload has a budget per family of records, so a
//! flood from one workload costs that workload its own records, never another workload's;
//! exec and exit records travel on a ring of their own.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use keytrail_tests::{
    ALNUM, Agent, CgroupGuard, Workload, in_cgroup, random, retry_until, run_in_cgroup,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");

/// These scenarios count what crosses the ring node-wide: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn last_stats(events: &[Value]) -> &Value {
    events
        .iter()
        .rfind(|e| e["event.name"] == "keytrail.agent.stats")
        .expect("a stats record")
}

fn counter(stats: &Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {stats}"))
}

#[test]
fn a_hundred_thousand_opens_of_one_file_are_one_record() {
    const OPENS: u64 = 100_000;
    let _alone = alone();
    let mut agent = Agent::start(None);
    let dir = tempfile::Builder::new()
        .prefix("kt-fold-")
        .tempdir()
        .unwrap();
    let key = dir.path().join("client.pem");
    std::fs::write(&key, "not a key").unwrap();
    let key = key.to_str().unwrap().to_string();
    let before = agent.events();
    let before = last_stats(&before).clone();

    let cgroup = CgroupGuard::new("fold");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    assert_eq!(
        w.run(&format!("open-repeat {key} {OPENS}")),
        OPENS.to_string()
    );
    let pid = w.pid();
    agent.wait_for("the first open", |e| {
        e["process.pid"] == pid && e["file.path"] == key.as_str()
    });
    drop(w);
    let run = agent.stop();
    let reads: Vec<_> = run
        .events
        .iter()
        .filter(|e| e["process.pid"] == pid && e["file.path"] == key.as_str())
        .collect();
    assert_eq!(reads.len(), 1, "{reads:#?}");
    let after = last_stats(&run.events);
    let delta = |k: &str| counter(after, k) - counter(&before, k);
    let folded = delta("keytrail.probe.file_openat.folded");
    let received = delta("keytrail.events.received");
    // Every repeat was counted in the kernel; the ring carried a handful of records (this
    // one, the workload's exec and exit, and whatever else ran on the node meanwhile).
    assert!(folded >= OPENS - 1, "folded {folded}");
    assert!(received < 500, "{received} records crossed the ring");
    assert_eq!(delta("keytrail.probe.file_openat.dropped"), 0);
}

/// A shell loop exec'ing /bin/true with a secret in its environment, in `cgroup`.
fn exec_storm(cgroup: &CgroupGuard) -> Child {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "while :; do /bin/true; done"])
        .env("GITHUB_TOKEN", format!("ghp_{}", random(ALNUM, 36)));
    in_cgroup(&mut cmd, cgroup);
    cmd.spawn().expect("exec storm")
}

#[test]
fn a_flood_from_one_workload_costs_no_other_workload_its_records() {
    let _alone = alone();
    let config = String::from_utf8(keytrail_tests::keytrail(&["config", "default"]).stdout)
        .unwrap()
        .replace("stats_interval: 60s", "stats_interval: 1s");
    let mut agent = Agent::start(Some(&config));
    let flood_dir = tempfile::Builder::new()
        .prefix("kt-flood-")
        .tempdir()
        .unwrap();
    let flood_dir = flood_dir.path().to_str().unwrap().to_string();

    // The flood: two processes opening 20,000 distinct watched files over and over, and an exec
    // storm with a secret in every environment, all in one cgroup.
    let noisy = CgroupGuard::new("flood");
    let mut flooders: Vec<Workload> = (0..2)
        .map(|_| Workload::spawn(WORKLOAD.as_ref(), &noisy))
        .collect();
    let mut storm = exec_storm(&noisy);
    let threads: Vec<_> = flooders
        .drain(..)
        .enumerate()
        .map(|(i, mut w)| {
            let dir = format!("{flood_dir}/{i}");
            std::thread::spawn(move || {
                let opens: u64 = w.run(&format!("open-cycle {dir} 20000 6")).parse().unwrap();
                (w, opens)
            })
        })
        .collect();

    // Meanwhile a quiet workload reads one credential file and starts five processes with a
    // secret each: every one of them must arrive.
    let quiet = CgroupGuard::new("quiet");
    let quiet_dir = tempfile::Builder::new()
        .prefix("kt-quiet-")
        .tempdir()
        .unwrap();
    let quiet_file = quiet_dir.path().join(".env");
    let token = format!("ghp_{}", random(ALNUM, 36));
    std::fs::write(&quiet_file, format!("GITHUB_TOKEN={token}\n")).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (reader, out) = run_in_cgroup(&quiet, "/bin/cat", &[quiet_file.to_str().unwrap()], &[]);
    assert!(out.status.success());
    let secrets: Vec<String> = (0..5)
        .map(|_| format!("ghp_{}", random(ALNUM, 36)))
        .collect();
    let execs: Vec<u32> = secrets
        .iter()
        .map(|s| run_in_cgroup(&quiet, "/bin/true", &[], &[("GITHUB_TOKEN", s)]).0)
        .collect();

    let mut opens = 0;
    for t in threads {
        let (w, n) = t.join().unwrap();
        opens += n;
        drop(w);
    }
    let _ = storm.kill();
    let _ = storm.wait();

    agent.wait_for("the quiet workload's file read", |e| {
        e["process.pid"] == reader && e["keytrail.credential.kind"] == "github_token"
    });
    for pid in &execs {
        agent.wait_for("a quiet workload's exec secret", |e| {
            e["process.pid"] == *pid && e["keytrail.credential.source"] == "env"
        });
    }
    // The flood lost records, counted against its own cgroup and named in a WARN record.
    let warn = retry_until("the over-budget record", || {
        agent.events().into_iter().find(|e| {
            e["event.name"] == "keytrail.workload.over_budget"
                && e["keytrail.cgroup.path"] == noisy.rel_path()
        })
    });
    assert_eq!(warn["severity"], "WARN", "{warn}");
    let run = agent.stop();
    let stats = last_stats(&run.events);
    assert!(
        counter(stats, "keytrail.budget.files.dropped") > 0,
        "{stats}"
    );
    assert!(
        run.events
            .iter()
            .filter(|e| e["event.name"] == "keytrail.workload.over_budget")
            .all(|e| e["keytrail.cgroup.path"] == noisy.rel_path()),
        "another workload was charged"
    );
    assert!(opens > 40_000, "the flood made only {opens} opens");
}

/// Connects `N` times to 127.0.0.1:PORT and sends, each time, the ClientHello Python's TLS
/// would send for the next of NAMES (in turn), then closes: a client that makes many short
/// connections, as fast as it can. MODE `gate` waits for a line on stdin after the first
/// connection; MODE `silent` makes two connections only: the first named by the first name,
/// then (after a line on stdin) one that stays silent until another line, then sends the
/// second name.
const HELLO_CLIENT: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def hello(name):
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()
port, n, mode, names = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
hellos = [hello(name) for name in names]
if mode == "silent":
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(hellos[0])
    s.close()
    sys.stdin.readline()
    s = socket.create_connection(("127.0.0.1", port))
    sys.stdin.readline()
    s.sendall(hellos[1])
    s.close()
    sys.exit(0)
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(hellos[i % len(hellos)])
    s.close()
    if i == 0 and mode == "gate":
        sys.stdin.readline()
"#;

/// A listener on 127.0.0.1 that accepts and closes every connection, in a thread.
fn sink_listener() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    port
}

/// Starts the hello client in `cgroup` holding a token, in `mode` (`run`, `gate`, `silent`:
/// see HELLO_CLIENT; a line on its stdin opens a gate). `script_dir` must outlive it.
fn hello_client(
    cgroup: &CgroupGuard,
    script_dir: &Path,
    port: u16,
    n: u32,
    mode: &str,
    names: &[&str],
) -> Child {
    let script = script_dir.join("hellos.py");
    std::fs::write(&script, HELLO_CLIENT).unwrap();
    let token = format!("ghp_{}", random(ALNUM, 36));
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(&script)
        .args([port.to_string(), n.to_string(), mode.to_string()])
        .args(names)
        .env_clear()
        .envs([("GITHUB_TOKEN", token.as_str()), ("PATH", "/usr/bin:/bin")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    in_cgroup(&mut cmd, cgroup);
    cmd.spawn().expect("spawning the hello client")
}

fn finished(child: Child) {
    let out = child.wait_with_output().expect("waiting for the client");
    assert!(out.status.success(), "client: {out:?}");
}

/// The last use record of process `pid` toward `address`.
fn last_use<'a>(events: &'a [Value], pid: u32, address: &str) -> Option<&'a Value> {
    events.iter().rfind(|e| {
        e["event.name"] == "keytrail.credential.use"
            && e["process.pid"] == pid
            && e["server.address"] == address
    })
}

#[test]
fn ten_thousand_connections_to_one_name_are_one_use_counted_exactly() {
    const CONNECTIONS: u32 = 10_000;
    let _alone = alone();
    let mut agent = Agent::start(None);
    let before = agent.events();
    let before = last_stats(&before).clone();
    let port = sink_listener();
    let cgroup = CgroupGuard::new("conn-storm");
    let dir = tempfile::tempdir().unwrap();
    let mut client = hello_client(
        &cgroup,
        dir.path(),
        port,
        CONNECTIONS,
        "gate",
        &["api.example.test"],
    );
    let pid = client.id();
    // Once the first connection is a use, the agent has handed the kernel its signature.
    agent.wait_for("the first use", |e| {
        e["event.name"] == "keytrail.credential.use" && e["process.pid"] == pid
    });
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    finished(client);
    let run = agent.stop();
    let use_ = last_use(&run.events, pid, "api.example.test").expect("a use");
    assert_eq!(use_["keytrail.use.count"], CONNECTIONS, "{use_}");
    assert_eq!(use_["keytrail.evidence"], "process", "{use_}");
    let uses: std::collections::BTreeSet<_> = run
        .events
        .iter()
        .filter(|e| e["event.name"] == "keytrail.credential.use" && e["process.pid"] == pid)
        .map(|e| e["server.address"].to_string())
        .collect();
    assert_eq!(uses.len(), 1, "{uses:?}");
    // The ring carried the named connection and a handful more, not one per connection.
    let after = last_stats(&run.events);
    let received =
        counter(after, "keytrail.events.received") - counter(&before, "keytrail.events.received");
    assert!(
        received < 100,
        "{received} records for {CONNECTIONS} connections: before {before}, after {after}"
    );
}

#[test]
fn two_names_behind_one_address_are_two_uses() {
    let _alone = alone();
    let mut agent = Agent::start(None);
    let port = sink_listener();
    let cgroup = CgroupGuard::new("two-names");
    let dir = tempfile::tempdir().unwrap();
    let client = hello_client(
        &cgroup,
        dir.path(),
        port,
        10,
        "run",
        &["a.example.test", "b.example.test"],
    );
    let pid = client.id();
    finished(client);
    for name in ["a.example.test", "b.example.test"] {
        agent.wait_for(name, |e| {
            e["event.name"] == "keytrail.credential.use"
                && e["process.pid"] == pid
                && e["server.address"] == name
        });
    }
    let run = agent.stop();
    for name in ["a.example.test", "b.example.test"] {
        let use_ = last_use(&run.events, pid, name).unwrap();
        assert_eq!(use_["keytrail.use.count"], 5, "{use_}");
    }
}

#[test]
fn a_repeat_silent_for_seconds_is_reported_once() {
    let _alone = alone();
    let mut agent = Agent::start(Some("output:\n  stats_interval: 1s\n"));
    let port = sink_listener();
    let cgroup = CgroupGuard::new("silent-repeat");
    let dir = tempfile::tempdir().unwrap();
    let names = ["api.example.test", "late.example.test"];
    let mut client = hello_client(&cgroup, dir.path(), port, 2, "silent", &names);
    let pid = client.id();
    agent.wait_for("the first use", |e| {
        e["event.name"] == "keytrail.credential.use" && e["process.pid"] == pid
    });
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    // The kernel holds the second connect record (it may repeat the first) until the agent,
    // seeing it silent for seconds, takes it.
    agent.wait_for("the held record taken", |e| {
        e["event.name"] == "keytrail.agent.stats" && e["keytrail.net.held_taken"] == 1
    });
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    finished(client);
    agent.wait_for("the late name", |e| {
        e["event.name"] == "keytrail.credential.use" && e["server.address"] == names[1]
    });
    let run = agent.stop();
    for name in names {
        let use_ = last_use(&run.events, pid, name).expect(name);
        assert_eq!(use_["keytrail.use.count"], 1, "{use_}");
    }
    assert_eq!(counter(last_stats(&run.events), "keytrail.net.folded"), 0);
}
