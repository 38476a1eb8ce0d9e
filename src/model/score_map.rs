//! The monotone map from calibrated probability to the 0–99 risk score, and
//! its inverse (the probability reported with a perturbed score).

use super::ModelError;
use super::file::Knot;

/// A validated score map: knots in log-odds space.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreMap {
    logits: Vec<f64>,
    scores: Vec<f64>,
}

/// Log-odds of `p`.
pub fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl ScoreMap {
    /// Validates `knots`: probabilities strictly increasing within (0, 1),
    /// scores strictly increasing from 0 to 99, and far enough apart in
    /// log-odds that every score maps back to itself through
    /// [`ScoreMap::logit_of_score`].
    pub fn new(knots: &[Knot]) -> Result<Self, ModelError> {
        let bad = |m: String| Err(ModelError::Invalid(format!("score_map: {m}")));
        if knots.len() < 2 {
            return bad("needs at least two knots".into());
        }
        if knots[0].score != 0 || knots[knots.len() - 1].score != 99 {
            return bad("the first knot must have score 0 and the last score 99".into());
        }
        for (i, k) in knots.iter().enumerate() {
            if !(k.probability > 0.0 && k.probability < 1.0) {
                return bad(format!(
                    "knot {i}: probability must be strictly between 0 and 1"
                ));
            }
            if i > 0 && (k.probability <= knots[i - 1].probability || k.score <= knots[i - 1].score)
            {
                return bad(format!(
                    "knot {i}: probabilities and scores must both strictly increase"
                ));
            }
        }
        let map = ScoreMap {
            logits: knots.iter().map(|k| logit(k.probability)).collect(),
            scores: knots.iter().map(|k| f64::from(k.score)).collect(),
        };
        // Knots a few units in the last place apart in log-odds leave no
        // room for the scores between them: the inverse the holdout reports
        // with would name another score.
        if let Some(s) = (0..=99).find(|&s| map.score_of_logit(map.logit_of_score(s)) != s) {
            return bad(format!(
                "knots too close in log-odds to tell score {s} from its neighbours"
            ));
        }
        Ok(map)
    }

    /// The score of a calibrated log-odds value `z`.
    pub fn score_of_logit(&self, z: f64) -> u32 {
        let n = self.logits.len();
        let s = if z <= self.logits[0] {
            self.scores[0]
        } else if z >= self.logits[n - 1] {
            self.scores[n - 1]
        } else {
            let i = self.logits.partition_point(|&l| l <= z) - 1;
            let t = (z - self.logits[i]) / (self.logits[i + 1] - self.logits[i]);
            self.scores[i] + t * (self.scores[i + 1] - self.scores[i])
        };
        (s.floor().clamp(0.0, 99.0)) as u32
    }

    /// A calibrated log-odds value whose score is `score` (the middle of its
    /// interval), so that `score_of_logit(logit_of_score(s)) == s`.
    pub fn logit_of_score(&self, score: u32) -> f64 {
        let n = self.scores.len();
        let t = f64::from(score.min(99)) + 0.5;
        if t >= self.scores[n - 1] {
            return self.logits[n - 1];
        }
        let i = self.scores.partition_point(|&s| s <= t) - 1;
        let f = (t - self.scores[i]) / (self.scores[i + 1] - self.scores[i]);
        self.logits[i] + f * (self.logits[i + 1] - self.logits[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ScoreMap {
        ScoreMap::new(&[
            Knot {
                probability: 1e-5,
                score: 0,
            },
            Knot {
                probability: 0.05,
                score: 65,
            },
            Knot {
                probability: 0.2,
                score: 75,
            },
            Knot {
                probability: 0.999,
                score: 99,
            },
        ])
        .expect("valid map")
    }

    #[test]
    fn knots_map_exactly_and_monotonically() {
        let m = map();
        assert_eq!(m.score_of_logit(logit(0.2)), 75);
        assert_eq!(m.score_of_logit(logit(0.05)), 65);
        assert_eq!(m.score_of_logit(logit(1e-9)), 0);
        assert_eq!(m.score_of_logit(logit(0.9999)), 99);
        let mut last = 0;
        for i in 1..1000 {
            let s = m.score_of_logit(logit(i as f64 / 1000.0));
            assert!(s >= last);
            last = s;
        }
    }

    #[test]
    fn inverse_round_trips() {
        let m = map();
        for s in 0..100 {
            assert_eq!(m.score_of_logit(m.logit_of_score(s)), s, "score {s}");
        }
    }

    #[test]
    fn knots_too_close_to_invert_are_rejected() {
        // One unit in the last place apart: scores 1–98 have no log-odds.
        let close = [
            Knot {
                probability: 0.9,
                score: 0,
            },
            Knot {
                probability: 0.900_000_000_000_000_1,
                score: 99,
            },
        ];
        assert!(ScoreMap::new(&close).is_err());
    }

    #[test]
    fn bad_maps_are_rejected() {
        assert!(
            ScoreMap::new(&[Knot {
                probability: 0.5,
                score: 0
            }])
            .is_err()
        );
        assert!(
            ScoreMap::new(&[
                Knot {
                    probability: 0.5,
                    score: 0
                },
                Knot {
                    probability: 0.4,
                    score: 99
                }
            ])
            .is_err()
        );
    }
}
