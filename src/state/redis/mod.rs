//! The Redis store: state shared by several replicas in one Redis, so that
//! they act as one service.
//!
//! **Keys.** Every key starts with the namespace (`--redis-prefix`,
//! `riskstream:` by default) and holds one entity in one hash tag, so that
//! an entity's keys share a cluster slot: `{c:K}:s` and `{c:K}:l` (a card's
//! short and long windows), `{e:K}:s`, `{i:K}:s`, `{d:K}:s` (email, IP,
//! device), `{m:K}:l` (merchant), `{p:H}` (a remembered payment), `{pm:H}`
//! (a payment method), `{l:NAME}` and `{l:NAME}:x` (a list's entries and
//! expiries); `{ix:KIND}` index each kind by its latest event time (sizes
//! and sweeps), and `{meta}:…` hold the hash key, the latest event time and
//! the lists version. `K` is the store's keyed 64-bit hash of the customer
//! value, `H` a keyed 128-bit hash of the payment or payment method id: no
//! key names an email, IP address or card fingerprint. The hash key is
//! drawn once and kept in Redis, so that every replica hashes alike.
//! Windows expire a day (short) or their span plus a day (long) after their
//! last write, payments after `--payment-retention`: Redis never grows
//! without bound, even with no replica sweeping.
//!
//! **Consistency.** Every change is one Lua script, atomic on the server:
//! concurrent payments of one card on two replicas both count. A batch of
//! payments is one script call, one round trip.
//!
//! **The hot path.** The trait's methods are synchronous, and here each
//! waits for a round trip on the store's own I/O thread (fine for tools,
//! tests and `spawn_blocking`, never on a tokio worker). The server scores
//! through [`super::Remote`] instead: the engine plans a batch of payments
//! synchronously (parse, validate, resolve methods from the cache, compute
//! the keys), the batch's windows are read and updated in one async round
//! trip, and the engine finishes each payment synchronously (features,
//! model, decision) from what came back. Memory and embedded stores keep
//! their fused path untouched. A batch's script also records each new
//! payment's amount ratio (its amount over its card's mean before it) as
//! soon as it has read the card's windows, so that the card's next
//! payment, in the same batch or on any replica, sees it.
//!
//! **Caches.** Payment methods and lists are served from a local cache
//! ([`cache`]) kept fresh by change messages over pub/sub.

mod cache;
mod scripts;

use super::long_window::{HOUR_MS, Sums};
use super::window::DAY_MS;
use super::{
    BoxFuture, Commit, Key, Labelled, List, ListEntry, Observation, Observed, ObservedBatch,
    PaymentRecord, Remote, Store, StoreError, StoreLimits, StoreStats, StoredMethod, Velocity,
};
use super::{LABEL_DELAY_DAYS, MIN_PAYMENT_RETENTION_MS};
use crate::domain::{FeedbackKind, RegisteredMethod};
use crate::features::SPIKE_RATIO;
use cache::{Applied, Cache};
use redis::aio::ConnectionManager;
use redis::{RedisError, Value};
use scripts::*;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_stream::StreamExt;

/// Hours a card's long window holds.
const CARD_HORIZON_HOURS: i64 = 30 * 24;
/// Hours a merchant's long window holds.
const MERCHANT_HORIZON_HOURS: i64 = (30 + LABEL_DELAY_DAYS) * 24;
/// Numbers per payment in the observe script's answer.
const PER_PAYMENT: usize = 48;

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://HOST:PORT[/DB]` or `rediss://…` (TLS).
    pub url: String,
    /// The namespace every key starts with.
    pub prefix: String,
    /// Bounds on what the store holds.
    pub limits: StoreLimits,
    /// Longest wait for one round trip.
    pub timeout: Duration,
    /// How long opening waits for Redis (`None`: until it answers).
    pub connect_within: Option<Duration>,
}

impl RedisOptions {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            prefix: "riskstream:".into(),
            limits: StoreLimits::default(),
            timeout: Duration::from_secs(1),
            connect_within: Some(Duration::from_secs(10)),
        }
    }
}

/// Why the Redis store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RedisOpenError {
    /// The URL is not one the store can use.
    #[error(
        "{url} is not a Redis URL (redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]): {reason}"
    )]
    Url {
        /// The URL, without its password.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Redis did not answer in time.
    #[error("Redis at {url} did not answer within {within:?}: {reason}")]
    Unreachable {
        /// The URL, without its password.
        url: String,
        /// How long it was waited for.
        within: Duration,
        /// The last error.
        reason: String,
    },
    /// The client's thread could not start.
    #[error("cannot start the Redis client: {0}")]
    Runtime(#[from] std::io::Error),
}

/// `url` without the password it may carry.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// The error of a failed round trip (its kind; never a key or a value).
fn unavailable(e: &RedisError) -> StoreError {
    let what = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost".to_owned()
    } else {
        e.category().to_owned()
    };
    StoreError::Unavailable(format!("Redis: {what}"))
}

/// The names of the store's keys, under one namespace.
#[derive(Debug, Clone)]
struct Names {
    prefix: String,
}

impl Names {
    fn meta(&self, what: &str) -> String {
        format!("{}{{meta}}:{what}", self.prefix)
    }
    fn index(&self, kind: &str) -> String {
        format!("{}{{ix:{kind}}}", self.prefix)
    }
    fn entity(&self, tag: &str, key: Key, suffix: &str) -> String {
        format!("{}{{{tag}:{:016x}}}{suffix}", self.prefix, key.0)
    }
    fn payment(&self, id: &str) -> String {
        format!("{}{{p:{id}}}", self.prefix)
    }
    fn method(&self, id: &str) -> String {
        format!("{}{{pm:{id}}}", self.prefix)
    }
    fn list(&self, list: List) -> String {
        format!("{}{{l:{}}}", self.prefix, list.name())
    }
    fn list_expiries(&self, list: List) -> String {
        format!("{}{{l:{}}}:x", self.prefix, list.name())
    }
    /// A key never written: the place of an entity a payment lacks.
    fn none(&self) -> String {
        format!("{}{{none}}", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}changes", self.prefix)
    }
}

/// The keyed hashes of the store.
#[derive(Debug, Clone)]
struct Hashing {
    values: foldhash::quality::FixedState,
    ids: (foldhash::quality::FixedState, foldhash::quality::FixedState),
}

impl Hashing {
    fn new(seed: u64) -> Hashing {
        Hashing {
            values: foldhash::quality::FixedState::with_seed(seed),
            ids: (
                foldhash::quality::FixedState::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15),
                foldhash::quality::FixedState::with_seed(
                    seed.rotate_left(32) ^ 0x632b_e59b_d9b4_e019,
                ),
            ),
        }
    }

    /// The key of a customer value (never 0).
    fn key(&self, value: &[u8]) -> Key {
        Key(self.values.hash_one(value) | 1)
    }

    /// The 128-bit hash of a payment or payment method id, in hex.
    fn id(&self, id: &str) -> String {
        format!(
            "{:016x}{:016x}",
            self.ids.0.hash_one(id),
            self.ids.1.hash_one(id)
        )
    }
}

/// One payment to record, owned (it crosses to the I/O thread).
#[derive(Debug, Clone)]
struct PlannedPayment {
    /// The hash of its id.
    id: String,
    at_ms: i64,
    amount: i64,
    card: Option<Key>,
    email: Option<Key>,
    ip: Option<Key>,
    device: Option<Key>,
    merchant: Option<Key>,
}

/// An amount ratio to record.
#[derive(Debug, Clone)]
struct Ratio {
    id: String,
    at_ms: i64,
    card: Option<Key>,
    ratio: u32,
    spike: bool,
}

struct Inner {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    conn: ConnectionManager,
    names: Names,
    hashing: Hashing,
    limits: StoreLimits,
    timeout: Duration,
    cache: Arc<Cache>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rt) = runtime {
            // Dropping may happen on an async worker: never wait here.
            rt.shutdown_background();
        }
    }
}

/// The Redis [`Store`]. Cheap to share behind an `Arc`.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

/// Runs `fut` on `handle` and waits for it on this thread.
fn block<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().ok()
}

/// Runs `f` on a connection; when Redis no longer knows the scripts (it
/// restarted), loads them and runs it again.
async fn with_scripts<T, F, Fut>(conn: &ConnectionManager, f: F) -> redis::RedisResult<T>
where
    F: Fn(ConnectionManager) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    match f(conn.clone()).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            let mut c = conn.clone();
            for s in [
                &*OBSERVE_SCRIPT,
                &*RATIO_SCRIPT,
                &*REGISTER_SCRIPT,
                &*LIST_ADD_SCRIPT,
                &*LIST_REMOVE_SCRIPT,
                &*LABEL_SCRIPT,
                &*SWEEP_SCRIPT,
                &*LIST_EXPIRE_SCRIPT,
            ] {
                s.prepare_invoke().load_async(&mut c).await?;
            }
            f(conn.clone()).await
        }
        other => other,
    }
}

/// The velocity of one payment from its 48 numbers.
fn observed_of(v: &[i64]) -> Observed {
    let n = |i: usize| v.get(i).copied().unwrap_or(0).max(0);
    let u = |i: usize| u32::try_from(n(i)).unwrap_or(u32::MAX);
    let sums = |at: usize| Sums {
        count: u(at),
        amount: n(at + 1) as u64,
        frauds: u(at + 2),
        spike_frauds: u(at + 3),
        peak: u(at + 4),
        oldest_plain_fraud_hour: (v.get(at + 5).copied().unwrap_or(-1) >= 0).then(|| u(at + 5)),
    };
    Observed {
        first: n(0) == 1,
        velocity: Velocity {
            card_1h: u(1),
            card_24h: u(2),
            card_amount_24h: n(3) as u64,
            email_1h: u(4),
            email_24h: u(5),
            ip_1h: u(6),
            ip_24h: u(7),
            ip_cards_24h: u(8),
            device_1h: u(9),
            device_24h: u(10),
            device_cards_24h: u(11),
            card_days: [sums(12), sums(18), sums(24)],
            merchant_delayed: [sums(30), sums(36), sums(42)],
        },
    }
}

/// Reads every list and the lists version, at once.
async fn read_lists(
    conn: &ConnectionManager,
    names: &Names,
) -> redis::RedisResult<(u64, Vec<(List, BTreeMap<u64, ListEntry>)>)> {
    let mut pipe = redis::pipe();
    pipe.atomic().get(names.meta("lists"));
    for list in List::ALL {
        pipe.hgetall(names.list(list));
    }
    let mut c = conn.clone();
    let mut values: Vec<Value> = pipe.query_async(&mut c).await?;
    let lists_values = values.split_off(1.min(values.len()));
    let version: Option<u64> = match values.pop() {
        Some(v) => redis::from_redis_value(v)?,
        None => None,
    };
    let mut lists = Vec::new();
    for (list, v) in List::ALL.into_iter().zip(lists_values) {
        let raw: Vec<(String, String)> = redis::from_redis_value(v)?;
        let entries = raw
            .into_iter()
            .filter_map(|(k, e)| {
                Some((
                    u64::from_str_radix(&k, 16).ok()?,
                    serde_json::from_str::<ListEntry>(&e).ok()?,
                ))
            })
            .collect();
        lists.push((list, entries));
    }
    Ok((version.unwrap_or(0), lists))
}

/// Follows the change messages of every replica into `cache`, for as long
/// as the store lives; reads every list again whenever messages may have
/// been missed.
async fn follow_changes(
    client: redis::Client,
    conn: ConnectionManager,
    names: Names,
    cache: Arc<Cache>,
    seed: u64,
) {
    let channel = names.channel();
    let mut warned = false;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
            Ok(Ok(p)) => Some(p),
            _ => None,
        };
        if let Some(mut pubsub) = pubsub {
            cache.drop_methods();
            // A Redis that lost its data (restarted without persistence)
            // gets the hash key back, so that a replica starting later
            // hashes as this one does.
            let mut c = conn.clone();
            let planted = redis::cmd("SET")
                .arg(names.meta("hash-key"))
                .arg(seed)
                .arg("NX")
                .arg("GET")
                .query_async::<Option<u64>>(&mut c)
                .await;
            if let Ok(Some(other)) = planted
                && other != seed
            {
                tracing::error!(
                    "the hash key in Redis is not the one this replica hashes with (another service shares --redis-prefix?)"
                );
            }
            if let Ok(Ok((version, lists))) =
                tokio::time::timeout(Duration::from_secs(5), read_lists(&conn, &names)).await
            {
                cache.replace(version, lists);
                cache.live.store(true, std::sync::atomic::Ordering::Release);
                if warned {
                    tracing::info!("Redis change messages received again; lists read again");
                    warned = false;
                }
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if cache.apply(&text) == Applied::Gap {
                        match read_lists(&conn, &names).await {
                            Ok((version, lists)) => cache.replace(version, lists),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        cache
            .live
            .store(false, std::sync::atomic::Ordering::Release);
        cache.drop_methods();
        if !warned {
            tracing::warn!(
                "Redis change messages are not received: retrying; payment methods are read from Redis meanwhile"
            );
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The invocation recording one amount ratio.
fn ratio_invocation<'a>(names: &Names, r: &Ratio) -> redis::ScriptInvocation<'a> {
    let mut inv = RATIO_SCRIPT.prepare_invoke();
    inv.key(names.payment(&r.id))
        .key(
            r.card
                .map_or_else(|| names.none(), |k| names.entity("c", k, ":l")),
        )
        .arg(r.at_ms)
        .arg(r.ratio)
        .arg(u8::from(r.spike))
        .arg(CARD_HORIZON_HOURS)
        .arg(u8::from(r.card.is_some()));
    inv
}

/// Sends amount ratios in one round trip.
async fn send_ratios(
    conn: &ConnectionManager,
    names: &Names,
    ratios: &[Ratio],
) -> redis::RedisResult<()> {
    with_scripts(conn, |mut c| {
        let mut pipe = redis::pipe();
        for r in ratios {
            pipe.invoke_script(&ratio_invocation(names, r)).ignore();
        }
        async move { pipe.query_async::<()>(&mut c).await }
    })
    .await
}

impl RedisStore {
    /// Connects to Redis (waiting up to `connect_within`), reads or draws
    /// the hash key, and starts following the replicas' changes. Blocks;
    /// never call it on an async worker.
    pub fn open(options: RedisOptions) -> Result<RedisStore, RedisOpenError> {
        let url = redacted(&options.url);
        if options.url.starts_with("redis+cluster://") {
            return Err(RedisOpenError::Url {
                url,
                reason: "Redis Cluster is not supported yet; give one Redis".into(),
            });
        }
        let client =
            redis::Client::open(options.url.as_str()).map_err(|e| RedisOpenError::Url {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("riskstream-redis")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            // One quick second attempt at connecting (a blip), then the
            // call fails: a payment waiting on a Redis that is down fails
            // open in milliseconds, not after a backoff.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(50));
        let lazy = client.clone();
        let conn = block(&handle, async move {
            redis::aio::ConnectionManager::new_lazy_with_config(lazy, config)
        })
        .ok_or_else(|| std::io::Error::other("the Redis client's thread stopped"))?
        .map_err(|e| RedisOpenError::Url {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let names = Names {
            prefix: options.prefix.clone(),
        };
        let seed = Self::hash_key(&handle, &conn, &names, &url, &options)?;
        let cache = Arc::new(Cache::new());
        let inner = Arc::new(Inner {
            handle: handle.clone(),
            conn: conn.clone(),
            names: names.clone(),
            hashing: Hashing::new(seed),
            limits: options.limits,
            timeout: options.timeout,
            cache: Arc::clone(&cache),
            runtime: Mutex::new(Some(runtime)),
        });
        handle.spawn(follow_changes(
            client,
            conn,
            names,
            Arc::clone(&cache),
            seed,
        ));
        let store = RedisStore { inner };
        // The lists are read before the store serves (up to the timeout).
        let deadline = std::time::Instant::now() + options.timeout.max(Duration::from_secs(2));
        while !cache.live.load(std::sync::atomic::Ordering::Acquire)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(store)
    }

    /// The hash key kept in Redis (drawn by the first replica).
    fn hash_key(
        handle: &tokio::runtime::Handle,
        conn: &ConnectionManager,
        names: &Names,
        url: &str,
        options: &RedisOptions,
    ) -> Result<u64, RedisOpenError> {
        let started = std::time::Instant::now();
        let mut warned = false;
        loop {
            let mut c = conn.clone();
            let key = names.meta("hash-key");
            let drawn = crate::config::random_u64();
            let timeout = options.timeout;
            let got = block(handle, async move {
                let read = async {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(drawn)
                        .arg("NX")
                        .query_async::<Option<String>>(&mut c)
                        .await?;
                    redis::cmd("GET").arg(&key).query_async::<u64>(&mut c).await
                };
                tokio::time::timeout(timeout, read)
                    .await
                    .unwrap_or_else(|_| {
                        Err(RedisError::from(std::io::Error::from(
                            std::io::ErrorKind::TimedOut,
                        )))
                    })
            });
            let err = match got {
                Some(Ok(seed)) => return Ok(seed),
                Some(Err(e)) => e.to_string(),
                None => "the Redis client's thread stopped".into(),
            };
            if let Some(within) = options.connect_within
                && started.elapsed() >= within
            {
                return Err(RedisOpenError::Unreachable {
                    url: url.to_owned(),
                    within,
                    reason: err,
                });
            }
            if !warned {
                tracing::warn!(url = %url, error = %err, "waiting for Redis");
                warned = true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `fut` (bounded by the store's timeout) and waits for it here.
    fn wait<T: Send + 'static>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let timeout = self.inner.timeout;
        let done = block(&self.inner.handle, async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(|e| unavailable(&e)),
                Err(_) => Err(StoreError::Unavailable(format!(
                    "Redis did not answer within {timeout:?}"
                ))),
            }
        });
        done.unwrap_or_else(|| {
            Err(StoreError::Unavailable(
                "the Redis client has stopped".into(),
            ))
        })
    }

    /// Runs `fut` on the store's I/O thread, bounded by its timeout.
    fn spawn<T: Send + 'static>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let timeout = self.inner.timeout;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.handle.spawn(async move {
            let r = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(|e| unavailable(&e)),
                Err(_) => Err(StoreError::Unavailable(format!(
                    "Redis did not answer within {timeout:?}"
                ))),
            };
            let _ = tx.send(r);
        });
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the Redis client has stopped".into(),
                ))
            })
        }
    }

    /// Waits (up to `within`) until this replica's lists are at least at
    /// `version` (what a round trip read), reading them again if not: a
    /// list change acknowledged by any replica before a payment's round
    /// trip applies to that payment.
    async fn lists_caught_up(&self, version: u64, within: Duration) -> Result<(), StoreError> {
        let cache = &self.inner.cache;
        if cache.version() >= version {
            return Ok(());
        }
        if tokio::time::timeout(within, cache.reached(version))
            .await
            .is_ok()
        {
            return Ok(());
        }
        let (conn, names, timeout) = (
            self.inner.conn.clone(),
            self.inner.names.clone(),
            self.inner.timeout,
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.handle.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, read_lists(&conn, &names)).await);
        });
        match rx.await {
            Ok(Ok(Ok((v, lists)))) => {
                if v >= cache.version() {
                    cache.replace(v, lists);
                }
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(unavailable(&e)),
            _ => Err(StoreError::Unavailable(
                "Redis did not answer in time".into(),
            )),
        }
    }

    /// The payment to record for `obs`.
    fn plan(&self, obs: &Observation<'_>) -> PlannedPayment {
        PlannedPayment {
            id: self.inner.hashing.id(obs.payment_id),
            at_ms: obs.at_ms,
            amount: obs.amount.max(0),
            card: obs.card,
            email: obs.email,
            ip: obs.ip,
            device: obs.device,
            merchant: obs.merchant,
        }
    }

    /// Records a batch of payments in one round trip (and, `with_ratios`,
    /// each new one's amount ratio) and returns their velocity. Runs on the
    /// store's I/O thread; bounded by the store's timeout.
    fn send_batch(
        &self,
        batch: Vec<PlannedPayment>,
        with_ratios: bool,
    ) -> impl Future<Output = Result<ObservedBatch, StoreError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (conn, names, timeout) = (inner.conn.clone(), inner.names.clone(), inner.timeout);
        let retention = inner.limits.payment_retention_ms;
        inner.handle.spawn(async move {
            let run = observe(&conn, &names, retention, with_ratios, &batch);
            let r = match tokio::time::timeout(timeout, run).await {
                Ok(r) => r.map_err(|e| unavailable(&e)),
                Err(_) => Err(StoreError::Unavailable(format!(
                    "Redis did not answer within {timeout:?}"
                ))),
            };
            let _ = tx.send(r);
        });
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the Redis client has stopped".into(),
                ))
            })
        }
    }
}

/// Records `batch` in one round trip (`with_ratios`: each new payment's
/// amount ratio too).
async fn observe(
    conn: &ConnectionManager,
    names: &Names,
    retention_ms: i64,
    with_ratios: bool,
    batch: &[PlannedPayment],
) -> redis::RedisResult<ObservedBatch> {
    let hex = |k: Option<Key>| k.map_or_else(String::new, |k| format!("{:016x}", k.0));
    let values: Vec<i64> = with_scripts(conn, |mut c| {
        let mut inv = OBSERVE_SCRIPT.prepare_invoke();
        inv.key(names.meta("watermark")).key(names.meta("lists"));
        for kind in ["c", "e", "i", "d", "m", "p"] {
            inv.key(names.index(kind));
        }
        for p in batch {
            let entity = |tag: &str, k: Option<Key>, suffix: &str| {
                k.map_or_else(|| names.none(), |k| names.entity(tag, k, suffix))
            };
            inv.key(names.payment(&p.id))
                .key(entity("c", p.card, ":s"))
                .key(entity("c", p.card, ":l"))
                .key(entity("e", p.email, ":s"))
                .key(entity("i", p.ip, ":s"))
                .key(entity("d", p.device, ":s"))
                .key(entity("m", p.merchant, ":l"));
        }
        inv.arg(batch.len())
            .arg(retention_ms)
            .arg(DAY_MS + HOUR_MS)
            .arg((CARD_HORIZON_HOURS + 24) * HOUR_MS)
            .arg((MERCHANT_HORIZON_HOURS + 24) * HOUR_MS)
            .arg(CARD_HORIZON_HOURS)
            .arg(MERCHANT_HORIZON_HOURS)
            .arg(if with_ratios { SPIKE_RATIO } else { 0 });
        for p in batch {
            inv.arg(p.at_ms)
                .arg(p.amount)
                .arg(hex(p.card))
                .arg(hex(p.email))
                .arg(hex(p.ip))
                .arg(hex(p.device))
                .arg(hex(p.merchant));
        }
        async move { inv.invoke_async::<Vec<i64>>(&mut c).await }
    })
    .await?;
    if values.len() != 1 + batch.len() * PER_PAYMENT {
        return Err(RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "the observe script answered an unexpected number of values",
        )));
    }
    Ok(ObservedBatch {
        lists_version: u64::try_from(values[0]).unwrap_or(0),
        observed: values[1..].chunks(PER_PAYMENT).map(observed_of).collect(),
    })
}

/// How long a payment waits for its replica to apply list changes its
/// round trip saw, before the lists are read again.
const LISTS_CATCH_UP: Duration = Duration::from_millis(50);

impl Remote for RedisStore {
    fn methods(&self, ids: Vec<String>) -> BoxFuture<'static, Result<super::Methods, StoreError>> {
        let cache = Arc::clone(&self.inner.cache);
        let hashed: Vec<String> = ids.iter().map(|id| self.inner.hashing.id(id)).collect();
        let mut found: Vec<Option<Arc<StoredMethod>>> =
            hashed.iter().map(|h| cache.method(h)).collect();
        let missing: Vec<usize> = (0..ids.len()).filter(|i| found[*i].is_none()).collect();
        if missing.is_empty() {
            return Box::pin(async move { Ok((found, false)) });
        }
        let generation = cache.generation();
        let keys: Vec<String> = missing
            .iter()
            .map(|i| self.inner.names.method(&hashed[*i]))
            .collect();
        let mut conn = self.inner.conn.clone();
        let read = self.spawn(async move {
            let mut cmd = redis::cmd("MGET");
            cmd.arg(&keys);
            cmd.query_async::<Vec<Option<Vec<u8>>>>(&mut conn).await
        });
        let store = self.clone();
        Box::pin(async move {
            let raws = read.await?;
            for (i, raw) in missing.into_iter().zip(raws) {
                let Some(method) =
                    raw.and_then(|r| postcard::from_bytes::<RegisteredMethod>(&r).ok())
                else {
                    continue;
                };
                if method.id != ids[i] {
                    continue;
                }
                let stored = Arc::new(StoredMethod::of(method, |v| store.key(v)));
                cache.put_method(hashed[i].clone(), Arc::clone(&stored), generation);
                found[i] = Some(stored);
            }
            Ok((found, true))
        })
    }

    fn observe_batch(
        &self,
        batch: &[Observation<'_>],
    ) -> BoxFuture<'static, Result<ObservedBatch, StoreError>> {
        Box::pin(self.send_batch(batch.iter().map(|o| self.plan(o)).collect(), true))
    }

    fn lists_at_least(&self, version: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.lists_caught_up(version, LISTS_CATCH_UP))
    }

    fn reachable(&self) -> bool {
        self.inner
            .cache
            .live
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn cache_lookups(&self) -> (u64, u64) {
        self.inner.cache.lookups()
    }
}

impl Store for RedisStore {
    fn remote(&self) -> Option<&dyn Remote> {
        Some(self)
    }

    fn key(&self, value: &[u8]) -> Key {
        self.inner.hashing.key(value)
    }

    fn register(&self, method: StoredMethod) -> Result<Commit, StoreError> {
        let inner = &self.inner;
        let id = inner.hashing.id(&method.method.id);
        let encoded = postcard::to_allocvec(&method.method).map_err(|e| {
            StoreError::Unavailable(format!("cannot encode the payment method: {e}"))
        })?;
        let (conn, names, max) = (
            inner.conn.clone(),
            inner.names.clone(),
            inner.limits.max_payment_methods,
        );
        let member = id.clone();
        let refused = self.wait(async move {
            with_scripts(&conn, |mut c| {
                let mut inv = REGISTER_SCRIPT.prepare_invoke();
                inv.key(names.method(&member))
                    .key(names.index("pm"))
                    .arg(&encoded[..])
                    .arg(max)
                    .arg(&member)
                    .arg(names.channel())
                    .arg(format!("m {member}"));
                async move { inv.invoke_async::<i64>(&mut c).await }
            })
            .await
        })?;
        if refused < 0 {
            return Err(StoreError::PaymentMethodsFull(max));
        }
        inner.cache.drop_method(&id);
        Ok(Commit::done())
    }

    fn payment_method(&self, id: &str) -> Result<Option<Arc<StoredMethod>>, StoreError> {
        let inner = &self.inner;
        let hashed = inner.hashing.id(id);
        if let Some(m) = inner.cache.method(&hashed) {
            return Ok(Some(m));
        }
        let generation = inner.cache.generation();
        let (mut conn, key) = (inner.conn.clone(), inner.names.method(&hashed));
        let raw = self.wait(async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
        })?;
        // Another id with the same 128-bit hash, or bytes of another
        // version, are no registration of this id.
        let Some(method) = raw.and_then(|r| postcard::from_bytes::<RegisteredMethod>(&r).ok())
        else {
            return Ok(None);
        };
        if method.id != id {
            return Ok(None);
        }
        let stored = Arc::new(StoredMethod::of(method, |v| self.key(v)));
        inner
            .cache
            .put_method(hashed, Arc::clone(&stored), generation);
        Ok(Some(stored))
    }

    fn observe(&self, obs: &Observation<'_>) -> Observed {
        let batch = self.send_batch(vec![self.plan(obs)], false);
        let done = block(&self.inner.handle, batch);
        match done {
            Some(Ok(mut b)) => b.observed.pop().unwrap_or_default(),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "a payment was not recorded: Redis did not take it");
                Observed::default()
            }
            None => Observed::default(),
        }
    }

    fn record_amount_ratio(&self, obs: &Observation<'_>, ratio: u32, spike: bool) {
        let r = Ratio {
            id: self.inner.hashing.id(obs.payment_id),
            at_ms: obs.at_ms,
            card: obs.card,
            ratio,
            spike,
        };
        let (conn, names) = (self.inner.conn.clone(), self.inner.names.clone());
        let _ = self.wait(async move { send_ratios(&conn, &names, &[r]).await });
    }

    fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        let (mut conn, key) = (
            self.inner.conn.clone(),
            self.inner.names.payment(&self.inner.hashing.id(payment_id)),
        );
        let fields: (Option<i64>, Option<String>, Option<String>, Option<u8>) =
            self.wait(async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg(&["at", "c", "e", "lab"])
                    .query_async(&mut conn)
                    .await
            })?;
        let key_of = |h: Option<String>| h.and_then(|h| u64::from_str_radix(&h, 16).ok()).map(Key);
        Ok(fields.0.map(|at_ms| PaymentRecord {
            at_ms,
            card: key_of(fields.1),
            email: key_of(fields.2),
            label: super::memory::label_of(fields.3.unwrap_or(0)),
        }))
    }

    fn label(
        &self,
        payment_id: &str,
        kind: FeedbackKind,
        block_entries: &[(List, Key, ListEntry)],
    ) -> Result<Option<Labelled>, StoreError> {
        let inner = &self.inner;
        let names = inner.names.clone();
        let key = names.payment(&inner.hashing.id(payment_id));
        let entries: Vec<(List, Key, ListEntry, String)> = block_entries
            .iter()
            .map(|(l, k, e)| {
                let json = serde_json::to_string(e).unwrap_or_default();
                (*l, *k, e.clone(), json)
            })
            .collect();
        let sent = entries.clone();
        let code = super::memory::label_code(Some(kind));
        let conn = inner.conn.clone();
        let added: Vec<i64> = self.wait(async move {
            with_scripts(&conn, |mut c| {
                let mut inv = LABEL_SCRIPT.prepare_invoke();
                inv.key(&key).key(names.meta("lists"));
                for (list, _, _, _) in &sent {
                    inv.key(names.list(*list)).key(names.list_expiries(*list));
                }
                inv.arg(code)
                    .arg(&names.prefix)
                    .arg(MERCHANT_HORIZON_HOURS)
                    .arg(names.channel());
                for (list, k, _, json) in &sent {
                    inv.arg(format!("{:016x}", k.0))
                        .arg(json)
                        .arg(cache::added(*list, k.0, json));
                }
                async move { inv.invoke_async::<Vec<i64>>(&mut c).await }
            })
            .await
        })?;
        if added.first() == Some(&-1) {
            return Ok(None);
        }
        let mut lists_added = Vec::new();
        for i in added {
            if let Some((list, k, entry, _)) =
                usize::try_from(i - 1).ok().and_then(|i| entries.get(i))
            {
                inner.cache.put(*list, k.0, entry.clone());
                lists_added.push(*list);
            }
        }
        Ok(Some(Labelled {
            lists_added,
            commit: Commit::done(),
        }))
    }

    fn list_contains(&self, list: List, key: Key) -> bool {
        self.inner.cache.contains(list, key)
    }

    fn lists_empty(&self) -> bool {
        self.inner.cache.is_empty()
    }

    fn list_add(
        &self,
        list: List,
        key: Key,
        entry: ListEntry,
    ) -> Result<Option<Commit>, StoreError> {
        let inner = &self.inner;
        let json = serde_json::to_string(&entry)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode the entry: {e}")))?;
        let (conn, names) = (inner.conn.clone(), inner.names.clone());
        let message = cache::added(list, key.0, &json);
        let expires_at_ms = entry.expires_at_ms;
        let version: i64 = self.wait(async move {
            with_scripts(&conn, |mut c| {
                let mut inv = LIST_ADD_SCRIPT.prepare_invoke();
                inv.key(names.list(list))
                    .key(names.list_expiries(list))
                    .key(names.meta("lists"))
                    .arg(format!("{:016x}", key.0))
                    .arg(&json)
                    .arg(expires_at_ms)
                    .arg(names.channel())
                    .arg(&message);
                async move { inv.invoke_async::<i64>(&mut c).await }
            })
            .await
        })?;
        if version == 0 {
            return Ok(None);
        }
        inner.cache.put(list, key.0, entry);
        Ok(Some(Commit::done()))
    }

    fn list_remove(&self, list: List, key: Key) -> Result<Option<Commit>, StoreError> {
        let inner = &self.inner;
        let (conn, names) = (inner.conn.clone(), inner.names.clone());
        let version: i64 = self.wait(async move {
            with_scripts(&conn, |mut c| {
                let mut inv = LIST_REMOVE_SCRIPT.prepare_invoke();
                inv.key(names.list(list))
                    .key(names.list_expiries(list))
                    .key(names.meta("lists"))
                    .arg(format!("{:016x}", key.0))
                    .arg(names.channel())
                    .arg(cache::removed(list, key.0));
                async move { inv.invoke_async::<i64>(&mut c).await }
            })
            .await
        })?;
        if version == 0 {
            return Ok(None);
        }
        inner.cache.remove(list, key.0);
        Ok(Some(Commit::done()))
    }

    fn list_items(&self, list: List, after: Option<Key>, limit: usize) -> Vec<(Key, ListEntry)> {
        self.inner.cache.items(list, after, limit)
    }

    fn sync(&self) -> Commit {
        Commit::done()
    }

    fn sweep(&self) -> usize {
        let inner = &self.inner;
        let (conn, names, limits) = (inner.conn.clone(), inner.names.clone(), inner.limits);
        let now = crate::engine::system_now_ms();
        self.wait(async move {
            let dropped = with_scripts(&conn, |mut c| {
                let mut inv = SWEEP_SCRIPT.prepare_invoke();
                inv.key(names.meta("watermark"));
                for kind in ["c", "e", "i", "d", "m", "p"] {
                    inv.key(names.index(kind));
                }
                inv.arg(&names.prefix)
                    .arg(limits.max_window_keys)
                    .arg(CARD_HORIZON_HOURS * HOUR_MS)
                    .arg(DAY_MS)
                    .arg(MERCHANT_HORIZON_HOURS * HOUR_MS)
                    .arg(limits.payment_retention_ms)
                    .arg(limits.max_payments)
                    .arg(MIN_PAYMENT_RETENTION_MS);
                async move { inv.invoke_async::<i64>(&mut c).await }
            })
            .await?;
            let mut expired = 0;
            for list in List::ALL {
                expired += with_scripts(&conn, |mut c| {
                    let mut inv = LIST_EXPIRE_SCRIPT.prepare_invoke();
                    inv.key(names.list(list))
                        .key(names.list_expiries(list))
                        .key(names.meta("lists"))
                        .arg(now)
                        .arg(names.channel())
                        .arg(format!("r {} ", list.name()));
                    async move { inv.invoke_async::<i64>(&mut c).await }
                })
                .await?;
            }
            Ok(usize::try_from(dropped + expired).unwrap_or(0))
        })
        .unwrap_or(0)
    }

    fn stats(&self) -> StoreStats {
        let inner = &self.inner;
        let (mut conn, names) = (inner.conn.clone(), inner.names.clone());
        let counts = self.wait(async move {
            let mut pipe = redis::pipe();
            pipe.scard(names.index("pm"));
            for kind in ["c", "e", "i", "d", "m", "p"] {
                pipe.zcard(names.index(kind));
            }
            for list in List::ALL {
                pipe.hlen(names.list(list));
            }
            pipe.query_async::<Vec<usize>>(&mut conn).await
        });
        match counts {
            Ok(c) if c.len() == 7 + List::ALL.len() => StoreStats {
                payment_methods: c[0],
                velocity_keys: c[1..6].iter().sum(),
                payments: c[6],
                list_entries: c[7..].iter().sum(),
                disk: None,
            },
            _ => StoreStats::default(),
        }
    }
}
