//! The replay loop: one dispatcher walks the requests in file order, waits
//! for each one's send time, and hands payments to stream or unary workers;
//! workers check every answer against what they sent and tally it.
//! Registrations and feedback go as unary calls, ordered per [`Order`].

use super::client::{self, Client, Method};
use super::progress::Counters;
use super::report::{Ending, Stats, code_name};
use super::requests::{Kind, Request};
use super::{Mode, Order, Pacing, ReplayConfig, ReplayError};
use crate::view;
use bytes::Bytes;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// How long an interrupted run waits for the answers still due.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One payment handed to a worker.
struct Job {
    index: usize,
    /// Send time for closed-loop pacing, scheduled time otherwise.
    start: Instant,
    _permit: Option<OwnedSemaphorePermit>,
}

/// What every worker shares.
struct Ctx {
    requests: Arc<Vec<Request>>,
    measure_from: Instant,
    counters: Arc<Counters>,
    /// Payments sent and not yet answered.
    outstanding: AtomicUsize,
    drained: Notify,
    outcomes: Option<std_mpsc::Sender<Vec<u8>>>,
}

impl Ctx {
    fn sent(&self) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    fn answered(&self, error: bool) {
        self.counters.answered(error);
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }

    /// Resolves once every payment sent so far is answered.
    async fn all_answered(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Checks the answer `raw` to `job` and tallies it.
    fn check(
        &self,
        stream: usize,
        job: &Job,
        raw: &[u8],
        stats: &mut Stats,
    ) -> Result<(), ReplayError> {
        let sent = &self.requests[job.index];
        let o = view::outcome(raw).map_err(|source| ReplayError::Malformed {
            stream,
            payment_id: sent.payment_id.to_string(),
            source,
        })?;
        if o.payment_id != sent.payment_id.as_bytes() {
            return Err(ReplayError::Mismatch {
                stream,
                expected: sent.payment_id.to_string(),
                got: String::from_utf8_lossy(o.payment_id).into_owned(),
            });
        }
        let now = Instant::now();
        let latency = now.saturating_duration_since(job.start);
        stats.outcome(job.start >= self.measure_from, now, latency, &o);
        if let Some(out) = &self.outcomes {
            // The writer only goes away after every worker has finished.
            let _ = out.send(super::outcomes::line(stream, &o, latency));
        }
        self.answered(!o.error_code.is_empty());
        Ok(())
    }

    /// Counts a payment whose call failed.
    fn failed(&self, job: &Job, status: &tonic::Status, stats: &mut Stats) {
        let now = Instant::now();
        stats.failure(
            "payment",
            job.start >= self.measure_from,
            now,
            now.saturating_duration_since(job.start),
            code_name(status.code()),
        );
        self.answered(true);
    }
}

/// Resolves when `stop` turns true (never, if its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Pacing {
    /// When request `i`, recorded `offset_ms` after the first, is due;
    /// `None` under closed-loop pacing.
    fn due(&self, t0: Instant, i: usize, offset_ms: i64) -> Option<Instant> {
        match *self {
            Pacing::Closed => None,
            Pacing::Rate(r) => Some(t0 + Duration::from_secs_f64(i as f64 / r)),
            Pacing::Speed(x) => {
                Some(t0 + Duration::from_secs_f64(offset_ms.max(0) as f64 / 1000.0 / x))
            }
        }
    }
}

/// Least time between two releases of the pacer. Each release wakes the
/// dispatcher, which on one core means two context switches: at high rates
/// releasing every request alone would cost the load generator more than
/// sending it. A request released up to this late has the delay charged to
/// its latency (measured from its send time), never hidden.
const PACER_TICK: Duration = Duration::from_micros(100);

/// Sleeps until each of `dues` (ascending), at most one wake-up per
/// [`PACER_TICK`], and sends, after each wake-up, how many requests are
/// due; returns when all are or the receiver is gone.
fn pace(dues: &[Instant], tx: &mpsc::UnboundedSender<usize>) {
    let mut next = 0;
    let mut woke = Instant::now();
    while next < dues.len() {
        let now = Instant::now();
        let wake = dues[next].max(woke + PACER_TICK);
        if wake > now {
            std::thread::sleep(wake - now);
        }
        woke = Instant::now();
        while next < dues.len() && dues[next] <= woke {
            next += 1;
        }
        if tx.send(next).is_err() {
            return;
        }
    }
}

/// The stream a payment goes to: all payments of one payment method share a
/// stream, so their order is kept; payments without one go round-robin.
fn stream_for(req: &Request, streams: usize, next: &mut usize) -> usize {
    if req.method_id.is_empty() {
        *next = (*next + 1) % streams;
        return *next;
    }
    let h = foldhash::fast::FixedState::with_seed(0).hash_one(&req.method_id);
    (h % streams as u64) as usize
}

/// Carries payments over one `ScoreStream`, checking each outcome against
/// the event it answers (outcomes come back in the order sent).
async fn stream_worker(
    stream: usize,
    mut client: Client,
    jobs: mpsc::Receiver<Job>,
    ctx: Arc<Ctx>,
    mut give_up: watch::Receiver<bool>,
) -> Result<Stats, ReplayError> {
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Job>();
    let requests = ctx.requests.clone();
    let outbound = ReceiverStream::new(jobs).map(move |job: Job| {
        let body: Bytes = requests[job.index].body.clone();
        // Recorded before the event can be sent, so before its outcome.
        let _ = sent_tx.send(job);
        body
    });
    let fail = |status| ReplayError::Stream { stream, status };
    client
        .ready()
        .await
        .map_err(|e| fail(tonic::Status::unavailable(e.to_string())))?;
    let mut inbound = client
        .streaming(
            tonic::Request::new(outbound),
            Method::ScoreStream.path(),
            client::BytesCodec,
        )
        .await
        .map_err(fail)?
        .into_inner();
    let mut stats = Stats::default();
    loop {
        let raw = tokio::select! {
            m = inbound.message() => match m.map_err(fail)? {
                Some(raw) => raw,
                None => break,
            },
            _ = stopped(&mut give_up) => return Ok(stats),
        };
        let Some(job) = sent_rx.recv().await else {
            return Err(ReplayError::Unsolicited {
                stream,
                got: view::outcome(&raw)
                    .map(|o| String::from_utf8_lossy(o.payment_id).into_owned())
                    .unwrap_or_default(),
            });
        };
        ctx.check(stream, &job, &raw, &mut stats)?;
    }
    if let Ok(job) = sent_rx.try_recv() {
        return Err(fail(tonic::Status::data_loss(format!(
            "the server ended the stream without answering payment_id {:?}",
            ctx.requests[job.index].payment_id
        ))));
    }
    Ok(stats)
}

/// One unary caller: takes payments from the shared queue, one call at a time.
async fn unary_worker(
    caller: usize,
    mut client: Client,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    ctx: Arc<Ctx>,
    mut give_up: watch::Receiver<bool>,
) -> Result<Stats, ReplayError> {
    let mut stats = Stats::default();
    loop {
        let job = jobs.lock().await.recv().await;
        let Some(job) = job else {
            return Ok(stats);
        };
        let body = ctx.requests[job.index].body.clone();
        let answer = tokio::select! {
            a = client::unary(&mut client, Method::Score, body) => a,
            _ = stopped(&mut give_up) => return Ok(stats),
        };
        match answer {
            Ok(raw) => ctx.check(caller, &job, &raw, &mut stats)?,
            Err(status) => ctx.failed(&job, &status, &mut stats),
        }
    }
}

/// A registration or feedback, as one unary call.
async fn side_call(mut client: Client, ctx: &Ctx, index: usize, start: Instant) -> Stats {
    let req = &ctx.requests[index];
    let method = if req.kind == Kind::Register {
        Method::Register
    } else {
        Method::Feedback
    };
    let result = client::unary(&mut client, method, req.body.clone()).await;
    let now = Instant::now();
    let measured = start >= ctx.measure_from;
    let mut stats = Stats::default();
    match &result {
        Ok(_) => {
            stats.answer(req.kind.name(), measured, now);
        }
        Err(status) => stats.failure(
            req.kind.name(),
            measured,
            now,
            now - start,
            code_name(status.code()),
        ),
    }
    ctx.counters.answered(result.is_err());
    stats
}

/// Where the dispatcher sends payments.
enum Lanes {
    Streams {
        queues: Vec<mpsc::Sender<Job>>,
        slots: Vec<Arc<Semaphore>>,
        next: usize,
    },
    Unary(mpsc::Sender<Job>),
}

/// Replays `requests` against the connections `clients` as `cfg` says, until
/// the file (or `cfg.duration`) ends or `stop` turns true. Outcome lines go
/// to `outcomes` when given.
pub async fn run(
    cfg: &ReplayConfig,
    requests: Arc<Vec<Request>>,
    clients: Vec<Client>,
    counters: Arc<Counters>,
    outcomes: Option<std_mpsc::Sender<Vec<u8>>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(Stats, Ending), ReplayError> {
    let t0 = Instant::now();
    let measure_from = t0 + cfg.warmup;
    let end = cfg.duration.map(|d| measure_from + d);
    let ctx = Arc::new(Ctx {
        requests: requests.clone(),
        measure_from,
        counters,
        outstanding: AtomicUsize::new(0),
        drained: Notify::new(),
        outcomes,
    });
    let client = |k: usize| clients[k % clients.len()].clone();
    // Turns true when an interrupted run stops waiting for answers.
    let (give_up_tx, give_up) = watch::channel(false);

    let mut workers: JoinSet<Result<Stats, ReplayError>> = JoinSet::new();
    let mut lanes = match cfg.mode {
        Mode::Stream => {
            let mut queues = Vec::with_capacity(cfg.concurrency);
            let mut slots = Vec::with_capacity(cfg.concurrency);
            for k in 0..cfg.concurrency {
                let (tx, rx) = mpsc::channel(cfg.in_flight);
                queues.push(tx);
                slots.push(Arc::new(Semaphore::new(cfg.in_flight)));
                workers.spawn(stream_worker(
                    k,
                    client(k),
                    rx,
                    ctx.clone(),
                    give_up.clone(),
                ));
            }
            Lanes::Streams {
                queues,
                slots,
                next: 0,
            }
        }
        Mode::Unary => {
            let (tx, rx) = mpsc::channel(cfg.concurrency);
            let rx = Arc::new(Mutex::new(rx));
            for k in 0..cfg.concurrency {
                workers.spawn(unary_worker(
                    k,
                    client(k),
                    rx.clone(),
                    ctx.clone(),
                    give_up.clone(),
                ));
            }
            Lanes::Unary(tx)
        }
    };

    let mut side: JoinSet<Stats> = JoinSet::new();
    // Relaxed side calls in flight at once.
    let side_slots = Arc::new(Semaphore::new(cfg.in_flight));
    let mut side_stats = Stats::default();
    let mut registering: HashMap<Box<str>, watch::Receiver<bool>> = HashMap::new();
    let first_at = requests.first().map_or(0, |r| r.at_ms);
    let mut interrupted = false;
    // Open loop: each request's send time, and the releases of a thread of
    // its own that sleeps until them (the async timer's resolution is a
    // millisecond, the OS's some microseconds).
    let mut pacer = match cfg.pacing {
        Pacing::Closed => None,
        pacing => {
            let (tx, rx) = mpsc::unbounded_channel();
            let dues: Arc<[Instant]> = requests
                .iter()
                .enumerate()
                .map_while(|(i, r)| pacing.due(t0, i, r.at_ms - first_at))
                .collect();
            let times = dues.clone();
            std::thread::Builder::new()
                .name("replay-pacer".into())
                .spawn(move || pace(&times, &tx))
                .map_err(ReplayError::Pacer)?;
            Some((dues, rx))
        }
    };
    // Requests before this index may be sent.
    let mut released = 0usize;

    'requests: for (i, req) in requests.iter().enumerate() {
        if *stop.borrow() {
            interrupted = true;
            break;
        }
        let due = pacer.as_ref().map(|(dues, _)| dues[i]);
        if let (Some(due), Some((_, ticks))) = (due, pacer.as_mut()) {
            if end.is_some_and(|e| due >= e) {
                break;
            }
            // Released by the pacer thread at its send time (latency counts
            // from then, so any lateness is charged, never hidden).
            while released <= i {
                tokio::select! {
                    t = ticks.recv() => match t {
                        Some(upto) => released = upto,
                        None => break 'requests,
                    },
                    _ = stopped(&mut stop) => { interrupted = true; break 'requests; }
                }
            }
        } else if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let start = due.unwrap_or_else(Instant::now);
        match (req.kind, cfg.order) {
            (Kind::Payment, _) => {
                if let Some(mut done) = registering.remove(&req.method_id) {
                    tokio::select! {
                        _ = done.wait_for(|d| *d) => {}
                        _ = stopped(&mut stop) => { interrupted = true; break; }
                    }
                }
                let delivered = match &mut lanes {
                    Lanes::Streams {
                        queues,
                        slots,
                        next,
                    } => {
                        let k = stream_for(req, queues.len(), next);
                        let permit = tokio::select! {
                            p = slots[k].clone().acquire_owned() => p.ok(),
                            _ = stopped(&mut stop) => { interrupted = true; break 'requests; }
                        };
                        ctx.sent();
                        queues[k]
                            .send(Job {
                                index: i,
                                start,
                                _permit: permit,
                            })
                            .await
                            .is_ok()
                    }
                    Lanes::Unary(queue) => {
                        ctx.sent();
                        let job = Job {
                            index: i,
                            start,
                            _permit: None,
                        };
                        tokio::select! {
                            r = queue.send(job) => r.is_ok(),
                            _ = stopped(&mut stop) => { interrupted = true; break 'requests; }
                        }
                    }
                };
                if !delivered {
                    // A worker stopped with an error; it is reported below.
                    break;
                }
            }
            (_, Order::Strict) => {
                tokio::select! {
                    _ = ctx.all_answered() => {}
                    _ = stopped(&mut stop) => { interrupted = true; break; }
                }
                let stats = side_call(client(i), &ctx, i, start).await;
                side_stats.merge(&stats);
            }
            (kind, Order::Relaxed) => {
                let permit = tokio::select! {
                    p = side_slots.clone().acquire_owned() => p.ok(),
                    _ = stopped(&mut stop) => { interrupted = true; break; }
                };
                let (done_tx, done_rx) = watch::channel(false);
                if kind == Kind::Register {
                    registering.insert(req.method_id.clone(), done_rx);
                }
                let (ctx, client) = (ctx.clone(), client(i));
                side.spawn(async move {
                    let stats = side_call(client, &ctx, i, start).await;
                    let _ = done_tx.send(true);
                    drop(permit);
                    stats
                });
                // Reap finished calls as we go.
                while let Some(done) = side.try_join_next() {
                    if let Ok(stats) = done {
                        side_stats.merge(&stats);
                    }
                }
            }
        }
    }
    drop(lanes);

    // Every request sent gets its answer; an interrupted run waits a while.
    if interrupted {
        tokio::spawn(async move {
            tokio::time::sleep(DRAIN_TIMEOUT).await;
            let _ = give_up_tx.send(true);
        });
    }
    let mut total = side_stats;
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(stats)) => total.merge(&stats),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
                // The others would wait for answers that cannot come in order.
                workers.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if interrupted {
        side.abort_all();
    }
    while let Some(joined) = side.join_next().await {
        if let Ok(stats) = joined {
            total.merge(&stats);
        }
    }
    let unanswered = ctx.outstanding.load(Ordering::Acquire) as u64;
    Ok((
        total,
        Ending {
            interrupted,
            unanswered,
            measure_from,
        },
    ))
}
