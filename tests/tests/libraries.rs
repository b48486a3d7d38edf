//! The libraries the uprobes attach to come from the workloads, so they are hostile like any
//! other workload bytes. A library named like libssl that exports none of the probed functions
//! and whose `.gnu_debuglink` names a FIFO (a debug-file lookup would block on it forever) is
//! skipped with a warning naming it, whether it is found at start (mapped by a running
//! process) or at run time (at the standard libssl path of a new mount namespace); the agent
//! stays ready and responsive, and the real libssl keeps its SSL_write probe.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    process::Command,
};

use keytrail_tests::{
    ALNUM, Agent, CgroupGuard, Workload, random, run_in_cgroup,
    servers::{TlsServer, bracket},
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_kt-workload");
/// Loads the SSL_write probe, so the agent looks for libssl files.
const CONNECTIONS_ON: &str = "output:\n  connections: true\n";

/// One scenario at a time: the agent looks at the standard paths of a mount namespace once,
/// and the kernel hands the number of a namespace that ended to the next one created, so the
/// short-lived namespaces of one scenario could pass for the next one's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A FIFO, and a shared library named libssl.so.3 (a real one: `cc -shared`) that defines none
/// of the functions the agent probes and whose `.gnu_debuglink` names the FIFO by absolute
/// path. Nobody ever writes to the FIFO: whoever opens it blocks.
struct CraftedLibssl {
    _dir: tempfile::TempDir,
    lib: PathBuf,
    fifo: PathBuf,
}

impl CraftedLibssl {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kt-crafted-")
            .tempdir()
            .unwrap();
        let fifo = dir.path().join("debug.fifo");
        let c_fifo = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");

        let src = dir.path().join("crafted.c");
        std::fs::write(&src, "int keytrail_test_not_ssl(void) { return 42; }\n").unwrap();
        let lib = dir.path().join("libssl.so.3");
        run(Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&src));
        // The section's layout: the file name, NUL, zeros up to a multiple of 4, then a CRC
        // (objcopy --add-gnu-debuglink would read the FIFO to compute it).
        let mut debuglink = fifo.to_str().unwrap().as_bytes().to_vec();
        debuglink.push(0);
        debuglink.resize(debuglink.len().next_multiple_of(4), 0);
        debuglink.extend_from_slice(&[0; 4]);
        let section = dir.path().join("debuglink.bin");
        std::fs::write(&section, debuglink).unwrap();
        run(Command::new("objcopy")
            .arg(format!(
                "--add-section=.gnu_debuglink={}",
                section.display()
            ))
            .arg(&lib));
        let dump = Command::new("readelf")
            .args(["--string-dump=.gnu_debuglink"])
            .arg(&lib)
            .output()
            .expect("readelf");
        assert!(
            String::from_utf8_lossy(&dump.stdout).contains(fifo.to_str().unwrap()),
            "the crafted library has no debuglink to the FIFO: {dump:?}"
        );
        Self {
            _dir: dir,
            lib,
            fifo,
        }
    }
}

impl Drop for CraftedLibssl {
    fn drop(&mut self) {
        // Releases whoever is still blocked opening the FIFO (an agent on this machine that
        // follows debuglinks): a writer's open completes theirs, and they read end of file.
        let c_fifo = CString::new(self.fifo.to_str().unwrap()).unwrap();
        // SAFETY: open/close with a valid NUL-terminated path; no reader makes it fail (ENXIO).
        unsafe {
            let fd = libc::open(
                c_fifo.as_ptr(),
                libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::close(fd);
            }
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// Waits for the agent's warning that it attached nothing to a library found at one of
/// `found_at`.
fn not_attached_warning(agent: &mut Agent, found_at: &[String]) -> String {
    let line = agent.wait_until("the warning naming the crafted library", |a| {
        a.log()
            .lines()
            .find(|l| {
                l.contains("WARN")
                    && l.contains("uprobe not attached to this library")
                    && found_at.iter().any(|f| l.contains(f.as_str()))
            })
            .map(|l| Value::String(l.to_string()))
    });
    line.as_str().unwrap().to_string()
}

/// Another workload reads an AWS credentials file: the agent reports it as usual.
fn credential_read_is_reported(agent: &mut Agent, label: &str) {
    let cgroup = CgroupGuard::new(label);
    let mut w = Workload::spawn(WORKLOAD.as_ref(), &cgroup);
    w.run("unshare-mount");
    w.run("tmpfs /root");
    w.run("write /root/.aws/credentials");
    assert!(w.run("open /root/.aws/credentials").parse::<i64>().unwrap() >= 0);
    let pid = w.pid();
    agent.wait_for("another workload's credentials file", |e| {
        e["event.name"] == "keytrail.credential.access"
            && e["file.path"] == "/root/.aws/credentials"
            && e["process.pid"] == pid
    });
}

/// curl sends a bearer token over TLS: the SSL_write probe on the real libssl sees it.
fn bearer_token_is_seen_on_the_wire(agent: &mut Agent, label: &str) {
    let server = TlsServer::start("127.0.0.1");
    let cgroup = CgroupGuard::new(label);
    let token = format!("ghp_{}", random(ALNUM, 36));
    let (pid, out) = run_in_cgroup(
        &cgroup,
        "curl",
        &[
            "-sk",
            "-o",
            "/dev/null",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("https://{}:{}/", bracket("127.0.0.1"), server.port),
        ],
        &[("PATH", "/usr/bin:/bin")],
    );
    assert!(out.status.success(), "curl: {out:?}");
    agent.wait_for("the bearer token on the wire", |e| {
        e["keytrail.credential.source"] == "wire" && e["process.pid"] == pid
    });
}

/// The agent stops cleanly (its main task is not stuck) and its last stats count the library
/// that was not attached.
fn stops_cleanly_counting_the_skipped_library(agent: Agent, crafted: &CraftedLibssl) {
    let run = agent.stop();
    assert_eq!(run.exit_code, Some(0), "agent log:\n{}", run.stderr);
    let stats = run
        .events
        .iter()
        .rfind(|e| e["event.name"] == "keytrail.agent.stats")
        .expect("stats");
    assert_eq!(stats["keytrail.agent.final"], true, "{stats}");
    assert!(
        stats["keytrail.tls.attach_failed"].as_u64() >= Some(1),
        "the crafted library is not counted: {stats}"
    );
    assert!(
        stats["keytrail.tls.libraries"].as_u64() >= Some(1),
        "the real libssl is not attached: {stats}"
    );
    // The library's own bytes (here the debuglink's path) never reach the log.
    assert!(
        !run.stderr.contains(crafted.fifo.to_str().unwrap()),
        "the debuglink's content is in the log:\n{}",
        run.stderr
    );
}

#[test]
fn a_mapped_library_whose_debuglink_names_a_fifo_does_not_hold_up_readiness() {
    let _serial = one_at_a_time();
    let crafted = CraftedLibssl::new();
    let holder_cgroup = CgroupGuard::new("lib-start-holder");
    let mut holder = Workload::spawn(WORKLOAD.as_ref(), &holder_cgroup);
    holder.run(&format!("map {}", crafted.lib.display()));

    // The startup scan finds the library in the holder's maps.
    let mut agent = Agent::start(Some(CONNECTIONS_ON));
    let found_at = format!("/proc/{}/root{}", holder.pid(), crafted.lib.display());
    not_attached_warning(&mut agent, std::slice::from_ref(&found_at));
    let log = agent.log();
    let warnings = log.lines().filter(|l| l.contains(&found_at)).count();
    assert_eq!(warnings, 1, "one warning per library:\n{log}");

    credential_read_is_reported(&mut agent, "lib-start-reader");
    bearer_token_is_seen_on_the_wire(&mut agent, "lib-start-curl");
    drop(holder);
    stops_cleanly_counting_the_skipped_library(agent, &crafted);
}

#[test]
fn a_libssl_path_of_a_mount_namespace_whose_debuglink_names_a_fifo_is_skipped() {
    let _serial = one_at_a_time();
    let host_libssl = format!("/usr/lib/{}-linux-gnu/libssl.so.3", std::env::consts::ARCH);
    assert!(
        Path::new(&host_libssl).is_file(),
        "no libssl at {host_libssl}"
    );
    let mut agent = Agent::start(Some(CONNECTIONS_ON));
    let crafted = CraftedLibssl::new();
    let cgroup = CgroupGuard::new("lib-namespace");
    let token = format!("ghp_{}", random(ALNUM, 36));
    let mut w = Workload::spawn_with_env(WORKLOAD.as_ref(), &cgroup, &[("GITHUB_TOKEN", &token)]);
    // The agent reads a process's mount namespace when it handles its exec: once it has
    // reported the workload's environment, the namespace the workload creates next is not
    // taken for the workload's first one (see SERIAL for the other way it could be known).
    let workload = w.pid();
    agent.wait_for("the workload's exec", |e| {
        e["keytrail.credential.source"] == "env" && e["process.pid"] == workload
    });
    // In a private mount namespace, the standard libssl path is the crafted library; the
    // first exec there makes the agent look at the standard paths inside its root.
    w.run("unshare-mount");
    w.run(&format!("bind {} {host_libssl}", crafted.lib.display()));
    let pid: u32 = w.run("spawn /bin/sleep 2").parse().unwrap();
    let warning = not_attached_warning(&mut agent, &[format!("/proc/{pid}/root")]);
    assert!(warning.contains("libssl.so.3"), "{warning}");

    credential_read_is_reported(&mut agent, "lib-namespace-reader");
    bearer_token_is_seen_on_the_wire(&mut agent, "lib-namespace-curl");
    drop(w);
    stops_cleanly_counting_the_skipped_library(agent, &crafted);
}
