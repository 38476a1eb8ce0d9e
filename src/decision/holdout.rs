//! The holdout: a keyed-hash draw on `payment_id` that puts a configurable
//! share of payments in a holdout whose reported score is replaced by a
//! uniformly drawn one. The same id always gets the same draw; without the
//! key the draw is unpredictable.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// The holdout configuration.
#[derive(Clone)]
pub struct Holdout {
    rate: f64,
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for Holdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Holdout")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl Holdout {
    /// A holdout of share `rate` (0–1) keyed by `key`.
    pub fn new(rate: f64, key: &[u8]) -> Self {
        let mut h = SipHasher13::new_with_keys(0x7269_736b_7374_7265, 0x616d_686f_6c64_6f75);
        h.write(key);
        let k = h.finish128();
        Holdout {
            rate: rate.clamp(0.0, 1.0),
            k0: k.h1,
            k1: k.h2,
        }
    }

    /// The share of payments in the holdout.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// For a payment in the holdout, the score to report instead of the true
    /// one (uniform over 0–99); `None` for every other payment.
    pub fn draw(&self, payment_id: &str) -> Option<u32> {
        if self.rate <= 0.0 {
            return None;
        }
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(payment_id.as_bytes());
        let d = h.finish128();
        let u = (d.h1 >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        (u < self.rate).then_some((d.h2 % 100) as u32)
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
            .filter(|i| h.draw(&format!("pay_{i}")).is_some())
            .count();
        let share = hits as f64 / n as f64;
        assert!((share - 0.1).abs() < 0.005, "share {share}");
        assert_eq!(h.draw("pay_7"), h.draw("pay_7"));
        assert!((0..n).all(|i| Holdout::new(0.0, b"k").draw(&format!("p{i}")).is_none()));
        assert!((0..1000).all(|i| Holdout::new(1.0, b"k").draw(&format!("p{i}")).is_some()));
    }

    #[test]
    fn the_key_changes_the_draw() {
        let a = Holdout::new(0.5, b"a");
        let b = Holdout::new(0.5, b"b");
        let differ = (0..1000)
            .filter(|i| {
                let id = format!("p{i}");
                a.draw(&id).is_some() != b.draw(&id).is_some()
            })
            .count();
        assert!(differ > 300, "{differ}");
    }

    #[test]
    fn perturbed_scores_are_uniform() {
        let h = Holdout::new(1.0, b"k");
        let mut counts = [0u32; 100];
        for i in 0..100_000 {
            if let Some(s) = h.draw(&format!("p{i}")) {
                counts[s as usize] += 1;
            }
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
