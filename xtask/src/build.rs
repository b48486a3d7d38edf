//! `cargo xtask build`: builds the agent binary. The agent's build script builds the
//! kernel programs with nightly and bpf-linker, which `setup` provides.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{setup, util};

/// The agent's package and binary name.
pub const AGENT_PACKAGE: &str = "keytrail";

#[derive(Debug, Args)]
pub struct Options {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

pub fn run(opts: Options) -> Result<()> {
    setup::ensure()?;
    let binary = build_agent(opts.release)?;
    println!("{}", binary.display());
    Ok(())
}

/// `cargo build [--release] -p keytrail`; returns the path of the binary.
pub fn build_agent(release: bool) -> Result<PathBuf> {
    let mut cmd = util::cargo()?;
    cmd.args(["build", "--package", AGENT_PACKAGE]);
    if release {
        cmd.arg("--release");
    }
    util::run_checked(&mut cmd)?;
    Ok(util::binary_path(AGENT_PACKAGE, release))
}
