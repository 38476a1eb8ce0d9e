//! A metadata flood over raw HTTP/2 (the `h2` crate): `ScoreStream`
//! streams that send, as fast as the server's flow-control windows let
//! them, one pre-encoded `PaymentEvent` with many metadata entries again and
//! again, so that the client spends next to nothing per message. Shared by
//! `tests/overload.rs` and `benches/flood.rs`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use riskstream::proto;
use std::future::poll_fn;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tonic::codegen::http;

/// An error of the flood client.
pub type FloodError = Box<dyn std::error::Error + Send + Sync>;

/// What a flood sent and got back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flooded {
    /// Bytes of one framed message.
    pub message_bytes: usize,
    /// Whole messages sent.
    pub sent: u64,
    /// Outcomes received.
    pub outcomes: u64,
    /// Of which error outcomes naming `metadata`.
    pub metadata_errors: u64,
}

/// One gRPC-framed `PaymentEvent` with `keys` metadata entries.
pub fn flood_message(keys: usize) -> Result<Bytes, FloodError> {
    let event = proto::PaymentEvent {
        payment_id: "flood".into(),
        metadata: (0..keys)
            .map(|i| (format!("k{i}"), String::new()))
            .collect(),
        ..Default::default()
    };
    let body = event.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + body.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(body.len())?);
    framed.put_slice(&body);
    Ok(framed.freeze())
}

/// Floods `addr` on `streams` streams of one connection for `time`, each
/// stream sending at most `max_messages` messages of `keys` entries, then
/// ends the streams and waits for their outcomes.
pub async fn flood(
    addr: &str,
    streams: usize,
    time: Duration,
    max_messages: u64,
    keys: usize,
) -> Result<Flooded, FloodError> {
    let framed = flood_message(keys)?;
    let tcp = TcpStream::connect(addr).await?;
    let (send, conn) = h2::client::handshake(tcp).await?;
    tokio::spawn(conn);
    let deadline = Instant::now() + time;
    let mut calls = JoinSet::new();
    for _ in 0..streams.max(1) {
        let request = http::Request::post(format!(
            "http://{addr}/riskstream.v1.RiskScorer/ScoreStream"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
        let mut ready = send.clone().ready().await?;
        let (response, stream) = ready.send_request(request, false)?;
        let framed = framed.clone();
        calls.spawn(async move {
            let reader = tokio::spawn(read_outcomes(response));
            let sent = send_until(stream, framed, deadline, max_messages).await;
            let mut counts = reader.await.unwrap_or_default();
            counts.sent = sent;
            counts
        });
    }
    let mut total = Flooded {
        message_bytes: framed.len(),
        ..Flooded::default()
    };
    while let Some(c) = calls.join_next().await {
        let c = c?;
        total.sent += c.sent;
        total.outcomes += c.outcomes;
        total.metadata_errors += c.metadata_errors;
    }
    Ok(total)
}

/// Sends `framed` again and again within the stream's send window until
/// `deadline` or `max` messages, then ends the stream; how many whole
/// messages went out.
async fn send_until(
    mut stream: h2::SendStream<Bytes>,
    framed: Bytes,
    deadline: Instant,
    max: u64,
) -> u64 {
    let mut sent = 0;
    'messages: while sent < max && Instant::now() < deadline {
        let mut rest = framed.clone();
        while !rest.is_empty() {
            stream.reserve_capacity(rest.len());
            let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                _ => break 'messages,
            };
            if granted == 0 {
                continue;
            }
            let chunk = rest.split_to(granted.min(rest.len()));
            if stream.send_data(chunk, false).is_err() {
                break 'messages;
            }
        }
        sent += 1;
    }
    let _ = stream.send_data(Bytes::new(), true);
    sent
}

/// Reads the stream's outcomes until it ends, giving its window back.
async fn read_outcomes(response: h2::client::ResponseFuture) -> Flooded {
    let mut counts = Flooded::default();
    let Ok(response) = response.await else {
        return counts;
    };
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
        buf.extend_from_slice(&data);
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 5 + len {
                break;
            }
            buf.advance(5);
            let message = buf.split_to(len);
            counts.outcomes += 1;
            if let Ok(o) = proto::Outcome::decode(message.freeze())
                && o.error.is_some_and(|e| e.field == "metadata")
            {
                counts.metadata_errors += 1;
            }
        }
    }
    counts
}
