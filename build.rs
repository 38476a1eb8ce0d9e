//! Compiles `proto/riskstream/v1/riskstream.proto` in pure Rust (protox), so a
//! fresh machine needs no `protoc`, and writes the encoded descriptor set that
//! server reflection serves.

use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTO: &str = "proto/riskstream/v1/riskstream.proto";

/// The locked version of `name` in Cargo.lock, for model provenance.
fn locked_version(lock: &str, name: &str) -> String {
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|i| lock[i + needle.len()..].split('"').next())
        .unwrap_or("unknown")
        .to_owned()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (name, var) in [
        ("linfa", "RISKSTREAM_LINFA_VERSION"),
        ("linfa-logistic", "RISKSTREAM_LINFA_LOGISTIC_VERSION"),
    ] {
        println!("cargo:rustc-env={var}={}", locked_version(&lock, name));
    }
    let fds = protox::compile([PROTO], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("riskstream_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
