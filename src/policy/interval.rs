//! The statistics behind the intervals: the normal quantile, Wilson score
//! intervals for plain proportions, empirical quantiles of draws, and the
//! draw of a propensity cell's unseen fraud count (see [`mod@super::estimate`]
//! for why the intervals are built this way).

use rand::Rng;
use rand_distr::{Beta, Binomial, Distribution};

/// The standard normal quantile: `x` with `P(Z <= x) = p`, for `0 < p < 1`
/// (Wichura's algorithm AS 241, relative error below 1e-15).
pub fn normal_quantile(p: f64) -> f64 {
    debug_assert!(p > 0.0 && p < 1.0);
    // The published coefficients, lowest power first, as printed.
    #[allow(clippy::excessive_precision)]
    const A: [f64; 8] = [
        3.3871328727963666080e0,
        1.3314166789178437745e2,
        1.9715909503065514427e3,
        1.3731693765509461125e4,
        4.5921953931549871457e4,
        6.7265770927008700853e4,
        3.3430575583588128105e4,
        2.5090809287301226727e3,
    ];
    #[allow(clippy::excessive_precision)]
    const B: [f64; 8] = [
        1.0,
        4.2313330701600911252e1,
        6.8718700749205790830e2,
        5.3941960214247511077e3,
        2.1213794301586595867e4,
        3.9307895800092710610e4,
        2.8729085735721942674e4,
        5.2264952788528545610e3,
    ];
    #[allow(clippy::excessive_precision)]
    const C: [f64; 8] = [
        1.42343711074968357734e0,
        4.63033784615654529590e0,
        5.76949722146069140550e0,
        3.64784832476320460504e0,
        1.27045825245236838258e0,
        2.41780725177450611770e-1,
        2.27238449892691845833e-2,
        7.74545014278341407640e-4,
    ];
    #[allow(clippy::excessive_precision)]
    const D: [f64; 8] = [
        1.0,
        2.05319162663775882187e0,
        1.67638483018380384940e0,
        6.89767334985100004550e-1,
        1.48103976427480074590e-1,
        1.51986665636164571966e-2,
        5.47593808499534494600e-4,
        1.05075007164441684324e-9,
    ];
    #[allow(clippy::excessive_precision)]
    const E: [f64; 8] = [
        6.65790464350110377720e0,
        5.46378491116411436990e0,
        1.78482653991729133580e0,
        2.96560571828504891230e-1,
        2.65321895265761230930e-2,
        1.24266094738807843860e-3,
        2.71155556874348757815e-5,
        2.01033439929228813265e-7,
    ];
    #[allow(clippy::excessive_precision)]
    const F: [f64; 8] = [
        1.0,
        5.99832206555887937690e-1,
        1.36929880922735805310e-1,
        1.48753612908506148525e-2,
        7.86869131145613259100e-4,
        1.84631831751005468180e-5,
        1.42151175831644588870e-7,
        2.04426310338993978564e-15,
    ];
    fn poly(c: &[f64; 8], x: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, k| acc * x + k)
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let x = if r <= 5.0 {
        poly(&C, r - 1.6) / poly(&D, r - 1.6)
    } else {
        poly(&E, r - 5.0) / poly(&F, r - 5.0)
    };
    if q < 0.0 { -x } else { x }
}

/// The Wilson score interval of `successes` out of `trials` at normal
/// quantile `z`; `(0, 1)` when there are no trials.
pub fn wilson(successes: u64, trials: u64, z: f64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let lower = if successes == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let upper = if successes == trials {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (lower, upper)
}

/// The `q`-quantile (0–1) of `values` by the nearest-rank rule after
/// sorting them; `None` when there are none.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// Draws the number of frauds among the `unseen` payments of a cell in
/// which `frauds` of `seen` payments were labelled fraudulent: the cell's
/// fraud share from its Jeffreys posterior,
/// `Beta(frauds + ½, seen − frauds + ½)`, then the unseen frauds as a
/// binomial draw at that share (the finite-population posterior predictive
/// of the cell). `seen` must be at least 1.
pub fn unseen_frauds<R: Rng + ?Sized>(rng: &mut R, frauds: u64, seen: u64, unseen: u64) -> u64 {
    if unseen == 0 {
        return 0;
    }
    let alpha = frauds as f64 + 0.5;
    let beta = seen.saturating_sub(frauds) as f64 + 0.5;
    // Both shapes are at least ½ and finite: the distributions exist.
    let share = Beta::new(alpha, beta).map_or(0.5, |b| b.sample(rng));
    Binomial::new(unseen, share.clamp(0.0, 1.0)).map_or(0, |b| b.sample(rng))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn normal_quantiles_match_tables() {
        for (p, x) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.95, 1.644_853_626_951_472_2),
            (0.995, 2.575_829_303_548_900_4),
            (0.001, -3.090_232_306_167_813_5),
            (1e-10, -6.361_340_902_404_056),
        ] {
            let got = normal_quantile(p);
            assert!((got - x).abs() < 1e-12, "p {p}: {got} vs {x}");
        }
    }

    #[test]
    fn wilson_matches_a_hand_computed_case_and_stays_in_bounds() {
        // 3 of 10 at z = 1.96: centre (0.3 + 0.19208) / 1.38416,
        // half 1.96 / 1.38416 * sqrt(0.021 + 0.0096040).
        let (lo, hi) = wilson(3, 10, 1.96);
        let centre = (0.3 + 1.96f64.powi(2) / 20.0) / (1.0 + 1.96f64.powi(2) / 10.0);
        let half =
            1.96 / (1.0 + 1.96f64.powi(2) / 10.0) * (0.021f64 + 1.96f64.powi(2) / 400.0).sqrt();
        assert!((lo - (centre - half)).abs() < 1e-12);
        assert!((hi - (centre + half)).abs() < 1e-12);
        assert!((lo - 0.1078).abs() < 1e-4 && (hi - 0.6032).abs() < 1e-4);
        assert_eq!(wilson(0, 0, 1.96), (0.0, 1.0));
        let (lo, hi) = wilson(0, 20, 1.96);
        assert_eq!(lo, 0.0);
        assert!(hi > 0.1 && hi < 0.2, "{hi}");
        assert_eq!(wilson(20, 20, 1.96).1, 1.0);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut v = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&mut v, 0.0), Some(1.0));
        assert_eq!(quantile(&mut v, 0.5), Some(3.0));
        assert_eq!(quantile(&mut v, 1.0), Some(5.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn unseen_frauds_follow_the_cell_share() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // 20 of 100 seen were fraudulent; 900 unseen: about 180 frauds.
        let n = 4000;
        let draws: Vec<f64> = (0..n)
            .map(|_| unseen_frauds(&mut rng, 20, 100, 900) as f64)
            .collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        // Posterior mean share 20.5 / 101.
        assert!((mean - 900.0 * 20.5 / 101.0).abs() < 3.0, "{mean}");
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n as f64;
        // Beta-binomial variance: n p (1 − p) (a + b + n) / (a + b + 1).
        let p = 20.5 / 101.0;
        let expected = 900.0 * p * (1.0 - p) * (101.0 + 900.0) / 102.0;
        assert!((var / expected - 1.0).abs() < 0.1, "{var} vs {expected}");
        assert_eq!(unseen_frauds(&mut rng, 3, 10, 0), 0);
        assert!((0..100).all(|_| unseen_frauds(&mut rng, 0, 50, 10) <= 10));
    }
}
