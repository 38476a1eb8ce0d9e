//! Generated gRPC types for `riskstream.v1`, and the encoded descriptor set
//! that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("riskstream.v1");

/// The encoded `FileDescriptorSet` of the riskstream proto (for reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/riskstream_descriptor.bin"));
