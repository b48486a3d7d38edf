//! `cargo xtask fuzz`: runs the libFuzzer targets of `fuzz/` (cargo-fuzz, nightly) against
//! the parsers that see untrusted input: credential files, env values, request headers,
//! kernel ring buffer records and the symbol tables of workloads' libraries.
//!
//! - `cargo xtask fuzz [--seconds N] [--target NAME]...`: each target for N seconds (default
//!   60). New interesting inputs go to `fuzz/target/corpus/<target>/` and are kept between
//!   runs; the committed seeds in `fuzz/corpus/<target>/` and the minimized crash inputs in
//!   `fuzz/regressions/<target>/` are read, never written.
//! - `cargo xtask fuzz --smoke`: deterministic and short (`-seed=1 -runs=N` from the seeds
//!   and regressions only), run by `cargo xtask test`.
//!
//! A crash leaves its input in `fuzz/artifacts/<target>/`; minimize it with
//! `cargo +nightly fuzz tmin --debug-assertions <target> <input>` and keep the result in
//! `fuzz/regressions/<target>/` so the smoke run replays it.
//!
//! Runs `setup` first and installs cargo-fuzz when `cargo fuzz` is missing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    setup::{self, NIGHTLY},
    util::{self, display, output_checked, run_checked},
};

/// Executions per target in `--smoke` mode: a few seconds each once built.
const SMOKE_RUNS: u32 = 20_000;

/// The libFuzzer seed of `--smoke` mode.
const SMOKE_SEED: u32 = 1;

#[derive(Debug, Args)]
pub struct Options {
    /// Seconds per target (libFuzzer `-max_total_time`).
    #[arg(long, default_value_t = 60, value_name = "N", conflicts_with = "smoke")]
    pub seconds: u64,
    /// Only this target (repeatable); default: every target in fuzz/Cargo.toml.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Deterministic and short: `-seed=1 -runs=20000` per target, from the committed seeds
    /// and regressions only.
    #[arg(long)]
    pub smoke: bool,
    /// Extra libFuzzer flags (after `--`), e.g. `-- -max_len=65536 -only_ascii=1`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    setup::ensure()?;
    ensure_cargo_fuzz()?;

    let all = list_targets()?;
    let targets = if opts.targets.is_empty() {
        all
    } else {
        if let Some(unknown) = opts.targets.iter().find(|t| !all.contains(t)) {
            bail!("no fuzz target `{unknown}`; targets: {}", all.join(", "));
        }
        opts.targets.clone()
    };

    // One build for every target, with the same flags `cargo fuzz run` uses below, so the
    // runs do not rebuild (and the build time shows on its own).
    let start = Instant::now();
    let mut build = cargo_fuzz("build")?;
    if targets.len() == 1 {
        build.arg(&targets[0]);
    }
    run_checked(&mut build).context("building the fuzz targets failed")?;
    println!("fuzz: built in {}", seconds(start.elapsed()));

    if opts.smoke {
        disable_aslr_for_children();
    }
    let root = util::workspace_root().join("fuzz");
    let mut results = Vec::new();
    for target in &targets {
        let start = Instant::now();
        let ok = run_target(&root, target, &opts)?;
        let elapsed = start.elapsed();
        println!(
            "fuzz: {target} {} in {}",
            if ok { "ok" } else { "FAILED" },
            seconds(elapsed)
        );
        results.push((target, ok, elapsed));
    }

    println!();
    println!("==== fuzz summary ====");
    for (target, ok, elapsed) in &results {
        println!(
            "  {:<6} {target:<20} {}",
            if *ok { "ok" } else { "FAILED" },
            seconds(*elapsed)
        );
    }
    let failed: Vec<_> = results.iter().filter(|(_, ok, _)| !ok).collect();
    if !failed.is_empty() {
        for (target, _, _) in &failed {
            eprintln!(
                "fuzz: {target}: the input is in {}; minimize it with `cargo +{NIGHTLY} fuzz \
                 tmin --debug-assertions {target} <input>` and keep it in {}",
                root.join("artifacts").join(target).display(),
                root.join("regressions").join(target).display(),
            );
        }
        bail!("{} of {} fuzz targets failed", failed.len(), results.len());
    }
    Ok(())
}

/// Runs one target; `Ok(false)` when the fuzzer found a failing input (or did not run).
fn run_target(root: &Path, target: &str, opts: &Options) -> Result<bool> {
    // libFuzzer writes new inputs to the first corpus directory only.
    let work = if opts.smoke {
        // Empty at every start, so a smoke run depends on the committed inputs alone.
        let dir = root.join("target/smoke-corpus").join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        dir
    } else {
        root.join("target/corpus").join(target)
    };
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut corpora: Vec<PathBuf> = vec![work];
    corpora.extend(
        ["corpus", "regressions"]
            .iter()
            .map(|dir| root.join(dir).join(target))
            .filter(|dir| dir.is_dir()),
    );

    let mut cmd = cargo_fuzz("run")?;
    cmd.arg(target).args(&corpora).arg("--");
    if opts.smoke {
        cmd.arg(format!("-seed={SMOKE_SEED}"))
            .arg(format!("-runs={SMOKE_RUNS}"));
    } else {
        cmd.arg(format!("-max_total_time={}", opts.seconds));
    }
    cmd.args(&opts.args);
    println!();
    println!("==== fuzz {target}: {} ====", display(&cmd));
    match cmd.status() {
        Ok(status) if status.success() => Ok(true),
        Ok(status) => {
            eprintln!("fuzz: {target} failed ({status})");
            Ok(false)
        }
        Err(err) => {
            eprintln!("fuzz: could not start `{}`: {err}", display(&cmd));
            Ok(false)
        }
    }
}

/// `cargo +nightly fuzz <subcommand>` with the build flags shared by `build` and `run`:
/// debug assertions on, so integer overflow panics as in the agent's debug builds and tests.
fn cargo_fuzz(subcommand: &str) -> Result<Command> {
    let mut cmd = util::cargo()?;
    cmd.arg(format!("+{NIGHTLY}"))
        .args(["fuzz", subcommand, "--debug-assertions"]);
    Ok(cmd)
}

/// Makes the programs started from now on load at fixed addresses. libFuzzer's mutations
/// depend on code addresses in places, so this takes one source of run-to-run variation out
/// of a smoke run. Best effort: some sandboxes forbid it, and the run is still valid.
fn disable_aslr_for_children() {
    const QUERY: libc::c_ulong = 0xffff_ffff;
    // SAFETY: personality only reads or sets this process's execution domain flags, which
    // take effect at the next exec and are inherited by children; no memory is involved.
    let ok = unsafe {
        let current = libc::personality(QUERY);
        current != -1
            && libc::personality(
                current as libc::c_ulong | libc::ADDR_NO_RANDOMIZE as libc::c_ulong,
            ) != -1
    };
    if !ok {
        println!("fuzz: could not turn off address randomization; running with it");
    }
}

/// Installs cargo-fuzz unless `cargo fuzz --version` already works.
fn ensure_cargo_fuzz() -> Result<()> {
    let works = util::cargo()?
        .args(["fuzz", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        println!("fuzz: cargo-fuzz ok");
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz (takes a couple of minutes)");
    run_checked(util::cargo()?.args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz failed")?;
    Ok(())
}

/// The targets declared in fuzz/Cargo.toml, per `cargo fuzz list`.
fn list_targets() -> Result<Vec<String>> {
    let mut cmd = util::cargo()?;
    cmd.arg(format!("+{NIGHTLY}")).args(["fuzz", "list"]);
    let out = output_checked(&mut cmd)?;
    let targets: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("`{}` lists no targets", display(&cmd));
    }
    Ok(targets)
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
