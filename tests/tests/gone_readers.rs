//! Readers that are gone before the agent looks (`cat`, cron jobs, CI steps): their files are
//! read through any live process of the reader's mount namespace, which the kernel records at
//! the open, whatever cgroup the reader had; only a namespace with no process left is
//! unreadable, and then it says so.

use keytrail_tests::{ALNUM, Agent, CgroupGuard, Workload, assert_no_leak, random, run_in_cgroup};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");

/// A GitHub classic token: static, recognised by its prefix.
fn token() -> String {
    format!("ghp_{}", random(ALNUM, 36))
}

#[test]
fn short_lived_readers_in_their_own_cgroups_on_the_host_are_all_classified() {
    const READERS: usize = 200;
    let mut agent = Agent::start(None);
    let dir = tempfile::Builder::new()
        .prefix("kt-gone-")
        .tempdir()
        .unwrap();
    let tokens: Vec<String> = (0..READERS).map(|_| token()).collect();
    let paths: Vec<String> = (0..READERS)
        .map(|i| {
            let d = dir.path().join(format!("job-{i}"));
            std::fs::create_dir(&d).unwrap();
            let p = d.join(".env");
            std::fs::write(&p, format!("GITHUB_TOKEN={}\n", tokens[i])).unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();

    // Every reader runs and exits, and its cgroup is removed, before the agent looks.
    agent.pause();
    let mut cgroup_paths = Vec::new();
    for p in &paths {
        let cgroup = CgroupGuard::new("job");
        let (_, out) = run_in_cgroup(&cgroup, "/bin/cat", &[p], &[]);
        assert!(out.status.success());
        cgroup_paths.push(cgroup.rel_path().to_string());
    }
    agent.resume();

    let events = agent.wait_until("every reader's access", |a| {
        let events = a.events();
        let n = events.iter().filter(|e| is_read_of_one(e, &paths)).count();
        (n >= READERS).then_some(Value::Array(events))
    });
    let reads: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| is_read_of_one(e, &paths))
        .collect();
    assert_eq!(reads.len(), READERS);
    for e in &reads {
        assert_eq!(e["keytrail.credential.kind"], "github_token", "{e}");
        assert!(e.get("keytrail.credential.unreadable").is_none(), "{e}");
        assert!(
            cgroup_paths
                .iter()
                .any(|c| e["keytrail.cgroup.path"] == c.as_str()),
            "{e}"
        );
    }
    let run = agent.stop();
    let all: String = run.events.iter().map(Value::to_string).collect();
    for t in &tokens {
        assert_no_leak("JSON lines", &all, t);
    }
}

fn is_read_of_one(e: &Value, paths: &[String]) -> bool {
    e["event.name"] == "keytrail.credential.access"
        && e["process.executable.name"] == "cat"
        && e["file.path"]
            .as_str()
            .is_some_and(|p| paths.iter().any(|x| x == p))
}

#[test]
fn a_container_whose_reader_exited_is_read_through_a_sibling_of_its_namespace() {
    let mut agent = Agent::start(None);
    let container = CgroupGuard::new("ns-reader");
    let sibling_cgroup = CgroupGuard::new("ns-sibling");
    let secret = token();
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &container);
    w.run("unshare-mount");
    w.run("tmpfs /root");
    w.run(&format!("write-text /root/app/.env GITHUB_TOKEN={secret}"));
    // A sibling in the same mount namespace, in another cgroup, outlives the reader.
    let sibling: u32 = w.run("fork-sleep").parse().unwrap();
    sibling_cgroup.adopt(sibling);

    agent.pause();
    let reader: u64 = w.run("fork-open /root/app/.env").parse().unwrap();
    drop(w);
    agent.resume();

    let e = agent.wait_for("the exited reader's access", |e| {
        e["process.pid"] == reader && e["file.path"] == "/root/app/.env"
    });
    assert_eq!(e["keytrail.credential.kind"], "github_token", "{e}");
    assert_eq!(e["keytrail.file.read_via"], "namespace_peer", "{e}");
    let run = agent.stop();
    let all: String = run.events.iter().map(Value::to_string).collect();
    assert_no_leak("JSON lines", &all, &secret);
    assert_no_leak("agent log", &run.stderr, &secret);
}

#[test]
fn a_reader_whose_namespace_is_gone_is_reported_as_such() {
    let mut agent = Agent::start(None);
    let cgroup = CgroupGuard::new("ns-gone");
    let secret = token();
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    w.run("unshare-mount");
    w.run("tmpfs /root");
    agent.pause();
    w.run(&format!("write-text /root/app/.env GITHUB_TOKEN={secret}"));
    let reader: u64 = w.run("fork-open /root/app/.env").parse().unwrap();
    drop(w);
    agent.resume();
    let e = agent.wait_for("the access of the vanished namespace", |e| {
        e["process.pid"] == reader && e["file.path"] == "/root/app/.env"
    });
    assert_eq!(e["keytrail.credential.kind"], "unknown", "{e}");
    assert_eq!(
        e["keytrail.credential.unreadable"],
        "the reader's mount namespace is gone (no process lives in it any more)",
        "{e}"
    );
    let run = agent.stop();
    let stats = run
        .events
        .iter()
        .rfind(|e| e["event.name"] == "keytrail.agent.stats")
        .unwrap();
    assert!(
        stats["keytrail.files.unreadable.namespace_gone"]
            .as_u64()
            .unwrap()
            >= 1,
        "{stats}"
    );
}
