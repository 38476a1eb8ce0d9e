//! What was decided of each payment, kept in Redis for the holdout
//! estimates: a `dec` field on the payment's record (`{p:H}`), so that it
//! expires with it and its label sits beside it; read back through the
//! payment index `{ix:p}`.

use super::Names;
use super::conn::{Conn, at_once};
use super::scripts::DECIDE_SCRIPT;
use crate::state::{BoxFuture, Decided, DecidedPayment};
use redis::RedisResult;
use std::collections::HashSet;

/// Payments read back per batch of calls.
const CHUNK: usize = 2000;

/// A decision as the record's `dec` field keeps it.
fn encode(d: &Decided) -> String {
    format!("{} {} {}", d.code(), d.true_score, d.allowed_propensity)
}

/// The decision a `dec` field holds.
fn decode(text: &str) -> Option<Decided> {
    let mut parts = text.split(' ');
    let code = parts.next()?.parse().ok()?;
    let score = parts.next()?.parse().ok()?;
    let propensity = parts.next()?.parse().ok()?;
    Decided::of_code(code, score, propensity)
}

/// Records the decisions of `batch` (payment id hashes and decisions): one
/// script call on one Redis, one per payment on a cluster (each record is
/// in its own slot).
pub(super) async fn decide(
    conn: &Conn,
    names: &Names,
    batch: Vec<(String, Decided)>,
) -> RedisResult<()> {
    let invocation = |items: &[(String, Decided)]| {
        let mut inv = DECIDE_SCRIPT.prepare_invoke();
        for (id, d) in items {
            inv.key(names.payment(id)).arg(encode(d));
        }
        let mut c = conn.clone();
        Box::pin(async move { inv.invoke_async::<()>(&mut c).await })
            as BoxFuture<'static, RedisResult<()>>
    };
    if conn.is_cluster() {
        at_once(batch.chunks(1).map(invocation).collect()).await?;
    } else {
        invocation(&batch).await?;
    }
    Ok(())
}

/// Every remembered payment that has a decision, with its latest label.
pub(super) async fn read(conn: &Conn, names: &Names) -> RedisResult<Vec<DecidedPayment>> {
    let index = names.index("p");
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, items): (u64, Vec<(String, i64)>) = redis::cmd("ZSCAN")
            .arg(&index)
            .arg(cursor)
            .arg("COUNT")
            .arg(CHUNK)
            .query_async(&mut conn.clone())
            .await?;
        // ZSCAN may give a member twice.
        let fresh: Vec<(String, i64)> = items
            .into_iter()
            .filter(|(id, _)| seen.insert(id.clone()))
            .collect();
        let fields = fields_of(conn, names, &fresh).await?;
        for ((_, at_ms), (dec, lab)) in fresh.iter().zip(fields) {
            if let Some(decided) = dec.as_deref().and_then(decode) {
                out.push(DecidedPayment {
                    at_ms: *at_ms,
                    decided,
                    label: crate::state::memory::label_of(lab.unwrap_or(0)),
                });
            }
        }
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// The `dec` and `lab` fields of each payment record of `ids`.
async fn fields_of(
    conn: &Conn,
    names: &Names,
    ids: &[(String, i64)],
) -> RedisResult<Vec<(Option<String>, Option<u8>)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    if conn.is_cluster() {
        let calls = ids
            .iter()
            .map(|(id, _)| {
                let (mut c, key) = (conn.clone(), names.payment(id));
                Box::pin(async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg(&["dec", "lab"])
                        .query_async::<(Option<String>, Option<u8>)>(&mut c)
                        .await
                }) as BoxFuture<'static, _>
            })
            .collect();
        at_once(calls).await
    } else {
        let mut pipe = redis::pipe();
        for (id, _) in ids {
            pipe.cmd("HMGET")
                .arg(names.payment(id))
                .arg(&["dec", "lab"]);
        }
        pipe.query_async(&mut conn.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::DecidedBy;

    #[test]
    fn a_decision_reads_back_as_it_was_written() {
        for d in [
            Decided {
                decided_by: DecidedBy::Model,
                true_score: 81,
                allowed: true,
                holdout: true,
                allowed_propensity: 0.05 / 2f32.sqrt(),
            },
            Decided {
                decided_by: DecidedBy::List,
                true_score: 0,
                allowed: false,
                holdout: false,
                allowed_propensity: 0.0,
            },
        ] {
            assert_eq!(decode(&encode(&d)), Some(d));
        }
        assert_eq!(decode("0 1 1"), None);
        assert_eq!(decode("1 x 1"), None);
    }
}
