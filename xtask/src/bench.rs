//! `cargo xtask bench open|exec|getenv|net|pipeline|storm`: what the agent adds to the cost of
//! opening a file, of starting a program, of reading an environment variable, of network
//! connections.
//!
//! Each benchmark times a small C loop (`bench/*_loop.c`, compiled with `cc -O2`) that prints
//! nanoseconds per operation. The loop runs in several setups, interleaved within each round
//! (the order rotating from round to round) so drift on the machine hits all of them alike:
//!
//! - **none**: nothing attached;
//! - **floor**: `keytrail bench-floor --family F`, empty programs on the hooks the agent uses
//!   for that operation, i.e. the cost of merely being attached there;
//! - **agent**: `keytrail agent`, writing its JSON lines to a file.
//!
//! A fresh floor or agent process serves each measurement, so the kernel's per-program
//! counters (`kernel.bpf_stats_enabled`, turned on for the run and restored after; reported by
//! the process in its final `keytrail.agent.stats` line) belong to that measurement. The
//! report (medians over the rounds; ratios and differences are medians of per-round ones) goes
//! to stdout and to `target/bench/<name>.md`.
//!
//! - [`open`]: open()+close() of a file the agent does not watch and of one it does;
//!   `--check` fails on a missed target (agent within 5% of the floor, filter program under
//!   150 ns per run).
//! - [`exec`]: fork+execve+wait of `/bin/true` with a 100-variable environment (a few of them
//!   secret-like), the agent with its getenv probe off and on; target: the agent under 10%
//!   slower than none, which `--check` enforces with the getenv probe off (the exec hook) and
//!   reports with it on.
//! - [`getenv`]: one getenv() call, of a non-secret name (`LANG`) and a secret-like one
//!   (`API_TOKEN`); a report of the per-call cost of the uprobe, without a target.
//! - [`net`]: TCP connects, TLS handshakes, bulk TLS throughput over loopback and, as a
//!   control, write() to `/dev/null`; no floor (there is no network family), the agent with
//!   its network programs off instead; `--check` fails unless the agent keeps 95% of the
//!   rates and the write() cost within 2%.
//! - [`pipeline`]: not an overhead ratio but what the agent's userspace sustains: generators
//!   in several cgroups at rising event rates, the agent exporting to a real collector (rotel);
//!   agent CPU per delivered event, peak RSS, latency to the collector and losses; `--check`
//!   fails on a missed target.
//! - [`storm`]: a connection storm: clients in several cgroups making short TLS-named
//!   connections to ten loopback destinations at fixed rates; the rate reached, agent CPU and
//!   RSS, ring records per connection (repeats are folded in the kernel) and the network
//!   programs' cost; `--check` fails unless the agent stays under 5% of one core at 50,000
//!   connections per second.

mod exec;
mod getenv;
mod net;
mod open;
mod pipeline;
mod storm;

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use crate::{build, setup, util};

/// The agent binary (in `target/release`) and the subcommands the benchmarks start.
const AGENT_BINARY: &str = build::AGENT_PACKAGE;
const AGENT_SUBCOMMAND: &str = "agent";
const FLOOR_SUBCOMMAND: &str = "bench-floor";
/// `keytrail bench-floor` flag choosing the hooks.
const FAMILY_FLAG: &str = "--family";
/// `keytrail agent` flags: JSON lines to a file, configuration file, state file (whose
/// directory holds the node's fingerprint key; kept in the benchmark's temporary directory).
const JSONL_FLAG: &str = "--jsonl";
const CONFIG_FLAG: &str = "--config";
const STATE_FLAG: &str = "--state";

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
    Open(open::Options),
    /// Cost of fork+execve+wait with no agent, with empty programs attached, with the agent
    /// (getenv probe off and on).
    Exec(exec::Options),
    /// Cost of a getenv() call with no agent, with an empty uprobe attached, with the agent.
    Getenv(getenv::Options),
    /// TCP connects, TLS handshakes, bulk TLS throughput and plain write()s with no agent,
    /// with the agent's network programs off, with the agent.
    Net(net::Options),
    /// Agent CPU per event, RSS, latency to a real OTLP collector and losses at rising event
    /// rates.
    Pipeline(pipeline::Options),
    /// Agent CPU, RSS and ring records per connection under a storm of short TLS connections
    /// from several cgroups, at fixed rates, with no agent and with the agent.
    Storm(storm::Options),
}

pub fn run(opts: Options) -> Result<()> {
    match opts.bench {
        Bench::Open(opts) => open::run(opts),
        Bench::Exec(opts) => exec::run(opts),
        Bench::Getenv(opts) => getenv::run(opts),
        Bench::Net(opts) => net::run(opts),
        Bench::Pipeline(opts) => pipeline::run(opts),
        Bench::Storm(opts) => storm::run(opts),
    }
}

/// What runs beside the loop during one measurement.
#[derive(Clone, Copy, Debug)]
enum Attach<'a> {
    /// Nothing.
    None,
    /// `keytrail bench-floor --family FAMILY`.
    Floor(&'a str),
    /// `keytrail agent`, with this configuration file (else the embedded default).
    Agent(Option<&'a Path>),
}

/// One measurement.
struct Sample {
    ns_per_op: f64,
    /// Final stats line of the floor or agent process.
    stats: Option<Map<String, Value>>,
    /// Lines in the agent's output file other than stats lines.
    events: Option<u64>,
}

/// Runs the measurements of one benchmark: the agent binary, a temporary directory for the
/// agent's files, bpf_stats enabled for its lifetime.
struct Bencher {
    agent: PathBuf,
    /// `target/bench`: compiled loops and reports.
    out_dir: PathBuf,
    tmp: tempfile::TempDir,
    /// Measurements so far, numbering the log and output files.
    runs: usize,
    _bpf_stats: BpfStats,
}

impl Bencher {
    /// Checks the options and for root, builds the agent (release) and compiles the C loop
    /// `source` (`bench/<name>.c`); returns the bencher and the loop's path.
    fn new(bench: &str, iterations: u64, rounds: usize, source: &str) -> Result<(Self, PathBuf)> {
        if iterations == 0 || rounds == 0 {
            bail!("--iterations and --rounds must be positive");
        }
        if !util::is_root() {
            bail!(
                "the benchmark needs root (it loads eBPF programs and sets {BPF_STATS_SYSCTL}): \
                 run it as root, e.g. `sudo -E env PATH=\"$PATH\" cargo xtask bench {bench}`"
            );
        }
        setup::ensure()?;
        install_signal_handlers();

        build::build_agent(true)?;
        let agent = util::binary_path(AGENT_BINARY, true);
        let out_dir = util::target_dir().join("bench");
        fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        let name = Path::new(source)
            .file_stem()
            .context("C loop without a file name")?;
        let program = out_dir.join(name);
        util::run_checked(
            Command::new("cc")
                .args(["-O2", "-Wall", "-Wextra", "-o"])
                .arg(&program)
                .arg(source),
        )
        .with_context(|| format!("compiling {source}"))?;

        let tmp = tempfile::Builder::new()
            .prefix("keytrail-bench-")
            .tempdir_in("/tmp")
            .context("creating a temporary directory in /tmp")?;
        let bencher = Self {
            agent,
            out_dir,
            tmp,
            runs: 0,
            _bpf_stats: BpfStats::enable()?,
        };
        Ok((bencher, program))
    }

    /// The temporary directory, for the loops' files and the agent's.
    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Runs the loop `cmd` with `attach` beside it.
    fn measure(&mut self, attach: Attach<'_>, cmd: &mut Command) -> Result<Sample> {
        self.measure_with(attach, &mut || run_loop(cmd))
    }

    /// Runs `workload`, which returns nanoseconds per operation, with `attach` beside it.
    fn measure_with(
        &mut self,
        attach: Attach<'_>,
        workload: &mut dyn FnMut() -> Result<f64>,
    ) -> Result<Sample> {
        check_interrupted()?;
        self.runs += 1;
        match attach {
            Attach::None => Ok(Sample {
                ns_per_op: workload()?,
                stats: None,
                events: None,
            }),
            Attach::Floor(family) => self.with_floor(family, workload),
            Attach::Agent(config) => self.with_agent(config, workload),
        }
    }

    fn log_file(&self, name: &str) -> Result<(PathBuf, File)> {
        let path = self.dir().join(format!("{name}-{}.log", self.runs));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok((path, file))
    }

    /// `keytrail bench-floor`: stats lines on stdout, the first one once attached, a final
    /// one after SIGTERM.
    fn with_floor(
        &self,
        family: &str,
        workload: &mut dyn FnMut() -> Result<f64>,
    ) -> Result<Sample> {
        let (log, log_file) = self.log_file("floor")?;
        let mut cmd = Command::new(&self.agent);
        cmd.args([FLOOR_SUBCOMMAND, FAMILY_FLAG, family])
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

        let ns_per_op = workload()?;
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
    fn with_agent(
        &self,
        config: Option<&Path>,
        workload: &mut dyn FnMut() -> Result<f64>,
    ) -> Result<Sample> {
        let (log, log_file) = self.log_file("agent")?;
        let events = self.dir().join(format!("events-{}.jsonl", self.runs));
        let mut cmd = Command::new(&self.agent);
        cmd.arg(AGENT_SUBCOMMAND)
            .arg(JSONL_FLAG)
            .arg(&events)
            .arg(STATE_FLAG)
            .arg(self.dir().join("state").join("keytrail.db"));
        if let Some(config) = config {
            cmd.arg(CONFIG_FLAG).arg(config);
        }
        cmd.stdin(Stdio::null())
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

        AGENT_PID.store(child.child.id(), Ordering::SeqCst);
        *lock(&AGENT_EVENTS) = Some(events.clone());
        let ns_per_op = workload();
        AGENT_PID.store(0, Ordering::SeqCst);
        *lock(&AGENT_EVENTS) = None;
        let ns_per_op = ns_per_op?;
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

    /// Prints the report and writes it to `target/bench/<name>.md`.
    fn write_report(&self, name: &str, report: &str) -> Result<()> {
        println!("{report}");
        let out = self.out_dir.join(format!("{name}.md"));
        fs::write(&out, report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: report written to {}", out.display());
        Ok(())
    }
}

/// Runs a C loop; it prints nanoseconds per operation.
fn run_loop(cmd: &mut Command) -> Result<f64> {
    let out = util::output_checked(cmd)?;
    out.trim()
        .parse()
        .with_context(|| format!("`{}` printed {out:?}, not a number", util::display(cmd)))
}

/// Calls `measure(round, item, setup)` for every item and setup in each round, items in
/// order and the setups rotated from round to round, so drift hits all setups alike.
fn interleave<I: Copy, S: Copy>(
    rounds: usize,
    items: &[I],
    setups: &[S],
    mut measure: impl FnMut(usize, I, S) -> Result<()>,
) -> Result<()> {
    let start = Instant::now();
    for round in 0..rounds {
        for &item in items {
            for i in 0..setups.len() {
                measure(round, item, setups[(i + round) % setups.len()])?;
            }
        }
    }
    eprintln!("bench: measured in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Progress line of one measurement.
fn log_sample(round: usize, rounds: usize, setup: &str, what: &str, sample: &Sample) {
    eprintln!(
        "bench: round {}/{rounds} {setup:<10} {what:<11} {:>11.1} ns/op",
        round + 1,
        sample.ns_per_op
    );
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
/// The pid of the agent serving the current measurement (0: none), for benchmarks that
/// sample its CPU time and memory.
static AGENT_PID: AtomicU32 = AtomicU32::new(0);
/// The JSON lines file of that agent, for benchmarks that read its stats lines meanwhile.
static AGENT_EVENTS: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Shares of one CPU (1.0: a whole CPU) over measurements, as `median N%, most M%`.
fn busy_share(values: Vec<f64>) -> String {
    let max = values.iter().copied().reduce(f64::max);
    format!(
        "median {}%, most {}%",
        fmt(median(values).map(|v| v * 100.0), 0),
        fmt(max.map(|v| v * 100.0), 0)
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

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

/// Median ns per operation.
fn ns(samples: &[Sample]) -> Option<f64> {
    median(samples.iter().map(|s| s.ns_per_op).collect())
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

/// Median of per-round differences `a - b` in ns per operation.
fn difference(a: &[Sample], b: &[Sample]) -> Option<f64> {
    median(
        a.iter()
            .zip(b)
            .map(|(a, b)| a.ns_per_op - b.ns_per_op)
            .collect(),
    )
}

/// Median kernel ns per run of `program`.
fn program_ns(samples: &[Sample], program: &str) -> Option<f64> {
    median(
        samples
            .iter()
            .filter_map(|s| ns_per_run(s.stats.as_ref()?, program))
            .collect(),
    )
}

/// Median of a stats value over the measurements that report it.
fn stat(samples: &[Sample], key: &str) -> Option<f64> {
    median(
        samples
            .iter()
            .filter_map(|s| number(s.stats.as_ref()?, key))
            .collect(),
    )
}

/// Median runs of `program` per measurement.
fn program_runs(samples: &[Sample], program: &str) -> Option<f64> {
    stat(
        samples,
        &format!("{PROGRAM_KEY_PREFIX}{program}{RUN_COUNT_SUFFIX}"),
    )
}

/// Median of the agent's records (output lines other than stats lines) per measurement.
fn records(samples: &[Sample]) -> Option<f64> {
    median(
        samples
            .iter()
            .filter_map(|s| s.events)
            .map(|n| n as f64)
            .collect(),
    )
}

/// Sum of `keytrail.probe.*.dropped` over all measurements.
fn dropped(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .filter_map(|s| s.stats.as_ref())
        .flat_map(|stats| stats.iter())
        .filter(|(key, _)| key.starts_with(PROBE_KEY_PREFIX) && key.ends_with(DROPPED_SUFFIX))
        .filter_map(|(_, v)| v.as_f64())
        .sum()
}

/// Title and the common bullet lines: date, kernel, CPUs, commit, then `lines`.
fn header(w: &mut String, title: &str, lines: &[String]) {
    let _ = writeln!(w, "# {title}\n");
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
    for line in lines {
        let _ = writeln!(w, "- {line}");
    }
    let _ = writeln!(w);
}

/// Every program of each setup: kernel ns per run (runs per measurement), one column per
/// entry of `columns`; `rows` pairs a setup name with its samples for each column.
fn all_programs_table(w: &mut String, columns: &[&str], rows: &[(&str, Vec<&[Sample]>)]) {
    let _ = writeln!(w, "## All programs: ns per run (runs per measurement)\n");
    let _ = writeln!(w, "| setup | program | {} |", columns.join(" | "));
    let _ = writeln!(w, "|---|---|{}", "---:|".repeat(columns.len()));
    for (setup, samples) in rows {
        let names = samples
            .iter()
            .flat_map(|s| program_names(s))
            .collect::<BTreeSet<_>>();
        for name in names {
            let cells = samples
                .iter()
                .map(|s| {
                    format!(
                        "{} ({})",
                        fmt(program_ns(s, &name), 1),
                        fmt(program_runs(s, &name), 0)
                    )
                })
                .collect::<Vec<_>>();
            let _ = writeln!(w, "| {setup} | {name} | {} |", cells.join(" | "));
        }
    }
    let _ = writeln!(
        w,
        "\nns per run: median over the measurements in which the program ran; runs: median \
         over all measurements (other processes' calls included).\n"
    );
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
