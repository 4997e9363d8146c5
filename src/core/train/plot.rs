//! Loss and learning-rate curves from `metrics.jsonl` as a PNG: stacked panels sharing
//! the step axis (loss, learning rate, grad norm when logged), drawn on an `image`
//! canvas with a built-in 5x7 bitmap font, so no font files or plotting crates are needed.
//!
//! Records without `"loss"` (evaluation and other records) are skipped, as is a last
//! line cut off by a crash. When a resumed run logs a step again, the new record replaces
//! the earlier ones from that step on, so the plot shows the trajectory that was kept.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor};
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Map, Value};

use crate::core::run::write_atomic;

const WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 260;
/// Below the bottom panel: its step tick labels and the axis name.
const X_AXIS_HEIGHT: u32 = 48;
const MARGIN_LEFT: i64 = 100;
const MARGIN_RIGHT: i64 = 24;
const TITLE_HEIGHT: i64 = 36;
const PANEL_PAD_BOTTOM: i64 = 12;
/// Gap between a panel's frame and the extreme data points.
const INSET: i64 = 4;
const FONT_SCALE: i64 = 2;
/// TensorBoard's default smoothing weight.
const SMOOTHING: f64 = 0.6;

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const GRID: Rgb<u8> = Rgb([234, 234, 234]);
const FRAME: Rgb<u8> = Rgb([190, 190, 190]);
const TEXT: Rgb<u8> = Rgb([40, 40, 40]);
const MUTED_TEXT: Rgb<u8> = Rgb([115, 115, 115]);
const LOSS_COLOR: Rgb<u8> = Rgb([31, 119, 180]);
const LR_COLOR: Rgb<u8> = Rgb([230, 110, 10]);
const GRAD_COLOR: Rgb<u8> = Rgb([44, 150, 44]);

/// Reads `metrics` (metrics.jsonl) and writes `out` (PNG): stacked panels sharing the step
/// axis — loss (raw points thin/light plus an exponential moving average line, like
/// TensorBoard smoothing 0.6), learning rate, and grad norm when present — each with a
/// title, y tick labels, x tick labels on the bottom panel, light grid lines.
pub fn plot_metrics(metrics: &Path, out: &Path) -> Result<()> {
    let steps = read_steps(metrics)?;
    let (Some(first), Some(last)) = (steps.first(), steps.last()) else {
        bail!("no training steps in {}", metrics.display());
    };
    let x_axis = Axis::new(first.step as f64, last.step as f64, 0.0, 6, 1.0);
    let series = |f: fn(&Step) -> Option<f64>| -> Vec<(f64, f64)> {
        steps
            .iter()
            .filter_map(|s| f(s).map(|v| (s.step as f64, v)))
            .collect()
    };
    let mut panels = vec![Panel {
        title: "loss",
        color: LOSS_COLOR,
        smooth: true,
        points: series(|s| s.loss),
    }];
    for (title, color, smooth, points) in [
        ("learning rate", LR_COLOR, false, series(|s| s.lr)),
        ("grad norm", GRAD_COLOR, true, series(|s| s.grad_norm)),
    ] {
        if !points.is_empty() {
            panels.push(Panel {
                title,
                color,
                smooth,
                points,
            });
        }
    }

    let height = panels.len() as u32 * PANEL_HEIGHT + X_AXIS_HEIGHT;
    let mut canvas = Canvas(RgbImage::from_pixel(WIDTH, height, BACKGROUND));
    for (i, panel) in panels.iter().enumerate() {
        let bottom = i + 1 == panels.len();
        panel.draw(&mut canvas, i as i64 * PANEL_HEIGHT as i64, &x_axis, bottom);
    }
    let name = "step";
    canvas.text(
        (WIDTH as i64 - text_width(name)) / 2,
        height as i64 - 7 * FONT_SCALE - 6,
        name,
        MUTED_TEXT,
    );

    let mut png = Vec::new();
    canvas
        .0
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .context("cannot encode the plot as PNG")?;
    write_atomic(out, &png)
}

/// One optimizer step's finite values (`None`: absent, null, NaN or infinite).
struct Step {
    step: u64,
    loss: Option<f64>,
    lr: Option<f64>,
    grad_norm: Option<f64>,
}

/// The training steps of `path` in step order (see the module doc for what is skipped).
fn read_steps(path: &Path) -> Result<Vec<Step>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut lines = BufReader::new(file).split(b'\n').enumerate().peekable();
    let mut steps: Vec<Step> = Vec::new();
    let mut malformed = Vec::new();
    while let Some((i, line)) = lines.next() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let Some(record) = parse_record(&line) else {
            // A cut last line is what a crash leaves behind; anything else is worth a warning.
            if lines.peek().is_some() {
                malformed.push(i + 1);
            }
            continue;
        };
        if !record.contains_key("loss") {
            continue;
        }
        let Some(step) = record.get("step").and_then(Value::as_u64) else {
            malformed.push(i + 1);
            continue;
        };
        let finite = |key| {
            record
                .get(key)
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
        };
        while steps.last().is_some_and(|s| s.step >= step) {
            steps.pop();
        }
        steps.push(Step {
            step,
            loss: finite("loss"),
            lr: finite("lr"),
            grad_norm: finite("grad_norm"),
        });
    }
    if let Some(first) = malformed.first() {
        tracing::warn!(
            "{}: skipped {} malformed line(s), the first at line {first}",
            path.display(),
            malformed.len()
        );
    }
    Ok(steps)
}

/// A JSON object from one line; bare `NaN`/`Infinity` (as Python's `json` writes them)
/// are read as null.
fn parse_record(line: &[u8]) -> Option<Map<String, Value>> {
    let value = serde_json::from_slice::<Value>(line).ok().or_else(|| {
        let text = std::str::from_utf8(line).ok()?;
        let text = text.replace("Infinity", "null").replace("NaN", "null");
        serde_json::from_str(&text).ok()
    })?;
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// TensorBoard's debiased exponential moving average with weight [`SMOOTHING`].
fn smooth(values: &[f64]) -> Vec<f64> {
    let (mut acc, mut weight) = (0.0, 1.0);
    values
        .iter()
        .map(|v| {
            acc = acc * SMOOTHING + (1.0 - SMOOTHING) * v;
            weight *= SMOOTHING;
            acc / (1.0 - weight)
        })
        .collect()
}

/// A value range with "nice" tick positions (1, 2 or 5 times a power of ten).
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    tick_step: f64,
    scientific: bool,
}

impl Axis {
    /// `lo..hi` widened by `pad` of its span on each side (a constant range gets ±10% of
    /// its value, or ±1 at zero), with about `target` ticks no closer than `min_step`.
    fn new(mut lo: f64, mut hi: f64, pad: f64, target: usize, min_step: f64) -> Self {
        let magnitude = lo.abs().max(hi.abs());
        if hi - lo <= magnitude * 1e-9 {
            let half = if magnitude > 0.0 {
                magnitude * 0.1
            } else {
                1.0
            };
            (lo, hi) = (lo - half, hi + half);
        } else {
            let margin = (hi - lo) * pad;
            (lo, hi) = (lo - margin, hi + margin);
        }
        let tick_step = nice_step((hi - lo) / target as f64).max(min_step);
        let ticks: Vec<f64> = if tick_step.is_finite() && tick_step > 0.0 {
            let (first, last) = ((lo / tick_step).ceil(), (hi / tick_step).floor());
            (first as i64..=last as i64)
                .take(4 * target)
                .map(|k| k as f64 * tick_step)
                .collect()
        } else {
            Vec::new()
        };
        let largest = ticks.iter().fold(0.0f64, |m, t| m.max(t.abs()));
        Self {
            lo,
            hi,
            ticks,
            tick_step,
            scientific: largest > 0.0 && !(1e-2..1e6).contains(&largest),
        }
    }

    /// `v`'s pixel between `from` (at `lo`) and `to` (at `hi`), clamped to that span.
    fn pixel(&self, v: f64, from: i64, to: i64) -> i64 {
        let t = (v - self.lo) / (self.hi - self.lo);
        let px = (from as f64 + t * (to - from) as f64).round() as i64;
        px.clamp(from.min(to), from.max(to))
    }

    /// A tick's label, with as many digits as the tick spacing needs.
    fn label(&self, tick: f64) -> String {
        let digits = (tick.abs().log10().floor() - (self.tick_step.log10() + 1e-9).floor())
            .clamp(0.0, 6.0) as usize;
        format_value(tick, digits + 1, self.scientific)
    }
}

/// The smallest 1, 2 or 5 times a power of ten that is about `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let nice = match raw / magnitude {
        n if n < 1.5 => 1.0,
        n if n < 3.0 => 2.0,
        n if n < 7.0 => 5.0,
        _ => 10.0,
    };
    nice * magnitude
}

/// `v` with 3 significant digits, `1e-5` style when small or large.
fn format_number(v: f64) -> String {
    let a = v.abs();
    format_value(v, 3, a > 0.0 && !(1e-2..1e6).contains(&a))
}

/// `v` with `significant` digits (whole numbers keep all theirs), trailing zeros dropped.
fn format_value(v: f64, significant: usize, scientific: bool) -> String {
    fn trim(s: &str) -> &str {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        }
    }
    if v == 0.0 {
        return "0".into();
    }
    let significant = significant.max(1);
    if scientific {
        let s = format!("{:.*e}", significant - 1, v);
        match s.split_once('e') {
            Some((mantissa, exponent)) => format!("{}e{exponent}", trim(mantissa)),
            None => s,
        }
    } else {
        let decimals = (significant as i64 - 1 - v.abs().log10().floor() as i64).max(0);
        let s = format!("{:.*}", decimals as usize, v);
        match trim(&s) {
            "-0" => "0".into(),
            t => t.into(),
        }
    }
}

/// One stacked panel: a series over steps.
struct Panel {
    title: &'static str,
    color: Rgb<u8>,
    /// Raw values drawn light under their moving average (otherwise one plain line).
    smooth: bool,
    points: Vec<(f64, f64)>,
}

impl Panel {
    /// Draws the panel whose top edge is at `top`; `bottom` adds the step tick labels.
    fn draw(&self, canvas: &mut Canvas, top: i64, x_axis: &Axis, bottom: bool) {
        let frame = Rect {
            x0: MARGIN_LEFT,
            y0: top + TITLE_HEIGHT,
            x1: WIDTH as i64 - MARGIN_RIGHT,
            y1: top + PANEL_HEIGHT as i64 - PANEL_PAD_BOTTOM,
        };
        let data = frame.inset(INSET);
        let values: Vec<f64> = self.points.iter().map(|p| p.1).collect();
        let smoothed = self.smooth.then(|| smooth(&values));
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        let y_axis = if lo <= hi {
            Axis::new(lo, hi, 0.05, 4, 0.0)
        } else {
            Axis::new(0.0, 1.0, 0.0, 4, 0.0)
        };
        let glyph_height = 7 * FONT_SCALE;

        for &tick in &y_axis.ticks {
            let y = y_axis.pixel(tick, data.y1, data.y0);
            canvas.fill(
                &Rect {
                    y0: y,
                    y1: y,
                    ..frame
                },
                GRID,
            );
            let label = y_axis.label(tick);
            let x = frame.x0 - 8 - text_width(&label);
            canvas.text(x, y - glyph_height / 2, &label, MUTED_TEXT);
        }
        for &tick in &x_axis.ticks {
            let x = x_axis.pixel(tick, data.x0, data.x1);
            canvas.fill(
                &Rect {
                    x0: x,
                    x1: x,
                    ..frame
                },
                GRID,
            );
            if bottom {
                let label = x_axis.label(tick);
                let left = (x - text_width(&label) / 2).clamp(0, WIDTH as i64 - text_width(&label));
                canvas.text(left, frame.y1 + 8, &label, MUTED_TEXT);
            }
        }
        canvas.outline(&frame, FRAME);

        let to_pixels = |ys: &[f64]| -> Vec<(i64, i64)> {
            self.points
                .iter()
                .zip(ys)
                .map(|(p, y)| {
                    let x = x_axis.pixel(p.0, data.x0, data.x1);
                    (x, y_axis.pixel(*y, data.y1, data.y0))
                })
                .collect()
        };
        let clip = frame.inset(1);
        let last = match &smoothed {
            Some(ema) => {
                canvas.polyline(&to_pixels(&values), 1, &clip, faded(self.color));
                canvas.polyline(&to_pixels(ema), 2, &clip, self.color);
                values.last().zip(ema.last()).map(|(v, s)| {
                    format!("last {}  smoothed {}", format_number(*v), format_number(*s))
                })
            }
            None => {
                canvas.polyline(&to_pixels(&values), 2, &clip, self.color);
                values.last().map(|v| format!("last {}", format_number(*v)))
            }
        };

        let title_y = top + (TITLE_HEIGHT - glyph_height) / 2;
        canvas.text(frame.x0, title_y, self.title, TEXT);
        let note = last.unwrap_or_else(|| "no finite values".into());
        canvas.text(frame.x1 - text_width(&note), title_y, &note, MUTED_TEXT);
    }
}

/// `color` blended 70% towards the background: the look of raw points under their average.
fn faded(color: Rgb<u8>) -> Rgb<u8> {
    Rgb(color.0.map(|c| (c as u32 * 3 / 10 + 255 * 7 / 10) as u8))
}

/// Inclusive pixel bounds.
#[derive(Clone, Copy)]
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    fn inset(&self, by: i64) -> Rect {
        Rect {
            x0: self.x0 + by,
            y0: self.y0 + by,
            x1: self.x1 - by,
            y1: self.y1 - by,
        }
    }

    fn contains(&self, x: i64, y: i64) -> bool {
        (self.x0..=self.x1).contains(&x) && (self.y0..=self.y1).contains(&y)
    }
}

/// The image being drawn; every primitive clips to the image bounds.
struct Canvas(RgbImage);

impl Canvas {
    fn fill(&mut self, r: &Rect, color: Rgb<u8>) {
        let (w, h) = (self.0.width() as i64, self.0.height() as i64);
        for y in r.y0.max(0)..=r.y1.min(h - 1) {
            for x in r.x0.max(0)..=r.x1.min(w - 1) {
                self.0.put_pixel(x as u32, y as u32, color);
            }
        }
    }

    fn outline(&mut self, r: &Rect, color: Rgb<u8>) {
        self.fill(&Rect { y1: r.y0, ..*r }, color);
        self.fill(&Rect { y0: r.y1, ..*r }, color);
        self.fill(&Rect { x1: r.x0, ..*r }, color);
        self.fill(&Rect { x0: r.x1, ..*r }, color);
    }

    /// A `size`-pixel square pen at `(x, y)`, clipped to `clip`.
    fn dot(&mut self, x: i64, y: i64, size: i64, clip: &Rect, color: Rgb<u8>) {
        let x0 = x - (size - 1) / 2;
        let y0 = y - (size - 1) / 2;
        let pen = Rect {
            x0: x0.max(clip.x0),
            y0: y0.max(clip.y0),
            x1: (x0 + size - 1).min(clip.x1),
            y1: (y0 + size - 1).min(clip.y1),
        };
        self.fill(&pen, color);
    }

    /// Straight segments through `points` (Bresenham) with a `width`-pixel pen; a single
    /// point gets a marker so it stays visible.
    fn polyline(&mut self, points: &[(i64, i64)], width: i64, clip: &Rect, color: Rgb<u8>) {
        if let [(x, y)] = points {
            self.dot(*x, *y, width + 4, clip, color);
        }
        for pair in points.windows(2) {
            let ((mut x, mut y), (x1, y1)) = (pair[0], pair[1]);
            let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
            let (sx, sy) = ((x1 - x).signum(), (y1 - y).signum());
            let mut err = dx + dy;
            loop {
                if clip.contains(x, y) {
                    self.dot(x, y, width, clip, color);
                }
                if (x, y) == (x1, y1) {
                    break;
                }
                let e2 = 2 * err;
                if e2 >= dy {
                    err += dy;
                    x += sx;
                }
                if e2 <= dx {
                    err += dx;
                    y += sy;
                }
            }
        }
    }

    /// `text` with its top-left corner at `(x, y)`, in the built-in font at [`FONT_SCALE`].
    fn text(&mut self, x: i64, y: i64, text: &str, color: Rgb<u8>) {
        for (i, c) in text.chars().map(|c| c.to_ascii_lowercase()).enumerate() {
            let Some((_, rows)) = GLYPHS.iter().find(|g| g.0 == c) else {
                continue;
            };
            let left = x + i as i64 * ADVANCE * FONT_SCALE;
            let top = y + if DESCENDERS.contains(c) {
                2 * FONT_SCALE
            } else {
                0
            };
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        let (px, py) = (left + col * FONT_SCALE, top + row as i64 * FONT_SCALE);
                        let cell = Rect {
                            x0: px,
                            y0: py,
                            x1: px + FONT_SCALE - 1,
                            y1: py + FONT_SCALE - 1,
                        };
                        self.fill(&cell, color);
                    }
                }
            }
        }
    }
}

/// Glyphs that reach below the baseline.
const DESCENDERS: &str = "gpqy";

/// Glyph width plus spacing, in font pixels.
const ADVANCE: i64 = 6;

/// Pixel width of `text` drawn by [`Canvas::text`].
fn text_width(text: &str) -> i64 {
    (text.chars().count() as i64 * ADVANCE - 1).max(0) * FONT_SCALE
}

/// 5x7 glyphs, one row per byte, the leftmost pixel in bit 4. Upper case is drawn as
/// lower case; characters not listed are drawn as spaces. [`DESCENDERS`] are drawn two
/// rows lower, their first row on the x-height.
#[rustfmt::skip]
const GLYPHS: [(char, [u8; 7]); 44] = [
    ('0', [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110]),
    ('1', [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
    ('2', [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111]),
    ('3', [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110]),
    ('4', [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010]),
    ('5', [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110]),
    ('6', [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110]),
    ('7', [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000]),
    ('8', [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110]),
    ('9', [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100]),
    ('.', [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100]),
    ('-', [0b00000, 0b00000, 0b00000, 0b01110, 0b00000, 0b00000, 0b00000]),
    ('+', [0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000]),
    ('(', [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010]),
    (')', [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000]),
    (':', [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000]),
    ('_', [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111]),
    ('/', [0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000]),
    ('a', [0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111]),
    ('b', [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110]),
    ('c', [0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110]),
    ('d', [0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111]),
    ('e', [0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110]),
    ('f', [0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000]),
    ('g', [0b01111, 0b10001, 0b10001, 0b10011, 0b01101, 0b00001, 0b01110]),
    ('h', [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001]),
    ('i', [0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110]),
    ('j', [0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b10010, 0b01100]),
    ('k', [0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010]),
    ('l', [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
    ('m', [0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001]),
    ('n', [0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001]),
    ('o', [0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110]),
    ('p', [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000]),
    ('q', [0b01111, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001, 0b00001]),
    ('r', [0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000]),
    ('s', [0b00000, 0b00000, 0b01110, 0b10000, 0b01110, 0b00001, 0b11110]),
    ('t', [0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110]),
    ('u', [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101]),
    ('v', [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100]),
    ('w', [0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010]),
    ('x', [0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001]),
    ('y', [0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b10001, 0b01110]),
    ('z', [0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("metrics.jsonl");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Plots `text` as metrics.jsonl and decodes the PNG.
    fn render(text: &str) -> RgbImage {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plot.png");
        plot_metrics(&write(dir.path(), text), &out).unwrap();
        image::open(&out).unwrap().to_rgb8()
    }

    fn lines(n: u64, record: impl Fn(u64) -> String) -> String {
        (0..n).map(|i| record(i) + "\n").collect()
    }

    /// Pixels of `color` in the part of panel `panel`'s frame between the fractions
    /// `fx` (left to right) and `fy` (top to bottom).
    fn count(img: &RgbImage, panel: i64, fx: (f64, f64), fy: (f64, f64), color: Rgb<u8>) -> usize {
        let top = panel * PANEL_HEIGHT as i64;
        let (x0, x1) = (MARGIN_LEFT, WIDTH as i64 - MARGIN_RIGHT);
        let (y0, y1) = (
            top + TITLE_HEIGHT,
            top + PANEL_HEIGHT as i64 - PANEL_PAD_BOTTOM,
        );
        let at = |lo: i64, hi: i64, f: f64| lo + ((hi - lo) as f64 * f).round() as i64;
        let mut n = 0;
        for y in at(y0, y1, fy.0)..=at(y0, y1, fy.1) {
            for x in at(x0, x1, fx.0)..=at(x0, x1, fx.1) {
                n += usize::from(*img.get_pixel(x as u32, y as u32) == color);
            }
        }
        n
    }

    fn falling(i: u64) -> String {
        let loss = 3.0 - 2.5 * i as f64 / 99.0;
        let lr = 1e-4 * (1.0 - i as f64 / 100.0);
        format!(
            r#"{{"step":{},"loss":{loss},"lr":{lr},"grad_norm":{}}}"#,
            i + 1,
            1.0 + (i % 7) as f64
        )
    }

    #[test]
    fn falling_loss_runs_from_upper_left_to_lower_right() {
        let img = render(&lines(100, falling));
        assert_eq!(img.dimensions(), (WIDTH, 3 * PANEL_HEIGHT + X_AXIS_HEIGHT));
        let (start, end, all) = ((0.0, 0.1), (0.9, 1.0), (0.0, 1.0));
        assert!(
            count(&img, 0, start, (0.0, 0.15), LOSS_COLOR) > 0,
            "first point"
        );
        assert!(
            count(&img, 0, end, (0.85, 1.0), LOSS_COLOR) > 0,
            "last point"
        );
        assert_eq!(count(&img, 0, (0.8, 1.0), (0.0, 0.4), LOSS_COLOR), 0);
        assert_eq!(count(&img, 0, (0.0, 0.2), (0.6, 1.0), LOSS_COLOR), 0);
        assert!(
            count(&img, 0, all, all, faded(LOSS_COLOR)) > 0,
            "raw points"
        );
        // The learning rate falls linearly too; grad norm gets its own panel.
        assert!(count(&img, 1, start, (0.0, 0.15), LR_COLOR) > 0);
        assert!(count(&img, 1, end, (0.85, 1.0), LR_COLOR) > 0);
        assert!(count(&img, 2, all, all, GRAD_COLOR) > 0);
        assert_eq!(count(&img, 0, all, all, LR_COLOR), 0);
    }

    #[test]
    fn panels_follow_the_logged_fields() {
        let without_grad = lines(20, |i| {
            let eval = format!(r#"{{"step":{i},"eval_loss":9.0}}"#);
            format!("{eval}\n{{\"step\":{i},\"loss\":1.5,\"lr\":0.001,\"epoch\":0.1}}")
        });
        let img = render(&without_grad);
        assert_eq!(img.height(), 2 * PANEL_HEIGHT + X_AXIS_HEIGHT);
        assert!(count(&img, 1, (0.0, 1.0), (0.0, 1.0), LR_COLOR) > 0);
        let loss_only = render(&lines(5, |i| format!(r#"{{"step":{i},"loss":2.0}}"#)));
        assert_eq!(loss_only.height(), PANEL_HEIGHT + X_AXIS_HEIGHT);
    }

    #[test]
    fn no_training_steps_is_an_error_naming_the_file() {
        for text in ["", "\n  \n", "{\"step\":1,\"eval_loss\":2.0}\n"] {
            let dir = tempfile::tempdir().unwrap();
            let metrics = write(dir.path(), text);
            let err = plot_metrics(&metrics, &dir.path().join("p.png")).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("no training steps"), "{msg}");
            assert!(msg.contains(&metrics.display().to_string()), "{msg}");
            assert!(!dir.path().join("p.png").exists());
        }
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let text = [
            r#"{"step":1,"loss":3.0,"lr":null}"#,
            r#"{"step":2,"loss":null,"lr":NaN,"grad_norm":Infinity}"#,
            r#"{"step":3,"loss":NaN,"lr":1e-5,"grad_norm":-Infinity}"#,
            r#"{"step":4,"loss":"inf","lr":2e-5}"#,
            r#"{"step":5,"loss":1.0,"lr":3e-5}"#,
        ]
        .join("\n");
        let img = render(&text);
        assert_eq!(
            img.height(),
            2 * PANEL_HEIGHT + X_AXIS_HEIGHT,
            "no grad norm panel"
        );
        assert!(count(&img, 0, (0.0, 0.1), (0.0, 0.15), LOSS_COLOR) > 0);
        // Two finite losses: the raw line reaches the last one, the average lags behind.
        assert!(count(&img, 0, (0.9, 1.0), (0.85, 1.0), faded(LOSS_COLOR)) > 0);
        // Only non-finite losses: the panel stays empty but the plot is still written.
        let img = render("{\"step\":1,\"loss\":NaN}\n{\"step\":2,\"loss\":null}\n");
        assert_eq!(count(&img, 0, (0.0, 1.0), (0.0, 1.0), LOSS_COLOR), 0);
    }

    #[test]
    fn a_cut_last_line_is_ignored() {
        let complete = lines(30, falling);
        let cut = format!("{complete}{{\"step\":31,\"loss\":0.4,\"l");
        assert_eq!(render(&cut), render(&complete));
    }

    #[test]
    fn single_points_and_constant_series_are_visible() {
        let img = render(r#"{"step":7,"loss":0.5,"lr":2e-5,"grad_norm":1.0}"#);
        assert!(count(&img, 0, (0.4, 0.6), (0.4, 0.6), LOSS_COLOR) > 0);
        assert!(count(&img, 1, (0.4, 0.6), (0.4, 0.6), LR_COLOR) > 0);
        let img = render(&lines(50, |i| {
            format!(r#"{{"step":{i},"loss":0.0,"lr":1e-4}}"#)
        }));
        for fx in [(0.0, 0.05), (0.45, 0.55), (0.95, 1.0)] {
            assert!(count(&img, 0, fx, (0.45, 0.55), LOSS_COLOR) > 0);
            assert!(count(&img, 1, fx, (0.45, 0.55), LR_COLOR) > 0);
        }
        assert_eq!(count(&img, 0, (0.0, 1.0), (0.0, 0.4), LOSS_COLOR), 0);
    }

    #[test]
    fn a_resumed_run_replaces_the_steps_it_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let first = lines(10, |i| format!(r#"{{"step":{i},"loss":5.0}}"#));
        let again = lines(6, |i| format!(r#"{{"step":{},"loss":1.0}}"#, i + 6));
        let steps = read_steps(&write(dir.path(), &(first + &again))).unwrap();
        let got: Vec<(u64, Option<f64>)> = steps.iter().map(|s| (s.step, s.loss)).collect();
        let want: Vec<(u64, Option<f64>)> = (0..12)
            .map(|i| (i, Some(if i < 6 { 5.0 } else { 1.0 })))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn numbers_are_compact() {
        let cases = [
            (2e-5, "2e-5"),
            (1.2345e-4, "1.23e-4"),
            (0.41234, "0.412"),
            (1.0, "1"),
            (-0.5, "-0.5"),
            (12.345, "12.3"),
            (1234.6, "1235"),
            (2.5e7, "2.5e7"),
            (0.0, "0"),
        ];
        for (v, want) in cases {
            assert_eq!(format_number(v), want, "{v}");
        }
        let lr = Axis::new(0.0, 2e-5, 0.0, 4, 0.0);
        let labels: Vec<String> = lr.ticks.iter().map(|t| lr.label(*t)).collect();
        assert_eq!(labels, ["0", "5e-6", "1e-5", "1.5e-5", "2e-5"]);
        let loss = Axis::new(1.2341, 1.2359, 0.0, 4, 0.0);
        let labels: Vec<String> = loss.ticks.iter().map(|t| loss.label(*t)).collect();
        assert_eq!(labels, ["1.2345", "1.235", "1.2355"]);
        let steps = Axis::new(0.0, 300.0, 0.0, 6, 1.0);
        let labels: Vec<String> = steps.ticks.iter().map(|t| steps.label(*t)).collect();
        assert_eq!(labels, ["0", "50", "100", "150", "200", "250", "300"]);
    }

    #[test]
    fn the_png_replaces_the_old_one_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = write(dir.path(), &lines(10, falling));
        let out = dir.path().join("loss.png");
        std::fs::write(&out, b"old").unwrap();
        plot_metrics(&metrics, &out).unwrap();
        assert_eq!(image::open(&out).unwrap().width(), WIDTH);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["loss.png", "metrics.jsonl"]);
    }
}
