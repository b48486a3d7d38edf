//! Uses: (workload, credential, destination) edges from real processes that read a credential
//! and then call a real local TLS server; the inventory they leave in the state file and the
//! `keytrail report` worklist made from it, across agent restarts. Never a value in any output.

use std::path::Path;

use keytrail_tests::{
    ALNUM, Agent, AgentRun, CgroupGuard, CgroupTree, Launch, assert_no_leak, aws::KeyFiles,
    keytrail, random, servers::TlsServer,
};
use serde_json::Value;

/// Use records are written again after one second when their counters change.
const FAST_USES: &str = "correlate:\n  emit_interval: 1s\n";

/// Sends `Authorization: Bearer $GITHUB_TOKEN` to https://api.example.test:PORT/ (127.0.0.1).
const BEARER_CLIENT: &str = r#"
import os, socket, ssl, sys, urllib.request
orig = socket.getaddrinfo
socket.getaddrinfo = lambda h, *a, **kw: orig("127.0.0.1" if h == "api.example.test" else h, *a, **kw)
req = urllib.request.Request(f"https://api.example.test:{sys.argv[1]}/",
                             headers={"Authorization": "Bearer " + os.environ["GITHUB_TOKEN"]})
urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=5).read()
"#;

const PATH: (&str, &str) = ("PATH", "/usr/local/bin:/usr/bin:/bin");

fn uses_of<'a>(events: &'a [Value], fingerprint: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["event.name"] == "keytrail.credential.use"
                && e["keytrail.credential.fingerprint"] == fingerprint
        })
        .collect()
}

fn report(state: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["report", "--state", state.to_str().unwrap()];
    all.extend_from_slice(args);
    keytrail(&all)
}

fn report_json(state: &Path, only: &str) -> Vec<Value> {
    let out = report(state, &["--format", "json", "--only", only]);
    assert!(out.status.success(), "report: {out:?}");
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    parsed.as_array().expect("a JSON array").clone()
}

fn entry<'a>(rows: &'a [Value], fingerprint: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["fingerprint"] == fingerprint)
}

/// Everything an agent run wrote that a user could see: JSON lines, log, and the state file.
fn assert_no_leak_anywhere(run: &AgentRun, state: &Path, secret: &str) {
    let text: String = run.events.iter().map(|e| e.to_string() + "\n").collect();
    assert_no_leak("JSON lines", &text, secret);
    assert_no_leak("agent log", &run.stderr, secret);
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", state.display());
        if let Ok(bytes) = std::fs::read(&file) {
            assert_no_leak(&file, &String::from_utf8_lossy(&bytes), secret);
        }
    }
}

#[test]
fn a_static_key_read_then_sent_is_a_use_with_wire_evidence_and_in_the_report() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("keytrail.db");
    // Planted first: the test itself writing the file would be a second workload holding it.
    let files = KeyFiles::plant(1);
    let key = &files.keys[0];
    let config = files.config(FAST_USES);
    let mut agent = Agent::launch(Launch {
        config: Some(&config),
        state: Some(&state),
        ..Launch::default()
    });
    let server = TlsServer::start("127.0.0.1");
    let cgroup = CgroupGuard::new("use-sigv4");
    let pid = key.sign_and_send(&cgroup, &server);

    let read = agent.wait_for("the key file read", |e| {
        e["keytrail.credential.source"] == "file" && e["process.pid"] == pid
    });
    let fp = read["keytrail.credential.fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let wire_use = agent.wait_for("a use with wire evidence", |e| {
        e["event.name"] == "keytrail.credential.use"
            && e["keytrail.credential.fingerprint"] == fp.as_str()
            && e["keytrail.evidence"] == "wire"
    });
    let run = agent.stop();
    assert_eq!(wire_use["severity"], "WARN", "{wire_use}");
    assert_eq!(wire_use["keytrail.credential.kind"], "aws_access_key");
    assert_eq!(wire_use["keytrail.credential.lifetime"], "static");
    assert_eq!(wire_use["keytrail.credential.id"], key.id.as_str());
    assert_eq!(wire_use["server.address"], "s3.example.test");
    assert_eq!(wire_use["server.port"], server.port);
    assert_eq!(wire_use["network.peer.address"], "127.0.0.1");
    assert_eq!(wire_use["process.pid"], pid);
    assert_eq!(wire_use["keytrail.cgroup.path"], cgroup.rel_path());
    assert_eq!(wire_use["keytrail.credential.shared_by"], 1, "{wire_use}");
    assert!(
        wire_use["keytrail.use.count"].as_u64() >= Some(1),
        "{wire_use}"
    );
    for key in [
        "keytrail.use.first_seen",
        "keytrail.use.last_seen",
        "keytrail.workload.kind",
        "keytrail.workload.name",
    ] {
        assert!(wire_use[key].is_string(), "{key} in {wire_use}");
    }
    // The SigV4 header names the key by id only: the wire sighting is the same credential.
    let wire_access = run
        .events
        .iter()
        .find(|e| e["keytrail.credential.source"] == "wire" && e["process.pid"] == pid)
        .expect("the wire access");
    assert_eq!(wire_access["keytrail.credential.fingerprint"], fp.as_str());
    // The first use of the edge came from the connection alone (the process had read the key).
    let uses = uses_of(&run.events, &fp);
    assert!(
        uses.iter().any(|u| u["keytrail.evidence"] == "process"),
        "no process-evidence use before the wire one: {uses:?}"
    );

    let rows = report_json(&state, "static");
    let row = entry(&rows, &fp).unwrap_or_else(|| panic!("key not in the report: {rows:?}"));
    assert_eq!(row["kind"], "aws_access_key", "{row}");
    assert_eq!(row["id"], key.id.as_str());
    assert_eq!(row["evidence"], "wire");
    assert_eq!(row["shared_by"], 1);
    let dest = format!("s3.example.test:{}", server.port);
    assert!(
        row["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == dest.as_str()),
        "{row}"
    );
    for format in ["table", "csv", "markdown", "json"] {
        let out = report(&state, &["--format", format]);
        assert!(out.status.success(), "report --format {format}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&key.id),
            "{format} report lacks the key id:\n{text}"
        );
        assert_no_leak(&format!("report --format {format}"), &text, &key.secret);
        if format == "table" {
            for line in text.lines() {
                assert!(
                    line.chars().count() <= 80,
                    "table line over 80 columns: {line:?}"
                );
            }
        }
    }
    let gate = report(&state, &["--fail-on", "static"]);
    assert_eq!(gate.status.code(), Some(3), "{gate:?}");
    assert_no_leak_anywhere(&run, &state, &key.secret);
}

#[test]
fn one_token_in_two_workloads_is_shared_by_two_and_short_lived_ones_are_not_static() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("keytrail.db");
    let mut agent = Agent::launch(Launch {
        config: Some(FAST_USES),
        state: Some(&state),
        ..Launch::default()
    });
    let server = TlsServer::start("127.0.0.1");
    let mut tree = CgroupTree::new("use-shared");
    let ids = [
        random(b"0123456789abcdef", 64),
        random(b"0123456789abcdef", 64),
    ];
    let leaves: Vec<_> = ids
        .iter()
        .map(|id| tree.leaf(&format!("system.slice/docker-{id}.scope")))
        .collect();
    let static_token = format!("ghp_{}", random(ALNUM, 36));
    let short_token = format!("ghs_{}", random(ALNUM, 36));
    let port = server.port.to_string();
    for leaf in &leaves {
        leaf.run(
            "python3",
            &["-c", BEARER_CLIENT, &port],
            &[PATH, ("GITHUB_TOKEN", &static_token)],
        );
    }
    leaves[0].run(
        "python3",
        &["-c", BEARER_CLIENT, &port],
        &[PATH, ("GITHUB_TOKEN", &short_token)],
    );

    let env_access = agent.wait_for("the static token at exec", |e| {
        e["keytrail.credential.source"] == "env"
            && e["keytrail.credential.lifetime"] == "static"
            && e["keytrail.cgroup.path"] == leaves[1].rel.as_str()
    });
    let fp = env_access["keytrail.credential.fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    // Both workloads' edges end up with shared_by = 2 (the first one is written again).
    let done = |a: &Agent| {
        let events = a.events();
        let shared: Vec<String> = uses_of(&events, &fp)
            .iter()
            .filter(|u| u["keytrail.credential.shared_by"] == 2)
            .map(|u| u["keytrail.cgroup.path"].as_str().unwrap_or("").to_string())
            .collect();
        leaves
            .iter()
            .all(|l| shared.contains(&l.rel))
            .then_some(Value::Null)
    };
    agent.wait_until("shared_by = 2 on both workloads", done);
    let run = agent.stop();
    let uses = uses_of(&run.events, &fp);
    for u in &uses {
        assert_eq!(u["keytrail.credential.kind"], "github_token", "{u}");
        assert_eq!(u["keytrail.workload.kind"], "container", "{u}");
        assert_eq!(u["server.address"], "api.example.test", "{u}");
    }
    let names: std::collections::BTreeSet<&str> = uses
        .iter()
        .map(|u| u["keytrail.workload.name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{uses:?}");

    let statics = report_json(&state, "static");
    let row =
        entry(&statics, &fp).unwrap_or_else(|| panic!("token not in the report: {statics:?}"));
    assert_eq!(row["shared_by"], 2, "{row}");
    assert_eq!(row["workloads"].as_array().unwrap().len(), 2, "{row}");
    let short_fp = run
        .events
        .iter()
        .find(|e| {
            e["keytrail.credential.source"] == "env"
                && e["keytrail.credential.lifetime"] == "short_lived"
                && e["keytrail.cgroup.path"] == leaves[0].rel.as_str()
        })
        .and_then(|e| e["keytrail.credential.fingerprint"].as_str())
        .expect("the short-lived token at exec")
        .to_string();
    assert!(
        entry(&statics, &short_fp).is_none(),
        "a short-lived token in --only static"
    );
    let all = report_json(&state, "all");
    let short = entry(&all, &short_fp).expect("the short-lived token in --only all");
    assert_eq!(short["lifetime"], "short_lived");
    for secret in [&static_token, &short_token] {
        assert_no_leak_anywhere(&run, &state, secret);
    }
}

#[test]
fn a_restart_on_the_same_state_continues_counts_without_duplicate_rows() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("keytrail.db");
    let server = TlsServer::start("127.0.0.1");
    let cgroup = CgroupGuard::new("use-restart");
    let files = KeyFiles::plant(1);
    let key = &files.keys[0];
    let config = files.config(FAST_USES);
    let mut counts = Vec::new();
    let mut fp = String::new();
    for round in 0..2 {
        let mut agent = Agent::launch(Launch {
            config: Some(&config),
            state: Some(&state),
            ..Launch::default()
        });
        let pid = key.sign_and_send(&cgroup, &server);
        let wire = agent.wait_for("a wire use", |e| {
            e["event.name"] == "keytrail.credential.use"
                && e["process.pid"] == pid
                && e["keytrail.evidence"] == "wire"
        });
        let wire = if round == 0 {
            wire
        } else {
            // After a restart the edge is not new: its counters come after the interval.
            agent.wait_for("the use count after the restart", |e| {
                e["event.name"] == "keytrail.credential.use"
                    && e["process.pid"] == pid
                    && e["keytrail.use.count"].as_u64() > Some(counts[0])
            })
        };
        fp = wire["keytrail.credential.fingerprint"]
            .as_str()
            .unwrap()
            .to_string();
        let run = agent.stop();
        let last = uses_of(&run.events, &fp)
            .last()
            .map(|u| u["keytrail.use.count"].as_u64().unwrap())
            .unwrap();
        counts.push(last);
        assert_no_leak_anywhere(&run, &state, &key.secret);
    }
    assert!(counts[1] > counts[0], "counts did not continue: {counts:?}");
    let rows = report_json(&state, "static");
    let matching: Vec<_> = rows
        .iter()
        .filter(|r| r["fingerprint"] == fp.as_str())
        .collect();
    assert_eq!(matching.len(), 1, "one row per credential: {rows:?}");
    assert_eq!(matching[0]["uses"], counts[1], "{rows:?}");
    // The agents of this file's other tests, running meanwhile, read the key file too when
    // they classify what they saw opened, and this agent reports their reads like any
    // process's: only the signing workload counts here.
    let holders: Vec<&str> = matching[0]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .filter(|w| *w != "process/keytrail")
        .collect();
    assert_eq!(holders.len(), 1, "{rows:?}");
}

#[test]
fn a_token_sent_as_a_user_name_is_the_credential_and_never_an_id() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("keytrail.db");
    let mut agent = Agent::launch(Launch {
        state: Some(&state),
        ..Launch::default()
    });
    let server = TlsServer::start("127.0.0.1");
    let token = format!("ghp_{}", random(ALNUM, 36));
    // The forms a token takes as a user name: a netrc login with a placeholder password (read
    // by curl --netrc from a job's home), and the same token in the Basic header it sends.
    let home = tempfile::Builder::new()
        .prefix("kt-job-")
        .tempdir()
        .unwrap();
    let netrc = home.path().join(".netrc");
    std::fs::write(
        &netrc,
        format!("machine api.example.test login {token} password x-oauth-basic\n"),
    )
    .unwrap();
    let cgroup = CgroupGuard::new("token-user");
    let url = format!("https://api.example.test:{}/", server.port);
    let resolve = format!("api.example.test:{}:127.0.0.1", server.port);
    let (pid, out) = keytrail_tests::run_in_cgroup(
        &cgroup,
        "curl",
        &[
            "-sk",
            "--netrc",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            &url,
        ],
        &[("HOME", home.path().to_str().unwrap()), PATH],
    );
    assert!(out.status.success(), "curl: {out:?}");
    let file = agent.wait_for("the netrc read", |e| {
        e["process.pid"] == pid && e["file.path"] == netrc.to_str().unwrap()
    });
    assert_eq!(file["keytrail.credential.kind"], "github_token", "{file}");
    let fp = file["keytrail.credential.fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let wire = agent.wait_for("the use with the token on the wire", |e| {
        e["event.name"] == "keytrail.credential.use"
            && e["process.pid"] == pid
            && e["keytrail.evidence"] == "wire"
    });
    // The Basic header's user name is the same credential as the netrc login.
    assert_eq!(
        wire["keytrail.credential.fingerprint"],
        fp.as_str(),
        "{wire}"
    );
    let run = agent.stop();
    for e in run.events.iter().filter(|e| e["process.pid"] == pid) {
        let id = e["keytrail.credential.id"].as_str().unwrap_or("");
        assert!(!id.contains("ghp_") || id == "ghp", "{e}");
    }
    assert_no_leak_anywhere(&run, &state, &token);
    for format in ["table", "json", "csv", "markdown"] {
        let out = report(&state, &["--format", format, "--only", "all"]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_no_leak(&format!("report --format {format}"), &text, &token);
    }
}
