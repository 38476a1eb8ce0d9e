//! What the embedded store writes: one [`Record`] per change, framed as
//! `[length u32 LE][CRC-32 of the payload u32 LE][payload]` with a postcard
//! payload, and the reader that walks a file of them, stopping at the first
//! torn or corrupt frame.
//!
//! Every record is idempotent: applying it twice, or on top of a snapshot
//! that already holds it, leaves the same state. That is what lets the log
//! be replayed over a snapshot taken while the store kept changing.

use crate::domain::RegisteredMethod;
use crate::state::ListEntry;
use crate::state::memory::Slot;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::Read;

/// Largest payload accepted when reading: anything longer is corruption.
pub(super) const MAX_RECORD: usize = 1 << 24;
/// Bytes of a frame header.
pub(super) const HEADER: usize = 8;

/// One change to the store. Variants are only ever appended (their index is
/// the tag on disk). Short-lived: built, written and dropped.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Record<'a> {
    /// A payment method registered (or replaced).
    Method(Cow<'a, RegisteredMethod>),
    /// A payment recorded for the first time, keyed by the hash of its id.
    Payment {
        /// Map key of the payment id.
        #[serde(with = "postcard::fixint::le")]
        key: u64,
        /// What it was.
        payment: Slot,
    },
    /// The amount ratio recorded for a payment.
    Ratio {
        /// Map key of the payment id.
        #[serde(with = "postcard::fixint::le")]
        key: u64,
        /// Its check bits.
        check: u32,
        /// The ratio (thousandths).
        ratio: u32,
        /// Whether it was a spike.
        spike: bool,
    },
    /// A label on a payment.
    Label {
        /// Map key of the payment id.
        #[serde(with = "postcard::fixint::le")]
        key: u64,
        /// Its check bits.
        check: u32,
        /// Label code.
        label: u8,
    },
    /// A key added to a list (the list's index in `List::ALL`).
    ListAdd {
        /// Which list.
        list: u8,
        /// The key.
        #[serde(with = "postcard::fixint::le")]
        key: u64,
    },
    /// The last record of a snapshot, with how many came before it.
    End {
        /// Records before this one.
        records: u64,
    },
    /// A key added to a list with its entry.
    ListEntry {
        /// Which list (its index in `List::ALL`).
        list: u8,
        /// The key.
        #[serde(with = "postcard::fixint::le")]
        key: u64,
        /// The entry.
        entry: Cow<'a, ListEntry>,
    },
    /// A key taken off a list.
    ListRemove {
        /// Which list.
        list: u8,
        /// The key.
        #[serde(with = "postcard::fixint::le")]
        key: u64,
    },
    /// What was decided of a payment (for the holdout estimates).
    Decision {
        /// Map key of the payment id.
        #[serde(with = "postcard::fixint::le")]
        key: u64,
        /// Its check bits.
        check: u32,
        /// [`crate::state::Decided::code`].
        code: u8,
        /// Its true score.
        score: u8,
        /// Its allowed propensity.
        propensity: f32,
    },
}

/// Appends `record`, framed, to `out`.
pub(super) fn frame(record: &Record<'_>, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    *out = postcard::to_extend(record, std::mem::take(out))?;
    let len = out.len() - start - HEADER;
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Where and why reading a file stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Damage {
    /// Offset of the first frame that could not be read.
    pub offset: u64,
    /// What was wrong with it.
    pub what: &'static str,
}

/// What reading a file of frames found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Reading {
    /// Records read.
    pub records: u64,
    /// The first damaged stretch followed by readable frames (skipped).
    pub first_skip: Option<Damage>,
    /// Damaged stretches skipped before readable frames.
    pub skipped: u64,
    /// Where the file stops holding frames: a torn or corrupt tail, with
    /// no readable frame after it.
    pub tail: Option<Damage>,
}

/// The frame at the start of `bytes`, if it is whole and sound: its record
/// and its length on disk; else what is wrong with it.
fn frame_at(bytes: &[u8]) -> Result<(Record<'static>, usize), &'static str> {
    let Some(head) = bytes.get(..HEADER) else {
        return Err("a torn frame header");
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD {
        return Err("an impossible record length");
    }
    let Some(payload) = bytes.get(HEADER..HEADER + len) else {
        return Err("a torn record");
    };
    if crc32fast::hash(payload) != crc {
        return Err("a checksum mismatch");
    }
    let record: Record<'_> = postcard::from_bytes(payload).map_err(|_| "an undecodable record")?;
    Ok((into_owned(record), HEADER + len))
}

/// Reads the frames of `bytes` (which start at offset `base` of their file)
/// into `reading`: a damaged frame is skipped up to the next sound one, so
/// one bad record costs only itself; with no sound frame after it, it is
/// the tail.
fn scan(bytes: &[u8], base: u64, reading: &mut Reading, f: &mut impl FnMut(Record<'static>)) {
    let mut at = 0;
    while at < bytes.len() {
        match frame_at(&bytes[at..]) {
            Ok((record, len)) => {
                f(record);
                reading.records += 1;
                at += len;
            }
            Err(what) => {
                let damage = Damage {
                    offset: base + at as u64,
                    what,
                };
                match (at + 1..bytes.len()).find(|&j| frame_at(&bytes[j..]).is_ok()) {
                    Some(next) => {
                        reading.skipped += 1;
                        reading.first_skip.get_or_insert(damage);
                        at = next;
                    }
                    None => {
                        reading.tail = Some(damage);
                        return;
                    }
                }
            }
        }
    }
}

/// Reads frames from `input` (positioned `start` bytes into its file),
/// calling `f` on each record. Whole files stream; from the first damaged
/// frame on, the rest of the file is read into memory and scanned for the
/// next sound frame.
pub(super) fn read_frames(
    input: &mut impl Read,
    start: u64,
    mut f: impl FnMut(Record<'static>),
) -> Reading {
    let mut reading = Reading::default();
    let mut at = start;
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; HEADER];
        let got = read_full(input, &mut head).unwrap_or(0);
        if got == 0 {
            return reading;
        }
        let mut rest = head[..got].to_vec();
        if got == HEADER {
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len <= MAX_RECORD {
                payload.resize(len, 0);
                let read = read_full(input, &mut payload).unwrap_or(0);
                rest.extend_from_slice(&payload[..read]);
                if read == len
                    && let Ok((record, n)) = frame_at(&rest)
                {
                    f(record);
                    reading.records += 1;
                    at += n as u64;
                    continue;
                }
            }
        }
        // Damaged at `at`: the rest of the file, in memory.
        let _ = input.read_to_end(&mut rest);
        scan(&rest, at, &mut reading, &mut f);
        return reading;
    }
}

/// Reads until `buf` is full or the input ends; how many bytes were read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn into_owned(r: Record<'_>) -> Record<'static> {
    match r {
        Record::Method(m) => Record::Method(Cow::Owned(m.into_owned())),
        Record::Payment { key, payment } => Record::Payment { key, payment },
        Record::Ratio {
            key,
            check,
            ratio,
            spike,
        } => Record::Ratio {
            key,
            check,
            ratio,
            spike,
        },
        Record::Label { key, check, label } => Record::Label { key, check, label },
        Record::ListAdd { list, key } => Record::ListAdd { list, key },
        Record::End { records } => Record::End { records },
        Record::ListEntry { list, key, entry } => Record::ListEntry {
            list,
            key,
            entry: Cow::Owned(entry.into_owned()),
        },
        Record::ListRemove { list, key } => Record::ListRemove { list, key },
        Record::Decision {
            key,
            check,
            code,
            score,
            propensity,
        } => Record::Decision {
            key,
            check,
            code,
            score,
            propensity,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Customer, MethodKind, Session};

    fn method() -> RegisteredMethod {
        RegisteredMethod {
            id: "pm_1".into(),
            kind: MethodKind::Card,
            card_fingerprint: Some("fp_1".into()),
            card_country: Some(*b"FR"),
            created_at_ms: 1_763_000_000_000,
            creation_session: Some(Session {
                session_id: "s".into(),
                captured_at_ms: 1_763_000_000_000,
                ip: "203.0.113.7".parse().ok(),
                user_agent: "UA".into(),
                accept_language: "fr".into(),
                timezone: "Europe/Paris".into(),
                utc_offset_minutes: 60,
                screen_width: 1440,
                screen_height: 900,
                color_depth: 24,
                device_id: "d".into(),
                platform: "p".into(),
            }),
            customer: Customer {
                id: "c".into(),
                email: "a@example.com".into(),
            },
        }
    }

    fn records() -> Vec<Record<'static>> {
        vec![
            Record::Method(Cow::Owned(method())),
            Record::Payment {
                key: u64::MAX - 5,
                payment: Slot {
                    check: 7,
                    ratio: 2_600,
                    at_ms: 1_763_000_000_123,
                    amount: 1099,
                    card: 1,
                    email: 3,
                    ip: 5,
                    device: 0,
                    merchant: 9,
                    label: 1,
                    spike: true,
                    decided: 0,
                    score: 0,
                    propensity: 0.0,
                },
            },
            Record::Ratio {
                key: 4,
                check: 5,
                ratio: 6,
                spike: false,
            },
            Record::Label {
                key: 4,
                check: 5,
                label: 3,
            },
            Record::ListAdd { list: 2, key: 77 },
            Record::End { records: 5 },
            Record::ListEntry {
                list: 6,
                key: 78,
                entry: Cow::Owned(ListEntry {
                    value: "a@example.com".into(),
                    added_at_ms: 1_763_000_000_000,
                    reason: "chargeback".into(),
                    expires_at_ms: 0,
                    source: crate::state::ListSource::Admin,
                    payment_id: String::new(),
                }),
            },
            Record::ListRemove { list: 6, key: 78 },
            Record::Decision {
                key: 4,
                check: 5,
                code: 0x11,
                score: 81,
                propensity: 0.05,
            },
        ]
    }

    #[test]
    fn frames_round_trip_and_only_damaged_ones_are_lost() {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for r in records() {
            frame(&r, &mut buf).expect("encodes");
            ends.push(buf.len());
        }
        let mut back = Vec::new();
        let whole = read_frames(&mut &buf[..], 0, |r| back.push(r));
        assert_eq!((whole.records, whole.tail, whole.skipped), (9, None, 0));
        assert_eq!(back, records());
        // Torn in the middle of the fourth frame: three read, the tail at
        // the start of the fourth.
        let cut = ends[2] + 5;
        let torn = read_frames(&mut &buf[..cut], 0, |_| ());
        assert_eq!(torn.records, 3);
        assert_eq!(torn.tail.map(|d| d.offset), Some(ends[2] as u64));
        // A flipped bit in the second payload: that record alone is lost.
        let mut bad = buf.clone();
        bad[ends[0] + HEADER + 3] ^= 0x10;
        let mut back = Vec::new();
        let flipped = read_frames(&mut &bad[..], 0, |r| back.push(r));
        assert_eq!(
            (flipped.records, flipped.skipped, flipped.tail),
            (8, 1, None)
        );
        let first = flipped.first_skip.expect("the damage is reported");
        assert_eq!(
            (first.offset, first.what),
            (ends[0] as u64, "a checksum mismatch")
        );
        assert_eq!(back[1], records()[2], "reading goes on after it");
        // A wrecked length field in the middle: the frames after it are found.
        let mut bad = buf.clone();
        bad[ends[1]..ends[1] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let wrecked = read_frames(&mut &bad[..], 0, |_| ());
        assert_eq!(
            (wrecked.records, wrecked.skipped, wrecked.tail),
            (8, 1, None)
        );
        // Garbage at the end: the tail.
        let mut bad = buf.clone();
        bad.extend_from_slice(&[9; 20]);
        let tail = read_frames(&mut &bad[..], 0, |_| ());
        assert_eq!(tail.records, 9);
        assert_eq!(tail.tail.map(|d| d.offset), Some(buf.len() as u64));
    }

    /// The bytes on disk of every record kind: a change of a saved type that
    /// would make existing files unreadable fails here first. Kinds added
    /// later are pinned apart, so the earlier kinds' bytes stay checked as
    /// they were first written.
    #[test]
    fn the_file_format_does_not_change_by_accident() {
        let hex = |records: &[Record<'_>]| {
            let mut buf = Vec::new();
            for r in records {
                frame(r, &mut buf).expect("encodes");
            }
            buf.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let all = records();
        let first = hex(&all[..8]);
        assert_eq!(crc32fast::hash(first.as_bytes()), GOLDEN, "{first}");
        // The decision record (kind 8): payment key, check, code, score,
        // propensity (f32, little-endian).
        assert_eq!(
            hex(&all[8..]),
            "100000007cbc2392080400000000000000051151cdcc4c3d"
        );
    }

    const GOLDEN: u32 = 3_663_538_582;
}
