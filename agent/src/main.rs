//! The `keytrail` binary: parses the command line, runs the command, maps errors to exit codes
//! (0 ok, 1 runtime failure, 2 bad usage or bad config).

use std::process::ExitCode;

use clap::Parser as _;
use keytrail::{
    agent,
    cli::{Cli, Command, ConfigCommand},
    config::{Config, DEFAULT_YAML},
};

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // One TLS crypto provider for the whole process (Kubernetes client, OTLP exporters).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_YAML}");
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { file }) => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_USAGE, &e),
        },
        Command::Classify(args) => match keytrail::classify::run(&args) {
            Ok(keytrail::classify::Outcome::AllRead) => ExitCode::SUCCESS,
            Ok(keytrail::classify::Outcome::SomeUnreadable) => ExitCode::from(EXIT_RUNTIME),
            Err(e) => fail(EXIT_USAGE, &e),
        },
        Command::Report(args) => match keytrail::report::run(&args) {
            Ok(keytrail::report::Outcome::Clean) => ExitCode::SUCCESS,
            // 3: static credentials in use (`--fail-on static`), for CI gates.
            Ok(keytrail::report::Outcome::StaticInUse) => ExitCode::from(3),
            Err(e) => fail(EXIT_RUNTIME, &e),
        },
        Command::Agent(args) => {
            let opts = match args.resolve() {
                Ok(o) => o,
                Err(e) => return fail(EXIT_USAGE, &e),
            };
            match runtime().block_on(agent::run(opts, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                // A fingerprint key it cannot use as it stands (a configured file missing or
                // empty, an unset variable, an empty per-node key file) is bad configuration
                // found at start: the fix is a setting or a file, as the message says.
                Err(e) => {
                    let config = matches!(&e, agent::AgentError::Key(k) if k.is_config());
                    fail(if config { EXIT_USAGE } else { EXIT_RUNTIME }, &e)
                }
            }
        }
        Command::BenchFloor(args) => {
            match runtime().block_on(agent::run_floor(&args.family, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_RUNTIME, &e),
            }
        }
    }
}

fn fail(code: u8, error: &dyn std::error::Error) -> ExitCode {
    let mut msg = format!("keytrail: error: {error}");
    let mut source = error.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    eprintln!("{msg}");
    ExitCode::from(code)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("keytrail")
        .build()
        .expect("tokio runtime")
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Logs go to stderr; level from KEYTRAIL_LOG (default info). By default the Kubernetes client's
/// own per-request errors are off: the watcher reports API trouble itself, once, then backs off.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYTRAIL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
