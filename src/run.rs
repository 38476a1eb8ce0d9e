//! Entry points of the binary's subcommands: wire validated configuration
//! into running parts. `main` parses flags and calls in here.

use crate::cli::EstimatorArg;
use crate::cli::{
    Cli, Command, ConvertArgs, ConvertFormat, EvaluateArgs, EvaluatePolicyArgs, ReplayArgs,
    ServeArgs, ServedWeightingArg, SimulateArgs, TrainArgs,
};
use crate::config::{self, ConfigError, ServeConfig, StateConfig, random_u64};
use crate::decision::holdout::HoldoutPolicy;
use crate::decision_log::DecisionLog;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::model::{Model, ModelHandle};
use crate::server;
use crate::sim::SimConfig;
use crate::state::{EmbeddedStore, MemoryStore};
use crate::traffic::TrafficWriter;
use crate::train::{Family, TimeWindow};
use anyhow::Context as _;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A store about to be opened by `serve`.
enum Opening {
    /// Nothing to read.
    Memory(crate::state::StoreLimits),
    /// A locked data directory to read back.
    Embedded(crate::state::Locked),
    /// A Redis to connect to.
    Redis(crate::state::RedisOptions),
}

impl Opening {
    /// Opens the store (reading back what it holds).
    fn open(self) -> Result<Arc<dyn crate::state::Store>, String> {
        match self {
            Opening::Memory(limits) => Ok(Arc::new(MemoryStore::new(limits, random_u64()))),
            Opening::Redis(options) => {
                let prefix = options.prefix.clone();
                let store = crate::state::RedisStore::open(options).map_err(|e| e.to_string())?;
                tracing::info!(prefix = %prefix, "connected to Redis");
                Ok(Arc::new(store))
            }
            Opening::Embedded(locked) => {
                let (store, r) = locked.open().map_err(|e| e.to_string())?;
                tracing::info!(
                    payment_methods = r.payment_methods,
                    payments = r.payments,
                    list_entries = r.list_entries,
                    velocity_keys = r.velocity_keys,
                    records = r.records,
                    bytes = r.bytes,
                    damaged_files = r.damaged_files,
                    seconds = r.seconds,
                    "state restored"
                );
                Ok(Arc::new(store))
            }
        }
    }
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Train(args) => train(&args),
        Command::Simulate(args) => simulate(&args),
        Command::Convert(args) => convert(&args),
        Command::Evaluate(args) => evaluate(&args),
        Command::EvaluatePolicy(args) => evaluate_policy(&args),
        Command::Replay(args) => replay(&args),
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// Descriptors the process needs beside its connections (store and log
/// files, listeners, the runtime).
const OTHER_DESCRIPTORS: usize = 256;

/// Warns when `--max-connections` on every gRPC address would need more
/// descriptors than the process may open: connections past the limit
/// would then fail at accept (`EMFILE`) rather than be refused cleanly.
fn warn_if_short_of_descriptors(config: &ServeConfig) {
    let addresses = 1 + usize::from(config.admin_listen.is_some());
    let needed = config
        .server
        .max_connections
        .saturating_mul(addresses)
        .saturating_add(OTHER_DESCRIPTORS);
    if let Ok(Some(limit)) = crate::process::max_fds()
        && needed as u64 > limit
    {
        tracing::warn!(
            max_connections = config.server.max_connections,
            addresses,
            needed,
            limit,
            "--max-connections needs more file descriptors than the soft limit allows; raise it (ulimit -n, systemd LimitNOFILE=) or lower --max-connections"
        );
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let mut config = ServeConfig::from_args(args)?;
    let model = Model::load(&config.model).map_err(|e| {
        anyhow::Error::new(e).context("cannot start without a model (pass --model PATH)")
    })?;
    tracing::info!(version = %model.version(), path = %config.model.display(), "model loaded");
    let holdout = &config.engine.holdout;
    match holdout.policy() {
        HoldoutPolicy::Flat => tracing::info!(rate = holdout.rate(), "holdout: flat"),
        HoldoutPolicy::Score { min_rate } => tracing::info!(
            rate = holdout.rate(),
            min_rate,
            block_threshold = ?config.engine.policy.block_threshold(),
            "holdout: score"
        ),
    }
    if !config.holdout_key_given && config.engine.holdout.rate() > 0.0 {
        tracing::warn!("no --holdout-key given: holdout draws will differ after a restart");
    }
    warn_if_short_of_descriptors(&config);
    let (metrics, prometheus) = Metrics::prometheus();
    config.server.metrics = Some(metrics.clone());
    let log = match &config.decision_log {
        Some(path) => Some(DecisionLog::open(
            path,
            config.decision_log_options,
            metrics.clone(),
        )?),
        None => None,
    };
    if let Some(path) = &config.record {
        config.server.recorder = Some(
            crate::replay::record::Recorder::open(
                path,
                crate::replay::record::QUEUE,
                metrics.clone(),
            )
            .context("cannot open --record")?,
        );
        tracing::info!(path = %path.display(), "recording requests");
    }
    // A data directory in use is refused before anything listens.
    let state = match config.state.clone() {
        StateConfig::Memory(limits) => Opening::Memory(limits),
        StateConfig::Redis(options) => Opening::Redis(options),
        StateConfig::Embedded(options) => {
            let dir = options.dir.clone();
            let locked = EmbeddedStore::lock(options)
                .with_context(|| format!("cannot use --data-dir {}", dir.display()))?;
            Opening::Embedded(locked)
        }
    };
    let lists = config.lists.clone();
    let lists_path = args.lists.clone().unwrap_or_default();
    let engine_config = config.engine.clone();
    let model = ModelHandle::new(model);
    let (reload_model, reload_metrics) = (model.clone(), metrics.clone());
    // Restores the state (off the async workers) and builds the engine.
    let starting = async move {
        let engine = tokio::task::spawn_blocking(move || {
            let store = state.open()?;
            let engine = Engine::new(store, model, engine_config, metrics, log);
            let lists_error =
                |e: &dyn std::fmt::Display| format!("--lists {}: {e}", lists_path.display());
            let mut commits = Vec::new();
            let now = crate::engine::system_now_ms();
            for list in crate::state::List::ALL {
                let values: Vec<&str> = lists
                    .iter()
                    .filter(|(l, _)| *l == list)
                    .map(|(_, v)| v.as_str())
                    .collect();
                if values.is_empty() {
                    continue;
                }
                let (_, commit) = engine
                    .add_list_items(
                        list,
                        &values,
                        "lists file",
                        0,
                        crate::state::ListSource::File,
                        now,
                    )
                    .map_err(|e| lists_error(&e))?;
                commits.push(commit);
            }
            crate::state::Commit::all(commits)
                .wait()
                .map_err(|e| lists_error(&e))?;
            engine.metrics().store(engine.store().stats());
            Ok::<_, String>(engine)
        })
        .await
        .map_err(|e| format!("restoring the state failed: {e}"))??;
        Ok(engine)
    };
    let runtime = crate::server::runtime().context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "grpc listening");
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_task = match config.metrics_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?;
                tracing::info!(addr = %l.local_addr()?, "metrics listening");
                Some(tokio::spawn(server::metrics_http::serve(
                    prometheus,
                    l,
                    async {
                        let _ = metrics_stopped.await;
                    },
                )))
            }
            None => None,
        };
        let (stop_reload, reload_stopped) = tokio::sync::oneshot::channel::<()>();
        let reloader = tokio::spawn(server::reload::watch(
            reload_model,
            reload_metrics,
            config.model.clone(),
            config.model_poll,
            async {
                let _ = reload_stopped.await;
            },
        ));
        let admin = match config.admin_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--admin-listen)"))?;
                tracing::info!(addr = %l.local_addr()?, "admin listening");
                Some(l)
            }
            None => None,
        };
        let (stop_tls, tls_stopped) = tokio::sync::oneshot::channel::<()>();
        let tls_reload = config.server.tls.clone().map(|tls| {
            tokio::spawn(tls.reload_on_hangup(async {
                let _ = tls_stopped.await;
            }))
        });
        let (stop_tokens, tokens_stopped) = tokio::sync::oneshot::channel::<()>();
        let token_watch = tokio::spawn(config.server.auth.clone().watch(async {
            let _ = tokens_stopped.await;
        }));
        let res =
            server::serve_starting(starting, listener, admin, config.server, termination()).await;
        let _ = stop_reload.send(());
        let _ = reloader.await;
        let _ = stop_tokens.send(());
        let _ = token_watch.await;
        let _ = stop_tls.send(());
        if let Some(t) = tls_reload {
            let _ = t.await;
        }
        let _ = stop_metrics.send(());
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        res.map_err(anyhow::Error::from)
    });
    // A restore still under way (a shutdown during start-up) is not waited
    // for: what it would restore is on disk for the next start.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// The `--from`/`--to` window of a command.
fn window(from: Option<&str>, to: Option<&str>) -> Result<TimeWindow, ConfigError> {
    let w = TimeWindow {
        from_ms: from.map(|f| config::date_ms("from", f)).transpose()?,
        to_ms: to.map(|t| config::date_ms("to", t)).transpose()?,
    };
    if let (Some(f), Some(t)) = (w.from_ms, w.to_ms)
        && t <= f
    {
        return Err(config::invalid("to", "must be after --from"));
    }
    Ok(w)
}

/// Writes a trained model file and logs its figures and the time since `started`.
fn write_model(
    out: &std::path::Path,
    file: &crate::model::file::ModelFile,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(file)?;
    text.push('\n');
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    tracing::info!(
        out = %out.display(),
        seconds = started.elapsed().as_secs_f64(),
        evaluation = %file.evaluation,
        "model written"
    );
    Ok(())
}

/// The boosting settings of `train`: the defaults, with each `--gbt-*`
/// flag given checked and recorded in `command`.
fn gbt_params(
    args: &TrainArgs,
    command: &mut String,
) -> Result<crate::train::gbt::Params, ConfigError> {
    let mut p = crate::train::gbt::Params::default();
    let mut count =
        |flag: &'static str, v: Option<usize>, min: usize, max: usize, slot: &mut usize| {
            if let Some(v) = v {
                if !(min..=max).contains(&v) {
                    return Err(config::invalid(
                        flag,
                        format!("{v} is not between {min} and {max}"),
                    ));
                }
                *slot = v;
                command.push_str(&format!(" --{flag} {v}"));
            }
            Ok(())
        };
    count("gbt-rounds", args.gbt_rounds, 1, 100_000, &mut p.rounds)?;
    count("gbt-max-depth", args.gbt_max_depth, 1, 16, &mut p.max_depth)?;
    count(
        "gbt-bins",
        args.gbt_bins,
        2,
        crate::train::gbt::MAX_BINS,
        &mut p.bins,
    )?;
    count(
        "gbt-patience",
        args.gbt_patience,
        1,
        100_000,
        &mut p.patience,
    )?;
    let mut real = |flag: &'static str, v: Option<f64>, positive: bool, slot: &mut f64| {
        if let Some(v) = v {
            if !v.is_finite() || v < 0.0 || (positive && v == 0.0) {
                let what = if positive { "more than" } else { "at least" };
                return Err(config::invalid(flag, format!("{v} must be {what} 0")));
            }
            *slot = v;
            command.push_str(&format!(" --{flag} {v}"));
        }
        Ok(())
    };
    real(
        "gbt-learning-rate",
        args.gbt_learning_rate,
        true,
        &mut p.learning_rate,
    )?;
    real("gbt-lambda", args.gbt_lambda, false, &mut p.lambda)?;
    real(
        "gbt-min-child-weight",
        args.gbt_min_child_weight,
        false,
        &mut p.min_child_weight,
    )?;
    let mut sampling = crate::train::gbt::Sampling::default();
    for (flag, v, slot) in [
        ("gbt-subsample", args.gbt_subsample, &mut sampling.subsample),
        ("gbt-colsample", args.gbt_colsample, &mut sampling.colsample),
    ] {
        if let Some(v) = v {
            if !(v > 0.0 && v <= 1.0) {
                return Err(config::invalid(
                    flag,
                    format!("{v} is not a share in (0, 1]"),
                ));
            }
            *slot = v;
            command.push_str(&format!(" --{flag} {v}"));
        }
    }
    if let Some(seed) = args.gbt_seed {
        sampling.seed = seed;
        command.push_str(&format!(" --gbt-seed {seed}"));
    }
    if let Some(bags) = args.gbt_bags {
        if !(1..=100).contains(&bags) {
            return Err(config::invalid(
                "gbt-bags",
                format!("{bags} is not between 1 and 100"),
            ));
        }
        sampling.bags = bags;
        command.push_str(&format!(" --gbt-bags {bags}"));
    }
    if args.gbt_subsample.is_some()
        || args.gbt_colsample.is_some()
        || args.gbt_seed.is_some()
        || args.gbt_bags.is_some()
    {
        p.sampling = Some(sampling);
    }
    if args.gbt_refit {
        p.refit = true;
        command.push_str(" --gbt-refit");
    }
    Ok(p)
}

fn train_traffic(args: &TrainArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let w = window(args.from.as_deref(), args.to.as_deref())?;
    let version = args.version.clone().unwrap_or_else(|| {
        format!(
            "lr-{}",
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        )
    });
    let mut command = format!(
        "riskstream train --traffic {} --version {version}",
        path.file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    for (flag, v) in [("from", &args.from), ("to", &args.to)] {
        if let Some(v) = v {
            command.push_str(&format!(" --{flag} {v}"));
        }
    }
    let set = args
        .feature_set
        .unwrap_or(crate::features::LATEST_FEATURE_SET);
    if !(1..=crate::features::LATEST_FEATURE_SET).contains(&set) {
        return Err(config::invalid(
            "feature-set",
            format!(
                "{set} is not a feature set; they are 1 to {}",
                crate::features::LATEST_FEATURE_SET
            ),
        )
        .into());
    }
    command.push_str(&format!(" --feature-set {set}"));
    let family = match args.estimator {
        EstimatorArg::LogisticRegression => {
            let mut ignored = String::new();
            gbt_params(args, &mut ignored)?;
            if !ignored.is_empty() {
                return Err(config::invalid(
                    "estimator",
                    format!(
                        "{} set boosting; add --estimator gradient-boosted-trees",
                        ignored.trim()
                    ),
                )
                .into());
            }
            Family::LogisticRegression
        }
        EstimatorArg::GradientBoostedTrees => {
            command.push_str(" --estimator gradient-boosted-trees");
            Family::GradientBoostedTrees(gbt_params(args, &mut command)?)
        }
    };
    let started = std::time::Instant::now();
    let file = match &args.served_decision_log {
        None => crate::train::train_traffic(path, w, set, family, &version, &command)?,
        Some(log_path) => {
            use crate::train::served::{ServedLog, Weighting};
            let weighting = match args.served_weighting {
                ServedWeightingArg::InversePropensity => Weighting::InversePropensity,
                ServedWeightingArg::None => Weighting::None,
            };
            command.push_str(&format!(
                " --served-decision-log {} --served-weighting {}",
                log_path
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                match weighting {
                    Weighting::InversePropensity => "inverse-propensity",
                    Weighting::None => "none",
                }
            ));
            let log = ServedLog::read(log_path)?;
            let served = crate::train::Served {
                path: log_path,
                log: &log,
                weighting,
            };
            crate::train::train_served(path, w, set, family, served, &version, &command)?
        }
    };
    write_model(&args.out, &file, started)
}

fn evaluate(args: &EvaluateArgs) -> anyhow::Result<()> {
    let w = window(args.from.as_deref(), args.to.as_deref())?;
    if args.handbook_test_set && w.from_ms.is_none() {
        return Err(
            config::invalid("handbook-test-set", "needs --from (the first test day)").into(),
        );
    }
    if args.threshold > 99 {
        return Err(
            config::invalid("threshold", format!("{} is outside 0–99", args.threshold)).into(),
        );
    }
    let scores = match &args.outcomes {
        Some(path) => crate::train::evaluate::Scores::served(path)?,
        None => crate::train::evaluate::Scores::Model(Box::new(Model::load(&args.model)?)),
    };
    let started = std::time::Instant::now();
    let e = crate::train::evaluate::evaluate(
        &args.traffic,
        scores,
        crate::train::evaluate::EvalOptions {
            window: w,
            threshold: args.threshold,
            handbook_test_set: args.handbook_test_set,
        },
    )?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "evaluated");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", e.report());
    }
    Ok(())
}

fn evaluate_policy(args: &EvaluatePolicyArgs) -> anyhow::Result<()> {
    use crate::policy::files::{DecisionLogFile, Labels};
    use crate::policy::output::Evaluation;
    let w = window(args.from.as_deref(), args.to.as_deref())?;
    if let Some(t) = args.thresholds.iter().find(|t| **t > 100) {
        return Err(config::invalid("threshold", format!("{t} is outside 0–100")).into());
    }
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        return Err(config::invalid(
            "confidence",
            format!("{} is not strictly between 0 and 1", args.confidence),
        )
        .into());
    }
    let min_label_age = config::duration("min-label-age", &args.min_label_age)?;
    let min_label_age_ms = i64::try_from(min_label_age.as_millis())
        .map_err(|_| config::invalid("min-label-age", "is too long"))?;
    let as_of = args
        .as_of
        .as_deref()
        .map(|a| config::date_ms("as-of", a))
        .transpose()?;

    let labels = match (&args.labels, &args.traffic) {
        (Some(path), _) => Labels::from_json_lines(path)?,
        (None, Some(path)) => Labels::from_traffic(path)?,
        (None, None) => Labels::default(),
    };
    // Without --as-of every label counts: the default time is the latest
    // in the files, at or after every label.
    let log = DecisionLogFile::read(&args.decision_log, &labels, as_of)?;
    let as_of_ms = as_of
        .or(log.latest_ms().max(labels.latest_ms()))
        .unwrap_or(0);
    let query = crate::policy::Query {
        from_ms: w.from_ms,
        to_ms: w.to_ms,
        as_of_ms: Some(as_of_ms),
        min_label_age_ms,
        confidence: args.confidence,
        ..crate::policy::Query::new(args.thresholds.clone())
    };
    let report = crate::policy::estimate(log.observations(), &query)?;
    tracing::info!(
        records = log.observations().len(),
        labels = labels.len(),
        "decision log and labels read"
    );
    let evaluation = Evaluation {
        model_version: log.model_versions(|ts| query.contains(ts)),
        as_of_ms,
        min_label_age_ms,
        report,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
    } else {
        print!("{}", evaluation.text());
    }
    Ok(())
}

fn train(args: &TrainArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.traffic {
        return train_traffic(args, path);
    }
    if args.customers < 100 {
        return Err(config::invalid(
            "customers",
            format!("{} is too few; at least 100", args.customers),
        )
        .into());
    }
    if args.days < 5 {
        return Err(
            config::invalid("days", format!("{} is too few; at least 5", args.days)).into(),
        );
    }
    let cfg = SimConfig {
        seed: args.seed,
        customers: args.customers,
        days: args.days,
        ..SimConfig::default()
    };
    let version = args
        .version
        .clone()
        .unwrap_or_else(|| format!("sim-lr-s{}-c{}-d{}", args.seed, args.customers, args.days));
    // The output path is left out so that the file is the same wherever it is written.
    let command = format!(
        "riskstream train --synthetic --seed {} --customers {} --days {} --version {}",
        args.seed, args.customers, args.days, version
    );
    let started = std::time::Instant::now();
    let file = crate::train::train_synthetic(cfg, &version, &command)?;
    write_model(&args.out, &file, started)
}

fn simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    if args.customers == 0 || args.days == 0 {
        return Err(config::invalid(
            if args.customers == 0 {
                "customers"
            } else {
                "days"
            },
            "must be at least 1",
        )
        .into());
    }
    if !(0.0..=1.0).contains(&args.fraud_rate) {
        return Err(
            config::invalid("fraud-rate", format!("{} is outside 0–1", args.fraud_rate)).into(),
        );
    }
    let cfg = SimConfig {
        seed: args.seed,
        customers: args.customers,
        days: args.days,
        start_ms: config::date_ms("start", &args.start)?,
        fraud_rate: args.fraud_rate,
    };
    let started = std::time::Instant::now();
    let mut out = TrafficWriter::create(&args.out)?;
    let mut frauds = 0u64;
    for e in crate::sim::generate(cfg) {
        let record = e.into_record();
        frauds += u64::from(!record.scenario.is_empty());
        out.write(&record)?;
    }
    let records = out.finish()?;
    tracing::info!(
        out = %args.out.display(),
        records,
        fraudulent_payments = frauds,
        seconds = started.elapsed().as_secs_f64(),
        "traffic written"
    );
    Ok(())
}

fn convert(args: &ConvertArgs) -> anyhow::Result<()> {
    let delay = config::duration("feedback-delay", &args.feedback_delay)?;
    let started = std::time::Instant::now();
    let mut out = TrafficWriter::create(&args.output)?;
    let stats = match args.format {
        ConvertFormat::HandbookCsv => crate::convert::handbook_csv(
            &args.input,
            &mut out,
            crate::convert::HandbookOptions {
                feedback_delay_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
            },
        )?,
    };
    let records = out.finish()?;
    tracing::info!(
        out = %args.output.display(),
        records,
        registrations = stats.registrations,
        payments = stats.payments,
        fraud_reports = stats.feedback,
        seconds = started.elapsed().as_secs_f64(),
        "traffic written"
    );
    Ok(())
}

fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    use crate::replay::{self, driver, outcomes::OutcomeWriter, progress, report, requests};
    let cfg = config::replay(args)?;
    let requests = Arc::new(requests::load(&cfg.file, &cfg.kinds)?);
    tracing::info!(
        requests = requests.len(),
        target = %cfg.target,
        "replaying {}",
        cfg.file.display()
    );
    let writer = cfg
        .outcomes_out
        .as_deref()
        .map(OutcomeWriter::create)
        .transpose()?;
    let runtime = crate::server::runtime().context("cannot start the async runtime")?;
    let run = runtime.block_on(async {
        let mut clients = Vec::with_capacity(cfg.connections);
        for _ in 0..cfg.connections {
            clients.push(
                replay::client::connect(&cfg.target, cfg.bearer.clone(), cfg.tls.clone())
                    .await
                    .map_err(|source| replay::ReplayError::Connect {
                        target: cfg.target.clone(),
                        source,
                    })?,
            );
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            termination().await;
            let _ = stop_tx.send(true);
        });
        let counters = Arc::new(progress::Counters::default());
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let shown = tokio::spawn(progress::show(
            cfg.progress,
            requests.len() as u64,
            counters.clone(),
            done_rx,
        ));
        let result = driver::run(
            &cfg,
            requests,
            clients,
            counters,
            writer.as_ref().map(OutcomeWriter::sender),
            stop_rx,
        )
        .await;
        let _ = done_tx.send(true);
        let _ = shown.await;
        result
    });
    // Whatever was answered is on disk, even when the run failed.
    let lines = writer.map(OutcomeWriter::finish).transpose();
    let (stats, ending) = run?;
    if let Some(lines) = lines? {
        tracing::info!("{lines} outcomes written");
    }
    let report_info = report::RunInfo {
        target: cfg.target.clone(),
        mode: match cfg.mode {
            replay::Mode::Stream => format!("stream mode, {} stream(s)", cfg.concurrency),
            replay::Mode::Unary => format!("unary mode, {} caller(s)", cfg.concurrency),
        },
        pacing: cfg.pacing.describe(),
        ending,
    };
    let report = report::Report::new(report_info, &stats);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    if report.interrupted {
        return Err(replay::Interrupted.into());
    }
    let errors = report.error_count();
    if errors > 0 && !args.allow_errors {
        return Err(replay::ErrorsFound(errors).into());
    }
    Ok(())
}
