//! The simulated population: countries and their networks, customers with
//! home devices and saved cards, and devices with consistent user agents,
//! screens and platforms.

use crate::proto;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A country as the simulator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code.
    pub code: &'static str,
    /// A representative IANA time zone.
    pub timezone: &'static str,
    /// Its UTC offset in minutes.
    pub utc_offset_minutes: i32,
    /// A typical Accept-Language header.
    pub languages: &'static str,
    /// Currency, lower case.
    pub currency: &'static str,
    /// First octet of the IPv4 space its networks are drawn from.
    pub ip_octet: u8,
}

const fn country(
    code: &'static str,
    timezone: &'static str,
    utc_offset_minutes: i32,
    languages: &'static str,
    currency: &'static str,
    ip_octet: u8,
) -> Country {
    Country {
        code,
        timezone,
        utc_offset_minutes,
        languages,
        currency,
        ip_octet,
    }
}

/// Countries customers live in.
pub const COUNTRIES: [Country; 12] = [
    country("US", "America/New_York", -300, "en-US,en;q=0.9", "usd", 23),
    country(
        "US",
        "America/Los_Angeles",
        -480,
        "en-US,en;q=0.9",
        "usd",
        24,
    ),
    country("GB", "Europe/London", 0, "en-GB,en;q=0.9", "gbp", 31),
    country(
        "FR",
        "Europe/Paris",
        60,
        "fr-FR,fr;q=0.9,en;q=0.7",
        "eur",
        37,
    ),
    country(
        "DE",
        "Europe/Berlin",
        60,
        "de-DE,de;q=0.9,en;q=0.7",
        "eur",
        46,
    ),
    country("ES", "Europe/Madrid", 60, "es-ES,es;q=0.9", "eur", 62),
    country(
        "IT",
        "Europe/Rome",
        60,
        "it-IT,it;q=0.9,en;q=0.6",
        "eur",
        79,
    ),
    country(
        "NL",
        "Europe/Amsterdam",
        60,
        "nl-NL,nl;q=0.9,en;q=0.8",
        "eur",
        82,
    ),
    country(
        "CA",
        "America/Toronto",
        -300,
        "en-CA,en;q=0.9,fr;q=0.5",
        "cad",
        99,
    ),
    country(
        "BR",
        "America/Sao_Paulo",
        -180,
        "pt-BR,pt;q=0.9",
        "brl",
        177,
    ),
    country("JP", "Asia/Tokyo", 540, "ja-JP,ja;q=0.9", "jpy", 126),
    country("AU", "Australia/Sydney", 600, "en-AU,en;q=0.9", "aud", 101),
];

/// Countries fraud often originates from in the simulation.
pub const FRAUD_ORIGINS: [Country; 6] = [
    country("RU", "Europe/Moscow", 180, "ru-RU,ru;q=0.9", "rub", 95),
    country("NG", "Africa/Lagos", 60, "en-NG,en;q=0.8", "ngn", 105),
    country("ID", "Asia/Jakarta", 420, "id-ID,id;q=0.9", "idr", 114),
    country("VN", "Asia/Ho_Chi_Minh", 420, "vi-VN,vi;q=0.9", "vnd", 113),
    country("RO", "Europe/Bucharest", 120, "ro-RO,ro;q=0.9", "ron", 86),
    country(
        "BD",
        "Asia/Dhaka",
        360,
        "bn-BD,bn;q=0.9,en;q=0.5",
        "bdt",
        103,
    ),
];

/// One element of `items`, drawn uniformly.
pub fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// Kinds of device, each with its own user agents, screens and platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// iPhone, Safari.
    Iphone,
    /// Android phone, Chrome.
    Android,
    /// Mac laptop, Safari or Chrome.
    Mac,
    /// Windows PC, Chrome, Edge or Firefox.
    Windows,
}

impl DeviceKind {
    /// A kind drawn with typical shares.
    pub fn random(rng: &mut ChaCha8Rng) -> DeviceKind {
        match rng.random_range(0..100) {
            0..35 => DeviceKind::Iphone,
            35..60 => DeviceKind::Android,
            60..75 => DeviceKind::Mac,
            _ => DeviceKind::Windows,
        }
    }

    /// Phones.
    pub fn is_mobile(self) -> bool {
        matches!(self, DeviceKind::Iphone | DeviceKind::Android)
    }
}

/// A device with a stable fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its kind.
    pub kind: DeviceKind,
    /// Stable device hash.
    pub device_id: String,
    /// Browser user agent.
    pub user_agent: String,
    /// Screen size.
    pub screen: (u32, u32),
    /// Platform string.
    pub platform: &'static str,
}

impl Device {
    /// A random device; a phone when `mobile` is set.
    pub fn random(rng: &mut ChaCha8Rng, country: Country, mobile: bool) -> Device {
        let kind = if mobile {
            if rng.random::<bool>() {
                DeviceKind::Iphone
            } else {
                DeviceKind::Android
            }
        } else {
            DeviceKind::random(rng)
        };
        Device::with_kind(rng, country, kind)
    }

    /// A random device of `kind`.
    pub fn with_kind(rng: &mut ChaCha8Rng, _country: Country, kind: DeviceKind) -> Device {
        let device_id = format!("dev_{:016x}", rng.random::<u64>());
        let v = rng.random_range(0..6u32);
        let (user_agent, screen, platform) = match kind {
            DeviceKind::Iphone => (
                format!(
                    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{v} Mobile/15E148 Safari/604.1"
                ),
                [(390, 844), (393, 852), (430, 932), (375, 667)][rng.random_range(0..4)],
                "iPhone",
            ),
            DeviceKind::Android => (
                format!(
                    "Mozilla/5.0 (Linux; Android 1{}; {}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/12{v}.0.0.0 Mobile Safari/537.36",
                    rng.random_range(2..5u32),
                    ["Pixel 8", "SM-S918B", "SM-A546B", "moto g84"][rng.random_range(0..4)]
                ),
                [(412, 915), (360, 800), (384, 854), (412, 892)][rng.random_range(0..4)],
                "Linux armv8l",
            ),
            DeviceKind::Mac => (
                if rng.random::<bool>() {
                    format!(
                        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{v} Safari/605.1.15"
                    )
                } else {
                    format!(
                        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/12{v}.0.0.0 Safari/537.36"
                    )
                },
                [(1440, 900), (1512, 982), (1728, 1117), (1920, 1080)][rng.random_range(0..4)],
                "MacIntel",
            ),
            DeviceKind::Windows => (
                match rng.random_range(0..3) {
                    0 => format!(
                        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/12{v}.0.0.0 Safari/537.36"
                    ),
                    1 => format!(
                        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/12{v}.0.0.0 Safari/537.36 Edg/12{v}.0.0.0"
                    ),
                    _ => format!(
                        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:12{v}.0) Gecko/20100101 Firefox/12{v}.0"
                    ),
                },
                [(1920, 1080), (1366, 768), (1536, 864), (2560, 1440)][rng.random_range(0..4)],
                "Win32",
            ),
        };
        Device {
            kind,
            device_id,
            user_agent,
            screen,
            platform,
        }
    }

    /// A session from this device in `country`'s time zone and languages
    /// (the IP is left for the caller).
    pub fn session(&self, session_id: String, at: i64, country: Country) -> proto::Session {
        proto::Session {
            session_id,
            captured_at_ms: at,
            ip: String::new(),
            user_agent: self.user_agent.clone(),
            accept_language: country.languages.into(),
            timezone: country.timezone.into(),
            utc_offset_minutes: country.utc_offset_minutes,
            screen_width: self.screen.0,
            screen_height: self.screen.1,
            color_depth: if self.kind.is_mobile() { 32 } else { 24 },
            device_id: self.device_id.clone(),
            platform: self.platform.into(),
        }
    }
}

/// A saved card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// Payment method id.
    pub method_id: String,
    /// Card fingerprint.
    pub fingerprint: String,
    /// Issuing country.
    pub country: String,
}

/// A customer.
#[derive(Debug, Clone)]
pub struct Customer {
    /// Customer id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Home country.
    pub country: Country,
    /// Home devices (a new phone may be added during the simulation).
    pub devices: Vec<Device>,
    /// Home network (/24) and the host on it.
    pub home: ([u8; 3], u8),
    /// Work or second network.
    pub work: ([u8; 3], u8),
    /// Saved cards.
    pub cards: Vec<Card>,
    /// How many of `cards` were saved before the simulated window.
    pub initial_cards: usize,
    /// Mean payments per day.
    pub payments_per_day: f64,
    /// Median amount in minor units.
    pub median_amount: f64,
    /// Day of the month a subscription renews, if the customer has one.
    pub subscription_day: Option<u32>,
}

fn ip(net: [u8; 3], host: u8) -> String {
    format!("{}.{}.{}.{}", net[0], net[1], net[2], host)
}

fn random_net(rng: &mut ChaCha8Rng, c: Country) -> [u8; 3] {
    [c.ip_octet, rng.random(), rng.random()]
}

impl Customer {
    /// The IP of a payment from device `d` at home: usually the home address,
    /// sometimes a new lease on the same network or the work network.
    pub fn home_ip(&self, rng: &mut ChaCha8Rng, d: usize) -> String {
        let roll = rng.random_range(0..100);
        let laptop = !self.devices[d].kind.is_mobile();
        if laptop && roll < 15 {
            ip(self.work.0, self.work.1)
        } else if roll < 25 {
            ip(self.home.0, rng.random_range(2..250))
        } else {
            ip(self.home.0, self.home.1)
        }
    }
}

/// Everyone in the simulation, and the carrier networks they share.
pub struct Population {
    /// Customers.
    pub customers: Vec<Customer>,
    carriers: Vec<Vec<[u8; 3]>>,
}

impl Population {
    /// Generates `n` customers.
    pub fn generate(rng: &mut ChaCha8Rng, n: u32, start_ms: i64) -> Population {
        let _ = start_ms;
        let carriers = COUNTRIES
            .iter()
            .map(|c| (0..8).map(|_| random_net(rng, *c)).collect())
            .collect();
        let customers = (0..n)
            .map(|i| {
                let country = pick(rng, &COUNTRIES);
                let n_dev = match rng.random_range(0..100) {
                    0..50 => 1,
                    50..85 => 2,
                    _ => 3,
                };
                let mut devices = vec![Device::random(rng, country, true)];
                for _ in 1..n_dev {
                    devices.push(Device::random(rng, country, false));
                }
                let n_cards = if rng.random_range(0..100) < 75 { 1 } else { 2 };
                let cards: Vec<Card> = (0..n_cards)
                    .map(|k| Card {
                        method_id: format!("pm_c{i}_{k}"),
                        fingerprint: format!("fp_{:016x}", rng.random::<u64>()),
                        country: if rng.random_range(0..100) < 97 {
                            country.code.to_owned()
                        } else {
                            pick(rng, &COUNTRIES).code.to_owned()
                        },
                    })
                    .collect();
                Customer {
                    initial_cards: cards.len(),
                    id: format!("cus_{i}"),
                    email: format!("customer{i}@example.com"),
                    country,
                    devices,
                    home: (random_net(rng, country), rng.random_range(2..250)),
                    work: (random_net(rng, country), rng.random_range(2..250)),
                    cards,
                    payments_per_day: (0.05 + 0.6 * rng.random::<f64>().powi(2)),
                    median_amount: 1000.0 + 9000.0 * rng.random::<f64>(),
                    subscription_day: (rng.random_range(0..100) < 20)
                        .then(|| rng.random_range(0..28)),
                }
            })
            .collect();
        Population {
            customers,
            carriers,
        }
    }

    /// An address on one of `country`'s shared mobile-carrier networks.
    pub fn carrier_ip(&self, rng: &mut ChaCha8Rng, country: Country) -> String {
        let i = COUNTRIES.iter().position(|c| *c == country).unwrap_or(0);
        let pool = &self.carriers[i];
        ip(
            pool[rng.random_range(0..pool.len())],
            rng.random_range(2..250),
        )
    }

    /// A random address in `country`.
    pub fn random_ip(&self, rng: &mut ChaCha8Rng, country: Country) -> String {
        ip(random_net(rng, country), rng.random_range(2..250))
    }
}
