//! Synthetic traffic: a population of customers with home devices, networks
//! and saved cards, their legitimate payments with realistic noise, and named
//! fraud scenarios, as time-ordered proto events with ground truth.
//! Deterministic for a given seed (ChaCha8).

mod population;

pub use population::{COUNTRIES, Country, FRAUD_ORIGINS, pick};

use crate::proto;
use population::{Customer, Device, DeviceKind, Population};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 2026-01-01T00:00:00Z: the default start of simulated traffic.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// The fraud scenario behind a fraudulent payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// A saved card used from a foreign device and network (session drift).
    StolenCard,
    /// Bursts of small payments over many new cards from one device or IP.
    CardTesting,
    /// A new card added to a taken-over account from a new device, paid within minutes.
    AccountTakeover,
    /// Fraud from the customer's own device and network: not separable by sessions.
    LooksLegitimate,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 4] = [
        Scenario::StolenCard,
        Scenario::CardTesting,
        Scenario::AccountTakeover,
        Scenario::LooksLegitimate,
    ];

    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::StolenCard => "stolen_card",
            Scenario::CardTesting => "card_testing",
            Scenario::AccountTakeover => "account_takeover",
            Scenario::LooksLegitimate => "looks_legitimate",
        }
    }

    /// Share of fraudulent payments from this scenario.
    pub fn share(self) -> f64 {
        match self {
            Scenario::StolenCard => 0.35,
            Scenario::CardTesting => 0.30,
            Scenario::AccountTakeover => 0.20,
            Scenario::LooksLegitimate => 0.15,
        }
    }
}

/// What a simulated event is.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // proto messages, moved not copied
pub enum SimKind {
    /// A payment method saved with its creation session.
    Register(proto::RegisterPaymentMethodRequest),
    /// A payment attempt; `fraud` is the ground truth.
    Payment {
        /// The event.
        event: proto::PaymentEvent,
        /// The fraud scenario, or `None` for a legitimate payment.
        fraud: Option<Scenario>,
    },
    /// A label arriving later.
    Feedback(proto::FeedbackEvent),
}

/// One simulated event at its time.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// When it happens (ms since the epoch).
    pub at_ms: i64,
    /// What it is.
    pub kind: SimKind,
}

impl SimEvent {
    /// The event as a recorded-traffic record (the scenario of a fraudulent
    /// payment goes in the record's ground-truth field).
    pub fn into_record(self) -> proto::TrafficRecord {
        use proto::traffic_record::Request;
        let (request, scenario) = match self.kind {
            SimKind::Register(r) => (Request::Register(r), ""),
            SimKind::Payment { event, fraud } => {
                (Request::Payment(event), fraud.map_or("", Scenario::name))
            }
            SimKind::Feedback(f) => (Request::Feedback(f), ""),
        };
        proto::TrafficRecord {
            at_ms: self.at_ms,
            request: Some(request),
            scenario: scenario.to_owned(),
        }
    }
}

/// Simulation settings.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    /// Seed of the random generator.
    pub seed: u64,
    /// Customers in the population.
    pub customers: u32,
    /// Days of traffic.
    pub days: u32,
    /// Start of the traffic (ms since the epoch).
    pub start_ms: i64,
    /// Fraudulent payments per legitimate one.
    pub fraud_rate: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            customers: 20_000,
            days: 30,
            start_ms: DEFAULT_START_MS,
            fraud_rate: 0.01,
        }
    }
}

struct Sim {
    rng: ChaCha8Rng,
    pop: Population,
    events: Vec<SimEvent>,
    next_id: u64,
    cfg: SimConfig,
}

/// Generates the traffic of `cfg`, sorted by time (ties keep generation order).
pub fn generate(cfg: SimConfig) -> Vec<SimEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let pop = Population::generate(&mut rng, cfg.customers, cfg.start_ms);
    let mut sim = Sim {
        rng,
        pop,
        events: Vec::new(),
        next_id: 0,
        cfg,
    };
    sim.register_existing_cards();
    let legit = sim.legitimate_traffic();
    sim.fraud_traffic(legit);
    let mut events = sim.events;
    events.sort_by_key(|e| e.at_ms);
    events
}

fn exp_sample(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    // Box–Muller.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    median * (sigma * z).exp()
}

impl Sim {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{}_{:08}", self.cfg.seed, self.next_id)
    }

    fn fingerprint(&mut self) -> String {
        format!("fp_{:016x}", self.rng.random::<u64>())
    }

    fn push(&mut self, at_ms: i64, kind: SimKind) {
        self.events.push(SimEvent { at_ms, kind });
    }

    fn register(
        &mut self,
        at_ms: i64,
        method_id: &str,
        fingerprint: &str,
        country: &str,
        session: Option<proto::Session>,
        customer: proto::Customer,
    ) {
        let req = proto::RegisterPaymentMethodRequest {
            payment_method: Some(proto::PaymentMethod {
                id: method_id.to_owned(),
                r#type: proto::PaymentMethodType::Card as i32,
                card_fingerprint: fingerprint.to_owned(),
                card_country: country.to_owned(),
                created_at_ms: at_ms,
                creation_session: session,
                customer: None,
            }),
            customer: Some(customer),
        };
        self.push(at_ms, SimKind::Register(req));
    }

    /// Cards saved before the simulated window, from one of the customer's devices.
    fn register_existing_cards(&mut self) {
        for c in 0..self.pop.customers.len() {
            for k in 0..self.pop.customers[c].cards.len() {
                let age_days = self.rng.random_range(1.0..700.0);
                let at = self.cfg.start_ms - (age_days * DAY as f64) as i64;
                let d = self
                    .rng
                    .random_range(0..self.pop.customers[c].devices.len());
                let session = self.home_session(c, d, at);
                // Some integrations saved cards without capturing a session.
                let session = (self.rng.random::<f64>() >= 0.05).then_some(session);
                let cust = &self.pop.customers[c];
                let card = cust.cards[k].clone();
                let customer = cust.proto();
                self.register(
                    at,
                    &card.method_id,
                    &card.fingerprint,
                    &card.country,
                    session,
                    customer,
                );
            }
        }
    }

    /// A session from the customer's own device `d`, on its home network or a
    /// mobile network, sometimes while travelling.
    fn home_session(&mut self, c: usize, d: usize, at: i64) -> proto::Session {
        let id = self.id("sess");
        let cust = &self.pop.customers[c];
        let dev = &cust.devices[d];
        let mut s = dev.session(id, at, cust.country);
        let roll: f64 = self.rng.random();
        if dev.kind.is_mobile() && roll < 0.35 {
            // Mobile carrier network, shared by many subscribers (CGNAT).
            s.ip = self.pop.carrier_ip(&mut self.rng, cust.country);
        } else {
            s.ip = cust.home_ip(&mut self.rng, d);
        }
        s
    }

    /// Legitimate payments of every customer; returns how many.
    fn legitimate_traffic(&mut self) -> usize {
        let span = i64::from(self.cfg.days) * DAY;
        let mut count = 0;
        for c in 0..self.pop.customers.len() {
            let rate = self.pop.customers[c].payments_per_day;
            let mut t = self.cfg.start_ms as f64;
            loop {
                t += exp_sample(&mut self.rng, DAY as f64 / rate);
                let at = t as i64;
                if at >= self.cfg.start_ms + span {
                    break;
                }
                count += self.legit_payment(c, at);
            }
            if let Some(day) = self.pop.customers[c].subscription_day {
                // Monthly off-session renewals of a subscription started before the window.
                let mut at = self.cfg.start_ms + i64::from(day) * DAY + 9 * HOUR;
                while at < self.cfg.start_ms + span {
                    self.renewal(c, at);
                    count += 1;
                    at += 30 * DAY;
                }
            }
        }
        count
    }

    fn legit_payment(&mut self, c: usize, at: i64) -> usize {
        let n_dev = self.pop.customers[c].devices.len();
        let roll: f64 = self.rng.random();
        let mut d = self.rng.random_range(0..n_dev);
        let mut session;
        if roll < 0.03 {
            // A new phone: a device the card was never used from.
            let dev = Device::random(&mut self.rng, self.pop.customers[c].country, true);
            self.pop.customers[c].devices.push(dev);
            d = self.pop.customers[c].devices.len() - 1;
            session = self.home_session(c, d, at);
        } else {
            session = self.home_session(c, d, at);
            if roll < 0.05 {
                // Travelling: a foreign network and time zone, same device and languages.
                let dest = pick(&mut self.rng, &COUNTRIES);
                session.timezone = dest.timezone.into();
                session.utc_offset_minutes = dest.utc_offset_minutes;
                session.ip = self.pop.random_ip(&mut self.rng, dest);
            }
        }
        let median = self.pop.customers[c].median_amount;
        let amount = lognormal(&mut self.rng, median, 0.8).clamp(50.0, 500_000.0) as i64;
        let new_card = self.rng.random::<f64>() < 0.04;
        let method_id = if new_card {
            // Checkout with a new card, saved in this very session minutes before.
            let fp = self.fingerprint();
            let id = self.id("pm");
            let cust = &self.pop.customers[c];
            let country = cust.country.code.to_owned();
            let customer = cust.proto();
            let saved_at = at - self.rng.random_range(MINUTE..10 * MINUTE);
            let mut creation = session.clone();
            creation.captured_at_ms = saved_at;
            self.register(saved_at, &id, &fp, &country, Some(creation), customer);
            self.pop.customers[c].cards.push(population::Card {
                method_id: id.clone(),
                fingerprint: fp,
                country,
            });
            id
        } else {
            let cards = &self.pop.customers[c].cards;
            let k = self.rng.random_range(0..cards.len());
            cards[k].method_id.clone()
        };
        // A few payments come from server-side integrations without a session,
        // or are merchant-initiated off-session charges.
        let roll: f64 = self.rng.random();
        let (session, off_session) = if roll < 0.03 {
            (None, false)
        } else if roll < 0.05 {
            (None, true)
        } else {
            (Some(session), false)
        };
        let ev = self.payment_event(c, at, amount, method_id, session, off_session);
        self.push(
            at,
            SimKind::Payment {
                event: ev,
                fraud: None,
            },
        );
        1
    }

    fn renewal(&mut self, c: usize, at: i64) {
        let cust = &self.pop.customers[c];
        let method_id = cust.cards[0].method_id.clone();
        let sub = format!("sub_{}", cust.id);
        let mut ev = self.payment_event(c, at, 999, method_id, None, true);
        ev.recurring = Some(proto::Recurring {
            subscription_id: sub,
            initial: false,
        });
        self.push(
            at,
            SimKind::Payment {
                event: ev,
                fraud: None,
            },
        );
    }

    fn payment_event(
        &mut self,
        c: usize,
        at: i64,
        amount: i64,
        method_id: String,
        session: Option<proto::Session>,
        off_session: bool,
    ) -> proto::PaymentEvent {
        let payment_id = self.id("pay");
        let merchant = format!("acct_{}", self.rng.random_range(0..50u32));
        let cust = &self.pop.customers[c];
        proto::PaymentEvent {
            payment_id,
            object_type: proto::ObjectType::PaymentIntent as i32,
            amount,
            currency: cust.country.currency.into(),
            created_at_ms: at,
            customer: Some(cust.proto()),
            merchant_id: merchant,
            payment_method: Some(proto::PaymentMethod {
                id: method_id,
                ..Default::default()
            }),
            session,
            off_session,
            recurring: None,
            metadata: Default::default(),
            risk_assessment_opt_out: false,
        }
    }

    fn fraud_payment(&mut self, at: i64, ev: proto::PaymentEvent, scenario: Scenario) {
        let report_at = at + self.rng.random_range(2 * DAY..40 * DAY);
        let kind = if self.rng.random::<f64>() < 0.6 {
            proto::FeedbackKind::DisputeFraud
        } else {
            proto::FeedbackKind::Fraudulent
        };
        let fb = proto::FeedbackEvent {
            payment_id: ev.payment_id.clone(),
            kind: kind as i32,
            reported_at_ms: report_at,
        };
        self.push(
            at,
            SimKind::Payment {
                event: ev,
                fraud: Some(scenario),
            },
        );
        self.push(report_at, SimKind::Feedback(fb));
    }

    /// A fraudster's session: a foreign device and network, or (for the
    /// careful ones) a residential proxy in the victim's country with a
    /// matching time zone and language.
    fn attacker_session(&mut self, victim_country: Country, at: i64) -> proto::Session {
        let careful = self.rng.random::<f64>() < 0.3;
        let origin = if careful {
            victim_country
        } else {
            pick(&mut self.rng, &FRAUD_ORIGINS)
        };
        let kind = DeviceKind::random(&mut self.rng);
        let dev = Device::with_kind(&mut self.rng, origin, kind);
        let id = self.id("sess");
        let mut s = dev.session(id, at, origin);
        s.ip = self.pop.random_ip(&mut self.rng, origin);
        if careful && self.rng.random::<f64>() < 0.5 {
            s.accept_language = victim_country.languages.into();
        }
        s
    }

    fn fraud_traffic(&mut self, legit: usize) {
        let total = (legit as f64 * self.cfg.fraud_rate).round() as usize;
        let span = i64::from(self.cfg.days) * DAY;
        for scenario in Scenario::ALL {
            let target = (total as f64 * scenario.share()).round() as usize;
            let mut made = 0;
            while made < target {
                let at = self.cfg.start_ms + self.rng.random_range(0..span);
                made += match scenario {
                    Scenario::StolenCard => self.stolen_card(at),
                    Scenario::CardTesting => self.card_testing(at),
                    Scenario::AccountTakeover => self.account_takeover(at),
                    Scenario::LooksLegitimate => self.looks_legitimate(at),
                };
            }
        }
    }

    fn victim(&mut self) -> usize {
        self.rng.random_range(0..self.pop.customers.len())
    }

    fn stolen_card(&mut self, at: i64) -> usize {
        let c = self.victim();
        let cust = &self.pop.customers[c];
        // Cards saved during the window may be saved after `at`.
        let k = self.rng.random_range(0..cust.initial_cards);
        let method_id = cust.cards[k].method_id.clone();
        let median = cust.median_amount * 3.0;
        let country = cust.country;
        let n = self.rng.random_range(1..=4);
        let session = self.attacker_session(country, at);
        // Some fraudsters go through an API integration that sends no session.
        let sessionless = self.rng.random::<f64>() < 0.2;
        let mut t = at;
        for _ in 0..n {
            let amount = lognormal(&mut self.rng, median, 0.7).clamp(100.0, 1_000_000.0) as i64;
            let mut s = session.clone();
            s.session_id = self.id("sess");
            let s = (!sessionless).then_some(s);
            let ev = self.payment_event(c, t, amount, method_id.clone(), s, false);
            self.fraud_payment(t, ev, Scenario::StolenCard);
            t += self.rng.random_range(2 * MINUTE..40 * MINUTE);
        }
        n
    }

    fn card_testing(&mut self, at: i64) -> usize {
        let origin = pick(&mut self.rng, &FRAUD_ORIGINS);
        let kind = DeviceKind::random(&mut self.rng);
        let dev = Device::with_kind(&mut self.rng, origin, kind);
        let ip = self.pop.random_ip(&mut self.rng, origin);
        let rotate_devices = self.rng.random::<f64>() < 0.4;
        let n = self.rng.random_range(8..40);
        let email = format!("tester{}@mail.example", self.rng.random::<u32>());
        let mut t = at;
        for _ in 0..n {
            let dev = if rotate_devices {
                // Same IP, a fresh device id each time: only the IP ties them.
                Device::with_kind(&mut self.rng, origin, dev.kind)
            } else {
                dev.clone()
            };
            let sid = self.id("sess");
            // One session saves the card and pays with it: captured before both.
            let mut s = dev.session(sid, t - 20_000, origin);
            s.ip.clone_from(&ip);
            let fp = self.fingerprint();
            let pm = self.id("pm");
            let customer = proto::Customer {
                id: String::new(),
                email: email.clone(),
            };
            let card_country = pick(&mut self.rng, &COUNTRIES).code.to_owned();
            self.register(
                t - 20_000,
                &pm,
                &fp,
                &card_country,
                Some(s.clone()),
                customer.clone(),
            );
            let amount = self.rng.random_range(50..300);
            let payment_id = self.id("pay");
            let ev = proto::PaymentEvent {
                payment_id,
                object_type: proto::ObjectType::Charge as i32,
                amount,
                currency: "usd".into(),
                created_at_ms: t,
                customer: Some(customer),
                merchant_id: format!("acct_{}", self.rng.random_range(0..50u32)),
                payment_method: Some(proto::PaymentMethod {
                    id: pm,
                    ..Default::default()
                }),
                session: Some(s),
                ..Default::default()
            };
            self.fraud_payment(t, ev, Scenario::CardTesting);
            t += self.rng.random_range(5_000..90_000);
        }
        n
    }

    fn account_takeover(&mut self, at: i64) -> usize {
        let c = self.victim();
        let country = self.pop.customers[c].country;
        let session = self.attacker_session(country, at);
        let fp = self.fingerprint();
        let pm = self.id("pm");
        let customer = self.pop.customers[c].proto();
        let card_country = pick(&mut self.rng, &FRAUD_ORIGINS).code.to_owned();
        let card_country = if self.rng.random::<f64>() < 0.5 {
            country.code.to_owned()
        } else {
            card_country
        };
        self.register(at, &pm, &fp, &card_country, Some(session.clone()), customer);
        let n = self.rng.random_range(1..=3);
        let median = self.pop.customers[c].median_amount * 4.0;
        let mut t = at + self.rng.random_range(MINUTE..30 * MINUTE);
        for _ in 0..n {
            let amount = lognormal(&mut self.rng, median, 0.6).clamp(500.0, 1_000_000.0) as i64;
            let mut s = session.clone();
            s.session_id = self.id("sess");
            let ev = self.payment_event(c, t, amount, pm.clone(), Some(s), false);
            self.fraud_payment(t, ev, Scenario::AccountTakeover);
            t += self.rng.random_range(MINUTE..20 * MINUTE);
        }
        n
    }

    fn looks_legitimate(&mut self, at: i64) -> usize {
        let c = self.victim();
        let d = self
            .rng
            .random_range(0..self.pop.customers[c].devices.len());
        let session = self.home_session(c, d, at);
        let cust = &self.pop.customers[c];
        let k = self.rng.random_range(0..cust.initial_cards);
        let method_id = cust.cards[k].method_id.clone();
        let amount =
            lognormal(&mut self.rng, cust.median_amount * 1.5, 0.8).clamp(50.0, 500_000.0) as i64;
        let ev = self.payment_event(c, at, amount, method_id, Some(session), false);
        self.fraud_payment(at, ev, Scenario::LooksLegitimate);
        1
    }
}

impl Customer {
    fn proto(&self) -> proto::Customer {
        proto::Customer {
            id: self.id.clone(),
            email: self.email.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            customers: 300,
            days: 10,
            ..SimConfig::default()
        }
    }

    #[test]
    fn same_seed_same_traffic() {
        assert_eq!(generate(small(7)), generate(small(7)));
        assert_ne!(generate(small(7)), generate(small(8)));
    }

    #[test]
    fn traffic_is_ordered_and_has_every_scenario() {
        let ev = generate(SimConfig {
            seed: 3,
            customers: 3000,
            days: 10,
            ..SimConfig::default()
        });
        assert!(ev.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        for s in Scenario::ALL {
            assert!(
                ev.iter()
                    .any(|e| matches!(e.kind, SimKind::Payment { fraud: Some(f), .. } if f == s)),
                "{s:?}"
            );
        }
        let payments = ev
            .iter()
            .filter(|e| matches!(e.kind, SimKind::Payment { .. }))
            .count();
        let frauds = ev
            .iter()
            .filter(|e| matches!(e.kind, SimKind::Payment { fraud: Some(_), .. }))
            .count();
        let share = frauds as f64 / payments as f64;
        assert!((0.005..0.03).contains(&share), "fraud share {share}");
    }
}
