//! Arbitrary bytes as a model file, through the loader the server uses
//! (`Model::load` reads the file as UTF-8 text, then `Model::from_json`).
//!
//! A file is either refused with an error, or it loads, and then:
//! - on fixed feature vectors it predicts a finite log-odds, a probability
//!   in [0, 1] and a score of at most 99 that is its score map's score of
//!   that log-odds (or refuses with `NonFinite` when its parameters overflow);
//! - its score map is monotone from 0 to 99, and `logit_of_score` inverts
//!   `score_of_logit` for every score (the holdout relies on it);
//! - the file it was loaded from, written back as JSON (as `train` writes
//!   models), loads again and predicts bit for bit the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use riskstream::features::{FeatureVector, NUM_FEATURES};
use riskstream::model::{Model, ModelError, Prediction};

/// Feature vectors every loaded model is asked to score: all zeros, all
/// ones, plausible mixed values, large amounts and negative values.
fn vectors() -> Vec<FeatureVector> {
    let mut mixed = [0.0; NUM_FEATURES];
    for (i, x) in mixed.iter_mut().enumerate() {
        *x = match i % 4 {
            0 => 1.0,
            1 => 0.0,
            2 => (i as f64).ln_1p(),
            _ => 0.25 * i as f64,
        };
    }
    vec![
        FeatureVector([0.0; NUM_FEATURES]),
        FeatureVector([1.0; NUM_FEATURES]),
        FeatureVector(mixed),
        FeatureVector([1e6; NUM_FEATURES]),
        FeatureVector([-1.0; NUM_FEATURES]),
    ]
}

fn predict(model: &Model, x: &FeatureVector) -> Option<Prediction> {
    match model.predict(x) {
        Ok(p) => {
            assert!(p.logit.is_finite(), "{p:?}");
            assert!(
                p.probability.is_finite() && (0.0..=1.0).contains(&p.probability),
                "{p:?}"
            );
            assert!(p.score <= 99, "{p:?}");
            assert_eq!(p.score, model.score_map().score_of_logit(p.logit));
            Some(p)
        }
        Err(ModelError::NonFinite) => None,
        Err(e) => panic!("a loaded model fails to predict: {e}"),
    }
}

fn check_score_map(model: &Model) {
    let map = model.score_map();
    assert_eq!(map.score_of_logit(-1e300), 0);
    assert_eq!(map.score_of_logit(1e300), 99);
    let mut last = 0;
    for i in -400..=400 {
        let s = map.score_of_logit(f64::from(i) * 0.125);
        assert!(s >= last && s <= 99, "score map not monotone at {i}");
        last = s;
    }
    for s in 0..=99 {
        let z = map.logit_of_score(s);
        assert!(z.is_finite(), "logit_of_score({s}) = {z}");
        assert_eq!(map.score_of_logit(z), s, "logit_of_score({s}) = {z}");
    }
}

fuzz_target!(|data: &[u8]| {
    // `Model::load` refuses a file that is not UTF-8 when reading it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let model = match Model::from_json(text, "fuzz.json") {
        Ok(m) => m,
        Err(e) => {
            assert!(
                matches!(e, ModelError::Parse { .. } | ModelError::Invalid(_)),
                "{e:?}"
            );
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!model.version().is_empty());
    let vectors = vectors();
    let predictions: Vec<Option<Prediction>> = vectors.iter().map(|x| predict(&model, x)).collect();
    check_score_map(&model);

    let saved = serde_json::to_string_pretty(model.file()).expect("a model file serialises");
    let again = Model::from_json(&saved, "saved.json")
        .unwrap_or_else(|e| panic!("a loaded model, written back, does not load: {e}"));
    assert_eq!(again.file(), model.file());
    for (x, p) in vectors.iter().zip(&predictions) {
        let q = again.predict(x).ok();
        let bits = |p: &Option<Prediction>| p.map(|p| (p.logit.to_bits(), p.score));
        assert_eq!(bits(&q), bits(p), "a reloaded model predicts differently");
    }
});
