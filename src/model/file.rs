//! The model file format: versioned, human-readable JSON. A file names its
//! features in order (checked against the serving feature set at load),
//! carries the estimator's parameters, the calibration and the mapping from
//! probability to the 0–99 score, and says where it came from.

use serde::{Deserialize, Serialize};

/// The value of `format` this build reads and writes.
pub const FORMAT: &str = "riskstream-model/1";

/// A model file, as stored under `models/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Version string reported in outcomes and in `riskstream_model_info`.
    pub version: String,
    /// Feature names, in the order the estimator's parameters use.
    pub features: Vec<String>,
    /// The estimator and its parameters.
    pub estimator: Estimator,
    /// Platt calibration of the estimator's raw log-odds.
    pub calibration: Calibration,
    /// Knots of the monotone map from calibrated probability to score.
    pub score_map: Vec<Knot>,
    /// How the model was produced (data, seed, command, crate versions).
    #[serde(default)]
    pub provenance: serde_json::Value,
    /// Figures measured when it was produced.
    #[serde(default)]
    pub evaluation: serde_json::Value,
}

/// The estimator families a model file can hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// Logistic regression over standardised features.
    LogisticRegression(LogisticRegression),
    /// An additive ensemble of binary decision trees over raw feature values.
    GradientBoostedTrees(GradientBoostedTrees),
}

/// Gradient-boosted trees: `raw logit = base + Σ_trees leaf value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradientBoostedTrees {
    /// Log-odds before any tree.
    pub base: f64,
    /// The trees; each adds the value of the leaf a payment reaches.
    pub trees: Vec<Tree>,
}

/// One tree: `nodes[0]` is the root; every child comes after its parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// The nodes, root first.
    pub nodes: Vec<Node>,
}

/// A node. A split sends a payment `left` when its value of `feature` (an
/// index into the file's `features`) is at most `threshold`, else `right`;
/// a leaf (no `feature`) adds `value`. A split's `value` is the mean leaf
/// value under it, which per-feature contributions are measured from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Split feature, absent for a leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<usize>,
    /// Split threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Index of the left child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<usize>,
    /// Index of the right child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right: Option<usize>,
    /// Leaf output, or a split's expected output.
    pub value: f64,
}

/// Logistic regression: `logit = intercept + Σ weight_i · (x_i − mean_i) / scale_i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogisticRegression {
    /// Per-feature mean used for standardisation.
    pub mean: Vec<f64>,
    /// Per-feature scale (standard deviation) used for standardisation.
    pub scale: Vec<f64>,
    /// Per-feature weight on the standardised value.
    pub weights: Vec<f64>,
    /// Intercept of the raw log-odds.
    pub intercept: f64,
}

/// Platt calibration: `calibrated logit = slope · raw logit + intercept`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Slope on the raw log-odds.
    pub slope: f64,
    /// Offset added after the slope.
    pub intercept: f64,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            slope: 1.0,
            intercept: 0.0,
        }
    }
}

/// One knot of the score map: this probability maps to this score. Between
/// knots the score is linear in log-odds; below the first knot it is the
/// first score, above the last the last.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knot {
    /// Calibrated fraud probability, strictly between 0 and 1.
    pub probability: f64,
    /// Score, an integer 0–99.
    pub score: u32,
}
