//! Small deterministic hashes for seeds and sampling (not for security).

/// The splitmix64 finaliser: a fast, well-mixed 64-bit permutation.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A 64-bit key for `(seed, a, b)`: the same triple always gives the same key.
pub(crate) fn keyed(seed: u64, a: u64, b: u64) -> u64 {
    mix64(mix64(mix64(seed) ^ a) ^ b)
}

/// FNV-1a of a string: a stable key for per-sample seeds and shard assignment (the
/// same in every version of mt, on every platform).
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Lower-case hexadecimal of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_spread() {
        assert_eq!(keyed(1, 2, 3), keyed(1, 2, 3));
        assert_ne!(keyed(1, 2, 3), keyed(1, 3, 2));
        assert_ne!(keyed(0, 0, 0), keyed(1, 0, 0));
        // Low bits are well mixed: roughly half of 1000 consecutive keys are odd.
        let odd = (0..1000).filter(|&i| keyed(9, 0, i) & 1 == 1).count();
        assert!((400..600).contains(&odd), "{odd}");
    }

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }
}
