//! Scoring against a remote store ([`Remote`], Redis): a tokio worker never
//! waits on its I/O. A batch of payments (one unary call, or the events a
//! stream has received together) is planned synchronously (parsed,
//! validated, keys computed), its payment methods are resolved from the
//! local cache (one round trip for those it lacks), its windows are read
//! and updated in one round trip, and each payment is finished
//! synchronously (features, model, holdout, lists, decision) by the same
//! code as the fused path, against what came back. A store that fails or
//! does not answer by the batch's deadline makes its payments fail open:
//! `UNKNOWN`, allowed, reason `unknown_risk_level`.

use super::{Assessment, Compared, Engine, MAX_INSIGHTS, context, observation};
use crate::decision::{DecidedBy, RiskLevel};
use crate::domain::{MethodKind, Payment};
use crate::error::ServiceError;
use crate::features::Feature;
use crate::metrics::EventKind;
use crate::proto::wire;
use crate::state::{
    Commit, Decided, DecidedPayment, Key, Labelled, List, ListEntry, Observation, Observed,
    PaymentRecord, Remote, Store, StoreError, StoreStats, StoredMethod,
};
use crate::validate::{self, Clock};
use crate::view;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// The engine's store, answering one payment from what its batch resolved:
/// its payment method and its velocity. Everything else is the store's.
struct Resolved {
    store: Arc<dyn Store>,
    method: Option<Arc<StoredMethod>>,
    observed: Observed,
    /// What was decided of the payment, recorded with its batch's.
    decided: std::sync::OnceLock<Decided>,
}

impl Store for Resolved {
    fn key(&self, value: &[u8]) -> Key {
        self.store.key(value)
    }
    fn register(&self, method: StoredMethod) -> Result<Commit, StoreError> {
        self.store.register(method)
    }
    fn payment_method(&self, _id: &str) -> Result<Option<Arc<StoredMethod>>, StoreError> {
        Ok(self.method.clone())
    }
    fn observe(&self, _obs: &Observation<'_>) -> Observed {
        self.observed
    }
    fn record_amount_ratio(&self, _obs: &Observation<'_>, _ratio: u32, _spike: bool) {
        // The batch's round trip recorded it ([`Remote::observe_batch`]).
    }
    fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        self.store.payment(payment_id)
    }
    fn record_decision(&self, _payment_id: &str, _at_ms: i64, decided: Decided) {
        let _ = self.decided.set(decided);
    }
    fn decisions(&self) -> Result<Vec<DecidedPayment>, StoreError> {
        self.store.decisions()
    }
    fn label(
        &self,
        payment_id: &str,
        kind: crate::domain::FeedbackKind,
        block: &[(List, Key, ListEntry)],
    ) -> Result<Option<Labelled>, StoreError> {
        self.store.label(payment_id, kind, block)
    }
    fn list_contains(&self, list: List, key: Key) -> bool {
        self.store.list_contains(list, key)
    }
    fn lists_empty(&self) -> bool {
        self.store.lists_empty()
    }
    fn list_add(
        &self,
        list: List,
        key: Key,
        entry: ListEntry,
    ) -> Result<Option<Commit>, StoreError> {
        self.store.list_add(list, key, entry)
    }
    fn list_remove(&self, list: List, key: Key) -> Result<Option<Commit>, StoreError> {
        self.store.list_remove(list, key)
    }
    fn list_items(&self, list: List, after: Option<Key>, limit: usize) -> Vec<(Key, ListEntry)> {
        self.store.list_items(list, after, limit)
    }
    fn sync(&self) -> Commit {
        self.store.sync()
    }
    fn sweep(&self) -> usize {
        self.store.sweep()
    }
    fn stats(&self) -> StoreStats {
        self.store.stats()
    }
}

/// Awaits `fut` until `until`; a failure or a late answer is counted, and
/// so is the time of an answer that took a round trip (`trip` says which).
async fn by<T>(
    engine: &Engine,
    until: tokio::time::Instant,
    fut: impl Future<Output = Result<T, StoreError>>,
    trip: impl Fn(&T) -> bool,
) -> Option<T> {
    let started = Instant::now();
    match tokio::time::timeout_at(until, fut).await {
        Ok(Ok(v)) => {
            if trip(&v) {
                engine
                    .metrics()
                    .store_round_trip(started.elapsed().as_secs_f64());
            }
            Some(v)
        }
        Ok(Err(e)) => {
            engine.metrics().store_error(false);
            engine.warn_store(&e);
            None
        }
        Err(_) => {
            engine.metrics().store_error(true);
            engine.warn_store(&StoreError::Unavailable(
                "Redis did not answer before the call's deadline".into(),
            ));
            None
        }
    }
}

impl Engine {
    /// Logs a failed round trip, at most once every 10 seconds.
    fn warn_store(&self, e: &StoreError) {
        let now = super::system_now_ms();
        let last = self
            .inner
            .store_warned_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if now - last >= 10_000
            && self
                .inner
                .store_warned_ms
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::warn!(error = %e, "the store did not answer: payments fail open (counted in riskstream_store_fail_open_total; logged at most every 10 s)");
        }
    }

    /// Scores a batch of payments, each given as its request's bytes and
    /// the clock of its arrival, with the engine's store when it is remote
    /// ([`Engine::score`] for each otherwise). Each answer is what
    /// [`Engine::score`] gives; the store must answer by `until`, or the
    /// batch's valid payments fail open.
    pub async fn score_batch(
        &self,
        events: &[(Bytes, Clock)],
        until: tokio::time::Instant,
    ) -> Vec<Result<wire::Outcome, ServiceError>> {
        let store = Arc::clone(&self.inner.store);
        let Some(remote) = store.remote() else {
            return events
                .iter()
                .map(|(raw, clock)| self.score(raw, clock))
                .collect();
        };
        let started = Instant::now();
        let m = &self.inner.metrics;
        let payments: Vec<Result<Payment<'_>, ServiceError>> = events
            .iter()
            .map(|(raw, clock)| {
                m.event(EventKind::Payment);
                let v = view::payment_event(raw).inspect_err(|_| m.invalid(EventKind::Payment))?;
                let p =
                    validate::payment(&v, clock).inspect_err(|_| m.invalid(EventKind::Payment))?;
                Ok(p)
            })
            .collect();
        let store_ref = &*store;
        let methods = self.methods_of(remote, &payments, until).await;
        let mut outcomes: Vec<Option<wire::Outcome>> = (0..events.len()).map(|_| None).collect();
        let valid: Vec<usize> = (0..payments.len())
            .filter(|i| payments[*i].is_ok())
            .collect();
        let payment = |i: usize| payments[i].as_ref().ok();
        // The whole batch goes in one round trip: the store records each
        // new payment's amount ratio before it reads the next, so a card's
        // payments in one batch see each other as one by one.
        let observations: Vec<Observation<'_>> = match &methods {
            Some(methods) => valid
                .iter()
                .filter_map(|&i| Some(observation(store_ref, payment(i)?, methods[i].as_deref()).0))
                .collect(),
            None => Vec::new(),
        };
        let observed = match &methods {
            Some(_) => self.observe_run(remote, &observations, until).await,
            None => None,
        };
        let mut decisions: Vec<(&str, Decided)> = Vec::new();
        for (k, &i) in valid.iter().enumerate() {
            let Some(p) = payment(i) else { continue };
            let resolved = methods
                .as_ref()
                .zip(observed.as_ref())
                .and_then(|(m, o)| Some((m[i].clone(), *o.get(k)?)));
            let a = match resolved {
                Some((method, observed)) => {
                    let one = Resolved {
                        store: Arc::clone(&store),
                        method,
                        observed,
                        decided: std::sync::OnceLock::new(),
                    };
                    let a = self.assess_with(&one, p);
                    if let Some(d) = one.decided.get() {
                        decisions.push((p.payment_id, *d));
                    }
                    a
                }
                None => self.fail_open(p),
            };
            outcomes[i] = Some(a.into_outcome(&events[i].0, p));
            m.score_duration(started.elapsed().as_secs_f64());
        }
        if !decisions.is_empty() {
            // Kept for the holdout estimates; the answers do not wait for it.
            let saved = remote.record_decisions(decisions);
            let engine = self.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                match saved.await {
                    Ok(()) => engine
                        .metrics()
                        .store_round_trip(started.elapsed().as_secs_f64()),
                    Err(e) => {
                        engine.metrics().store_error(false);
                        engine.warn_store(&e);
                    }
                }
            });
        }
        payments
            .into_iter()
            .zip(outcomes)
            .map(|(p, o)| {
                p.and_then(|_| {
                    o.ok_or_else(|| {
                        ServiceError::Store(StoreError::Unavailable(
                            "the payment was not scored".into(),
                        ))
                    })
                })
            })
            .collect()
    }

    /// The payment methods the batch's payments name (by position; `None`
    /// for an invalid payment or an id not registered); `None` when the
    /// store did not give them by `until`.
    async fn methods_of(
        &self,
        remote: &dyn Remote,
        payments: &[Result<Payment<'_>, ServiceError>],
        until: tokio::time::Instant,
    ) -> Option<Vec<Option<Arc<StoredMethod>>>> {
        let named = |p: &Result<Payment<'_>, ServiceError>| {
            p.as_ref()
                .ok()
                .filter(|p| !p.method.id.is_empty())
                .is_some()
        };
        let ids: Vec<String> = payments
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .filter(|p| !p.method.id.is_empty())
            .map(|p| p.method.id.to_owned())
            .collect();
        let mut found = if ids.is_empty() {
            Vec::new()
        } else {
            by(self, until, remote.methods(ids), |(_, trip)| *trip)
                .await?
                .0
        }
        .into_iter();
        Some(
            payments
                .iter()
                .map(|p| {
                    if named(p) {
                        found.next().flatten()
                    } else {
                        None
                    }
                })
                .collect(),
        )
    }

    /// Records a batch's payments in one round trip: their velocity, in
    /// order; `None` when the store did not give it by `until`.
    async fn observe_run(
        &self,
        remote: &dyn Remote,
        observations: &[Observation<'_>],
        until: tokio::time::Instant,
    ) -> Option<Vec<Observed>> {
        if observations.is_empty() {
            return Some(Vec::new());
        }
        let batch = by(self, until, remote.observe_batch(observations), |_| true).await?;
        // List changes acknowledged before this round trip apply to it.
        if let Err(e) = remote.lists_at_least(batch.lists_version).await {
            self.warn_store(&e);
        }
        Some(batch.observed)
    }

    /// The assessment of a payment the store could not give state for:
    /// `UNKNOWN`, and the decision for it (allowed, `unknown_risk_level`).
    fn fail_open<'a>(&self, p: &'a Payment<'a>) -> Assessment<'a> {
        let inner = &*self.inner;
        let ctx = context(p, p.method.kind.unwrap_or(MethodKind::Card));
        let a = Assessment {
            level: RiskLevel::Unknown,
            verdict: inner.config.policy.decide(RiskLevel::Unknown, ctx),
            true_score: 0,
            reported_score: 0,
            true_probability: 0.0,
            reported_probability: 0.0,
            holdout: false,
            propensity: 1.0,
            decided_by: DecidedBy::ScoringFailed,
            allowed_propensity: 1.0,
            insights: [(Feature::SessionMissing, 0.0); MAX_INSIGHTS],
            insight_count: 0,
            model_version: None,
            compared: match &p.method.creation_session {
                Some(s) => Compared::Inline(&s.session_id),
                None => Compared::None,
            },
        };
        inner.metrics.store_fail_open();
        self.record(p, &a);
        a
    }
}
