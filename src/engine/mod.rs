//! The scoring engine: one synchronous call per request, from the request's
//! bytes to an answer, through a borrowed view, validation, state, features,
//! model, holdout and decision. The gRPC server, the tools and the benches all
//! call it; nothing here awaits, except the batched path of a remote store
//! ([`batch`]), which awaits one round trip between synchronous halves.

mod batch;

use crate::decision::holdout::Holdout;
use crate::decision::{Action, Context, DecidedBy, Policy, RiskLevel, Verdict};
use crate::decision_log::{DecisionLog, DecisionRecord};
use crate::domain::{MethodKind, ObjectKind, Payment, RegisteredMethod, Session};
use crate::error::ServiceError;
use crate::features::{self, Feature, FeatureVector, NUM_FEATURES};
use crate::fingerprint::Facts;
use crate::metrics::{EventKind, Metrics};
use crate::model::{ModelHandle, score_map::sigmoid};
use crate::proto::{self, wire};
use crate::state::{
    Commit, Decided, Key, List, ListEntry, ListSource, Observation, Store, StoredMethod,
};
use crate::validate::{self, Clock};
use crate::view;
use bytes::Bytes;
use prost::Message;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Scoring settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Thresholds and actions.
    pub policy: Policy,
    /// Holdout share and key.
    pub holdout: Holdout,
    /// Most insights returned per outcome.
    pub max_insights: usize,
    /// How far in the future a timestamp may be, in ms.
    pub max_future_skew_ms: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            policy: Policy::default(),
            holdout: Holdout::new(0.0, b""),
            max_insights: 5,
            max_future_skew_ms: 5 * 60 * 1000,
        }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    model: ModelHandle,
    config: EngineConfig,
    metrics: Metrics,
    log: Option<DecisionLog>,
    warned: AtomicBool,
    /// One holdout estimate at a time (each reads the whole store): held
    /// by the thread that computes it, until it is done.
    estimating: Arc<tokio::sync::Semaphore>,
    /// When a failed store round trip was last logged (ms since the epoch).
    store_warned_ms: std::sync::atomic::AtomicI64,
}

/// What [`Engine::prepare`] resolves for one payment.
struct Prepared {
    ctx: Context,
    features: Option<FeatureVector>,
    keys: Keys,
    /// The payment was recorded for the first time (not a retry).
    first: bool,
}

/// The store keys of a payment's customer values.
#[derive(Debug, Clone, Copy, Default)]
struct Keys {
    card: Option<Key>,
    email: Option<Key>,
    customer: Option<Key>,
    ip: Option<Key>,
    device: Option<Key>,
}

/// The store key of a non-empty text value (`None` for an empty one).
fn text_key(store: &dyn Store, v: &str) -> Option<Key> {
    (!v.is_empty()).then(|| store.key(v.as_bytes()))
}

/// The decision context of a payment whose method is of `kind`.
fn context(p: &Payment<'_>, kind: MethodKind) -> Context {
    Context {
        setup_intent: p.object == ObjectKind::SetupIntent,
        card: kind == MethodKind::Card,
    }
}

/// What the store records of a payment whose registered method is
/// `stored`, and the keys of its customer values.
fn observation<'a>(
    store: &dyn Store,
    p: &Payment<'a>,
    stored: Option<&StoredMethod>,
) -> (Observation<'a>, Keys) {
    let key = |v: &str| text_key(store, v);
    let keys = Keys {
        card: match p.method.card_fingerprint {
            Some(fp) => key(fp),
            None => stored.and_then(|s| s.card),
        },
        email: key(&p.customer.email).or(stored.and_then(|s| s.email)),
        customer: key(&p.customer.id).or(stored.and_then(|s| s.customer)),
        ip: p
            .session
            .as_ref()
            .and_then(|s| s.ip)
            .map(|ip| ip_key(store, ip)),
        device: p.session.as_ref().and_then(|s| key(&s.device_id)),
    };
    let obs = Observation {
        payment_id: p.payment_id,
        at_ms: p.created_at_ms,
        amount: p.amount,
        card: keys.card,
        email: keys.email,
        ip: keys.ip,
        device: keys.device,
        merchant: key(p.merchant_id),
    };
    (obs, keys)
}

/// The store key of an IP address: its octets, IPv4-mapped addresses as IPv4.
pub(crate) fn ip_key(store: &dyn Store, ip: IpAddr) -> Key {
    match ip.to_canonical() {
        IpAddr::V4(v4) => store.key(&v4.octets()),
        IpAddr::V6(v6) => store.key(&v6.octets()),
    }
}

/// `p` as the store keeps it (single precision), never rounded onto 0 or
/// 1 when it is not: a payment that could have gone the other way stays
/// one that could.
fn single(p: f64) -> f32 {
    let q = p as f32;
    if q >= 1.0 && p < 1.0 {
        1.0 - f32::EPSILON / 2.0
    } else if q <= 0.0 && p > 0.0 {
        f32::MIN_POSITIVE
    } else {
        q
    }
}

/// The scoring engine. Cheap to clone; every clone shares state and model.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Up to this many insights are kept per assessment.
pub const MAX_INSIGHTS: usize = 8;

/// The full result of assessing one payment.
#[derive(Debug, Clone)]
pub struct Assessment<'a> {
    /// Reported risk level.
    pub level: RiskLevel,
    /// The decision.
    pub verdict: Verdict,
    /// The model's score (0 when not scored).
    pub true_score: u32,
    /// The score reported (differs from the true one only in the holdout).
    pub reported_score: u32,
    /// The model's calibrated probability (0 when not scored).
    pub true_probability: f64,
    /// The probability reported.
    pub reported_probability: f64,
    /// Whether the payment fell in the holdout.
    pub holdout: bool,
    /// Probability of the decision taken, over the holdout draw.
    pub propensity: f64,
    /// What decided: the model's policy, a list, or nothing.
    pub decided_by: DecidedBy,
    /// Probability, over the holdout draw, that the payment is let through
    /// (decision not `Block`) given its true score: 0 or 1 when the model's
    /// policy did not decide.
    pub allowed_propensity: f64,
    /// Largest contributions to the reported score, largest first.
    pub insights: [(Feature, f64); MAX_INSIGHTS],
    /// How many of `insights` are set.
    pub insight_count: usize,
    /// Version of the model consulted, if any.
    pub model_version: Option<Bytes>,
    /// The creation session compared.
    pub compared: Compared<'a>,
}

/// `s` as a slice of `raw` when it lies inside it (no copy), else a copy.
pub fn share(raw: &Bytes, s: &str) -> Bytes {
    let base = raw.as_ptr() as usize;
    let start = s.as_ptr() as usize;
    if !s.is_empty() && start >= base && start + s.len() <= base + raw.len() {
        raw.slice(start - base..start - base + s.len())
    } else {
        Bytes::copy_from_slice(s.as_bytes())
    }
}

impl Assessment<'_> {
    /// The wire outcome for `payment`, whose strings lie in `raw`.
    pub fn into_outcome(self, raw: &Bytes, payment: &Payment<'_>) -> wire::Outcome {
        let insights = self.insights[..self.insight_count]
            .iter()
            .map(|(f, c)| wire::Insight {
                feature: Bytes::from_static(f.name().as_bytes()),
                contribution: *c,
            })
            .collect();
        wire::Outcome {
            payment_id: share(raw, payment.payment_id),
            risk_score: self.reported_score,
            risk_level: risk_level_proto(self.level) as i32,
            decision: action_proto(self.verdict.action) as i32,
            reason: Bytes::from_static(self.verdict.reason.as_bytes()),
            seller_message: Bytes::from_static(self.verdict.seller_message.as_bytes()),
            fraud_probability: self.reported_probability,
            rule: Bytes::from_static(self.verdict.rule.as_bytes()),
            session_id: payment
                .session
                .as_ref()
                .map(|s| share(raw, &s.session_id))
                .unwrap_or_default(),
            creation_session_id: match &self.compared {
                Compared::None => Bytes::new(),
                Compared::Inline(id) => share(raw, id),
                Compared::Registered(m) => m.creation_session_id.clone(),
            },
            model_version: self.model_version.unwrap_or_default(),
            insights,
            error: None,
        }
    }
}

/// The creation session an assessment compared with the payment session.
#[derive(Debug, Clone)]
pub enum Compared<'a> {
    /// No creation session was known.
    None,
    /// The one sent inline with the payment (its id).
    Inline(&'a str),
    /// The registered payment method's.
    Registered(Arc<StoredMethod>),
}

/// The proto value of a risk level.
pub fn risk_level_proto(l: RiskLevel) -> wire::RiskLevel {
    match l {
        RiskLevel::Normal => wire::RiskLevel::Normal,
        RiskLevel::Elevated => wire::RiskLevel::Elevated,
        RiskLevel::Highest => wire::RiskLevel::Highest,
        RiskLevel::NotAssessed => wire::RiskLevel::NotAssessed,
        RiskLevel::Unknown => wire::RiskLevel::Unknown,
    }
}

/// The proto value of an action.
pub fn action_proto(a: Action) -> wire::Decision {
    match a {
        Action::Allow => wire::Decision::Allow,
        Action::Review => wire::Decision::Review,
        Action::Block => wire::Decision::Block,
        Action::Request3ds => wire::Decision::Request3ds,
    }
}

/// The outcome a stream returns for a rejected event.
pub fn error_outcome(payment_id: Bytes, err: &ServiceError) -> wire::Outcome {
    let message = match err {
        ServiceError::Invalid(e) => e.message.clone(),
        ServiceError::Malformed(e) => e.reason(),
        ServiceError::NotFound { message, .. } => message.clone(),
        other => other.to_string(),
    };
    wire::Outcome {
        payment_id,
        error: Some(wire::EventError {
            code: Bytes::from_static(err.code().name().as_bytes()),
            field: Bytes::copy_from_slice(err.field().as_bytes()),
            message: Bytes::from(message),
        }),
        ..Default::default()
    }
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Top `k` of `values` by value, largest first, skipping zeros and NaN
/// (ties in feature order): one pass keeping the best `k` sorted.
fn top_contributions(
    values: &[f64; NUM_FEATURES],
    k: usize,
) -> ([(Feature, f64); MAX_INSIGHTS], usize) {
    let mut out = [(Feature::SessionMissing, 0.0); MAX_INSIGHTS];
    let k = k.min(MAX_INSIGHTS);
    if k == 0 {
        return (out, 0);
    }
    let mut val = [f64::NEG_INFINITY; MAX_INSIGHTS];
    let mut idx = [0usize; MAX_INSIGHTS];
    let mut n = 0;
    for (i, &v) in values.iter().enumerate() {
        if v == 0.0 || v.is_nan() || v <= val[k - 1] {
            continue;
        }
        let mut p = k - 1;
        while p > 0 && val[p - 1] < v {
            val[p] = val[p - 1];
            idx[p] = idx[p - 1];
            p -= 1;
        }
        val[p] = v;
        idx[p] = i;
        n = (n + 1).min(k);
    }
    for j in 0..n {
        out[j] = (features::FEATURES[idx[j]].0, val[j]);
    }
    (out, n)
}

impl Engine {
    /// An engine over `store` scoring with `model`.
    pub fn new(
        store: Arc<dyn Store>,
        model: ModelHandle,
        config: EngineConfig,
        metrics: Metrics,
        log: Option<DecisionLog>,
    ) -> Engine {
        if let Some(m) = model.current() {
            metrics.model_loaded(m.version());
        }
        Engine {
            inner: Arc::new(Inner {
                store,
                model,
                config,
                metrics,
                log,
                warned: AtomicBool::new(false),
                estimating: Arc::new(tokio::sync::Semaphore::new(1)),
                store_warned_ms: std::sync::atomic::AtomicI64::new(i64::MIN / 2),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The model handle.
    pub fn model(&self) -> &ModelHandle {
        &self.inner.model
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Holdout estimates over the payments the store remembers
    /// ([`crate::policy::live`]), as `RiskAdmin.EvaluatePolicy` answers
    /// them (an empty threshold list asks for the live highest-risk
    /// threshold), with the version of the model serving now. One at a
    /// time, on a blocking thread: a caller waits for the one being
    /// computed, and one that gives up while it waits starts nothing.
    pub async fn evaluate_policy(
        &self,
        request: crate::policy::live::Request,
    ) -> Result<(crate::policy::Report, String), ServiceError> {
        let interrupted = || {
            ServiceError::Store(crate::state::StoreError::Unavailable(
                "the holdout estimate was interrupted".into(),
            ))
        };
        let permit = Arc::clone(&self.inner.estimating)
            .acquire_owned()
            .await
            .map_err(|_| interrupted())?;
        let engine = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            engine.evaluate_policy_now(&request)
        })
        .await
        .map_err(|_| interrupted())?
    }

    /// [`Engine::evaluate_policy`], here and now.
    fn evaluate_policy_now(
        &self,
        request: &crate::policy::live::Request,
    ) -> Result<(crate::policy::Report, String), ServiceError> {
        let threshold = self.inner.config.policy.highest_threshold;
        let report = crate::policy::live::evaluate(&*self.inner.store, request, threshold)?;
        let version = self
            .inner
            .model
            .guard()
            .as_ref()
            .map(|m| String::from_utf8_lossy(m.version_bytes()).into_owned())
            .unwrap_or_default();
        Ok((report, version))
    }

    /// The decision log, if one is configured.
    pub fn decision_log(&self) -> Option<&DecisionLog> {
        self.inner.log.as_ref()
    }

    /// Validation clock at the current system time.
    pub fn clock(&self) -> Clock {
        Clock {
            now_ms: system_now_ms(),
            max_future_skew_ms: self.inner.config.max_future_skew_ms,
        }
    }

    /// `RegisterPaymentMethod`, from the request's bytes; returns the id and
    /// the commit to await before acknowledging it.
    pub fn register(&self, raw: &[u8], clock: &Clock) -> Result<(String, Commit), ServiceError> {
        let m = &self.inner.metrics;
        m.event(EventKind::Register);
        let method = view::register(raw)
            .map_err(ServiceError::from)
            .and_then(|v| validate::registration(&v, clock).map_err(ServiceError::from))
            .inspect_err(|_| m.invalid(EventKind::Register))?;
        let id = method.id.clone();
        let store = &self.inner.store;
        let stored = StoredMethod::of(method, |v| store.key(v));
        let commit = store.register(stored)?;
        Ok((id, commit))
    }

    /// `GetPaymentMethod`, from the request's bytes.
    pub fn get_payment_method(&self, raw: &[u8]) -> Result<wire::PaymentMethod, ServiceError> {
        let m = &self.inner.metrics;
        m.event(EventKind::Get);
        let v = view::get(raw).inspect_err(|_| m.invalid(EventKind::Get))?;
        let id = validate::get_request(&v).inspect_err(|_| m.invalid(EventKind::Get))?;
        match self.inner.store.payment_method(id)? {
            Some(pm) => Ok(method_proto(&pm.method)),
            None => Err(ServiceError::NotFound {
                field: "payment_method_id",
                message: "no payment method is registered with this id".into(),
            }),
        }
    }

    /// `ReportFeedback`, from the request's bytes: records the label; fraud
    /// labels add the payment's email and card fingerprint to the default
    /// block lists. Returns the lists that gained an entry and the commit to
    /// await before acknowledging it.
    pub fn feedback(
        &self,
        raw: &[u8],
        clock: &Clock,
    ) -> Result<(Vec<&'static str>, Commit), ServiceError> {
        let m = &self.inner.metrics;
        m.event(EventKind::Feedback);
        let v = view::feedback(raw).inspect_err(|_| m.invalid(EventKind::Feedback))?;
        let fb = validate::feedback(&v, clock).inspect_err(|_| m.invalid(EventKind::Feedback))?;
        let store = &self.inner.store;
        let Some(rec) = store.payment(fb.payment_id)? else {
            return Err(ServiceError::NotFound {
                field: "payment_id",
                message: "no recent payment has this id".into(),
            });
        };
        let block: Vec<(List, Key, ListEntry)> = if fb.kind.is_fraud() {
            let entry = ListEntry {
                value: String::new(),
                added_at_ms: clock.now_ms,
                reason: format!("{} reported", fb.kind.as_str()),
                expires_at_ms: 0,
                source: ListSource::Feedback,
                payment_id: fb.payment_id.to_owned(),
            };
            [
                (List::BlockCardFingerprint, rec.card),
                (List::BlockEmail, rec.email),
            ]
            .into_iter()
            .filter_map(|(list, key)| Some((list, key?, entry.clone())))
            .collect()
        } else {
            Vec::new()
        };
        let labelled = store
            .label(fb.payment_id, fb.kind, &block)?
            .ok_or_else(|| ServiceError::NotFound {
                field: "payment_id",
                message: "no recent payment has this id".into(),
            })?;
        m.feedback(fb.kind);
        let mut updated = Vec::new();
        for list in labelled.lists_added {
            m.list_addition(list);
            updated.push(list.name());
        }
        Ok((updated, labelled.commit))
    }

    /// `Score`, from the request's bytes: parses, validates and assesses one
    /// payment event.
    pub fn score(&self, raw: &Bytes, clock: &Clock) -> Result<wire::Outcome, ServiceError> {
        let started = Instant::now();
        let m = &self.inner.metrics;
        m.event(EventKind::Payment);
        let v = view::payment_event(raw).inspect_err(|_| m.invalid(EventKind::Payment))?;
        let payment =
            validate::payment(&v, clock).inspect_err(|_| m.invalid(EventKind::Payment))?;
        let a = self.assess(&payment);
        let outcome = a.into_outcome(raw, &payment);
        m.score_duration(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// Like [`Engine::score`], but a rejected event yields an outcome with
    /// `error` set (the stream form), naming the event's `payment_id` when
    /// it is valid UTF-8 of at most [`validate::MAX_ID_LEN`] bytes (empty
    /// otherwise: every client must be able to decode the outcome).
    pub fn score_or_error(&self, raw: &Bytes, clock: &Clock) -> wire::Outcome {
        match self.score(raw, clock) {
            Ok(o) => o,
            Err(e) => self.error_for(raw, &e),
        }
    }

    /// The stream outcome of the rejected event `raw`, naming its
    /// `payment_id` as [`Engine::score_or_error`] does.
    pub fn error_for(&self, raw: &Bytes, e: &ServiceError) -> wire::Outcome {
        let id = view::salvage_payment_id(raw);
        error_outcome(raw.slice_ref(id), e)
    }

    /// [`Engine::register`] for a public message (tools and tests).
    pub fn register_message(
        &self,
        req: &proto::RegisterPaymentMethodRequest,
        clock: &Clock,
    ) -> Result<String, ServiceError> {
        let (id, commit) = self.register(&req.encode_to_vec(), clock)?;
        commit.wait()?;
        Ok(id)
    }

    /// [`Engine::score`] for a public message (tools and tests).
    pub fn score_message(
        &self,
        ev: &proto::PaymentEvent,
        clock: &Clock,
    ) -> Result<wire::Outcome, ServiceError> {
        self.score(&Bytes::from(ev.encode_to_vec()), clock)
    }

    /// [`Engine::features`] for a public message: parses, validates and
    /// records it, and returns its features (what training collects).
    pub fn features_message(
        &self,
        ev: &proto::PaymentEvent,
        clock: &Clock,
    ) -> Result<Option<FeatureVector>, ServiceError> {
        let bytes = ev.encode_to_vec();
        let v = view::payment_event(&bytes)?;
        let p = validate::payment(&v, clock)?;
        Ok(self.features(&p))
    }

    /// [`Engine::feedback`] for a public message (tools and tests).
    pub fn feedback_message(
        &self,
        ev: &proto::FeedbackEvent,
        clock: &Clock,
    ) -> Result<Vec<&'static str>, ServiceError> {
        let (lists, commit) = self.feedback(&ev.encode_to_vec(), clock)?;
        commit.wait()?;
        Ok(lists)
    }

    /// Records a validated payment and computes its features, without
    /// scoring it (what training collects). `None` when the payment is not
    /// assessed (other method types, opted out, recurring after the first).
    pub fn features(&self, p: &Payment<'_>) -> Option<FeatureVector> {
        let store = &*self.inner.store;
        let registered = self.registered(store, p);
        self.prepare(store, p, registered.as_deref()).features
    }

    /// The registered payment method a payment names, if any. An id the
    /// store does not hold is counted and scored without a creation session
    /// (a lost or never-seen registration must not break checkout); so is
    /// one the store could not be asked about (only a remote store fails,
    /// and the server scores with one through [`Engine::score_batch`]).
    fn registered(&self, store: &dyn Store, p: &Payment<'_>) -> Option<Arc<StoredMethod>> {
        if p.method.id.is_empty() {
            return None;
        }
        let registered = store.payment_method(p.method.id).ok().flatten();
        if registered.is_none() {
            self.inner.metrics.unknown_payment_method();
        }
        registered
    }

    /// Resolves the payment method, records the payment in the store and
    /// computes its features.
    fn prepare(
        &self,
        store: &dyn Store,
        p: &Payment<'_>,
        stored: Option<&StoredMethod>,
    ) -> Prepared {
        let (obs, keys) = observation(store, p, stored);
        let reg = stored.map(|s| &s.method);
        // A method of unknown type (an id the store does not hold) is
        // scored as the card it nearly always is.
        let kind = p
            .method
            .kind
            .or(reg.map(|r| r.kind))
            .unwrap_or(MethodKind::Card);
        let card_country = p.method.card_country.or(reg.and_then(|r| r.card_country));
        let method_created_at_ms = p.method.created_at_ms.or(reg.map(|r| r.created_at_ms));
        // Inline values win over the registered ones.
        let inline_facts = p.method.creation_session.as_ref().map(Facts::of);
        let creation = inline_facts.or(stored.and_then(|s| s.creation));
        let observed = store.observe(&obs);
        let velocity = observed.velocity;
        if observed.first && obs.card.is_some() {
            // The payment's amount against its card's history before it: a
            // fact the card's later payments see as their windows' peak.
            let ratio = features::card_amount_ratio(&obs, &velocity);
            if ratio > 0 {
                store.record_amount_ratio(&obs, ratio, ratio >= features::SPIKE_RATIO);
            }
        }

        let ctx = context(p, kind);
        let not_assessed =
            !kind.is_assessed() || p.opt_out || p.recurring.as_ref().is_some_and(|r| !r.initial);
        let features = (!not_assessed).then(|| {
            features::extract(&features::Inputs {
                payment: p,
                creation: creation.as_ref(),
                card_country,
                method_created_at_ms,
                velocity: &velocity,
            })
        });
        Prepared {
            ctx,
            features,
            keys,
            first: observed.first,
        }
    }

    /// Assesses a validated payment: records it, scores it and decides.
    pub fn assess<'a>(&self, p: &'a Payment<'a>) -> Assessment<'a> {
        self.assess_with(&*self.inner.store, p)
    }

    /// [`Engine::assess`] against `store` (the engine's, or what a batch's
    /// round trip resolved).
    fn assess_with<'a>(&self, store: &dyn Store, p: &'a Payment<'a>) -> Assessment<'a> {
        let inner = &*self.inner;
        let registered = self.registered(store, p);
        let Prepared {
            ctx,
            features,
            keys,
            first,
        } = self.prepare(store, p, registered.as_deref());
        let compared = match (&p.method.creation_session, registered) {
            (Some(s), _) => Compared::Inline(&s.session_id),
            (None, Some(r)) if r.method.creation_session.is_some() => Compared::Registered(r),
            _ => Compared::None,
        };

        let mut a = Assessment {
            level: RiskLevel::NotAssessed,
            verdict: inner.config.policy.decide(RiskLevel::NotAssessed, ctx),
            true_score: 0,
            reported_score: 0,
            true_probability: 0.0,
            reported_probability: 0.0,
            holdout: false,
            propensity: 1.0,
            decided_by: DecidedBy::NotAssessed,
            allowed_propensity: 1.0,
            insights: [(Feature::SessionMissing, 0.0); MAX_INSIGHTS],
            insight_count: 0,
            model_version: None,
            compared,
        };

        if let Some(x) = features {
            let model = inner.model.guard();
            let prediction = match &*model {
                Some(m) => m.predict(&x).map(|pr| (m, pr)),
                None => Err(crate::model::ModelError::Missing),
            };
            match prediction {
                Ok((m, pr)) => {
                    a.model_version = Some(m.version_bytes().clone());
                    a.true_score = pr.score;
                    a.true_probability = pr.probability;
                    let mut contributions = pr.contributions;
                    let rate = inner
                        .config
                        .holdout
                        .rate_at(pr.score, inner.config.policy.block_threshold());
                    match inner.config.holdout.draw(p.payment_id, rate) {
                        Some(score) => {
                            let z = m.score_map().logit_of_score(score);
                            a.holdout = true;
                            a.reported_score = score;
                            a.reported_probability = sigmoid(z);
                            // Rescale so the insights stay consistent with the reported score.
                            let moved = pr.logit - pr.base;
                            let factor = if moved.abs() > 1e-9 {
                                (z - pr.base) / moved
                            } else {
                                0.0
                            };
                            contributions.iter_mut().for_each(|c| *c *= factor);
                            inner.metrics.holdout();
                        }
                        None => {
                            a.reported_score = pr.score;
                            a.reported_probability = pr.probability;
                        }
                    }
                    a.level = inner.config.policy.level(a.reported_score);
                    (a.insights, a.insight_count) =
                        top_contributions(&contributions, inner.config.max_insights);
                    inner.metrics.risk_score(a.reported_score);
                }
                Err(e) => {
                    if !inner.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "scoring failed; failing open (logged once, counted in riskstream_model_errors_total)");
                    }
                    inner.metrics.model_error();
                    a.level = RiskLevel::Unknown;
                }
            }
        }

        let list_hit = if store.lists_empty() {
            None
        } else {
            self.list_hit(store, &keys)
        };
        a.verdict = match list_hit {
            Some(list) => Policy::list_verdict(list),
            None => inner.config.policy.decide(a.level, ctx),
        };
        a.decided_by = match (list_hit, a.level) {
            (Some(_), _) => DecidedBy::List,
            (None, RiskLevel::NotAssessed) => DecidedBy::NotAssessed,
            (None, RiskLevel::Unknown) => DecidedBy::ScoringFailed,
            (None, RiskLevel::Normal | RiskLevel::Elevated | RiskLevel::Highest) => {
                DecidedBy::Model
            }
        };
        if a.decided_by == DecidedBy::Model {
            let policy = &inner.config.policy;
            // The rate the draw above used: the propensities follow the policy exactly.
            let rate = inner
                .config
                .holdout
                .rate_at(a.true_score, policy.block_threshold());
            a.propensity = policy.propensity(a.true_score, a.verdict.action, rate, ctx);
            a.allowed_propensity = policy.allowed_propensity(a.true_score, rate, ctx);
        } else {
            a.allowed_propensity = if a.verdict.action == Action::Block {
                0.0
            } else {
                1.0
            };
        }
        if first {
            store.record_decision(
                p.payment_id,
                p.created_at_ms,
                Decided {
                    decided_by: a.decided_by,
                    true_score: a.true_score.min(100) as u8,
                    allowed: a.verdict.action != Action::Block,
                    holdout: a.holdout,
                    allowed_propensity: single(a.allowed_propensity),
                },
            );
        }
        self.record(p, &a);
        a
    }

    /// Counts the decision of `a` and writes it to the decision log.
    fn record(&self, p: &Payment<'_>, a: &Assessment<'_>) {
        let inner = &*self.inner;
        inner.metrics.decision(a.verdict.action, a.level);
        if let Some(log) = &inner.log {
            log.write(DecisionRecord {
                ts_ms: p.created_at_ms,
                payment_id: p.payment_id.to_owned(),
                model_version: a
                    .model_version
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
                risk_level: a.level.as_str().to_owned(),
                decision: a.verdict.action.as_str().to_owned(),
                reason: a.verdict.reason.to_owned(),
                true_score: a.true_score,
                reported_score: a.reported_score,
                true_probability: a.true_probability,
                reported_probability: a.reported_probability,
                holdout: a.holdout,
                propensity: a.propensity,
                decided_by: Some(a.decided_by),
                allowed_propensity: Some(a.allowed_propensity),
            });
        }
    }

    /// The first list the payment matches: allow lists before block lists.
    fn list_hit(&self, store: &dyn Store, keys: &Keys) -> Option<List> {
        let checks = |lists: [List; 5]| {
            lists
                .into_iter()
                .zip([keys.card, keys.email, keys.ip, keys.device, keys.customer])
                .find(|(l, k)| k.is_some_and(|k| store.list_contains(*l, k)))
                .map(|(l, _)| l)
        };
        checks([
            List::AllowCardFingerprint,
            List::AllowEmail,
            List::AllowIp,
            List::AllowDeviceId,
            List::AllowCustomerId,
        ])
        .or_else(|| {
            checks([
                List::BlockCardFingerprint,
                List::BlockEmail,
                List::BlockIp,
                List::BlockDeviceId,
                List::BlockCustomerId,
            ])
        })
    }
}

fn text(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn session_proto(s: &Session<'_>) -> wire::Session {
    wire::Session {
        session_id: text(&s.session_id),
        captured_at_ms: s.captured_at_ms,
        ip: s
            .ip
            .map(|ip| Bytes::from(ip.to_string()))
            .unwrap_or_default(),
        user_agent: text(&s.user_agent),
        accept_language: text(&s.accept_language),
        timezone: text(&s.timezone),
        utc_offset_minutes: s.utc_offset_minutes,
        screen_width: s.screen_width,
        screen_height: s.screen_height,
        color_depth: s.color_depth,
        device_id: text(&s.device_id),
        platform: text(&s.platform),
    }
}

fn method_proto(m: &RegisteredMethod) -> wire::PaymentMethod {
    let kind = match m.kind {
        MethodKind::Card => wire::PaymentMethodType::Card,
        MethodKind::SepaDebit => wire::PaymentMethodType::SepaDebit,
        MethodKind::AchDebit => wire::PaymentMethodType::AchDebit,
        MethodKind::Other => wire::PaymentMethodType::Other,
    };
    wire::PaymentMethod {
        id: text(&m.id),
        r#type: kind as i32,
        card_fingerprint: m.card_fingerprint.as_deref().map(text).unwrap_or_default(),
        card_country: m
            .card_country
            .map(|c| Bytes::copy_from_slice(&c))
            .unwrap_or_default(),
        created_at_ms: m.created_at_ms,
        creation_session: m.creation_session.as_ref().map(session_proto),
        customer: Some(wire::Customer {
            id: text(&m.customer.id),
            email: text(&m.customer.email),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_propensity_kept_in_single_precision_stays_strictly_inside_when_it_was() {
        assert_eq!(single(1.0), 1.0);
        assert_eq!(single(0.0), 0.0);
        assert_eq!(single(0.05), 0.05f32);
        assert!(single(1.0 - 1e-9) < 1.0);
        assert!(single(1e-50) > 0.0);
    }

    #[test]
    fn top_contributions_are_sorted_and_bounded() {
        let mut v = [0.0; NUM_FEATURES];
        v[3] = 0.5;
        v[7] = 2.0;
        v[9] = -1.0;
        v[11] = 1.0;
        v[20] = 0.1;
        let (top, n) = top_contributions(&v, 3);
        assert_eq!(n, 3);
        let got: Vec<f64> = top[..n].iter().map(|(_, c)| *c).collect();
        assert_eq!(got, vec![2.0, 1.0, 0.5]);
        assert_eq!(top[0].0 as usize, 7);
        let (_, n) = top_contributions(&v, 0);
        assert_eq!(n, 0);
        // Against a full sort, on many vectors.
        let mut seed = 7u64;
        for _ in 0..500 {
            let mut v = [0.0; NUM_FEATURES];
            for x in v.iter_mut() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *x = if seed >> 60 == 0 {
                    0.0
                } else {
                    ((seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
                };
            }
            let mut all: Vec<(usize, f64)> = v
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, x)| *x != 0.0)
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let (top, n) = top_contributions(&v, 5);
            assert_eq!(n, all.len().min(5));
            for j in 0..n {
                assert_eq!(top[j].1, all[j].1);
            }
        }
    }
}
