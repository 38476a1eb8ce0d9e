//! List management through `RiskAdmin`, as an operator uses it, through the
//! real binary and the generated client: entries added, listed back a page
//! at a time and taken off; a removed block entry stops blocking; an allow
//! entry wins over a block entry; fraud reports' entries name the payment;
//! everything survives a SIGKILL.

mod common;

use common::*;
use riskstream::proto::{self, Decision};
use tonic::Code;

/// A payment of customer 1 (email customer1@example.com) with the inline
/// card `fingerprint`.
fn pay(id: &str, fingerprint: &str) -> proto::PaymentEvent {
    let mut ev = payment(id, "", 1500, Some(home_session("s")), customer(1));
    ev.payment_method = Some(proto::PaymentMethod {
        r#type: proto::PaymentMethodType::Card as i32,
        card_fingerprint: fingerprint.into(),
        ..Default::default()
    });
    ev
}

fn add(list: &str, values: &[&str], reason: &str) -> proto::AddListItemsRequest {
    proto::AddListItemsRequest {
        list: list.into(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
        reason: reason.into(),
        expires_at_ms: 0,
    }
}

fn remove(list: &str, values: &[&str]) -> proto::RemoveListItemsRequest {
    proto::RemoveListItemsRequest {
        list: list.into(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

/// Every entry of `list`, read `page_size` at a time; and how many pages.
async fn all_items(
    a: &mut proto::risk_admin_client::RiskAdminClient<tonic::transport::Channel>,
    list: &str,
    page_size: u32,
) -> (Vec<proto::ListItem>, usize) {
    let (mut items, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let page = a
            .list_items(proto::ListItemsRequest {
                list: list.into(),
                page_size,
                page_token: token.clone(),
            })
            .await
            .expect("listed")
            .into_inner();
        pages += 1;
        assert!(page.items.len() <= page_size as usize);
        items.extend(page.items);
        if page.next_page_token.is_empty() {
            return (items, pages);
        }
        token = page.next_page_token;
        assert!(pages < 100, "paging does not end");
    }
}

#[tokio::test]
async fn lists_are_managed_through_risk_admin_and_survive_a_kill() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("data");
    let mut srv = Served::launch(Launch {
        data_dir: Some(dir.clone()),
        ..Launch::default()
    });
    let mut a = srv.admin_client().await;
    let mut c = srv.client().await;

    // Blocked by email, then by card.
    let added = a
        .add_list_items(add(
            "block_email",
            &[
                "Customer1@Example.com",
                "other@example.com",
                "third@example.com",
            ],
            "ticket 123",
        ))
        .await
        .expect("added")
        .into_inner();
    assert_eq!(added.added, 3);
    let again = a
        .add_list_items(add("block_email", &["customer1@example.com"], "again"))
        .await
        .expect("added")
        .into_inner();
    assert_eq!(again.added, 0, "a value already listed keeps its entry");
    let o = score_ok(&mut c, pay("p1", "fp_a")).await;
    assert_eq!(
        (o.decision(), o.rule.as_str()),
        (Decision::Block, "block_email")
    );

    // Listed back, a page of two at a time.
    let (items, pages) = all_items(&mut a, "block_email", 2).await;
    assert_eq!(pages, 2);
    let mut values: Vec<_> = items.iter().map(|i| i.value.as_str()).collect();
    values.sort_unstable();
    assert_eq!(
        values,
        [
            "customer1@example.com",
            "other@example.com",
            "third@example.com"
        ]
    );
    assert!(
        items
            .iter()
            .all(|i| i.source == "admin" && i.reason == "ticket 123")
    );
    assert!(
        items
            .iter()
            .all(|i| i.added_at_ms > 0 && i.expires_at_ms == 0)
    );

    // Taken off: the payment goes through again.
    let removed = a
        .remove_list_items(remove(
            "block_email",
            &["customer1@example.com", "nobody@example.com"],
        ))
        .await
        .expect("removed")
        .into_inner();
    assert_eq!(removed.removed, 1);
    let o = score_ok(&mut c, pay("p2", "fp_a")).await;
    assert_ne!(o.decision(), Decision::Block, "{o:?}");
    assert_eq!(all_items(&mut a, "block_email", 10).await.0.len(), 2);

    // An allow entry wins over a block entry.
    a.add_list_items(add("block_card_fingerprint", &["fp_b"], "stolen"))
        .await
        .expect("added");
    let o = score_ok(&mut c, pay("p3", "fp_b")).await;
    assert_eq!(o.rule, "block_card_fingerprint");
    a.add_list_items(add(
        "allow_email",
        &["customer1@example.com"],
        "verified by phone",
    ))
    .await
    .expect("added");
    let o = score_ok(&mut c, pay("p4", "fp_b")).await;
    assert_eq!(
        (o.decision(), o.rule.as_str()),
        (Decision::Allow, "allow_email")
    );

    // A fraud report's entries name the payment, without its values.
    let fb = proto::FeedbackEvent {
        payment_id: "p2".into(),
        kind: proto::FeedbackKind::Fraudulent as i32,
        reported_at_ms: 0,
    };
    c.report_feedback(fb).await.expect("reported");
    let (cards, _) = all_items(&mut a, "block_card_fingerprint", 10).await;
    let reported: Vec<_> = cards.iter().filter(|i| i.source == "feedback").collect();
    assert_eq!(reported.len(), 1, "{cards:?}");
    assert_eq!(reported[0].payment_id, "p2");
    assert_eq!(reported[0].value, "");

    // Bad requests name the field.
    let err = a
        .add_list_items(add("block_everything", &["x"], ""))
        .await
        .expect_err("no such list");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("list:"), "{err:?}");
    let err = a
        .add_list_items(add("block_ip", &["300.1.2.3"], ""))
        .await
        .expect_err("not an IP");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("values:"), "{err:?}");

    // A SIGKILL loses none of it.
    srv.kill();
    let srv = Served::launch(Launch {
        data_dir: Some(dir),
        ..Launch::default()
    });
    let mut a = srv.admin_client().await;
    let mut c = srv.client().await;
    let (emails, _) = all_items(&mut a, "block_email", 10).await;
    let mut values: Vec<_> = emails.iter().map(|i| i.value.as_str()).collect();
    values.sort_unstable();
    // The fraud report blocked customer 1's email again (its value unsaid).
    assert_eq!(values, ["", "other@example.com", "third@example.com"]);
    assert_eq!(
        all_items(&mut a, "block_card_fingerprint", 10)
            .await
            .0
            .len(),
        2
    );
    let o = score_ok(&mut c, pay("p5", "fp_b")).await;
    assert_eq!(o.rule, "allow_email", "the allow entry still wins");
    a.remove_list_items(remove("allow_email", &["customer1@example.com"]))
        .await
        .expect("removed");
    let o = score_ok(&mut c, pay("p6", "fp_b")).await;
    assert_eq!(
        (o.decision(), o.rule.as_str()),
        (Decision::Block, "block_card_fingerprint")
    );
    srv.assert_no_customer_data_logged();
}
