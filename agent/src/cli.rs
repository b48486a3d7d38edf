//! The command line. Raw flags are parsed here and resolved into [`AgentOptions`] (config file
//! merged with flags) before anything runs.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    agent::AgentOptions,
    config::{Config, ConfigError, OtlpProtocol},
    sink::jsonl::Destination,
};

/// keytrail: which workload used which credential toward which destination.
///
/// Traces, from the kernel, the credentials the workloads of this host touch (opens of
/// credential files, secrets in environments at exec and read with getenv, other processes'
/// /proc/PID/environ, credentials in request headers on outbound connections) and where they
/// send them: `keytrail.credential.access` and `keytrail.credential.use` records as JSON lines
/// and over OTLP, and an inventory in the state file that `keytrail report` turns into the
/// list of static secrets still in use. The agent needs root (or CAP_BPF, CAP_PERFMON and
/// CAP_SYS_ADMIN). Never prints a secret value.
#[derive(Debug, Parser)]
#[command(name = "keytrail", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent on this host until interrupted (or for --duration seconds).
    Agent(AgentArgs),
    /// Print the migration worklist from the inventory: credentials still in use, with kind,
    /// id, age, owner, workloads, destinations, evidence and how many workloads share each.
    Report(ReportArgs),
    /// Classify credential files offline: one JSON line per credential found (never its value).
    Classify(ClassifyArgs),
    /// Print the embedded default configuration, or check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Attach empty programs on the hooks of one program family until interrupted (benchmark
    /// floor).
    #[command(hide = true)]
    BenchFloor(BenchFloorArgs),
}

#[derive(Debug, Args)]
pub struct BenchFloorArgs {
    /// Which hooks: `open` (file-open tracepoints), `exec` (execve/execveat entry), `getenv`
    /// (getenv/secure_getenv of the host's libc), `net` (connect4/connect6, sock_ops and
    /// egress at the cgroup2 root).
    #[arg(long, default_value = "open", value_parser = ["open", "exec", "getenv", "net"])]
    pub family: String,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Configuration file (YAML). Without it the embedded default is used
    /// (see `keytrail config default`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write JSON lines to PATH (appended), or `-` for stdout. Overrides output.jsonl.
    #[arg(long, value_name = "PATH|-")]
    pub jsonl: Option<String>,
    /// Send events, metrics (and spans if configured) to this OTLP collector
    /// (`http://host:4317`, `https://...`). Overrides output.otlp.endpoint.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc, or http (protobuf over HTTP). Overrides output.otlp.protocol.
    #[arg(long, value_name = "PROTOCOL", value_parser = ["grpc", "http"])]
    pub otlp_protocol: Option<String>,
    /// State file: the credential inventory (SQLite) read by `keytrail report`. Its directory
    /// also holds the per-node fingerprint key (fingerprint.key) when the config names no
    /// shared key.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_STATE)]
    pub state: PathBuf,
    /// Stop after SECS seconds instead of running until SIGINT/SIGTERM.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
}

/// Default state file.
pub const DEFAULT_STATE: &str = "/var/lib/keytrail/keytrail.db";

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The agent's state file (its inventory).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_STATE)]
    pub state: PathBuf,
    /// Output format: table (fits 80 columns), json, csv or markdown.
    #[arg(long, value_name = "FORMAT", default_value = "table", value_parser = ["table", "json", "csv", "markdown"])]
    pub format: String,
    /// Which credentials: static ones only (the worklist), or all.
    #[arg(long, value_name = "WHICH", default_value = "static", value_parser = ["static", "all"])]
    pub only: String,
    /// Exit 3 when any static credential is in use (for CI gates).
    #[arg(long, value_name = "WHAT", value_parser = ["static"])]
    pub fail_on: Option<String>,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Files to classify.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Configuration file, for the short-lived threshold, read cap and fingerprint key.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State file whose directory holds the node's fingerprint key, so fingerprints match the
    /// agent's on this node.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_STATE)]
    pub state: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the embedded default configuration, with comments.
    Default,
    /// Validate a configuration file; exits 2 naming the field at fault.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

impl AgentArgs {
    /// Loads the config and applies the flags over it.
    pub fn resolve(&self) -> Result<AgentOptions, ConfigError> {
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::embedded(),
        };
        let mut config = config;
        let jsonl = Destination::parse(self.jsonl.as_deref().unwrap_or(&config.output.jsonl));
        if let Some(endpoint) = &self.otlp_endpoint {
            crate::config::check_otlp_endpoint(endpoint).map_err(|message| ConfigError::Flag {
                flag: "--otlp-endpoint",
                message,
            })?;
            config.output.otlp.endpoint = endpoint.clone();
        }
        if let Some(protocol) = &self.otlp_protocol {
            config.output.otlp.protocol = if protocol == "http" {
                OtlpProtocol::Http
            } else {
                OtlpProtocol::Grpc
            };
        }
        Ok(AgentOptions {
            config,
            jsonl,
            duration: self.duration.map(Duration::from_secs),
            state: self.state.clone(),
        })
    }
}
