//! `cargo xtask run`: builds the agent and runs `keytrail agent [ARGS...]` as root
//! (through `sudo -E` when needed). Without arguments the agent uses its embedded default
//! config and prints events as JSON lines on stdout.

use std::os::unix::process::CommandExt as _;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{build, setup, util};

#[derive(Debug, Args)]
pub struct Options {
    /// Build and run with the release profile.
    #[arg(long)]
    pub release: bool,
    /// Arguments for `keytrail agent`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    setup::ensure()?;
    let binary = build::build_agent(opts.release)?;
    let mut cmd = if util::is_root() {
        std::process::Command::new(&binary)
    } else {
        let mut cmd = std::process::Command::new(util::sudo("the agent")?);
        cmd.arg("-E").arg(&binary);
        cmd
    };
    cmd.arg("agent").args(&opts.args);
    eprintln!("running `{}`", util::display(&cmd));
    // Replace this process: the agent gets the terminal's signals directly and its exit
    // status becomes ours.
    let err = cmd.exec();
    Err(err).with_context(|| format!("failed to start `{}`", util::display(&cmd)))
}
