//! A 10,000-event bidirectional stream with invalid events mixed in: every
//! outcome comes back, in order, and the stream survives.

mod common;

use common::*;
use riskstream::proto;
use tokio_stream::StreamExt;

#[tokio::test]
async fn ten_thousand_events_in_order_with_invalid_ones_mixed_in() {
    let mut srv = TestServer::start().await;
    for c in 0..50 {
        srv.client
            .register_payment_method(registration(
                &format!("pm_{c}"),
                &format!("fp_{c}"),
                30 * DAY_MS,
                Some(home_session(&format!("create_{c}"))),
                customer(c),
            ))
            .await
            .expect("registered");
    }
    const N: usize = 10_000;
    let events: Vec<proto::PaymentEvent> = (0..N)
        .map(|i| {
            let c = (i % 50) as u32;
            let mut ev = payment(
                &format!("pay_{i:05}"),
                &format!("pm_{c}"),
                1000 + i as i64,
                Some(home_session(&format!("s_{i}"))),
                customer(c),
            );
            // Every 7th event is invalid in a different way.
            match i % 7 {
                3 => ev.amount = -1,
                5 => ev.object_type = 42,
                6 if i.is_multiple_of(3) => {
                    if let Some(s) = ev.session.as_mut() {
                        s.ip = "not-an-ip".into();
                    }
                }
                _ => {}
            }
            ev
        })
        .collect();
    let expected_error = |i: usize| match i % 7 {
        3 => Some("amount"),
        5 => Some("object_type"),
        6 if i.is_multiple_of(3) => Some("session.ip"),
        _ => None,
    };

    let outbound = tokio_stream::iter(events);
    let mut inbound = srv
        .client
        .score_stream(outbound)
        .await
        .expect("stream opens")
        .into_inner();
    let mut n = 0;
    while let Some(o) = inbound.next().await {
        let o = o.expect("the stream never fails");
        assert_eq!(
            o.payment_id,
            format!("pay_{n:05}"),
            "outcomes in event order"
        );
        match expected_error(n) {
            Some(field) => {
                let e = o.error.as_ref().expect("error outcome");
                assert_eq!(e.field, field, "event {n}");
                assert_eq!(e.code, "invalid_argument");
            }
            None => {
                assert!(o.error.is_none(), "event {n}: {o:?}");
                assert_ne!(o.risk_level(), proto::RiskLevel::Unspecified);
            }
        }
        n += 1;
    }
    assert_eq!(n, N, "one outcome per event");
    srv.shutdown().await;
}
