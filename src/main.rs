//! The `riskstream` binary: parse flags, run, report errors with their chain.

use clap::Parser;
use riskstream::cli::Cli;
use riskstream::config::ConfigError;
use riskstream::replay::Interrupted;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// mimalloc: the scoring path allocates a few small strings per event, and
/// mimalloc makes those several times cheaper than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match riskstream::run::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("riskstream: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(64)
            } else if e.downcast_ref::<Interrupted>().is_some() {
                // The conventional status of a run stopped by SIGINT.
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
