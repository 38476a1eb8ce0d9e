//! Session comparison: the card-creation session against the payment session,
//! one number per signal. A signal is 0 when either side does not carry it, so
//! that "unknown" never looks like "different"; the missing-session flags say
//! when a whole side is absent.

use super::network;
use crate::domain::Session;
use crate::fingerprint::{Facts, geo, languages, text_hash, user_agent};

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

fn jaccard_distance(la: &[u32], lb: &[u32]) -> f64 {
    if la.is_empty() || lb.is_empty() {
        return 0.0;
    }
    let common = la.iter().filter(|x| lb.contains(x)).count();
    let union = la.len() + lb.len() - common;
    1.0 - common as f64 / union as f64
}

/// Jaccard distance between the primary languages of two Accept-Language headers
/// (0 when either has none).
pub fn language_distance(a: &str, b: &str) -> f64 {
    let (la, na) = languages(a);
    let (lb, nb) = languages(b);
    jaccard_distance(&la[..na], &lb[..nb])
}

/// Compares the creation session (its facts `c`) with the payment session `p`,
/// whose time zone hashes to `p_tz` ([`text_hash`]). Strings of `p` are
/// parsed only where their hash differs from `c`'s.
pub fn compare(c: &Facts, p: &Session, p_tz: u64) -> SessionDiff {
    let mut d = SessionDiff::default();
    let device = text_hash(&p.device_id);
    if c.device != 0 && device != 0 {
        d.device_mismatch = flag(c.device != device);
    }
    if let (Some(a), Some(b)) = (c.ip, p.ip) {
        d.ip_mismatch = flag(!network::same_address(a, b));
        d.network_mismatch = flag(!network::same_network(a, b));
    }
    let ua = text_hash(&p.user_agent);
    if c.user_agent != 0 && ua != 0 && c.user_agent != ua {
        d.user_agent_mismatch = flag(c.family != user_agent::family(&p.user_agent));
        d.os_mismatch = flag(c.os != user_agent::os(&p.user_agent));
    }
    if let Some((w, h)) = c.screen
        && p.screen_width > 0
        && p.screen_height > 0
    {
        let same = (w, h) == (p.screen_width, p.screen_height)
            || (w, h) == (p.screen_height, p.screen_width);
        d.screen_mismatch = flag(!same);
    }
    if c.timezone != 0 && p_tz != 0 {
        d.timezone_mismatch = flag(c.timezone != p_tz);
    }
    let p_offset =
        (!p.timezone.is_empty() || p.utc_offset_minutes != 0).then_some(p.utc_offset_minutes);
    if let (Some(a), Some(b)) = (c.utc_offset, p_offset) {
        d.utc_offset_diff_hours = (f64::from((a - b).abs()) / 60.0).min(24.0);
    }
    let lang = text_hash(&p.accept_language);
    if c.accept_language != 0 && lang != 0 && c.accept_language != lang {
        let (lb, nb) = languages(&p.accept_language);
        d.language_mismatch = jaccard_distance(&c.langs[..usize::from(c.n_langs)], &lb[..nb]);
    }
    d
}

/// 1 when the payment session's time zone places it in a country other than
/// the card's issuing country; 0 when either is unknown. `p_tz` is the hash
/// of `p`'s zone; the creation session's facts, when given, spare the table
/// lookup for an unchanged zone.
pub fn card_country_mismatch(
    card_country: Option<[u8; 2]>,
    p: &Session,
    p_tz: u64,
    creation: Option<&Facts>,
) -> f64 {
    let Some(card) = card_country else {
        return 0.0;
    };
    let tz_country = match creation {
        Some(c) if c.timezone != 0 && c.timezone == p_tz => c.tz_country,
        _ => geo::country_of_timezone(&p.timezone),
    };
    match tz_country {
        Some(tz) => flag(card != tz),
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(device: &str, ip: &str, tz: &str, offset: i32, lang: &str) -> Session<'static> {
        Session {
            session_id: "s".into(),
            captured_at_ms: 0,
            ip: ip.parse().ok(),
            user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 Version/17.1 Safari/605.1.15".into(),
            accept_language: lang.to_owned().into(),
            timezone: tz.to_owned().into(),
            utc_offset_minutes: offset,
            screen_width: 1440,
            screen_height: 900,
            color_depth: 24,
            device_id: device.to_owned().into(),
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
        assert_eq!(
            compare(&Facts::of(&a), &a, text_hash(&a.timezone)),
            SessionDiff::default()
        );
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
        let d = compare(&Facts::of(&a), &b, text_hash(&b.timezone));
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
        assert_eq!(
            card_country_mismatch(Some(*b"FR"), &p, text_hash(&p.timezone), None),
            0.0
        );
        assert_eq!(
            card_country_mismatch(Some(*b"US"), &p, text_hash(&p.timezone), None),
            1.0
        );
        assert_eq!(
            card_country_mismatch(None, &p, text_hash(&p.timezone), None),
            0.0
        );
        let home = Facts::of(&p);
        assert_eq!(
            card_country_mismatch(Some(*b"US"), &p, text_hash(&p.timezone), Some(&home)),
            1.0
        );
        let tokyo = session("d", "203.0.113.7", "Asia/Tokyo", 540, "ja");
        assert_eq!(
            card_country_mismatch(
                Some(*b"FR"),
                &tokyo,
                text_hash(&tokyo.timezone),
                Some(&home)
            ),
            1.0
        );
        assert_eq!(
            card_country_mismatch(
                Some(*b"JP"),
                &tokyo,
                text_hash(&tokyo.timezone),
                Some(&home)
            ),
            0.0
        );
    }
}
