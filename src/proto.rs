//! Generated gRPC types of `riskstream.v1`: the public types and client
//! (clients, tools), the [`wire`] types the server builds its responses
//! from, and the encoded descriptor set that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("riskstream.v1");

/// The same messages with `string` fields as `bytes::Bytes`: the server's
/// responses, whose strings are static or slices of the request (no
/// allocation). Byte-for-byte the same wire format as the public types.
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/wire/riskstream.v1.rs"));
}

/// The encoded `FileDescriptorSet` of the riskstream proto (for reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/riskstream_descriptor.bin"));
