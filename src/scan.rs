//! One-pass scans of request strings, eight bytes at a time: whether a field
//! is ASCII and whether it holds ASCII control characters or spaces, with its
//! text as `&str`.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte lane of `x` below `n` (`n` ≤ 0x80). Exact as to
/// whether any lane is below `n`.
#[inline(always)]
fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// High bit set in each byte lane of `x` equal to `b`. Exact as to whether
/// any lane equals `b`.
#[inline(always)]
fn equal(x: u64, b: u8) -> u64 {
    below(x ^ (LO * u64::from(b)), 1)
}

/// What one pass over a string field found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scanned<'a> {
    /// The field's text.
    pub text: &'a str,
    /// Every byte is ASCII.
    pub ascii: bool,
    /// Some byte is an ASCII control character (C0 or DEL). C1 controls are
    /// not looked for here.
    pub control: bool,
    /// Some byte is an ASCII space.
    pub space: bool,
}

/// Scans `b` in one pass; `None` when it is not valid UTF-8.
#[inline]
pub(crate) fn scan(b: &[u8]) -> Option<Scanned<'_>> {
    let (mut high, mut control, mut space) = (0u64, 0u64, 0u64);
    let mut word = |x: u64| {
        high |= x;
        control |= below(x, 0x20) | equal(x, 0x7f);
        space |= equal(x, b' ');
    };
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        word(u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Pad with a letter, which is in no class.
        let mut w = [b'A'; 8];
        w[..rest.len()].copy_from_slice(rest);
        word(u64::from_le_bytes(w));
    }
    let ascii = high & HI == 0;
    let text = std::str::from_utf8(b).ok()?;
    Some(Scanned {
        text,
        ascii,
        control: control != 0,
        space: space != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(b: &[u8]) -> Option<(bool, bool, bool)> {
        let s = std::str::from_utf8(b).ok()?;
        Some((
            s.is_ascii(),
            b.iter().any(|&c| c < 0x20 || c == 0x7f),
            b.contains(&b' '),
        ))
    }

    #[test]
    fn classes() {
        let s = scan(b"pay_123").expect("utf-8");
        assert!(s.ascii && !s.control && !s.space);
        assert_eq!(s.text, "pay_123");
        assert!(scan(b"a b").expect("utf-8").space);
        assert!(scan(b"tab\there").expect("utf-8").control);
        assert!(scan(b"0123456789abcde\x7f").expect("utf-8").control);
        let s = scan("Zürich-café".as_bytes()).expect("utf-8");
        assert!(!s.ascii && !s.control && !s.space);
        assert!(scan(b"\xff\xfe").is_none());
        assert!(scan(b"").expect("utf-8").ascii);
    }

    proptest! {
        #[test]
        fn matches_a_byte_by_byte_reference(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let got = scan(&b).map(|s| (s.ascii, s.control, s.space));
            prop_assert_eq!(got, reference(&b));
        }

        #[test]
        fn matches_on_text(s in "\\PC{0,30}[ \t\u{7f}]?\\PC{0,30}") {
            let got = scan(s.as_bytes()).map(|s| (s.text.to_owned(), s.ascii, s.control, s.space));
            let want = reference(s.as_bytes()).map(|(a, c, sp)| (s.clone(), a, c, sp));
            prop_assert_eq!(got, want);
        }
    }
}
