//! The server's codec: a request message is handed over as its raw bytes
//! (a slice of the receive buffer, no copy), and responses are encoded with
//! prost. The service parses borrowed views of the bytes.
//!
//! Every call (every stream) gets a receive and a send buffer from tonic
//! when it opens: they start at [`BUFFER`] (an event or a few outcomes)
//! rather than tonic's 8 KiB, and a burst of outcomes is handed on every
//! [`YIELD`] bytes, so that an idle stream costs little and a busy one's
//! send buffer stays small.

use bytes::{Buf, Bytes};
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// The first size of a call's receive and send buffers (they grow for
/// larger messages).
pub const BUFFER: usize = 2 * 1024;

/// Encoded outcomes are handed to HTTP/2 once this many bytes are ready
/// (an HTTP/2 DATA frame holds 16 KiB by default).
pub const YIELD: usize = 8 * 1024;

fn buffers() -> BufferSettings {
    BufferSettings::new(BUFFER, YIELD)
}

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

    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

impl<E: prost::Message + Send + 'static> Codec for RawCodec<E> {
    type Encode = E;
    type Decode = RawMessage;
    type Encoder = ProstEncoder<E>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}
