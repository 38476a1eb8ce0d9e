//! Long windows: per-key counts, amount sums and fraud counts in one-hour
//! buckets over weeks (per card over 30 days; per merchant over 37 days so
//! that windows can end a label delay in the past). Only the hours with
//! events are stored; fraud counts arrive later, through feedback.

use super::window::{bucket_mut, retire};
use smallvec::SmallVec;

/// Width of one bucket.
pub const HOUR_MS: i64 = 60 * 60 * 1000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Hours since the epoch.
    hour: u32,
    count: u32,
    frauds: u32,
    /// Of which the payment's amount was a spike for its card.
    spike_frauds: u32,
    /// Largest amount ratio of the hour's payments, in thousandths.
    peak: u32,
    amount: u64,
}

/// Sums over a span of hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    /// Events.
    pub count: u32,
    /// Sum of their amounts (minor units).
    pub amount: u64,
    /// Of which reported as fraud so far.
    pub frauds: u32,
    /// Of those frauds, the ones recorded as a spike for their card
    /// (`Store::record_amount_ratio`): frauds the card explains, not the key.
    pub spike_frauds: u32,
    /// The largest amount ratio recorded among them, in thousandths (each
    /// payment's amount over its card's mean before it); 0 when none was.
    pub peak: u32,
    /// The oldest hour (since the epoch) holding a fraud that was not a
    /// spike for its card, if any.
    pub oldest_plain_fraud_hour: Option<u32>,
}

impl Sums {
    fn add(&mut self, b: &Bucket) {
        self.count = self.count.saturating_add(b.count);
        self.amount = self.amount.saturating_add(b.amount);
        self.frauds = self.frauds.saturating_add(b.frauds);
        self.spike_frauds = self.spike_frauds.saturating_add(b.spike_frauds);
        self.peak = self.peak.max(b.peak);
        if b.frauds > b.spike_frauds {
            let h = self
                .oldest_plain_fraud_hour
                .map_or(b.hour, |h| h.min(b.hour));
            self.oldest_plain_fraud_hour = Some(h);
        }
    }

    /// These sums with one more event of `amount` (its ratio not counted).
    pub fn plus(self, amount: u64) -> Sums {
        Sums {
            count: self.count.saturating_add(1),
            amount: self.amount.saturating_add(amount),
            ..self
        }
    }
}

/// The last hour of a window read at `at_ms` that ends `delay_days` back.
pub fn end_hour(at_ms: i64, delay_days: i64) -> i64 {
    hour_of(at_ms) - 24 * delay_days
}

/// The hour index of `at_ms`.
fn hour_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(HOUR_MS).clamp(0, i64::from(u32::MAX))
}

/// The history of one key, one bucket per hour with events.
#[derive(Debug, Clone, Default)]
pub struct LongWindow {
    /// Hours in time order; those before `expired` are gone (dropped in
    /// batches, so that a busy key does not move weeks of buckets each hour).
    buckets: SmallVec<[Bucket; 1]>,
    expired: u32,
}

/// Expired buckets dropped at once.
const EXPIRED_BATCH: usize = 64;

impl LongWindow {
    /// Adds one event at `at_ms` with its amount ratio `peak` (thousandths,
    /// 0 for none), forgetting hours more than `horizon_hours` before the
    /// newest.
    pub fn add(&mut self, at_ms: i64, amount: u64, peak: u32, horizon_hours: i64) {
        let hour = hour_of(at_ms);
        let head = self.expired as usize;
        let b = bucket_mut(
            &mut self.buckets,
            head,
            hour,
            |b| i64::from(b.hour),
            || Bucket {
                hour: hour as u32,
                count: 0,
                frauds: 0,
                spike_frauds: 0,
                peak: 0,
                amount: 0,
            },
        );
        b.count = b.count.saturating_add(1);
        b.amount = b.amount.saturating_add(amount);
        b.peak = b.peak.max(peak);
        let newest = self.buckets.last().map_or(hour, |b| i64::from(b.hour));
        let expired = self.buckets[head..]
            .iter()
            .take_while(|b| i64::from(b.hour) <= newest - horizon_hours)
            .count();
        self.expired = retire(&mut self.buckets, head + expired, EXPIRED_BATCH);
    }

    /// The bucket of the hour of `at_ms`, if it is held.
    fn hour_mut(&mut self, at_ms: i64) -> Option<&mut Bucket> {
        let hour = hour_of(at_ms);
        self.buckets[self.expired as usize..]
            .iter_mut()
            .rev()
            .find(|b| i64::from(b.hour) == hour)
    }

    /// Raises the peak amount ratio of the hour of `at_ms` to `peak`
    /// (thousandths) if it is lower; false when that hour is not held.
    pub fn raise_peak(&mut self, at_ms: i64, peak: u32) -> bool {
        self.hour_mut(at_ms)
            .map(|b| b.peak = b.peak.max(peak))
            .is_some()
    }

    /// Moves the fraud count of the hour of `at_ms` by `delta` (a fraud
    /// report, or its reversal), and its spike-fraud count too when the
    /// payment was a `spike`; false when that hour is no longer held.
    pub fn add_fraud(&mut self, at_ms: i64, delta: i32, spike: bool) -> bool {
        self.hour_mut(at_ms)
            .map(|b| {
                b.frauds = b.frauds.saturating_add_signed(delta);
                if spike {
                    b.spike_frauds = b.spike_frauds.saturating_add_signed(delta);
                }
            })
            .is_some()
    }

    /// Sums over the hours in `(end - days[i], end]` for each `i`, where
    /// `end` is the hour of `at_ms` minus `delay_days` days; `days` ascending.
    pub fn trailing<const N: usize>(
        &self,
        at_ms: i64,
        delay_days: i64,
        days: [i64; N],
    ) -> [Sums; N] {
        let end = end_hour(at_ms, delay_days);
        let mut out = [Sums::default(); N];
        let Some(longest) = days.last() else {
            return out;
        };
        let start = end - 24 * longest;
        for b in self.buckets[self.expired as usize..].iter().rev() {
            let h = i64::from(b.hour);
            if h > end {
                continue;
            }
            if h <= start {
                break;
            }
            for (s, d) in out.iter_mut().zip(days) {
                if h > end - 24 * d {
                    s.add(b);
                }
            }
        }
        out
    }

    /// Time of the newest event's hour (ms since the epoch), or `i64::MIN`.
    pub fn last_ms(&self) -> i64 {
        self.buckets
            .last()
            .map_or(i64::MIN, |b| i64::from(b.hour) * HOUR_MS)
    }
}

/// A long window always read a fixed delay in the past (per merchant): its
/// trailing sums change only when the window's end moves to a new hour or
/// an event or fraud label lands inside it, so the last sums are kept and a
/// busy merchant's weeks of buckets are summed once per hour, not per payment.
#[derive(Debug, Clone, Default)]
pub struct DelayedWindow {
    window: LongWindow,
    /// `(end hour, days, sums)` of the last read.
    cache: Option<(i64, [i64; 3], [Sums; 3])>,
}

impl DelayedWindow {
    /// Forgets the kept sums if `at_ms` falls inside the window they cover.
    fn touched(&mut self, at_ms: i64) {
        if self.cache.is_some_and(|(end, _, _)| hour_of(at_ms) <= end) {
            self.cache = None;
        }
    }

    /// As [`LongWindow::add`], without an amount ratio.
    pub fn add(&mut self, at_ms: i64, amount: u64, horizon_hours: i64) {
        self.touched(at_ms);
        self.window.add(at_ms, amount, 0, horizon_hours);
    }

    /// As [`LongWindow::add_fraud`].
    pub fn add_fraud(&mut self, at_ms: i64, delta: i32, spike: bool) -> bool {
        self.touched(at_ms);
        self.window.add_fraud(at_ms, delta, spike)
    }

    /// As [`LongWindow::trailing`], from the kept sums when still valid.
    pub fn trailing(&mut self, at_ms: i64, delay_days: i64, days: [i64; 3]) -> [Sums; 3] {
        let end = end_hour(at_ms, delay_days);
        if let Some((e, d, sums)) = self.cache
            && e == end
            && d == days
        {
            return sums;
        }
        let sums = self.window.trailing(at_ms, delay_days, days);
        self.cache = Some((end, days, sums));
        sums
    }

    /// As [`LongWindow::last_ms`].
    pub fn last_ms(&self) -> i64 {
        self.window.last_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % HOUR_MS;
    const DAY: i64 = 24 * HOUR_MS;

    #[test]
    fn trailing_windows_end_at_the_event_or_a_delay_before() {
        let mut w = LongWindow::default();
        for (d, amount) in [(0, 100), (3, 200), (10, 400), (20, 800)] {
            w.add(T0 + d * DAY, amount, 0, 40 * 24);
        }
        let now = T0 + 20 * DAY;
        let [d1, d7, d30] = w.trailing(now, 0, [1, 7, 30]);
        assert_eq!((d1.count, d1.amount), (1, 800));
        assert_eq!((d7.count, d7.amount), (1, 800));
        assert_eq!((d30.count, d30.amount), (4, 1500));
        // Ending 7 days before: (now - 8d, now - 7d] and so on.
        let [l1, l7, l30] = w.trailing(now, 7, [1, 7, 30]);
        assert_eq!(l1.count, 0);
        assert_eq!((l7.count, l7.amount), (1, 400));
        assert_eq!(l30.count, 3);
    }

    #[test]
    fn a_peak_stays_in_every_window_that_holds_its_hour() {
        let mut w = LongWindow::default();
        for d in 0..10 {
            w.add(T0 + d * DAY, 1_000, 1_000, 40 * 24);
        }
        w.add(T0 + 10 * DAY, 5_000, 0, 40 * 24);
        assert!(w.raise_peak(T0 + 10 * DAY + 5, 5_000));
        assert!(
            w.raise_peak(T0 + 10 * DAY, 2_000),
            "a lower peak changes nothing"
        );
        w.add(T0 + 11 * DAY, 1_000, 1_000, 40 * 24);
        let [d1, d7, d30] = w.trailing(T0 + 12 * DAY, 0, [1, 7, 30]);
        assert_eq!((d1.peak, d7.peak, d30.peak), (0, 5_000, 5_000));
        assert_eq!(d30.count, 12);
        // A week after the spike, only the 30-day window still holds it.
        let [_, d7, d30] = w.trailing(T0 + 17 * DAY, 0, [1, 7, 30]);
        assert_eq!((d7.peak, d30.peak), (1_000, 5_000));
        assert!(!w.raise_peak(T0 + 13 * DAY, 1), "no payment in that hour");
    }

    #[test]
    fn fraud_reports_land_in_their_hour_and_old_hours_are_forgotten() {
        let mut w = LongWindow::default();
        w.add(T0, 1, 0, 48);
        w.add(T0 + 30 * 60_000, 1, 0, 48);
        assert!(w.add_fraud(T0 + 5, 1, false));
        assert!(w.add_fraud(T0 + 6, 1, true));
        let d1 = w.trailing(T0 + HOUR_MS / 2, 0, [1])[0];
        assert_eq!((d1.frauds, d1.spike_frauds), (2, 1));
        let hour = u32::try_from(T0 / HOUR_MS).ok();
        assert_eq!(d1.oldest_plain_fraud_hour, hour);
        assert!(w.add_fraud(T0 + 5, -1, false));
        assert!(w.add_fraud(T0 + 6, -1, true));
        let d1 = w.trailing(T0, 0, [1])[0];
        assert_eq!((d1.frauds, d1.spike_frauds), (0, 0));
        w.add(T0 + 3 * DAY, 1, 0, 48);
        assert!(!w.add_fraud(T0, 1, false), "the first hour was forgotten");
        assert_eq!(w.trailing(T0 + 3 * DAY, 0, [30])[0].count, 1);
    }

    #[test]
    fn delayed_windows_keep_their_sums_until_the_window_changes() {
        let day = 24 * HOUR_MS;
        let t0 = 1_000 * day;
        let mut plain = LongWindow::default();
        let mut kept = DelayedWindow::default();
        let days = [1, 7, 30];
        let check = |at: i64, plain: &LongWindow, kept: &mut DelayedWindow| {
            assert_eq!(
                kept.trailing(at, 7, days),
                plain.trailing(at, 7, days),
                "at {at}"
            );
        };
        for i in 0..2_000i64 {
            let at = t0 + i * 17 * 60_000;
            plain.add(at, 100, 0, 37 * 24);
            kept.add(at, 100, 37 * 24);
            check(at, &plain, &mut kept);
            if i % 7 == 0 {
                // A label for a payment eight days back lands in the window.
                let old = at - 8 * day;
                assert_eq!(
                    plain.add_fraud(old, 1, false),
                    kept.add_fraud(old, 1, false)
                );
                check(at, &plain, &mut kept);
            }
        }
    }
}
