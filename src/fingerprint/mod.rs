//! Session fingerprints: what a device/browser session is made of once
//! parsed (browser family and OS from the user agent, the country of its time
//! zone, its primary languages, hashed strings), computed once per session.
//! The store keeps the facts of each creation session beside it; the session
//! comparison (`features::session`) reads them.
//!
//! - [`user_agent`]: browser family and operating system.
//! - [`geo`]: country of an IANA time zone.

pub mod geo;
pub mod user_agent;

use crate::domain::Session;
use std::hash::BuildHasher;
use std::net::IpAddr;
use user_agent::{Family, Os};

/// Seed of [`text_hash`]: fixed, so facts are the same in every process.
const TEXT_SEED: u64 = 0x7365_7373_696f_6e73;

/// A 64-bit hash of a session string for equality tests; 0 for "absent".
pub fn text_hash(s: &str) -> u64 {
    if s.is_empty() {
        0
    } else {
        foldhash::quality::FixedState::with_seed(TEXT_SEED).hash_one(s) | 1
    }
}

/// Up to 8 primary language subtags of an Accept-Language header, packed as u32.
pub fn languages(header: &str) -> ([u32; 8], usize) {
    let mut out = [0u32; 8];
    let mut n = 0;
    for part in header.split(',') {
        let tag = part.split(';').next().unwrap_or("").trim();
        let primary = tag.split(['-', '_']).next().unwrap_or("");
        if !(2..=3).contains(&primary.len()) || !primary.bytes().all(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        let code = primary.bytes().fold(0u32, |acc, b| {
            (acc << 8) | u32::from(b.to_ascii_lowercase())
        });
        if !out[..n].contains(&code) {
            out[n] = code;
            n += 1;
            if n == out.len() {
                break;
            }
        }
    }
    (out, n)
}

/// The comparable essence of a session, computed once: what the comparison
/// needs without touching the session's strings again. Creation sessions
/// are stored with their facts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Facts {
    /// Hash of the device id ([`text_hash`], 0 when absent).
    pub device: u64,
    /// The IP address.
    pub ip: Option<IpAddr>,
    /// Hash of the user agent.
    pub user_agent: u64,
    /// Browser family.
    pub family: Family,
    /// Operating system.
    pub os: Os,
    /// Hash of the Accept-Language header.
    pub accept_language: u64,
    /// Its primary language tags ([`languages`]).
    pub langs: [u32; 8],
    /// How many of `langs` are set.
    pub n_langs: u8,
    /// Hash of the IANA time zone name.
    pub timezone: u64,
    /// Country of the time zone, when it maps to one.
    pub tz_country: Option<[u8; 2]>,
    /// UTC offset in minutes, when the session carries one.
    pub utc_offset: Option<i32>,
    /// Screen width and height, when given.
    pub screen: Option<(u32, u32)>,
}

impl Facts {
    /// The facts of `s`.
    pub fn of(s: &Session) -> Facts {
        let (langs, n) = languages(&s.accept_language);
        Facts {
            device: text_hash(&s.device_id),
            ip: s.ip,
            user_agent: text_hash(&s.user_agent),
            family: user_agent::family(&s.user_agent),
            os: user_agent::os(&s.user_agent),
            accept_language: text_hash(&s.accept_language),
            langs,
            n_langs: n as u8,
            timezone: text_hash(&s.timezone),
            tz_country: geo::country_of_timezone(&s.timezone),
            utc_offset: (!s.timezone.is_empty() || s.utc_offset_minutes != 0)
                .then_some(s.utc_offset_minutes),
            screen: (s.screen_width > 0 && s.screen_height > 0)
                .then_some((s.screen_width, s.screen_height)),
        }
    }
}
