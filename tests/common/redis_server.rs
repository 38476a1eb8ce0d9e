//! A `redis-server` of the test binary's own: on a free loopback port, in a
//! temporary directory (or one the test keeps, to restart it on what it
//! saved), saving nothing unless told (`--save ''`, no append-only file),
//! stopped when the test process ends (a shell watchdog waits for it) or
//! when the handle is dropped. [`shared`] is one server for the whole test
//! binary; each test takes a namespace of its own with [`prefix`]. A
//! machine without `redis-server` fails the test, saying how to install it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer `PING`.
const STARTUP: Duration = Duration::from_secs(20);

/// A running `redis-server`; stopped when dropped.
pub struct RedisServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its working directory (where an append-only file goes).
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// The `redis-server` binary, or a failure that says how to install it.
fn binary() -> PathBuf {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "redis-server is not installed, and the Redis store's tests need it: install it: apt-get install -y redis-server"
    );
    PathBuf::from("redis-server")
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl RedisServer {
    /// Starts a server of its own with the extra `config` lines given as
    /// flags (e.g. `["--appendonly", "yes"]`).
    pub fn start(config: &[&str]) -> RedisServer {
        RedisServer::start_in(None, config)
    }

    /// Starts a server on a free port in `dir` (a temporary directory of
    /// its own when `None`).
    pub fn start_in(dir: Option<&std::path::Path>, config: &[&str]) -> RedisServer {
        for _ in 0..5 {
            if let Some(server) = RedisServer::try_on(free_port(), dir, config) {
                return server;
            }
            // The port was taken meanwhile: try another.
        }
        panic!("redis-server did not start on a free loopback port");
    }

    /// Starts a server on `port` (a restart where one was stopped).
    pub fn start_on(port: u16, config: &[&str]) -> RedisServer {
        RedisServer::restart_in(port, None, config)
    }

    /// Starts a server on `port` in `dir` (a restart on what a server
    /// stopped there saved; a temporary directory of its own when `None`).
    pub fn restart_in(port: u16, dir: Option<&std::path::Path>, config: &[&str]) -> RedisServer {
        for _ in 0..50 {
            if let Some(server) = RedisServer::try_on(port, dir, config) {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {port}");
    }

    fn try_on(port: u16, dir: Option<&std::path::Path>, config: &[&str]) -> Option<RedisServer> {
        let bin = binary();
        let (temp, dir) = match dir {
            Some(d) => (None, d.to_owned()),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().to_owned();
                (Some(t), d)
            }
        };
        // The watchdog stops the server once this process is gone (a
        // test binary's statics are never dropped) or the server exits.
        let script = format!(
            "\"$0\" \"$@\" & r=$!; while kill -0 {pid} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done; kill $r 2>/dev/null; wait $r",
            pid = std::process::id()
        );
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bash starts redis-server");
        let mut server = RedisServer {
            child,
            port,
            dir,
            _temp: temp,
        };
        if server.wait_ready() {
            return Some(server);
        }
        server.stop();
        None
    }

    /// Kills the server with SIGKILL (as a crash would) and waits for it.
    pub fn kill(&mut self) {
        let pid = redis::cmd("INFO")
            .arg("server")
            .query::<String>(&mut self.connection())
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .map(|p| p.trim().to_owned())
            })
            .expect("redis-server tells its process id");
        let killed = Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(killed, "kill -KILL {pid} failed");
        let _ = self.child.wait();
    }

    /// Whether it answers `PING` within the start-up time.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether it answers `PING` now.
    pub fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// Its URL, `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection, for looking at what the store wrote.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connects to the test redis-server")
    }

    /// Stops it (the server, then its watchdog) and waits for it.
    pub fn stop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            if let Ok(mut c) = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
            {
                let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test binary's one shared server, started on first use.
pub fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| RedisServer::start(&[]))
}

/// A namespace no other test of this process uses (`t<pid>-<n>:`).
pub fn prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Redis Cluster of three masters of the test binary's own: three
/// servers on free loopback ports (each with a cluster bus port of its
/// own), joined by `redis-cli --cluster create`, the slots shared among
/// them; stopped with its servers. A machine without `redis-cli` fails
/// the test, saying how to install it.
pub struct RedisCluster {
    /// Its masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three masters and joins them; ready once every node reports
    /// `cluster_state:ok` and knows the three.
    pub fn start() -> RedisCluster {
        let cli = Command::new("redis-cli")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            cli,
            "redis-cli is not installed, and the Redis Cluster tests need it: install it: apt-get install -y redis-server (it brings redis-cli)"
        );
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + STARTUP;
        while !cluster.ready() {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// Whether every node reports the cluster ok with three masters.
    fn ready(&self) -> bool {
        self.nodes.iter().all(|n| {
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut n.connection())
                .is_ok_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_known_nodes:3")
                        && info.contains("cluster_slots_ok:16384")
                })
        })
    }

    /// Its URL, `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

/// The test binary's one shared cluster, started on first use.
pub fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}
