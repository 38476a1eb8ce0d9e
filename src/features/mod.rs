//! Features: pure functions from a payment, its payment method's creation
//! session and its velocity counts to a fixed vector of named numbers. The
//! names are stable: model files list them and `insights` report them.
//!
//! - [`session`]: creation session vs payment session.
//! - [`network`]: IP address and network comparison.
//!
//! Transforms are part of each feature's definition (documented per name in
//! [`FEATURES`]): counts and amounts enter as `ln(1 + x)`.

pub mod network;
pub mod session;

use crate::domain::{ObjectKind, Payment};
use crate::state::long_window::{self, Sums};
use crate::state::{LABEL_DELAY_DAYS, Observation, Velocity};

macro_rules! define_features {
    ($($variant:ident => $name:literal : $doc:literal,)*) => {
        /// A feature's position in [`FeatureVector`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum Feature {
            $(#[doc = $doc] $variant,)*
        }

        /// Every feature: (variant, stable name, meaning), in vector order.
        pub const FEATURES: &[(Feature, &str, &str)] = &[$((Feature::$variant, $name, $doc),)*];
    };
}

define_features! {
    SessionMissing => "session_missing": "1 when an on-session payment carries no payment session",
    OffSession => "off_session": "1 for a merchant-initiated payment without the customer present",
    CreationSessionMissing => "creation_session_missing": "1 when the payment method has no creation session",
    DeviceMismatch => "device_mismatch": "1 when both sessions carry a device id and they differ",
    IpMismatch => "ip_mismatch": "1 when both sessions carry an IP and the addresses differ",
    NetworkMismatch => "network_mismatch": "1 when the IPs are in different /24 (IPv4) or /48 (IPv6) networks",
    UserAgentMismatch => "user_agent_mismatch": "1 when the browser families differ",
    OsMismatch => "os_mismatch": "1 when the operating systems differ",
    ScreenMismatch => "screen_mismatch": "1 when the screen sizes differ (rotation ignored)",
    TimezoneMismatch => "timezone_mismatch": "1 when the IANA time zones differ",
    UtcOffsetDiffHours => "utc_offset_diff_hours": "absolute UTC-offset difference in hours, capped at 24",
    LanguageMismatch => "language_mismatch": "Jaccard distance of the primary Accept-Language tags (0 same, 1 disjoint)",
    CardCountryMismatch => "card_country_mismatch": "1 when the payment session's time-zone country differs from the card's country",
    CardAgeMinutes => "card_age_minutes": "ln(1 + minutes from payment-method creation to payment); 30 days when unknown",
    CardNew1h => "card_new_1h": "1 when the payment method was created less than an hour before the payment",
    Amount => "amount": "ln(1 + amount / 100), amount in minor units",
    SetupIntent => "setup_intent": "1 for a SetupIntent",
    CardCount1h => "card_count_1h": "ln(1 + payments with this card fingerprint in the last hour, this one included)",
    CardCount24h => "card_count_24h": "ln(1 + payments with this card fingerprint in the last 24 h)",
    CardAmount24h => "card_amount_24h": "ln(1 + amount / 100 summed over this card's payments in the last 24 h)",
    EmailCount1h => "email_count_1h": "ln(1 + payments with this email in the last hour)",
    EmailCount24h => "email_count_24h": "ln(1 + payments with this email in the last 24 h)",
    IpCount1h => "ip_count_1h": "ln(1 + payments from this IP in the last hour)",
    IpCount24h => "ip_count_24h": "ln(1 + payments from this IP in the last 24 h)",
    DeviceCount1h => "device_count_1h": "ln(1 + payments from this device in the last hour)",
    DeviceCount24h => "device_count_24h": "ln(1 + payments from this device in the last 24 h)",
    DeviceCards24h => "device_cards_24h": "ln(1 + distinct card fingerprints used from this device in the last 24 h)",
    IpCards24h => "ip_cards_24h": "ln(1 + distinct card fingerprints used from this IP in the last 24 h)",
    Night => "night": "1 when the payment's local hour (the payment session's UTC offset, else UTC) is 0–6",
    Weekend => "weekend": "1 on a local Saturday or Sunday",
    CardCount1d => "card_count_1d": "ln(1 + payments with this card in the last day, in hourly buckets, this one included)",
    CardCount7d => "card_count_7d": "ln(1 + payments with this card in the last 7 days)",
    CardCount30d => "card_count_30d": "ln(1 + payments with this card in the last 30 days)",
    CardMeanAmount1d => "card_mean_amount_1d": "ln(1 + mean amount / 100 of this card's payments in the last day)",
    CardMeanAmount7d => "card_mean_amount_7d": "ln(1 + mean amount / 100 of this card's payments in the last 7 days)",
    CardMeanAmount30d => "card_mean_amount_30d": "ln(1 + mean amount / 100 of this card's payments in the last 30 days)",
    MerchantCount1dDelayed => "merchant_count_1d_delayed": "ln(1 + payments at this merchant in the day ending 7 days (the label delay) before the payment)",
    MerchantCount7dDelayed => "merchant_count_7d_delayed": "ln(1 + payments at this merchant in the 7 days ending 7 days before the payment)",
    MerchantCount30dDelayed => "merchant_count_30d_delayed": "ln(1 + payments at this merchant in the 30 days ending 7 days before the payment)",
    MerchantFraudRate1dDelayed => "merchant_fraud_rate_1d_delayed": "share of this merchant's payments in the day ending 7 days before the payment reported as fraud so far (0 when none)",
    MerchantFraudRate7dDelayed => "merchant_fraud_rate_7d_delayed": "the same over the 7 days ending 7 days before",
    MerchantFraudRate30dDelayed => "merchant_fraud_rate_30d_delayed": "the same over the 30 days ending 7 days before",
    AmountLinear => "amount_linear": "amount / 100 (major units), capped at 1,000,000: large amounts weigh linearly",
    AmountVsCardMean7d => "amount_vs_card_mean_7d": "ln(1 + amount / 100) − ln(1 + this card's mean amount / 100 over the last 7 days)",
    AmountVsCardMean30d => "amount_vs_card_mean_30d": "ln(1 + amount / 100) − ln(1 + this card's mean amount / 100 over the last 30 days)",
    CardPeakRatio1d => "card_peak_ratio_1d": "ln(1 + the largest ratio, among this card's earlier payments in the last day, of a payment's amount to the card's mean amount in the 30 days before it); 0 when none",
    CardPeakRatio7d => "card_peak_ratio_7d": "the same over the card's payments in the last 7 days",
    CardPeakRatio30d => "card_peak_ratio_30d": "the same over the card's payments in the last 30 days",
    MerchantPlainFraudRate1dDelayed => "merchant_plain_fraud_rate_1d_delayed": "merchant_fraud_rate_1d_delayed leaving out the frauds whose amount was a spike for their card (at least 2.5 times its mean before): frauds the card explains, not the merchant",
    MerchantPlainFraudRate7dDelayed => "merchant_plain_fraud_rate_7d_delayed": "the same over the 7 days ending 7 days before",
    MerchantPlainFraudRate30dDelayed => "merchant_plain_fraud_rate_30d_delayed": "the same over the 30 days ending 7 days before",
    MerchantPlainFraudAgeDays => "merchant_plain_fraud_age_days": "days from the oldest such fraud in the merchant's 30-day window ending 7 days before the payment to that window's end (how long a fraud wave has been running); −1 when none",
}

/// Feature sets: set `n` (from 1) is `FEATURES[..FEATURE_SETS[n - 1]]`.
/// Features are only ever appended, so a set never changes and a training
/// command that names its set keeps producing the same model; adding
/// features means adding a set.
pub const FEATURE_SETS: &[usize] = &[
    // 1: session comparison and short velocity.
    Feature::Night as usize,
    // 2: plus long windows (card, merchant with label delay), calendar, amount ratios.
    Feature::AmountVsCardMean30d as usize + 1,
    // 3: plus the card's recent amount spikes (a compromised card's earlier frauds).
    Feature::CardPeakRatio30d as usize + 1,
    // 4: plus merchant fraud rates without the frauds a card spike explains.
    Feature::MerchantPlainFraudRate30dDelayed as usize + 1,
    // 5: plus the age of the merchant's fraud wave.
    Feature::MerchantPlainFraudAgeDays as usize + 1,
];

/// The newest feature set.
pub const LATEST_FEATURE_SET: usize = FEATURE_SETS.len();

/// Number of features.
pub const NUM_FEATURES: usize = FEATURES.len();

/// Imputed card age when the payment method's creation time is unknown.
pub const UNKNOWN_CARD_AGE_MINUTES: f64 = 30.0 * 24.0 * 60.0;

impl Feature {
    /// The stable name of this feature.
    pub fn name(self) -> &'static str {
        FEATURES[self as usize].1
    }

    /// The feature with the stable name `name`.
    pub fn from_name(name: &str) -> Option<Feature> {
        FEATURES
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(f, _, _)| *f)
    }
}

/// One payment's features, indexed by [`Feature`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureVector(pub [f64; NUM_FEATURES]);

impl FeatureVector {
    /// The value of `f`.
    pub fn get(&self, f: Feature) -> f64 {
        self.0[f as usize]
    }

    fn set(&mut self, f: Feature, v: f64) {
        self.0[f as usize] = v;
    }
}

/// Everything the features of one payment are computed from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The payment.
    pub payment: &'a Payment<'a>,
    /// The facts of the payment method's creation session, if any.
    pub creation: Option<&'a crate::fingerprint::Facts>,
    /// The card's issuing country, if known.
    pub card_country: Option<[u8; 2]>,
    /// When the payment method was created, if known.
    pub method_created_at_ms: Option<i64>,
    /// Velocity counts, this payment included.
    pub velocity: &'a Velocity,
}

/// An amount ratio (thousandths) from which a payment's amount counts as a
/// spike for its card: 2.5 times its mean, three standard deviations for a
/// card whose amounts spread by half their mean.
pub const SPIKE_RATIO: u32 = 2_500;

/// `amount` over the mean amount of `before`, in thousandths (saturating);
/// 0 when `before` holds no amount to compare with.
pub fn amount_ratio(amount: u64, before: &Sums) -> u32 {
    if before.count == 0 || before.amount == 0 {
        return 0;
    }
    let r = u128::from(amount) * u128::from(before.count) * 1000 / u128::from(before.amount);
    u32::try_from(r).unwrap_or(u32::MAX)
}

/// The amount ratio of a payment just observed: its amount over its card's
/// mean amount in the 30 days before it (its velocity's 30-day card sums
/// hold it; it is taken out again).
pub fn card_amount_ratio(obs: &Observation<'_>, velocity: &Velocity) -> u32 {
    let amount = obs.amount.max(0) as u64;
    let with = &velocity.card_days[2];
    let before = Sums {
        count: with.count.saturating_sub(1),
        amount: with.amount.saturating_sub(amount),
        ..*with
    };
    amount_ratio(amount, &before)
}

/// `ln(1 + n)` for the small counts that make up nearly every velocity value.
static LN1P_SMALL: std::sync::LazyLock<[f64; 256]> =
    std::sync::LazyLock::new(|| std::array::from_fn(|n| (n as f64).ln_1p()));

/// `ln(1 + n)`, from a table below 256 (the same values `ln_1p` gives).
fn ln1p_count(n: u32) -> f64 {
    match LN1P_SMALL.get(n as usize) {
        Some(v) => *v,
        None => f64::from(n).ln_1p(),
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Computes the feature vector of one payment.
pub fn extract(inp: &Inputs<'_>) -> FeatureVector {
    use Feature as F;
    let p = inp.payment;
    let mut v = FeatureVector([0.0; NUM_FEATURES]);
    v.set(
        F::SessionMissing,
        flag(p.session.is_none() && !p.off_session),
    );
    v.set(F::OffSession, flag(p.off_session));
    v.set(F::CreationSessionMissing, flag(inp.creation.is_none()));
    // The payment session's zone, hashed once for both comparisons below.
    let p_tz = p
        .session
        .as_ref()
        .map_or(0, |s| crate::fingerprint::text_hash(&s.timezone));
    if let (Some(c), Some(s)) = (inp.creation, p.session.as_ref()) {
        let d = session::compare(c, s, p_tz);
        v.set(F::DeviceMismatch, d.device_mismatch);
        v.set(F::IpMismatch, d.ip_mismatch);
        v.set(F::NetworkMismatch, d.network_mismatch);
        v.set(F::UserAgentMismatch, d.user_agent_mismatch);
        v.set(F::OsMismatch, d.os_mismatch);
        v.set(F::ScreenMismatch, d.screen_mismatch);
        v.set(F::TimezoneMismatch, d.timezone_mismatch);
        v.set(F::UtcOffsetDiffHours, d.utc_offset_diff_hours);
        v.set(F::LanguageMismatch, d.language_mismatch);
    }
    if let Some(s) = p.session.as_ref() {
        v.set(
            F::CardCountryMismatch,
            session::card_country_mismatch(inp.card_country, s, p_tz, inp.creation),
        );
    }
    let age_minutes = match inp.method_created_at_ms {
        Some(t) => (p.created_at_ms.saturating_sub(t)).max(0) as f64 / 60_000.0,
        None => UNKNOWN_CARD_AGE_MINUTES,
    };
    v.set(F::CardAgeMinutes, age_minutes.ln_1p());
    v.set(F::CardNew1h, flag(age_minutes < 60.0));
    v.set(F::Amount, (p.amount as f64 / 100.0).ln_1p());
    v.set(F::SetupIntent, flag(p.object == ObjectKind::SetupIntent));
    let vel = inp.velocity;
    v.set(F::CardCount1h, ln1p_count(vel.card_1h));
    v.set(F::CardCount24h, ln1p_count(vel.card_24h));
    v.set(
        F::CardAmount24h,
        (vel.card_amount_24h as f64 / 100.0).ln_1p(),
    );
    v.set(F::EmailCount1h, ln1p_count(vel.email_1h));
    v.set(F::EmailCount24h, ln1p_count(vel.email_24h));
    v.set(F::IpCount1h, ln1p_count(vel.ip_1h));
    v.set(F::IpCount24h, ln1p_count(vel.ip_24h));
    v.set(F::DeviceCount1h, ln1p_count(vel.device_1h));
    v.set(F::DeviceCount24h, ln1p_count(vel.device_24h));
    v.set(F::DeviceCards24h, ln1p_count(vel.device_cards_24h));
    v.set(F::IpCards24h, ln1p_count(vel.ip_cards_24h));
    // Local calendar: the payment session's offset, else UTC.
    let offset_ms = p
        .session
        .as_ref()
        .map_or(0, |s| i64::from(s.utc_offset_minutes) * 60_000);
    let local = p.created_at_ms.saturating_add(offset_ms);
    let day = local.div_euclid(86_400_000);
    let hour = local.rem_euclid(86_400_000) / 3_600_000;
    v.set(F::Night, flag(hour <= 6));
    // 1970-01-01 was a Thursday: days 2 and 3 of each week are Saturday and Sunday.
    v.set(F::Weekend, flag(matches!(day.rem_euclid(7), 2 | 3)));
    let mean = |s: &Sums| {
        if s.count == 0 {
            0.0
        } else {
            (s.amount as f64 / f64::from(s.count) / 100.0).ln_1p()
        }
    };
    // `n` of a window's payments as a share of them (0 when it is empty).
    let share = |n: u32, s: &Sums| {
        if s.count == 0 {
            0.0
        } else {
            f64::from(n.min(s.count)) / f64::from(s.count)
        }
    };
    let rate = |s: &Sums| share(s.frauds, s);
    let [c1, c7, c30] = &vel.card_days;
    v.set(F::CardCount1d, ln1p_count(c1.count));
    v.set(F::CardCount7d, ln1p_count(c7.count));
    v.set(F::CardCount30d, ln1p_count(c30.count));
    v.set(F::CardMeanAmount1d, mean(c1));
    v.set(F::CardMeanAmount7d, mean(c7));
    v.set(F::CardMeanAmount30d, mean(c30));
    let [m1, m7, m30] = &vel.merchant_delayed;
    v.set(F::MerchantCount1dDelayed, ln1p_count(m1.count));
    v.set(F::MerchantCount7dDelayed, ln1p_count(m7.count));
    v.set(F::MerchantCount30dDelayed, ln1p_count(m30.count));
    v.set(F::MerchantFraudRate1dDelayed, rate(m1));
    v.set(F::MerchantFraudRate7dDelayed, rate(m7));
    v.set(F::MerchantFraudRate30dDelayed, rate(m30));
    v.set(F::AmountLinear, (p.amount as f64 / 100.0).min(1e6));
    let amount = v.get(F::Amount);
    v.set(F::AmountVsCardMean7d, amount - v.get(F::CardMeanAmount7d));
    v.set(F::AmountVsCardMean30d, amount - v.get(F::CardMeanAmount30d));
    let peak = |s: &Sums| (f64::from(s.peak) / 1000.0).ln_1p();
    v.set(F::CardPeakRatio1d, peak(c1));
    v.set(F::CardPeakRatio7d, peak(c7));
    v.set(F::CardPeakRatio30d, peak(c30));
    let plain_rate = |s: &Sums| share(s.frauds.min(s.count).saturating_sub(s.spike_frauds), s);
    v.set(F::MerchantPlainFraudRate1dDelayed, plain_rate(m1));
    v.set(F::MerchantPlainFraudRate7dDelayed, plain_rate(m7));
    v.set(F::MerchantPlainFraudRate30dDelayed, plain_rate(m30));
    let window_end = long_window::end_hour(p.created_at_ms, LABEL_DELAY_DAYS);
    v.set(
        F::MerchantPlainFraudAgeDays,
        m30.oldest_plain_fraud_hour
            .map_or(-1.0, |h| (window_end - i64::from(h)).max(0) as f64 / 24.0),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The features of a bare payment at `created_at_ms` with `velocity`.
    fn features_at(created_at_ms: i64, velocity: &Velocity) -> FeatureVector {
        use crate::domain::{Customer, MethodRef, ObjectKind, Payment};
        let pay = Payment {
            payment_id: "p",
            object: ObjectKind::PaymentIntent,
            amount: 100,
            currency: "eur".into(),
            created_at_ms,
            customer: Customer::default(),
            merchant_id: "",
            method: MethodRef::default(),
            session: None,
            off_session: false,
            recurring: None,
            opt_out: false,
        };
        extract(&Inputs {
            payment: &pay,
            creation: None,
            card_country: None,
            method_created_at_ms: None,
            velocity,
        })
    }

    #[test]
    fn a_fraud_wave_ages_from_its_oldest_reported_fraud() {
        let at = 1_533_956_400_000; // 2018-08-11 03:00 UTC
        let mut vel = Velocity::default();
        let age = |vel: &Velocity| features_at(at, vel).get(Feature::MerchantPlainFraudAgeDays);
        assert_eq!(age(&vel), -1.0, "no fraud reported");
        let window_end = long_window::end_hour(at, LABEL_DELAY_DAYS);
        vel.merchant_delayed[2].oldest_plain_fraud_hour = u32::try_from(window_end - 36).ok();
        assert_eq!(age(&vel), 1.5);
    }

    #[test]
    fn amount_ratios_compare_with_the_cards_mean_before_the_payment() {
        let obs = |amount| Observation {
            payment_id: "p",
            at_ms: 0,
            amount,
            card: None,
            email: None,
            ip: None,
            device: None,
            merchant: None,
        };
        let mut vel = Velocity::default();
        // Ten earlier payments of 10.00, then this one of 50.00.
        vel.card_days[2] = Sums {
            count: 11,
            amount: 15_000,
            ..Sums::default()
        };
        assert_eq!(
            card_amount_ratio(&obs(5_000), &vel),
            5_000,
            "five times the mean"
        );
        assert!(card_amount_ratio(&obs(5_000), &vel) >= SPIKE_RATIO);
        vel.card_days[2] = Sums {
            count: 1,
            amount: 5_000,
            ..Sums::default()
        };
        assert_eq!(
            card_amount_ratio(&obs(5_000), &vel),
            0,
            "no history, no ratio"
        );
        assert_eq!(amount_ratio(1, &Sums::default()), 0);
    }

    #[test]
    fn calendar_flags_follow_the_local_time() {
        let v = |created_at_ms| features_at(created_at_ms, &Velocity::default());
        // 2018-08-11 was a Saturday; 03:00 UTC is night.
        let sat_night = v(1_533_956_400_000);
        assert_eq!(sat_night.get(Feature::Weekend), 1.0);
        assert_eq!(sat_night.get(Feature::Night), 1.0);
        // 2018-08-13 12:00 UTC: a Monday afternoon.
        let monday = v(1_534_161_600_000);
        assert_eq!(monday.get(Feature::Weekend), 0.0);
        assert_eq!(monday.get(Feature::Night), 0.0);
    }

    #[test]
    fn the_newest_feature_set_holds_every_feature() {
        assert_eq!(FEATURE_SETS[LATEST_FEATURE_SET - 1], NUM_FEATURES);
        assert!(FEATURE_SETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn names_are_unique_and_in_vector_order() {
        for (i, (f, name, _)) in FEATURES.iter().enumerate() {
            assert_eq!(*f as usize, i);
            assert_eq!(Feature::from_name(name), Some(*f));
        }
        let mut names: Vec<_> = FEATURES.iter().map(|(_, n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NUM_FEATURES);
    }
}
