//! Mergeable summaries with bounded memory: integer distributions with exact quantiles
//! (below 65536; three significant digits above) and capped value counts.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

const DENSE: usize = 1 << 16;

/// A distribution of non-negative integers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dist {
    dense: Vec<u64>,
    sparse: BTreeMap<u64, u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

/// Summary statistics of a [`Dist`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct DistSummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub median: u64,
    pub p95: u64,
    pub max: u64,
    pub histogram: Vec<Bin>,
}

/// One histogram bin: values in `lo..hi` (the last bin includes `hi`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Bin {
    pub lo: u64,
    pub hi: u64,
    pub count: u64,
}

/// Keeps three significant digits of large values.
fn bucket(v: u64) -> u64 {
    let mut scale = 1;
    while v / scale >= 1000 {
        scale *= 10;
    }
    (v / scale) * scale
}

impl Dist {
    /// Adds one value.
    #[inline]
    pub(crate) fn add(&mut self, v: u64) {
        if (v as usize) < DENSE {
            if self.dense.len() <= v as usize {
                self.dense
                    .resize((v as usize + 1).next_power_of_two().min(DENSE), 0);
            }
            self.dense[v as usize] += 1;
        } else {
            *self.sparse.entry(bucket(v)).or_default() += 1;
        }
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += 1;
        self.sum += u128::from(v);
    }

    /// Adds everything in `other`.
    pub(crate) fn merge(&mut self, other: &Dist) {
        if other.count == 0 {
            return;
        }
        if self.dense.len() < other.dense.len() {
            self.dense.resize(other.dense.len(), 0);
        }
        for (a, b) in self.dense.iter_mut().zip(&other.dense) {
            *a += b;
        }
        for (k, v) in &other.sparse {
            *self.sparse.entry(*k).or_default() += v;
        }
        self.min = if self.count == 0 {
            other.min
        } else {
            self.min.min(other.min)
        };
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum += other.sum;
    }

    fn values(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let dense = self
            .dense
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(v, c)| (v as u64, *c));
        dense.chain(self.sparse.iter().map(|(v, c)| (*v, *c)))
    }

    /// The smallest value with at least `q` of the values at or below it (nearest rank).
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (v, c) in self.values() {
            seen += c;
            if seen >= rank {
                return v.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// About `bins` equal-width bins with round edges covering min..=max.
    pub(crate) fn histogram(&self, bins: usize) -> Vec<Bin> {
        if self.count == 0 {
            return Vec::new();
        }
        let width = nice_width((self.max - self.min) as f64 / bins.max(1) as f64);
        let lo = self.min / width * width;
        let n = ((self.max - lo) / width + 1) as usize;
        let mut out: Vec<Bin> = (0..n as u64)
            .map(|i| Bin {
                lo: lo + i * width,
                hi: lo + (i + 1) * width,
                count: 0,
            })
            .collect();
        for (v, c) in self.values() {
            let i = (((v - lo) / width) as usize).min(n - 1);
            out[i].count += c;
        }
        out
    }

    /// The summary with a histogram of about `bins` bins.
    pub(crate) fn summary(&self, bins: usize) -> DistSummary {
        DistSummary {
            count: self.count,
            min: self.min,
            mean: if self.count == 0 {
                0.0
            } else {
                self.sum as f64 / self.count as f64
            },
            median: self.quantile(0.5),
            p95: self.quantile(0.95),
            max: self.max,
            histogram: self.histogram(bins),
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw` (and at least 1).
fn nice_width(raw: f64) -> u64 {
    if raw <= 1.0 {
        return 1;
    }
    let pow = 10f64.powi(raw.log10().floor() as i32);
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|w| *w >= raw)
        .unwrap_or(10.0 * pow);
    step as u64
}

/// Value counts that stop tracking new values past a cap (counted as `untracked`).
#[derive(Debug, Clone)]
pub(crate) struct Counter {
    counts: HashMap<String, u64>,
    cap: usize,
    untracked: u64,
}

/// One value and how often it occurred.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ValueCount {
    pub value: String,
    pub count: u64,
}

/// The most common values of a [`Counter`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct CounterSummary {
    pub distinct: usize,
    pub top: Vec<ValueCount>,
    /// Occurrences of values first seen after the cap was reached.
    pub untracked: u64,
}

impl Counter {
    /// Tracks at most `cap` distinct values.
    pub(crate) fn new(cap: usize) -> Self {
        Counter {
            counts: HashMap::new(),
            cap,
            untracked: 0,
        }
    }

    /// Counts one occurrence of `value`.
    #[inline]
    pub(crate) fn add(&mut self, value: &str) {
        self.add_n(value, 1);
    }

    fn add_n(&mut self, value: &str, n: u64) {
        if let Some(c) = self.counts.get_mut(value) {
            *c += n;
        } else if self.counts.len() < self.cap {
            self.counts.insert(value.to_string(), n);
        } else {
            self.untracked += n;
        }
    }

    /// Adds everything in `other`.
    pub(crate) fn merge(&mut self, other: &Counter) {
        let mut items: Vec<_> = other.counts.iter().collect();
        items.sort();
        for (v, c) in items {
            self.add_n(v, *c);
        }
        self.untracked += other.untracked;
    }

    /// Total occurrences.
    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.counts.values().sum::<u64>() + self.untracked
    }

    /// The `k` most common values (ties by value).
    pub(crate) fn summary(&self, k: usize) -> CounterSummary {
        let mut all: Vec<_> = self
            .counts
            .iter()
            .map(|(v, c)| ValueCount {
                value: v.clone(),
                count: *c,
            })
            .collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        all.truncate(k);
        CounterSummary {
            distinct: self.counts.len(),
            top: all,
            untracked: self.untracked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_exact_for_small_values() {
        let mut d = Dist::default();
        for v in [5, 1, 3, 2, 4, 100, 7, 6, 9, 8] {
            d.add(v);
        }
        let s = d.summary(10);
        assert_eq!((s.count, s.min, s.max), (10, 1, 100));
        assert_eq!(s.median, 5);
        assert_eq!(s.p95, 100);
        assert!((s.mean - 14.5).abs() < 1e-9);
        assert_eq!(s.histogram.iter().map(|b| b.count).sum::<u64>(), 10);
        assert_eq!(
            s.histogram[0],
            Bin {
                lo: 0,
                hi: 10,
                count: 9
            }
        );
    }

    #[test]
    fn merging_equals_adding_everything_once() {
        let (mut a, mut b, mut all) = (Dist::default(), Dist::default(), Dist::default());
        for v in 0..5000u64 {
            let x = v * v % 70_001 + v * 1000;
            if v % 2 == 0 {
                a.add(x)
            } else {
                b.add(x)
            }
            all.add(x);
        }
        a.merge(&b);
        assert_eq!(a.summary(20), all.summary(20));
        // Large values keep three significant digits.
        assert_eq!(bucket(123_456), 123_000);
        assert_eq!(bucket(999), 999);
    }

    #[test]
    fn empty_dists_and_nice_widths() {
        let s = Dist::default().summary(10);
        assert_eq!((s.count, s.median, s.histogram.len()), (0, 0, 0));
        assert_eq!(nice_width(0.3), 1);
        assert_eq!(nice_width(13.0), 20);
        assert_eq!(nice_width(450.0), 500);
    }

    #[test]
    fn counters_cap_distinct_values() {
        let mut c = Counter::new(2);
        for v in ["ct", "mri", "ct", "pet", "ct"] {
            c.add(v);
        }
        let s = c.summary(10);
        assert_eq!(
            s.top,
            vec![
                ValueCount {
                    value: "ct".into(),
                    count: 3
                },
                ValueCount {
                    value: "mri".into(),
                    count: 1
                }
            ]
        );
        assert_eq!(s.untracked, 1);
        assert_eq!(c.total(), 5);
    }
}
