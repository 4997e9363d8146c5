//! Text for people: names shortened to fit a column, and byte counts with units.

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub(crate) fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!(
            "{}…",
            s.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    }
}

/// `n` divided by `base` while it is at least `base` and a larger unit is left, with
/// the index of the unit reached.
fn scaled(n: f64, base: f64, units: usize) -> (f64, usize) {
    let (mut v, mut unit) = (n, 0);
    while v >= base && unit + 1 < units {
        v /= base;
        unit += 1;
    }
    (v, unit)
}

/// `812 B`, `1.5 KB`, `23.0 MB`, ... (decimal units).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    match scaled(n as f64, 1000.0, UNITS.len()) {
        (_, 0) => format!("{n} B"),
        (v, u) => format!("{v:.1} {}", UNITS[u]),
    }
}

/// `12 B`, `38.0 KiB`, `1.5 GiB`, `149 GiB` (binary units; no decimal from 100 up), for
/// sizes that may be far beyond any real file (a header's claim).
pub(crate) fn binary_bytes(n: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    match scaled(n, 1024.0, UNITS.len()) {
        (v, u) if u == 0 || v >= 100.0 => format!("{v:.0} {}", UNITS[u]),
        (v, u) => format!("{v:.1} {}", UNITS[u]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_in_both_unit_systems() {
        assert_eq!(human_bytes(812), "812 B");
        assert_eq!(human_bytes(1500), "1.5 KB");
        assert_eq!(human_bytes(23_000_000), "23.0 MB");
        assert_eq!(binary_bytes(12.0), "12 B");
        assert_eq!(binary_bytes(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5 GiB");
        assert_eq!(binary_bytes(1.6e11), "149 GiB");
    }

    #[test]
    fn long_names_end_in_an_ellipsis() {
        assert_eq!(ellipsize("abcdef", 6), "abcdef");
        assert_eq!(ellipsize("abcdefg", 6), "abcde…");
    }
}
