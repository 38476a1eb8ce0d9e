//! Session comparison: the card-creation session against the payment session,
//! one number per signal. A signal is 0 when either side does not carry it, so
//! that "unknown" never looks like "different"; the missing-session flags say
//! when a whole side is absent.

use super::{geo, network, user_agent};
use crate::domain::Session;

/// The comparison of two sessions (all values 0 when either is absent).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionDiff {
    /// Both carry a device id and they differ.
    pub device_mismatch: f64,
    /// Both carry an IP and the addresses differ.
    pub ip_mismatch: f64,
    /// Both carry an IP and they are in different /24 (IPv4) or /48 (IPv6) networks.
    pub network_mismatch: f64,
    /// Both carry a user agent and the browser families differ.
    pub user_agent_mismatch: f64,
    /// Both carry a user agent and the operating systems differ.
    pub os_mismatch: f64,
    /// Both carry a screen size and they differ (rotation ignored).
    pub screen_mismatch: f64,
    /// Both carry a time zone name and they differ.
    pub timezone_mismatch: f64,
    /// Absolute UTC-offset difference in hours, capped at 24.
    pub utc_offset_diff_hours: f64,
    /// Jaccard distance between the primary languages of Accept-Language (0 same, 1 disjoint).
    pub language_mismatch: f64,
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn offset_known(s: &Session) -> bool {
    !s.timezone.is_empty() || s.utc_offset_minutes != 0
}

/// Up to 8 primary language subtags of an Accept-Language header, packed as u32.
fn languages(header: &str) -> ([u32; 8], usize) {
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

/// Jaccard distance between the primary languages of two Accept-Language headers
/// (0 when either has none).
pub fn language_distance(a: &str, b: &str) -> f64 {
    let (la, na) = languages(a);
    let (lb, nb) = languages(b);
    if na == 0 || nb == 0 {
        return 0.0;
    }
    let common = la[..na].iter().filter(|x| lb[..nb].contains(x)).count();
    let union = na + nb - common;
    1.0 - common as f64 / union as f64
}

/// Compares the creation session `c` with the payment session `p`.
pub fn compare(c: &Session, p: &Session) -> SessionDiff {
    let mut d = SessionDiff::default();
    if !c.device_id.is_empty() && !p.device_id.is_empty() {
        d.device_mismatch = flag(c.device_id != p.device_id);
    }
    if let (Some(a), Some(b)) = (c.ip, p.ip) {
        d.ip_mismatch = flag(!network::same_address(a, b));
        d.network_mismatch = flag(!network::same_network(a, b));
    }
    if !c.user_agent.is_empty() && !p.user_agent.is_empty() && c.user_agent != p.user_agent {
        d.user_agent_mismatch =
            flag(user_agent::family(&c.user_agent) != user_agent::family(&p.user_agent));
        d.os_mismatch = flag(user_agent::os(&c.user_agent) != user_agent::os(&p.user_agent));
    }
    if c.screen_width > 0 && c.screen_height > 0 && p.screen_width > 0 && p.screen_height > 0 {
        let same = (c.screen_width, c.screen_height) == (p.screen_width, p.screen_height)
            || (c.screen_width, c.screen_height) == (p.screen_height, p.screen_width);
        d.screen_mismatch = flag(!same);
    }
    if !c.timezone.is_empty() && !p.timezone.is_empty() {
        d.timezone_mismatch = flag(c.timezone != p.timezone);
    }
    if offset_known(c) && offset_known(p) {
        d.utc_offset_diff_hours =
            (f64::from((c.utc_offset_minutes - p.utc_offset_minutes).abs()) / 60.0).min(24.0);
    }
    d.language_mismatch = language_distance(&c.accept_language, &p.accept_language);
    d
}

/// 1 when the payment session's time zone places it in a country other than
/// the card's issuing country; 0 when either is unknown.
pub fn card_country_mismatch(card_country: Option<[u8; 2]>, p: &Session) -> f64 {
    match (card_country, geo::country_of_timezone(&p.timezone)) {
        (Some(card), Some(tz)) => flag(card != tz),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn session(device: &str, ip: &str, tz: &str, offset: i32, lang: &str) -> Session {
        Session {
            session_id: "s".into(),
            captured_at_ms: 0,
            ip: ip.parse().ok(),
            user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 Version/17.1 Safari/605.1.15".into(),
            accept_language: lang.into(),
            timezone: tz.into(),
            utc_offset_minutes: offset,
            screen_width: 1440,
            screen_height: 900,
            color_depth: 24,
            device_id: device.into(),
            platform: "MacIntel".into(),
        }
    }

    #[test]
    fn same_session_has_no_drift() {
        let a = session(
            "dev1",
            "203.0.113.7",
            "Europe/Paris",
            60,
            "fr-FR,fr;q=0.9,en;q=0.8",
        );
        assert_eq!(compare(&a, &a), SessionDiff::default());
    }

    #[test]
    fn drifted_session_differs_everywhere() {
        let a = session("dev1", "203.0.113.7", "Europe/Paris", 60, "fr-FR,fr;q=0.9");
        let mut b = session(
            "dev2",
            "198.51.100.9",
            "Asia/Jakarta",
            420,
            "id-ID,id;q=0.9",
        );
        b.user_agent = "Mozilla/5.0 (Linux; Android 14) Chrome/120.0 Mobile Safari/537.36".into();
        b.screen_width = 412;
        b.screen_height = 915;
        let d = compare(&a, &b);
        assert_eq!(d.device_mismatch, 1.0);
        assert_eq!(d.ip_mismatch, 1.0);
        assert_eq!(d.network_mismatch, 1.0);
        assert_eq!(d.user_agent_mismatch, 1.0);
        assert_eq!(d.os_mismatch, 1.0);
        assert_eq!(d.screen_mismatch, 1.0);
        assert_eq!(d.timezone_mismatch, 1.0);
        assert_eq!(d.utc_offset_diff_hours, 6.0);
        assert_eq!(d.language_mismatch, 1.0);
    }

    #[test]
    fn language_overlap() {
        assert_eq!(language_distance("en-US,en;q=0.9", "en-GB"), 0.0);
        assert!((language_distance("en-US,fr;q=0.5", "fr-FR") - 0.5).abs() < 1e-12);
        assert_eq!(language_distance("", "fr-FR"), 0.0);
    }

    #[test]
    fn card_country_from_timezone() {
        let p = session("d", "203.0.113.7", "Europe/Paris", 60, "fr");
        assert_eq!(card_country_mismatch(Some(*b"FR"), &p), 0.0);
        assert_eq!(card_country_mismatch(Some(*b"US"), &p), 1.0);
        assert_eq!(card_country_mismatch(None, &p), 0.0);
    }
}
