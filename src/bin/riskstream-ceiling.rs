//! `riskstream-ceiling`: the gRPC transport ceiling for benchmarks. Serves
//! riskstream's contract with the same tonic, codec and connection settings
//! as `riskstream serve`, and answers every event with a fixed outcome
//! naming its payment id (see `riskstream::server::fixed`). Nothing is
//! scored: whatever it sustains is the most any scoring server can.

use anyhow::Context as _;
use clap::Parser;
use riskstream::server::fixed::{self, FixedService};

/// The same allocator as `riskstream serve`, so the comparison is of the work done.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serve fixed outcomes on riskstream's contract.
#[derive(Debug, Parser)]
#[command(name = "riskstream-ceiling", version)]
struct Args {
    /// gRPC listen address.
    #[arg(long, env = "RISKSTREAM_LISTEN", default_value = "127.0.0.1:50052")]
    listen: std::net::SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let runtime = riskstream::server::runtime().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "grpc listening");
        fixed::serve(FixedService::new(), listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(())
    })
}
