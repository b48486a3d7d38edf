//! `cargo xtask bench net`: what the agent adds to the cost of network connections, over
//! loopback.
//!
//! Five measurements, each in four setups:
//!
//! - **connect**: a small C loop (`net_loop.c connect`) that connects to its own listener on
//!   127.0.0.1 and accepts, closes both ends, repeated; connects per second;
//! - **handshake**: `openssl s_time -new` against a fresh `openssl s_server -www` with a
//!   self-signed EC P-256 certificate: full TLS handshakes in a loop; handshakes per second;
//! - **request**: the same with `s_time -www /`: each connection also sends `GET /` with
//!   SSL_write, which the agent's `tls_write` uprobe traps, and reads the page; connections
//!   per second;
//! - **bulk**: a Python script (`net_tls_bulk.py`, the `ssl` module on the system libssl)
//!   sending MiB through one TLS connection in 16 KiB SSL_write_ex calls to a forked server
//!   that discards them; MiB per second;
//! - **write**: write() of 64 bytes to `/dev/null` (`net_loop.c write`), a control: the agent
//!   hooks no write, so it must cost the same; ns per write.
//!
//! s_time's own figure counts whole seconds; the rate here comes from the arrival times of
//! its progress characters (one per connection, flushed as each one ends) on its stdout.
//!
//! Setups, interleaved within each round: none; floor (`keytrail bench-floor --family net`:
//! empty connect4, connect6, sock_ops and egress programs at the cgroup2 root, the cost of
//! running a program on those hooks at all; no uprobe); agent-net-off
//! (`network.connections: false`, every other program of the agent on: what the rest of the
//! agent costs); agent (the default configuration, network programs and SSL_write uprobes
//! on).
//!
//! Each measurement also notes what else the machine did meanwhile: the CPU time used outside
//! the benchmark's processes, the time the hypervisor stole from the virtual CPUs, and whether
//! another keytrail process (a test's agent, whose programs every setup would pay for) was
//! running; the report shows them, to tell noisy figures.
//!
//! Targets: the agent keeps at least 95% of the connects, handshakes, requests and bulk
//! throughput of none, and write() within 2% of none; `--check` fails when one is missed.
//! The report (with the kernel cost per run of `net_connect4`, `net_state`, `net_payload`
//! and `tls_write` from bpf_stats) goes to stdout and to `target/bench/net.md`.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs::{self, File},
    io::{ErrorKind, Read as _},
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde_json::Value;

use super::{
    AGENT_BINARY, AGENT_SUBCOMMAND, Attach, Bencher, CONFIG_FLAG, ChildGuard, DROPPED_SUFFIX,
    EVENTS_RECEIVED_KEY, JSONL_FLAG, POLL_INTERVAL, PROBE_KEY_PREFIX, PROGRAM_KEY_PREFIX,
    READY_TIMEOUT, RUN_COUNT_SUFFIX, Sample, all_programs_table, busy_share, check_interrupted,
    command_line, dropped, fmt, header, interleave, log_tail, median, number, program_names,
    program_ns, program_runs, records,
};
use crate::util;

const NET_LOOP_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bench/net_loop.c");
const TLS_BULK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bench/net_tls_bulk.py");

/// The agent with its network programs (and SSL_write uprobes) off, all else at its default.
const NET_OFF_CONFIG: &str = "network:\n  connections: false\n";

/// The agent's network programs, in the kernel-cost table.
const NET_PROGRAMS: &[&str] = &["net_connect4", "net_state", "net_payload", "tls_write"];

/// Targets: agent / none of the rates at least this; of ns per write() at most this.
const MIN_RATE_RATIO: f64 = 0.95;
const MAX_WRITE_RATIO: f64 = 1.02;

/// Agent counters.
const NET_CONNECT_SEEN_KEY: &str = "keytrail.probe.net_connect.seen";
const NET_PAYLOAD_SEEN_KEY: &str = "keytrail.probe.net_payload.seen";
const TLS_WRITE_SEEN_KEY: &str = "keytrail.probe.tls_write.seen";
const TLS_LIBRARIES_KEY: &str = "keytrail.tls.libraries";
const PROBES_FAILED_KEY: &str = "keytrail.probes.failed_names";

/// Bulk transfer: bytes per SSL_write (`net_tls_bulk.py`).
const BULK_WRITE_SIZE: u64 = 16 * 1024;
const MIB: u64 = 1 << 20;
/// Bytes per write() of the control loop (`net_loop.c`).
const WRITE_SIZE: u64 = 64;

/// s_server's line once it listens, with the address: `ACCEPT 127.0.0.1:PORT`.
const ACCEPT_PREFIX: &str = "ACCEPT ";

#[derive(Debug, Args)]
pub struct Options {
    /// Rounds; each round measures every setup on every measurement.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// connect() cycles per measurement.
    #[arg(long, default_value_t = 20_000)]
    connects: u64,
    /// Seconds of each `openssl s_time` run (handshake and request measurements).
    #[arg(long, default_value_t = 3)]
    tls_seconds: u64,
    /// MiB sent through TLS per bulk measurement.
    #[arg(long, default_value_t = 256)]
    bulk_mib: u64,
    /// write() calls to /dev/null per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    writes: u64,
    /// Exit with an error if a target is missed.
    #[arg(long)]
    check: bool,
}

#[derive(Clone, Copy, Debug)]
enum Setup {
    None,
    Floor,
    NetOff,
    Agent,
}

impl Setup {
    const ALL: [Setup; 4] = [Setup::None, Setup::Floor, Setup::NetOff, Setup::Agent];

    fn name(self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::Floor => "floor",
            Setup::NetOff => "agent-net-off",
            Setup::Agent => "agent",
        }
    }
}

/// One kind of measurement.
#[derive(Clone, Copy, Debug)]
enum Item {
    Connect,
    Handshake,
    Request,
    Bulk,
    Write,
}

impl Item {
    const ALL: [Item; 5] = [
        Item::Connect,
        Item::Handshake,
        Item::Request,
        Item::Bulk,
        Item::Write,
    ];

    fn name(self) -> &'static str {
        match self {
            Item::Connect => "connect",
            Item::Handshake => "handshake",
            Item::Request => "request",
            Item::Bulk => "bulk",
            Item::Write => "write",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Item::Connect => "TCP connect+accept+close",
            Item::Handshake => "TLS full handshake (s_time -new)",
            Item::Request => "TLS handshake + GET / (s_time -new -www /)",
            Item::Bulk => "bulk TLS, 16 KiB SSL_write_ex",
            Item::Write => "write() 64 B to /dev/null",
        }
    }

    /// The unit of the reported value.
    fn unit(self) -> &'static str {
        match self {
            Item::Connect => "connects/s",
            Item::Handshake => "handshakes/s",
            Item::Request => "connections/s",
            Item::Bulk => "MiB/s",
            Item::Write => "ns/write",
        }
    }

    /// What one operation is, for the per-operation counters.
    fn operation(self) -> &'static str {
        match self {
            Item::Connect => "connect",
            Item::Handshake | Item::Request => "connection",
            Item::Bulk => "SSL_write",
            Item::Write => "write",
        }
    }

    /// A rate (higher is better; the sample holds ns per operation), not a time.
    fn is_rate(self) -> bool {
        !matches!(self, Item::Write)
    }

    /// The reported value of one sample: a rate per second, or ns per operation.
    fn value(self, sample: &Sample) -> f64 {
        if self.is_rate() {
            1e9 / sample.ns_per_op
        } else {
            sample.ns_per_op
        }
    }
}

/// `samples[item][setup]`, the operations of each measurement and what else the machine did
/// meanwhile, one entry per round; measurements beside another keytrail process.
#[derive(Default)]
struct Results {
    samples: [[Vec<Sample>; 4]; 5],
    ops: [[Vec<f64>; 4]; 5],
    busy: [[Vec<Busy>; 4]; 5],
    beside_other_agent: usize,
}

impl Results {
    /// What else the machine did during the measurements of `item` (all of them if `None`).
    fn busy(&self, item: Option<Item>) -> Vec<Busy> {
        match item {
            Some(item) => self.busy[item as usize].concat(),
            None => self.busy.iter().flatten().flatten().copied().collect(),
        }
    }

    fn samples(&self, item: Item, setup: Setup) -> &[Sample] {
        &self.samples[item as usize][setup as usize]
    }
}

/// What the TLS measurements need.
struct Tls {
    openssl: PathBuf,
    python: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

/// Everything one measurement needs besides the bencher.
struct Workloads<'a> {
    opts: &'a Options,
    tls: Tls,
    /// The compiled `net_loop.c`.
    net_loop: PathBuf,
    /// Agent configuration with the network programs off.
    net_off: PathBuf,
}

impl Workloads<'_> {
    /// Measures `item` in `setup`; returns the sample and the operations it timed or counted
    /// (warm-up included). `run` numbers the servers' log files.
    fn measure(
        &self,
        bencher: &mut Bencher,
        item: Item,
        setup: Setup,
        run: usize,
    ) -> Result<(Sample, f64)> {
        let attach = match setup {
            Setup::None => Attach::None,
            Setup::Floor => Attach::Floor("net"),
            Setup::NetOff => Attach::Agent(Some(&self.net_off)),
            Setup::Agent => Attach::Agent(None),
        };
        let opts = self.opts;
        match item {
            Item::Connect | Item::Write => {
                let (mode, n) = match item {
                    Item::Connect => ("connect", opts.connects),
                    _ => ("write", opts.writes),
                };
                let mut cmd = Command::new(&self.net_loop);
                cmd.arg(mode).arg(n.to_string());
                let sample = bencher.measure(attach, &mut cmd)?;
                Ok((sample, loop_ops(item, n) as f64))
            }
            Item::Bulk => {
                let mut cmd = Command::new(&self.tls.python);
                cmd.arg(TLS_BULK_SCRIPT)
                    .arg(&self.tls.cert)
                    .arg(&self.tls.key)
                    .arg(opts.bulk_mib.to_string());
                let sample = bencher.measure(attach, &mut cmd)?;
                Ok((sample, bulk_writes(opts.bulk_mib) as f64))
            }
            Item::Handshake | Item::Request => {
                let request = matches!(item, Item::Request);
                let mut connections = 0;
                let sample = bencher.measure_with(attach, &mut || {
                    let (ns, n) = s_time(&self.tls, request, opts.tls_seconds, run)?;
                    connections = n;
                    Ok(ns)
                })?;
                Ok((sample, connections as f64))
            }
        }
    }
}

pub fn run(opts: Options) -> Result<()> {
    if opts.rounds == 0
        || opts.connects == 0
        || opts.tls_seconds == 0
        || opts.bulk_mib == 0
        || opts.writes == 0
    {
        bail!("--rounds, --connects, --tls-seconds, --bulk-mib and --writes must be positive");
    }
    let openssl = util::find_in_path("openssl")
        .context("the net benchmark needs `openssl` (Debian package openssl)")?;
    let python = util::find_in_path("python3")
        .context("the net benchmark needs `python3` with its ssl module")?;
    let (mut bencher, net_loop) = Bencher::new("net", opts.connects, opts.rounds, NET_LOOP_SOURCE)?;

    let dir = bencher.dir().to_path_buf();
    let net_off = dir.join("net-off.yaml");
    fs::write(&net_off, NET_OFF_CONFIG)?;
    let workloads = Workloads {
        opts: &opts,
        tls: Tls {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            openssl,
            python,
            dir,
        },
        net_loop,
        net_off,
    };
    make_certificate(&workloads.tls)?;
    let _run_time_stats = enable_run_time_stats()?;

    let mut results = Results::default();
    let mut runs = 0;
    interleave(
        opts.rounds,
        &Item::ALL,
        &Setup::ALL,
        |round, item, setup| {
            runs += 1;
            let before = Activity::now();
            let (sample, ops) = workloads.measure(&mut bencher, item, setup, runs)?;
            let after = Activity::now();
            let busy = after.busy_since(&before);
            let other_agents = before.other_agents.max(after.other_agents);
            eprintln!(
                "bench: round {}/{} {:<13} {:<9} {:>11.1} {:<13} (others' CPU {}%, steal {}%{})",
                round + 1,
                opts.rounds,
                setup.name(),
                item.name(),
                item.value(&sample),
                item.unit(),
                fmt(busy.map(|b| b.others * 100.0), 0),
                fmt(busy.map(|b| b.steal * 100.0), 0),
                if other_agents > 0 {
                    format!(", {other_agents} other {AGENT_BINARY} process(es) running")
                } else {
                    String::new()
                }
            );
            let (i, s) = (item as usize, setup as usize);
            results.samples[i][s].push(sample);
            results.ops[i][s].push(ops);
            if let Some(busy) = busy {
                results.busy[i][s].push(busy);
            }
            results.beside_other_agent += usize::from(other_agents > 0);
            Ok(())
        },
    )?;

    let (report, failed) = report(&opts, &workloads.tls, &results);
    bencher.write_report("net", &report)?;
    if opts.check && failed > 0 {
        bail!("{failed} target(s) missed");
    }
    Ok(())
}

/// Turns the kernel's per-program run-time stats on until the returned descriptor is closed
/// (`BPF_ENABLE_STATS`). The kernel counts such references apart from the
/// `kernel.bpf_stats_enabled` sysctl the bencher sets, so another benchmark on the machine
/// restoring that sysctl to 0 meanwhile cannot turn the stats off under this one.
pub(super) fn enable_run_time_stats() -> Result<OwnedFd> {
    /// `union bpf_attr` for this command: `struct { __u32 type; } enable_stats`.
    #[repr(C)]
    struct EnableStats {
        stats_type: u32,
    }
    const BPF_ENABLE_STATS: libc::c_long = 32;
    const BPF_STATS_RUN_TIME: u32 = 0;
    let attr = EnableStats {
        stats_type: BPF_STATS_RUN_TIME,
    };
    // SAFETY: the bpf syscall reads `size` bytes of `attr`, which lives across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            &raw const attr,
            size_of::<EnableStats>() as libc::c_uint,
        )
    };
    let fd = i32::try_from(fd)
        .ok()
        .filter(|&fd| fd >= 0)
        .ok_or_else(std::io::Error::last_os_error)
        .context("BPF_ENABLE_STATS (kernel run-time stats of the programs)")?;
    // SAFETY: a new descriptor the kernel just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What else the machine was doing: CPU time of the whole machine and of this process and its
/// waited-for children (the loop, the servers, the agent), and other keytrail processes (a
/// test's agent, say, attaching network programs of its own at the cgroup root, which every
/// setup would pay for).
pub(super) struct Activity {
    at: Instant,
    machine: Option<MachineCpu>,
    /// user + system time of this process and its reaped children.
    ours: Duration,
    pub(super) other_agents: usize,
}

/// CPU time of all CPUs since boot (`/proc/stat`).
#[derive(Clone, Copy)]
struct MachineCpu {
    /// user + nice + system.
    busy: Duration,
    /// Time the hypervisor gave the virtual CPUs to someone else.
    steal: Duration,
}

/// Over one measurement, in CPUs (1.0: one whole CPU): the CPU time other processes used, and
/// the time stolen from the machine's virtual CPUs.
#[derive(Clone, Copy)]
pub(super) struct Busy {
    pub(super) others: f64,
    pub(super) steal: f64,
}

impl Activity {
    pub(super) fn now() -> Self {
        Self {
            at: Instant::now(),
            machine: machine_cpu(),
            ours: own_cpu(),
            other_agents: other_agents(),
        }
    }

    /// What else the machine did since `before`.
    pub(super) fn busy_since(&self, before: &Activity) -> Option<Busy> {
        let (now, then) = (self.machine?, before.machine?);
        let busy = now.busy.checked_sub(then.busy)?;
        let steal = now.steal.checked_sub(then.steal)?;
        let ours = self.ours.saturating_sub(before.ours);
        let wall = self.at.duration_since(before.at).as_secs_f64();
        (wall > 0.0).then(|| Busy {
            others: busy.saturating_sub(ours).as_secs_f64() / wall,
            steal: steal.as_secs_f64() / wall,
        })
    }
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal ...`,
/// in clock ticks.
fn machine_cpu() -> Option<MachineCpu> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let ticks = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse::<u64>().ok())
        .collect::<Option<Vec<_>>>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    if hz == 0 {
        return None;
    }
    let time = |t: u64| Duration::from_nanos(t * (1_000_000_000 / hz));
    Some(MachineCpu {
        busy: time(ticks.get(..3)?.iter().sum()),
        steal: time(*ticks.get(7)?),
    })
}

/// user + system time of this process and of its children that were waited for.
fn own_cpu() -> Duration {
    [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN]
        .into_iter()
        .map(|who| {
            // SAFETY: all-zero is a valid rusage.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage fills the rusage it is given, which we own.
            if unsafe { libc::getrusage(who, &mut usage) } != 0 {
                return Duration::ZERO;
            }
            [usage.ru_utime, usage.ru_stime]
                .into_iter()
                .map(|t| {
                    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
                })
                .sum::<Duration>()
        })
        .sum()
}

/// Running processes named like the agent binary. Between measurements none of them is this
/// benchmark's.
fn other_agents() -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| {
            fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == AGENT_BINARY)
        })
        .count()
}

/// A fresh self-signed EC P-256 certificate and key for the TLS servers.
fn make_certificate(tls: &Tls) -> Result<()> {
    let mut cmd = Command::new(&tls.openssl);
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-keyout",
    ])
    .arg(&tls.key)
    .arg("-out")
    .arg(&tls.cert);
    util::output_checked(&mut cmd).context("generating the benchmark's TLS certificate")?;
    Ok(())
}

/// Operations of the C loop per measurement, warm-up included (see `net_loop.c`).
fn loop_ops(item: Item, iterations: u64) -> u64 {
    let warmup = match item {
        Item::Connect => (iterations / 100).clamp(100, 1000),
        _ => (iterations / 100).clamp(1000, 20000),
    };
    iterations + warmup
}

/// SSL_write calls of the bulk client per measurement, warm-up included (see
/// `net_tls_bulk.py`).
fn bulk_writes(mib: u64) -> u64 {
    let total = mib * MIB;
    let warm =
        ((total / 16).min(16 * MIB) / BULK_WRITE_SIZE * BULK_WRITE_SIZE).max(BULK_WRITE_SIZE);
    (warm + total) / BULK_WRITE_SIZE
}

/// One `openssl s_time -new` run of `seconds` against a fresh `openssl s_server -www`, with
/// `GET /` on each connection if `request`; returns ns per connection and the connections.
fn s_time(tls: &Tls, request: bool, seconds: u64, run: usize) -> Result<(f64, u64)> {
    let log = tls.dir.join(format!("s_server-{run}.log"));
    let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(&tls.openssl);
    cmd.args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
        .arg(&tls.cert)
        .arg("-key")
        .arg(&tls.key)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // Killed when dropped, whatever happens to the client.
    let mut server = ChildGuard::spawn(cmd, &log)?;
    let port = wait_for_port(&mut server, &log)?;

    let client_log = tls.dir.join(format!("s_time-{run}.log"));
    let client_file =
        File::create(&client_log).with_context(|| format!("creating {}", client_log.display()))?;
    let mut cmd = Command::new(&tls.openssl);
    cmd.arg("s_time")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-new")
        .arg("-time")
        .arg(seconds.to_string());
    if request {
        cmd.args(["-www", "/"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(client_file);
    let start = Instant::now();
    let mut client = ChildGuard::spawn(cmd, &client_log)?;
    let mut stdout = client.child.stdout.take().context("no stdout pipe")?;
    let mut output = Vec::new();
    let mut arrivals = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                output.extend_from_slice(&buf[..n]);
                arrivals.push((output.len(), Instant::now()));
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err).context("reading s_time's output"),
        }
    }
    let status = client.child.wait()?;
    let elapsed = start.elapsed();
    check_interrupted()?;
    if !status.success() {
        bail!("{} failed ({status}){}", client.name, log_tail(&client_log));
    }
    server.check_running()?;
    drop(server);
    let text = String::from_utf8_lossy(&output);
    parse_s_time(&text, &arrivals, elapsed)
        .with_context(|| format!("{} printed:\n{}", client.name, text.trim_end()))
}

/// Waits for s_server's `ACCEPT 127.0.0.1:PORT` line in its log; returns PORT.
fn wait_for_port(server: &mut ChildGuard, log: &Path) -> Result<u16> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        check_interrupted()?;
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with(ACCEPT_PREFIX)) {
            return line
                .rsplit_once(':')
                .and_then(|(_, port)| port.trim().parse().ok())
                .with_context(|| format!("{}: no port in {line:?}", server.name));
        }
        server.check_running()?;
        if Instant::now() > deadline {
            bail!(
                "{} printed no {ACCEPT_PREFIX:?} line within {READY_TIMEOUT:?}{}",
                server.name,
                log_tail(log)
            );
        }
        thread::sleep(POLL_INTERVAL / 5);
    }
}

/// Reads s_time's output: the connections from its summary (`N connections in T real
/// seconds`), ns per connection from the progress characters it prints and flushes one per
/// connection (`*`, `t`, `r`...) between its `Collecting connection statistics` line and
/// the blank line before the summary: the time from the first one's arrival to the last
/// one's, over the connections that ended in it. `arrivals` has, for each read of the pipe,
/// the length of the output so far and the time. If the characters do not match the
/// summary, falls back to the whole run's wall time `elapsed`, start-up included.
fn parse_s_time(
    text: &str,
    arrivals: &[(usize, Instant)],
    elapsed: Duration,
) -> Result<(f64, u64)> {
    let connections = text
        .lines()
        .filter(|l| l.contains("real second"))
        .chain(text.lines())
        .find_map(|line| {
            let (count, _) = line.trim().split_once(" connections in ")?;
            count.trim().parse::<u64>().ok()
        })
        .context("no `N connections in T real seconds` line")?;
    if connections == 0 {
        bail!("s_time made no connection");
    }
    if let Some(ns) = progress_ns(text, arrivals, connections) {
        return Ok((ns, connections));
    }
    eprintln!(
        "bench: s_time's progress characters do not match its {connections} connections; rate \
         over its whole run instead (start-up included)"
    );
    Ok((elapsed.as_nanos() as f64 / connections as f64, connections))
}

/// ns per connection from the arrival times of the progress characters, if there is one per
/// connection and at least two reads apart.
fn progress_ns(text: &str, arrivals: &[(usize, Instant)], connections: u64) -> Option<f64> {
    let start = text.find("Collecting connection statistics")?;
    let start = start + text[start..].find('\n')? + 1;
    let end = text[start..].find("\n\n").map_or(text.len(), |i| start + i);
    let marks = text[start..end]
        .char_indices()
        .filter(|(_, c)| !c.is_whitespace())
        .map(|(i, _)| start + i)
        .collect::<Vec<_>>();
    if marks.len() as u64 != connections {
        return None;
    }
    // The read that brought byte `i`.
    let read_of = |i: usize| arrivals.partition_point(|&(len, _)| len <= i);
    let first = read_of(*marks.first()?);
    let last = read_of(*marks.last()?);
    let (first_time, last_time) = (arrivals.get(first)?.1, arrivals.get(last)?.1);
    let in_first = marks.iter().filter(|&&i| read_of(i) == first).count();
    let timed = marks.len() - in_first;
    (last > first && timed > 0).then(|| (last_time - first_time).as_nanos() as f64 / timed as f64)
}

// ---------------------------------------------------------------------------------------
// Report

/// Median of the reported values (rates or ns).
fn value(item: Item, samples: &[Sample]) -> Option<f64> {
    median(samples.iter().map(|s| item.value(s)).collect())
}

/// Median of per-round ratios of the reported values, `a / b`.
fn relative(item: Item, a: &[Sample], b: &[Sample]) -> Option<f64> {
    median(
        a.iter()
            .zip(b)
            .map(|(a, b)| item.value(a) / item.value(b))
            .collect(),
    )
}

/// Largest over smallest value across the rounds, minus one, in percent.
fn spread(item: Item, samples: &[Sample]) -> Option<f64> {
    let values = samples.iter().map(|s| item.value(s));
    let max = values.clone().reduce(f64::max)?;
    let min = values.reduce(f64::min)?;
    Some((max / min - 1.0) * 100.0)
}

/// The target of one measurement: agent / none of the reported value, its limit and
/// whether it is met.
fn target(item: Item, results: &Results) -> (String, Option<f64>, bool) {
    let r = relative(
        item,
        results.samples(item, Setup::Agent),
        results.samples(item, Setup::None),
    );
    if item.is_rate() {
        (
            format!(
                "{}: agent/none ≥ {MIN_RATE_RATIO:.2} ({})",
                item.name(),
                item.unit()
            ),
            r,
            r.is_some_and(|r| r >= MIN_RATE_RATIO),
        )
    } else {
        (
            format!(
                "{}: agent/none ≤ {MAX_WRITE_RATIO:.2} ({})",
                item.name(),
                item.unit()
            ),
            r,
            r.is_some_and(|r| r <= MAX_WRITE_RATIO),
        )
    }
}

/// Renders the markdown report; also returns how many targets were missed.
fn report(opts: &Options, tls: &Tls, results: &Results) -> (String, usize) {
    let mut md = String::new();
    let w = &mut md;
    let agent_all = Item::ALL
        .iter()
        .flat_map(|&item| results.samples(item, Setup::Agent))
        .collect::<Vec<_>>();
    let failed_probes = agent_all
        .iter()
        .filter_map(|s| s.stats.as_ref()?.get(PROBES_FAILED_KEY)?.as_str())
        .filter(|names| !names.is_empty())
        .map(str::to_owned)
        .collect::<BTreeSet<_>>();
    let tls_libraries = median(
        agent_all
            .iter()
            .filter_map(|s| {
                s.stats
                    .as_ref()?
                    .get(TLS_LIBRARIES_KEY)
                    .and_then(Value::as_f64)
            })
            .collect(),
    );
    let python = tls.python.to_string_lossy();
    let all_busy = results.busy(None);
    let with_agent = Item::ALL
        .iter()
        .flat_map(|&item| [Setup::NetOff, Setup::Agent].map(|setup| results.samples(item, setup)))
        .flatten()
        .collect::<Vec<_>>();
    let without_costs = with_agent
        .iter()
        .filter(|s| {
            s.stats
                .as_ref()
                .is_none_or(|stats| !stats.keys().any(|k| k.starts_with(PROGRAM_KEY_PREFIX)))
        })
        .count();
    header(
        w,
        "keytrail: cost of TCP connects, TLS and writes (loopback)",
        &[
            format!(
                "{} rounds; setups interleaved within each round; values are medians over \
                 rounds, ratios are medians of per-round ratios",
                opts.rounds
            ),
            format!(
                "per measurement: connect: {} connect+accept+close cycles (`net_loop.c`, \
                 listener in the same thread); handshake, request: `openssl s_time -new -time \
                 {}` (request: `-www /`) against `openssl s_server -www`, self-signed EC P-256 \
                 certificate; bulk: {} MiB through one TLS connection in {} KiB writes \
                 (`net_tls_bulk.py`); write: {} write() of {WRITE_SIZE} bytes to /dev/null",
                opts.connects,
                opts.tls_seconds,
                opts.bulk_mib,
                BULK_WRITE_SIZE / 1024,
                opts.writes
            ),
            format!(
                "none: nothing attached; agent-net-off: `keytrail {AGENT_SUBCOMMAND} \
                 {JSONL_FLAG} FILE {CONFIG_FLAG} FILE` with `network.connections: false`; \
                 agent: `keytrail {AGENT_SUBCOMMAND} {JSONL_FLAG} FILE`, default \
                 configuration (connect4/connect6, sock_ops, cgroup_skb egress, SSL_write \
                 uprobes)"
            ),
            format!(
                "tools: {}; {python} {}; libssl libraries the agent probed: {}; failed \
                 probes: {}",
                command_line(&tls.openssl.to_string_lossy(), &["version"]),
                command_line(
                    &python,
                    &[
                        "-c",
                        "import ssl, sys; print(sys.version.split()[0], ssl.OPENSSL_VERSION)"
                    ]
                ),
                fmt(tls_libraries, 0),
                if failed_probes.is_empty() {
                    "none".to_owned()
                } else {
                    failed_probes.into_iter().collect::<Vec<_>>().join("; ")
                }
            ),
            format!(
                "machine activity during the measurements, in % of one CPU: other processes \
                 {}; stolen by the hypervisor {}; another `{AGENT_BINARY}` process (a test's \
                 agent, whose programs every setup pays for) was running around {} of {} \
                 measurements",
                busy_share(all_busy.iter().map(|b| b.others).collect()),
                busy_share(all_busy.iter().map(|b| b.steal).collect()),
                results.beside_other_agent,
                opts.rounds * Item::ALL.len() * Setup::ALL.len(),
            ),
            format!(
                "agent measurements whose final stats line has no kernel program costs \
                 (bpf_stats off): {without_costs} of {}",
                with_agent.len()
            ),
        ],
    );

    let _ = writeln!(w, "## Results\n");
    let _ = writeln!(
        w,
        "| measurement | unit | none | floor | agent-net-off | agent | agent/none | agent/floor \
         | floor/none | agent/agent-net-off | agent-net-off/none | spread | others' CPU | steal |"
    );
    let _ = writeln!(
        w,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for item in Item::ALL {
        let s = |setup| results.samples(item, setup);
        let decimals = if item.is_rate() { 0 } else { 1 };
        let spread = median(
            Setup::ALL
                .iter()
                .filter_map(|&setup| spread(item, s(setup)))
                .collect(),
        );
        let busy = results.busy(Some(item));
        let others = median(busy.iter().map(|b| b.others * 100.0).collect());
        let steal = median(busy.iter().map(|b| b.steal * 100.0).collect());
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}% | {}% | {}% |",
            item.label(),
            item.unit(),
            fmt(value(item, s(Setup::None)), decimals),
            fmt(value(item, s(Setup::Floor)), decimals),
            fmt(value(item, s(Setup::NetOff)), decimals),
            fmt(value(item, s(Setup::Agent)), decimals),
            fmt(relative(item, s(Setup::Agent), s(Setup::None)), 3),
            fmt(relative(item, s(Setup::Agent), s(Setup::Floor)), 3),
            fmt(relative(item, s(Setup::Floor), s(Setup::None)), 3),
            fmt(relative(item, s(Setup::Agent), s(Setup::NetOff)), 3),
            fmt(relative(item, s(Setup::NetOff), s(Setup::None)), 3),
            fmt(spread, 1),
            fmt(others, 0),
            fmt(steal, 0),
        );
    }
    let _ = writeln!(
        w,
        "\nRatios are of the values in each row's unit: below 1 for a rate, above 1 for ns per \
         write, the agent costs something. Spread: (largest / smallest value over the rounds \
         − 1), the median over the four setups; ratios closer to 1 than it are within \
         noise. Others' CPU: CPU time of the machine outside this benchmark's processes during \
         the measurements; steal: time the hypervisor ran something else on the machine's \
         virtual CPUs (medians, in % of one CPU); well above 0, the figures are noisy.\n"
    );

    let _ = writeln!(
        w,
        "## Agent counters (default configuration, per operation)\n"
    );
    let _ = writeln!(
        w,
        "| measurement | operations | net_connect seen | net_payload seen | tls_write seen \
         | {} | kernel events | records | dropped (all rounds) |",
        NET_PROGRAMS
            .iter()
            .map(|p| format!("{p} runs"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(
        w,
        "|---|---:|---:|---:|---:|{}---:|---:|---:|",
        "---:|".repeat(4)
    );
    for item in Item::ALL {
        let agent = results.samples(item, Setup::Agent);
        let ops = &results.ops[item as usize][Setup::Agent as usize];
        // A counter the stats line lacks (a program that never ran) is 0.
        let per_op = |key: &str| {
            median(
                agent
                    .iter()
                    .zip(ops)
                    .filter_map(|(s, &n)| {
                        let stats = s.stats.as_ref()?;
                        (n > 0.0).then(|| number(stats, key).unwrap_or(0.0) / n)
                    })
                    .collect(),
            )
        };
        let runs = NET_PROGRAMS
            .iter()
            .map(|p| {
                fmt(
                    per_op(&format!("{PROGRAM_KEY_PREFIX}{p}{RUN_COUNT_SUFFIX}")),
                    3,
                )
            })
            .collect::<Vec<_>>()
            .join(" | ");
        let _ = writeln!(
            w,
            "| {} | {} {}s | {} | {} | {} | {runs} | {} | {} | {:.0} |",
            item.name(),
            fmt(median(ops.clone()), 0),
            item.operation(),
            fmt(per_op(NET_CONNECT_SEEN_KEY), 3),
            fmt(per_op(NET_PAYLOAD_SEEN_KEY), 3),
            fmt(per_op(TLS_WRITE_SEEN_KEY), 3),
            fmt(per_op(EVENTS_RECEIVED_KEY), 3),
            fmt(records(agent), 0),
            dropped(agent),
        );
    }
    let _ = writeln!(
        w,
        "\nMedians over the measurements of a counter divided by the measurement's operations \
         (median shown; warm-up included; for handshake and request, s_time's connections; \
         other processes' activity during the measurement counts too). Seen are `{NET_CONNECT_SEEN_KEY}`, `{NET_PAYLOAD_SEEN_KEY}`, \
         `{TLS_WRITE_SEEN_KEY}`; runs are the programs' bpf_stats run counts; kernel events is \
         `{EVENTS_RECEIVED_KEY}`; records are the agent's output lines other than stats lines \
         (per measurement, not per operation); dropped is the sum of \
         `{PROBE_KEY_PREFIX}*{DROPPED_SUFFIX}` over all rounds.\n"
    );

    let _ = writeln!(
        w,
        "## Kernel ns per run of the network programs (bpf_stats; runs per measurement)\n"
    );
    let _ = writeln!(w, "| measurement | setup | {} |", NET_PROGRAMS.join(" | "));
    let _ = writeln!(w, "|---|---|{}", "---:|".repeat(NET_PROGRAMS.len()));
    for item in Item::ALL {
        for setup in [Setup::NetOff, Setup::Agent] {
            let s = results.samples(item, setup);
            let cells = NET_PROGRAMS
                .iter()
                .map(|p| {
                    format!(
                        "{} ({})",
                        fmt(program_ns(s, p), 1),
                        fmt(program_runs(s, p), 0)
                    )
                })
                .collect::<Vec<_>>()
                .join(" | ");
            let _ = writeln!(w, "| {} | {} | {cells} |", item.name(), setup.name());
        }
    }
    let net_off_loaded = Item::ALL
        .iter()
        .flat_map(|&item| program_names(results.samples(item, Setup::NetOff)))
        .filter(|name| NET_PROGRAMS.contains(&name.as_str()))
        .collect::<BTreeSet<_>>();
    let _ = writeln!(
        w,
        "\nn/a ns: no run in those measurements; n/a runs: no run count in the stats lines \
         (the program is not loaded). agent-net-off: {}.\n",
        if net_off_loaded.is_empty() {
            "none of these programs was loaded (n/a)".to_owned()
        } else {
            format!(
                "loaded anyway: {}",
                net_off_loaded.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
    );

    let rows = [Setup::NetOff, Setup::Agent].map(|setup| {
        (
            setup.name(),
            Item::ALL
                .iter()
                .map(|&item| results.samples(item, setup))
                .collect::<Vec<_>>(),
        )
    });
    all_programs_table(w, &Item::ALL.map(Item::name), &rows);

    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---:|---|");
    let mut failed = 0;
    for item in Item::ALL {
        let (name, measured, pass) = target(item, results);
        failed += usize::from(!pass);
        let _ = writeln!(
            w,
            "| {name} | {} | {} |",
            fmt(measured, 3),
            if pass { "PASS" } else { "FAIL" }
        );
    }
    (md, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// s_time's output in reads: the first with the header and one mark, then one mark per
    /// read 2 ms apart, then the summary.
    fn run(marks: usize) -> (String, Vec<(usize, Instant)>) {
        let t0 = Instant::now();
        let mut text = "Collecting connection statistics for 3 seconds\n*".to_owned();
        let mut arrivals = vec![(text.len(), t0)];
        for i in 1..marks {
            text.push('*');
            arrivals.push((text.len(), t0 + Duration::from_millis(2 * i as u64)));
        }
        text.push_str(&format!(
            "\n\n{marks} connections in 1.23s; 800.00 connections/user sec, bytes read 0\n\
             {marks} connections in 4 real seconds, 0 bytes read per connection\n"
        ));
        arrivals.push((text.len(), t0 + Duration::from_secs(5)));
        (text, arrivals)
    }

    #[test]
    fn rate_from_progress_marks() {
        let (text, arrivals) = run(101);
        let (ns, n) = parse_s_time(&text, &arrivals, Duration::from_secs(9)).unwrap();
        assert_eq!(n, 101);
        assert!((ns - 2e6).abs() < 1.0, "{ns}");
    }

    #[test]
    fn falls_back_to_wall_time() {
        let (text, arrivals) = run(10);
        let text = text.replace("10 connections in 4 real", "20 connections in 4 real");
        let text = text.replace("10 connections in 1.23s", "20 connections in 1.23s");
        let (ns, n) = parse_s_time(&text, &arrivals, Duration::from_secs(2)).unwrap();
        assert_eq!(n, 20);
        assert!((ns - 1e8).abs() < 1.0, "{ns}");
    }

    #[test]
    fn no_summary_is_an_error() {
        assert!(parse_s_time("ERROR\n", &[], Duration::from_secs(1)).is_err());
    }

    #[test]
    fn bulk_writes_include_warm_up() {
        assert_eq!(bulk_writes(256), (16 + 256) * 64);
        assert_eq!(bulk_writes(16), (1 + 16) * 64);
    }
}
