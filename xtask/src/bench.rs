//! `cargo xtask bench open`: what the agent adds to the cost of opening a file.
//!
//! A small C program (`bench/open_loop.c`) opens and closes one file in a loop and reports
//! nanoseconds per open+close. It runs in three setups, interleaved within each round so
//! drift on the machine hits all of them alike:
//!
//! - **none**: nothing attached;
//! - **floor**: `keytrail bench-floor`, empty programs on the same tracepoints the agent
//!   uses, i.e. the cost of merely being attached there;
//! - **agent**: `keytrail agent`, writing its JSON lines to a file.
//!
//! Each setup runs the loop on a file the agent does not watch (`plain.txt`) and on one it
//! does (`bench.pem`, matched by the default `**/*.pem`; every open becomes an event,
//! and writing those events is part of the measured cost). A fresh floor or agent process
//! serves each loop, so the kernel's per-program counters (`kernel.bpf_stats_enabled`,
//! reported by the process in its final `keytrail.agent.stats` line) belong to that loop.
//!
//! The report (medians over the rounds) goes to stdout and to `target/bench/open.md`.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use crate::{build, setup, util};

/// The agent binary (in `target/release`) and the subcommands the benchmark starts.
const AGENT_BINARY: &str = build::AGENT_PACKAGE;
const AGENT_SUBCOMMAND: &str = "agent";
const FLOOR_SUBCOMMAND: &str = "bench-floor";
/// `keytrail agent` flag sending the JSON lines to a file.
const JSONL_FLAG: &str = "--jsonl";

/// The stats line: `event.name` value and the flat keys read from it.
const EVENT_NAME_KEY: &str = "event.name";
const STATS_EVENT: &str = "keytrail.agent.stats";
const PROGRAM_KEY_PREFIX: &str = "keytrail.program.";
const RUN_TIME_SUFFIX: &str = ".run_time_ns";
const RUN_COUNT_SUFFIX: &str = ".run_count";
const PROBE_KEY_PREFIX: &str = "keytrail.probe.";
const DROPPED_SUFFIX: &str = ".dropped";
/// Kernel events the agent read from its ring buffer.
const EVENTS_RECEIVED_KEY: &str = "keytrail.events.received";

/// Programs compared in the kernel-cost table: (floor, agent).
const PROGRAM_PAIRS: &[(&str, &str)] = &[
    ("floor_enter_openat", "file_enter_openat"),
    ("floor_exit_openat", "file_exit_openat"),
];

/// Targets.
const MAX_AGENT_OVER_FLOOR: f64 = 1.05;
const TARGET_PROGRAM: &str = "file_enter_openat";
const MAX_TARGET_PROGRAM_NS: f64 = 150.0;

const PLAIN_FILE: &str = "plain.txt";
const WATCHED_FILE: &str = "bench.pem";
const OPEN_LOOP_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bench/open_loop.c");

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// After SIGTERM the agent may still be writing queued events.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Args)]
pub struct Options {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Cost of open()+close() with no agent, with empty programs attached, with the agent.
    Open(OpenOptions),
}

#[derive(Debug, Args)]
struct OpenOptions {
    /// open()+close() pairs per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    iterations: u64,
    /// Rounds; each round measures every setup on both files.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Exit with an error if a target is missed.
    #[arg(long)]
    check: bool,
}

pub fn run(opts: Options) -> Result<()> {
    match opts.bench {
        Bench::Open(opts) => open(opts),
    }
}

#[derive(Clone, Copy, Debug)]
enum Setup {
    None,
    Floor,
    Agent,
}

impl Setup {
    const ALL: [Setup; 3] = [Setup::None, Setup::Floor, Setup::Agent];

    fn name(self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::Floor => "floor",
            Setup::Agent => "agent",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Loop {
    Plain,
    Watched,
}

impl Loop {
    const ALL: [Loop; 2] = [Loop::Plain, Loop::Watched];

    fn file(self) -> &'static str {
        match self {
            Loop::Plain => PLAIN_FILE,
            Loop::Watched => WATCHED_FILE,
        }
    }

    fn label(self) -> String {
        match self {
            Loop::Plain => format!("non-watched (`{PLAIN_FILE}`)"),
            Loop::Watched => format!("watched (`{WATCHED_FILE}`)"),
        }
    }
}

/// One measurement.
struct Sample {
    ns_per_op: f64,
    /// Final stats line of the floor or agent process.
    stats: Option<Map<String, Value>>,
    /// Lines in the agent's output file other than stats lines.
    events: Option<u64>,
}

/// `samples[loop][setup]`, one entry per round.
type Samples = [[Vec<Sample>; 3]; 2];

struct Bencher {
    agent: PathBuf,
    open_loop: PathBuf,
    dir: PathBuf,
    iterations: u64,
    runs: usize,
}

fn open(opts: OpenOptions) -> Result<()> {
    if opts.iterations == 0 || opts.rounds == 0 {
        bail!("--iterations and --rounds must be positive");
    }
    if !util::is_root() {
        bail!(
            "the benchmark needs root (it loads eBPF programs and sets {BPF_STATS_SYSCTL}): \
             run it as root, e.g. `sudo -E env PATH=\"$PATH\" cargo xtask bench open`"
        );
    }
    setup::ensure()?;
    install_signal_handlers();

    build::build_agent(true)?;
    let agent = util::binary_path(AGENT_BINARY, true);
    let bench_dir = util::target_dir().join("bench");
    fs::create_dir_all(&bench_dir).with_context(|| format!("creating {}", bench_dir.display()))?;
    let open_loop = bench_dir.join("open_loop");
    util::run_checked(
        Command::new("cc")
            .args(["-O2", "-Wall", "-Wextra", "-o"])
            .arg(&open_loop)
            .arg(OPEN_LOOP_SOURCE),
    )
    .context("compiling the open loop")?;

    let tmp = tempfile::Builder::new()
        .prefix("keytrail-bench-")
        .tempdir_in("/tmp")
        .context("creating a temporary directory in /tmp")?;
    for file in [PLAIN_FILE, WATCHED_FILE] {
        fs::write(tmp.path().join(file), "keytrail benchmark file\n")?;
    }

    let _stats = BpfStats::enable()?;
    let mut bencher = Bencher {
        agent,
        open_loop,
        dir: tmp.path().to_path_buf(),
        iterations: opts.iterations,
        runs: 0,
    };
    let mut samples: Samples = Default::default();
    let start = Instant::now();
    for round in 0..opts.rounds {
        for lp in Loop::ALL {
            // Rotate the order of the setups from round to round.
            for i in 0..Setup::ALL.len() {
                let setup = Setup::ALL[(i + round) % Setup::ALL.len()];
                let sample = bencher.measure(setup, lp)?;
                eprintln!(
                    "bench: round {}/{} {:<5} {:<11} {:>9.1} ns/op",
                    round + 1,
                    opts.rounds,
                    setup.name(),
                    lp.file(),
                    sample.ns_per_op
                );
                samples[lp as usize][setup as usize].push(sample);
            }
        }
    }
    eprintln!("bench: measured in {:.0} s", start.elapsed().as_secs_f64());

    let (report, failed) = report(&opts, &samples);
    println!("{report}");
    let out = bench_dir.join("open.md");
    fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("bench: report written to {}", out.display());
    if opts.check && failed > 0 {
        bail!("{failed} target(s) missed");
    }
    Ok(())
}

impl Bencher {
    fn measure(&mut self, setup: Setup, lp: Loop) -> Result<Sample> {
        check_interrupted()?;
        self.runs += 1;
        let path = self.dir.join(lp.file());
        match setup {
            Setup::None => Ok(Sample {
                ns_per_op: self.open_loop(&path)?,
                stats: None,
                events: None,
            }),
            Setup::Floor => self.with_floor(&path),
            Setup::Agent => self.with_agent(&path),
        }
    }

    fn open_loop(&self, path: &Path) -> Result<f64> {
        let mut cmd = Command::new(&self.open_loop);
        cmd.arg(path).arg(self.iterations.to_string());
        let out = util::output_checked(&mut cmd)?;
        out.trim()
            .parse()
            .with_context(|| format!("`{}` printed {out:?}, not a number", util::display(&cmd)))
    }

    fn log_file(&self, name: &str) -> Result<(PathBuf, File)> {
        let path = self.dir.join(format!("{name}-{}.log", self.runs));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok((path, file))
    }

    /// `keytrail bench-floor`: stats lines on stdout, the first one once attached, a final
    /// one after SIGTERM.
    fn with_floor(&self, path: &Path) -> Result<Sample> {
        let (log, log_file) = self.log_file("floor")?;
        let mut cmd = Command::new(&self.agent);
        cmd.arg(FLOOR_SUBCOMMAND)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = ChildGuard::spawn(cmd, &log)?;
        let stdout = child.child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            check_interrupted()?;
            match rx.recv_timeout(POLL_INTERVAL) {
                Ok(line) => {
                    if parse_stats(&line.context("reading stdout")?).is_some() {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    child.check_running()?;
                    if Instant::now() > deadline {
                        bail!(
                            "{} not ready after {READY_TIMEOUT:?}{}",
                            child.name,
                            log_tail(&log)
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    child.check_running()?;
                    bail!(
                        "{} closed stdout before it was ready{}",
                        child.name,
                        log_tail(&log)
                    );
                }
            }
        }

        let ns_per_op = self.open_loop(path)?;
        child.terminate()?;
        let mut last = None;
        loop {
            match rx.recv_timeout(EXIT_TIMEOUT) {
                Ok(line) => {
                    if let Some(stats) = parse_stats(&line.context("reading stdout")?) {
                        last = Some(stats);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{}: stdout still open after exit", child.name)
                }
            }
        }
        let stats = last.with_context(|| {
            format!(
                "{} printed no final stats line{}",
                child.name,
                log_tail(&log)
            )
        })?;
        Ok(Sample {
            ns_per_op,
            stats: Some(stats),
            events: None,
        })
    }

    /// `keytrail agent --jsonl FILE`: ready once a stats line is in FILE; writes a final
    /// one there after SIGTERM.
    fn with_agent(&self, path: &Path) -> Result<Sample> {
        let (log, log_file) = self.log_file("agent")?;
        let events = self.dir.join(format!("events-{}.jsonl", self.runs));
        let mut cmd = Command::new(&self.agent);
        cmd.arg(AGENT_SUBCOMMAND)
            .arg(JSONL_FLAG)
            .arg(&events)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let mut child = ChildGuard::spawn(cmd, &log)?;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            check_interrupted()?;
            let text = fs::read(&events).unwrap_or_default();
            if text.split(|&b| b == b'\n').any(|line| {
                std::str::from_utf8(line)
                    .ok()
                    .and_then(parse_stats)
                    .is_some()
            }) {
                break;
            }
            child.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "{} wrote no {STATS_EVENT} line to {} within {READY_TIMEOUT:?}{}",
                    child.name,
                    events.display(),
                    log_tail(&log)
                );
            }
            thread::sleep(POLL_INTERVAL);
        }

        let ns_per_op = self.open_loop(path)?;
        child.terminate()?;
        let stats = last_stats_line(&events)?.with_context(|| {
            format!(
                "{} wrote no stats line to {}{}",
                child.name,
                events.display(),
                log_tail(&log)
            )
        })?;
        let count = count_events(&events)?;
        // The file can be large (one line per watched open); free the space.
        let _ = fs::remove_file(&events);
        Ok(Sample {
            ns_per_op,
            stats: Some(stats),
            events: Some(count),
        })
    }
}

/// Parses a JSON line if it is a stats line.
fn parse_stats(line: &str) -> Option<Map<String, Value>> {
    if !line.contains(STATS_EVENT) {
        return None;
    }
    match serde_json::from_str(line) {
        Ok(Value::Object(map))
            if map.get(EVENT_NAME_KEY).and_then(Value::as_str) == Some(STATS_EVENT) =>
        {
            Some(map)
        }
        _ => None,
    }
}

/// The last stats line in a JSON lines file, reading from the end.
fn last_stats_line(path: &Path) -> Result<Option<Map<String, Value>>> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut chunk = 1 << 16;
    loop {
        let start = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let mut lines = buf.split(|&b| b == b'\n').rev().collect::<Vec<_>>();
        if start > 0 {
            // The first line of the chunk may be cut.
            lines.pop();
        }
        if let Some(stats) = lines
            .into_iter()
            .find_map(|line| std::str::from_utf8(line).ok().and_then(parse_stats))
        {
            return Ok(Some(stats));
        }
        if start == 0 {
            return Ok(None);
        }
        chunk *= 4;
    }
}

/// Lines in a JSON lines file that are not stats lines.
fn count_events(path: &Path) -> Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let needle = STATS_EVENT.as_bytes();
    let mut line = Vec::new();
    let mut count = 0;
    while reader.read_until(b'\n', &mut line)? > 0 {
        if line.iter().any(|b| !b.is_ascii_whitespace())
            && !line.windows(needle.len()).any(|w| w == needle)
        {
            count += 1;
        }
        line.clear();
    }
    Ok(count)
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines = text.lines().collect::<Vec<_>>();
    if lines.is_empty() {
        return format!(" (its log {} is empty)", path.display());
    }
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("; last lines of {}:\n{tail}", path.display())
}

/// A child process that is killed if it is still running when dropped.
struct ChildGuard {
    child: Child,
    name: String,
    log: PathBuf,
}

impl ChildGuard {
    fn spawn(mut cmd: Command, log: &Path) -> Result<Self> {
        let name = format!("`{}`", util::display(&cmd));
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        Ok(Self {
            child,
            name,
            log: log.to_path_buf(),
        })
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early ({status}){}",
                self.name,
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit.
    fn terminate(&mut self) -> Result<ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: plain syscall on our own child, which has not been reaped yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("SIGTERM to {}", self.name));
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "{} exited with {status} after SIGTERM{}",
                        self.name,
                        log_tail(&self.log)
                    );
                }
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} still running {EXIT_TIMEOUT:?} after SIGTERM", self.name);
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Enables `kernel.bpf_stats_enabled` and restores the previous value when dropped.
struct BpfStats {
    previous: String,
}

impl BpfStats {
    fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("reading {BPF_STATS_SYSCTL}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {BPF_STATS_SYSCTL}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(err) = fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!(
                "bench: could not restore {BPF_STATS_SYSCTL} to {}: {err}",
                self.previous
            );
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// On SIGINT/SIGTERM, stop at the next check so the guards clean up (children get the
/// default disposition back when they exec).
fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

fn number(stats: &Map<String, Value>, key: &str) -> Option<f64> {
    stats.get(key).and_then(Value::as_f64)
}

/// `run_time_ns / run_count` of one program in one stats line.
fn ns_per_run(stats: &Map<String, Value>, program: &str) -> Option<f64> {
    let time = number(
        stats,
        &format!("{PROGRAM_KEY_PREFIX}{program}{RUN_TIME_SUFFIX}"),
    )?;
    let count = number(
        stats,
        &format!("{PROGRAM_KEY_PREFIX}{program}{RUN_COUNT_SUFFIX}"),
    )?;
    (count > 0.0).then(|| time / count)
}

fn program_names(samples: &[Sample]) -> BTreeSet<String> {
    samples
        .iter()
        .filter_map(|s| s.stats.as_ref())
        .flat_map(|stats| stats.keys())
        .filter_map(|key| {
            key.strip_prefix(PROGRAM_KEY_PREFIX)?
                .strip_suffix(RUN_TIME_SUFFIX)
        })
        .map(str::to_owned)
        .collect()
}

fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Median of per-round ratios `a / b` (paired by round, so drift cancels).
fn ratio(a: &[Sample], b: &[Sample]) -> Option<f64> {
    median(
        a.iter()
            .zip(b)
            .map(|(a, b)| a.ns_per_op / b.ns_per_op)
            .collect(),
    )
}

/// Opens the C loop makes per measurement, warm-up included (see `open_loop.c`).
fn opens_per_run(iterations: u64) -> u64 {
    iterations + (iterations / 100).clamp(1000, 20000)
}

/// Renders the markdown report; also returns how many targets were missed.
fn report(opts: &OpenOptions, samples: &Samples) -> (String, usize) {
    use std::fmt::Write as _;

    let ns = |s: &[Sample]| median(s.iter().map(|s| s.ns_per_op).collect());
    let program = |s: &[Sample], name: &str| {
        median(
            s.iter()
                .filter_map(|s| ns_per_run(s.stats.as_ref()?, name))
                .collect(),
        )
    };
    let runs = |s: &[Sample], name: &str| {
        let key = format!("{PROGRAM_KEY_PREFIX}{name}{RUN_COUNT_SUFFIX}");
        median(
            s.iter()
                .filter_map(|s| number(s.stats.as_ref()?, &key))
                .collect(),
        )
    };

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# keytrail: cost of open()+close()\n");
    let _ = writeln!(
        w,
        "- date: {}",
        command_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"])
    );
    let _ = writeln!(w, "- kernel: {}", command_line("uname", &["-r"]));
    let _ = writeln!(
        w,
        "- CPUs: {} ({})",
        thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]);
    let _ = writeln!(w, "- commit: {commit}");
    let _ = writeln!(
        w,
        "- {} open()+close() per measurement, {} rounds; setups interleaved within each round; \
         values are medians over rounds, ratios are medians of per-round ratios",
        opts.iterations, opts.rounds
    );
    let _ = writeln!(
        w,
        "- none: nothing attached; floor: `keytrail {FLOOR_SUBCOMMAND}` (empty programs on the \
         agent's tracepoints); agent: `keytrail {AGENT_SUBCOMMAND} {JSONL_FLAG} FILE`\n"
    );

    let _ = writeln!(w, "## ns per open()+close()\n");
    let _ = writeln!(
        w,
        "| loop | none | floor | agent | floor/none | agent/none | agent/floor \
         | kernel events/open | records/open | dropped |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for lp in Loop::ALL {
        let [none, floor, agent] = &samples[lp as usize];
        let opens = opens_per_run(opts.iterations) as f64;
        let received = median(
            agent
                .iter()
                .filter_map(|s| number(s.stats.as_ref()?, EVENTS_RECEIVED_KEY))
                .map(|n| n / opens)
                .collect(),
        );
        let records = median(
            agent
                .iter()
                .filter_map(|s| s.events)
                .map(|n| n as f64 / opens)
                .collect(),
        );
        let dropped: f64 = agent
            .iter()
            .filter_map(|s| s.stats.as_ref())
            .flat_map(|stats| stats.iter())
            .filter(|(key, _)| key.starts_with(PROBE_KEY_PREFIX) && key.ends_with(DROPPED_SUFFIX))
            .filter_map(|(_, v)| v.as_f64())
            .sum();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {dropped:.0} |",
            lp.label(),
            fmt(ns(none), 0),
            fmt(ns(floor), 0),
            fmt(ns(agent), 0),
            fmt(ratio(floor, none), 3),
            fmt(ratio(agent, none), 3),
            fmt(ratio(agent, floor), 3),
            fmt(received, 3),
            fmt(records, 3),
        );
    }
    let _ = writeln!(
        w,
        "\nLast three columns, for the agent: kernel events/open is `{EVENTS_RECEIVED_KEY}` per \
         open (warm-up included); records/open counts the lines it wrote, stats lines excluded \
         (repeated accesses may be deduplicated); dropped is the sum of \
         `{PROBE_KEY_PREFIX}*{DROPPED_SUFFIX}` over all rounds.\n"
    );

    let _ = writeln!(w, "## Kernel ns per program run (bpf_stats)\n");
    let _ = write!(w, "| loop |");
    for (floor, agent) in PROGRAM_PAIRS {
        let _ = write!(w, " {floor} | {agent} |");
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "|---|{}", "---:|".repeat(PROGRAM_PAIRS.len() * 2));
    for lp in Loop::ALL {
        let [_, floor, agent] = &samples[lp as usize];
        let _ = write!(w, "| {} |", lp.label());
        for (floor_prog, agent_prog) in PROGRAM_PAIRS {
            let _ = write!(
                w,
                " {} | {} |",
                fmt(program(floor, floor_prog), 1),
                fmt(program(agent, agent_prog), 1)
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "\n## All programs: ns per run (runs per measurement)\n");
    let _ = writeln!(w, "| setup | program | non-watched | watched |");
    let _ = writeln!(w, "|---|---|---:|---:|");
    for setup in [Setup::Floor, Setup::Agent] {
        let all = Loop::ALL.map(|lp| &samples[lp as usize][setup as usize]);
        let names = all
            .iter()
            .flat_map(|s| program_names(s))
            .collect::<BTreeSet<_>>();
        for name in names {
            let cells =
                all.map(|s| format!("{} ({})", fmt(program(s, &name), 1), fmt(runs(s, &name), 0)));
            let _ = writeln!(
                w,
                "| {} | {name} | {} | {} |",
                setup.name(),
                cells[0],
                cells[1]
            );
        }
    }

    let plain = &samples[Loop::Plain as usize];
    let targets = [
        (
            format!("agent/floor ≤ {MAX_AGENT_OVER_FLOOR:.2} on the non-watched file"),
            ratio(&plain[Setup::Agent as usize], &plain[Setup::Floor as usize]),
            3,
            MAX_AGENT_OVER_FLOOR,
        ),
        (
            format!("{TARGET_PROGRAM} < {MAX_TARGET_PROGRAM_NS:.0} ns/run on the non-watched file"),
            program(&plain[Setup::Agent as usize], TARGET_PROGRAM),
            1,
            MAX_TARGET_PROGRAM_NS,
        ),
    ];
    let _ = writeln!(w, "\n## Targets\n");
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---:|---|");
    let mut failed = 0;
    for (i, (name, value, decimals, limit)) in targets.into_iter().enumerate() {
        // The first target is inclusive (≤), the second strict (<).
        let pass = value.is_some_and(|v| if i == 0 { v <= limit } else { v < limit });
        failed += usize::from(!pass);
        let _ = writeln!(
            w,
            "| {name} | {} | {} |",
            fmt(value, decimals),
            if pass { "PASS" } else { "FAIL" }
        );
    }
    (md, failed)
}

/// First line of a command's output, or `unknown`.
fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(util::workspace_root())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                line.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
