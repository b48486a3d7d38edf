//! Project tasks for keytrail, run as `cargo xtask <command>`.
//!
//! `setup` installs the toolchain pieces the kernel programs need (nightly, `rust-src`,
//! `bpf-linker`) plus a few Debian packages used by tests; every other command runs it first.

mod bench;
mod build;
mod fuzz;
mod run;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "keytrail project tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install or check the toolchain: nightly, rust-src, bpf-linker, Debian packages.
    Setup(setup::Options),
    /// Build the agent (and, through its build script, the kernel programs).
    Build(build::Options),
    /// Build and run the agent as root.
    Run(run::Options),
    /// Format check, clippy (userspace and kernel crates) and the whole test suite.
    Test(test::Options),
    /// Benchmarks.
    Bench(bench::Options),
    /// Fuzz the parsers of untrusted input (cargo-fuzz, nightly); `--smoke` for a short
    /// deterministic run.
    Fuzz(fuzz::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup(opts) => setup::run(opts),
        Command::Build(opts) => build::run(opts),
        Command::Run(opts) => run::run(opts),
        Command::Test(opts) => test::run(opts),
        Command::Bench(opts) => bench::run(opts),
        Command::Fuzz(opts) => fuzz::run(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The cause chain without a backtrace: these errors are for users, not for us.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
