//! `cargo xtask bench open`: what the agent adds to the cost of opening a file.
//!
//! A small C program (`open_loop.c`) opens and closes one file in a loop and reports
//! nanoseconds per open+close, in three setups: none, floor (`keytrail bench-floor --family
//! open`: empty programs on the file-open tracepoints the agent uses) and agent (default
//! configuration).
//!
//! Each setup runs the loop on a file the agent does not watch (`plain.txt`), on one it does
//! not watch below a directory whose first bytes pass the kernel's prefix gate (`/etc/hostname`:
//! the prefix trie is looked up and misses, as for every /etc open on a node), and on one it
//! does watch (`bench.pem`, matched by the default `**/*.pem`; every open becomes an event,
//! and writing those events is part of the measured cost).
//!
//! Before each loop a known credential file (a `.env` holding a token) is read once, as on any
//! node that runs pods with Secret volumes: from then on every open is also checked against the
//! agent's known files (by inode at syscall exit), and that cost is in the figures.
//!
//! The report goes to stdout and to `target/bench/open.md`; `--check` fails when a target is
//! missed.

use std::{fmt::Write as _, fs, process::Command};

use anyhow::{Result, bail};
use clap::Args;

use super::{
    AGENT_SUBCOMMAND, Attach, Bencher, DROPPED_SUFFIX, EVENTS_RECEIVED_KEY, FLOOR_SUBCOMMAND,
    JSONL_FLAG, PROBE_KEY_PREFIX, Sample, all_programs_table, dropped, fmt, header, interleave,
    log_sample, median, ns, number, program_ns, ratio,
};

/// `keytrail bench-floor` family of the file-open tracepoints.
const FLOOR_FAMILY: &str = "open";

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
const GATED_FILE: &str = "/etc/hostname";
const WATCHED_FILE: &str = "bench.pem";
/// A credential file read before each loop (see the module doc).
const KNOWN_FILE: &str = "known/.env";
const OPEN_LOOP_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bench/open_loop.c");

#[derive(Debug, Args)]
pub struct Options {
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

#[derive(Clone, Copy, Debug)]
enum Setup {
    None,
    Floor,
    Agent,
    /// The agent without the identity check at every open's exit (`watch.by_identity: false`).
    AgentByPath,
}

impl Setup {
    const ALL: [Setup; 4] = [Setup::None, Setup::Floor, Setup::Agent, Setup::AgentByPath];

    fn name(self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::Floor => "floor",
            Setup::Agent => "agent",
            Setup::AgentByPath => "agent-by-path",
        }
    }

    fn attach(self, by_path: &std::path::Path) -> Attach<'_> {
        match self {
            Setup::None => Attach::None,
            Setup::Floor => Attach::Floor(FLOOR_FAMILY),
            Setup::Agent => Attach::Agent(None),
            Setup::AgentByPath => Attach::Agent(Some(by_path)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Loop {
    Plain,
    Gated,
    Watched,
}

impl Loop {
    const ALL: [Loop; 3] = [Loop::Plain, Loop::Gated, Loop::Watched];

    fn file(self) -> &'static str {
        match self {
            Loop::Plain => PLAIN_FILE,
            Loop::Gated => GATED_FILE,
            Loop::Watched => WATCHED_FILE,
        }
    }

    fn label(self) -> String {
        match self {
            Loop::Plain => format!("non-watched (`{PLAIN_FILE}`)"),
            Loop::Gated => format!("non-watched, prefix gate passed (`{GATED_FILE}`)"),
            Loop::Watched => format!("watched (`{WATCHED_FILE}`)"),
        }
    }
}

/// `samples[loop][setup]`, one entry per round.
type Samples = [[Vec<Sample>; 4]; 3];

/// The configuration of the `agent-by-path` setup.
const BY_PATH_CONFIG: &str = "watch:\n  by_identity: false\n";

pub fn run(opts: Options) -> Result<()> {
    let (mut bencher, open_loop) =
        Bencher::new("open", opts.iterations, opts.rounds, OPEN_LOOP_SOURCE)?;
    for file in [PLAIN_FILE, WATCHED_FILE] {
        fs::write(bencher.dir().join(file), "keytrail benchmark file\n")?;
    }
    let known = bencher.dir().join(KNOWN_FILE);
    fs::create_dir_all(known.parent().expect("a parent"))?;
    fs::write(
        &known,
        "GITHUB_TOKEN=ghp_kEyTrAiLbEnChMaRkToKeN0123456789ab\n",
    )?;

    let by_path = bencher.dir().join("by-path.yaml");
    fs::write(&by_path, BY_PATH_CONFIG)?;

    let mut samples: Samples = Default::default();
    interleave(opts.rounds, &Loop::ALL, &Setup::ALL, |round, lp, setup| {
        // `sh -c 'cat KNOWN >/dev/null; exec open_loop FILE N'` in every setup alike.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("cat \"$1\" >/dev/null; exec \"$2\" \"$3\" \"$4\"")
            .arg("sh")
            .arg(&known)
            .arg(&open_loop)
            .arg(bencher.dir().join(lp.file()))
            .arg(opts.iterations.to_string());
        let sample = bencher.measure(setup.attach(&by_path), &mut cmd)?;
        log_sample(round, opts.rounds, setup.name(), lp.file(), &sample);
        samples[lp as usize][setup as usize].push(sample);
        Ok(())
    })?;

    let (report, failed) = report(&opts, &samples);
    bencher.write_report("open", &report)?;
    if opts.check && failed > 0 {
        bail!("{failed} target(s) missed");
    }
    Ok(())
}

/// Opens the C loop makes per measurement, warm-up included (see `open_loop.c`).
fn opens_per_run(iterations: u64) -> u64 {
    iterations + (iterations / 100).clamp(1000, 20000)
}

/// Renders the markdown report; also returns how many targets were missed.
fn report(opts: &Options, samples: &Samples) -> (String, usize) {
    let mut md = String::new();
    let w = &mut md;
    header(
        w,
        "keytrail: cost of open()+close()",
        &[
            format!(
                "{} open()+close() per measurement, {} rounds; setups interleaved within each \
                 round; values are medians over rounds, ratios are medians of per-round ratios",
                opts.iterations, opts.rounds
            ),
            format!(
                "none: nothing attached; floor: `keytrail {FLOOR_SUBCOMMAND} --family \
                 {FLOOR_FAMILY}` (empty programs on the agent's tracepoints); agent: `keytrail \
                 {AGENT_SUBCOMMAND} {JSONL_FLAG} FILE`"
            ),
        ],
    );

    let _ = writeln!(w, "## ns per open()+close()\n");
    let _ = writeln!(
        w,
        "| loop | none | floor | agent | agent-by-path | floor/none | agent/none | agent/floor \
         | agent-by-path/floor | kernel events/open | records/open | dropped |"
    );
    let _ = writeln!(
        w,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for lp in Loop::ALL {
        let [none, floor, agent, by_path] = &samples[lp as usize];
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
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            lp.label(),
            fmt(ns(none), 0),
            fmt(ns(floor), 0),
            fmt(ns(agent), 0),
            fmt(ns(by_path), 0),
            fmt(ratio(floor, none), 3),
            fmt(ratio(agent, none), 3),
            fmt(ratio(agent, floor), 3),
            fmt(ratio(by_path, floor), 3),
            fmt(received, 3),
            fmt(records, 3),
            dropped(agent),
        );
    }
    let _ = writeln!(
        w,
        "\nagent-by-path: the agent with `watch.by_identity: false` (no identity check at \
         open exit).\n\n\
         Last three columns, for the agent: kernel events/open is `{EVENTS_RECEIVED_KEY}` per \
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
        let [_, floor, agent, _] = &samples[lp as usize];
        let _ = write!(w, "| {} |", lp.label());
        for (floor_prog, agent_prog) in PROGRAM_PAIRS {
            let _ = write!(
                w,
                " {} | {} |",
                fmt(program_ns(floor, floor_prog), 1),
                fmt(program_ns(agent, agent_prog), 1)
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w);

    let rows = [Setup::Floor, Setup::Agent, Setup::AgentByPath].map(|setup| {
        (
            setup.name(),
            Loop::ALL
                .iter()
                .map(|&lp| samples[lp as usize][setup as usize].as_slice())
                .collect::<Vec<_>>(),
        )
    });
    all_programs_table(w, &["non-watched", "gated", "watched"], &rows);

    let plain = &samples[Loop::Plain as usize];
    let gated = &samples[Loop::Gated as usize];
    let targets = [
        (
            format!("agent/floor ≤ {MAX_AGENT_OVER_FLOOR:.2} on the non-watched file"),
            ratio(&plain[Setup::Agent as usize], &plain[Setup::Floor as usize]),
            3,
            MAX_AGENT_OVER_FLOOR,
        ),
        (
            format!("agent/floor ≤ {MAX_AGENT_OVER_FLOOR:.2} below /etc"),
            ratio(&gated[Setup::Agent as usize], &gated[Setup::Floor as usize]),
            3,
            MAX_AGENT_OVER_FLOOR,
        ),
        (
            format!("{TARGET_PROGRAM} < {MAX_TARGET_PROGRAM_NS:.0} ns/run on the non-watched file"),
            program_ns(&plain[Setup::Agent as usize], TARGET_PROGRAM),
            1,
            MAX_TARGET_PROGRAM_NS,
        ),
    ];
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---:|---|");
    let mut failed = 0;
    for (i, (name, value, decimals, limit)) in targets.into_iter().enumerate() {
        // The ratio targets are inclusive (≤), the program one strict (<).
        let pass = value.is_some_and(|v| if i < 2 { v <= limit } else { v < limit });
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
