//! Harness for the end-to-end scenarios: the real `keytrail` binary loading its real kernel
//! programs, workloads as real processes in real cgroups (created under the cgroup2 mount) and
//! mount namespaces. Every resource is a guard that cleans up on drop, so tests neither depend
//! on order nor leave anything behind. Helpers panic (with context) instead of returning errors.

pub mod aws;
pub mod collector;
pub mod servers;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long to wait for the agent to attach or for an event to show up.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The agent binary: `KEYTRAIL_BIN`, else `keytrail` next to the test's own target directory.
pub fn keytrail_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYTRAIL_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> -> target/<profile>/keytrail
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("keytrail");
    assert!(
        bin.is_file(),
        "agent binary not found at {}: build it first (`cargo build -p keytrail`, which \
         `cargo xtask test` does) or set KEYTRAIL_BIN",
        bin.display()
    );
    bin
}

/// The cgroup2 mount point of this host.
pub fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .expect("this host has no cgroup2 mount")
}

/// A fresh child cgroup under the cgroup2 root; its processes are killed and the directory
/// removed on drop.
pub struct CgroupGuard {
    dir: PathBuf,
    rel: String,
}

impl CgroupGuard {
    pub fn new(label: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kt-test-{label}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = cgroup2_mount().join(&name);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        Self {
            dir,
            rel: format!("/{name}"),
        }
    }

    /// Path relative to the cgroup2 mount, as the agent reports it (`keytrail.cgroup.path`).
    pub fn rel_path(&self) -> &str {
        &self.rel
    }

    /// The cgroup id: the inode number of its directory.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.dir).expect("cgroup dir").ino()
    }

    /// Moves a running process here (as root, from outside).
    pub fn adopt(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.rel));
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        empty_cgroup(&self.dir);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A tree of cgroups below one fresh [`CgroupGuard`] (`/kt-test-<label>-<pid>-<n>`), so the
/// layouts of container runtimes, the kubelet and systemd can be built without touching the
/// host's own. On drop, every directory it created is emptied (its processes killed) and
/// removed, deepest first, before the guard removes the top one.
pub struct CgroupTree {
    /// Created directories in creation order: a parent always before its children.
    created: Vec<PathBuf>,
    /// Dropped after `created` is gone (fields drop after `Drop::drop`).
    base: CgroupGuard,
}

/// One leaf cgroup of a [`CgroupTree`]: processes live only in leaves.
pub struct Leaf {
    pub dir: PathBuf,
    /// As the agent reports it in `keytrail.cgroup.path`.
    pub rel: String,
}

impl CgroupTree {
    pub fn new(label: &str) -> Self {
        Self {
            created: Vec::new(),
            base: CgroupGuard::new(label),
        }
    }

    /// The flat cgroup the tree hangs below (a process can start there, then move to a leaf).
    pub fn base(&self) -> &CgroupGuard {
        &self.base
    }

    /// Creates `nested` (`a.slice/b.slice/c.scope`) below the base, parents included.
    pub fn leaf(&mut self, nested: &str) -> Leaf {
        let mut dir = self.base.dir.clone();
        let mut rel = self.base.rel_path().to_string();
        for comp in nested.split('/').filter(|c| !c.is_empty()) {
            dir.push(comp);
            rel.push('/');
            rel.push_str(comp);
            if !dir.is_dir() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
                self.created.push(dir.clone());
            }
        }
        Leaf { dir, rel }
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            empty_cgroup(dir);
            // A cgroup is busy for a moment after its last process exits.
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Leaf {
    /// Runs `program args...` to completion inside this cgroup with exactly `env` (the child
    /// moves itself here before exec, so the exec and its environment happen here); it must
    /// succeed. Returns its pid.
    pub fn run(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> u32 {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        in_cgroup_dir(&mut cmd, &self.dir);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
        let pid = child.id();
        let status = child.wait().expect("waiting for the child");
        assert!(status.success(), "{program} failed: {status}");
        pid
    }

    /// Moves a running process here (as root, from outside).
    pub fn adopt(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.rel));
    }
}

/// Kills what is left in cgroup `dir` and waits (up to 5 s) until it is empty.
fn empty_cgroup(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if pids.trim().is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `kt-workload` in a cgroup, driven line by line.
pub struct Workload {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    exe: PathBuf,
}

impl Workload {
    /// Starts `exe` (the kt-workload binary) inside `cgroup`: the child moves itself into the
    /// cgroup before exec, so every syscall of the workload happens there.
    pub fn spawn(exe: &Path, cgroup: &CgroupGuard) -> Self {
        Self::spawn_with_env(exe, cgroup, &[])
    }

    /// Like [`Workload::spawn`], with extra environment variables.
    pub fn spawn_with_env(exe: &Path, cgroup: &CgroupGuard, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(exe);
        cmd.envs(env.iter().copied());
        Self::start(cmd, cgroup)
    }

    /// Starts any line-driven program (one command per stdin line, one `ok ...` line back)
    /// inside `cgroup`.
    pub fn start(mut cmd: Command, cgroup: &CgroupGuard) -> Self {
        let exe = PathBuf::from(cmd.get_program());
        in_cgroup(&mut cmd, cgroup);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", exe.display()));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
            exe: exe.canonicalize().unwrap_or(exe),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Runs one command; returns the text after `ok`, panics on `err`.
    pub fn run(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("workload stdin");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("workload stdout");
        let line = line.trim_end();
        match line.strip_prefix("ok") {
            Some(rest) => rest.trim().to_string(),
            None => panic!("workload command {command:?} failed: {line:?}"),
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `cmd`'s child move itself into `cgroup` before it execs, so the exec and everything
/// after happen there.
pub fn in_cgroup(cmd: &mut Command, cgroup: &CgroupGuard) {
    in_cgroup_dir(cmd, &cgroup.dir);
}

/// [`in_cgroup`] for any cgroup directory (a [`Leaf`] of a [`CgroupTree`]).
pub fn in_cgroup_dir(cmd: &mut Command, dir: &Path) {
    let procs = dir.join("cgroup.procs");
    // SAFETY: only async-signal-safe calls between fork and exec (open/write/close).
    unsafe {
        cmd.pre_exec(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(&procs)?;
            f.write_all(b"0")?;
            Ok(())
        });
    }
}

/// Runs `program args...` to completion inside `cgroup` with exactly `env` as its
/// environment. Returns its pid and output.
pub fn run_in_cgroup(
    cgroup: &CgroupGuard,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (u32, std::process::Output) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    in_cgroup(&mut cmd, cgroup);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    let pid = child.id();
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {program}: {e}"));
    (pid, out)
}

/// Access events of one cgroup, whatever their source.
pub fn accesses_in<'a>(events: &'a [Value], cgroup: &CgroupGuard) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["event.name"] == "keytrail.credential.access"
                && e["keytrail.cgroup.path"] == cgroup.rel_path()
        })
        .collect()
}

/// A random string of `len` characters from `alphabet`, so canaries cannot match by accident.
pub fn random(alphabet: &[u8], len: usize) -> String {
    use std::io::Read as _;
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect()
}

/// Letters and digits, for random secrets.
pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Panics if any 8-character window of `secret` occurs in `haystack`.
pub fn assert_no_leak(what: &str, haystack: &str, secret: &str) {
    for w in secret.as_bytes().windows(8) {
        let w = std::str::from_utf8(w).expect("ASCII secret");
        assert!(
            !haystack.contains(w),
            "{what} contains secret fragment {w:?}"
        );
    }
}

/// A running agent writing JSON lines to a private file.
pub struct Agent {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub jsonl: PathBuf,
    stderr: PathBuf,
    /// The agent's state file (inventory).
    pub state: PathBuf,
}

/// How to start an agent: config (None: the embedded default), extra command-line arguments,
/// environment changes, and a state file to reuse (None: a fresh one in the agent's directory).
#[derive(Default)]
pub struct Launch<'a> {
    pub config: Option<&'a str>,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a std::ffi::OsStr)],
    pub remove: &'a [&'a str],
    pub state: Option<&'a Path>,
}

/// What an agent left behind after it stopped.
pub struct AgentRun {
    pub events: Vec<Value>,
    pub stderr: String,
    pub exit_code: Option<i32>,
}

impl Agent {
    /// Starts the agent with `config_yaml` (None: the embedded default) and waits until its
    /// first `keytrail.agent.stats` event says the probes are attached.
    pub fn start(config_yaml: Option<&str>) -> Self {
        Self::start_with_env(config_yaml, &[], &[])
    }

    /// Like [`Agent::start`], with variables added to (`env`) and removed from (`remove`) the
    /// environment the agent inherits from the test.
    pub fn start_with_env(
        config_yaml: Option<&str>,
        env: &[(&str, &std::ffi::OsStr)],
        remove: &[&str],
    ) -> Self {
        Self::launch(Launch {
            config: config_yaml,
            env,
            remove,
            ..Launch::default()
        })
    }

    /// Starts an agent as `launch` describes and waits for its readiness record.
    pub fn launch(launch: Launch<'_>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kt-agent-")
            .tempdir()
            .expect("tempdir");
        let jsonl = dir.path().join("events.jsonl");
        let stderr = dir.path().join("agent.log");
        let state = launch
            .state
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("state").join("keytrail.db"));
        let mut cmd = Command::new(keytrail_bin());
        cmd.arg("agent")
            .arg("--jsonl")
            .arg(&jsonl)
            .arg("--state")
            .arg(&state)
            .args(launch.args);
        if let Some(yaml) = launch.config {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, yaml).expect("write config");
            cmd.arg("--config").arg(path);
        }
        for var in launch.remove {
            cmd.env_remove(var);
        }
        cmd.envs(launch.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("agent log"));
        let child = cmd.spawn().expect("spawning keytrail agent");
        let mut agent = Self {
            child: Some(child),
            dir,
            jsonl,
            stderr,
            state,
        };
        agent.wait_for("agent readiness", |e| {
            e["event.name"] == "keytrail.agent.stats"
        });
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Freezes the agent (SIGSTOP): kernel events queue up in the ring buffer meanwhile, so a
    /// test can make a process finish before the agent looks at it.
    pub fn pause(&self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGSTOP) };
        // The signal is asynchronous: wait until every thread has actually stopped.
        let deadline = Instant::now() + TIMEOUT;
        while !self.all_threads_stopped() {
            assert!(Instant::now() < deadline, "agent did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn all_threads_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return false;
        };
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    let after = &stat[stat.rfind(')')? + 1..];
                    after
                        .split_whitespace()
                        .next()
                        .map(|s| s == "T" || s == "t")
                })
                .unwrap_or(true)
        })
    }

    pub fn resume(&self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.pid() as i32, libc::SIGCONT) };
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Events written so far.
    pub fn events(&self) -> Vec<Value> {
        read_jsonl(&self.jsonl)
    }

    /// Waits until an event satisfies `pred`; panics with the agent's log on timeout or exit.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(what, |a| a.events().into_iter().find(|e| pred(e)))
    }

    /// Waits until `done` returns something (checked every 50 ms), failing if the agent exits
    /// or TIMEOUT passes.
    pub fn wait_until(&mut self, what: &str, done: impl Fn(&Self) -> Option<Value>) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(v) = done(self) {
                return v;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "agent exited ({status}) while waiting for {what}; log:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; log:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait for exit, and return everything it wrote.
    /// Waits (up to the usual timeout) for the agent to exit by itself, then what it left.
    pub fn wait_exit(mut self) -> AgentRun {
        let mut child = self.child.take().expect("agent running");
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        AgentRun {
            events: read_jsonl(&self.jsonl),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            exit_code: status.and_then(|s| s.code()),
        }
    }

    pub fn stop(mut self) -> AgentRun {
        let mut child = self.child.take().expect("agent running");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        AgentRun {
            events: read_jsonl(&self.jsonl),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            exit_code: status.and_then(|s| s.code()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Repeats `attempt` (every 50 ms) until it returns something; panics after TIMEOUT. For
/// effects that land a moment after what the test can observe (a kernel filter entry added
/// after the record that taught it).
pub fn retry_until<T>(what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Parses a JSON lines file; every line must be a JSON object.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        // A line being written right now may be incomplete: only complete lines count.
        .filter(|l| l.ends_with('}'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Access events for one file.path by processes of one cgroup. Every agent sees every process
/// on the node, tests of other scenarios included, so scenarios always scope by their cgroup.
pub fn accesses_of<'a>(events: &'a [Value], cgroup: &CgroupGuard, path: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["event.name"] == "keytrail.credential.access"
                && e["file.path"] == path
                && e["keytrail.cgroup.path"] == cgroup.rel_path()
        })
        .collect()
}

/// Runs `keytrail ARGS...` to completion.
pub fn keytrail(args: &[&str]) -> std::process::Output {
    Command::new(keytrail_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running keytrail")
}
