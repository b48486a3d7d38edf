//! Faults of a real node: the agent leaves the node as it found it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, Command, Stdio},
};

use keytrail_tests::{
    ALNUM, Agent, CgroupGuard, Launch, Workload, keytrail, keytrail_bin, random, retry_until,
    run_in_cgroup,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");
const STALLFS: &str = env!("CARGO_BIN_EXE_kt-stallfs");

/// `kt-stallfs` mounted on a fresh directory; unmounted and stopped on drop.
struct StalledMount {
    dir: tempfile::TempDir,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl StalledMount {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kt-stallfs-")
            .tempdir()
            .unwrap();
        let mut child = Command::new(STALLFS)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting kt-stallfs");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "mounted", "kt-stallfs did not mount");
        Self { dir, child, stdin }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// Lets the stalled reads finish.
    fn release(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "release").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for StalledMount {
    fn drop(&mut self) {
        drop(self.stdin.take()); // end of stdin: release, unmount, exit
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .stderr(Stdio::null())
            .status();
    }
}

/// What a shell-driven agent run printed, and the agent's log.
struct ShellRun {
    status: std::process::ExitStatus,
    stdout: String,
    log: String,
}

/// Runs `sh` (under `wrapper`, e.g. `unshare`): `before`, then the agent in the background
/// until its first stats line (`$agent` is its pid), then `while_running`, then SIGTERM and a
/// wait (`exit: N` printed), then `after`. For what the harness cannot set up: a soft limit, a
/// private mount namespace.
fn agent_in_shell(wrapper: &[&str], before: &str, while_running: &str, after: &str) -> ShellRun {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"
        {before}
        "$1" agent --jsonl "$2" --state "$3" 2>"$4" &
        agent=$!
        i=0
        until grep -q keytrail.agent.stats "$2" 2>/dev/null; do
            i=$((i + 1))
            if [ $i -gt 600 ] || ! kill -0 $agent 2>/dev/null; then echo "agent not ready"; exit 4; fi
            sleep 0.1
        done
        {while_running}
        kill -TERM $agent
        wait $agent
        echo "exit: $?"
        {after}
        true
    "#
    );
    let log = dir.path().join("agent.log");
    let (program, args) = match wrapper.split_first() {
        Some((p, rest)) => (*p, rest.to_vec()),
        None => ("sh", Vec::new()),
    };
    let mut cmd = Command::new(program);
    cmd.args(&args);
    if !wrapper.is_empty() {
        cmd.arg("sh");
    }
    let out = cmd
        .args(["-c", &script, "sh"])
        .arg(keytrail_bin())
        .arg(dir.path().join("events.jsonl"))
        .arg(dir.path().join("state.db"))
        .arg(&log)
        .output()
        .expect("running the agent from sh");
    ShellRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        log: std::fs::read_to_string(&log).unwrap_or_default(),
    }
}

/// Started with a low soft limit on open files (the usual 1024, here 256), the agent raises it
/// to the hard limit: root handles, libraries and sockets of a busy node need more.
#[test]
fn the_agent_raises_its_open_file_limit() {
    let run = agent_in_shell(
        &[],
        "ulimit -Sn 256 || exit 3",
        "grep '^Max open files' /proc/$agent/limits",
        "",
    );
    let stdout = &run.stdout;
    assert!(
        run.status.success(),
        "{:?}: {stdout}\n{}",
        run.status,
        run.log
    );
    assert!(stdout.contains("exit: 0"), "{stdout}\n{}", run.log);
    let fields: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no limit line: {stdout}"))
        .split_whitespace()
        .collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_ne!(soft, "256", "{stdout}");
    assert_eq!(soft, hard, "{stdout}");
}

/// A workload's file on a filesystem whose reads never return (a FUSE or NFS mount gone
/// quiet) costs the agent one timeout: the read is reported as timed out, another workload's
/// credential read meanwhile is classified, later reads in the stalled workload's mount
/// namespace are skipped at once (and say so) until the stuck read returns, and then reads
/// work again. Before reads moved to reader threads, the first stalled read stopped all
/// processing for good.
#[test]
fn a_stalled_filesystem_costs_one_timeout_and_no_other_workload_its_records() {
    let mut agent = Agent::start(None);
    let mut mount = StalledMount::new();
    let stalled_cgroup = CgroupGuard::new("stalled");
    let mut stalled = Workload::spawn(WORKLOAD.as_ref(), &stalled_cgroup);
    stalled.run("unshare-mount");
    let quiet_cgroup = CgroupGuard::new("quiet");
    let mut quiet = Workload::spawn(WORKLOAD.as_ref(), &quiet_cgroup);
    quiet.run("unshare-mount");
    quiet.run("tmpfs /run");
    let token = format!("ghp_{}", random(ALNUM, 36));
    quiet.run(&format!("write-text /run/secrets/app/token {token}"));

    let first = mount.path("stall-1.pem");
    assert!(
        stalled
            .run(&format!("open-nonblock {first}"))
            .parse::<i64>()
            .unwrap()
            >= 0
    );
    assert!(
        quiet
            .run("open /run/secrets/app/token")
            .parse::<i64>()
            .unwrap()
            >= 0
    );

    let (stalled_pid, quiet_pid) = (stalled.pid(), quiet.pid());
    let e = agent.wait_for("the quiet workload's credential", |e| {
        e["process.pid"] == quiet_pid
            && e["file.path"] == "/run/secrets/app/token"
            && e["keytrail.file.open.access"] == "read"
    });
    assert_eq!(e["keytrail.credential.kind"], "github_token", "{e}");
    let e = agent.wait_for("the stalled read", |e| {
        e["process.pid"] == stalled_pid && e["file.path"] == first.as_str()
    });
    assert_eq!(
        e["keytrail.credential.unreadable"],
        "the read did not finish in time (a stalled filesystem?)",
        "{e}"
    );

    // Same mount namespace, stuck read outstanding: skipped at once.
    let second = mount.path("stall-2.pem");
    assert!(
        stalled
            .run(&format!("open-nonblock {second}"))
            .parse::<i64>()
            .unwrap()
            >= 0
    );
    let e = agent.wait_for("the skipped read", |e| {
        e["process.pid"] == stalled_pid && e["file.path"] == second.as_str()
    });
    assert_eq!(
        e["keytrail.credential.unreadable"],
        "skipped: an earlier read on the same mount has not finished",
        "{e}"
    );

    // The same namespace's files on another mount are still read meanwhile.
    let elsewhere = tempfile::Builder::new()
        .prefix("kt-elsewhere-")
        .tempdir()
        .unwrap();
    let other_file = elsewhere.path().join(".env");
    let other_token = format!("ghp_{}", random(ALNUM, 36));
    stalled.run(&format!(
        "write-text {} GITHUB_TOKEN={other_token}",
        other_file.display()
    ));
    stalled.run(&format!("open {}", other_file.display()));
    let e = agent.wait_for("the read on another mount", |e| {
        e["process.pid"] == stalled_pid
            && e["file.path"] == other_file.to_str().unwrap()
            && e["keytrail.file.open.access"] == "read"
    });
    assert_eq!(e["keytrail.credential.kind"], "github_token", "{e}");

    // The filesystem answers again: so does the agent.
    mount.release();
    let mut n = 0;
    retry_until("a read after the release", || {
        n += 1;
        let later = mount.path(&format!("later-{n}.pem"));
        stalled.run(&format!("open-nonblock {later}"));
        let e = agent.wait_for("the read after the release", |e| {
            e["process.pid"] == stalled_pid && e["file.path"] == later.as_str()
        });
        e.get("keytrail.credential.unreadable")
            .is_none()
            .then_some(())
    });

    // The counters are the agent's, over every process it saw (the agents of other tests
    // running meanwhile read these files too): at least ours.
    let run = agent.stop();
    let stats = run
        .events
        .iter()
        .rfind(|e| e["event.name"] == "keytrail.agent.stats")
        .unwrap();
    assert!(
        stats["keytrail.files.unreadable.timed_out"]
            .as_u64()
            .unwrap()
            >= 1,
        "{stats}"
    );
    assert!(
        stats["keytrail.files.unreadable.stalled"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}

/// On a node without tracefs the agent mounts it to attach its tracepoints; at SIGTERM it
/// unmounts it again. Run in a private mount namespace where tracefs (and debugfs, which
/// automounts it) are unmounted first; the namespace's mounts are read after the agent exits.
#[test]
fn tracefs_the_agent_mounted_is_unmounted_at_sigterm() {
    let run = agent_in_shell(
        &["unshare", "--mount", "--propagation", "private"],
        r#"
        umount -l /sys/kernel/debug 2>/dev/null
        umount -l /sys/kernel/tracing 2>/dev/null
        if [ -d /sys/kernel/tracing/events ] || [ -d /sys/kernel/debug/tracing/events ]; then
            echo "tracefs still mounted"; exit 3
        fi"#,
        "grep -c ' - tracefs ' /proc/self/mountinfo | sed 's/^/during: /'",
        "grep -c ' - tracefs ' /proc/self/mountinfo | sed 's/^/after: /'",
    );
    let (stdout, agent_log) = (&run.stdout, &run.log);
    let context = format!("stdout:\n{stdout}\nagent log:\n{agent_log}");
    assert!(run.status.success(), "{:?}\n{context}", run.status);
    assert!(stdout.contains("during: 1"), "{context}");
    assert!(stdout.contains("exit: 0"), "{context}");
    assert!(stdout.contains("after: 0"), "{context}");
    assert!(
        agent_log.contains("mounted tracefs on /sys/kernel/tracing"),
        "{context}"
    );
}

/// A small tmpfs mounted on a fresh directory; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kt-disk-")
            .tempdir()
            .unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a tmpfs");
        Self { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Fills what is left with one file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.path("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The state directory fills up: the agent keeps tracing (every access still reaches its JSON
/// lines), says once that the inventory cannot be written, and writes it again once space
/// returns.
#[test]
fn a_full_state_disk_costs_inventory_rows_only_until_space_returns() {
    let disk = SmallDisk::new("2m");
    let state = disk.path("keytrail.db");
    let mut agent = Agent::launch(Launch {
        state: Some(&state),
        ..Launch::default()
    });
    let files = tempfile::Builder::new()
        .prefix("kt-full-")
        .tempdir()
        .unwrap();
    let cgroup = CgroupGuard::new("full-disk");
    let read_token = |agent: &mut Agent, name: &str| -> String {
        let path = files.path().join(name).join(".env");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let token = format!("ghp_{}", random(ALNUM, 36));
        std::fs::write(&path, format!("GITHUB_TOKEN={token}\n")).unwrap();
        let path = path.to_str().unwrap().to_string();
        let (pid, _) = run_in_cgroup(&cgroup, "/bin/cat", &[&path], &[]);
        let e = agent.wait_for(name, |e| {
            e["process.pid"] == pid && e["keytrail.credential.kind"] == "github_token"
        });
        e["keytrail.credential.fingerprint"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let in_inventory = |fp: &str| -> bool {
        let out = keytrail(&[
            "report",
            "--state",
            state.to_str().unwrap(),
            "--format",
            "json",
            "--only",
            "all",
        ]);
        String::from_utf8_lossy(&out.stdout).contains(fp)
    };

    let filler = disk.fill();
    read_token(&mut agent, "while-full");
    agent.wait_until("the agent saying the inventory cannot be written", |a| {
        a.log()
            .contains("cannot write the inventory")
            .then_some(serde_json::Value::Null)
    });
    // Tracing goes on while the disk is full.
    read_token(&mut agent, "still-full");
    std::fs::remove_file(&filler).unwrap();
    let written = read_token(&mut agent, "after");
    retry_until("the row written once space returned", || {
        in_inventory(&written).then_some(())
    });
    let run = agent.stop();
    assert_eq!(
        run.stderr.matches("cannot write the inventory").count(),
        1,
        "said once: {}",
        run.stderr
    );
}
