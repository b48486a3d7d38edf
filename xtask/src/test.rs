//! `cargo xtask test`: everything CI checks, in one command.
//!
//! 1. `setup`
//! 2. `cargo fmt --all --check`
//! 3. `cargo clippy --all-targets -- -D warnings` on every crate but the kernel one
//! 4. clippy on the kernel crate (nightly, `bpfel-unknown-none`, `-Z build-std=core`)
//! 5. `cargo build -p keytrail`: the agent binary the end-to-end tests run
//! 6. `cargo xtask fuzz --smoke`: every fuzz target for a fixed number of runs with a fixed
//!    seed, from the committed seeds and regressions (the first run builds the targets with
//!    sanitizers, which takes a while)
//! 7. `cargo test --no-fail-fast` on every crate but the kernel one, with the test
//!    binaries running as root (they load eBPF programs); through `sudo -E` when not
//!    already root.
//!
//! The kernel crate only builds for the BPF target, so the host steps use
//! `--workspace --exclude keytrail-ebpf` (`--workspace` alone ignores `default-members`).
//!
//! Steps 2-7 all run even when one fails; the command fails if any did.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    setup::{self, NIGHTLY},
    util::{self, display},
};

/// The kernel crate (built only for the BPF target) and its target.
const EBPF_PACKAGE: &str = "keytrail-ebpf";
const EBPF_TARGET: &str = "bpfel-unknown-none";

#[derive(Debug, Args)]
pub struct Options {
    /// Extra arguments for `cargo test` (test name filters, `--` and test binary flags).
    #[arg(last = true)]
    pub args: Vec<String>,
}

struct Step {
    name: &'static str,
    command: Command,
}

pub fn run(opts: Options) -> Result<()> {
    let total = 7;
    header(1, total, "setup");
    let start = Instant::now();
    setup::ensure().context("setup failed; nothing else was run")?;
    let mut results = vec![("setup", true, start.elapsed())];

    let mut fmt = util::cargo()?;
    fmt.args(["fmt", "--all", "--check"]);

    let mut clippy = util::cargo()?;
    clippy
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            EBPF_PACKAGE,
            "--all-targets",
        ])
        .args(["--", "-D", "warnings"]);

    let mut clippy_ebpf = util::cargo()?;
    clippy_ebpf
        .arg(format!("+{NIGHTLY}"))
        .args(["clippy", "--package", EBPF_PACKAGE, "--target", EBPF_TARGET])
        .args(["-Z", "build-std=core", "--release", "--", "-D", "warnings"]);

    // `cargo test` builds the binaries of packages with integration tests only; the agent's
    // end-to-end tests live in another package and run its binary.
    let mut build_agent = util::cargo()?;
    build_agent.args(["build", "--package", "keytrail", "--bins"]);

    // Through `cargo xtask` again, so the step header shows the command to rerun it alone.
    let mut fuzz_smoke = util::cargo()?;
    fuzz_smoke.args(["xtask", "fuzz", "--smoke"]);

    let mut test = util::cargo()?;
    test.args([
        "test",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--no-fail-fast",
    ]);
    if !util::is_root() {
        // Build as the current user; only the test binaries run as root.
        let sudo = util::sudo("the tests")?;
        let host = host_triple()?;
        let var = format!(
            "CARGO_TARGET_{}_RUNNER",
            host.to_uppercase().replace(['-', '.'], "_")
        );
        test.env(var, format!("{} -E", sudo.display()));
    }
    test.args(&opts.args);

    let steps = [
        Step {
            name: "rustfmt",
            command: fmt,
        },
        Step {
            name: "clippy (workspace)",
            command: clippy,
        },
        Step {
            name: "clippy (kernel crate)",
            command: clippy_ebpf,
        },
        Step {
            name: "agent binary",
            command: build_agent,
        },
        Step {
            name: "fuzz smoke (deterministic)",
            command: fuzz_smoke,
        },
        Step {
            name: "tests",
            command: test,
        },
    ];
    for (i, mut step) in steps.into_iter().enumerate() {
        header(i + 2, total, &display(&step.command));
        let start = Instant::now();
        let ok = match step.command.status() {
            Ok(status) if status.success() => true,
            Ok(status) => {
                eprintln!("xtask test: {} failed ({status})", step.name);
                false
            }
            Err(err) => {
                eprintln!(
                    "xtask test: could not start `{}`: {err}",
                    display(&step.command)
                );
                false
            }
        };
        results.push((step.name, ok, start.elapsed()));
    }

    println!();
    println!("==== summary ====");
    for (name, ok, elapsed) in &results {
        println!(
            "  {:<6} {name:<28} {}",
            if *ok { "ok" } else { "FAILED" },
            seconds(*elapsed)
        );
    }
    let failed = results.iter().filter(|(_, ok, _)| !ok).count();
    if failed > 0 {
        bail!("{failed} of {} steps failed", results.len());
    }
    println!("all {} steps passed", results.len());
    Ok(())
}

fn header(index: usize, total: usize, what: &str) {
    println!();
    println!("==== [{index}/{total}] {what} ====");
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The host target triple, from `rustc -vV`.
fn host_triple() -> Result<String> {
    let out = util::output_checked(util::command("rustc")?.arg("-vV"))?;
    out.lines()
        .find_map(|line| line.strip_prefix("host:"))
        .map(|host| host.trim().to_owned())
        .context("`rustc -vV` printed no host line")
}
