//! Intensity mapping: DICOM VOI windows (PS3.3 C.11.2.1.2), percentile ranges, and the
//! quantisation of mapped values to 8- or 16-bit grey levels.

use serde::Serialize;

/// The VOI LUT function of a window (DICOM VOILUTFunction, 0028,1056).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VoiFunction {
    /// PS3.3 C.11.2.1.2.1, the default.
    Linear,
    /// PS3.3 C.11.2.1.3.2.
    LinearExact,
    /// PS3.3 C.11.2.1.3.1.
    Sigmoid,
}

/// A window centre and width with its function.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    /// Window centre, in modality values (DICOM WindowCenter, 0028,1050).
    pub center: f64,
    /// Window width, in modality values (DICOM WindowWidth, 0028,1051).
    pub width: f64,
    /// How values inside the window map to grey levels.
    pub function: VoiFunction,
}

impl Window {
    /// A LINEAR window.
    pub(crate) fn linear(center: f64, width: f64) -> Self {
        Self {
            center,
            width,
            function: VoiFunction::Linear,
        }
    }

    /// The LINEAR window that maps `min` to black and `max` to white exactly
    /// (centre `(min + max + 1) / 2`, width `max - min + 1`, as DCMTK's min-max window).
    pub(crate) fn min_max(min: f64, max: f64) -> Self {
        Self::linear((min + max + 1.0) / 2.0, max - min + 1.0)
    }

    /// Whether the standard allows this window (LINEAR needs width >= 1, the others > 0).
    pub(crate) fn is_valid(&self) -> bool {
        let finite = self.center.is_finite() && self.width.is_finite();
        finite
            && match self.function {
                VoiFunction::Linear => self.width >= 1.0,
                VoiFunction::LinearExact | VoiFunction::Sigmoid => self.width > 0.0,
            }
    }

    /// Maps a modality value to [0, 1] (the standard's formulas with ymin 0, ymax 1).
    pub(crate) fn map(&self, x: f64) -> f64 {
        let (c, w) = (self.center, self.width);
        match self.function {
            VoiFunction::Linear => {
                if x <= c - 0.5 - (w - 1.0) / 2.0 {
                    0.0
                } else if x > c - 0.5 + (w - 1.0) / 2.0 {
                    1.0
                } else {
                    (x - (c - 0.5)) / (w - 1.0) + 0.5
                }
            }
            VoiFunction::LinearExact => {
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    1.0
                } else {
                    (x - c) / w + 0.5
                }
            }
            VoiFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / w).exp()),
        }
    }
}

/// How values become grey levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mapping {
    /// A DICOM VOI window.
    Window(Window),
    /// Linear from `lo` (black) to `hi` (white), clipped outside.
    Range { lo: f64, hi: f64 },
}

impl Mapping {
    /// Maps a value to [0, 1]; NaN maps to 0.
    pub(crate) fn map(&self, x: f64) -> f64 {
        if x.is_nan() {
            return 0.0;
        }
        match *self {
            Self::Window(w) => w.map(x),
            Self::Range { lo, hi } if hi > lo => ((x - lo) / (hi - lo)).clamp(0.0, 1.0),
            Self::Range { lo, .. } => f64::from(u8::from(x > lo)),
        }
    }
}

/// Output sample depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Depth {
    /// 8 bits per sample (256 grey levels).
    #[serde(rename = "8")]
    Eight,
    /// 16 bits per sample (65536 grey levels; PNG only).
    #[serde(rename = "16")]
    Sixteen,
}

/// Levels at one depth, row-major (grey, or interleaved RGB).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Levels {
    Eight(Vec<u8>),
    Sixteen(Vec<u16>),
}

/// Maps `values` through `mapping` (inverted for MONOCHROME1 when `invert`) and rounds
/// to the nearest level of `depth`.
pub(crate) fn quantize(values: &[f64], mapping: &Mapping, invert: bool, depth: Depth) -> Levels {
    let level = |x: f64| {
        let y = mapping.map(x);
        if invert { 1.0 - y } else { y }
    };
    match depth {
        Depth::Eight => Levels::Eight(
            values
                .iter()
                .map(|&x| (level(x) * 255.0).round() as u8)
                .collect(),
        ),
        Depth::Sixteen => Levels::Sixteen(
            values
                .iter()
                .map(|&x| (level(x) * 65535.0).round() as u16)
                .collect(),
        ),
    }
}

/// The smallest and largest finite values, or None when there are none.
pub(crate) fn finite_min_max(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Percentiles (0..=100) of the finite values, with numpy's default definition
/// (`method="linear"`: position `q/100 * (n-1)` in the sorted values, interpolated).
/// Reorders `values`; None when there are no finite values.
pub(crate) fn percentiles(values: &mut Vec<f64>, qs: &[f64]) -> Option<Vec<f64>> {
    values.retain(|v| v.is_finite());
    let n = values.len();
    if n == 0 {
        return None;
    }
    let out = qs
        .iter()
        .map(|q| {
            let pos = q.clamp(0.0, 100.0) / 100.0 * (n - 1) as f64;
            let k = pos.floor() as usize;
            let frac = pos - k as f64;
            let (_, &mut below, above) = values.select_nth_unstable_by(k, f64::total_cmp);
            let next = above.iter().copied().fold(f64::INFINITY, f64::min);
            if frac > 0.0 && next.is_finite() {
                below + frac * (next - below)
            } else {
                below
            }
        })
        .collect();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window_follows_the_standard() {
        // c = 40, w = 400: black at <= -160, white above 239, linear between.
        let w = Window::linear(40.0, 400.0);
        assert_eq!(w.map(-160.0), 0.0);
        assert_eq!(w.map(-1000.0), 0.0);
        assert_eq!(w.map(239.5), 1.0);
        let mid = w.map(39.5);
        assert!((mid - 0.5).abs() < 1e-12, "{mid}");
        assert!(((w.map(100.0)) - ((100.0 - 39.5) / 399.0 + 0.5)).abs() < 1e-12);
    }

    #[test]
    fn width_one_is_a_threshold_without_division() {
        let w = Window::linear(10.0, 1.0);
        assert!(w.is_valid());
        assert_eq!(w.map(9.5), 0.0);
        assert_eq!(w.map(9.6), 1.0);
        assert!(!Window::linear(10.0, 0.5).is_valid());
    }

    #[test]
    fn min_max_window_spans_the_range_exactly() {
        let w = Window::min_max(-1024.0, 3071.0);
        assert_eq!(w.map(-1024.0), 0.0);
        assert_eq!(w.map(3071.0), 1.0);
        let binary = Window::min_max(0.0, 1.0);
        assert_eq!((binary.map(0.0), binary.map(1.0)), (0.0, 1.0));
    }

    #[test]
    fn other_functions() {
        let exact = Window {
            function: VoiFunction::LinearExact,
            ..Window::linear(0.0, 100.0)
        };
        assert_eq!(exact.map(-50.0), 0.0);
        assert_eq!(exact.map(0.0), 0.5);
        assert_eq!(exact.map(51.0), 1.0);
        let sigmoid = Window {
            function: VoiFunction::Sigmoid,
            ..exact
        };
        assert_eq!(sigmoid.map(0.0), 0.5);
        assert!(sigmoid.map(100.0) > 0.98);
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        // np.percentile([1, 2, 3, 4, 10], [0, 25, 50, 90, 99.5, 100])
        let mut v = vec![10.0, 3.0, f64::NAN, 1.0, 4.0, 2.0];
        let p = percentiles(&mut v, &[0.0, 25.0, 50.0, 90.0, 99.5, 100.0]).unwrap();
        let want = [1.0, 2.0, 3.0, 7.6, 9.88, 10.0];
        for (got, want) in p.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{p:?}");
        }
        assert!(percentiles(&mut vec![f64::NAN], &[50.0]).is_none());
    }

    #[test]
    fn quantize_rounds_inverts_and_handles_flat_ranges() {
        let m = Mapping::Range { lo: 0.0, hi: 10.0 };
        assert_eq!(
            quantize(&[-1.0, 5.0, 10.0, f64::NAN], &m, false, Depth::Eight),
            Levels::Eight(vec![0, 128, 255, 0])
        );
        assert_eq!(
            quantize(&[0.0, 10.0], &m, true, Depth::Sixteen),
            Levels::Sixteen(vec![65535, 0])
        );
        let flat = Mapping::Range { lo: 3.0, hi: 3.0 };
        assert_eq!(
            quantize(&[3.0, 4.0], &flat, false, Depth::Eight),
            Levels::Eight(vec![0, 255])
        );
        assert_eq!(finite_min_max([2.0, f64::NAN, -1.0]), Some((-1.0, 2.0)));
    }
}
