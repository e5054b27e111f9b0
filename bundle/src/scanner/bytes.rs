//! Byte-slice helpers shared by the tree diff and the added-line diff.

/// How many leading bytes `a` and `b` share.
pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 32 <= n && a[i..i + 32] == b[i..i + 32] {
        i += 32;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// How many trailing bytes `a` and `b` share.
pub(crate) fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut i = 0;
    while i + 32 <= n && a[n - i - 32..n - i] == b[n - i - 32..n - i] {
        i += 32;
    }
    while i < n && a[n - i - 1] == b[n - i - 1] {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the obvious byte loop, around the 32-byte blocks.
    #[test]
    fn prefix_and_suffix_match_a_byte_loop() {
        for len in [0usize, 1, 31, 32, 33, 64, 70] {
            for at in 0..=len {
                let a = vec![7u8; len];
                let mut b = a.clone();
                if at < len {
                    b[at] = 9;
                }
                let slow_prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
                let slow_suffix = a
                    .iter()
                    .rev()
                    .zip(b.iter().rev())
                    .take_while(|(x, y)| x == y)
                    .count();
                assert_eq!(common_prefix(&a, &b), slow_prefix, "len {len} at {at}");
                assert_eq!(common_suffix(&a, &b), slow_suffix, "len {len} at {at}");
                let longer = [a.as_slice(), &[1, 2, 3]].concat();
                assert_eq!(common_prefix(&longer, &b), slow_prefix.min(len));
            }
        }
    }
}
