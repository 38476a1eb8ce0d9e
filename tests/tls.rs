//! TLS through the real binary and the generated client: plaintext to a TLS
//! port fails, a client trusting the CA is served; with a client CA, a
//! client without a certificate is refused at the handshake and one with
//! a certificate is served; SIGHUP swaps the certificate for new
//! connections without dropping open ones. Certificates are made with
//! `openssl` for each run.

mod common;

use common::*;
use riskstream::proto::risk_scorer_client::RiskScorerClient;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Runs `openssl` with `args` in `dir`; the test fails, saying how to
/// install it, when it is missing.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl is needed to make test certificates ({e}): apt-get install -y openssl")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` in `dir`: `name.pem`, `name.key`.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A certificate `name` signed by `ca`, for a server (localhost,
/// 127.0.0.1) or a client.
fn leaf(dir: &Path, ca: &str, name: &str, server: bool) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    let ext = if server {
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
    } else {
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"
    };
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).expect("pem file")
}

/// A TLS channel to `addr` trusting `ca`, with the client certificate
/// `client` if given.
async fn tls_channel(
    dir: &Path,
    addr: &str,
    ca: &str,
    client: Option<&str>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(dir, &format!("{ca}.pem"))))
        .domain_name("localhost");
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(
            read(dir, &format!("{c}.pem")),
            read(dir, &format!("{c}.key")),
        ));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(tls)?
        .connect()
        .await
}

/// Registers and scores one card through `channel`; the error if any.
async fn works(channel: Channel, n: u32) -> Result<(), tonic::Status> {
    let mut c = RiskScorerClient::new(channel);
    let id = format!("pm_{n}");
    c.register_payment_method(registration(
        &id,
        "fp_1",
        DAY_MS,
        Some(home_session("s0")),
        customer(n),
    ))
    .await?;
    let o = c
        .score(payment(
            &format!("p_{n}"),
            &id,
            100,
            Some(home_session("s1")),
            customer(n),
        ))
        .await?
        .into_inner();
    assert_eq!(o.creation_session_id, "s0");
    Ok(())
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().expect("utf-8").to_owned()
}

#[tokio::test]
async fn only_tls_clients_are_served_and_sighup_swaps_the_certificate() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = temp.path().to_owned();
    ca(&dir, "ca1");
    leaf(&dir, "ca1", "server", true);
    let srv = Served::start(&[
        "--tls-cert",
        &path(&dir, "server.pem"),
        "--tls-key",
        &path(&dir, "server.key"),
    ]);
    // Plaintext to the TLS port gets nowhere.
    let plain = async {
        let ch = Channel::from_shared(format!("http://{}", srv.grpc))
            .expect("url")
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        works(ch, 0).await
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), plain)
            .await
            .expect("answers quickly")
            .is_err()
    );
    // A client trusting the CA is served.
    let open = tls_channel(&dir, &srv.grpc, "ca1", None)
        .await
        .expect("TLS connects");
    works(open.clone(), 1).await.expect("served over TLS");

    // SIGHUP swaps in a certificate from another CA: new connections get
    // it, the open one goes on.
    ca(&dir, "ca2");
    leaf(&dir, "ca2", "server2", true);
    std::fs::copy(dir.join("server2.pem"), dir.join("server.pem")).expect("copy");
    std::fs::copy(dir.join("server2.key"), dir.join("server.key")).expect("copy");
    srv.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(ch) = tls_channel(&dir, &srv.grpc, "ca2", None).await
            && works(ch, 2).await.is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(srv.logged("TLS certificate reloaded"), 1);
    works(open, 3)
        .await
        .expect("the connection opened before goes on");
    assert!(
        works(
            tls_channel(&dir, &srv.grpc, "ca1", None)
                .await
                .unwrap_or_else(|_| open_dummy()),
            4
        )
        .await
        .is_err(),
        "a client trusting only the old CA is refused now"
    );
}

/// A channel that goes nowhere (for a connect that already failed).
fn open_dummy() -> Channel {
    Channel::from_static("https://127.0.0.1:1").connect_lazy()
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = temp.path().to_owned();
    ca(&dir, "ca");
    leaf(&dir, "ca", "server", true);
    leaf(&dir, "ca", "client", false);
    ca(&dir, "other");
    leaf(&dir, "other", "stranger", false);
    let srv = Served::start(&[
        "--tls-cert",
        &path(&dir, "server.pem"),
        "--tls-key",
        &path(&dir, "server.key"),
        "--tls-client-ca",
        &path(&dir, "ca.pem"),
    ]);
    for (who, client) in [("no certificate", None), ("another CA's", Some("stranger"))] {
        let refused = match tls_channel(&dir, &srv.grpc, "ca", client).await {
            Err(_) => true,
            Ok(ch) => works(ch, 9).await.is_err(),
        };
        assert!(refused, "a client with {who} certificate was served");
    }
    let ch = tls_channel(&dir, &srv.grpc, "ca", Some("client"))
        .await
        .expect("mTLS connects");
    works(ch, 1)
        .await
        .expect("served with a client certificate");

    // The replay tool speaks (mutual) TLS too.
    let traffic = dir.join("t.traffic");
    small_traffic(&traffic, 4);
    let replay = |client: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_riskstream"));
        cmd.arg("replay")
            .arg(&traffic)
            .args([
                "--target",
                &format!("http://{}", srv.grpc),
                "--progress",
                "off",
            ])
            .args(["--tls-ca", &path(&dir, "ca.pem")]);
        if client {
            cmd.args([
                "--tls-client-cert",
                &path(&dir, "client.pem"),
                "--tls-client-key",
                &path(&dir, "client.key"),
            ]);
        }
        cmd.output().expect("replay runs")
    };
    let out = replay(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !replay(false).status.success(),
        "refused without a client certificate"
    );
}
