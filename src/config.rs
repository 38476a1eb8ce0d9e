//! Validated configuration: raw flags ([`crate::cli`]) become typed settings
//! here, or a [`ConfigError`] that names the flag.

use crate::cli::{
    HoldoutPolicyArg, KindArg, OrderArg, ProgressArg, ReplayArgs, ReplayModeArg, ServeArgs,
};
use crate::decision::holdout::{Holdout, HoldoutPolicy};
use crate::decision::{Action, Policy};
use crate::decision_log::LogOptions;
use crate::engine::EngineConfig;
use crate::server::ServerOptions;
use crate::state::{EmbeddedOptions, List, RedisOptions, StoreLimits};
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The most `--max-concurrent-calls` or `--max-connections` (a semaphore's
/// bound, far above what any machine serves).
const MAX_SLOTS: usize = 1 << 28;

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The flag's value is invalid.
    #[error("--{flag}: {message}")]
    Invalid {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The lists file could not be used.
    #[error("--lists {path}: {message}")]
    Lists {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The error for an unusable value of `--flag`.
pub fn invalid(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        message: message.into(),
    }
}

/// Everything `serve` needs, checked.
#[derive(Debug)]
pub struct ServeConfig {
    /// gRPC address.
    pub listen: SocketAddr,
    /// Prometheus address, or `None` when disabled.
    pub metrics_listen: Option<SocketAddr>,
    /// RiskAdmin's address, or `None` when disabled.
    pub admin_listen: Option<SocketAddr>,
    /// Model file.
    pub model: PathBuf,
    /// How often the model file is checked for changes (`None`: SIGHUP only).
    pub model_poll: Option<Duration>,
    /// Scoring settings.
    pub engine: EngineConfig,
    /// Whether the holdout key was given (draws are stable across restarts).
    pub holdout_key_given: bool,
    /// Decision log file, if any.
    pub decision_log: Option<PathBuf>,
    /// Queue and sync interval of the decision log.
    pub decision_log_options: LogOptions,
    /// Recorded-traffic file every request is appended to, if any.
    pub record: Option<PathBuf>,
    /// gRPC server settings.
    pub server: ServerOptions,
    /// Where state is kept.
    pub state: StateConfig,
    /// Initial list entries.
    pub lists: Vec<(List, String)>,
}

/// Where `serve` keeps its state.
#[derive(Debug, Clone)]
pub enum StateConfig {
    /// In the process only.
    Memory(StoreLimits),
    /// In a data directory.
    Embedded(EmbeddedOptions),
    /// In a Redis shared by replicas.
    Redis(RedisOptions),
}

/// The Redis store's settings from `--state URL`, `--redis-prefix` and
/// `--redis-timeout`.
fn redis_options(
    a: &ServeArgs,
    url: &str,
    limits: StoreLimits,
) -> Result<RedisOptions, ConfigError> {
    if let Err(e) = RedisOptions::check_url(url) {
        return Err(invalid("state", format!("not a usable Redis URL: {e}")));
    }
    if a.redis_prefix.is_empty() || a.redis_prefix.contains(['{', '}']) {
        return Err(invalid(
            "redis-prefix",
            "must be non-empty and hold no braces (they make Redis Cluster hash tags)",
        ));
    }
    let timeout = duration("redis-timeout", &a.redis_timeout)?;
    if timeout < Duration::from_millis(10) {
        return Err(invalid("redis-timeout", "must be at least 10ms"));
    }
    Ok(RedisOptions {
        prefix: a.redis_prefix.clone(),
        limits,
        timeout,
        // A replica started while Redis is down waits for it (not serving).
        connect_within: None,
        ..RedisOptions::new(url)
    })
}

/// A UTC date (`2018-07-25`) or date-time (`2018-07-25 06:00:00`,
/// `2018-07-25T06:00:00Z`) as ms since the epoch.
pub fn date_ms(flag: &'static str, s: &str) -> Result<i64, ConfigError> {
    let full = if s.len() == 10 {
        format!("{s} 00:00:00")
    } else {
        s.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            invalid(
                flag,
                format!("{s:?} is not a UTC date or date-time such as 2018-07-25 or 2018-07-25T06:00:00Z"),
            )
        })
}

/// A duration flag such as `10s` or `7days`.
pub fn duration(flag: &'static str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s).map_err(|e| {
        invalid(
            flag,
            format!("{s:?} is not a duration ({e}); e.g. 10s, 500ms, 2m"),
        )
    })
}

fn action(flag: &'static str, s: &str) -> Result<Action, ConfigError> {
    Action::parse(s).ok_or_else(|| {
        invalid(
            flag,
            format!("{s:?} is not one of allow, review, block, request-3ds"),
        )
    })
}

/// Reads a lists file: a JSON object from list name to an array of values.
fn lists(path: &PathBuf) -> Result<Vec<(List, String)>, ConfigError> {
    let err = |message: String| ConfigError::Lists {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let map: BTreeMap<String, Vec<String>> = serde_json::from_str(&text).map_err(|e| {
        err(format!(
            "{e}; expected {{\"block_email\": [\"a@example.com\"], …}}"
        ))
    })?;
    let mut out = Vec::new();
    for (name, values) in map {
        let list = List::from_name(&name).ok_or_else(|| {
            let names: Vec<_> = List::ALL.iter().map(|l| l.name()).collect();
            err(format!(
                "unknown list {name:?}; lists are {}",
                names.join(", ")
            ))
        })?;
        out.extend(values.into_iter().map(|v| (list, v)));
    }
    Ok(out)
}

/// A random 64-bit value from the OS-seeded hasher keys.
pub fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
}

impl ServeConfig {
    /// Validates the raw `serve` flags.
    pub fn from_args(a: &ServeArgs) -> Result<ServeConfig, ConfigError> {
        let listen: SocketAddr = a.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:50051", a.listen),
            )
        })?;
        let metrics_listen = match a.metrics_listen.as_str() {
            "" | "off" => None,
            s => Some(s.parse().map_err(|_| {
                invalid(
                    "metrics-listen",
                    format!("{s:?} is not an address like 127.0.0.1:9464 (or \"off\")"),
                )
            })?),
        };
        let admin_listen = match a.admin_listen.as_str() {
            "" | "off" => None,
            s => Some(s.parse().map_err(|_| {
                invalid(
                    "admin-listen",
                    format!("{s:?} is not an address like 127.0.0.1:50052 (or \"off\")"),
                )
            })?),
        };
        let tls = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(std::sync::Arc::new(
                crate::server::tls::Tls::load(crate::server::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: a.tls_client_ca.clone(),
                })
                .map_err(|e| invalid("tls-cert", e.to_string()))?,
            )),
            _ => None,
        };
        let auth = crate::server::auth::Auth::load(
            a.scoring_tokens_file.as_deref(),
            a.admin_tokens_file.as_deref(),
        )
        .map_err(|e| {
            let flag = match &e {
                crate::server::auth::TokenError::Read { path, .. }
                | crate::server::auth::TokenError::Empty(path)
                | crate::server::auth::TokenError::Short { path, .. }
                    if Some(path) == a.admin_tokens_file.as_ref() =>
                {
                    "admin-tokens-file"
                }
                _ => "scoring-tokens-file",
            };
            invalid(flag, e.to_string())
        })?;
        for (flag, addr, role, tokens) in [
            (
                "listen",
                Some(listen),
                crate::server::auth::Role::Scoring,
                "scoring-tokens-file",
            ),
            (
                "admin-listen",
                admin_listen,
                crate::server::auth::Role::Admin,
                "admin-tokens-file",
            ),
        ] {
            if let Some(addr) = addr
                && !addr.ip().is_loopback()
                && !auth.guards(role)
                && !a.insecure
            {
                return Err(invalid(
                    flag,
                    format!(
                        "{addr} is not a loopback address and no --{tokens} is given: anyone who reaches it could call the service; give --{tokens} (and TLS), or --insecure"
                    ),
                ));
            }
        }
        for (flag, v) in [
            ("elevated-threshold", a.elevated_threshold),
            ("highest-threshold", a.highest_threshold),
        ] {
            if !(1..=99).contains(&v) {
                return Err(invalid(flag, format!("{v} is outside 1..=99")));
            }
        }
        if a.elevated_threshold > a.highest_threshold {
            return Err(invalid(
                "elevated-threshold",
                format!(
                    "{} is above --highest-threshold {}",
                    a.elevated_threshold, a.highest_threshold
                ),
            ));
        }
        if !(0.0..=1.0).contains(&a.holdout_rate) {
            return Err(invalid(
                "holdout-rate",
                format!("{} is outside 0..=1", a.holdout_rate),
            ));
        }
        let holdout_policy = match a.holdout_policy {
            HoldoutPolicyArg::Flat => HoldoutPolicy::Flat,
            HoldoutPolicyArg::Score => {
                if !(0.0..=a.holdout_rate).contains(&a.holdout_min_rate) {
                    return Err(invalid(
                        "holdout-min-rate",
                        format!(
                            "{} is outside 0..=--holdout-rate ({})",
                            a.holdout_min_rate, a.holdout_rate
                        ),
                    ));
                }
                HoldoutPolicy::Score {
                    min_rate: a.holdout_min_rate,
                }
            }
        };
        let key = match &a.holdout_key {
            Some(k) if !k.is_empty() => k.as_bytes().to_vec(),
            _ => {
                let mut k = random_u64().to_le_bytes().to_vec();
                k.extend_from_slice(&random_u64().to_le_bytes());
                k
            }
        };
        let policy = Policy {
            elevated_threshold: a.elevated_threshold,
            highest_threshold: a.highest_threshold,
            elevated_action: action("elevated-action", &a.elevated_action)?,
            highest_action: action("highest-action", &a.highest_action)?,
        };
        let skew = duration("max-clock-skew", &a.max_clock_skew)?;
        if a.max_insights > crate::engine::MAX_INSIGHTS {
            return Err(invalid(
                "max-insights",
                format!(
                    "{} is more than {}",
                    a.max_insights,
                    crate::engine::MAX_INSIGHTS
                ),
            ));
        }
        if a.max_message_bytes < 1024 {
            return Err(invalid("max-message-bytes", "must be at least 1024"));
        }
        let grace = duration("shutdown-grace", &a.shutdown_grace)?;
        let sweep = duration("sweep-interval", &a.sweep_interval)?;
        if sweep.is_zero() {
            return Err(invalid("sweep-interval", "must be positive"));
        }
        let policy_metrics = duration("policy-metrics-interval", &a.policy_metrics_interval)?;
        if policy_metrics.is_zero() {
            return Err(invalid("policy-metrics-interval", "must be positive"));
        }
        let retention = duration("payment-retention", &a.payment_retention)?;
        if retention.as_millis() < crate::state::MIN_PAYMENT_RETENTION_MS as u128 {
            return Err(invalid(
                "payment-retention",
                "must be at least 37days: the merchant windows count payments that far back",
            ));
        }
        if a.decision_log_queue == 0 {
            return Err(invalid("decision-log-queue", "must be at least 1"));
        }
        let sync_interval = duration("sync-interval", &a.sync_interval)?;
        let limits = StoreLimits {
            max_payment_methods: a.max_payment_methods,
            max_window_keys: a.max_window_keys,
            max_payments: a.max_payments,
            payment_retention_ms: retention.as_millis().min(i64::MAX as u128) as i64,
        };
        let at_least_one = |flag: &'static str, v: usize| {
            if v == 0 {
                Err(invalid(flag, "must be at least 1"))
            } else {
                Ok(v)
            }
        };
        let max_concurrent_calls = at_least_one("max-concurrent-calls", a.max_concurrent_calls)?;
        let admin_max_concurrent_calls =
            at_least_one("admin-max-concurrent-calls", a.admin_max_concurrent_calls)?;
        let max_connections = at_least_one("max-connections", a.max_connections)?;
        if a.admin_max_concurrent_calls > MAX_SLOTS {
            return Err(invalid(
                "admin-max-concurrent-calls",
                format!("{} is more than {MAX_SLOTS}", a.admin_max_concurrent_calls),
            ));
        }
        if a.max_concurrent_calls > MAX_SLOTS {
            return Err(invalid(
                "max-concurrent-calls",
                format!("{} is more than {MAX_SLOTS}", a.max_concurrent_calls),
            ));
        }
        if a.max_connections > MAX_SLOTS {
            return Err(invalid(
                "max-connections",
                format!("{} is more than {MAX_SLOTS}", a.max_connections),
            ));
        }
        if !(1..=i32::MAX as u32).contains(&a.max_streams_per_connection) {
            return Err(invalid(
                "max-streams-per-connection",
                format!(
                    "{} is not between 1 and {}",
                    a.max_streams_per_connection,
                    i32::MAX
                ),
            ));
        }
        let at_least = |flag: &'static str, s: &str, min: Duration| {
            let d = duration(flag, s)?;
            if d < min {
                return Err(invalid(flag, format!("must be at least {min:?}")));
            }
            Ok(d)
        };
        let keepalive_interval = at_least(
            "keepalive-interval",
            &a.keepalive_interval,
            Duration::from_secs(1),
        )?;
        let keepalive_timeout = at_least(
            "keepalive-timeout",
            &a.keepalive_timeout,
            Duration::from_secs(1),
        )?;
        let message_timeout = at_least(
            "message-timeout",
            &a.message_timeout,
            Duration::from_millis(100),
        )?;
        let stream_idle_timeout = match a.stream_idle_timeout.as_str() {
            "off" => None,
            s => Some(at_least("stream-idle-timeout", s, Duration::from_secs(1))?),
        };
        let max_connection_age = match a.max_connection_age.as_str() {
            "off" => None,
            s => Some(at_least("max-connection-age", s, Duration::from_secs(1))?),
        };
        let model_poll = match a.model_poll_interval.as_str() {
            "off" => None,
            s => {
                let d = duration("model-poll-interval", s)?;
                if d < Duration::from_millis(100) {
                    return Err(invalid(
                        "model-poll-interval",
                        "must be at least 100ms (or off)",
                    ));
                }
                Some(d)
            }
        };
        Ok(ServeConfig {
            listen,
            metrics_listen,
            admin_listen,
            model: a.model.clone(),
            model_poll,
            engine: EngineConfig {
                policy,
                holdout: Holdout::new(a.holdout_rate, &key).with_policy(holdout_policy),
                max_insights: a.max_insights,
                max_future_skew_ms: skew.as_millis().min(i64::MAX as u128) as i64,
            },
            holdout_key_given: a.holdout_key.as_deref().is_some_and(|k| !k.is_empty()),
            decision_log: a.decision_log.clone(),
            decision_log_options: LogOptions {
                queue: a.decision_log_queue,
                sync_interval,
            },
            record: a.record.clone(),
            server: ServerOptions {
                max_message_bytes: a.max_message_bytes,
                shutdown_grace: grace,
                sweep_interval: sweep,
                policy_metrics_interval: policy_metrics,
                // Opened by `serve` (it is a file handle, not a setting).
                recorder: None,
                sync_each: sync_interval.is_zero() && a.state == "embedded",
                auth: std::sync::Arc::new(auth),
                tls,
                max_concurrent_calls,
                admin_max_concurrent_calls,
                max_streams_per_connection: a.max_streams_per_connection,
                max_connections,
                keepalive_interval,
                keepalive_timeout,
                message_timeout,
                stream_idle_timeout,
                max_connection_age,
                // Set by `serve` (it is the process's registry, not a setting).
                metrics: None,
            },
            state: match a.state.as_str() {
                "memory" => StateConfig::Memory(limits),
                "embedded" => StateConfig::Embedded(EmbeddedOptions {
                    limits,
                    sync_interval,
                    ..EmbeddedOptions::new(&a.data_dir)
                }),
                url if url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("redis+cluster://") =>
                {
                    StateConfig::Redis(redis_options(a, url, limits)?)
                }
                other => {
                    return Err(invalid(
                        "state",
                        format!(
                            "{other:?} is not embedded, memory, or a Redis URL (redis://HOST:PORT[/DB], rediss://…, redis+cluster://HOST:PORT[,HOST:PORT…])"
                        ),
                    ));
                }
            },
            lists: match &a.lists {
                Some(p) => lists(p)?,
                None => Vec::new(),
            },
        })
    }
}

/// Checks the flags of `riskstream replay`.
pub fn replay(a: &ReplayArgs) -> Result<crate::replay::ReplayConfig, ConfigError> {
    use crate::replay::{Mode, Order, Pacing, ReplayConfig, progress::Style};
    let positive = |flag: &'static str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(invalid(flag, format!("{v} must be a positive number")))
        }
    };
    let pacing = match (a.rate, a.speed) {
        (Some(r), _) => Pacing::Rate(positive("rate", r)?),
        (None, Some(x)) => Pacing::Speed(positive("speed", x)?),
        (None, None) => Pacing::Closed,
    };
    let count = |flag: &'static str, v: usize, max: usize| {
        if (1..=max).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(flag, format!("{v} is not between 1 and {max}")))
        }
    };
    let target = if a.target.contains("://") {
        a.target.clone()
    } else {
        format!("http://{}", a.target)
    };
    if !(target.starts_with("http://") || target.starts_with("https://")) {
        return Err(invalid(
            "target",
            format!("{:?} is not an http:// or https:// URL", a.target),
        ));
    }
    let lines = || match duration("progress-interval", &a.progress_interval)? {
        d if d.is_zero() => Err(invalid("progress-interval", "must be more than zero")),
        d => Ok(Style::Lines(d)),
    };
    let progress = match a.progress {
        ProgressArg::Off => Style::Off,
        ProgressArg::Bar => Style::Bar,
        ProgressArg::Auto if std::io::IsTerminal::is_terminal(&std::io::stderr()) => Style::Bar,
        ProgressArg::Lines | ProgressArg::Auto => lines()?,
    };
    use crate::traffic::Kind;
    let bearer = match &a.token_file {
        Some(path) => {
            crate::replay::client::Bearer::from_file(path).map_err(|e| invalid("token-file", e))?
        }
        None => crate::replay::client::Bearer::default(),
    };
    let read = |flag: &'static str, path: &PathBuf| {
        std::fs::read(path)
            .map_err(|e| invalid(flag, format!("cannot read {}: {e}", path.display())))
    };
    let tls = match &a.tls_ca {
        Some(ca) => {
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read("tls-ca", ca)?));
            if let (Some(cert), Some(key)) = (&a.tls_client_cert, &a.tls_client_key) {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    read("tls-client-cert", cert)?,
                    read("tls-client-key", key)?,
                ));
            }
            Some(tls)
        }
        None => None,
    };
    let target = match (&tls, target.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => target,
    };
    Ok(ReplayConfig {
        bearer,
        tls,
        file: a.file.clone(),
        kinds: a
            .kinds
            .iter()
            .map(|k| match k {
                KindArg::Register => Kind::Register,
                KindArg::Payment => Kind::Payment,
                KindArg::Feedback => Kind::Feedback,
            })
            .collect(),
        target,
        mode: match a.mode {
            ReplayModeArg::Stream => Mode::Stream,
            ReplayModeArg::Unary => Mode::Unary,
        },
        pacing,
        order: match a.order {
            OrderArg::Strict => Order::Strict,
            OrderArg::Relaxed => Order::Relaxed,
        },
        duration: a
            .duration
            .as_deref()
            .map(|d| duration("duration", d))
            .transpose()?,
        warmup: duration("warmup", &a.warmup)?,
        connections: count("connections", a.connections, 1024)?,
        concurrency: count("concurrency", a.concurrency, 65_536)?,
        in_flight: count("in-flight", a.in_flight, 1 << 20)?,
        outcomes_out: a.outcomes_out.clone(),
        progress,
    })
}
