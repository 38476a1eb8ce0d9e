//! `riskstream serve` as a child process on loopback ports chosen by the
//! OS, as an operator runs it: its state in a temporary data directory
//! unless the test names one, optionally started through a shell prelude
//! (a file-size limit), ready once it logs that it serves.

use riskstream::proto::risk_scorer_client::RiskScorerClient;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long start-up (and restoring state) may take in a test.
const STARTUP: Duration = Duration::from_secs(60);

/// A running `riskstream serve`; killed when dropped.
pub struct Served {
    child: Child,
    /// gRPC address.
    pub grpc: String,
    /// Prometheus address, unless `--metrics-listen off`.
    pub metrics: Option<String>,
    /// RiskAdmin's address, unless `--admin-listen off`.
    pub admin: Option<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The data directory it was given.
    pub data_dir: Option<PathBuf>,
    _temp: Option<tempfile::TempDir>,
}

/// How to start it.
#[derive(Default)]
pub struct Launch<'a> {
    /// Shell run before `exec`-ing the binary (limits, ignored signals).
    pub prelude: Option<&'a str>,
    /// Flags after `serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0`
    /// (and `--admin-listen 127.0.0.1:0` unless they name one).
    pub args: Vec<String>,
    /// The data directory (a temporary one when `None` and no `--state`
    /// or `--data-dir` is among `args`).
    pub data_dir: Option<PathBuf>,
    /// Return once it listens, without waiting until it serves.
    pub no_wait: bool,
}

impl Served {
    /// Starts it with `extra` flags and the shipped default model.
    pub fn start(extra: &[&str]) -> Served {
        Served::launch(Launch {
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
            ..Launch::default()
        })
    }

    /// Starts it as `l` says.
    pub fn launch(l: Launch<'_>) -> Served {
        let bin = env!("CARGO_BIN_EXE_riskstream");
        let mut cmd = match l.prelude {
            Some(p) => {
                let mut c = Command::new("bash");
                c.args(["-c", &format!("{p}; exec \"$0\" \"$@\""), bin]);
                c
            }
            None => Command::new(bin),
        };
        let named = l
            .args
            .iter()
            .any(|a| a.starts_with("--state") || a.starts_with("--data-dir"));
        let (temp, data_dir) = match (&l.data_dir, named) {
            (Some(d), _) => (None, Some(d.clone())),
            (None, true) => (None, None),
            (None, false) => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().join("data");
                (Some(t), Some(d))
            }
        };
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ]);
        if !l.args.iter().any(|a| a == "--model") {
            cmd.args([
                "--model",
                &super::default_model_path().display().to_string(),
            ]);
        }
        if let Some(d) = &data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        if !l.args.iter().any(|a| a == "--admin-listen") {
            cmd.args(["--admin-listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(&l.args)
            .env_remove("RUST_LOG")
            .env_remove("RISKSTREAM_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[riskstream] {line}");
                kept.lock().expect("lock").push(line.clone());
                let _ = tx.send(line);
            }
        });
        let off = |flag: &str| l.args.windows(2).any(|w| w[0] == flag && w[1] == "off");
        let (metrics_off, admin_off) = (off("--metrics-listen"), off("--admin-listen"));
        let (mut grpc, mut metrics, mut admin, mut serving) = (None, None, None, false);
        let deadline = Instant::now() + STARTUP;
        while grpc.is_none()
            || (metrics.is_none() && !metrics_off)
            || (admin.is_none() && !admin_off)
            || !(serving || l.no_wait)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the server logs that it listens and serves");
            let addr = || line.split("addr=").nth(1).map(|a| a.trim().to_owned());
            if line.contains("grpc listening") {
                grpc = addr();
            } else if line.contains("metrics listening") {
                metrics = addr();
            } else if line.contains("admin listening") {
                admin = addr();
            } else if line.ends_with(" serving") {
                serving = true;
            }
        }
        Served {
            child,
            grpc: grpc.expect("grpc addr"),
            metrics,
            admin,
            stderr: lines,
            data_dir,
            _temp: temp,
        }
    }

    /// A client of its RiskScorer service.
    pub async fn client(&self) -> RiskScorerClient<tonic::transport::Channel> {
        RiskScorerClient::new(self.channel().await)
    }

    /// A client of its RiskAdmin service.
    pub async fn admin_client(
        &self,
    ) -> riskstream::proto::risk_admin_client::RiskAdminClient<tonic::transport::Channel> {
        let addr = self.admin.as_deref().expect("RiskAdmin is served");
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connects");
        riskstream::proto::risk_admin_client::RiskAdminClient::new(channel)
    }

    /// A channel to its gRPC address.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .expect("url")
            .connect()
            .await
            .expect("connects")
    }

    /// Its process id.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends `sig` (e.g. `-TERM`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGTERM.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; fails after `within`. Async, so that
    /// the test's client connections answer the server's GOAWAY meanwhile.
    pub async fn wait(&mut self, within: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(start.elapsed() < within, "did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET /metrics over a plain HTTP/1.0 connection.
    pub fn scrape(&self) -> String {
        let addr = self.metrics.as_deref().expect("metrics are served");
        let mut s = std::net::TcpStream::connect(addr).expect("metrics connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        let (head, body) = text.split_once("\r\n\r\n").expect("http response");
        assert!(head.contains(" 200 "), "{head}");
        body.to_owned()
    }

    /// The value of the series `name` (with its labels, as Prometheus
    /// prints them) in a fresh scrape.
    pub fn metric(&self, name: &str) -> f64 {
        *parse_metrics(&self.scrape())
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    /// Standard-error lines containing `needle`.
    pub fn logged(&self, needle: &str) -> usize {
        let lines = self.stderr.lock().expect("lock");
        lines.iter().filter(|l| l.contains(needle)).count()
    }

    /// Standard-error lines containing `needle`, whole.
    pub fn lines(&self, needle: &str) -> Vec<String> {
        let lines = self.stderr.lock().expect("lock");
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Fails if customer data (emails, IP addresses, card fingerprints,
    /// device ids of the test sessions), payment ids or the tests' tokens
    /// reached standard error. Every server is checked when it is dropped.
    pub fn assert_no_customer_data_logged(&self) {
        let lines = self.stderr.lock().expect("lock");
        for l in lines.iter() {
            for needle in [
                "@example.com",
                "37.164.20.41",
                "114.122.7.200",
                "fp_",
                "dev_",
                "pay_",
                "-token-",
            ] {
                assert!(
                    !l.contains(needle),
                    "customer data ({needle}) was logged: {l}"
                );
            }
        }
    }

    /// Fails if payment ids reached standard error.
    pub fn assert_no_payment_ids_logged(&self) {
        let lines = self.stderr.lock().expect("lock");
        for l in lines.iter() {
            assert!(!l.contains("pay_"), "a payment id was logged: {l}");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            self.assert_no_customer_data_logged();
        }
    }
}

/// Parses Prometheus text into `name{labels}` → value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Runs `riskstream serve` once more on `dir` and returns its exit status
/// and standard error, for a process expected to stop at once.
pub fn serve_and_fail(dir: &Path, extra: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--admin-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .output()
        .expect("runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a small recorded-traffic file (20 customers, one day) to `path`,
/// for a replay against a test server.
pub fn small_traffic(path: &Path, seed: u32) {
    let ok = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args(["simulate", "--seed", &seed.to_string()])
        .args(["--customers", "20", "--days", "1", "--out"])
        .arg(path)
        .status()
        .expect("simulate runs");
    assert!(ok.success(), "simulate failed");
}
