//! Holds many `ScoreStream` streams open against a server, for measuring
//! what they cost it (`benches/overload.sh`): idle ones (headers only),
//! half-sent ones (a message's 5-byte prefix and all of its body but the
//! last byte), or ones that sent one whole message (of junk: answered with
//! an error outcome) and then idle. Opens `--connections` HTTP/2 connections (the `h2` crate)
//! and spreads `--streams` over them, waits `--hold`, then prints one JSON
//! line: how many streams were opened, how many the server had answered
//! (and with which gRPC status) by then.
//!
//! ```sh
//! cargo bench --bench hold_streams -- 127.0.0.1:50051 idle 2000 20 30
//! cargo bench --bench hold_streams -- 127.0.0.1:50051 half 2000 20 30 262144
//! ```
//!
//! Without its arguments (as `cargo bench` runs every bench) it only says
//! how to use it.

use bytes::{BufMut, BytesMut};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tonic::codegen::http;

const USAGE: &str =
    "usage: hold_streams ADDR idle|half|full STREAMS CONNECTIONS HOLD_SECONDS [MESSAGE_BYTES]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` adds `--bench`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        eprintln!("{USAGE} (a tool for benches/overload.sh: nothing to run without a server)");
        return Ok(());
    }
    if args.len() < 5 {
        return Err(USAGE.into());
    }
    let addr = args[0].clone();
    let (send_message, whole) = match args[1].as_str() {
        "idle" => (false, false),
        "half" => (true, false),
        "full" => (true, true),
        _ => return Err(USAGE.into()),
    };
    let streams: usize = args[2].parse()?;
    let connections: usize = args[3].parse::<usize>()?.max(1);
    let hold = Duration::from_secs(args[4].parse()?);
    let message_len: usize = args.get(5).map_or(Ok(256 * 1024), |s| s.parse())?;
    let first = send_message.then(|| {
        let mut b = BytesMut::with_capacity(5 + message_len);
        b.put_u8(0);
        b.put_u32(u32::try_from(message_len).unwrap_or(u32::MAX));
        let sent = if whole {
            message_len
        } else {
            message_len.saturating_sub(1)
        };
        b.put_bytes(b'x', sent);
        b.freeze()
    });

    let mut answers = JoinSet::new();
    let mut kept = Vec::new();
    let mut opened = 0usize;
    let mut failed_connections = 0usize;
    for c in 0..connections {
        let n = streams / connections + usize::from(c < streams % connections);
        let Ok(tcp) = TcpStream::connect(&addr).await else {
            failed_connections += 1;
            continue;
        };
        let Ok((send, conn)) = h2::client::handshake(tcp).await else {
            failed_connections += 1;
            continue;
        };
        tokio::spawn(conn);
        for _ in 0..n {
            let Ok(mut ready) = send.clone().ready().await else {
                break;
            };
            let request = http::Request::post(format!(
                "http://{addr}/riskstream.v1.RiskScorer/ScoreStream"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
            let Ok((response, mut stream)) = ready.send_request(request, false) else {
                break;
            };
            if let Some(b) = &first {
                stream.reserve_capacity(b.len());
                let _ = stream.send_data(b.clone(), false);
            }
            opened += 1;
            kept.push(stream);
            answers.spawn(async move {
                let Ok(response) = response.await else {
                    return "reset".to_owned();
                };
                if let Some(s) = response.headers().get("grpc-status") {
                    return format!("status {}", s.to_str().unwrap_or("?"));
                }
                let mut body = response.into_body();
                while let Some(Ok(_)) = body.data().await {}
                match body.trailers().await {
                    Ok(Some(t)) => t.get("grpc-status").map_or("no status".to_owned(), |s| {
                        format!("status {}", s.to_str().unwrap_or("?"))
                    }),
                    _ => "reset".to_owned(),
                }
            });
        }
    }
    eprintln!("{opened} streams open; holding them {hold:?}");
    tokio::time::sleep(hold).await;
    let mut ended: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(a) = answers.try_join_next() {
        *ended
            .entry(a.unwrap_or_else(|_| "panicked".to_owned()))
            .or_default() += 1;
    }
    let ended: Vec<String> = ended.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    println!(
        "{{\"opened\": {opened}, \"failed_connections\": {failed_connections}, \"ended_while_held\": {{{}}}}}",
        ended.join(", ")
    );
    drop(kept);
    Ok(())
}
