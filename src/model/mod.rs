//! Models: loading and validating a model file, inference on a feature
//! vector with exact per-feature contributions, and the atomically swappable
//! handle the scoring path reads.
//!
//! - [`file`]: the on-disk format.
//! - [`score_map`]: probability ↔ 0–99 score.

pub mod file;
pub mod score_map;

use crate::features::{Feature, FeatureVector, NUM_FEATURES};
use arc_swap::ArcSwapOption;
use file::{Estimator, ModelFile};
use score_map::ScoreMap;
use std::path::Path;
use std::sync::Arc;

/// Largest magnitude of a parameter in log-odds units: a logistic
/// regression's weights and intercept, a tree ensemble's base and node
/// values, the calibration's slope and intercept. A log-odds of 10,000 is a
/// probability within e^-10000 of 0 or 1: no trained model comes near it
/// (the shipped ones stay under 10), and within these bounds the log-odds
/// of every payment stay finite (see [`MIN_SCALE`]).
pub const MAX_LOG_ODDS_PARAMETER: f64 = 1e4;

/// Smallest standardisation scale of a logistic regression. With it,
/// [`MAX_LOG_ODDS_PARAMETER`] and [`MAX_FEATURE_PARAMETER`], a term
/// `weight · (x − mean) / scale` is at most 10^10 · (|x| + 10^9), so the
/// calibrated log-odds of at most [`NUM_FEATURES`] terms stay finite for
/// every feature value below 10^280 in magnitude (served features stay
/// below 10^13: amounts are capped, counts enter as logarithms); a tree
/// ensemble's log-odds are a sum of bounded values, finite for any input.
pub const MIN_SCALE: f64 = 1e-6;

/// Largest magnitude of a logistic regression's standardisation means and
/// scales, in feature units.
pub const MAX_FEATURE_PARAMETER: f64 = 1e9;

/// Why a model could not be loaded or could not score.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("cannot read model file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the model format.
    #[error("model file {path} is not a valid model: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The JSON error, with line and column.
        source: serde_json::Error,
    },
    /// The content is inconsistent.
    #[error("invalid model: {0}")]
    Invalid(String),
    /// No model is loaded.
    #[error("no model is loaded")]
    Missing,
    /// Inference produced a value that is not a finite number.
    #[error("the model produced a non-finite score")]
    NonFinite,
}

/// A model ready to score: parameters laid out for the serving feature vector.
#[derive(Debug, Clone)]
pub struct Model {
    version: String,
    version_bytes: bytes::Bytes,
    /// For each model parameter, the feature-vector index it reads.
    index: Vec<usize>,
    estimator: Compiled,
    calibration: file::Calibration,
    score_map: ScoreMap,
    file: ModelFile,
}

/// An estimator laid out for the serving feature vector.
#[derive(Debug, Clone)]
enum Compiled {
    Linear {
        /// The model reads every feature in vector order.
        identity: bool,
        mean: Vec<f64>,
        inv_scale: Vec<f64>,
        weights: Vec<f64>,
        intercept: f64,
    },
    Trees {
        base: f64,
        /// Base plus every root's value: the log-odds no feature accounts for.
        expected: f64,
        trees: Vec<Vec<TreeNode>>,
    },
}

/// A tree node with its feature already mapped to the serving vector.
#[derive(Debug, Clone, Copy)]
struct TreeNode {
    /// Serving feature index, or `LEAF`.
    feature: usize,
    threshold: f64,
    left: usize,
    right: usize,
    value: f64,
}

const LEAF: usize = usize::MAX;

/// Checks a tree ensemble and maps its features to the serving vector.
fn compile_trees(
    gbt: &file::GradientBoostedTrees,
    index: &[usize],
) -> Result<Compiled, ModelError> {
    let invalid = |t: usize, i: usize, what: &str| {
        ModelError::Invalid(format!(
            "estimator.gradient_boosted_trees.trees[{t}].nodes[{i}]: {what}"
        ))
    };
    within(
        "estimator.gradient_boosted_trees.base",
        &[gbt.base],
        MAX_LOG_ODDS_PARAMETER,
    )?;
    if gbt.trees.is_empty() {
        return Err(ModelError::Invalid(
            "estimator.gradient_boosted_trees.trees is empty".into(),
        ));
    }
    let mut trees = Vec::with_capacity(gbt.trees.len());
    let mut expected = gbt.base;
    for (t, tree) in gbt.trees.iter().enumerate() {
        if tree.nodes.is_empty() {
            return Err(invalid(t, 0, "a tree needs a root"));
        }
        let len = tree.nodes.len();
        let mut nodes = Vec::with_capacity(len);
        for (i, n) in tree.nodes.iter().enumerate() {
            if !n.value.is_finite() {
                return Err(invalid(t, i, "value is not a finite number"));
            }
            if n.value.abs() > MAX_LOG_ODDS_PARAMETER {
                return Err(invalid(
                    t,
                    i,
                    &format!(
                        "value {:e} is beyond ±{MAX_LOG_ODDS_PARAMETER:e} (log-odds)",
                        n.value
                    ),
                ));
            }
            let node = match (n.feature, n.threshold, n.left, n.right) {
                (None, None, None, None) => TreeNode {
                    feature: LEAF,
                    threshold: 0.0,
                    left: 0,
                    right: 0,
                    value: n.value,
                },
                (Some(f), Some(th), Some(l), Some(r)) => {
                    let feature = *index
                        .get(f)
                        .ok_or_else(|| invalid(t, i, "feature is not an index into features"))?;
                    if !th.is_finite() {
                        return Err(invalid(t, i, "threshold is not a finite number"));
                    }
                    // Children after their parent: walks always end.
                    if l <= i || r <= i || l >= len || r >= len {
                        return Err(invalid(
                            t,
                            i,
                            "children must come after their parent, within the tree",
                        ));
                    }
                    TreeNode {
                        feature,
                        threshold: th,
                        left: l,
                        right: r,
                        value: n.value,
                    }
                }
                _ => {
                    return Err(invalid(
                        t,
                        i,
                        "a split needs feature, threshold, left and right; a leaf none of them",
                    ));
                }
            };
            nodes.push(node);
        }
        expected += nodes[0].value;
        trees.push(nodes);
    }
    Ok(Compiled::Trees {
        base: gbt.base,
        expected,
        trees,
    })
}

/// One prediction: calibrated probability, score and contributions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Calibrated fraud probability.
    pub probability: f64,
    /// Calibrated log-odds.
    pub logit: f64,
    /// The 0–99 score.
    pub score: u32,
    /// The part of the calibrated log-odds no feature accounts for.
    pub base: f64,
    /// Per feature (indexed like [`FeatureVector`]), its exact share of the
    /// calibrated log-odds: `base + Σ contributions = logit`.
    pub contributions: [f64; NUM_FEATURES],
}

/// Checks that every value of the parameter `name` is a finite number of
/// magnitude at most `max`.
fn within(name: &str, v: &[f64], max: f64) -> Result<(), ModelError> {
    let at = |i: usize| {
        if v.len() == 1 {
            name.to_owned()
        } else {
            format!("{name}[{i}]")
        }
    };
    for (i, x) in v.iter().enumerate() {
        if !x.is_finite() {
            return Err(ModelError::Invalid(format!(
                "{} is not a finite number",
                at(i)
            )));
        }
        if x.abs() > max {
            return Err(ModelError::Invalid(format!(
                "{} is {x:e}, beyond ±{max:e}",
                at(i)
            )));
        }
    }
    Ok(())
}

impl Model {
    /// Validates a parsed model file against the serving feature set: the
    /// one place a model is checked, at start-up and at every reload. Every
    /// parameter must be a finite number within its bound
    /// ([`MAX_LOG_ODDS_PARAMETER`], [`MIN_SCALE`], [`MAX_FEATURE_PARAMETER`]),
    /// so that no payment's log-odds can overflow.
    pub fn from_file(file: ModelFile) -> Result<Model, ModelError> {
        if file.format != file::FORMAT {
            return Err(ModelError::Invalid(format!(
                "format is {:?}; this build reads {:?}",
                file.format,
                file::FORMAT
            )));
        }
        if file.version.is_empty() {
            return Err(ModelError::Invalid("version is empty".into()));
        }
        if file.features.is_empty() {
            return Err(ModelError::Invalid("features is empty".into()));
        }
        let mut index = Vec::with_capacity(file.features.len());
        for name in &file.features {
            let f = Feature::from_name(name).ok_or_else(|| {
                ModelError::Invalid(format!("feature {name:?} is not computed by this build"))
            })?;
            if index.contains(&(f as usize)) {
                return Err(ModelError::Invalid(format!(
                    "feature {name:?} is listed twice"
                )));
            }
            index.push(f as usize);
        }
        let n = index.len();
        let estimator = match &file.estimator {
            Estimator::LogisticRegression(lr) => {
                for (name, v, max) in [
                    ("mean", &lr.mean, MAX_FEATURE_PARAMETER),
                    ("scale", &lr.scale, MAX_FEATURE_PARAMETER),
                    ("weights", &lr.weights, MAX_LOG_ODDS_PARAMETER),
                ] {
                    if v.len() != n {
                        return Err(ModelError::Invalid(format!(
                            "estimator.logistic_regression.{name} has {} values for {n} features",
                            v.len()
                        )));
                    }
                    within(&format!("estimator.logistic_regression.{name}"), v, max)?;
                }
                if let Some(i) = lr.scale.iter().position(|s| *s < MIN_SCALE) {
                    return Err(ModelError::Invalid(format!(
                        "estimator.logistic_regression.scale[{i}] is {:e}; a scale must be at least {MIN_SCALE:e}",
                        lr.scale[i]
                    )));
                }
                within(
                    "estimator.logistic_regression.intercept",
                    &[lr.intercept],
                    MAX_LOG_ODDS_PARAMETER,
                )?;
                Compiled::Linear {
                    identity: index.len() == NUM_FEATURES
                        && index.iter().enumerate().all(|(i, j)| i == *j),
                    mean: lr.mean.clone(),
                    inv_scale: lr.scale.iter().map(|s| 1.0 / s).collect(),
                    weights: lr.weights.clone(),
                    intercept: lr.intercept,
                }
            }
            Estimator::GradientBoostedTrees(gbt) => compile_trees(gbt, &index)?,
        };
        within(
            "calibration.slope",
            &[file.calibration.slope],
            MAX_LOG_ODDS_PARAMETER,
        )?;
        within(
            "calibration.intercept",
            &[file.calibration.intercept],
            MAX_LOG_ODDS_PARAMETER,
        )?;
        if file.calibration.slope <= 0.0 {
            return Err(ModelError::Invalid(
                "calibration.slope must be positive (the map must stay monotone)".into(),
            ));
        }
        let score_map = ScoreMap::new(&file.score_map)?;
        Ok(Model {
            version: file.version.clone(),
            version_bytes: bytes::Bytes::from(file.version.clone()),
            index,
            estimator,
            calibration: file.calibration,
            score_map,
            file,
        })
    }

    /// Reads, parses and validates the model file at `path`.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read {
            path: shown.clone(),
            source,
        })?;
        Model::from_json(&text, &shown)
    }

    /// Parses and validates the text of a model file; `origin` names it in
    /// errors. What [`Model::load`] does once the file is read.
    pub fn from_json(text: &str, origin: &str) -> Result<Model, ModelError> {
        let file: ModelFile = serde_json::from_str(text).map_err(|source| ModelError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        Model::from_file(file)
    }

    /// The model's version string.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The version, ready for outcomes.
    pub fn version_bytes(&self) -> &bytes::Bytes {
        &self.version_bytes
    }

    /// The file this model was built from.
    pub fn file(&self) -> &ModelFile {
        &self.file
    }

    /// The score map.
    pub fn score_map(&self) -> &ScoreMap {
        &self.score_map
    }

    /// Scores one feature vector.
    pub fn predict(&self, x: &FeatureVector) -> Result<Prediction, ModelError> {
        let slope = self.calibration.slope;
        let mut contributions = [0.0; NUM_FEATURES];
        let (raw, expected) = match &self.estimator {
            Compiled::Linear {
                identity,
                mean,
                inv_scale,
                weights,
                intercept,
            } => {
                let mut raw = *intercept;
                if *identity {
                    // Every serving feature, in vector order: a straight loop that vectorises.
                    for (((c, &xv), (&w, &m)), &s) in contributions
                        .iter_mut()
                        .zip(&x.0)
                        .zip(weights.iter().zip(mean))
                        .zip(inv_scale)
                    {
                        *c = w * (xv - m) * s;
                    }
                    for c in &mut contributions {
                        raw += *c;
                        *c *= slope;
                    }
                } else {
                    for i in 0..self.index.len() {
                        let j = self.index[i];
                        let c = weights[i] * (x.0[j] - mean[i]) * inv_scale[i];
                        raw += c;
                        contributions[j] = slope * c;
                    }
                }
                (raw, *intercept)
            }
            Compiled::Trees {
                base,
                expected,
                trees,
            } => {
                // Each split moves the expected output from the node's value
                // to the child's: that move is credited to the split's feature
                // (path attribution), so the credits sum to the output exactly.
                let mut raw = *base;
                for nodes in trees {
                    let mut i = 0;
                    loop {
                        let n = nodes[i];
                        if n.feature == LEAF {
                            raw += n.value;
                            break;
                        }
                        let next = if x.0[n.feature] <= n.threshold {
                            n.left
                        } else {
                            n.right
                        };
                        contributions[n.feature] += nodes[next].value - n.value;
                        i = next;
                    }
                }
                for c in &mut contributions {
                    *c *= slope;
                }
                (raw, *expected)
            }
        };
        let logit = slope * raw + self.calibration.intercept;
        if !logit.is_finite() {
            return Err(ModelError::NonFinite);
        }
        Ok(Prediction {
            probability: score_map::sigmoid(logit),
            logit,
            score: self.score_map.score_of_logit(logit),
            base: slope * expected + self.calibration.intercept,
            contributions,
        })
    }
}

/// The model the scoring path reads: swapped atomically, never half-loaded.
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ModelHandle {
    current: Arc<ArcSwapOption<Model>>,
}

impl ModelHandle {
    /// A handle holding `model`.
    pub fn new(model: Model) -> Self {
        ModelHandle {
            current: Arc::new(ArcSwapOption::from_pointee(model)),
        }
    }

    /// A handle with no model: every assessed payment is `UNKNOWN`.
    pub fn empty() -> Self {
        ModelHandle::default()
    }

    /// The current model, if any.
    pub fn current(&self) -> Option<Arc<Model>> {
        self.current.load_full()
    }

    /// A cheap read guard on the current model (no reference-count traffic),
    /// for the scoring path.
    pub fn guard(&self) -> arc_swap::Guard<Option<Arc<Model>>> {
        self.current.load()
    }

    /// Replaces the current model.
    pub fn swap(&self, model: Model) {
        self.current.store(Some(Arc::new(model)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use file::{Calibration, Knot, LogisticRegression};

    fn file() -> ModelFile {
        ModelFile {
            format: file::FORMAT.into(),
            version: "t1".into(),
            features: vec!["device_mismatch".into(), "amount".into()],
            estimator: Estimator::LogisticRegression(LogisticRegression {
                mean: vec![0.1, 3.0],
                scale: vec![0.3, 1.5],
                weights: vec![1.2, 0.4],
                intercept: -4.0,
            }),
            calibration: Calibration {
                slope: 0.9,
                intercept: 0.1,
            },
            score_map: vec![
                Knot {
                    probability: 1e-4,
                    score: 0,
                },
                Knot {
                    probability: 0.5,
                    score: 75,
                },
                Knot {
                    probability: 0.99,
                    score: 99,
                },
            ],
            provenance: serde_json::Value::Null,
            evaluation: serde_json::Value::Null,
        }
    }

    #[test]
    fn contributions_sum_to_the_logit() {
        let m = Model::from_file(file()).expect("valid");
        let mut x = FeatureVector([0.0; NUM_FEATURES]);
        x.0[Feature::DeviceMismatch as usize] = 1.0;
        x.0[Feature::Amount as usize] = 5.0;
        let p = m.predict(&x).expect("finite");
        let sum: f64 = p.base + p.contributions.iter().sum::<f64>();
        assert!((sum - p.logit).abs() < 1e-12);
        let expected = 0.9 * (-4.0 + 1.2 * 0.9 / 0.3 + 0.4 * 2.0 / 1.5) + 0.1;
        assert!((p.logit - expected).abs() < 1e-12);
    }

    #[test]
    fn inconsistent_files_are_rejected() {
        let mut f = file();
        f.features[1] = "no_such_feature".into();
        assert!(Model::from_file(f).is_err());
        let mut f = file();
        f.features[1] = "device_mismatch".into();
        assert!(Model::from_file(f).is_err());
        let lr = |f: &mut ModelFile| match &mut f.estimator {
            Estimator::LogisticRegression(lr) => lr.clone(),
            Estimator::GradientBoostedTrees(_) => unreachable!("a linear file"),
        };
        let mut f = file();
        let mut l = lr(&mut f);
        l.weights.pop();
        f.estimator = Estimator::LogisticRegression(l);
        assert!(Model::from_file(f).is_err());
        let mut f = file();
        let mut l = lr(&mut f);
        l.scale[0] = 0.0;
        f.estimator = Estimator::LogisticRegression(l);
        assert!(Model::from_file(f).is_err());
        let mut f = file();
        f.format = "other/9".into();
        assert!(Model::from_file(f).is_err());
    }

    fn split(feature: usize, threshold: f64, left: usize, right: usize, value: f64) -> file::Node {
        file::Node {
            feature: Some(feature),
            threshold: Some(threshold),
            left: Some(left),
            right: Some(right),
            value,
        }
    }

    fn leaf(value: f64) -> file::Node {
        file::Node {
            feature: None,
            threshold: None,
            left: None,
            right: None,
            value,
        }
    }

    fn trees_file() -> ModelFile {
        // Tree 1: device_mismatch > 0.5 → +2, else amount > 4 → +1 / −0.5.
        // Tree 2: amount > 6 → +0.3, else −0.1.
        ModelFile {
            estimator: Estimator::GradientBoostedTrees(file::GradientBoostedTrees {
                base: -3.0,
                trees: vec![
                    file::Tree {
                        nodes: vec![
                            split(0, 0.5, 1, 2, 0.2),
                            split(1, 4.0, 3, 4, -0.1),
                            leaf(2.0),
                            leaf(-0.5),
                            leaf(1.0),
                        ],
                    },
                    file::Tree {
                        nodes: vec![split(1, 6.0, 1, 2, 0.0), leaf(-0.1), leaf(0.3)],
                    },
                ],
            }),
            ..file()
        }
    }

    #[test]
    fn trees_score_by_their_leaves_and_credit_each_split() {
        let m = Model::from_file(trees_file()).expect("valid");
        let mut x = FeatureVector([0.0; NUM_FEATURES]);
        x.0[Feature::Amount as usize] = 5.0;
        let p = m.predict(&x).expect("finite");
        // Leaves reached: tree 1 → 1.0 (no device mismatch, amount > 4), tree 2 → −0.1.
        let raw = -3.0 + 1.0 - 0.1;
        assert!((p.logit - (0.9 * raw + 0.1)).abs() < 1e-12);
        let sum: f64 = p.base + p.contributions.iter().sum::<f64>();
        assert!((sum - p.logit).abs() < 1e-12, "contributions sum exactly");
        // device_mismatch moved tree 1 from 0.2 to −0.1; amount from −0.1 to
        // 1.0 in tree 1 and from 0.0 to −0.1 in tree 2.
        let c = |f: Feature| p.contributions[f as usize];
        assert!((c(Feature::DeviceMismatch) - 0.9 * -0.3).abs() < 1e-12);
        assert!((c(Feature::Amount) - 0.9 * (1.1 - 0.1)).abs() < 1e-12);
        x.0[Feature::DeviceMismatch as usize] = 1.0;
        assert!(m.predict(&x).expect("finite").logit > p.logit);
    }

    #[test]
    fn malformed_trees_are_rejected() {
        let with = |edit: &dyn Fn(&mut file::GradientBoostedTrees)| {
            let mut f = trees_file();
            if let Estimator::GradientBoostedTrees(g) = &mut f.estimator {
                edit(g);
            }
            Model::from_file(f)
        };
        assert!(with(&|_| {}).is_ok());
        // A child before its parent would loop.
        assert!(with(&|g| g.trees[0].nodes[1].left = Some(0)).is_err());
        assert!(with(&|g| g.trees[0].nodes[1].right = Some(9)).is_err());
        // Feature 2 is past the file's two features.
        assert!(with(&|g| g.trees[1].nodes[0].feature = Some(2)).is_err());
        assert!(with(&|g| g.trees[1].nodes[0].threshold = None).is_err());
        assert!(with(&|g| g.trees[0].nodes[2].value = f64::NAN).is_err());
        assert!(with(&|g| g.trees.clear()).is_err());
        assert!(with(&|g| g.trees[1].nodes.clear()).is_err());
    }

    #[test]
    fn parameters_beyond_their_bounds_are_refused() {
        let with_lr = |edit: &dyn Fn(&mut LogisticRegression)| {
            let mut f = file();
            if let Estimator::LogisticRegression(lr) = &mut f.estimator {
                edit(lr);
            }
            Model::from_file(f)
        };
        let refused = |r: Result<Model, ModelError>, naming: &str| match r {
            Err(ModelError::Invalid(m)) => assert!(m.contains(naming), "{m}"),
            other => panic!("{naming}: {other:?}"),
        };
        assert!(with_lr(&|_| {}).is_ok());
        // Finite but absurd: every payment's log-odds would overflow.
        refused(with_lr(&|l| l.weights[1] = 1e308), "weights[1]");
        refused(with_lr(&|l| l.weights[0] = -1e5), "weights[0]");
        refused(with_lr(&|l| l.intercept = 1e300), "intercept");
        refused(with_lr(&|l| l.scale[0] = 1e-300), "scale[0]");
        refused(with_lr(&|l| l.scale[1] = 1e300), "scale[1]");
        refused(with_lr(&|l| l.mean[0] = -1e200), "mean[0]");
        refused(with_lr(&|l| l.weights[0] = f64::INFINITY), "weights[0]");
        refused(with_lr(&|l| l.mean[1] = f64::NAN), "mean[1]");
        // At the bounds, accepted.
        assert!(
            with_lr(&|l| {
                l.weights = vec![MAX_LOG_ODDS_PARAMETER, -MAX_LOG_ODDS_PARAMETER];
                l.scale = vec![MIN_SCALE, MAX_FEATURE_PARAMETER];
                l.mean = vec![-MAX_FEATURE_PARAMETER, MAX_FEATURE_PARAMETER];
                l.intercept = -MAX_LOG_ODDS_PARAMETER;
            })
            .is_ok()
        );

        let with_calibration = |slope: f64, intercept: f64| {
            Model::from_file(ModelFile {
                calibration: Calibration { slope, intercept },
                ..file()
            })
        };
        refused(with_calibration(1e308, 0.0), "calibration.slope");
        refused(with_calibration(1.0, -1e308), "calibration.intercept");
        refused(with_calibration(f64::NAN, 0.0), "calibration.slope");
        refused(with_calibration(0.0, 0.0), "calibration.slope");

        let with_trees = |edit: &dyn Fn(&mut file::GradientBoostedTrees)| {
            let mut f = trees_file();
            if let Estimator::GradientBoostedTrees(g) = &mut f.estimator {
                edit(g);
            }
            Model::from_file(f)
        };
        refused(
            with_trees(&|g| g.trees[0].nodes[2].value = 1e308),
            "nodes[2]",
        );
        refused(
            with_trees(&|g| g.trees[1].nodes[0].value = -1e5),
            "nodes[0]",
        );
        refused(with_trees(&|g| g.base = 1e308), "base");
        refused(
            with_trees(&|g| g.trees[0].nodes[0].threshold = Some(f64::INFINITY)),
            "threshold",
        );
    }

    #[test]
    fn within_the_bounds_the_log_odds_stay_finite() {
        // The worst a file within the bounds can do, on every serving
        // feature, against feature values far beyond what is served.
        let names: Vec<String> = crate::features::FEATURES
            .iter()
            .map(|(_, name, _)| (*name).to_owned())
            .collect();
        let worst = ModelFile {
            features: names,
            estimator: Estimator::LogisticRegression(LogisticRegression {
                mean: vec![-MAX_FEATURE_PARAMETER; NUM_FEATURES],
                scale: vec![MIN_SCALE; NUM_FEATURES],
                weights: vec![MAX_LOG_ODDS_PARAMETER; NUM_FEATURES],
                intercept: MAX_LOG_ODDS_PARAMETER,
            }),
            calibration: Calibration {
                slope: MAX_LOG_ODDS_PARAMETER,
                intercept: MAX_LOG_ODDS_PARAMETER,
            },
            ..file()
        };
        let m = Model::from_file(worst).expect("within the bounds");
        for x in [1e13, 1e100, 1e280] {
            let p = m
                .predict(&FeatureVector([x; NUM_FEATURES]))
                .expect("finite log-odds");
            assert!(p.logit.is_finite() && p.logit > 0.0, "{x}: {}", p.logit);
            assert_eq!(p.score, 99);
        }
    }

    #[test]
    fn the_shipped_models_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        for name in ["default.json", "handbook.json", "handbook-gbt.json"] {
            Model::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn json_round_trip() {
        let f = file();
        let text = serde_json::to_string_pretty(&f).expect("serialise");
        let back: ModelFile = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, f);
        let t = trees_file();
        let text = serde_json::to_string(&t).expect("serialise");
        assert!(text.contains("\"gradient_boosted_trees\""));
        let back: ModelFile = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, t);
    }
}
