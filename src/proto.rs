//! Generated gRPC types of `riskstream.v1`: the public types (clients,
//! tools), the server's zero-copy [`wire`] types, conversion between them,
//! and the encoded descriptor set that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("riskstream.v1");

/// The same messages with `string` fields as `bytes::Bytes`: what the server
/// decodes requests into (no allocation per field) and encodes outcomes
/// from. Byte-for-byte the same wire format as the public types.
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/wire/riskstream.v1.rs"));
}

/// Re-reads a message as another type with the same wire format (public ↔ wire).
pub fn convert<A: prost::Message, B: prost::Message + Default>(
    m: &A,
) -> Result<B, prost::DecodeError> {
    B::decode(m.encode_to_vec().as_slice())
}

/// The encoded `FileDescriptorSet` of the riskstream proto (for reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/riskstream_descriptor.bin"));
