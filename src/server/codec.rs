//! The server's codec: a request message is handed over as its raw bytes
//! (a slice of the receive buffer, no copy), and responses are encoded with
//! prost. The service parses borrowed views of the bytes.

use bytes::{Buf, Bytes};
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// One request message, as received.
#[derive(Debug, Clone, Default)]
pub struct RawMessage(pub Bytes);

/// Decodes [`RawMessage`]s, encodes `E` with prost.
#[derive(Debug)]
pub struct RawCodec<E>(PhantomData<fn(E)>);

impl<E> Default for RawCodec<E> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

/// The decoder half of [`RawCodec`].
#[derive(Debug, Default)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = RawMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RawMessage>, Status> {
        let n = src.remaining();
        Ok(Some(RawMessage(src.copy_to_bytes(n))))
    }
}

impl<E: prost::Message + Send + 'static> Codec for RawCodec<E> {
    type Encode = E;
    type Decode = RawMessage;
    type Encoder = ProstEncoder<E>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}
