//! Limits on request bodies, enforced on the gRPC framing as the bytes
//! arrive, before tonic buffers anything: each message's 5-byte prefix
//! (compression flag, big-endian length) is read as the bytes pass.
//!
//! - **Size** (`--max-message-bytes` for `RiskScorer`, 4 MiB for the other
//!   services, tonic's own default): a message announcing more is refused
//!   where its prefix arrives with `RESOURCE_EXHAUSTED` (its body is never
//!   buffered) and counted as an invalid event of its kind. The messages
//!   before it in the same request body are handed on first, so a stream
//!   answers them and then ends with that status. tonic's own check of the
//!   prefix (`max_decoding_message_size`, set to the same limit) stays
//!   behind this one; it would answer `OUT_OF_RANGE`.
//! - **Time** (`--message-timeout`): a unary call's request body (its
//!   message and its end) must arrive whole within the timeout of the
//!   call's start; on a stream each message must arrive whole within the
//!   timeout of its first byte (between messages a stream may wait, see
//!   `--stream-idle-timeout`). Past it the body ends with
//!   `DEADLINE_EXCEEDED`, counted in `riskstream_calls_timed_out_total
//!   {reason="message"}`: a client that stalls mid-message holds nothing
//!   for long.
//! - **Large receive buffers** ([`receiving_budget`]): tonic receives each
//!   call's messages into one buffer, which grows to hold the largest
//!   message (by doubling) and keeps that size until the call ends. A
//!   message over 8 KiB therefore holds twice its announced length against
//!   a budget the whole server shares, from its prefix until its call ends
//!   (smaller ones grow a buffer to 16 KiB at most, part of what any
//!   stream may cost); one that would go past the budget is
//!   refused where it begins with `RESOURCE_EXHAUSTED` and counted as shed.
//!   However many streams send large or half-sent messages, their buffers
//!   never hold more than the budget.

use super::service::Ready;
use super::status::to_status;
use crate::error::ServiceError;
use crate::metrics::{EventKind, Metrics, RISK_SCORER, RPCS, Timeout};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::Status;

/// Length of the prefix of each gRPC message: a compression flag and a
/// big-endian `u32` length.
const PREFIX: usize = 5;

/// The largest request message of the services other than `RiskScorer`
/// (RiskAdmin, health, reflection): tonic's default decoding limit.
pub const OTHER_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The least budget of bytes of messages being received.
const MIN_RECEIVING_BUDGET: usize = 64 * 1024 * 1024;

/// Messages up to this long take no budget: the buffer they grow stays
/// within 16 KiB.
const SMALL_MESSAGE: usize = 8 * 1024;

/// The budget of large receive buffers, for a server whose largest message
/// is `max_message_bytes`: 64 MiB, or room for four of the largest messages
/// (of every service) if that is more.
pub fn receiving_budget(max_message_bytes: usize) -> usize {
    MIN_RECEIVING_BUDGET.max(
        max_message_bytes
            .max(OTHER_MAX_MESSAGE_BYTES)
            .saturating_mul(8),
    )
}

/// The budget is counted in KiB (semaphore permits are `u32`).
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// The body limits of one server, shared by its calls.
#[derive(Debug)]
pub struct BodyLimits {
    /// Largest `RiskScorer` request message.
    pub max_message_bytes: usize,
    /// How long a message may take to arrive (see the module docs).
    pub message_timeout: Duration,
    receiving: Arc<Semaphore>,
    budget: usize,
    metrics: Metrics,
    ready: Ready,
}

impl BodyLimits {
    /// Limits with [`receiving_budget`] for `max_message_bytes`; refusals
    /// and timeouts are counted in `metrics`, invalid events in the metrics
    /// of the engine `ready` holds.
    pub fn new(
        max_message_bytes: usize,
        message_timeout: Duration,
        metrics: Metrics,
        ready: Ready,
    ) -> BodyLimits {
        let budget = receiving_budget(max_message_bytes);
        BodyLimits {
            max_message_bytes,
            message_timeout,
            receiving: Arc::new(Semaphore::new(kib(budget) as usize)),
            budget,
            metrics,
            ready,
        }
    }
}

/// The event kind of a call of `RPCS[rpc]`, for the metrics.
fn kind_of(rpc: usize) -> Option<EventKind> {
    let rpc = RPCS.get(rpc)?;
    if rpc.service != RISK_SCORER {
        return None;
    }
    match rpc.method {
        "Score" | "ScoreStream" => Some(EventKind::Payment),
        "RegisterPaymentMethod" => Some(EventKind::Register),
        "ReportFeedback" => Some(EventKind::Feedback),
        "GetPaymentMethod" => Some(EventKind::Get),
        _ => None,
    }
}

/// A request body that ends with `RESOURCE_EXHAUSTED` where a message
/// longer than the limit (or than the budget of large buffers allows) begins,
/// after handing on every byte before it, and with `DEADLINE_EXCEEDED`
/// when a message does not arrive whole in time.
#[derive(Debug)]
pub struct FrameLimit<B> {
    inner: B,
    limits: Arc<BodyLimits>,
    max: usize,
    /// The client sends a stream of messages (else one, then the end).
    streaming: bool,
    kind: Option<EventKind>,
    /// The prefix being read, and how much of it has arrived.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message's body still to pass.
    body_left: usize,
    /// When what is being received must have arrived.
    due: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// This call's share of the receiving budget (for its largest message).
    held: Option<OwnedSemaphorePermit>,
    /// The refusal to answer once the bytes before it are handed on.
    pending: Option<Status>,
    /// Refused: nothing more is read.
    done: bool,
}

/// Why a message is refused where it begins.
enum Refused {
    TooLarge(usize),
    Receiving,
}

impl<B> FrameLimit<B> {
    /// The body of a call of `RPCS[rpc]` that arrived at `started`,
    /// within `limits`.
    pub fn new(inner: B, limits: Arc<BodyLimits>, rpc: usize, started: Instant) -> Self {
        let (max, streaming) = match RPCS.get(rpc) {
            Some(r) if r.service != RISK_SCORER && r.service != "unknown" => {
                (OTHER_MAX_MESSAGE_BYTES, r.kind.client_streams())
            }
            r => (
                limits.max_message_bytes,
                r.is_some_and(|r| r.kind.client_streams()),
            ),
        };
        FrameLimit {
            inner,
            due: (!streaming).then(|| started + limits.message_timeout),
            limits,
            max,
            streaming,
            kind: kind_of(rpc),
            prefix: [0; PREFIX],
            prefix_len: 0,
            body_left: 0,
            sleep: None,
            held: None,
            pending: None,
            done: false,
        }
    }

    /// A message ended: on a stream, the next may take its time.
    fn message_done(&mut self) {
        if self.streaming {
            self.due = None;
        }
    }

    /// Takes the budget a message of `len` bytes needs: nothing when it
    /// fits tonic's default receive buffer; else twice its length (the
    /// buffer grows by doubling), kept until the call ends (the buffer
    /// keeps its size). `false` when the budget has not that much left.
    fn reserve(&mut self, len: usize) -> bool {
        if len <= SMALL_MESSAGE {
            return true;
        }
        let needed = kib(len.saturating_mul(2));
        let held = self.held.as_ref().map_or(0, |p| p.num_permits());
        if needed as usize <= held {
            return true;
        }
        let more = needed - held as u32;
        match self.limits.receiving.clone().try_acquire_many_owned(more) {
            Ok(permit) => {
                match &mut self.held {
                    Some(h) => h.merge(permit),
                    None => self.held = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Follows the framing through `data`: where (an offset into `data`) a
    /// refused message begins, and why.
    fn scan(&mut self, data: &[u8]) -> Option<(usize, Refused)> {
        let mut i = 0;
        while i < data.len() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len() - i);
                self.body_left -= n;
                i += n;
                if self.body_left == 0 {
                    self.message_done();
                }
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
                    return Some((start, Refused::TooLarge(len)));
                }
                if !self.reserve(len) {
                    return Some((start, Refused::Receiving));
                }
                self.body_left = len;
                if len == 0 {
                    self.message_done();
                }
            }
        }
        // A message is under way at the end of this chunk: on a stream,
        // its time starts.
        if self.streaming && self.due.is_none() && (self.prefix_len > 0 || self.body_left > 0) {
            self.due = Some(Instant::now() + self.limits.message_timeout);
        }
        None
    }

    fn refusal(&self, why: Refused) -> Status {
        match why {
            Refused::TooLarge(bytes) => {
                if let (Some(kind), Some(engine)) = (self.kind, self.limits.ready.get()) {
                    engine.metrics().event(kind);
                    engine.metrics().invalid(kind);
                }
                to_status(ServiceError::TooLarge {
                    bytes,
                    max: self.max,
                })
            }
            Refused::Receiving => {
                self.limits.metrics.shed();
                to_status(ServiceError::Receiving {
                    budget: self.limits.budget,
                })
            }
        }
    }

    /// Whether what is being received is late (and arms the timer if not).
    fn late(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(due) = self.due else {
            return false;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.deadline() != due {
            sleep.as_mut().reset(due);
        }
        sleep.as_mut().poll(cx).is_ready()
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() && this.late(cx) {
            this.done = true;
            this.held = None;
            this.limits.metrics.timed_out(Timeout::Message);
            return Poll::Ready(Some(Err(to_status(ServiceError::MessageTimeout {
                after: this.limits.message_timeout,
            }))));
        }
        let frame = match ready!(polled) {
            Some(Ok(frame)) => frame,
            None => {
                this.due = None;
                this.held = None;
                return Poll::Ready(None);
            }
            other => return Poll::Ready(other),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(other) => return Poll::Ready(Some(Ok(other))),
        };
        match this.scan(&data) {
            None => Poll::Ready(Some(Ok(Frame::data(data)))),
            Some((at, why)) => {
                this.done = true;
                this.held = None;
                let status = this.refusal(why);
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
    use crate::metrics::rpc_index;
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

    fn stream() -> usize {
        rpc_index("/riskstream.v1.RiskScorer/ScoreStream")
    }

    fn limits(max: usize, timeout: Duration) -> Arc<BodyLimits> {
        Arc::new(BodyLimits::new(
            max,
            timeout,
            Metrics::noop(),
            Ready::default(),
        ))
    }

    /// What the limited body hands on: the data bytes, then the status
    /// code it ended with, if any.
    fn run(chunks: Vec<Vec<u8>>, max: usize) -> (Vec<u8>, Option<tonic::Code>) {
        let body = Chunks(chunks.into_iter().map(Bytes::from).collect());
        let limits = limits(max, Duration::from_secs(10));
        let mut limited = FrameLimit::new(body, limits, stream(), Instant::now());
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

    /// A body that yields `chunks`, then waits forever (a client that
    /// stalls), and whose clone tells whether it is still waiting.
    struct Stalling(VecDeque<Bytes>);

    impl Body for Stalling {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            match self.0.pop_front() {
                Some(c) => Poll::Ready(Some(Ok(Frame::data(c)))),
                None => Poll::Pending,
            }
        }
    }

    /// Reads `body` until it ends or errs; the bytes handed on and the
    /// code it ended with.
    async fn drain<B: Body<Data = Bytes, Error = Status> + Unpin>(
        mut body: B,
    ) -> (Vec<u8>, Option<tonic::Code>) {
        let mut data = Vec::new();
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(f)) => data.extend_from_slice(&f.into_data().expect("data")),
                Some(Err(s)) => return (data, Some(s.code())),
                None => return (data, None),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_may_wait_between_messages_but_not_inside_one() {
        let limits = limits(1024, Duration::from_secs(10));
        // Whole messages, then silence: the stream waits, untimed.
        let whole = Stalling([message(10), message(20)].map(Bytes::from).into());
        let mut body = FrameLimit::new(whole, limits.clone(), stream(), Instant::now());
        let waited = tokio::time::timeout(Duration::from_secs(3600), drain(&mut body)).await;
        assert!(waited.is_err(), "an idle stream is not timed out here");
        assert!(body.held.is_none(), "no budget held between messages");
        // Half a message, then silence: refused once the timeout passes.
        let half = message(100)[..50].to_vec();
        let body = FrameLimit::new(
            Stalling([Bytes::from(half)].into()),
            limits.clone(),
            stream(),
            Instant::now(),
        );
        let t0 = Instant::now();
        let (data, end) = drain(body).await;
        assert_eq!(data.len(), 50);
        assert_eq!(end, Some(tonic::Code::DeadlineExceeded));
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        assert_eq!(
            limits.receiving.available_permits(),
            kib(limits.budget) as usize,
            "the half-sent message's budget is given back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_unary_body_must_end_within_the_timeout_of_the_call() {
        let limits = limits(1024, Duration::from_secs(10));
        let started = Instant::now();
        tokio::time::advance(Duration::from_secs(4)).await;
        // The whole message, but never the end of the body.
        let body = FrameLimit::new(
            Stalling([Bytes::from(message(10))].into()),
            limits,
            rpc_index("/riskstream.v1.RiskScorer/Score"),
            started,
        );
        let (data, end) = drain(body).await;
        assert_eq!(data.len(), 15);
        assert_eq!(end, Some(tonic::Code::DeadlineExceeded));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn half_sent_messages_hold_at_most_the_budget() {
        let limits = limits(256 * 1024, Duration::from_secs(10));
        let each = 256 * 1024;
        let fit = limits.budget / (2 * each);
        let half = || Bytes::from(message(each)[..1000].to_vec());
        let mut open = Vec::new();
        for _ in 0..fit {
            let mut body = FrameLimit::new(
                Stalling([half()].into()),
                limits.clone(),
                stream(),
                Instant::now(),
            );
            let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            assert!(matches!(first, Some(Ok(_))), "within the budget");
            open.push(body);
        }
        // One more does not fit: refused where it begins.
        let body = FrameLimit::new(
            Stalling(
                [Bytes::from(
                    [message(3), message(each)[..1000].to_vec()].concat(),
                )]
                .into(),
            ),
            limits.clone(),
            stream(),
            Instant::now(),
        );
        let (data, end) = tokio::time::timeout(Duration::from_secs(5), drain(body))
            .await
            .expect("refused at once");
        assert_eq!(data, message(3), "the whole message before it is handed on");
        assert_eq!(end, Some(tonic::Code::ResourceExhausted));
        // A client that goes away gives its share back.
        open.pop();
        let mut body = FrameLimit::new(
            Stalling([half()].into()),
            limits.clone(),
            stream(),
            Instant::now(),
        );
        let again = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(matches!(again, Some(Ok(_))));
    }

    #[test]
    fn the_budget_holds_four_of_the_largest_messages_and_at_least_64_mib() {
        assert_eq!(receiving_budget(256 * 1024), 64 * 1024 * 1024);
        assert_eq!(receiving_budget(100 << 20), 800 << 20);
    }

    #[tokio::test]
    async fn a_large_message_holds_its_buffer_until_the_call_ends() {
        let limits = limits(256 * 1024, Duration::from_secs(10));
        let all = kib(limits.budget) as usize;
        // Small messages take nothing.
        let mut small = FrameLimit::new(
            Stalling([message(100), message(8 * 1024)].map(Bytes::from).into()),
            limits.clone(),
            stream(),
            Instant::now(),
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), drain(&mut small)).await;
        assert_eq!(limits.receiving.available_permits(), all);
        // A whole large message: twice its length, kept after it ended
        // (tonic's buffer keeps its size), and not more for a smaller one.
        let mut large = FrameLimit::new(
            Stalling(
                [message(100 * 1024), message(50 * 1024)]
                    .map(Bytes::from)
                    .into(),
            ),
            limits.clone(),
            stream(),
            Instant::now(),
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), drain(&mut large)).await;
        assert_eq!(limits.receiving.available_permits(), all - 200);
        drop(large);
        assert_eq!(limits.receiving.available_permits(), all);
    }

    #[test]
    fn methods_are_counted_by_kind() {
        let kind = |path| kind_of(rpc_index(path));
        assert_eq!(
            kind("/riskstream.v1.RiskScorer/ScoreStream"),
            Some(EventKind::Payment)
        );
        assert_eq!(
            kind("/riskstream.v1.RiskScorer/Score"),
            Some(EventKind::Payment)
        );
        assert_eq!(
            kind("/riskstream.v1.RiskScorer/RegisterPaymentMethod"),
            Some(EventKind::Register)
        );
        assert_eq!(
            kind("/riskstream.v1.RiskScorer/ReportFeedback"),
            Some(EventKind::Feedback)
        );
        assert_eq!(
            kind("/riskstream.v1.RiskScorer/GetPaymentMethod"),
            Some(EventKind::Get)
        );
        assert_eq!(kind("/riskstream.v1.RiskScorer/Other"), None);
        assert_eq!(kind("/riskstream.v1.RiskAdmin/AddListItems"), None);
    }
}
