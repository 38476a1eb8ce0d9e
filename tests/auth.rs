//! Who may call what, through the real binary and the generated clients:
//! without a token or with an unknown one, `UNAUTHENTICATED`; with the
//! other service's token, `PERMISSION_DENIED`; health and reflection need
//! none; token files are read again when they change; the replay tool
//! carries a token; a non-loopback address without token files is refused;
//! no token reaches the server's log.

mod common;

use common::*;
use riskstream::proto;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::metadata::MetadataValue;

const SCORING: &str = "scoring-token-aaaaaaaaaaaaaaaa";
const ADMIN: &str = "admin-token-bbbbbbbbbbbbbbbbbbbb";
const NEXT_SCORING: &str = "scoring-token-cccccccccccccccc";

/// `req` carrying `token`.
fn with<T>(req: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(req);
    if let Some(t) = token {
        let v: MetadataValue<_> = format!("Bearer {t}").parse().expect("ascii");
        r.metadata_mut().insert("authorization", v);
    }
    r
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write token file");
}

fn list_request() -> proto::ListItemsRequest {
    proto::ListItemsRequest {
        list: "block_email".into(),
        page_size: 10,
        page_token: String::new(),
    }
}

#[tokio::test]
async fn tokens_open_their_own_service_and_nothing_else() {
    let temp = tempfile::tempdir().expect("tempdir");
    let scoring = temp.path().join("scoring.tokens");
    let admin = temp.path().join("admin.tokens");
    write(&scoring, &format!("# payment backends\n{SCORING}\n"));
    write(&admin, &format!("{ADMIN}\n"));
    let srv = Served::start(&[
        "--scoring-tokens-file",
        scoring.to_str().expect("utf-8"),
        "--admin-tokens-file",
        admin.to_str().expect("utf-8"),
    ]);
    let mut c = srv.client().await;
    let mut a = srv.admin_client().await;
    let reg = || {
        registration(
            "pm_1",
            "fp_1",
            DAY_MS,
            Some(home_session("s0")),
            customer(1),
        )
    };
    let get = || proto::GetPaymentMethodRequest {
        payment_method_id: "pm_1".into(),
    };

    // RiskScorer: only scoring tokens.
    assert_eq!(
        code(c.register_payment_method(with(reg(), None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            c.register_payment_method(with(reg(), Some("guessed-token-000000000000")))
                .await
        ),
        Code::Unauthenticated
    );
    assert_eq!(
        code(c.register_payment_method(with(reg(), Some(ADMIN))).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c.register_payment_method(with(reg(), Some(SCORING))).await),
        Code::Ok
    );
    // Saved cards cannot be read, nor enumerated, without a token.
    assert_eq!(
        code(c.get_payment_method(with(get(), None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(c.get_payment_method(with(get(), Some(SCORING))).await),
        Code::Ok
    );
    let pay = || payment("p1", "pm_1", 100, Some(home_session("s1")), customer(1));
    assert_eq!(
        code(c.score(with(pay(), None)).await),
        Code::Unauthenticated
    );
    assert_eq!(code(c.score(with(pay(), Some(SCORING))).await), Code::Ok);
    let stream = c
        .score_stream(with(tokio_stream::iter(vec![pay()]), None))
        .await;
    assert_eq!(code(stream), Code::Unauthenticated);

    // RiskAdmin: only admin tokens.
    assert_eq!(
        code(a.list_items(with(list_request(), None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(a.list_items(with(list_request(), Some(SCORING))).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(a.list_items(with(list_request(), Some(ADMIN))).await),
        Code::Ok
    );

    // Health and reflection need no token, on either address.
    for addr in [&srv.grpc, srv.admin.as_ref().expect("admin")] {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connects");
        let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health answers without a token");
        assert_eq!(
            r.into_inner().status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }

    // A changed token file is read again: the old token stops working.
    write(&scoring, &format!("{NEXT_SCORING}\n"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while code(c.get_payment_method(with(get(), Some(SCORING))).await) == Code::Ok {
        assert!(
            Instant::now() < deadline,
            "the token file was not read again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        code(c.get_payment_method(with(get(), Some(SCORING))).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(c.get_payment_method(with(get(), Some(NEXT_SCORING))).await),
        Code::Ok
    );
    // A broken file is refused and the tokens loaded stay.
    write(&scoring, "short\n");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        code(c.get_payment_method(with(get(), Some(NEXT_SCORING))).await),
        Code::Ok
    );
    assert!(srv.logged("token file not reloaded") >= 1);

    // The replay tool carries its token.
    let traffic = temp.path().join("t.traffic");
    small_traffic(&traffic, 3);
    let token_file = temp.path().join("client.token");
    write(&token_file, &format!("{NEXT_SCORING}\n"));
    let replay = |token: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_riskstream"));
        cmd.arg("replay").arg(&traffic).args([
            "--target",
            &format!("http://{}", srv.grpc),
            "--progress",
            "off",
        ]);
        if let Some(t) = token {
            cmd.arg("--token-file").arg(t);
        }
        cmd.output().expect("replay runs")
    };
    let out = replay(Some(&token_file));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = replay(None);
    assert!(!out.status.success(), "a replay without a token is refused");

    // No token ever reaches the log.
    for t in [SCORING, ADMIN, NEXT_SCORING, "guessed-token-000000000000"] {
        assert_eq!(srv.logged(t), 0, "a token was logged");
    }
    srv.assert_no_customer_data_logged();
}

#[test]
fn a_non_loopback_address_without_tokens_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--admin-listen",
            "off",
            "--metrics-listen",
            "off",
            "--state",
            "memory",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen")
            && err.contains("loopback")
            && err.contains("--scoring-tokens-file"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "serve",
            "--admin-listen",
            "0.0.0.0:0",
            "--metrics-listen",
            "off",
            "--state",
            "memory",
            "--holdout-rate",
            "2",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin-listen") && err.contains("--admin-tokens-file"),
        "{err}"
    );
}
