//! `cargo xtask bench exec`: what the agent adds to the cost of starting a program.
//!
//! A small C program (`exec_loop.c`) runs `/bin/true` in a loop, one at a time: fork(),
//! execve() in the child, waitpid() in the parent; it reports nanoseconds per
//! fork+execve+wait. Every execve passes the same environment of exactly 100 variables:
//! the usual session ones (PATH, HOME, LANG, LC_*, XDG_*, ...), generic application settings
//! and four secret-like ones (API_TOKEN, DB_PASSWORD, AWS_ACCESS_KEY_ID,
//! AWS_SECRET_ACCESS_KEY, with credential-shaped values generated from a fixed seed), so the
//! agent's capture path runs on every exec.
//!
//! Four setups: none; floor (`keytrail bench-floor --family exec`: empty programs on the
//! execve/execveat entry tracepoints the agent's `exec_env_*` programs use); the agent with
//! the getenv probe off (`env.getenv_probe: false`, its default: the exec hook without the libc
//! uprobes); the agent with the getenv probe on (every exec also maps a libc carrying uprobes).
//!
//! Target: the agent under 10% slower than none. `--check` fails when it is missed with the
//! getenv probe off (the exec hook); the report also says whether it holds with the probe on,
//! which decides the probe's default. The report goes to stdout and to
//! `target/bench/exec.md`.

use std::{fmt::Write as _, fs, process::Command};

use anyhow::{Result, bail};
use clap::Args;

use super::{
    AGENT_SUBCOMMAND, Attach, Bencher, CONFIG_FLAG, DROPPED_SUFFIX, EVENTS_RECEIVED_KEY,
    FLOOR_SUBCOMMAND, JSONL_FLAG, PROBE_KEY_PREFIX, Sample, all_programs_table, difference,
    dropped, fmt, header, interleave, log_sample, ns, program_ns, program_runs, ratio, records,
    stat,
};

/// The program started in the loop.
const PROGRAM: &str = "/bin/true";
const EXEC_LOOP_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bench/exec_loop.c");
/// Variables in the loop's environment, and the secret-like ones among them (`exec_loop.c`).
const ENV_VARS: usize = 100;
const SECRET_VARS: &str = "API_TOKEN, DB_PASSWORD, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY";

/// `keytrail bench-floor` family of the execve/execveat entry tracepoints.
const FLOOR_FAMILY: &str = "exec";
/// Agent configurations with the getenv uprobes off and on, every other field at its default.
const GETENV_OFF_CONFIG: &str = "env:\n  getenv_probe: false\n";
const GETENV_ON_CONFIG: &str = "env:\n  getenv_probe: true\n";
const GETENV_PROGRAM: &str = "getenv_enter";

/// Programs compared in the kernel-cost table: (floor, agent).
const PROGRAM_PAIRS: &[(&str, &str)] = &[
    ("floor_enter_execve", "exec_env_execve"),
    ("floor_enter_execveat", "exec_env_execveat"),
];

/// Target: agent / none below this (strict).
const MAX_AGENT_OVER_NONE: f64 = 1.10;

/// Agent counters per measurement in the events table.
const EXEC_ENV_SEEN_KEY: &str = "keytrail.probe.exec_env.seen";
const EXEC_ENV_DROPPED_KEY: &str = "keytrail.probe.exec_env.dropped";
const GETENV_SEEN_KEY: &str = "keytrail.probe.getenv.seen";

#[derive(Debug, Args)]
pub struct Options {
    /// fork+execve+wait cycles per measurement.
    #[arg(long, default_value_t = 3000)]
    iterations: u64,
    /// Rounds; each round measures every setup.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Exit with an error if the exec target (agent with the getenv probe off) is missed.
    #[arg(long)]
    check: bool,
}

#[derive(Clone, Copy, Debug)]
enum Setup {
    None,
    Floor,
    /// The agent with `env.getenv_probe: false`.
    AgentOff,
    /// The agent with its default configuration (getenv probe on).
    AgentOn,
}

impl Setup {
    const ALL: [Setup; 4] = [Setup::None, Setup::Floor, Setup::AgentOff, Setup::AgentOn];

    fn name(self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::Floor => "floor",
            Setup::AgentOff => "agent-off",
            Setup::AgentOn => "agent-on",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::Floor => "floor",
            Setup::AgentOff => "agent, getenv probe off (default)",
            Setup::AgentOn => "agent, getenv probe on",
        }
    }
}

/// `samples[setup]`, one entry per round.
type Samples = [Vec<Sample>; 4];

pub fn run(opts: Options) -> Result<()> {
    let (mut bencher, exec_loop) =
        Bencher::new("exec", opts.iterations, opts.rounds, EXEC_LOOP_SOURCE)?;
    let getenv_off = bencher.dir().join("getenv-off.yaml");
    fs::write(&getenv_off, GETENV_OFF_CONFIG)?;
    let getenv_on = bencher.dir().join("getenv-on.yaml");
    fs::write(&getenv_on, GETENV_ON_CONFIG)?;

    let mut samples: Samples = Default::default();
    interleave(opts.rounds, &[()], &Setup::ALL, |round, (), setup| {
        let attach = match setup {
            Setup::None => Attach::None,
            Setup::Floor => Attach::Floor(FLOOR_FAMILY),
            Setup::AgentOff => Attach::Agent(Some(&getenv_off)),
            Setup::AgentOn => Attach::Agent(Some(&getenv_on)),
        };
        let mut cmd = Command::new(&exec_loop);
        cmd.arg(PROGRAM).arg(opts.iterations.to_string());
        let sample = bencher.measure(attach, &mut cmd)?;
        log_sample(round, opts.rounds, setup.name(), "exec", &sample);
        samples[setup as usize].push(sample);
        Ok(())
    })?;

    let (report, failed) = report(&opts, &samples);
    bencher.write_report("exec", &report)?;
    if opts.check && failed {
        bail!("exec target missed: the agent (getenv probe off) is not under 10% over none");
    }
    Ok(())
}

/// Execs the C loop makes per measurement, warm-up included (see `exec_loop.c`).
fn execs_per_run(iterations: u64) -> u64 {
    iterations + (iterations / 100).clamp(20, 200)
}

/// Renders the markdown report; also returns whether the checked target (getenv probe off)
/// was missed.
fn report(opts: &Options, samples: &Samples) -> (String, bool) {
    let s = |setup: Setup| samples[setup as usize].as_slice();
    let none = s(Setup::None);
    let floor = s(Setup::Floor);

    let mut md = String::new();
    let w = &mut md;
    header(
        w,
        "keytrail: cost of fork+execve+wait",
        &[
            format!(
                "{} fork+execve+wait of `{PROGRAM}` per measurement, {} rounds; setups \
                 interleaved within each round; values are medians over rounds, ratios and \
                 differences are medians of per-round ones",
                opts.iterations, opts.rounds
            ),
            format!(
                "environment of every exec: {ENV_VARS} variables (PATH, HOME, LANG, LC_*, XDG_*, \
                 application settings...), secret-like among them: {SECRET_VARS}"
            ),
            format!(
                "none: nothing attached; floor: `keytrail {FLOOR_SUBCOMMAND} --family \
                 {FLOOR_FAMILY}` (empty programs on sys_enter_execve/execveat); agent-off: \
                 `keytrail {AGENT_SUBCOMMAND} {JSONL_FLAG} FILE {CONFIG_FLAG} FILE` with \
                 `env.getenv_probe: false` (the default); agent-on: the same with \
                 `env.getenv_probe: true` (getenv uprobes on libc)"
            ),
        ],
    );

    let _ = writeln!(w, "## ns per fork+execve+wait\n");
    let _ = writeln!(w, "| setup | ns | − none (ns) | /none | /floor |");
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for setup in Setup::ALL {
        let this = s(setup);
        let vs_none = !matches!(setup, Setup::None);
        let vs_floor = matches!(setup, Setup::AgentOff | Setup::AgentOn);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            setup.label(),
            fmt(ns(this), 0),
            if vs_none {
                fmt(difference(this, none), 0)
            } else {
                "".into()
            },
            if vs_none {
                fmt(ratio(this, none), 3)
            } else {
                "".into()
            },
            if vs_floor {
                fmt(ratio(this, floor), 3)
            } else {
                "".into()
            },
        );
    }
    let _ = writeln!(
        w,
        "\nThe getenv probe adds {} ns per exec (agent-on − agent-off; ratio {}): the kernel \
         installs the uprobes' breakpoints in every new mapping of a probed libc, and each \
         getenv call traps (`{GETENV_PROGRAM}` runs below).\n",
        fmt(difference(s(Setup::AgentOn), s(Setup::AgentOff)), 0),
        fmt(ratio(s(Setup::AgentOn), s(Setup::AgentOff)), 3),
    );

    let execs = execs_per_run(opts.iterations) as f64;
    let per_exec = |v: Option<f64>| v.map(|v| v / execs);
    let _ = writeln!(w, "## Agent events (per measurement)\n");
    let _ = writeln!(
        w,
        "| setup | kernel events/exec | exec_env seen/exec | exec_env dropped | getenv seen \
         | {GETENV_PROGRAM} runs | records | dropped (all rounds) |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for setup in [Setup::AgentOff, Setup::AgentOn] {
        let this = s(setup);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            setup.label(),
            fmt(per_exec(stat(this, EVENTS_RECEIVED_KEY)), 2),
            fmt(per_exec(stat(this, EXEC_ENV_SEEN_KEY)), 2),
            fmt(stat(this, EXEC_ENV_DROPPED_KEY), 0),
            fmt(stat(this, GETENV_SEEN_KEY), 0),
            fmt(program_runs(this, GETENV_PROGRAM), 0),
            fmt(records(this), 0),
            dropped(this),
        );
    }
    let _ = writeln!(
        w,
        "\nMedians per measurement of {:.0} execs (warm-up included; other processes' execs \
         during the measurement count too). Kernel events/exec is `{EVENTS_RECEIVED_KEY}` per \
         exec; exec_env seen/dropped are `{EXEC_ENV_SEEN_KEY}` and `{EXEC_ENV_DROPPED_KEY}`; \
         records are the access records the agent wrote (its output lines other than stats \
         lines; the same credentials in the same workload are reported once per dedup window); \
         dropped is the sum of `{PROBE_KEY_PREFIX}*{DROPPED_SUFFIX}` over all rounds.\n",
        execs
    );

    let _ = writeln!(w, "## Kernel ns per program run (bpf_stats)\n");
    let _ = writeln!(
        w,
        "| floor program | floor | agent program | agent-off | agent-on | agent-off − floor |"
    );
    let _ = writeln!(w, "|---|---:|---|---:|---:|---:|");
    for (floor_prog, agent_prog) in PROGRAM_PAIRS {
        let floor_ns = program_ns(floor, floor_prog);
        let off_ns = program_ns(s(Setup::AgentOff), agent_prog);
        let _ = writeln!(
            w,
            "| {floor_prog} | {} | {agent_prog} | {} | {} | {} |",
            fmt(floor_ns, 1),
            fmt(off_ns, 1),
            fmt(program_ns(s(Setup::AgentOn), agent_prog), 1),
            fmt(off_ns.zip(floor_ns).map(|(a, f)| a - f), 1),
        );
    }
    let _ = writeln!(w);

    let rows =
        [Setup::Floor, Setup::AgentOff, Setup::AgentOn].map(|setup| (setup.name(), vec![s(setup)]));
    all_programs_table(w, &["exec"], &rows);

    let off = ratio(s(Setup::AgentOff), none);
    let on = ratio(s(Setup::AgentOn), none);
    let met = |r: Option<f64>| r.is_some_and(|r| r < MAX_AGENT_OVER_NONE);
    let verdict = |r| if met(r) { "met" } else { "missed" };
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---:|---|");
    let _ = writeln!(
        w,
        "| agent (getenv probe off) / none < {MAX_AGENT_OVER_NONE:.2}: the exec hook \
         (`--check`) | {} | {} |",
        fmt(off, 3),
        verdict(off)
    );
    let _ = writeln!(
        w,
        "| agent (getenv probe on) / none < {MAX_AGENT_OVER_NONE:.2}: with the getenv probe \
         too | {} | {} |",
        fmt(on, 3),
        verdict(on)
    );
    let _ = writeln!(
        w,
        "\nWith the getenv probe on, the agent {} under 10% over none on this workload.",
        if met(on) { "stays" } else { "does not stay" }
    );
    (md, !met(off))
}
