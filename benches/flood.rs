//! Floods a server with metadata for `benches/overload.sh` ("Metadata
//! flood"): STREAMS `ScoreStream` streams on one connection send a
//! `PaymentEvent` with KEYS (20,000) metadata entries, about 189 KB, as fast
//! as the server takes them, for SECONDS (the flood client of
//! `tests/common/flood.rs`). Prints one JSON line: messages sent, outcomes
//! received, of which error outcomes naming `metadata`.
//!
//! ```sh
//! cargo bench --bench flood -- 127.0.0.1:50051 2 10
//! ```
//!
//! Without its arguments (as `cargo bench` runs every bench) it only says
//! how to use it.

#[path = "../tests/common/flood.rs"]
mod flood;

use std::time::Duration;

const USAGE: &str = "usage: flood ADDR STREAMS SECONDS [KEYS]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), flood::FloodError> {
    // `cargo bench` adds `--bench`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        eprintln!("{USAGE} (a tool for benches/overload.sh: nothing to run without a server)");
        return Ok(());
    }
    if args.len() < 3 {
        return Err(USAGE.into());
    }
    let streams: usize = args[1].parse()?;
    let seconds: f64 = args[2].parse()?;
    let keys: usize = args.get(3).map_or(Ok(20_000), |s| s.parse())?;
    let f = flood::flood(
        &args[0],
        streams,
        Duration::from_secs_f64(seconds),
        u64::MAX,
        keys,
    )
    .await?;
    println!(
        "{{\"message_bytes\": {}, \"streams\": {streams}, \"seconds\": {seconds}, \"sent\": {}, \"outcomes\": {}, \"metadata_errors\": {}}}",
        f.message_bytes, f.sent, f.outcomes, f.metadata_errors
    );
    Ok(())
}
