//! Credential classification in the running agent: what a workload's file holds (kind, id,
//! lifetime, fingerprint, age), read safely through the workload's own root, for readers that
//! are already gone too, and never a secret in any output.

use keytrail_tests::{
    ALNUM, Agent, CgroupGuard, Workload, accesses_of, assert_no_leak, keytrail, random,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");

/// A fake AWS key pair: (key id, secret).
fn aws_pair() -> (String, String) {
    let id = format!("AKIA{}", random(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
    let secret = random(ALNUM, 40);
    (id, secret)
}

fn aws_file(id: &str, secret: &str) -> String {
    format!("[default]\\naws_access_key_id = {id}\\naws_secret_access_key = {secret}\\n")
}

/// Gives the workload a private mount namespace with a tmpfs /root holding an AWS key file.
fn plant_aws_credentials(w: &mut Workload, id: &str, secret: &str) {
    w.run("unshare-mount");
    w.run("tmpfs /root");
    w.run(&format!(
        "write-text /root/.aws/credentials {}",
        aws_file(id, secret)
    ));
}

fn reads_of<'a>(events: &'a [Value], cgroup: &CgroupGuard, path: &str) -> Vec<&'a Value> {
    accesses_of(events, cgroup, path)
        .into_iter()
        .filter(|e| e["keytrail.file.open.access"] == "read")
        .collect()
}

#[test]
fn static_aws_key_file_is_classified_and_never_leaked() {
    let mut agent = Agent::start(None);
    let cgroup = CgroupGuard::new("aws");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    let (id, secret) = aws_pair();
    plant_aws_credentials(&mut w, &id, &secret);
    w.run("open /root/.aws/credentials");

    let e = agent.wait_for("the classified read", |e| {
        e["file.path"] == "/root/.aws/credentials"
            && e["keytrail.file.open.access"] == "read"
            && e["process.pid"] == w.pid()
    });
    assert_eq!(e["keytrail.credential.kind"], "aws_access_key", "{e}");
    assert_eq!(e["keytrail.credential.lifetime"], "static", "{e}");
    assert_eq!(e["keytrail.credential.id"], id.as_str(), "{e}");
    assert_eq!(e["severity"], "WARN", "{e}");
    assert_eq!(e["process.pid"], w.pid(), "{e}");
    let fp = e["keytrail.credential.fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fp.len() == 36 && fp.starts_with("kt1:") && fp[4..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{fp}"
    );
    assert!(e["keytrail.credential.age_s"].as_u64().is_some(), "{e}");

    // `keytrail classify` with the agent's state directory gives the same fingerprint.
    let state = agent.dir.path().join("state").join("keytrail.db");
    let host_copy = agent.dir.path().join("credentials");
    std::fs::write(&host_copy, aws_file(&id, &secret).replace("\\n", "\n")).unwrap();
    let out = keytrail(&[
        "classify",
        "--state",
        state.to_str().unwrap(),
        host_copy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let classify_out = String::from_utf8(out.stdout).unwrap();
    let line: Value = serde_json::from_str(classify_out.lines().next().unwrap()).unwrap();
    assert_eq!(line["keytrail.credential.kind"], "aws_access_key", "{line}");
    assert_eq!(
        line["keytrail.credential.fingerprint"],
        fp.as_str(),
        "{line}"
    );

    let run = agent.stop();
    let all_events: String = run.events.iter().map(|e| e.to_string()).collect();
    assert_no_leak("JSON lines", &all_events, &secret);
    assert_no_leak("agent log", &run.stderr, &secret);
    assert_no_leak("classify output", &classify_out, &secret);
    assert_no_leak(
        "classify stderr",
        &String::from_utf8_lossy(&out.stderr),
        &secret,
    );
}

#[test]
fn symlink_in_a_workload_root_is_not_followed_to_the_host() {
    let mut agent = Agent::start(None);
    // A credential on the host, at a path that exists inside the workload's root too, where it
    // holds only a decoy.
    let host = tempfile::Builder::new()
        .prefix("kt-host-")
        .tempdir()
        .unwrap();
    let (host_id, host_secret) = aws_pair();
    let host_file = host.path().join("credentials");
    std::fs::write(
        &host_file,
        aws_file(&host_id, &host_secret).replace("\\n", "\n"),
    )
    .unwrap();
    let new_root = tempfile::Builder::new()
        .prefix("kt-root-")
        .tempdir()
        .unwrap();
    let new_root = new_root.path().to_str().unwrap().to_string();
    let host_file = host_file.to_str().unwrap();

    let cgroup = CgroupGuard::new("chroot");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    w.run("unshare-mount");
    w.run(&format!("tmpfs {new_root}"));
    w.run(&format!(
        "write-text {new_root}{host_file} decoy, nothing to see"
    ));
    w.run(&format!(
        "symlink {host_file} {new_root}/root/.aws/credentials"
    ));
    w.run(&format!("chroot {new_root}"));
    assert!(w.run("open /root/.aws/credentials").parse::<i64>().unwrap() >= 0);

    let e = agent.wait_for("the read through the symlink", |e| {
        e["file.path"] == "/root/.aws/credentials"
            && e["keytrail.file.open.access"] == "read"
            && e["process.pid"] == w.pid()
    });
    // Read inside the workload's root: the decoy, not the host's key.
    assert_eq!(e["keytrail.credential.kind"], "unknown", "{e}");
    assert!(e.get("keytrail.credential.unrecognised").is_some(), "{e}");
    let run = agent.stop();
    let all: String = run.events.iter().map(|e| e.to_string()).collect();
    assert!(!all.contains(&host_id), "the host's key was read");
    assert_no_leak("JSON lines", &all, &host_secret);
}

#[test]
fn short_lived_reader_is_read_through_its_cgroup_peer() {
    let mut agent = Agent::start(None);
    let cgroup = CgroupGuard::new("peer");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    let (id, secret) = aws_pair();
    plant_aws_credentials(&mut w, &id, &secret);
    // The agent has seen the workload (in its private mount namespace) write the file.
    agent.wait_for("the planting write", |e| {
        e["file.path"] == "/root/.aws/credentials" && e["process.pid"] == w.pid()
    });

    // With the agent frozen, a child reads the file and is reaped before the agent sees it.
    agent.pause();
    let child: u64 = w.run("fork-open /root/.aws/credentials").parse().unwrap();
    agent.resume();
    assert!(!std::path::Path::new(&format!("/proc/{child}")).exists());

    let e = agent.wait_for("the short-lived read", |e| {
        e["process.pid"] == child && e["file.path"] == "/root/.aws/credentials"
    });
    assert_eq!(e["keytrail.credential.kind"], "aws_access_key", "{e}");
    assert_eq!(e["keytrail.credential.id"], id.as_str(), "{e}");
    assert_eq!(e["keytrail.file.read_via"], "cgroup_peer", "{e}");
    assert_eq!(e["keytrail.cgroup.path"], cgroup.rel_path(), "{e}");
    let run = agent.stop();
    assert_no_leak("agent log", &run.stderr, &secret);
    assert_eq!(
        reads_of(&run.events, &cgroup, "/root/.aws/credentials").len(),
        1
    );
}

#[test]
fn reading_another_process_environment_is_reported_with_its_target() {
    let mut agent = Agent::start(None);
    let (id, secret) = aws_pair();
    let target_cg = CgroupGuard::new("env-target");
    let target = Workload::spawn_with_env(
        WORKLOAD.as_ref(),
        &target_cg,
        &[
            ("AWS_ACCESS_KEY_ID", id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ],
    );
    let reader_cg = CgroupGuard::new("env-reader");
    let mut reader = Workload::spawn(WORKLOAD.as_ref(), &reader_cg);
    // Its own environment is not another process's.
    reader.run("open /proc/self/environ");
    let environ = format!("/proc/{}/environ", target.pid());
    assert!(
        reader
            .run(&format!("open {environ}"))
            .parse::<i64>()
            .unwrap()
            >= 0
    );

    let task_environ = format!("/proc/{0}/task/{0}/environ", target.pid());
    assert!(
        reader
            .run(&format!("open {task_environ}"))
            .parse::<i64>()
            .unwrap()
            >= 0
    );
    agent.wait_for("the task environ read", |e| {
        e["file.path"] == task_environ.as_str() && e["process.pid"] == reader.pid()
    });
    let e = agent.wait_for("the environ read", |e| {
        e["file.path"] == environ.as_str() && e["process.pid"] == reader.pid()
    });
    assert_eq!(e["keytrail.credential.source"], "proc_environ", "{e}");
    assert_eq!(e["keytrail.target.pid"], target.pid(), "{e}");
    assert_eq!(
        e["keytrail.target.cgroup.path"],
        target_cg.rel_path(),
        "{e}"
    );
    assert_eq!(e["keytrail.cgroup.path"], reader_cg.rel_path(), "{e}");
    assert_eq!(e["keytrail.credential.kind"], "aws_access_key", "{e}");
    assert_eq!(e["keytrail.credential.lifetime"], "static", "{e}");
    let run = agent.stop();
    let mine: Vec<_> = run
        .events
        .iter()
        .filter(|e| e["keytrail.cgroup.path"] == reader_cg.rel_path())
        .collect();
    assert!(
        mine.iter().all(|e| e["file.path"] != "/proc/self/environ"),
        "own environment reported: {mine:#?}"
    );
    assert!(
        mine.iter()
            .any(|e| e["keytrail.credential.id"] == id.as_str()),
        "{mine:#?}"
    );
    // The same file through the task directory of the target's main thread.
    let task_environ = format!("/proc/{0}/task/{0}/environ", target.pid());
    assert!(
        mine.iter().any(|e| e["file.path"] == task_environ.as_str()
            && e["keytrail.credential.source"] == "proc_environ"
            && e["keytrail.credential.id"] == id.as_str()),
        "{mine:#?}"
    );
    let all: String = run.events.iter().map(|e| e.to_string()).collect();
    assert_no_leak("JSON lines", &all, &secret);
    assert_no_leak("agent log", &run.stderr, &secret);
}
