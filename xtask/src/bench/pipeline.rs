//! `cargo xtask bench pipeline`: what the agent's pipeline sustains, from the kernel to a
//! real OTLP collector (rotel), and at what cost.
//!
//! A C generator (`pipeline_gen.c`) runs in several cgroups at once; each opens credential
//! files (`.env.N` holding a static token, one access event per open: the agent's
//! de-duplication window is 0 for the run) and every tenth open also connects to a local TCP
//! listener (connections feed correlation). For each rate the agent starts fresh, exporting
//! to a rotel collector on loopback (blackhole exporter) and writing JSON lines to a file.
//! Measured: the agent's CPU time (utime + stime from /proc) per delivered event, its peak RSS,
//! the latency from the traced syscall to the collector's acknowledgement (p50 / p99, measured
//! by the agent per exported record), and losses (ring buffer drops, sink queue drops, OTLP
//! records lost after retries, and opens that produced no event). After the given rates it
//! keeps raising the rate by half until losses begin or the generators cannot keep up.
//!
//! Targets: under 5 us of agent CPU per event, RSS under 40 MiB at 10k events/s, no loss at
//! 10k events/s, p99 under 2 s. `--check` fails when one is missed.

use std::{
    cell::RefCell,
    ffi::CString,
    fmt::Write as _,
    fs,
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::{AGENT_PID, Attach, Bencher, DROPPED_SUFFIX, PROBE_KEY_PREFIX, header, number};
use crate::setup;

const GEN_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bench/pipeline_gen.c");
/// Credential files per generator.
const FILES: usize = 64;
/// One connection per this many opens.
const CONNECT_EVERY: u32 = 10;
/// Time for queued events to reach the collector after the generators stop.
const DRAIN: Duration = Duration::from_secs(3);
const RSS_SAMPLE: Duration = Duration::from_millis(100);
/// The ramp stops here whatever happens.
const MAX_RATE: f64 = 400_000.0;

/// Targets.
const MAX_CPU_US_PER_EVENT: f64 = 5.0;
const MAX_RSS_MIB: f64 = 40.0;
const TARGET_RATE: f64 = 10_000.0;
const MAX_P99_MS: f64 = 2000.0;

/// Stats keys read from the agent's final stats line.
const EMITTED_KEY: &str = "keytrail.accesses.emitted";
const SINK_DROPPED_KEY: &str = "keytrail.sink.dropped";
const OTLP_EXPORTED_KEY: &str = "keytrail.otlp.exported";
const OTLP_FAILED_KEY: &str = "keytrail.otlp.failed";
const P50_KEY: &str = "keytrail.otlp.latency_p50_ms";
const P99_KEY: &str = "keytrail.otlp.latency_p99_ms";

#[derive(Debug, Args)]
pub struct Options {
    /// Event rates to measure (opens per second, all generators together), before the ramp.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    rates: Vec<f64>,
    /// Seconds the generators run at each rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Generators, each in its own cgroup.
    #[arg(long, default_value_t = 4)]
    cgroups: usize,
    /// Do not raise the rate past the given ones to find where losses begin.
    #[arg(long)]
    no_ramp: bool,
    /// Exit with an error if a target is missed.
    #[arg(long)]
    check: bool,
}

/// One rate's figures.
struct Step {
    target: f64,
    reached: f64,
    opens: u64,
    emitted: f64,
    exported: f64,
    cpu_s: f64,
    rss_mib: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Ring buffer drops + sink queue drops + OTLP losses + opens without an event.
    lost: f64,
}

impl Step {
    fn cpu_us_per_event(&self) -> Option<f64> {
        (self.exported > 0.0).then(|| self.cpu_s * 1e6 / self.exported)
    }
}

pub fn run(opts: Options) -> Result<()> {
    if opts.rates.is_empty() || opts.rates.iter().any(|r| *r <= 0.0) || opts.cgroups == 0 {
        bail!("--rates must be positive numbers and --cgroups at least 1");
    }
    let (mut bencher, generator) = Bencher::new("pipeline", 1, 1, GEN_SOURCE)?;
    let collector = Collector::start(bencher.dir())?;
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the connect target")?;
    let port = listener.local_addr()?.port();
    // Accept and close, so connects complete like real ones.
    thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let files = plant_files(bencher.dir(), opts.cgroups)?;
    let cgroups = BenchCgroups::create(opts.cgroups)?;
    let config = bencher.dir().join("pipeline.yaml");
    fs::write(
        &config,
        format!(
            // Every open a record, no budget: the benchmark measures the agent's own capacity.
            "output:\n  dedup_window: 0s\n  stats_interval: 1s\n  otlp:\n    endpoint: {}\n    metrics_interval: 5s\ncorrelate:\n  emit_interval: 10s\nlimits:\n  workload_records_per_second: 0\n",
            collector.endpoint
        ),
    )?;

    let mut steps: Vec<Step> = Vec::new();
    let mut rate_queue: Vec<f64> = opts.rates.clone();
    let mut i = 0;
    while i < rate_queue.len() {
        let rate = rate_queue[i];
        i += 1;
        let step = measure(
            &mut bencher,
            &config,
            &generator,
            &files,
            &cgroups,
            port,
            rate,
            opts.seconds,
        )?;
        eprintln!(
            "bench: {:>8.0}/s reached {:>8.0}/s: cpu {} us/event, rss {:.1} MiB, p50 {} ms, p99 {} ms, lost {}",
            step.target,
            step.reached,
            super::fmt(step.cpu_us_per_event(), 2),
            step.rss_mib,
            super::fmt(step.p50_ms, 0),
            super::fmt(step.p99_ms, 0),
            step.lost
        );
        let keep_ramping = !opts.no_ramp
            && i == rate_queue.len()
            && step.lost == 0.0
            && step.reached >= 0.9 * step.target
            && rate * 1.5 <= MAX_RATE;
        steps.push(step);
        if keep_ramping {
            rate_queue.push(rate * 1.5);
        }
    }
    let report = report(&opts, &steps);
    bencher.write_report("pipeline", &report)?;
    if opts.check {
        check(&steps)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure(
    bencher: &mut Bencher,
    config: &Path,
    generator: &Path,
    files: &[PathBuf],
    cgroups: &BenchCgroups,
    port: u16,
    rate: f64,
    seconds: u64,
) -> Result<Step> {
    let result: RefCell<Option<(u64, f64, f64, f64)>> = RefCell::new(None);
    let sample = bencher.measure_with(Attach::Agent(Some(config)), &mut || {
        let pid = AGENT_PID.load(Ordering::SeqCst);
        let cpu_before = cpu_seconds(pid)?;
        let per_gen = rate / files.len() as f64;
        let mut children = Vec::new();
        for (dir, cgroup) in files.iter().zip(&cgroups.procs) {
            let mut cmd = Command::new(generator);
            cmd.arg(dir)
                .arg(FILES.to_string())
                .arg(format!("{per_gen}"))
                .arg(seconds.to_string())
                .arg(port.to_string())
                .arg(CONNECT_EVERY.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            let procs = cgroup.clone();
            // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
            unsafe {
                cmd.pre_exec(move || join_cgroup(&procs));
            }
            children.push(cmd.spawn().context("starting pipeline_gen")?);
        }
        let mut rss_mib: f64 = 0.0;
        while children
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(None)))
        {
            rss_mib = rss_mib.max(rss_mib_of(pid));
            thread::sleep(RSS_SAMPLE);
        }
        let mut opens = 0;
        let mut reached = 0.0;
        for child in children {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!("pipeline_gen failed: {}", out.status);
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut parts = text.split_whitespace();
            opens += parts
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            reached += parts
                .next()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        let drain_end = Instant::now() + DRAIN;
        while Instant::now() < drain_end {
            rss_mib = rss_mib.max(rss_mib_of(pid));
            thread::sleep(RSS_SAMPLE);
        }
        let cpu = cpu_seconds(pid)? - cpu_before;
        *result.borrow_mut() = Some((opens, reached, cpu, rss_mib));
        Ok(0.0)
    })?;
    let (opens, reached, cpu_s, rss_mib) = result.into_inner().context("no measurement")?;
    let stats = sample.stats.context("no final stats line")?;
    let get = |k: &str| number(&stats, k).unwrap_or(0.0);
    let ring_dropped: f64 = stats
        .iter()
        .filter(|(k, _)| k.starts_with(PROBE_KEY_PREFIX) && k.ends_with(DROPPED_SUFFIX))
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    let emitted = get(EMITTED_KEY);
    let unreported = (opens as f64 - emitted).max(0.0);
    Ok(Step {
        target: rate,
        reached,
        opens,
        emitted,
        exported: get(OTLP_EXPORTED_KEY),
        cpu_s,
        rss_mib,
        p50_ms: number(&stats, P50_KEY),
        p99_ms: number(&stats, P99_KEY),
        lost: ring_dropped + get(SINK_DROPPED_KEY) + get(OTLP_FAILED_KEY) + unreported,
    })
}

fn report(opts: &Options, steps: &[Step]) -> String {
    let mut w = String::new();
    header(
        &mut w,
        "keytrail bench pipeline",
        &[
            format!(
                "{} generators in their own cgroups, {} s per rate, one connect per {CONNECT_EVERY} opens; \
                 agent exporting to rotel (OTLP/gRPC, loopback) and to a JSON lines file",
                opts.cgroups, opts.seconds
            ),
            format!(
                "targets: < {MAX_CPU_US_PER_EVENT} us agent CPU per event, RSS < {MAX_RSS_MIB} MiB and no loss at \
                 {TARGET_RATE:.0} events/s, p99 < {MAX_P99_MS:.0} ms"
            ),
        ],
    );
    let _ = writeln!(
        w,
        "| target/s | reached/s | opens | access events | exported (OTLP) | agent CPU s | CPU us/event | peak RSS MiB | p50 ms | p99 ms | lost |"
    );
    let _ = writeln!(
        w,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in steps {
        let _ = writeln!(
            w,
            "| {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.2} | {} | {:.1} | {} | {} | {:.0} |",
            s.target,
            s.reached,
            s.opens,
            s.emitted,
            s.exported,
            s.cpu_s,
            super::fmt(s.cpu_us_per_event(), 2),
            s.rss_mib,
            super::fmt(s.p50_ms, 0),
            super::fmt(s.p99_ms, 0),
            s.lost
        );
    }
    let first_loss = steps.iter().find(|s| s.lost > 0.0);
    let _ = writeln!(w);
    match first_loss {
        Some(s) => {
            let _ = writeln!(
                w,
                "Losses begin at {:.0} events/s (reached {:.0}/s).",
                s.target, s.reached
            );
        }
        None => {
            let top = steps.last().map(|s| s.reached).unwrap_or(0.0);
            let _ = writeln!(
                w,
                "No losses up to {top:.0} events/s (the highest rate measured: the ramp stops when \
                 the generators cannot reach the rate, or at {MAX_RATE:.0}/s)."
            );
        }
    }
    w
}

fn check(steps: &[Step]) -> Result<()> {
    let mut missed = Vec::new();
    for s in steps {
        if let Some(cpu) = s.cpu_us_per_event()
            && cpu > MAX_CPU_US_PER_EVENT
            && s.target <= TARGET_RATE
        {
            missed.push(format!("{:.0}/s: {cpu:.2} us CPU per event", s.target));
        }
        if s.p99_ms.is_some_and(|p| p > MAX_P99_MS) && s.target <= TARGET_RATE {
            missed.push(format!("{:.0}/s: p99 {:?} ms", s.target, s.p99_ms));
        }
        if (s.target - TARGET_RATE).abs() < 1.0 {
            if s.rss_mib > MAX_RSS_MIB {
                missed.push(format!("RSS {:.1} MiB at {TARGET_RATE:.0}/s", s.rss_mib));
            }
            if s.lost > 0.0 {
                missed.push(format!("{:.0} events lost at {TARGET_RATE:.0}/s", s.lost));
            }
        }
    }
    if !missed.is_empty() {
        bail!("targets missed: {}", missed.join("; "));
    }
    Ok(())
}

/// `FILES` dotenv files holding a static token, per generator.
fn plant_files(dir: &Path, generators: usize) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for g in 0..generators {
        let d = dir.join(format!("gen{g}"));
        fs::create_dir_all(&d)?;
        for f in 0..FILES {
            // Not a real token: fixed, public test material.
            let token = format!("ghp_{:0>36}", format!("{g}x{f}benchmarktoken"));
            fs::write(d.join(format!(".env.{f}")), format!("API_TOKEN={token}\n"))?;
        }
        dirs.push(d);
    }
    Ok(dirs)
}

/// Leaf cgroups of the generators under the cgroup2 mount; removed on drop.
pub(super) struct BenchCgroups {
    base: PathBuf,
    /// `cgroup.procs` of each leaf, as C strings for the pre-exec hook.
    pub(super) procs: Vec<CString>,
}

impl BenchCgroups {
    pub(super) fn create(n: usize) -> Result<Self> {
        let base = cgroup2_mount()?.join(format!("keytrail-bench-{}", std::process::id()));
        fs::create_dir(&base).with_context(|| format!("creating cgroup {}", base.display()))?;
        let mut procs = Vec::new();
        for i in 0..n {
            let leaf = base.join(format!("gen{i}"));
            fs::create_dir(&leaf).with_context(|| format!("creating cgroup {}", leaf.display()))?;
            let p = leaf.join("cgroup.procs");
            procs.push(CString::new(p.to_string_lossy().as_bytes())?);
        }
        Ok(Self { base, procs })
    }
}

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.base) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.base);
    }
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_mount() -> Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            // `... mount-point ... - cgroup2 ...`: the type follows the ` - ` separator.
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2"))
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .context("no cgroup2 file system is mounted")
}

/// Moves the calling (forked) process into the cgroup whose `cgroup.procs` is `procs`.
pub(super) fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: plain syscalls on a valid C string and a local buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// utime + stime of a process, in seconds.
pub(super) fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .context("reading the agent's /proc stat")?;
    // Fields after the command (which may hold spaces) start after the last `)`.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11) + ticks(12)) / hz.max(1.0))
}

pub(super) fn rss_mib_of(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A rotel collector on loopback with the blackhole exporter; killed on drop.
struct Collector {
    child: std::process::Child,
    endpoint: String,
}

impl Collector {
    fn start(dir: &Path) -> Result<Self> {
        let rotel = setup::rotel_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let http_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = fs::File::create(dir.join("rotel.log"))?;
        let child = Command::new(&rotel)
            .arg("start")
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(["--exporter", "blackhole"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel-agent.log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", rotel.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("rotel did not listen on 127.0.0.1:{port} within 20 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
