//! The connection to Redis: one server (`redis://`, `rediss://`) through a
//! multiplexed connection that reconnects by itself, or a Redis Cluster
//! (`redis+cluster://HOST:PORT[,HOST:PORT…]`) through redis-rs's async
//! cluster client, which sends each command to the master of its key's
//! slot and follows the cluster when slots move. On a cluster a command or
//! pipeline may only name keys of one slot; commands sent at once travel
//! together over each node's connection (one round trip for all of them).
//! Change messages are received from one node (a cluster passes every
//! `PUBLISH` to all of its nodes).

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Where the store's Redis is, as the URL says.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// One server.
    One(Box<redis::Client>),
    /// A Redis Cluster, known by some of its nodes.
    Cluster {
        /// The nodes given (`redis://HOST:PORT`, with the URL's credentials).
        nodes: Vec<String>,
        /// The node change messages were last received from.
        next: std::sync::Arc<AtomicUsize>,
    },
}

/// The URL of a Redis Cluster starts with this.
const CLUSTER_SCHEME: &str = "redis+cluster://";

impl Target {
    /// The target `url` names, or why it names none.
    pub(super) fn parse(url: &str) -> Result<Target, String> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return redis::Client::open(url)
                .map(|c| Target::One(Box::new(c)))
                .map_err(|e| e.to_string());
        };
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((c, h)) => (format!("{c}@"), h),
            None => (String::new(), rest),
        };
        let nodes: Vec<String> = hosts
            .trim_end_matches('/')
            .split(',')
            .map(|h| format!("redis://{credentials}{}", h.trim()))
            .collect();
        for node in &nodes {
            redis::Client::open(node.as_str()).map_err(|e| e.to_string())?;
        }
        if nodes.iter().any(|n| n.ends_with("//") || n.ends_with('@')) {
            return Err("a node of the cluster is empty".into());
        }
        Ok(Target::Cluster {
            nodes,
            next: std::sync::Arc::default(),
        })
    }

    /// A connection that connects when first used and again whenever it is
    /// lost; each round trip waits at most `timeout`. Call it on the store's
    /// runtime.
    pub(super) fn connect(&self, timeout: Duration) -> RedisResult<Conn> {
        match self {
            Target::One(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // One quick second attempt at connecting (a blip), then
                    // the call fails: a payment waiting on a Redis that is
                    // down fails open in milliseconds, not after a backoff.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(50));
                ConnectionManager::new_lazy_with_config((**client).clone(), config).map(Conn::One)
            }
            Target::Cluster { nodes, .. } => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1)
                    .min_retry_wait(10)
                    .max_retry_wait(50)
                    .build()?;
                Ok(Conn::Cluster(
                    client.get_pending_async_connection_with_config(
                        redis::cluster::ClusterConfig::new(),
                    ),
                ))
            }
        }
    }

    /// A connection for change messages: to the server, or to one node of
    /// the cluster after another.
    pub(super) async fn pubsub(&self) -> RedisResult<PubSub> {
        match self {
            Target::One(client) => client.get_async_pubsub().await,
            Target::Cluster { nodes, next } => {
                let mut last = None;
                for _ in 0..nodes.len() {
                    let i = next.load(Ordering::Relaxed) % nodes.len();
                    match redis::Client::open(nodes[i].as_str()) {
                        Ok(client) => match client.get_async_pubsub().await {
                            Ok(p) => return Ok(p),
                            Err(e) => last = Some(e),
                        },
                        Err(e) => last = Some(e),
                    }
                    next.store(i + 1, Ordering::Relaxed);
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Io, "the cluster has no node"))
                }))
            }
        }
    }
}

/// A connection to the store's Redis, cheap to clone; clones share it.
#[derive(Clone)]
pub(super) enum Conn {
    /// To one server.
    One(ConnectionManager),
    /// To a cluster.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Whether it is a cluster's (where one call names keys of one slot).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Runs every call at once (each a task on the store's runtime, so that
/// they travel together) and gathers their answers, in order.
pub(super) async fn at_once<T: Send + 'static>(
    calls: Vec<crate::state::BoxFuture<'static, RedisResult<T>>>,
) -> RedisResult<Vec<T>> {
    let running: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(running.len());
    for r in running {
        out.push(r.await.map_err(stopped)??);
    }
    Ok(out)
}

/// The error of a call whose task did not finish (the runtime stopped).
pub(super) fn stopped(_: tokio::task::JoinError) -> RedisError {
    RedisError::from((redis::ErrorKind::Io, "the Redis client has stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_every_node_with_the_credentials() {
        let Ok(Target::Cluster { nodes, .. }) =
            Target::parse("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001")
        else {
            panic!("a cluster");
        };
        assert_eq!(
            nodes,
            ["redis://u:p@10.0.0.1:7000", "redis://u:p@10.0.0.2:7001"]
        );
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379"),
            Ok(Target::One(_))
        ));
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("redis+cluster://a:1,").is_err());
        assert!(Target::parse("http://x").is_err());
    }
}
