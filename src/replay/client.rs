//! The replay tool's gRPC client: requests go out as the bytes they were
//! encoded to when the file was read, answers come back as raw bytes that
//! the caller parses with a borrowed view. Neither side allocates a message.

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// `RiskScorer` methods the tool calls.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    /// `RegisterPaymentMethod`.
    Register,
    /// `Score`.
    Score,
    /// `ScoreStream`.
    ScoreStream,
    /// `ReportFeedback`.
    Feedback,
}

impl Method {
    /// The method's HTTP/2 path.
    pub fn path(self) -> PathAndQuery {
        PathAndQuery::from_static(match self {
            Method::Register => "/riskstream.v1.RiskScorer/RegisterPaymentMethod",
            Method::Score => "/riskstream.v1.RiskScorer/Score",
            Method::ScoreStream => "/riskstream.v1.RiskScorer/ScoreStream",
            Method::Feedback => "/riskstream.v1.RiskScorer/ReportFeedback",
        })
    }
}

/// Sends pre-encoded messages and hands answers over as raw bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

/// Encoder half of [`BytesCodec`].
#[derive(Debug, Default)]
pub struct BytesEncoder;

/// Decoder half of [`BytesCodec`].
#[derive(Debug, Default)]
pub struct BytesDecoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}

/// Puts a bearer token on every call (or nothing, without one).
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// The first token of the file at `path` (one token per line, lines
    /// starting with `#` skipped).
    pub fn from_file(path: &std::path::Path) -> Result<Bearer, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let token = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| format!("{} holds no token", path.display()))?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| format!("{}: the token is not printable ASCII", path.display()))?;
        Ok(Bearer(Some(value)))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A connection to the target: one HTTP/2 connection, cheap to clone.
pub type Client =
    tonic::client::Grpc<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Opens one connection to `target` (`http://host:port`, or `https://`
/// with `tls`), its calls carrying `bearer`.
pub async fn connect(
    target: &str,
    bearer: Bearer,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Client, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(target.to_owned())?.tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint.connect().await?;
    Ok(tonic::client::Grpc::new(
        tonic::service::interceptor::InterceptedService::new(channel, bearer),
    ))
}

/// One unary call with a pre-encoded request; the answer's raw bytes.
pub async fn unary(client: &mut Client, method: Method, body: Bytes) -> Result<Bytes, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    let response = client
        .unary(tonic::Request::new(body), method.path(), BytesCodec)
        .await?;
    Ok(response.into_inner())
}
