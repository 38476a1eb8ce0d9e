//! Recording a batch of payments: counted in their entities' windows (once
//! per payment id), their velocity read back, each new payment's amount
//! ratio recorded before the next is read.
//!
//! On one Redis the batch is one [`OBSERVE`](super::scripts) script call:
//! one round trip, atomic. On a cluster a script may name keys of one slot
//! only, and a payment's entities are in as many slots; a batch there takes
//! two round trips, each sent to every node at once: first each payment is
//! claimed in its own slot (whether it is new decides what is counted, on
//! any replica), then each entity of the batch counts its new payments and
//! reads its windows in one script call (all of the batch's payments of
//! that entity, in order), beside the indexes, the latest event time and
//! the lists version. A payment's amount ratio, which its card's script
//! records in the card's window, is then written on its record (which
//! only a later fraud report reads) without waiting for it.

use super::conn::{self, Conn, at_once};
use super::scripts::{
    CARD_SCRIPT, CLAIM_SCRIPT, MERCHANT_SCRIPT, OBSERVE_SCRIPT, RAISE_SCRIPT, RATIO_RECORD_SCRIPT,
    SHORT_SCRIPT,
};
use super::{CARD_HORIZON_HOURS, MERCHANT_HORIZON_HOURS, Names, with_scripts};
use crate::features::SPIKE_RATIO;
use crate::state::long_window::{HOUR_MS, Sums};
use crate::state::window::DAY_MS;
use crate::state::{BoxFuture, Key, Observed, ObservedBatch, Velocity};
use redis::{RedisError, RedisResult};
use std::collections::BTreeMap;

/// Numbers per payment in the observe script's answer.
const PER_PAYMENT: usize = 48;
/// Numbers per payment in the card script's answer.
const PER_CARD: usize = 22;
/// Numbers per payment in the short window script's answer.
const PER_SHORT: usize = 3;
/// Numbers per payment in the merchant script's answer.
const PER_MERCHANT: usize = 18;

/// One payment to record, owned (it crosses to the I/O thread).
#[derive(Debug, Clone)]
pub(super) struct PlannedPayment {
    /// The hash of its id.
    pub(super) id: String,
    pub(super) at_ms: i64,
    pub(super) amount: i64,
    pub(super) card: Option<Key>,
    pub(super) email: Option<Key>,
    pub(super) ip: Option<Key>,
    pub(super) device: Option<Key>,
    pub(super) merchant: Option<Key>,
}

/// The TTLs of a batch's keys.
struct Ttls {
    payment: i64,
    short: i64,
    card: i64,
    merchant: i64,
}

impl Ttls {
    fn of(retention_ms: i64) -> Ttls {
        Ttls {
            payment: retention_ms,
            short: DAY_MS + HOUR_MS,
            card: (CARD_HORIZON_HOURS + 24) * HOUR_MS,
            merchant: (MERCHANT_HORIZON_HOURS + 24) * HOUR_MS,
        }
    }
}

/// A key as the scripts take it: hex, empty when there is none.
fn hex(k: Option<Key>) -> String {
    k.map_or_else(String::new, |k| format!("{:016x}", k.0))
}

/// Records `batch` and returns its velocity (`with_ratios`: each new
/// payment's amount ratio is recorded too).
pub(super) async fn observe(
    conn: &Conn,
    names: &Names,
    retention_ms: i64,
    with_ratios: bool,
    batch: &[PlannedPayment],
) -> RedisResult<ObservedBatch> {
    if conn.is_cluster() {
        on_cluster(conn, names, retention_ms, with_ratios, batch).await
    } else {
        on_one(conn, names, retention_ms, with_ratios, batch).await
    }
}

fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::UnexpectedReturnType, what))
}

/// One Redis: the whole batch in one script call.
async fn on_one(
    conn: &Conn,
    names: &Names,
    retention_ms: i64,
    with_ratios: bool,
    batch: &[PlannedPayment],
) -> RedisResult<ObservedBatch> {
    let ttl = Ttls::of(retention_ms);
    let values: Vec<i64> = with_scripts(conn, |mut c| {
        let mut inv = OBSERVE_SCRIPT.prepare_invoke();
        inv.key(names.meta("watermark")).key(names.lists_version());
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
            .arg(ttl.payment)
            .arg(ttl.short)
            .arg(ttl.card)
            .arg(ttl.merchant)
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
        return Err(unexpected(
            "the observe script answered an unexpected number of values",
        ));
    }
    Ok(ObservedBatch {
        lists_version: u64::try_from(values[0]).unwrap_or(0),
        observed: values[1..].chunks(PER_PAYMENT).map(observed_of).collect(),
    })
}

/// Each entity of a batch and the positions of its payments, in order.
fn groups(
    batch: &[PlannedPayment],
    key: impl Fn(&PlannedPayment) -> Option<Key>,
) -> Vec<(Key, Vec<usize>)> {
    let mut g: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, p) in batch.iter().enumerate() {
        if let Some(k) = key(p) {
            g.entry(k.0).or_default().push(i);
        }
    }
    g.into_iter().map(|(k, v)| (Key(k), v)).collect()
}

/// What one entity's script answered: the positions of its payments, the
/// numbers per payment and where they go in the 48.
struct Answer {
    payments: Vec<usize>,
    values: Vec<i64>,
    per: usize,
    at: usize,
}

/// A cluster: claims, then the entities' scripts, two round trips.
async fn on_cluster(
    conn: &Conn,
    names: &Names,
    retention_ms: i64,
    with_ratios: bool,
    batch: &[PlannedPayment],
) -> RedisResult<ObservedBatch> {
    let ttl = Ttls::of(retention_ms);
    // A payment twice in the batch is claimed once; its second time is a
    // retry whatever the claim says.
    let mut claimed_at: BTreeMap<&str, usize> = BTreeMap::new();
    let mut claims: Vec<BoxFuture<'static, RedisResult<i64>>> = Vec::new();
    let mut claim_of = Vec::with_capacity(batch.len());
    for p in batch {
        if claimed_at.contains_key(p.id.as_str()) {
            claim_of.push(None);
            continue;
        }
        claimed_at.insert(&p.id, claims.len());
        claim_of.push(Some(claims.len()));
        let mut inv = CLAIM_SCRIPT.prepare_invoke();
        inv.key(names.payment(&p.id))
            .arg(p.at_ms)
            .arg(p.amount)
            .arg(ttl.payment);
        for k in [p.card, p.email, p.ip, p.device, p.merchant] {
            inv.arg(hex(k));
        }
        let mut c = conn.clone();
        claims.push(Box::pin(
            async move { inv.invoke_async::<i64>(&mut c).await },
        ));
    }
    let mut c = conn.clone();
    let version = redis::cmd("GET").arg(names.lists_version()).clone();
    let version = tokio::spawn(async move { version.query_async::<Option<u64>>(&mut c).await });
    let claimed = at_once(claims).await?;
    let version = version.await.map_err(conn::stopped)??;
    let first: Vec<bool> = claim_of
        .iter()
        .map(|c| c.is_some_and(|i| claimed.get(i) == Some(&1)))
        .collect();
    let flag = |i: usize| u8::from(first[i]);

    // Every entity of the batch at once, with the indexes and the latest
    // event time.
    let mut answers: Vec<BoxFuture<'static, RedisResult<Answer>>> = Vec::new();
    let spike_ratio = if with_ratios { SPIKE_RATIO } else { 0 };
    for (card, payments) in groups(batch, |p| p.card) {
        let mut inv = CARD_SCRIPT.prepare_invoke();
        inv.key(names.entity("c", card, ":s"))
            .key(names.entity("c", card, ":l"))
            .arg(payments.len())
            .arg(ttl.card)
            .arg(CARD_HORIZON_HOURS)
            .arg(spike_ratio);
        for &i in &payments {
            inv.arg(batch[i].at_ms).arg(batch[i].amount).arg(flag(i));
        }
        answers.push(entity(conn, inv, payments, PER_CARD, 1));
    }
    for (tag, at, of) in [
        (
            "e",
            4,
            (|p: &PlannedPayment| p.email) as fn(&PlannedPayment) -> Option<Key>,
        ),
        ("i", 6, |p| p.ip),
        ("d", 9, |p| p.device),
    ] {
        for (key, payments) in groups(batch, of) {
            let mut inv = SHORT_SCRIPT.prepare_invoke();
            inv.key(names.entity(tag, key, ":s"))
                .arg(payments.len())
                .arg(ttl.short);
            for &i in &payments {
                let p = &batch[i];
                let card = if tag == "e" { None } else { p.card };
                inv.arg(p.at_ms).arg(p.amount).arg(flag(i)).arg(hex(card));
            }
            answers.push(entity(conn, inv, payments, PER_SHORT, at));
        }
    }
    for (merchant, payments) in groups(batch, |p| p.merchant) {
        let mut inv = MERCHANT_SCRIPT.prepare_invoke();
        inv.key(names.entity("m", merchant, ":l"))
            .arg(payments.len())
            .arg(ttl.merchant)
            .arg(MERCHANT_HORIZON_HOURS);
        for &i in &payments {
            inv.arg(batch[i].at_ms).arg(batch[i].amount).arg(flag(i));
        }
        answers.push(entity(conn, inv, payments, PER_MERCHANT, 30));
    }
    let new: Vec<&PlannedPayment> = batch
        .iter()
        .zip(&first)
        .filter(|(_, f)| **f)
        .map(|(p, _)| p)
        .collect();
    let mut writes: Vec<BoxFuture<'static, RedisResult<()>>> = Vec::new();
    for (kind, of) in [
        (
            "c",
            (|p: &PlannedPayment| p.card) as fn(&PlannedPayment) -> Option<Key>,
        ),
        ("e", |p| p.email),
        ("i", |p| p.ip),
        ("d", |p| p.device),
        ("m", |p| p.merchant),
    ] {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(names.index(kind)).arg("GT");
        let mut any = false;
        for p in &new {
            if let Some(k) = of(p) {
                let score = if kind == "m" {
                    p.at_ms.div_euclid(HOUR_MS).max(0) * HOUR_MS
                } else {
                    p.at_ms
                };
                zadd.arg(score).arg(hex(Some(k)));
                any = true;
            }
        }
        if any {
            writes.push(command(conn, zadd));
        }
    }
    if let Some(latest) = new.iter().map(|p| p.at_ms).max() {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(names.index("p"));
        for p in &new {
            zadd.arg(p.at_ms).arg(&p.id);
        }
        writes.push(command(conn, zadd));
        let mut inv = RAISE_SCRIPT.prepare_invoke();
        inv.key(names.meta("watermark")).arg(latest);
        let mut c = conn.clone();
        writes.push(Box::pin(
            async move { inv.invoke_async::<()>(&mut c).await },
        ));
    }
    let writes = tokio::spawn(at_once(writes));
    let answers = at_once(answers).await?;
    writes.await.map_err(conn::stopped)??;

    let mut values: Vec<[i64; PER_PAYMENT]> = batch
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let mut v = [0; PER_PAYMENT];
            v[0] = i64::from(flag(i));
            // No window: no oldest fraud hour.
            for d in 0..6 {
                v[12 + d * 6 + 5] = -1;
            }
            v
        })
        .collect();
    let mut ratios = Vec::new();
    for a in &answers {
        if a.values.len() != a.payments.len() * a.per {
            return Err(unexpected(
                "an entity's script answered an unexpected number of values",
            ));
        }
        for (&i, numbers) in a.payments.iter().zip(a.values.chunks(a.per)) {
            if a.per == PER_CARD {
                values[i][1..4].copy_from_slice(&numbers[..3]);
                values[i][12..30].copy_from_slice(&numbers[3..21]);
                if numbers[21] > 0 {
                    ratios.push((i, numbers[21]));
                }
            } else {
                let take = if a.at == 4 { 2 } else { a.per };
                values[i][a.at..a.at + take].copy_from_slice(&numbers[..take]);
            }
        }
    }
    // The ratios on the payments' records, not waited for: only a fraud
    // report reads them, and it comes after this answer.
    for (i, ratio) in ratios {
        let spike = u8::from(ratio >= i64::from(SPIKE_RATIO));
        let mut inv = RATIO_RECORD_SCRIPT.prepare_invoke();
        inv.key(names.payment(&batch[i].id)).arg(ratio).arg(spike);
        let mut c = conn.clone();
        tokio::spawn(async move {
            if inv.invoke_async::<()>(&mut c).await.is_err() {
                tracing::debug!("an amount ratio was not written on its payment's record");
            }
        });
    }
    Ok(ObservedBatch {
        lists_version: version.unwrap_or(0),
        observed: values.iter().map(|v| observed_of(v)).collect(),
    })
}

/// One entity's script call, answering for `payments`.
fn entity(
    conn: &Conn,
    inv: redis::ScriptInvocation<'static>,
    payments: Vec<usize>,
    per: usize,
    at: usize,
) -> BoxFuture<'static, RedisResult<Answer>> {
    let mut c = conn.clone();
    Box::pin(async move {
        let values = inv.invoke_async::<Vec<i64>>(&mut c).await?;
        Ok(Answer {
            payments,
            values,
            per,
            at,
        })
    })
}

/// One command whose answer does not matter.
fn command(conn: &Conn, cmd: redis::Cmd) -> BoxFuture<'static, RedisResult<()>> {
    let mut c = conn.clone();
    Box::pin(async move { cmd.query_async::<()>(&mut c).await })
}

/// The velocity of one payment from its 48 numbers.
pub(super) fn observed_of(v: &[i64]) -> Observed {
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
