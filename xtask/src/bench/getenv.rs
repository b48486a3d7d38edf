//! `cargo xtask bench getenv`: what the agent adds to the cost of a getenv() call.
//!
//! A small C program (`getenv_loop.c`) calls getenv(NAME) in a loop and reports nanoseconds
//! per call. It runs with a small fixed environment (PATH, HOME, LANG, TERM, API_TOKEN) on a
//! non-secret name (`LANG`) and on a secret-like one (`API_TOKEN`: the agent's program sends
//! one event for the first call of the process and counts the later ones as repeats in the
//! kernel), in three setups: none; floor (`keytrail bench-floor --family getenv`: an empty
//! uprobe on getenv and secure_getenv of every libc on the host, i.e. the price of the uprobe
//! trap itself); agent (`env.getenv_probe: true`; the probe is off by default).
//!
//! A report without a target: ns per call, what the floor and the agent add per call, the
//! kernel cost of `getenv_enter` against the empty `floor_getenv`, and the agent's getenv
//! counters. It goes to stdout and to `target/bench/getenv.md`.

use std::{fmt::Write as _, process::Command};

/// The getenv probe is off by default: the agent here turns it on.
const GETENV_ON_CONFIG: &str = "env:\n  getenv_probe: true\n";

use anyhow::Result;
use clap::Args;

use super::{
    AGENT_SUBCOMMAND, Attach, Bencher, EVENTS_RECEIVED_KEY, FLOOR_SUBCOMMAND, JSONL_FLAG, Sample,
    all_programs_table, difference, dropped, fmt, header, interleave, log_sample, ns, program_ns,
    program_runs, ratio, records, stat,
};

const GETENV_LOOP_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bench/getenv_loop.c");

/// `keytrail bench-floor` family of the getenv uprobes.
const FLOOR_FAMILY: &str = "getenv";
const FLOOR_PROGRAM: &str = "floor_getenv";
const AGENT_PROGRAM: &str = "getenv_enter";

const GETENV_SEEN_KEY: &str = "keytrail.probe.getenv.seen";
const GETENV_REPEAT_KEY: &str = "keytrail.probe.getenv_repeat.seen";
const GETENV_LIBRARIES_KEY: &str = "keytrail.getenv.libraries";

/// The loop's whole environment, besides `API_TOKEN` (see [`token`]).
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
    ("TERM", "xterm"),
];
const SECRET_NAME: &str = "API_TOKEN";

#[derive(Debug, Args)]
pub struct Options {
    /// getenv() calls per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    iterations: u64,
    /// Rounds; each round measures every setup on both names.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
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

    fn attach(self, getenv_on: &std::path::Path) -> Attach<'_> {
        match self {
            Setup::None => Attach::None,
            Setup::Floor => Attach::Floor(FLOOR_FAMILY),
            Setup::Agent => Attach::Agent(Some(getenv_on)),
        }
    }
}

/// The variable the loop reads.
#[derive(Clone, Copy, Debug)]
enum Name {
    Plain,
    Secret,
}

impl Name {
    const ALL: [Name; 2] = [Name::Plain, Name::Secret];

    fn var(self) -> &'static str {
        match self {
            Name::Plain => "LANG",
            Name::Secret => SECRET_NAME,
        }
    }

    fn label(self) -> String {
        match self {
            Name::Plain => format!("non-secret (`{}`)", self.var()),
            Name::Secret => format!("secret-like (`{}`)", self.var()),
        }
    }
}

/// `samples[name][setup]`, one entry per round.
type Samples = [[Vec<Sample>; 3]; 2];

pub fn run(opts: Options) -> Result<()> {
    let (mut bencher, getenv_loop) =
        Bencher::new("getenv", opts.iterations, opts.rounds, GETENV_LOOP_SOURCE)?;
    let token = token();
    let getenv_on = bencher.dir().join("getenv-on.yaml");
    std::fs::write(&getenv_on, GETENV_ON_CONFIG)?;

    let mut samples: Samples = Default::default();
    interleave(
        opts.rounds,
        &Name::ALL,
        &Setup::ALL,
        |round, name, setup| {
            let mut cmd = Command::new(&getenv_loop);
            cmd.arg(name.var())
                .arg(opts.iterations.to_string())
                .env_clear()
                .envs(ENVIRONMENT.iter().copied())
                .env(SECRET_NAME, &token);
            let sample = bencher.measure(setup.attach(&getenv_on), &mut cmd)?;
            log_sample(round, opts.rounds, setup.name(), name.var(), &sample);
            samples[name as usize][setup as usize].push(sample);
            Ok(())
        },
    )?;

    bencher.write_report("getenv", &report(&opts, &samples))
}

/// A random-looking 32-character token from a fixed seed (xorshift64*): the same value on
/// every run, credential-shaped without being one.
fn token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    (0..32)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            char::from(ALPHABET[(r % ALPHABET.len() as u64) as usize])
        })
        .collect()
}

/// getenv() calls the C loop makes per measurement: the check that NAME is set, the
/// warm-up, the timed calls (see `getenv_loop.c`).
fn calls_per_run(iterations: u64) -> u64 {
    1 + (iterations / 100).clamp(1000, 20000) + iterations
}

/// Renders the markdown report.
fn report(opts: &Options, samples: &Samples) -> String {
    let mut md = String::new();
    let w = &mut md;
    let libraries = stat(
        &samples[Name::Plain as usize][Setup::Agent as usize],
        GETENV_LIBRARIES_KEY,
    );
    let env_names = ENVIRONMENT
        .iter()
        .map(|(name, _)| *name)
        .chain([SECRET_NAME])
        .collect::<Vec<_>>()
        .join(", ");
    header(
        w,
        "keytrail: cost of getenv()",
        &[
            format!(
                "{} getenv() calls per measurement, {} rounds; setups interleaved within each \
                 round; values are medians over rounds, differences and ratios are medians of \
                 per-round ones",
                opts.iterations, opts.rounds
            ),
            format!("environment of the loop: {env_names}"),
            format!(
                "none: nothing attached; floor: `keytrail {FLOOR_SUBCOMMAND} --family \
                 {FLOOR_FAMILY}` (empty uprobe on getenv and secure_getenv of every libc on the \
                 host); agent: `keytrail {AGENT_SUBCOMMAND} {JSONL_FLAG} FILE --config FILE` with \
                 `env.getenv_probe: true` (libraries probed: {})",
                fmt(libraries, 0)
            ),
        ],
    );

    let _ = writeln!(w, "## ns per getenv() call\n");
    let _ = writeln!(
        w,
        "| name | none | floor | agent | floor − none | agent − none | agent − floor \
         | agent/none |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for name in Name::ALL {
        let [none, floor, agent] = &samples[name as usize];
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            name.label(),
            fmt(ns(none), 1),
            fmt(ns(floor), 1),
            fmt(ns(agent), 1),
            fmt(difference(floor, none), 1),
            fmt(difference(agent, none), 1),
            fmt(difference(agent, floor), 1),
            fmt(ratio(agent, none), 1),
        );
    }
    let added = |name: Name, setup: Setup| {
        let s = &samples[name as usize];
        difference(&s[setup as usize], &s[Setup::None as usize])
    };
    let _ = writeln!(
        w,
        "\nPer call, the agent adds {} ns to a getenv() of a non-secret name and {} ns to one of \
         a secret-like name; an empty uprobe alone (the trap into the kernel and back) adds {} \
         ns and {} ns.\n",
        fmt(added(Name::Plain, Setup::Agent), 0),
        fmt(added(Name::Secret, Setup::Agent), 0),
        fmt(added(Name::Plain, Setup::Floor), 0),
        fmt(added(Name::Secret, Setup::Floor), 0),
    );

    let _ = writeln!(w, "## Kernel ns per program run (bpf_stats)\n");
    let _ = writeln!(
        w,
        "| name | {FLOOR_PROGRAM} | {AGENT_PROGRAM} | {AGENT_PROGRAM} − {FLOOR_PROGRAM} |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|");
    for name in Name::ALL {
        let [_, floor, agent] = &samples[name as usize];
        let floor_ns = program_ns(floor, FLOOR_PROGRAM);
        let agent_ns = program_ns(agent, AGENT_PROGRAM);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            name.label(),
            fmt(floor_ns, 1),
            fmt(agent_ns, 1),
            fmt(agent_ns.zip(floor_ns).map(|(a, f)| a - f), 1),
        );
    }

    let calls = calls_per_run(opts.iterations) as f64;
    let _ = writeln!(w, "\n## Agent counters (per measurement)\n");
    let _ = writeln!(
        w,
        "| name | getenv() calls by the loop | {AGENT_PROGRAM} runs | getenv seen \
         | getenv_repeat seen | kernel events | records | dropped (all rounds) |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for name in Name::ALL {
        let agent = &samples[name as usize][Setup::Agent as usize];
        let _ = writeln!(
            w,
            "| {} | {calls:.0} | {} | {} | {} | {} | {} | {:.0} |",
            name.label(),
            fmt(program_runs(agent, AGENT_PROGRAM), 0),
            fmt(stat(agent, GETENV_SEEN_KEY), 0),
            fmt(stat(agent, GETENV_REPEAT_KEY), 0),
            fmt(stat(agent, EVENTS_RECEIVED_KEY), 0),
            fmt(records(agent), 0),
            dropped(agent),
        );
    }
    let _ = writeln!(
        w,
        "\nMedians per measurement; the uprobe fires for every process's getenv calls, so runs \
         include other processes'. getenv seen and getenv_repeat seen are `{GETENV_SEEN_KEY}` \
         and `{GETENV_REPEAT_KEY}`; kernel events is `{EVENTS_RECEIVED_KEY}` (exec and exit \
         events included); records are the access records the agent wrote (output lines other \
         than stats lines).\n"
    );

    let rows = [Setup::Floor, Setup::Agent].map(|setup| {
        (
            setup.name(),
            Name::ALL
                .iter()
                .map(|&name| samples[name as usize][setup as usize].as_slice())
                .collect::<Vec<_>>(),
        )
    });
    all_programs_table(w, &Name::ALL.map(Name::var), &rows);
    md
}
