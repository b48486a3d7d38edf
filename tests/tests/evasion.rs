//! Ways around the filter: a credential file read through another spelling of its path, another
//! name for the same file (hard link, symlink, bind mount), a path longer than the kernel's
//! copy window, or a relative path whose directory changes right after the open. Each is
//! reported with the credential's fingerprint, or reported as unresolved, never lost.

use keytrail_tests::{
    ALNUM, Agent, CgroupGuard, Workload, assert_no_leak, random, retry_until, run_in_cgroup,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");

const TOKEN_PATH: &str = "/run/secrets/app/token";

/// A workload with a private /run holding a GitHub token at TOKEN_PATH, which the agent has
/// classified (returns the token and its fingerprint).
fn planted(agent: &mut Agent, w: &mut Workload) -> (String, String) {
    let token = format!("ghp_{}", random(ALNUM, 36));
    w.run("unshare-mount");
    w.run("tmpfs /run");
    w.run(&format!("write-text {TOKEN_PATH} {token}"));
    assert!(w.run(&format!("open {TOKEN_PATH}")).parse::<i64>().unwrap() >= 0);
    let pid = w.pid();
    let e = agent.wait_for("the canonical read", |e| {
        e["process.pid"] == pid
            && e["file.path"] == TOKEN_PATH
            && e["keytrail.file.open.access"] == "read"
            && e["keytrail.credential.kind"] == "github_token"
    });
    let fp = e["keytrail.credential.fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    (token, fp)
}

/// Makes the workload fork a child that opens `path` and exits, until the agent reports a
/// read by one of those children with fingerprint `fp` (kernel state the agent adds, such as a
/// known file, lands a moment after the record that taught it). Returns that report.
fn child_read_reported(agent: &Agent, w: &mut Workload, path: &str, fp: &str) -> Value {
    let mut children = Vec::new();
    retry_until(path, || {
        children.push(w.run(&format!("fork-open {path}")).parse::<u64>().unwrap());
        agent.events().into_iter().find(|e| {
            e["event.name"] == "keytrail.credential.access"
                && e["process.pid"]
                    .as_u64()
                    .is_some_and(|p| children.contains(&p))
                && e["keytrail.credential.fingerprint"] == fp
        })
    })
}

#[test]
fn other_spellings_of_a_watched_path_are_reported() {
    let mut agent = Agent::start(None);
    let cgroup = CgroupGuard::new("spellings");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    let (token, fp) = planted(&mut agent, &mut w);

    // Spellings the kernel flags for userspace to normalise, and mid-path `.`, `..` and `//`,
    // caught by the file's identity once it is classified.
    for spelled in [
        "//run/secrets/app/token",
        "/./run/secrets/app/token",
        "/proc/self/root/run/secrets/app/token",
        "/proc/thread-self/root/run/secrets/app/token",
        "/run/secrets/./app/token",
        "/run/secrets/app/../app/token",
        "/run//secrets/app/token",
    ] {
        let e = child_read_reported(&agent, &mut w, spelled, &fp);
        assert_eq!(
            e["keytrail.credential.kind"], "github_token",
            "{spelled}: {e}"
        );
        if spelled.starts_with("/proc/") {
            assert_eq!(e["keytrail.file.opened_as"], spelled, "{e}");
            assert_eq!(e["file.path"], TOKEN_PATH, "{e}");
        }
    }

    // Another process reaching into the workload's root from the host's namespace.
    let host = CgroupGuard::new("spellings-host");
    let through = format!("/proc/{}/root{TOKEN_PATH}", w.pid());
    let (reader, out) = run_in_cgroup(&host, "/bin/cat", &[&through], &[]);
    assert!(out.status.success(), "{out:?}");
    let e = agent.wait_for("the read through /proc/PID/root", |e| {
        e["process.pid"] == reader
    });
    assert_eq!(e["keytrail.credential.fingerprint"], fp.as_str(), "{e}");
    assert_eq!(e["keytrail.file.opened_as"], through.as_str(), "{e}");

    let run = agent.stop();
    let all: String = run.events.iter().map(Value::to_string).collect();
    assert_no_leak("JSON lines", &all, &token);
    assert_no_leak("agent log", &run.stderr, &token);
}

#[test]
fn another_name_for_a_known_credential_file_is_reported_with_its_fingerprint() {
    let mut agent = Agent::start(None);
    let cgroup = CgroupGuard::new("other-names");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    let (token, fp) = planted(&mut agent, &mut w);
    w.run("tmpfs /mnt");
    // A hard link, a symlink, and a bind mount of the directory.
    w.run(&format!("link {TOKEN_PATH} /run/innocent.txt"));
    w.run(&format!("symlink {TOKEN_PATH} /mnt/readme.md"));
    w.run("bind /run/secrets/app /mnt/notes");
    for name in ["/run/innocent.txt", "/mnt/readme.md", "/mnt/notes/token"] {
        let e = child_read_reported(&agent, &mut w, name, &fp);
        assert_eq!(e["keytrail.file.matched_by"], "identity", "{name}: {e}");
        assert_eq!(e["keytrail.credential.kind"], "github_token", "{name}: {e}");
    }
    // A descriptor still open names the file by the name it was opened with.
    let pid = w.pid();
    assert!(w.run("open-hold /run/innocent.txt").parse::<i64>().unwrap() >= 0);
    let e = agent.wait_for("the held hard link", |e| {
        e["process.pid"] == pid && e["file.path"] == "/run/innocent.txt"
    });
    assert_eq!(e["keytrail.credential.fingerprint"], fp.as_str(), "{e}");
    let run = agent.stop();
    let all: String = run.events.iter().map(Value::to_string).collect();
    assert_no_leak("JSON lines", &all, &token);
}

#[test]
fn a_known_file_stays_known_when_another_filesystem_has_a_file_of_the_same_number() {
    let mut agent = Agent::start(None);
    let cgroup = CgroupGuard::new("same-number");
    // Two private /run tmpfs filled the same way: their token files get the same inode number.
    let mut first = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    let (token, fp) = planted(&mut agent, &mut first);
    let mut second = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    let (other_token, other_fp) = planted(&mut agent, &mut second);
    let inode = |w: &Workload| {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(format!("/proc/{}/root{TOKEN_PATH}", w.pid())).unwrap();
        (m.ino(), m.dev())
    };
    let (a, b) = (inode(&first), inode(&second));
    assert!(
        a.0 == b.0 && a.1 != b.1,
        "not the same number on two devices: {a:?} {b:?}"
    );
    // Both are still caught by identity under another name.
    first.run(&format!("link {TOKEN_PATH} /run/innocent.txt"));
    second.run(&format!("link {TOKEN_PATH} /run/innocent.txt"));
    child_read_reported(&agent, &mut first, "/run/innocent.txt", &fp);
    child_read_reported(&agent, &mut second, "/run/innocent.txt", &other_fp);
    let run = agent.stop();
    let all: String = run.events.iter().map(Value::to_string).collect();
    assert_no_leak("JSON lines", &all, &token);
    assert_no_leak("JSON lines", &all, &other_token);
}

#[test]
fn a_path_longer_than_the_copy_window_is_reported() {
    let mut agent = Agent::start(None);
    let dir = tempfile::Builder::new()
        .prefix("kt-long-")
        .tempdir()
        .unwrap();
    // About 700 bytes: past the kernel's 512-byte window, under PATH_MAX.
    let mut long = dir.path().to_path_buf();
    for i in 0..12 {
        long.push(format!("{i:02}-{}", "d".repeat(50)));
    }
    std::fs::create_dir_all(&long).unwrap();
    let key = long.join("client.pem");
    let token = format!("ghp_{}", random(ALNUM, 36));
    std::fs::write(&key, &token).unwrap();
    let key = key.to_str().unwrap().to_string();
    assert!(key.len() > 600, "{}", key.len());

    let cgroup = CgroupGuard::new("long-path");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    // While the descriptor is open, the whole path is read from it and the file classified.
    assert!(w.run(&format!("open-hold {key}")).parse::<i64>().unwrap() >= 0);
    let e = agent.wait_for("the long path held open", |e| {
        e["process.pid"] == w.pid() && e["file.path"] == key.as_str()
    });
    assert_eq!(e["keytrail.file.path_truncated"], true, "{e}");
    assert_eq!(e["keytrail.credential.kind"], "github_token", "{e}");
    // A reader gone before the agent looks: reported truncated and unresolved, and counted.
    agent.pause();
    let reader: u64 = w.run(&format!("fork-open {key}")).parse().unwrap();
    agent.resume();
    let e = agent.wait_for("the long path of a gone reader", |e| {
        e["process.pid"] == reader
    });
    assert_eq!(e["keytrail.file.path_truncated"], true, "{e}");
    assert_eq!(e["keytrail.file.unresolved"], "path_truncated", "{e}");
    assert!(
        e["file.path"].as_str().unwrap().starts_with("...")
            && key.ends_with(&e["file.path"].as_str().unwrap()[3..]),
        "{e}"
    );
    let run = agent.stop();
    let stats = run
        .events
        .iter()
        .rfind(|e| e["event.name"] == "keytrail.agent.stats")
        .unwrap();
    assert!(
        stats["keytrail.opens.truncated"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    let all: String = run.events.iter().map(Value::to_string).collect();
    assert_no_leak("JSON lines", &all, &token);
}

#[test]
fn a_relative_open_whose_directory_changes_is_reported_unresolved() {
    let mut agent = Agent::start(None);
    let cgroup = CgroupGuard::new("cwd-change");
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    w.run("unshare-mount");
    w.run("tmpfs /root");
    w.run("write /root/certs/client.pem");
    w.run("chdir /root/certs");
    // Open, close and leave the directory before the agent can look.
    agent.pause();
    assert!(w.run("open-chdir client.pem /").parse::<i64>().unwrap() >= 0);
    agent.resume();
    let pid = w.pid();
    let e = agent.wait_for("the relative open", |e| {
        e["process.pid"] == pid && e["keytrail.file.open.access"] == "read"
    });
    // Not attributed to /client.pem, the file the path would name from the new directory.
    assert_eq!(e["file.path"], "client.pem", "{e}");
    assert_eq!(e["keytrail.file.unresolved"], "directory_changed", "{e}");
    let run = agent.stop();
    assert!(
        run.events.iter().all(|e| e["file.path"] != "/client.pem"),
        "misattributed"
    );
}
