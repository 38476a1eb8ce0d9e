//! Compiles `proto/riskstream/v1/riskstream.proto` (and the recorded-traffic
//! format, `traffic.proto`) in pure Rust (protox), so a fresh machine needs
//! no `protoc`, and writes the encoded descriptor set that server reflection
//! serves.
//!
//! Three things come out of the one contract:
//! - the public types (`String` fields) and client, used by clients and tools;
//! - the server's wire types: the same messages with every `string` field
//!   as `bytes::Bytes`, for the responses it builds (static strings cost no
//!   allocation). `string` and `bytes` share one wire encoding;
//! - the `RiskScorer` server, generated with a codec that hands each request
//!   to the service as its raw bytes: the service parses borrowed views of
//!   them (`src/view.rs`) instead of allocating a message per request.

use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTO: &str = "proto/riskstream/v1/riskstream.proto";
/// The recorded-traffic format (not part of the service).
const TRAFFIC_PROTO: &str = "proto/riskstream/v1/traffic.proto";

/// The locked version of `name` in Cargo.lock, for model provenance.
fn locked_version(lock: &str, name: &str) -> String {
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|i| lock[i + needle.len()..].split('"').next())
        .unwrap_or("unknown")
        .to_owned()
}

/// The contract with `string` scalar fields declared `bytes` (map keys and
/// values are left alone: proto map keys cannot be `bytes`).
fn wire_variant(proto: &str) -> String {
    proto
        .lines()
        .map(|line| {
            let t = line.trim_start();
            let indent = &line[..line.len() - t.len()];
            if let Some(rest) = t.strip_prefix("string ") {
                format!("{indent}bytes {rest}")
            } else if let Some(rest) = t.strip_prefix("repeated string ") {
                format!("{indent}repeated bytes {rest}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed={TRAFFIC_PROTO}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (name, var) in [
        ("linfa", "RISKSTREAM_LINFA_VERSION"),
        ("linfa-logistic", "RISKSTREAM_LINFA_LOGISTIC_VERSION"),
    ] {
        println!("cargo:rustc-env={var}={}", locked_version(&lock, name));
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile([PROTO, TRAFFIC_PROTO], ["proto"])?;
    fs::write(out.join("riskstream_descriptor.bin"), fds.encode_to_vec())?;
    // The server comes from the manual definition below.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;

    let wire_root = out.join("wire-proto");
    let wire_file = wire_root.join("riskstream/v1/riskstream.proto");
    fs::create_dir_all(wire_file.parent().ok_or("no parent")?)?;
    fs::write(&wire_file, wire_variant(&fs::read_to_string(PROTO)?))?;
    let wire_out = out.join("wire");
    fs::create_dir_all(&wire_out)?;
    let wire_fds = protox::compile(["riskstream/v1/riskstream.proto"], [&wire_root])?;
    tonic_prost_build::configure()
        .out_dir(&wire_out)
        .bytes(".")
        .build_client(false)
        .build_server(false)
        .compile_fds(wire_fds)?;

    // The server: requests arrive as raw bytes, responses are wire messages.
    let method = |name: &str, route: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type("crate::server::codec::RawMessage")
            .output_type(format!("crate::proto::wire::{output}"))
            .codec_path("crate::server::codec::RawCodec")
    };
    let service = tonic_build::manual::Service::builder()
        .name("RiskScorer")
        .package("riskstream.v1")
        .method(
            method(
                "register_payment_method",
                "RegisterPaymentMethod",
                "RegisterPaymentMethodResponse",
            )
            .build(),
        )
        .method(method("get_payment_method", "GetPaymentMethod", "PaymentMethod").build())
        .method(method("score", "Score", "Outcome").build())
        .method(
            method("score_stream", "ScoreStream", "Outcome")
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .method(method("report_feedback", "ReportFeedback", "FeedbackResponse").build())
        .build();
    let server_out = out.join("server");
    fs::create_dir_all(&server_out)?;
    tonic_build::manual::Builder::new()
        .out_dir(&server_out)
        .build_client(false)
        .build_server(true)
        .compile(&[service]);
    Ok(())
}
