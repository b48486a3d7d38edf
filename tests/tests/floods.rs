//! What the kernel does with more records than a workload should send: repeats are folded in
//! the kernel (counted, not sent), and each workload has a budget per family of records, so a
//! flood from one workload costs that workload its own records, never another workload's;
//! exec and exit records travel on a ring of their own.

use std::process::{Child, Command};

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
