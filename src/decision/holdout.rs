//! The holdout: a keyed-hash draw on `payment_id` that puts a share of
//! payments in a holdout whose reported score is replaced by a uniformly
//! drawn one. The same id always gets the same draw; without the key the
//! draw is unpredictable.
//!
//! The share may depend on the payment's true score ([`HoldoutPolicy`]):
//! `flat` holds out every payment at `--holdout-rate`; `score` spends the
//! exploration where it informs the block threshold. With the block
//! threshold `b` (the lowest score whose action is block), `--holdout-rate`
//! `R` and `--holdout-min-rate` `m`, a payment of true score `s` is held out
//! with probability
//!
//! - `m` when `s < b`: its label is seen anyway, and a holdout draw can
//!   only block it;
//! - `max(m, R · 2^(−k/2))` when `s ≥ b`, with `k = ⌊(s − b) / 10⌋`: `R`
//!   over the ten scores from the threshold, then `1/√2` of it for each
//!   further ten (halving every twenty scores): at the default thresholds
//!   75–84 `R`, 85–94 `0.707 R`, 95–99 `R/2`, never below the floor `m`.
//!
//! Near the threshold the fraud share of the blocked payments is the most
//! uncertain; far above it nearly every payment is fraudulent and fewer
//! labels pin the share down. The curve is gentle and in steps of ten on
//! purpose: the estimator pools payments of equal propensity, and a cell
//! with only a handful of payments seen gives an interval its prior
//! dominates. Measured at equal cost (`policy::coverage`, models/README.md
//! "Holdout policies at equal cost"), halving every five scores widened
//! every interval, and every ten those of the figures far above the
//! threshold; with few would-be-blocked payments `flat` gives the narrower
//! intervals. The same rate decides the draw and every
//! propensity the decision log carries ([`Holdout::rate_at`]), so the
//! logged propensity follows the policy exactly. With no block action, or
//! `m = R`, `score` is `flat`.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// Scores per step of the `score` policy's curve above the block threshold.
pub const SCORE_STEP: u32 = 10;

/// What each step of the `score` policy's curve multiplies the rate by
/// (`1/√2`: halving every two steps).
pub const SCORE_STEP_FACTOR: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// How the holdout share depends on a payment's true score.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum HoldoutPolicy {
    /// Every payment is held out with the same probability, the rate.
    #[default]
    Flat,
    /// The rate over the first [`SCORE_STEP`] scores from the block
    /// threshold, times [`SCORE_STEP_FACTOR`] for each further
    /// [`SCORE_STEP`], never below `min_rate`; `min_rate` below the
    /// threshold.
    Score {
        /// The floor (at most the rate).
        min_rate: f64,
    },
}

impl HoldoutPolicy {
    /// Its flag value (`flat`, `score`).
    pub fn name(&self) -> &'static str {
        match self {
            HoldoutPolicy::Flat => "flat",
            HoldoutPolicy::Score { .. } => "score",
        }
    }
}

/// The holdout configuration.
#[derive(Clone)]
pub struct Holdout {
    rate: f64,
    policy: HoldoutPolicy,
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for Holdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Holdout")
            .field("rate", &self.rate)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Holdout {
    /// A flat holdout of share `rate` (0–1) keyed by `key`.
    pub fn new(rate: f64, key: &[u8]) -> Self {
        let mut h = SipHasher13::new_with_keys(0x7269_736b_7374_7265, 0x616d_686f_6c64_6f75);
        h.write(key);
        let k = h.finish128();
        Holdout {
            rate: rate.clamp(0.0, 1.0),
            policy: HoldoutPolicy::Flat,
            k0: k.h1,
            k1: k.h2,
        }
    }

    /// The same holdout under `policy` (a `score` floor is clamped to 0 and
    /// the rate).
    pub fn with_policy(mut self, policy: HoldoutPolicy) -> Self {
        self.policy = match policy {
            HoldoutPolicy::Flat => HoldoutPolicy::Flat,
            HoldoutPolicy::Score { min_rate } => HoldoutPolicy::Score {
                min_rate: min_rate.clamp(0.0, self.rate),
            },
        };
        self
    }

    /// The share of payments in the holdout (`flat`), or its peak, just
    /// above the block threshold (`score`).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How the share depends on the true score.
    pub fn policy(&self) -> HoldoutPolicy {
        self.policy
    }

    /// The probability that a payment of true score `true_score` is held
    /// out, given the lowest score that blocks (`None`: nothing blocks).
    pub fn rate_at(&self, true_score: u32, block_threshold: Option<u32>) -> f64 {
        match (self.policy, block_threshold) {
            (HoldoutPolicy::Flat, _) | (HoldoutPolicy::Score { .. }, None) => self.rate,
            (HoldoutPolicy::Score { min_rate }, Some(b)) if true_score < b => min_rate,
            (HoldoutPolicy::Score { min_rate }, Some(b)) => {
                let steps = ((true_score - b) / SCORE_STEP).min(1023);
                (self.rate * SCORE_STEP_FACTOR.powi(steps as i32)).max(min_rate)
            }
        }
    }

    /// For a payment held out at probability `rate` (from
    /// [`Holdout::rate_at`]), the score to report instead of the true one
    /// (uniform over 0–99); `None` when it is not held out. A payment's
    /// draw is fixed by its id: it is held out at every rate above its draw.
    pub fn draw(&self, payment_id: &str, rate: f64) -> Option<u32> {
        if rate <= 0.0 {
            return None;
        }
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(payment_id.as_bytes());
        let d = h.finish128();
        let u = (d.h1 >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        (u < rate).then_some((d.h2 % 100) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_respected_and_draws_are_stable() {
        let h = Holdout::new(0.1, b"k");
        let n = 100_000;
        let hits = (0..n)
            .filter(|i| h.draw(&format!("pay_{i}"), h.rate()).is_some())
            .count();
        let share = hits as f64 / n as f64;
        assert!((share - 0.1).abs() < 0.005, "share {share}");
        assert_eq!(h.draw("pay_7", 0.1), h.draw("pay_7", 0.1));
        assert!((0..n).all(|i| {
            Holdout::new(0.0, b"k")
                .draw(&format!("p{i}"), 0.0)
                .is_none()
        }));
        assert!((0..1000).all(|i| {
            Holdout::new(1.0, b"k")
                .draw(&format!("p{i}"), 1.0)
                .is_some()
        }));
    }

    #[test]
    fn the_key_changes_the_draw() {
        let a = Holdout::new(0.5, b"a");
        let b = Holdout::new(0.5, b"b");
        let differ = (0..1000)
            .filter(|i| {
                let id = format!("p{i}");
                a.draw(&id, 0.5).is_some() != b.draw(&id, 0.5).is_some()
            })
            .count();
        assert!(differ > 300, "{differ}");
    }

    #[test]
    fn perturbed_scores_are_uniform() {
        let h = Holdout::new(1.0, b"k");
        let mut counts = [0u32; 100];
        for i in 0..100_000 {
            if let Some(s) = h.draw(&format!("p{i}"), 1.0) {
                counts[s as usize] += 1;
            }
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn the_score_curve_steps_down_from_the_threshold_to_its_floor() {
        let score = |rate: f64, min_rate: f64| {
            Holdout::new(rate, b"k").with_policy(HoldoutPolicy::Score { min_rate })
        };
        let h = score(0.08, 0.002);
        let b = Some(75);
        // Below the threshold every label is seen: the floor.
        for s in [0, 40, 74] {
            assert_eq!(h.rate_at(s, b), 0.002);
        }
        let half = 0.08 * std::f64::consts::FRAC_1_SQRT_2;
        let expected = [
            (75, 0.08),
            (84, 0.08),
            (85, half),
            (94, half),
            (95, 0.04),
            (99, 0.04),
        ];
        for (s, r) in expected {
            assert!((h.rate_at(s, b) - r).abs() < 1e-15, "score {s}");
        }
        // Non-increasing above the threshold, never below the floor.
        for s in 75..99 {
            assert!(h.rate_at(s + 1, b) <= h.rate_at(s, b));
        }
        let floored = score(0.08, 0.05);
        assert_eq!(floored.rate_at(85, b), half);
        assert_eq!(floored.rate_at(99, b), 0.05);
        assert_eq!(floored.rate_at(10, b), 0.05);
        // Another threshold moves the curve with it.
        assert_eq!(h.rate_at(69, Some(60)), 0.08);
        assert!((h.rate_at(70, Some(60)) - half).abs() < 1e-15);
        assert_eq!(h.rate_at(59, Some(60)), 0.002);
        // Nothing blocks: nothing to explore, every payment at the rate.
        assert_eq!(h.rate_at(99, None), 0.08);
        // A floor at the rate is the flat policy.
        let flat = score(0.08, 0.08);
        assert!((0..100).all(|s| flat.rate_at(s, b) == 0.08));
        assert!((0..100).all(|s| Holdout::new(0.08, b"k").rate_at(s, b) == 0.08));
        // A floor above the rate is clamped to it.
        assert_eq!(
            score(0.05, 0.5).policy(),
            HoldoutPolicy::Score { min_rate: 0.05 }
        );
    }

    #[test]
    fn a_payment_is_held_out_at_every_rate_above_its_draw() {
        let h = Holdout::new(0.2, b"k");
        for i in 0..2000 {
            let id = format!("p{i}");
            if let Some(low) = h.draw(&id, 0.01) {
                assert_eq!(h.draw(&id, 0.2), Some(low), "the same reported score");
            }
        }
    }
}
