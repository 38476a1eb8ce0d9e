//! Client connections: at most `--max-connections` open on each gRPC
//! address (a connection past it is closed as soon as it is accepted,
//! before any byte is read, and counted in
//! `riskstream_connections_refused_total`), each counted in
//! `riskstream_open_connections` while it is open, with Nagle's algorithm
//! off and TCP keepalive on. A connection holds its place through a
//! [`Counted`] wrapper of its socket, given back when the socket is dropped;
//! with TLS the place is taken before the handshake.

use crate::metrics::{GaugeGuard, Listener, Metrics};
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpIncoming};

/// The connections of one gRPC address.
#[derive(Debug, Clone)]
pub struct ConnLimit {
    places: Arc<Semaphore>,
    max: usize,
    listener: Listener,
    metrics: Metrics,
}

impl ConnLimit {
    /// At most `max` connections open at once on `listener`'s address.
    pub fn new(max: usize, listener: Listener, metrics: Metrics) -> ConnLimit {
        ConnLimit {
            places: Arc::new(Semaphore::new(max)),
            max,
            listener,
            metrics,
        }
    }

    /// `io`, holding a place while it is open; `None` (and `io` closed)
    /// when every place is taken.
    pub fn admit<IO>(&self, io: IO) -> Option<Counted<IO>> {
        match self.places.clone().try_acquire_owned() {
            Ok(place) => Some(Counted {
                io,
                _place: place,
                _open: self.metrics.connection_opened(self.listener),
            }),
            Err(_) => {
                self.metrics.connection_refused(self.listener);
                tracing::debug!(
                    max = self.max,
                    "connection refused: --max-connections are open"
                );
                None
            }
        }
    }
}

/// TCP keepalive of accepted connections: probes start after `idle` of
/// silence and go every `interval`; after `retries` unanswered ones the
/// kernel closes the connection.
#[derive(Debug, Clone, Copy)]
pub struct TcpKeepalive {
    /// Silence before the first probe.
    pub idle: Duration,
    /// Between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is closed.
    pub retries: u32,
}

/// The connections `listener` accepts, with Nagle's algorithm off (an
/// outcome is a small write that must leave at once) and TCP keepalive,
/// each admitted by `limit` (or closed at once). After a failed accept
/// (out of descriptors: `EMFILE`) the next waits [`ACCEPT_BACKOFF`], so
/// that the accept loop never spins; a warning says so at most once a
/// second.
pub fn accepted(listener: TcpListener, keepalive: TcpKeepalive, limit: ConnLimit) -> Accepted {
    Accepted {
        incoming: TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(keepalive.idle))
            .with_keepalive_interval(Some(keepalive.interval))
            .with_keepalive_retries(Some(keepalive.retries)),
        limit,
        backoff: None,
        warned: None,
    }
}

/// How long accepting pauses after it failed.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The stream of [`accepted`] connections.
#[derive(Debug)]
pub struct Accepted {
    incoming: TcpIncoming,
    limit: ConnLimit,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    warned: Option<tokio::time::Instant>,
}

impl Stream for Accepted {
    type Item = std::io::Result<Counted<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(backoff) = &mut this.backoff {
            std::task::ready!(backoff.as_mut().poll(cx));
            this.backoff = None;
        }
        loop {
            match std::task::ready!(Pin::new(&mut this.incoming).poll_next(cx)) {
                Some(Ok(tcp)) => {
                    if let Some(admitted) = this.limit.admit(tcp) {
                        return Poll::Ready(Some(Ok(admitted)));
                    }
                }
                Some(Err(e)) => {
                    let now = tokio::time::Instant::now();
                    if this
                        .warned
                        .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
                    {
                        this.warned = Some(now);
                        tracing::warn!(error = %e, "accept failed; accepting again in 10 ms");
                    }
                    this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                    return Poll::Ready(Some(Err(e)));
                }
                None => return Poll::Ready(None),
            }
        }
    }
}

/// A connection's socket (or TLS stream), holding its place among
/// `--max-connections` and its count in `riskstream_open_connections`
/// until it is dropped.
#[derive(Debug)]
pub struct Counted<IO> {
    io: IO,
    _place: OwnedSemaphorePermit,
    _open: GaugeGuard,
}

impl<IO: Connected> Connected for Counted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_and_places_come_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let keepalive = TcpKeepalive {
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(5),
            retries: 3,
        };
        let mut incoming = accepted(
            listener,
            keepalive,
            ConnLimit::new(2, Listener::Scoring, Metrics::noop()),
        );
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.expect("connect"));
            served.push(incoming.next().await.expect("accepted").expect("ok"));
        }
        // The third is accepted by the kernel and closed by the server.
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 1];
        let pending = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await;
        assert!(pending.is_err(), "the third connection is not handed on");
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("closed, not left hanging");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // The admitted ones work, through the wrapper.
        clients[0].write_all(b"x").await.expect("write");
        served[0].read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"x");
        served[0].write_all(b"y").await.expect("write");
        clients[0].read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"y");
        // One closes: its place is taken by the next.
        drop(served.remove(0));
        let _fourth = TcpStream::connect(addr).await.expect("connect");
        let next = tokio::time::timeout(Duration::from_secs(5), incoming.next())
            .await
            .expect("a place came back");
        assert!(next.is_some_and(|c| c.is_ok()));
    }
}
