//! `cargo xtask bench storm`: what a connection storm costs the agent, over loopback.
//!
//! Four clients (`storm_loop.c client`), each in a cgroup of its own created for the run, make
//! short connections to ten destinations (ten listeners on 127.0.0.1, ephemeral ports, of one
//! accept-and-close server, `storm_loop.c server`, started fresh for each measurement in the
//! benchmark's own cgroup): connect to destination i (round robin), send that destination's
//! first payload, close. The payload is a real TLS ClientHello with the SNI
//! `dest-<i>.storm.test`, made once by Python's `ssl` module (a MemoryBIO handshake). Each
//! client is paced to a quarter of the aggregate rate, in 1 ms batches to absolute deadlines
//! (`clock_nanosleep`), for `--seconds`; a client that cannot keep up makes what it can, and
//! the rate reached is reported, never the rate asked for.
//!
//! The agent names each connection by its SNI; once named, the kernel folds the repeats of
//! the same process to the same destination with the same name (`keytrail.net.folded`), so
//! the ring should carry about one record per client and destination, not one per connection.
//!
//! Setups, interleaved within each round: none (the rate the machine reaches without the
//! agent) and agent (`keytrail agent`, default configuration). Measured for each rate and
//! setup: connections per second reached; for the agent its CPU time (utime + stime from
//! /proc, over the clients' run only, in % of one core; also over the 2 s before the storm:
//! its idle cost), its peak RSS, ring records per connection (`keytrail.events.received`
//! over the run / connections), the connections folded in the kernel, records lost to the
//! workloads' budgets (`keytrail.probe.*.over_budget`) and to a full ring (`.dropped`), and
//! the kernel ns per run of `net_connect4`, `net_state` and `net_payload` (bpf_stats) with
//! their runs per connection: their time is spent in the clients' syscalls and softirqs, not
//! in the agent's process.
//!
//! Target: the agent under 5% of one core at 50,000 connections per second; `--check` fails
//! when it is missed or when that rate is not reached. The report goes to stdout and to
//! `target/bench/storm.md`.

use std::{
    cell::RefCell,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde_json::{Map, Value};

use super::{
    AGENT_BINARY, AGENT_EVENTS, AGENT_PID, AGENT_SUBCOMMAND, Attach, Bencher, ChildGuard,
    DROPPED_SUFFIX, EVENTS_RECEIVED_KEY, JSONL_FLAG, PROBE_KEY_PREFIX, PROGRAM_KEY_PREFIX,
    RUN_COUNT_SUFFIX, RUN_TIME_SUFFIX, Sample, busy_share, check_interrupted, fmt, header,
    interleave, last_stats_line, lock, log_tail, median,
    net::{Activity, Busy, enable_run_time_stats},
    number,
    pipeline::{BenchCgroups, cpu_seconds, join_cgroup, rss_mib_of},
};
use crate::util;

const STORM_LOOP_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bench/storm_loop.c");

/// Clients, each in its own cgroup, and destinations.
const CLIENTS: usize = 4;
const DESTINATIONS: usize = 10;
/// The SNI of destination i: `dest-<i>` + this.
const SNI_SUFFIX: &str = ".storm.test";

/// Writes, into the directory argv[1], `hello-<i>.bin`: the ClientHello Python's TLS sends
/// for the i-th of the names argv[2:].
const HELLO_SCRIPT: &str = r#"
import ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for i, name in enumerate(sys.argv[2:]):
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    with open(f"{sys.argv[1]}/hello-{i}.bin", "wb") as f:
        f.write(out.read())
"#;

/// Agent CPU measured before the storm, with nothing to do but its timers.
const IDLE: Duration = Duration::from_secs(2);
const RSS_SAMPLE: Duration = Duration::from_millis(100);
/// The clients' time limit beyond `--seconds`, before they count as hung.
const CLIENT_GRACE: Duration = Duration::from_secs(30);

/// The agent's network programs, in the report.
const NET_PROGRAMS: &[&str] = &["net_connect4", "net_state", "net_payload"];

/// Target: agent CPU under this share of one core at this rate; the rate counts as reached
/// at this share of it.
const MAX_AGENT_CORE_SHARE: f64 = 0.05;
const TARGET_RATE: f64 = 50_000.0;
const REACHED_SHARE: f64 = 0.95;

/// Stats keys.
const FOLDED_KEY: &str = "keytrail.net.folded";
const OVER_BUDGET_SUFFIX: &str = ".over_budget";

#[derive(Debug, Args)]
pub struct Options {
    /// Aggregate connection rates to measure (connections per second, all clients together).
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    rates: Vec<f64>,
    /// Seconds each measurement's clients run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds; each round measures every setup at every rate.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Exit with an error if the target is missed (or its rate not reached).
    #[arg(long)]
    check: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    None,
    Agent,
}

impl Setup {
    const ALL: [Setup; 2] = [Setup::None, Setup::Agent];

    fn name(self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::Agent => "agent",
        }
    }
}

/// One measurement's figures besides its sample.
#[derive(Clone, Copy, Default)]
struct Storm {
    connections: u64,
    failed: u64,
    /// Connections per second, all clients together.
    reached: f64,
    /// Wall time of the clients' run, from the first start to the last exit.
    wall_s: f64,
    /// Agent CPU time during the clients' run.
    agent_cpu_s: Option<f64>,
    /// Agent CPU before the storm, in shares of one core.
    agent_idle: Option<f64>,
    rss_mib: Option<f64>,
    /// `keytrail.events.received` before the clients started.
    received_before: Option<f64>,
    busy: Option<Busy>,
    other_agents: usize,
}

impl Storm {
    /// Agent CPU during the clients' run, in shares of one core.
    fn agent_cpu(&self) -> Option<f64> {
        Some(self.agent_cpu_s? / self.wall_s)
    }
}

/// One (rate, setup) measurement.
struct Measured {
    round: usize,
    rate: f64,
    setup: Setup,
    storm: Storm,
    sample: Sample,
}

impl Measured {
    fn stats(&self) -> Option<&Map<String, Value>> {
        self.sample.stats.as_ref()
    }

    /// A counter of the final stats line per connection.
    fn per_connection(&self, value: f64) -> Option<f64> {
        (self.storm.connections > 0).then(|| value / self.storm.connections as f64)
    }

    /// Ring records during the run, per connection.
    fn records_per_connection(&self) -> Option<f64> {
        let after = number(self.stats()?, EVENTS_RECEIVED_KEY)?;
        self.per_connection(after - self.storm.received_before.unwrap_or(0.0))
    }

    /// Sum of the probe counters ending in `suffix` (0 if none).
    fn probe_sum(&self, suffix: &str) -> Option<f64> {
        let stats = self.stats()?;
        Some(
            stats
                .iter()
                .filter(|(k, _)| k.starts_with(PROBE_KEY_PREFIX) && k.ends_with(suffix))
                .filter_map(|(_, v)| v.as_f64())
                .sum(),
        )
    }

    fn program(&self, program: &str) -> Option<(f64, f64)> {
        let stats = self.stats()?;
        let time = number(
            stats,
            &format!("{PROGRAM_KEY_PREFIX}{program}{RUN_TIME_SUFFIX}"),
        )?;
        let runs = number(
            stats,
            &format!("{PROGRAM_KEY_PREFIX}{program}{RUN_COUNT_SUFFIX}"),
        )?;
        Some((time, runs))
    }

    /// Kernel ns per run of `program`.
    fn program_ns(&self, program: &str) -> Option<f64> {
        let (time, runs) = self.program(program)?;
        (runs > 0.0).then(|| time / runs)
    }

    /// Runs of `program` per connection.
    fn program_runs(&self, program: &str) -> Option<f64> {
        self.per_connection(self.program(program)?.1)
    }

    /// Kernel time of the network programs per connection, in ns.
    fn kernel_ns_per_connection(&self) -> Option<f64> {
        let total: f64 = NET_PROGRAMS
            .iter()
            .filter_map(|p| self.program(p).map(|(time, _)| time))
            .sum();
        self.stats()?;
        self.per_connection(total)
    }
}

/// What every measurement needs.
struct Storms<'a> {
    opts: &'a Options,
    storm_loop: PathBuf,
    hello_dir: PathBuf,
    cgroups: BenchCgroups,
    dir: PathBuf,
}

pub fn run(opts: Options) -> Result<()> {
    if opts.rates.is_empty() || opts.rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        bail!("--rates must be positive numbers");
    }
    if opts.seconds == 0 {
        bail!("--seconds must be positive");
    }
    let python = util::find_in_path("python3")
        .context("the storm benchmark needs `python3` with its ssl module")?;
    let (mut bencher, storm_loop) = Bencher::new("storm", 1, opts.rounds, STORM_LOOP_SOURCE)?;
    let dir = bencher.dir().to_path_buf();
    let hello_dir = dir.join("hellos");
    fs::create_dir_all(&hello_dir)?;
    let names = (0..DESTINATIONS)
        .map(|i| format!("dest-{i}{SNI_SUFFIX}"))
        .collect::<Vec<_>>();
    util::run_checked(
        Command::new(&python)
            .arg("-c")
            .arg(HELLO_SCRIPT)
            .arg(&hello_dir)
            .args(&names),
    )
    .context("making the ClientHellos")?;
    let storms = Storms {
        opts: &opts,
        storm_loop,
        hello_dir,
        cgroups: BenchCgroups::create(CLIENTS)?,
        dir,
    };
    let _run_time_stats = enable_run_time_stats()?;

    let mut measured = Vec::new();
    let mut runs = 0;
    interleave(
        opts.rounds,
        &opts.rates,
        &Setup::ALL,
        |round, rate, setup| {
            runs += 1;
            let before = Activity::now();
            let (mut storm, sample) = storms.measure(&mut bencher, rate, setup, runs)?;
            let after = Activity::now();
            storm.busy = after.busy_since(&before);
            storm.other_agents = before.other_agents.max(after.other_agents);
            let m = Measured {
                round,
                rate,
                setup,
                storm,
                sample,
            };
            log(opts.rounds, &m);
            measured.push(m);
            Ok(())
        },
    )?;

    let (report, missed) = report(&opts, &measured);
    bencher.write_report("storm", &report)?;
    if opts.check && !missed.is_empty() {
        bail!("target missed: {}", missed.join("; "));
    }
    Ok(())
}

/// Progress line of one measurement.
fn log(rounds: usize, m: &Measured) {
    let storm = &m.storm;
    eprintln!(
        "bench: round {}/{rounds} {:>6.0}/s {:<5} reached {:>8.0}/s, failed {}, agent CPU {}% \
         (idle {}%), records/conn {}, RSS {} MiB (others' CPU {}%, steal {}%{})",
        m.round + 1,
        m.rate,
        m.setup.name(),
        storm.reached,
        storm.failed,
        percent(storm.agent_cpu()),
        percent(storm.agent_idle),
        fmt(m.records_per_connection(), 5),
        fmt(storm.rss_mib, 1),
        fmt(storm.busy.map(|b| b.others * 100.0), 0),
        fmt(storm.busy.map(|b| b.steal * 100.0), 0),
        if storm.other_agents > 0 {
            format!(", {} other {AGENT_BINARY} process(es)", storm.other_agents)
        } else {
            String::new()
        }
    );
}

impl Storms<'_> {
    /// One storm at `rate` with `setup` beside it; `run` numbers the log files.
    fn measure(
        &self,
        bencher: &mut Bencher,
        rate: f64,
        setup: Setup,
        run: usize,
    ) -> Result<(Storm, Sample)> {
        let attach = match setup {
            Setup::None => Attach::None,
            Setup::Agent => Attach::Agent(None),
        };
        let result = RefCell::new(Storm::default());
        let sample = bencher.measure_with(attach, &mut || {
            let storm = self.storm(rate, run)?;
            let ns = 1e9 / storm.reached.max(f64::MIN_POSITIVE);
            *result.borrow_mut() = storm;
            Ok(ns)
        })?;
        Ok((result.into_inner(), sample))
    }

    /// Starts the server, measures the agent idle (if there is one), runs the clients.
    fn storm(&self, rate: f64, run: usize) -> Result<Storm> {
        let (mut server, ports) = self.server(run)?;
        let agent = match AGENT_PID.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        };
        let mut storm = Storm::default();
        if let Some(pid) = agent {
            let (cpu, start) = (cpu_seconds(pid)?, Instant::now());
            thread::sleep(IDLE);
            storm.agent_idle = Some((cpu_seconds(pid)? - cpu) / start.elapsed().as_secs_f64());
            let events = lock(&AGENT_EVENTS).clone();
            if let Some(events) = events {
                storm.received_before =
                    last_stats_line(&events)?.and_then(|s| number(&s, EVENTS_RECEIVED_KEY));
            }
        }

        let cpu_before = agent.map(cpu_seconds).transpose()?;
        let start = Instant::now();
        let mut clients = Vec::new();
        for (i, procs) in self.cgroups.procs.iter().enumerate() {
            let log = self.dir.join(format!("client-{run}-{i}.log"));
            let log_file =
                fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let mut cmd = Command::new(&self.storm_loop);
            cmd.arg("client")
                .arg(format!("{}", rate / CLIENTS as f64))
                .arg(self.opts.seconds.to_string())
                .arg(&self.hello_dir)
                .args(ports.iter().map(u16::to_string))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log_file);
            let procs = procs.clone();
            // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
            unsafe {
                cmd.pre_exec(move || join_cgroup(&procs));
            }
            clients.push(ChildGuard::spawn(cmd, &log)?);
        }
        let deadline = start + Duration::from_secs(self.opts.seconds) + CLIENT_GRACE;
        let mut rss: Option<f64> = None;
        loop {
            check_interrupted()?;
            if let Some(pid) = agent {
                rss = Some(rss.unwrap_or(0.0).max(rss_mib_of(pid)));
            }
            let mut running = false;
            for client in &mut clients {
                running |= client.child.try_wait()?.is_none();
            }
            if !running {
                break;
            }
            if Instant::now() > deadline {
                bail!("the storm clients did not finish within {CLIENT_GRACE:?} of their time");
            }
            thread::sleep(RSS_SAMPLE);
        }
        storm.wall_s = start.elapsed().as_secs_f64();
        if let (Some(pid), Some(before)) = (agent, cpu_before) {
            storm.agent_cpu_s = Some(cpu_seconds(pid)? - before);
        }
        storm.rss_mib = rss;
        server.check_running()?;

        for client in &mut clients {
            let status = client.child.wait()?;
            let mut out = String::new();
            client
                .child
                .stdout
                .take()
                .context("no stdout pipe")?
                .read_to_string(&mut out)?;
            if !status.success() {
                bail!("{} failed ({status}){}", client.name, log_tail(&client.log));
            }
            let fields = out
                .split_whitespace()
                .map(str::parse::<u64>)
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .filter(|f| f.len() == 3 && f[1] > 0)
                .with_context(|| format!("{} printed {out:?}", client.name))?;
            storm.connections += fields[0];
            storm.failed += fields[2];
            storm.reached += fields[0] as f64 * 1e9 / fields[1] as f64;
        }
        if storm.connections == 0 {
            bail!("the storm clients made no connection");
        }
        Ok(storm)
    }

    /// A fresh accept-and-close server with `DESTINATIONS` listeners; returns their ports.
    fn server(&self, run: usize) -> Result<(ChildGuard, Vec<u16>)> {
        let log = self.dir.join(format!("server-{run}.log"));
        let log_file =
            fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&self.storm_loop);
        cmd.arg("server")
            .arg(DESTINATIONS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut server = ChildGuard::spawn(cmd, &log)?;
        let stdout = server.child.stdout.take().context("no stdout pipe")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let ports = line
            .split_whitespace()
            .map(str::parse::<u16>)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|p| p.len() == DESTINATIONS)
            .with_context(|| {
                format!(
                    "{} printed {line:?}, not {DESTINATIONS} ports{}",
                    server.name,
                    log_tail(&log)
                )
            })?;
        Ok((server, ports))
    }
}

// ---------------------------------------------------------------------------------------
// Report

/// Median over the measurements of `rate` and `setup` of `f`.
fn med(
    measured: &[Measured],
    rate: f64,
    setup: Setup,
    f: impl Fn(&Measured) -> Option<f64>,
) -> Option<f64> {
    median(
        measured
            .iter()
            .filter(|m| m.rate == rate && m.setup == setup)
            .filter_map(f)
            .collect(),
    )
}

fn percent(share: Option<f64>) -> String {
    fmt(share.map(|s| s * 100.0), 2)
}

/// Renders the markdown report; also returns the missed targets.
fn report(opts: &Options, measured: &[Measured]) -> (String, Vec<String>) {
    let mut md = String::new();
    let w = &mut md;
    let busy = measured
        .iter()
        .filter_map(|m| m.storm.busy)
        .collect::<Vec<_>>();
    header(
        w,
        "keytrail: connection storm (loopback)",
        &[
            format!(
                "{CLIENTS} clients (`storm_loop.c client`), each in its own cgroup, \
                 {DESTINATIONS} destinations (listeners on 127.0.0.1 of one accept-and-close \
                 server, `storm_loop.c server`, in the benchmark's cgroup); each connection: \
                 connect, send the destination's TLS ClientHello (SNI `dest-<i>{SNI_SUFFIX}`, \
                 made by Python's ssl), close; each client paced to a quarter of the rate in 1 ms \
                 batches, {} s per measurement",
                opts.seconds
            ),
            format!(
                "{} rounds, setups interleaved within each round; values are medians over the \
                 rounds",
                opts.rounds
            ),
            format!(
                "none: nothing attached; agent: `keytrail {AGENT_SUBCOMMAND} {JSONL_FLAG} FILE`, \
                 default configuration (budget per workload: 2000 records/s + 5000 burst)"
            ),
            format!(
                "machine activity during the measurements, in % of one CPU: other processes {}; \
                 stolen by the hypervisor {}; another `{AGENT_BINARY}` process was running \
                 around {} of {} measurements",
                busy_share(busy.iter().map(|b| b.others).collect()),
                busy_share(busy.iter().map(|b| b.steal).collect()),
                measured.iter().filter(|m| m.storm.other_agents > 0).count(),
                measured.len()
            ),
        ],
    );

    for &rate in &opts.rates {
        let m = |setup, f: &dyn Fn(&Measured) -> Option<f64>| med(measured, rate, setup, f);
        let _ = writeln!(w, "## {rate:.0} connections/s\n");
        let _ = writeln!(
            w,
            "| setup | reached conn/s | failed connects | agent CPU, % of a core | agent idle \
             CPU % | agent CPU us/conn | records/conn | folded | over budget | dropped | peak \
             RSS MiB | {} | network programs, % of a core |",
            NET_PROGRAMS
                .iter()
                .map(|p| format!("{p} ns (runs/conn)"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(w, "|---|{}", "---:|".repeat(11 + NET_PROGRAMS.len()));
        for setup in Setup::ALL {
            let agent = setup == Setup::Agent;
            let cell = |value: Option<f64>, decimals| {
                if agent {
                    fmt(value, decimals)
                } else {
                    "-".to_owned()
                }
            };
            let programs = NET_PROGRAMS
                .iter()
                .map(|p| {
                    if agent {
                        format!(
                            "{} ({})",
                            fmt(m(setup, &|x| x.program_ns(p)), 0),
                            fmt(m(setup, &|x| x.program_runs(p)), 2)
                        )
                    } else {
                        "-".to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ");
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {programs} | {} |",
                setup.name(),
                fmt(m(setup, &|x| Some(x.storm.reached)), 0),
                fmt(m(setup, &|x| Some(x.storm.failed as f64)), 0),
                if agent {
                    percent(m(setup, &|x| x.storm.agent_cpu()))
                } else {
                    "-".to_owned()
                },
                if agent {
                    percent(m(setup, &|x| x.storm.agent_idle))
                } else {
                    "-".to_owned()
                },
                cell(
                    m(setup, &|x| x.per_connection(x.storm.agent_cpu_s? * 1e6)),
                    3
                ),
                cell(m(setup, &Measured::records_per_connection), 5),
                cell(m(setup, &|x| number(x.stats()?, FOLDED_KEY)), 0),
                cell(m(setup, &|x| x.probe_sum(OVER_BUDGET_SUFFIX)), 0),
                cell(m(setup, &|x| x.probe_sum(DROPPED_SUFFIX)), 0),
                cell(m(setup, &|x| x.storm.rss_mib), 1),
                if agent {
                    percent(m(setup, &|x| {
                        Some(x.kernel_ns_per_connection()? * x.storm.reached / 1e9)
                    }))
                } else {
                    "-".to_owned()
                },
            );
        }
        let reached = |setup| m(setup, &|x| Some(x.storm.reached));
        let short = Setup::ALL
            .iter()
            .filter_map(|&s| {
                let r = reached(s)?;
                (r < REACHED_SHARE * rate).then(|| format!("{} {r:.0}/s", s.name()))
            })
            .collect::<Vec<_>>();
        let _ = writeln!(
            w,
            "\n{}\n",
            if short.is_empty() {
                format!("The rate was reached in both setups (at least {REACHED_SHARE} of it).")
            } else {
                format!(
                    "**{rate:.0}/s was not reached**: {} (medians; the clients make what they \
                     can once behind).",
                    short.join(", ")
                )
            }
        );
    }
    let _ = writeln!(
        w,
        "Agent CPU: utime + stime of the agent process over the clients' run, in % of one core; \
         idle: the same over the {} s before the storm; us/conn: the run's agent CPU time per \
         connection. Records/conn: `{EVENTS_RECEIVED_KEY}` over the run (from the stats line \
         before it to the final one) per connection. Folded: `{FOLDED_KEY}`. Over budget, \
         dropped: sums of `{PROBE_KEY_PREFIX}*{OVER_BUDGET_SUFFIX}` and \
         `{PROBE_KEY_PREFIX}*{DROPPED_SUFFIX}`. Programs: bpf_stats ns per run over the \
         agent's life, runs per connection; network programs: their kernel time per connection \
         times the rate reached, spent in the clients' syscalls and softirqs rather than in the \
         agent.\n",
        IDLE.as_secs()
    );

    let _ = writeln!(w, "## Measurements\n");
    let _ = writeln!(
        w,
        "| round | rate | setup | reached conn/s | connections | failed | agent CPU % | \
         records/conn | others' CPU % | steal % |"
    );
    let _ = writeln!(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for x in measured {
        let _ = writeln!(
            w,
            "| {} | {:.0} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            x.round + 1,
            x.rate,
            x.setup.name(),
            x.storm.reached,
            x.storm.connections,
            x.storm.failed,
            percent(x.storm.agent_cpu()),
            fmt(x.records_per_connection(), 5),
            fmt(x.storm.busy.map(|b| b.others * 100.0), 0),
            fmt(x.storm.busy.map(|b| b.steal * 100.0), 0),
        );
    }

    let _ = writeln!(w, "\n## Target\n");
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---|---|");
    let mut missed = Vec::new();
    let name = format!(
        "agent under {:.0}% of one core at {TARGET_RATE:.0} connections/s",
        MAX_AGENT_CORE_SHARE * 100.0
    );
    if opts.rates.contains(&TARGET_RATE) {
        let m = |f: &dyn Fn(&Measured) -> Option<f64>| med(measured, TARGET_RATE, Setup::Agent, f);
        let cpu = m(&|x| x.storm.agent_cpu());
        let reached = m(&|x| Some(x.storm.reached)).unwrap_or(0.0);
        let per_conn = m(&|x| x.per_connection(x.storm.agent_cpu_s?));
        let projected = per_conn.map(|s| s * TARGET_RATE);
        let cpu_ok = cpu.is_some_and(|c| c < MAX_AGENT_CORE_SHARE);
        let rate_ok = reached >= REACHED_SHARE * TARGET_RATE;
        let result = match (rate_ok, cpu_ok) {
            (true, true) => "PASS",
            (true, false) => "FAIL",
            (false, true) => "not shown: rate not reached (met at the rate reached)",
            (false, false) => "FAIL (at a lower rate than the target's)",
        };
        if !(rate_ok && cpu_ok) {
            missed.push(format!(
                "agent CPU {}% of a core at {reached:.0} connections/s reached (of \
                 {TARGET_RATE:.0}/s asked)",
                percent(cpu)
            ));
        }
        let _ = writeln!(
            w,
            "| {name} | {}% at {reached:.0}/s reached{} | {result} |",
            percent(cpu),
            if rate_ok {
                String::new()
            } else {
                format!(
                    "; CPU per connection times {TARGET_RATE:.0}/s (a linear projection, \
                     the agent's fixed cost included): {}%",
                    percent(projected)
                )
            }
        );
    } else {
        let _ = writeln!(
            w,
            "| {name} | not measured (--rates lacks {TARGET_RATE:.0}) | - |"
        );
    }
    (md, missed)
}
