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
//!   them (`src/view.rs`) instead of allocating a message per request. Its
//!   methods are listed by hand ([`RPCS`]); the same list is written out as
//!   data (`server::manual`) for the test that checks it against the proto.

use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTO: &str = "proto/riskstream/v1/riskstream.proto";
/// The recorded-traffic format (not part of the service).
const TRAFFIC_PROTO: &str = "proto/riskstream/v1/traffic.proto";

/// The proto package and service that the manual server definition serves.
const PACKAGE: &str = "riskstream.v1";
const SERVICE: &str = "RiskScorer";

/// One RPC of the manual `RiskScorer` definition.
struct Rpc {
    /// The generated trait's method.
    name: &'static str,
    /// The RPC's name in the proto (the last part of its path).
    route: &'static str,
    /// The request message (arrives as raw bytes, parsed by `src/view.rs`).
    input: &'static str,
    /// The response message (a `crate::proto::wire` type).
    output: &'static str,
    client_streaming: bool,
    server_streaming: bool,
}

/// The RPCs of `RiskScorer`: they build the server and are written to
/// `OUT_DIR/server/methods.rs` for `tests/protocol_facts.rs`.
const RPCS: &[Rpc] = &[
    Rpc {
        name: "register_payment_method",
        route: "RegisterPaymentMethod",
        input: "RegisterPaymentMethodRequest",
        output: "RegisterPaymentMethodResponse",
        client_streaming: false,
        server_streaming: false,
    },
    Rpc {
        name: "get_payment_method",
        route: "GetPaymentMethod",
        input: "GetPaymentMethodRequest",
        output: "PaymentMethod",
        client_streaming: false,
        server_streaming: false,
    },
    Rpc {
        name: "score",
        route: "Score",
        input: "PaymentEvent",
        output: "Outcome",
        client_streaming: false,
        server_streaming: false,
    },
    Rpc {
        name: "score_stream",
        route: "ScoreStream",
        input: "PaymentEvent",
        output: "Outcome",
        client_streaming: true,
        server_streaming: true,
    },
    Rpc {
        name: "report_feedback",
        route: "ReportFeedback",
        input: "FeedbackEvent",
        output: "FeedbackResponse",
        client_streaming: false,
        server_streaming: false,
    },
];

/// [`RPCS`] as Rust source: `SERVICE` and `METHODS` (`crate::facts::Method`s).
fn methods_source() -> String {
    let mut src = String::from(
        "// Written by build.rs from the list that defines the manual server.\n\n\
         /// The service's full name.\n",
    );
    src += &format!("pub const SERVICE: &str = \"{PACKAGE}.{SERVICE}\";\n\n");
    src += "/// Its methods, in the order the server defines them.\n";
    src += "pub const METHODS: &[crate::facts::Method] = &[\n";
    for rpc in RPCS {
        src += &format!(
            "    crate::facts::Method {{\n        name: {:?},\n        route: {:?},\n        \
             input: \"{PACKAGE}.{}\",\n        output: \"{PACKAGE}.{}\",\n        \
             client_streaming: {},\n        server_streaming: {},\n    }},\n",
            rpc.name, rpc.route, rpc.input, rpc.output, rpc.client_streaming, rpc.server_streaming
        );
    }
    src += "];\n";
    src
}

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
    // RiskScorer's server comes from the manual definition below; RiskAdmin's
    // is generated (its requests are small and rare: no raw-bytes codec).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
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
    let mut service = tonic_build::manual::Service::builder()
        .name(SERVICE)
        .package(PACKAGE);
    for rpc in RPCS {
        let mut method = tonic_build::manual::Method::builder()
            .name(rpc.name)
            .route_name(rpc.route)
            .input_type("crate::server::codec::RawMessage")
            .output_type(format!("crate::proto::wire::{}", rpc.output))
            .codec_path("crate::server::codec::RawCodec");
        if rpc.client_streaming {
            method = method.client_streaming();
        }
        if rpc.server_streaming {
            method = method.server_streaming();
        }
        service = service.method(method.build());
    }
    let service = service.build();
    let server_out = out.join("server");
    fs::create_dir_all(&server_out)?;
    fs::write(server_out.join("methods.rs"), methods_source())?;
    tonic_build::manual::Builder::new()
        .out_dir(&server_out)
        .build_client(false)
        .build_server(true)
        .compile(&[service]);
    Ok(())
}
