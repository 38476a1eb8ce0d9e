//! Velocity windows: per-key counts and amount sums over the last hour and the
//! last 24 hours in 5-minute buckets, plus the distinct card fingerprints seen
//! over 24 hours. Memory per key is bounded (at most 288 buckets and
//! [`MAX_DISTINCT`] cards) and proportional to how busy the key is.

use smallvec::SmallVec;

/// Width of one bucket.
pub const BUCKET_MS: i64 = 5 * 60 * 1000;
/// One day.
pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const BUCKETS_1H: i64 = 12;
const BUCKETS_24H: i64 = 288;
/// Most distinct cards remembered per key; the count saturates there.
pub const MAX_DISTINCT: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// 5-minute intervals since the epoch.
    index: u32,
    count: u32,
    amount: u64,
}

/// The bucket index of `at_ms` (times before the epoch share bucket 0).
fn bucket_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(BUCKET_MS).clamp(0, i64::from(u32::MAX))
}

/// The bucket of `index` among `buckets[from..]` (ascending by `index_of`),
/// inserted in its place from `fresh` when there is none. Events arrive
/// almost in order, so the search runs from the back.
pub(super) fn bucket_mut<B, const N: usize>(
    buckets: &mut SmallVec<[B; N]>,
    from: usize,
    index: i64,
    index_of: impl Fn(&B) -> i64,
    fresh: impl FnOnce() -> B,
) -> &mut B {
    let mut pos = buckets.len();
    while pos > from && index_of(&buckets[pos - 1]) > index {
        pos -= 1;
    }
    if pos > from && index_of(&buckets[pos - 1]) == index {
        return &mut buckets[pos - 1];
    }
    buckets.insert(pos, fresh());
    &mut buckets[pos]
}

/// Marks the first `head` buckets expired, removing them once there are
/// `batch` of them or they are half of those held (so a busy key does not
/// shift its whole history each time one expires); the new expired count.
pub(super) fn retire<B, const N: usize>(
    buckets: &mut SmallVec<[B; N]>,
    head: usize,
    batch: usize,
) -> u32 {
    if head > 0 && (head >= batch || 2 * head >= buckets.len()) {
        buckets.drain(..head);
        0
    } else {
        head as u32
    }
}

/// Counts of one key at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events in the last hour (the 5-minute bucket of the instant and the 11 before it).
    pub count_1h: u32,
    /// Events in the last 24 hours.
    pub count_24h: u32,
    /// Sum of amounts (minor units) in the last 24 hours.
    pub amount_24h: u64,
    /// Distinct card fingerprints in the last 24 hours (saturates at [`MAX_DISTINCT`]).
    pub distinct_24h: u32,
}

/// The recent history of one key. The first buckets and card are stored
/// inline, so a quiet key costs no allocation; running totals over the held
/// buckets keep a busy key's counts cheap.
#[derive(Debug, Clone, Default)]
pub struct Window {
    buckets: SmallVec<[Bucket; 2]>,
    /// Buckets at the front that have expired but are not yet removed:
    /// they are removed in batches, so that a busy key does not shift its
    /// whole history each time a bucket expires.
    expired: u32,
    cards: SmallVec<[(u64, i64); 1]>,
    last_ms: i64,
    /// Events in the held buckets (all within 24 h of the newest).
    count: u64,
    /// Sum of amounts in the held buckets.
    amount: u64,
}

/// Expired buckets removed at once (or when they are half of those held).
const EXPIRED_BATCH: usize = 32;

impl Window {
    /// The buckets within 24 h of the newest, oldest first.
    fn live(&self) -> &[Bucket] {
        &self.buckets[self.expired as usize..]
    }

    /// Time of the latest event added (ms since the epoch).
    pub fn last_ms(&self) -> i64 {
        self.last_ms
    }

    /// Adds one event at `at_ms` with `amount`, and the card it used when
    /// distinct cards are tracked for this key.
    pub fn add(&mut self, at_ms: i64, amount: u64, card: Option<u64>) {
        let index = bucket_of(at_ms);
        self.last_ms = self.last_ms.max(at_ms);
        self.count = self.count.saturating_add(1);
        self.amount = self.amount.saturating_add(amount);
        let head = self.expired as usize;
        let b = bucket_mut(
            &mut self.buckets,
            head,
            index,
            |b| i64::from(b.index),
            || Bucket {
                index: index as u32,
                count: 0,
                amount: 0,
            },
        );
        b.count = b.count.saturating_add(1);
        b.amount = b.amount.saturating_add(amount);
        let newest = bucket_of(self.last_ms);
        let expired = self
            .live()
            .iter()
            .take_while(|b| i64::from(b.index) <= newest - BUCKETS_24H)
            .count();
        if expired > 0 {
            for i in head..head + expired {
                let b = self.buckets[i];
                self.count = self.count.saturating_sub(u64::from(b.count));
                self.amount = self.amount.saturating_sub(b.amount);
            }
            self.expired = retire(&mut self.buckets, head + expired, EXPIRED_BATCH);
        }
        if let Some(card) = card {
            self.add_card(at_ms, card);
        }
    }

    fn add_card(&mut self, at_ms: i64, card: u64) {
        if let Some(entry) = self.cards.iter_mut().find(|(c, _)| *c == card) {
            entry.1 = entry.1.max(at_ms);
        } else {
            self.cards.push((card, at_ms));
        }
        let horizon = self.last_ms - DAY_MS;
        self.cards.retain(|(_, seen)| *seen > horizon);
        if self.cards.len() > MAX_DISTINCT {
            // Forget the card seen least recently.
            if let Some(oldest) = self
                .cards
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(i, _)| i)
            {
                self.cards.swap_remove(oldest);
            }
        }
    }

    /// Counts as of `at_ms`: buckets after `at_ms` are not counted.
    pub fn counts(&self, at_ms: i64) -> Counts {
        let index = bucket_of(at_ms);
        let in_day = |b: &Bucket| i64::from(b.index) > index - BUCKETS_24H;
        let mut c = Counts::default();
        let live = self.live();
        let (Some(first), Some(last)) = (live.first(), live.last()) else {
            return c;
        };
        if i64::from(last.index) <= index && in_day(first) {
            // Every held bucket is in the day before `at_ms`: the totals
            // hold, and only the last hour is summed.
            c.count_24h = u32::try_from(self.count).unwrap_or(u32::MAX);
            c.amount_24h = self.amount;
            c.count_1h = live
                .iter()
                .rev()
                .take_while(|b| i64::from(b.index) > index - BUCKETS_1H)
                .fold(0u32, |n, b| n.saturating_add(b.count));
        } else {
            for b in live.iter().rev() {
                if i64::from(b.index) > index {
                    continue;
                }
                if !in_day(b) {
                    break;
                }
                if i64::from(b.index) > index - BUCKETS_1H {
                    c.count_1h = c.count_1h.saturating_add(b.count);
                }
                c.count_24h = c.count_24h.saturating_add(b.count);
                c.amount_24h = c.amount_24h.saturating_add(b.amount);
            }
        }
        let horizon = at_ms - DAY_MS;
        c.distinct_24h = self
            .cards
            .iter()
            .filter(|(_, seen)| *seen > horizon)
            .count() as u32;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const MIN: i64 = 60_000;

    #[test]
    fn hour_and_day_windows() {
        let mut w = Window::default();
        w.add(T0, 100, None);
        w.add(T0 + 10 * MIN, 200, None);
        w.add(T0 + 3 * 60 * MIN, 300, None);
        let c = w.counts(T0 + 3 * 60 * MIN);
        assert_eq!(c.count_1h, 1);
        assert_eq!(c.count_24h, 3);
        assert_eq!(c.amount_24h, 600);
        let later = w.counts(T0 + 25 * 60 * MIN);
        assert_eq!(
            later.count_24h, 1,
            "only the 3 h event is within 24 h of 25 h"
        );
    }

    #[test]
    fn future_buckets_are_not_counted() {
        let mut w = Window::default();
        w.add(T0 + 30 * MIN, 1, None);
        w.add(T0, 1, None);
        assert_eq!(w.counts(T0).count_1h, 1);
        assert_eq!(w.counts(T0 + 30 * MIN).count_1h, 2);
    }

    #[test]
    fn distinct_cards_are_bounded() {
        let mut w = Window::default();
        for card in 0..200u64 {
            w.add(T0 + card as i64, 1, Some(card));
        }
        w.add(T0 + 500, 1, Some(3));
        assert_eq!(w.counts(T0 + 500).distinct_24h, MAX_DISTINCT as u32);
        assert!(w.live().len() <= 288 && w.buckets.len() < 288 + EXPIRED_BATCH);
    }

    /// Counts by brute force over every event ever added.
    fn reference(events: &[(i64, u64)], at_ms: i64) -> (u32, u32, u64) {
        let index = at_ms.div_euclid(BUCKET_MS);
        let mut r = (0, 0, 0);
        for &(t, amount) in events {
            let i = t.div_euclid(BUCKET_MS);
            if i <= index && i > index - BUCKETS_24H {
                r.1 += 1;
                r.2 += amount;
                if i > index - BUCKETS_1H {
                    r.0 += 1;
                }
            }
        }
        r
    }

    proptest::proptest! {
        /// Running totals agree with counting every event, for events out
        /// of order and queries before, at and after the newest event,
        /// as long as no bucket was pruned (events span under 24 h).
        #[test]
        fn totals_match_brute_force(
            steps in proptest::collection::vec((0i64..23 * 60, 0u64..10_000), 1..60),
            query in -120i64..26 * 60,
        ) {
            let mut w = Window::default();
            let events: Vec<(i64, u64)> = steps.iter().map(|&(m, a)| (T0 + m * MIN, a)).collect();
            for &(t, a) in &events {
                w.add(t, a, None);
            }
            let at = T0 + query * MIN;
            let c = w.counts(at);
            proptest::prop_assert_eq!((c.count_1h, c.count_24h, c.amount_24h), reference(&events, at));
        }

        /// Over more than a day, counts at the newest event match the
        /// events of its last 24 hours.
        #[test]
        fn pruned_totals_match_brute_force(
            gaps in proptest::collection::vec((0i64..180, 0u64..10_000), 1..80),
        ) {
            let mut w = Window::default();
            let mut t = T0;
            let mut events = Vec::new();
            for &(gap, a) in &gaps {
                t += gap * MIN;
                w.add(t, a, None);
                events.push((t, a));
                let c = w.counts(t);
                proptest::prop_assert_eq!((c.count_1h, c.count_24h, c.amount_24h), reference(&events, t));
            }
        }
    }

    #[test]
    fn old_buckets_are_pruned() {
        let mut w = Window::default();
        for h in 0..100 {
            w.add(T0 + h * 60 * MIN, 1, Some(h as u64));
        }
        assert!(w.live().len() <= 288 && w.buckets.len() < 288 + EXPIRED_BATCH);
        assert!(w.cards.len() <= 25);
        assert_eq!(w.counts(T0 + 99 * 60 * MIN).count_24h, 24);
    }
}
