//! The request size limit (`--max-message-bytes`), enforced on the gRPC
//! framing of a request body as it arrives, before tonic buffers anything:
//! each message's 5-byte prefix (compression flag, big-endian length) is
//! read as the bytes pass, and a message announcing more than the limit is
//! refused there with `RESOURCE_EXHAUSTED` (its body is never buffered) and
//! counted as an invalid event of its kind. The messages before it in the
//! same request body are handed on first, so a stream answers them and then
//! ends with that status.
//!
//! tonic's own check of the prefix (`max_decoding_message_size`, set to the
//! same limit) stays behind this one; it would answer `OUT_OF_RANGE`.

use super::service::Ready;
use super::status::to_status;
use crate::error::ServiceError;
use crate::metrics::EventKind;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::Status;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

/// Length of the prefix of each gRPC message: a compression flag and a
/// big-endian `u32` length.
const PREFIX: usize = 5;

/// A gRPC service whose request bodies go through [`FrameLimit`].
#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
    max: usize,
    ready: Ready,
}

impl<S> Limited<S> {
    /// `inner`, refusing request messages over `max` bytes; refusals are
    /// counted in the metrics of the engine `ready` holds.
    pub fn new(inner: S, max: usize, ready: Ready) -> Self {
        Limited { inner, max, ready }
    }
}

impl<S: NamedService> NamedService for Limited<S> {
    const NAME: &'static str = S::NAME;
}

/// The event kind of a `RiskScorer` method path, for the metrics.
fn kind_of(path: &str) -> Option<EventKind> {
    match path.rsplit('/').next()? {
        "Score" | "ScoreStream" => Some(EventKind::Payment),
        "RegisterPaymentMethod" => Some(EventKind::Register),
        "ReportFeedback" => Some(EventKind::Feedback),
        "GetPaymentMethod" => Some(EventKind::Get),
        _ => None,
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for Limited<S>
where
    S: Service<http::Request<FrameLimit<tonic::body::Body>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let refused = Refusal {
            kind: kind_of(req.uri().path()),
            ready: self.ready.clone(),
        };
        let max = self.max;
        self.inner
            .call(req.map(|body| FrameLimit::new(body, max, refused)))
    }
}

/// What a refusal is counted against.
#[derive(Debug)]
struct Refusal {
    kind: Option<EventKind>,
    ready: Ready,
}

impl Refusal {
    fn status(&self, bytes: usize, max: usize) -> Status {
        if let (Some(kind), Some(engine)) = (self.kind, self.ready.get()) {
            engine.metrics().event(kind);
            engine.metrics().invalid(kind);
        }
        to_status(ServiceError::TooLarge { bytes, max })
    }
}

/// A request body that ends with `RESOURCE_EXHAUSTED` where a message
/// longer than the limit begins, after handing on every byte before it.
#[derive(Debug)]
pub struct FrameLimit<B> {
    inner: B,
    max: usize,
    /// The prefix being read, and how much of it has arrived.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message's body still to pass.
    body_left: usize,
    /// The refusal to answer once the bytes before it are handed on.
    pending: Option<Status>,
    /// Refused: nothing more is read.
    done: bool,
    refusal: Refusal,
}

impl<B> FrameLimit<B> {
    fn new(inner: B, max: usize, refusal: Refusal) -> Self {
        FrameLimit {
            inner,
            max,
            prefix: [0; PREFIX],
            prefix_len: 0,
            body_left: 0,
            pending: None,
            done: false,
            refusal,
        }
    }

    /// Follows the framing through `data`: where (an offset into `data`) a
    /// message over the limit begins, and its announced length.
    fn scan(&mut self, data: &[u8]) -> Option<(usize, usize)> {
        let mut i = 0;
        while i < data.len() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len() - i);
                self.body_left -= n;
                i += n;
                continue;
            }
            // A prefix begun in an earlier chunk began before this one.
            let start = if self.prefix_len == 0 { i } else { 0 };
            let n = (PREFIX - self.prefix_len).min(data.len() - i);
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[i..i + n]);
            self.prefix_len += n;
            i += n;
            if self.prefix_len == PREFIX {
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > self.max {
                    return Some((start, len));
                }
                self.body_left = len;
            }
        }
        None
    }
}

impl<B> Body for FrameLimit<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(status) = this.pending.take() {
            return Poll::Ready(Some(Err(status)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(other) => return Poll::Ready(Some(Ok(other))),
        };
        match this.scan(&data) {
            None => Poll::Ready(Some(Ok(Frame::data(data)))),
            Some((at, len)) => {
                this.done = true;
                let status = this.refusal.status(len, this.max);
                if at == 0 {
                    Poll::Ready(Some(Err(status)))
                } else {
                    this.pending = Some(status);
                    Poll::Ready(Some(Ok(Frame::data(data.slice(..at)))))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        (self.done && self.pending.is_none()) || (!self.done && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body yielding the given chunks.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    /// What the limited body hands on: the data bytes, then the status
    /// code it ended with, if any.
    fn run(chunks: Vec<Vec<u8>>, max: usize) -> (Vec<u8>, Option<tonic::Code>) {
        let body = Chunks(chunks.into_iter().map(Bytes::from).collect());
        let refusal = Refusal {
            kind: Some(EventKind::Payment),
            ready: Ready::default(),
        };
        let mut limited = FrameLimit::new(body, max, refusal);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut data = Vec::new();
        loop {
            match Pin::new(&mut limited).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => {
                    data.extend_from_slice(&f.into_data().expect("data"));
                }
                Poll::Ready(Some(Err(s))) => {
                    assert!(
                        matches!(
                            Pin::new(&mut limited).poll_frame(&mut cx),
                            Poll::Ready(None)
                        ),
                        "nothing after the refusal"
                    );
                    return (data, Some(s.code()));
                }
                Poll::Ready(None) => return (data, None),
                Poll::Pending => unreachable!("the test body is always ready"),
            }
        }
    }

    #[test]
    fn messages_within_the_limit_pass_unchanged_however_they_are_cut() {
        let stream: Vec<u8> = [message(0), message(10), message(100), message(3)].concat();
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            let (data, end) = run(vec![a.to_vec(), b.to_vec()], 100);
            assert_eq!(data, stream, "cut at {cut}");
            assert_eq!(end, None);
        }
        // One byte at a time.
        let (data, end) = run(stream.iter().map(|b| vec![*b]).collect(), 100);
        assert_eq!((data, end), (stream, None));
    }

    #[test]
    fn a_message_over_the_limit_ends_the_body_where_it_begins() {
        let good = [message(10), message(100)].concat();
        let big = message(101);
        let stream = [good.clone(), big, message(1)].concat();
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            let (data, end) = run(vec![a.to_vec(), b.to_vec()], 100);
            // Every byte before the oversized message's prefix is handed on
            // (a prefix cut in two may have had its first part handed on);
            // nothing of its body.
            assert!(
                data.len() >= good.len() && data.len() < good.len() + PREFIX,
                "cut at {cut}: {} bytes handed on",
                data.len()
            );
            assert_eq!(data[..good.len()], good[..], "cut at {cut}");
            assert_eq!(end, Some(tonic::Code::ResourceExhausted), "cut at {cut}");
        }
    }

    #[test]
    fn an_announced_length_is_refused_before_its_body_arrives() {
        // Only the prefix of a 4 GiB message: refused at once.
        let prefix = vec![0, 0xff, 0xff, 0xff, 0xff];
        let (data, end) = run(vec![prefix], 1024);
        assert!(data.is_empty());
        assert_eq!(end, Some(tonic::Code::ResourceExhausted));
    }

    #[test]
    fn methods_are_counted_by_kind() {
        assert_eq!(
            kind_of("/riskstream.v1.RiskScorer/ScoreStream"),
            Some(EventKind::Payment)
        );
        assert_eq!(
            kind_of("/riskstream.v1.RiskScorer/Score"),
            Some(EventKind::Payment)
        );
        assert_eq!(
            kind_of("/riskstream.v1.RiskScorer/RegisterPaymentMethod"),
            Some(EventKind::Register)
        );
        assert_eq!(
            kind_of("/riskstream.v1.RiskScorer/ReportFeedback"),
            Some(EventKind::Feedback)
        );
        assert_eq!(
            kind_of("/riskstream.v1.RiskScorer/GetPaymentMethod"),
            Some(EventKind::Get)
        );
        assert_eq!(kind_of("/riskstream.v1.RiskScorer/Other"), None);
    }
}
