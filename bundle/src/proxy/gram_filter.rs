//! A sampling prefilter in front of the dlp matcher's automaton.
//!
//! An Aho–Corasick automaton over every form of every secret (about 500 patterns for 20
//! secrets) looks at every byte of every body and runs at a few hundred MB/s: a 100 MB upload
//! through `dlp: block` cost three times the CPU of `dlp: off`. Every pattern is at least
//! `shortest` bytes long, so any occurrence covers one of the positions `0, s, 2s, …` with
//! `s = shortest - GRAM + 1` such that the `GRAM` bytes there lie inside the occurrence's first
//! `shortest` bytes. [`GramFilter`] keeps a Bloom filter (two bits per string) of the
//! `GRAM`-byte strings found in those first bytes of some pattern, reads only every `s`-th
//! position of the data, and returns the few windows around a position both of whose bits are
//! set; the automaton then runs on those windows alone (the Wu–Manber idea, with a Bloom
//! filter instead of a shift table).
//! On data unlike any secret (almost every body) that is one table probe per `s` bytes; on
//! data made of a secret's alphabet the windows grow and merge, down to the whole buffer,
//! which costs what the automaton alone did. No occurrence is missed: a test checks the
//! windows against the automaton over the whole buffer.

/// Bytes per sampled string.
const GRAM: usize = 4;
/// log2 of the bit table's size: 2^20 bits, 128 KiB. 20 secrets' ~500 forms put about 10,000
/// strings in it (two bits each, ~2 % of the bits set), so a random position passes with a
/// probability of about 0.04 %; with one bit in 2^18 (an earlier version) it was 3 %, and the
/// windows it opened cost more than the probes.
const BITS: u32 = 20;

#[derive(Debug)]
pub(crate) struct GramFilter {
    /// One bit per hashed `GRAM`-byte string inside a pattern's first `shortest` bytes.
    bits: Box<[u64]>,
    shortest: usize,
    longest: usize,
}

/// The two bits of a string (multiplicative hashes with two odd constants).
fn slots(gram: [u8; GRAM]) -> [usize; 2] {
    let g = u64::from(u32::from_le_bytes(gram));
    [
        (g.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize,
        (g.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) >> (64 - BITS)) as usize,
    ]
}

impl GramFilter {
    /// The filter for `patterns`, or `None` when some pattern is too short to sample (every
    /// position would have to be read: the automaton alone does that).
    pub(crate) fn new<'a>(patterns: impl Iterator<Item = &'a [u8]> + Clone) -> Option<GramFilter> {
        let shortest = patterns.clone().map(<[u8]>::len).min()?;
        let longest = patterns.clone().map(<[u8]>::len).max()?;
        if shortest < GRAM + 1 {
            return None;
        }
        let mut bits = vec![0u64; (1 << BITS) / 64].into_boxed_slice();
        for pattern in patterns {
            for gram in pattern[..shortest].windows(GRAM) {
                let mut g = [0u8; GRAM];
                g.copy_from_slice(gram);
                for at in slots(g) {
                    bits[at / 64] |= 1 << (at % 64);
                }
            }
        }
        Some(GramFilter {
            bits,
            shortest,
            longest,
        })
    }

    /// The windows of `data` (start, end; sorted, disjoint) outside which no pattern occurs.
    pub(crate) fn windows(&self, data: &[u8], out: &mut Vec<(usize, usize)>) {
        out.clear();
        let stride = self.shortest - GRAM + 1;
        let reach = self.shortest - GRAM;
        let mut at = 0;
        while let Some(gram) = data.get(at..at + GRAM) {
            let mut g = [0u8; GRAM];
            g.copy_from_slice(gram);
            let [a, b] = slots(g);
            if self.bits[a / 64] & (1 << (a % 64)) != 0 && self.bits[b / 64] & (1 << (b % 64)) != 0
            {
                // An occurrence covering `at` starts at most `reach` before it and ends at
                // most `longest` after its start.
                let start = at.saturating_sub(reach);
                let end = (at + self.longest).min(data.len());
                match out.last_mut() {
                    Some(last) if start <= last.1 => last.1 = end,
                    _ => out.push((start, end)),
                }
            }
            at += stride;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::AhoCorasick;

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn spans_in_windows(
        ac: &AhoCorasick,
        filter: &GramFilter,
        data: &[u8],
    ) -> Vec<(usize, usize, usize)> {
        let mut windows = Vec::new();
        filter.windows(data, &mut windows);
        let mut spans = Vec::new();
        for (start, end) in windows {
            for m in ac.find_overlapping_iter(&data[start..end]) {
                spans.push((m.pattern().as_usize(), start + m.start(), start + m.end()));
            }
        }
        spans.sort();
        spans
    }

    #[test]
    fn the_windows_hold_every_occurrence_the_whole_buffer_has() {
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        for round in 0..300 {
            // Patterns of 8..60 bytes over a small alphabet (so they overlap and share grams),
            // planted at random places (also overlapping each other and the buffer's ends).
            let alphabet: &[u8] = if round % 2 == 0 {
                b"ab"
            } else {
                b"abcdefghijklmnop%\\u0"
            };
            let patterns: Vec<Vec<u8>> = (0..1 + rng.below(30))
                .map(|_| {
                    let len = 8 + rng.below(52);
                    (0..len)
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect()
                })
                .collect();
            let ac = AhoCorasick::new(&patterns).unwrap();
            let filter = GramFilter::new(patterns.iter().map(Vec::as_slice)).unwrap();
            let mut data: Vec<u8> = (0..rng.below(3000))
                .map(|_| match rng.below(4) {
                    0 => alphabet[rng.below(alphabet.len())],
                    _ => b'x' + (rng.below(3) as u8),
                })
                .collect();
            for _ in 0..rng.below(6) {
                let p = &patterns[rng.below(patterns.len())];
                let at = rng.below(data.len() + 1);
                data.splice(at..at, p.iter().copied());
            }
            let mut whole: Vec<(usize, usize, usize)> = ac
                .find_overlapping_iter(&data)
                .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
                .collect();
            whole.sort();
            assert_eq!(
                spans_in_windows(&ac, &filter, &data),
                whole,
                "round {round}"
            );
        }
    }

    #[test]
    fn data_unlike_any_pattern_leaves_no_window() {
        let patterns: Vec<&[u8]> = vec![b"TESTSECRETq7w2e9r4", b"VEVTVFNFQ1JFVHE3dzJlOXI0"];
        let filter = GramFilter::new(patterns.into_iter()).unwrap();
        let data = b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n".repeat(200);
        let mut windows = Vec::new();
        filter.windows(&data, &mut windows);
        assert_eq!(windows, []);
        let mut planted = data.clone();
        planted.splice(1000..1000, b"TESTSECRETq7w2e9r4".iter().copied());
        filter.windows(&planted, &mut windows);
        assert!(
            windows.iter().any(|&(s, e)| s <= 1000 && 1018 <= e),
            "{windows:?}"
        );
    }

    #[test]
    fn patterns_too_short_to_sample_get_no_filter() {
        assert!(GramFilter::new([b"abcd".as_slice(), b"abcdefgh"].into_iter()).is_none());
        assert!(GramFilter::new(std::iter::empty()).is_none());
    }
}
