//! File opens of credential paths, end to end: the real agent and kernel programs, a workload
//! process in a fresh cgroup and its own mount namespace (so planted files never touch the
//! host), and the JSON lines the agent writes.

use keytrail_tests::{Agent, CgroupGuard, Workload, accesses_of};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");

/// The embedded watch list plus /proc/*/stat and /proc/*/cgroup, which the agent itself reads
/// for every process it names: if its self-exclusion failed, its own reads would show up.
fn config_with_self_bait() -> String {
    let default = String::from_utf8(keytrail_tests::keytrail(&["config", "default"]).stdout)
        .expect("utf-8 config");
    let bait = "    - /proc/*/stat\n    - /proc/*/cgroup\n";
    let config = default.replacen("  paths:\n", &format!("  paths:\n{bait}"), 1);
    assert!(
        config.contains("/proc/*/stat"),
        "watch list not found in the default config"
    );
    config.replace("stats_interval: 60s", "stats_interval: 1s")
}

fn assert_opener(e: &Value, w: &Workload, cgroup: &CgroupGuard) {
    assert_eq!(e["process.pid"], w.pid(), "{e}");
    assert_eq!(
        e["process.executable.path"],
        w.exe().to_str().unwrap(),
        "{e}"
    );
    assert_eq!(e["keytrail.cgroup.path"], cgroup.rel_path(), "{e}");
    assert_eq!(e["keytrail.cgroup.id"], cgroup.id(), "{e}");
    assert_eq!(e["keytrail.credential.source"], "file", "{e}");
    assert!(
        e["process.creation.time"]
            .as_str()
            .is_some_and(|t| t.starts_with("20") && t.ends_with('Z')),
        "{e}"
    );
    assert_eq!(e["severity"], "INFO", "{e}");
}

#[test]
fn secret_file_opens_are_reported_with_process_and_cgroup() {
    let mut agent = Agent::start(Some(&config_with_self_bait()));
    let agent_pid = agent.pid();
    let cgroup = CgroupGuard::new("files");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    let plain_dir = tempfile::Builder::new()
        .prefix("kt-plain-")
        .tempdir()
        .unwrap();

    // Plant credentials inside the workload's own mount namespace: /root is a private tmpfs.
    w.run("unshare-mount");
    w.run("tmpfs /root");
    w.run("write /root/.aws/credentials");
    w.run("write /root/certs/client.pem");
    w.run("write /root/.ssh/id_ed25519");
    // Kernel filter paths other than absolute prefixes: a directory tail (`/.ssh/` for
    // ~/.ssh/* under /home/*) and a basename prefix (`.env.` for **/.env.*).
    w.run("tmpfs /home");
    w.run("tmpfs /srv");
    w.run("write /home/kt-user/.ssh/id_ed25519");
    w.run("write /srv/app/.env.production");

    // 1. absolute path, 2. relative path after chdir, 3. openat2, 4. a watched path that is missing.
    assert!(w.run("open /root/.aws/credentials").parse::<i64>().unwrap() >= 0);
    w.run("chdir /root/certs");
    assert!(w.run("open client.pem").parse::<i64>().unwrap() >= 0);
    assert!(
        w.run("openat2 /root/.ssh/id_ed25519")
            .parse::<i64>()
            .unwrap()
            >= 0
    );
    assert!(
        w.run("open /home/kt-user/.ssh/id_ed25519")
            .parse::<i64>()
            .unwrap()
            >= 0
    );
    assert!(
        w.run("open /srv/app/.env.production")
            .parse::<i64>()
            .unwrap()
            >= 0
    );
    assert_eq!(w.run("open /root/.pgpass"), (-libc::ENOENT).to_string());
    // 5. a thousand opens of files nobody watches.
    let plain = plain_dir.path().join("many");
    assert_eq!(
        w.run(&format!("open-many {} 1000", plain.display())),
        "1000"
    );

    agent.wait_for("the missing .pgpass", |e| {
        e["file.path"] == "/root/.pgpass" && e["process.pid"] == w.pid()
    });
    // The workload is still alive here, so stopping now proves nothing is lost at shutdown.
    let run = agent.stop();
    assert_eq!(run.exit_code, Some(0), "agent log:\n{}", run.stderr);
    let events = run.events;

    for (path, syscall) in [
        ("/root/.aws/credentials", "openat"),
        ("/root/certs/client.pem", "openat"),
        ("/root/.ssh/id_ed25519", "openat2"),
        ("/home/kt-user/.ssh/id_ed25519", "openat"),
        ("/srv/app/.env.production", "openat"),
    ] {
        // Planting the file was a write-open, reported as such; the read is reported once.
        let hits: Vec<_> = accesses_of(&events, &cgroup, path)
            .into_iter()
            .filter(|e| e["keytrail.file.open.access"] == "read")
            .collect();
        assert_eq!(hits.len(), 1, "expected one read of {path}, got {hits:#?}");
        let e = hits[0];
        assert_opener(e, &w, &cgroup);
        assert_eq!(e["keytrail.file.open.outcome"], "ok", "{e}");
        assert_eq!(e["keytrail.file.open.syscall"], syscall, "{e}");
        assert_eq!(e["keytrail.file.open.access"], "read", "{e}");
        assert!(e.get("error.type").is_none(), "{e}");
    }

    let missing = accesses_of(&events, &cgroup, "/root/.pgpass");
    assert_eq!(missing.len(), 1, "{missing:#?}");
    assert_opener(missing[0], &w, &cgroup);
    assert_eq!(missing[0]["keytrail.file.open.outcome"], "failed");
    assert_eq!(missing[0]["error.type"], "ENOENT");

    let plain_prefix = plain.to_str().unwrap();
    let leaked: Vec<_> = events
        .iter()
        .filter(|e| {
            e["file.path"]
                .as_str()
                .is_some_and(|p| p.starts_with(plain_prefix))
        })
        .collect();
    assert!(leaked.is_empty(), "non-watched files reported: {leaked:#?}");

    // The kernel prefilter, not userspace, kept the 1000 plain opens out: few opens passed it.
    let last = events
        .iter()
        .rev()
        .find(|e| e["event.name"] == "keytrail.agent.stats")
        .expect("final stats");
    assert_eq!(last["keytrail.agent.final"], true);
    let seen = last["keytrail.probe.file_openat.seen"].as_u64().unwrap();
    assert!(
        (3..500).contains(&seen),
        "file_openat passed {seen} opens to userspace"
    );
    assert_eq!(last["keytrail.probe.file_openat.dropped"], 0);
    assert_eq!(last["keytrail.probes.failed"], 0);

    // Self-exclusion: the agent read /proc/<pid>/stat and /proc/<pid>/cgroup (both watched
    // here) for the workload, yet none of its own opens is reported.
    let own: Vec<_> = events
        .iter()
        .filter(|e| e["process.pid"] == agent_pid)
        .collect();
    assert!(own.is_empty(), "agent reported its own opens: {own:#?}");
}

#[test]
fn bad_config_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "watch:\n  paths:\n    - /etc/ok/**\n    - relative/path\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();

    let check = keytrail_tests::keytrail(&["config", "check", bad]);
    assert_eq!(check.status.code(), Some(2));
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("watch.paths[1]"), "{err}");

    let agent = keytrail_tests::keytrail(&["agent", "--config", bad, "--duration", "1"]);
    assert_eq!(agent.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&agent.stderr).contains("watch.paths[1]"));

    std::fs::write(dir.path().join("typo.yaml"), "output:\n  jsonll: x\n").unwrap();
    let typo = keytrail_tests::keytrail(&[
        "config",
        "check",
        dir.path().join("typo.yaml").to_str().unwrap(),
    ]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("jsonll"));

    let ok = keytrail_tests::keytrail(&["config", "default"]);
    std::fs::write(dir.path().join("default.yaml"), &ok.stdout).unwrap();
    let check = keytrail_tests::keytrail(&[
        "config",
        "check",
        dir.path().join("default.yaml").to_str().unwrap(),
    ]);
    assert_eq!(check.status.code(), Some(0));
}

#[test]
fn missing_capabilities_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set=-sys_admin,-bpf,-perfmon", "--"])
        .arg(keytrail_tests::keytrail_bin())
        .args(["agent", "--duration", "1", "--state"])
        .arg(dir.path().join("keytrail.db"))
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for cap in ["CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON"] {
        assert!(err.contains(cap), "{cap} not named in: {err}");
    }
}
