//! The Redis store: state shared by several replicas in one Redis or one
//! Redis Cluster, so that they act as one service.
//!
//! **Keys.** Every key starts with the namespace (`--redis-prefix`,
//! `riskstream:` by default) and holds one entity in one hash tag, so that
//! an entity's keys share a cluster slot: `{c:K}:s` and `{c:K}:l` (a card's
//! short and long windows), `{e:K}:s`, `{i:K}:s`, `{d:K}:s` (email, IP,
//! device), `{m:K}:l` (merchant; on a cluster `{m:K}:f` holds what it
//! counted of labelled payments), `{p:H}` (a remembered payment), `{pm:H}`
//! (a payment method), `{l}:NAME`, `{l}:NAME:x` and `{l}:version` (every
//! list's entries and expiries and the lists version, in one slot);
//! `{ix:KIND}` index each kind by its latest event time (sizes and sweeps),
//! and `{meta}:…` hold the hash key and the latest event time. `K` is the store's keyed 64-bit hash of the customer
//! value, `H` a keyed 128-bit hash of the payment or payment method id: no
//! key names an email, IP address or card fingerprint. The hash key is
//! drawn once and kept in Redis, so that every replica hashes alike.
//! Windows expire a day (short) or their span plus a day (long) after their
//! last write, payments after `--payment-retention`: Redis never grows
//! without bound, even with no replica sweeping.
//!
//! **Consistency.** Every change to an entity is one Lua script, atomic on
//! the server: concurrent payments of one card on two replicas both count.
//! On one Redis a batch of payments is one script call, one round trip; on
//! a cluster, where a call may only name keys of one slot, it is two round
//! trips ([`observe`]). Registrations, sweeps and amount ratios are a few
//! single-slot calls on either; a fraud report is one script on one Redis,
//! and on a cluster its payment's label, then its merchant's counts and its
//! block entries, each step safe to repeat.
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
mod conn;
mod decisions;
mod observe;
mod scripts;

use super::long_window::HOUR_MS;
use super::window::DAY_MS;
use super::{
    BoxFuture, Commit, Decided, DecidedPayment, Key, Labelled, List, ListEntry, Observation,
    Observed, ObservedBatch, PaymentRecord, Remote, Store, StoreError, StoreLimits, StoreStats,
    StoredMethod,
};
use super::{LABEL_DELAY_DAYS, MIN_PAYMENT_RETENTION_MS};
use crate::domain::{FeedbackKind, RegisteredMethod};
use cache::{Applied, Cache};
use conn::{Conn, Target};
use observe::{PlannedPayment, observe};
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

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://HOST:PORT[/DB]`, `rediss://…` (TLS), or
    /// `redis+cluster://HOST:PORT[,HOST:PORT…]` (a Redis Cluster).
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
    /// Whether `url` names a Redis or a Redis Cluster the store can use
    /// (what is wrong with it if not); nothing is connected to.
    pub fn check_url(url: &str) -> Result<(), String> {
        Target::parse(url).map(|_| ())
    }

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
        "{url} is not a Redis URL (redis://HOST:PORT[/DB], rediss://HOST:PORT[/DB] or redis+cluster://HOST:PORT[,HOST:PORT…]): {reason}"
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
        format!("{}{{l}}:{}", self.prefix, list.name())
    }
    fn list_expiries(&self, list: List) -> String {
        format!("{}{{l}}:{}:x", self.prefix, list.name())
    }
    fn lists_version(&self) -> String {
        format!("{}{{l}}:version", self.prefix)
    }
    /// What a merchant counted of labelled payments (on a cluster).
    fn merchant_labels(&self, key: Key) -> String {
        self.entity("m", key, ":f")
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

struct Inner {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    conn: Conn,
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
/// restarted), loads them and runs it again (a pipeline of scripts does not
/// load them by itself, as a script call does).
async fn with_scripts<T, F, Fut>(conn: &Conn, f: F) -> redis::RedisResult<T>
where
    F: Fn(Conn) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    match f(conn.clone()).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            let mut c = conn.clone();
            for s in scripts::all() {
                s.prepare_invoke().load_async(&mut c).await?;
            }
            f(conn.clone()).await
        }
        other => other,
    }
}

/// Runs a script call (which loads its script into a Redis that lost it).
async fn invoke<T: redis::FromRedisValue>(
    conn: &Conn,
    inv: redis::ScriptInvocation<'_>,
) -> redis::RedisResult<T> {
    let mut c = conn.clone();
    inv.invoke_async(&mut c).await
}

/// Reads every list and the lists version, at once.
async fn read_lists(
    conn: &Conn,
    names: &Names,
) -> redis::RedisResult<(u64, Vec<(List, BTreeMap<u64, ListEntry>)>)> {
    let mut pipe = redis::pipe();
    pipe.atomic().get(names.lists_version());
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
async fn follow_changes(target: Target, conn: Conn, names: Names, cache: Arc<Cache>, seed: u64) {
    let channel = names.channel();
    let mut warned = false;
    loop {
        let subscribed = async {
            let mut pubsub = target.pubsub().await?;
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

impl RedisStore {
    /// Connects to Redis (waiting up to `connect_within`), reads or draws
    /// the hash key, and starts following the replicas' changes. Blocks;
    /// never call it on an async worker.
    pub fn open(options: RedisOptions) -> Result<RedisStore, RedisOpenError> {
        let url = redacted(&options.url);
        let target = Target::parse(&options.url).map_err(|reason| RedisOpenError::Url {
            url: url.clone(),
            reason,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("riskstream-redis")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (lazy, timeout) = (target.clone(), options.timeout);
        let conn = block(&handle, async move { lazy.connect(timeout) })
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
            target,
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
        conn: &Conn,
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
        let (conn, names) = (self.inner.conn.clone(), self.inner.names.clone());
        let retention = self.inner.limits.payment_retention_ms;
        self.spawn(async move { observe(&conn, &names, retention, with_ratios, &batch).await })
    }
}

impl RedisStore {
    /// Records what was decided of `batch` (payment ids and decisions) on
    /// the store's I/O thread, bounded by its timeout.
    fn decide(
        &self,
        batch: Vec<(&str, Decided)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (conn, names) = (self.inner.conn.clone(), self.inner.names.clone());
        let hashed: Vec<(String, Decided)> = batch
            .into_iter()
            .map(|(id, d)| (self.inner.hashing.id(id), d))
            .collect();
        self.spawn(async move { decisions::decide(&conn, &names, hashed).await })
    }
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

    fn record_decisions(
        &self,
        batch: Vec<(&str, Decided)>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(self.decide(batch))
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
        // Counted first (the index of methods and the method are in two
        // slots on a cluster): a registration refused after its count only
        // holds a place its retry takes again.
        let refused = self.wait(async move {
            let mut reserve = RESERVE_METHOD_SCRIPT.prepare_invoke();
            reserve.key(names.index("pm")).arg(&member).arg(max);
            if invoke::<i64>(&conn, reserve).await? < 0 {
                return Ok(true);
            }
            let mut save = SAVE_METHOD_SCRIPT.prepare_invoke();
            save.key(names.method(&member))
                .arg(&encoded[..])
                .arg(names.channel())
                .arg(format!("m {member}"));
            invoke::<()>(&conn, save).await?;
            Ok(false)
        })?;
        if refused {
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
        let inner = &self.inner;
        let mut record = RATIO_RECORD_SCRIPT.prepare_invoke();
        record
            .key(inner.names.payment(&inner.hashing.id(obs.payment_id)))
            .arg(ratio)
            .arg(u8::from(spike));
        let peak = obs.card.map(|card| {
            let mut inv = RATIO_PEAK_SCRIPT.prepare_invoke();
            inv.key(inner.names.entity("c", card, ":l"))
                .arg(obs.at_ms)
                .arg(ratio)
                .arg(CARD_HORIZON_HOURS);
            inv
        });
        let conn = inner.conn.clone();
        let _ = self.wait(async move {
            let peak = async {
                match peak {
                    Some(inv) => invoke::<()>(&conn, inv).await,
                    None => Ok(()),
                }
            };
            let (on_record, on_card) = tokio::join!(invoke::<()>(&conn, record), peak);
            on_record.and(on_card)
        });
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
        let added: Option<Vec<i64>> = if conn.is_cluster() {
            let id = inner.hashing.id(payment_id);
            self.wait(label_in_steps(conn, names, id, code, kind.is_fraud(), sent))?
        } else {
            let added: Vec<i64> = self.wait(async move {
                with_scripts(&conn, |mut c| {
                    let mut inv = LABEL_SCRIPT.prepare_invoke();
                    inv.key(&key).key(names.lists_version());
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
            (added.first() != Some(&-1)).then_some(added)
        };
        let Some(added) = added else {
            return Ok(None);
        };
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

    fn record_decision(&self, payment_id: &str, _at_ms: i64, decided: Decided) {
        let done = block(&self.inner.handle, self.decide(vec![(payment_id, decided)]));
        if let Some(Err(e)) = done {
            tracing::warn!(error = %e, "a decision was not recorded: Redis did not take it");
        }
    }

    fn decisions(&self) -> Result<Vec<DecidedPayment>, StoreError> {
        let (conn, names) = (self.inner.conn.clone(), self.inner.names.clone());
        // Reading every payment takes longer than one call may.
        let timeout = self.inner.timeout.max(Duration::from_secs(60));
        let done = block(&self.inner.handle, async move {
            tokio::time::timeout(timeout, decisions::read(&conn, &names)).await
        });
        match done {
            Some(Ok(Ok(d))) => Ok(d),
            Some(Ok(Err(e))) => Err(unavailable(&e)),
            Some(Err(_)) => Err(StoreError::Unavailable(format!(
                "Redis did not give the decisions within {timeout:?}"
            ))),
            None => Err(StoreError::Unavailable(
                "the Redis client has stopped".into(),
            )),
        }
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
                    .key(names.lists_version())
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
                    .key(names.lists_version())
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
        let cache = Arc::clone(&inner.cache);
        self.wait(async move {
            let dropped = sweep_windows(&conn, &names, limits).await?;
            let mut expired = 0;
            for list in List::ALL {
                let mut inv = LIST_EXPIRE_SCRIPT.prepare_invoke();
                inv.key(names.list(list))
                    .key(names.list_expiries(list))
                    .key(names.lists_version())
                    .arg(now)
                    .arg(names.channel())
                    .arg(format!("r {} ", list.name()));
                let gone: Vec<String> = invoke(&conn, inv).await?;
                // Gone from this replica's lists at once, as a removal is.
                for key in &gone {
                    if let Ok(k) = u64::from_str_radix(key, 16) {
                        cache.remove(list, k);
                    }
                }
                expired += gone.len();
            }
            Ok(dropped + expired)
        })
        .unwrap_or(0)
    }

    fn stats(&self) -> StoreStats {
        let inner = &self.inner;
        let (conn, names) = (inner.conn.clone(), inner.names.clone());
        let counts = self.wait(async move {
            let mut calls: Vec<BoxFuture<'static, redis::RedisResult<usize>>> = Vec::new();
            let mut count = |cmd: &str, key: String| {
                let mut c = conn.clone();
                let cmd = redis::cmd(cmd).arg(key).clone();
                calls.push(Box::pin(
                    async move { cmd.query_async::<usize>(&mut c).await },
                ));
            };
            count("SCARD", names.index("pm"));
            for kind in ["c", "e", "i", "d", "m", "p"] {
                count("ZCARD", names.index(kind));
            }
            for list in List::ALL {
                count("HLEN", names.list(list));
            }
            conn::at_once(calls).await
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

/// A label on a cluster, in steps each safe to repeat: the payment's label
/// (`None` when the payment is unknown); then, at once, its merchant's
/// fraud counts (moved by what the merchant had counted of this payment)
/// and the block `entries` (the positions of those added).
async fn label_in_steps(
    conn: Conn,
    names: Names,
    id: String,
    code: u8,
    fraud: bool,
    entries: Vec<(List, Key, ListEntry, String)>,
) -> redis::RedisResult<Option<Vec<i64>>> {
    let mut record = LABEL_RECORD_SCRIPT.prepare_invoke();
    record.key(names.payment(&id)).arg(code);
    let found: Vec<String> = invoke(&conn, record).await?;
    let [at, merchant, spike] = found.as_slice() else {
        return Ok(None);
    };
    let merchant = u64::from_str_radix(merchant, 16).ok().map(Key);
    let counts = async {
        let Some(m) = merchant else { return Ok(()) };
        let mut inv = MERCHANT_LABEL_SCRIPT.prepare_invoke();
        inv.key(names.entity("m", m, ":l"))
            .key(names.merchant_labels(m))
            .arg(&id)
            .arg(u8::from(fraud))
            .arg(at)
            .arg(spike)
            .arg(MERCHANT_HORIZON_HOURS)
            .arg((MERCHANT_HORIZON_HOURS + 24) * HOUR_MS);
        invoke::<()>(&conn, inv).await
    };
    let lists = async {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = LABEL_LISTS_SCRIPT.prepare_invoke();
        inv.key(names.lists_version());
        for (list, _, _, _) in &entries {
            inv.key(names.list(*list));
        }
        inv.arg(names.channel());
        for (list, k, _, json) in &entries {
            inv.arg(format!("{:016x}", k.0))
                .arg(json)
                .arg(cache::added(*list, k.0, json));
        }
        invoke::<Vec<i64>>(&conn, inv).await
    };
    let (counted, added) = tokio::join!(counts, lists);
    counted?;
    Ok(Some(added?))
}

/// A kind of key a sweep forgets.
struct Swept {
    /// Its index.
    kind: &'static str,
    /// How long it is kept idle (ms).
    horizon: i64,
    /// The least it is kept, however many there are (ms).
    least: i64,
    /// The most kept.
    most: usize,
    /// The keys of an entity of the kind (tag, suffix); none: a payment.
    keys: &'static [(&'static str, &'static str)],
}

impl Swept {
    /// Windows, kept at least a minute.
    fn windows(
        kind: &'static str,
        horizon: i64,
        most: usize,
        keys: &'static [(&'static str, &'static str)],
    ) -> Swept {
        Swept {
            kind,
            horizon,
            least: 60_000,
            most,
            keys,
        }
    }
}

/// Forgets the windows and payments idle past their horizons (halved for
/// a kind over its most keys), kind by kind: each index gives up its idle
/// keys, then each of their entities is forgotten unless a payment reached
/// it meanwhile. Returns how many keys the indexes gave up.
async fn sweep_windows(
    conn: &Conn,
    names: &Names,
    limits: StoreLimits,
) -> redis::RedisResult<usize> {
    let mut c = conn.clone();
    let watermark: Option<i64> = redis::cmd("GET")
        .arg(names.meta("watermark"))
        .query_async(&mut c)
        .await?;
    let Some(watermark) = watermark else {
        return Ok(0);
    };
    let windows = limits.max_window_keys;
    let kinds = [
        Swept::windows("e", DAY_MS, windows, &[("e", ":s")]),
        Swept::windows("i", DAY_MS, windows, &[("i", ":s")]),
        Swept::windows("d", DAY_MS, windows, &[("d", ":s")]),
        Swept::windows(
            "c",
            CARD_HORIZON_HOURS * HOUR_MS,
            windows,
            &[("c", ":s"), ("c", ":l")],
        ),
        Swept::windows(
            "m",
            MERCHANT_HORIZON_HOURS * HOUR_MS,
            windows,
            &[("m", ":l"), ("m", ":f")],
        ),
        Swept {
            kind: "p",
            horizon: limits.payment_retention_ms,
            least: MIN_PAYMENT_RETENTION_MS,
            most: limits.max_payments,
            keys: &[],
        },
    ];
    let mut dropped = 0;
    for Swept {
        kind,
        horizon,
        least,
        most,
        keys,
    } in kinds
    {
        let mut inv = SWEEP_INDEX_SCRIPT.prepare_invoke();
        inv.key(names.index(kind))
            .arg(watermark)
            .arg(horizon)
            .arg(least)
            .arg(most);
        let gone: Vec<String> = invoke(conn, inv).await?;
        dropped += gone.len() / 2;
        let mut forget: Vec<BoxFuture<'static, redis::RedisResult<i64>>> = Vec::new();
        for pair in gone.chunks(2) {
            let [member, cutoff] = pair else { continue };
            let mut inv = SWEEP_ENTITY_SCRIPT.prepare_invoke();
            if keys.is_empty() {
                inv.key(names.payment(member));
            } else {
                let Ok(k) = u64::from_str_radix(member, 16) else {
                    continue;
                };
                for (tag, suffix) in keys {
                    inv.key(names.entity(tag, Key(k), suffix));
                }
            }
            inv.arg(cutoff);
            let conn = conn.clone();
            forget.push(Box::pin(async move { invoke::<i64>(&conn, inv).await }));
        }
        conn::at_once(forget).await?;
    }
    Ok(dropped)
}
