//! Loss and learning-rate curves from `metrics.jsonl` as a PNG: stacked plotters panels
//! sharing the step axis (loss, learning rate, grad norm when logged).
//!
//! Records without `"loss"` (evaluation and other records) are skipped, as is a last
//! line cut off by a crash. When a resumed run logs a step again, the new record replaces
//! the earlier ones from that step on, so the plot shows the trajectory that was kept.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor};
use std::ops::Range;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use image::ImageFormat;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::{Map, Value};

use crate::core::files::write_atomic;
use crate::core::plotting::{self, Area, FONT, plot_err};

const WIDTH: u32 = 1200;
const PANEL_HEIGHT: u32 = 300;
/// Below the bottom panel's frame: its step tick labels and the axis name.
const X_AXIS_HEIGHT: u32 = 64;
const MARGIN_LEFT: u32 = 16;
/// Room for the y tick labels, left of each frame.
const Y_LABELS: u32 = 92;
const MARGIN_RIGHT: u32 = 32;
const TITLE_HEIGHT: u32 = 48;
const PANEL_PAD_BOTTOM: u32 = 16;
/// TensorBoard's default smoothing weight.
const SMOOTHING: f64 = 0.6;
/// Opacity of the raw values under their moving average.
const RAW_ALPHA: f64 = 0.3;

const GRID: RGBColor = RGBColor(232, 232, 232);
const FRAME: RGBColor = RGBColor(170, 170, 170);
const TEXT: RGBColor = RGBColor(30, 30, 30);
const MUTED_TEXT: RGBColor = RGBColor(100, 100, 100);
const LOSS_COLOR: RGBColor = RGBColor(31, 119, 180);
const LR_COLOR: RGBColor = RGBColor(230, 110, 10);
const GRAD_COLOR: RGBColor = RGBColor(44, 150, 44);

/// Reads `metrics` (metrics.jsonl) and writes `out` (PNG): stacked panels sharing the step
/// axis — loss (raw values thin and light under a debiased exponential moving average
/// line, like TensorBoard smoothing 0.6), learning rate, and grad norm (smoothed like the
/// loss) when present — each titled with its last values, over light grid lines.
pub(crate) fn plot_metrics(metrics: &Path, out: &Path) -> Result<()> {
    let steps = read_steps(metrics)?;
    let (Some(first), Some(last)) = (steps.first(), steps.last()) else {
        bail!("no training steps in {}", metrics.display());
    };
    let (lo, hi) = (first.step as i64, last.step as i64);
    let x_range = if lo < hi { lo..hi } else { lo - 1..hi + 1 };
    let series = |f: fn(&Step) -> Option<f64>| -> Vec<(i64, f64)> {
        steps
            .iter()
            .filter_map(|s| f(s).map(|v| (s.step as i64, v)))
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
    let image = plotting::render(WIDTH, height, |root| {
        let breaks: Vec<u32> = (1..panels.len() as u32).map(|i| i * PANEL_HEIGHT).collect();
        let areas = root.split_by_breakpoints::<u32, u32, _, _>([], breaks);
        for (i, (panel, area)) in panels.iter().zip(&areas).enumerate() {
            panel.draw(area, x_range.clone(), i + 1 == panels.len())?;
        }
        Ok(())
    })?;
    let mut png = Vec::new();
    image
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
    color: RGBColor,
    /// Raw values drawn light under their moving average (otherwise one plain line).
    smooth: bool,
    points: Vec<(i64, f64)>,
}

impl Panel {
    /// Draws the panel into `area`; the `bottom` one gets the step tick labels.
    fn draw(&self, area: &Area<'_>, steps: Range<i64>, bottom: bool) -> Result<()> {
        let values: Vec<f64> = self.points.iter().map(|p| p.1).collect();
        let smoothed = self.smooth.then(|| smooth(&values));
        let note = match (values.last(), smoothed.as_ref().and_then(|s| s.last())) {
            (Some(v), Some(s)) => {
                format!(
                    "last {}    smoothed {}",
                    format_number(*v),
                    format_number(*s)
                )
            }
            (Some(v), None) => format!("last {}", format_number(*v)),
            _ => "no finite values".into(),
        };
        let (title_area, chart_area) = area.split_vertically(TITLE_HEIGHT);
        let text = |size, color, h| {
            let style = (FONT, size).into_font().color(&color);
            style.pos(Pos::new(h, VPos::Center))
        };
        let y = TITLE_HEIGHT as i32 / 2;
        let title_x = (MARGIN_LEFT + Y_LABELS) as i32;
        let title_style = text(26, TEXT, HPos::Left);
        title_area
            .draw_text(self.title, &title_style, (title_x, y))
            .map_err(plot_err)?;
        let note_style = text(21, MUTED_TEXT, HPos::Right);
        title_area
            .draw_text(&note, &note_style, ((WIDTH - MARGIN_RIGHT) as i32, y))
            .map_err(plot_err)?;

        let (lo, hi) = value_range(&values);
        let mut chart = ChartBuilder::on(&chart_area)
            .margin_left(MARGIN_LEFT)
            .margin_right(MARGIN_RIGHT)
            .margin_bottom(PANEL_PAD_BOTTOM)
            .y_label_area_size(Y_LABELS)
            .x_label_area_size(if bottom { X_AXIS_HEIGHT } else { 0 })
            .build_cartesian_2d(steps, lo..hi)
            .map_err(plot_err)?;
        let scientific = !(1e-2..1e6).contains(&lo.abs().max(hi.abs()));
        let y_label = |v: &f64| tick_label(*v, hi - lo, scientific);
        chart
            .configure_mesh()
            .axis_style(TRANSPARENT)
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_labels(8)
            .y_labels(5)
            .label_style((FONT, 19).into_font().color(&MUTED_TEXT))
            .y_label_formatter(&y_label)
            .x_desc("step")
            .axis_desc_style((FONT, 21).into_font().color(&MUTED_TEXT))
            .draw()
            .map_err(plot_err)?;
        let frame = chart.plotting_area().strip_coord_spec();
        let (w, h) = frame.dim_in_pixel();
        frame
            .draw(&Rectangle::new(
                [(0, 0), (w as i32 - 1, h as i32 - 1)],
                FRAME,
            ))
            .map_err(plot_err)?;

        let mut line = |ys: &[f64], style: ShapeStyle| {
            let points = self.points.iter().zip(ys).map(|(p, y)| (p.0, *y));
            let path = PathElement::new(points.collect::<Vec<_>>(), style);
            chart.draw_series([path]).map(|_| ()).map_err(plot_err)
        };
        match &smoothed {
            Some(ema) => {
                line(&values, self.color.mix(RAW_ALPHA).stroke_width(1))?;
                line(ema, self.color.stroke_width(2))?;
            }
            None => line(&values, self.color.stroke_width(2))?,
        }
        if let [point] = self.points[..] {
            chart
                .draw_series([Circle::new(point, 5, self.color.filled())])
                .map_err(plot_err)?;
        }
        Ok(())
    }
}

/// The y range of `values` with 5% to spare on each side (a constant gets ±10% of its
/// value, or ±1 at zero; no values get 0..1).
fn value_range(values: &[f64]) -> (f64, f64) {
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let magnitude = lo.abs().max(hi.abs());
    if lo > hi {
        (0.0, 1.0)
    } else if hi - lo <= magnitude * 1e-9 {
        let half = if magnitude > 0.0 {
            magnitude * 0.1
        } else {
            1.0
        };
        (lo - half, hi + half)
    } else {
        let margin = (hi - lo) * 0.05;
        (lo - margin, hi + margin)
    }
}

/// A y tick label with enough digits to tell apart ticks on an axis `span` long (which
/// has at most 10 ticks); `1e-5` style when `scientific`.
fn tick_label(v: f64, span: f64, scientific: bool) -> String {
    // Ticks at zero come out of plotters' arithmetic as e.g. 7e-21.
    let v = if v.abs() < span * 1e-9 { 0.0 } else { v };
    let digits = (v.abs().log10().floor() - (span / 10.0).log10().floor()).clamp(0.0, 8.0);
    format_value(v, digits as usize + 1, scientific)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};
    use std::ops::RangeInclusive;
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

    /// How strongly `px` is `color` drawn over white: 1 for the color itself, about
    /// [`RAW_ALPHA`] for the raw values' line, 0 for white or another color.
    fn tint(px: Rgb<u8>, color: RGBColor) -> f64 {
        let c = [color.0, color.1, color.2].map(f64::from);
        let p = px.0.map(f64::from);
        let k = (0..3)
            .max_by(|a, b| c[*a].total_cmp(&c[*b]).reverse())
            .unwrap();
        let a = (255.0 - p[k]) / (255.0 - c[k]);
        let fits = (0..3).all(|i| (255.0 + (c[i] - 255.0) * a - p[i]).abs() <= 4.0);
        if fits { a } else { 0.0 }
    }

    /// Pixels of `color` at a strength in `strength`, in the part of panel `panel`'s
    /// frame between the fractions `fx` (left to right) and `fy` (top to bottom).
    fn count(
        img: &RgbImage,
        panel: u32,
        (fx, fy): ((f64, f64), (f64, f64)),
        color: RGBColor,
        strength: RangeInclusive<f64>,
    ) -> usize {
        let top = panel * PANEL_HEIGHT;
        let (x0, x1) = (MARGIN_LEFT + Y_LABELS, WIDTH - MARGIN_RIGHT - 1);
        let (y0, y1) = (
            top + TITLE_HEIGHT,
            top + PANEL_HEIGHT - PANEL_PAD_BOTTOM - 1,
        );
        let at = |lo: u32, hi: u32, f: f64| lo + ((hi - lo) as f64 * f).round() as u32;
        let mut n = 0;
        for y in at(y0, y1, fy.0)..=at(y0, y1, fy.1) {
            for x in at(x0, x1, fx.0)..=at(x0, x1, fx.1) {
                n += usize::from(strength.contains(&tint(*img.get_pixel(x, y), color)));
            }
        }
        n
    }

    const SOLID: RangeInclusive<f64> = 0.9..=1.1;
    const RAW: RangeInclusive<f64> = 0.15..=RAW_ALPHA + 0.05;
    const ALL: ((f64, f64), (f64, f64)) = ((0.0, 1.0), (0.0, 1.0));

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
        let (start, end) = ((0.0, 0.1), (0.9, 1.0));
        let (top, low) = ((0.0, 0.15), (0.85, 1.0));
        assert!(
            count(&img, 0, (start, top), LOSS_COLOR, SOLID) > 0,
            "first point"
        );
        assert!(
            count(&img, 0, (end, low), LOSS_COLOR, SOLID) > 0,
            "last point"
        );
        let nothing = 0.05..=1.1;
        let upper_right = ((0.8, 1.0), (0.0, 0.4));
        assert_eq!(count(&img, 0, upper_right, LOSS_COLOR, nothing.clone()), 0);
        let lower_left = ((0.0, 0.2), (0.6, 1.0));
        assert_eq!(count(&img, 0, lower_left, LOSS_COLOR, nothing.clone()), 0);
        // The learning rate falls linearly too; grad norm gets its own panel.
        assert!(count(&img, 1, (start, top), LR_COLOR, SOLID) > 0);
        assert!(count(&img, 1, (end, low), LR_COLOR, SOLID) > 0);
        assert!(count(&img, 2, ALL, GRAD_COLOR, SOLID) > 0);
        // Grad norm cycles through 1..=7: only the raw line reaches the peaks.
        let peaks = ((0.0, 1.0), (0.0, 0.15));
        assert!(count(&img, 2, peaks, GRAD_COLOR, RAW) > 0, "raw points");
        assert_eq!(count(&img, 2, peaks, GRAD_COLOR, SOLID), 0, "smoothed");
        assert_eq!(count(&img, 0, ALL, LR_COLOR, nothing.clone()), 0);
        assert_eq!(count(&img, 1, ALL, LOSS_COLOR, nothing), 0);
    }

    #[test]
    fn panels_follow_the_logged_fields() {
        let without_grad = lines(20, |i| {
            let eval = format!(r#"{{"step":{i},"eval_loss":9.0}}"#);
            format!("{eval}\n{{\"step\":{i},\"loss\":1.5,\"lr\":0.001,\"epoch\":0.1}}")
        });
        let img = render(&without_grad);
        assert_eq!(img.height(), 2 * PANEL_HEIGHT + X_AXIS_HEIGHT);
        assert!(count(&img, 1, ALL, LR_COLOR, SOLID) > 0);
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
        let start = ((0.0, 0.1), (0.0, 0.15));
        assert!(count(&img, 0, start, LOSS_COLOR, SOLID) > 0);
        // Two finite losses: the raw line reaches the last one, the average lags behind.
        let end = ((0.9, 1.0), (0.85, 1.0));
        assert!(count(&img, 0, end, LOSS_COLOR, RAW) > 0);
        assert_eq!(count(&img, 0, end, LOSS_COLOR, SOLID), 0);
        // Only non-finite losses: the panel stays empty but the plot is still written.
        let img = render("{\"step\":1,\"loss\":NaN}\n{\"step\":2,\"loss\":null}\n");
        assert_eq!(count(&img, 0, ALL, LOSS_COLOR, 0.05..=1.1), 0);
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
        let middle = ((0.45, 0.55), (0.45, 0.55));
        assert!(count(&img, 0, middle, LOSS_COLOR, SOLID) > 0);
        assert!(count(&img, 1, middle, LR_COLOR, SOLID) > 0);
        let img = render(&lines(50, |i| {
            format!(r#"{{"step":{i},"loss":0.0,"lr":1e-4}}"#)
        }));
        for fx in [(0.0, 0.05), (0.45, 0.55), (0.95, 1.0)] {
            assert!(count(&img, 0, (fx, (0.45, 0.55)), LOSS_COLOR, SOLID) > 0);
            assert!(count(&img, 1, (fx, (0.45, 0.55)), LR_COLOR, SOLID) > 0);
        }
        let upper = ((0.0, 1.0), (0.0, 0.4));
        assert_eq!(count(&img, 0, upper, LOSS_COLOR, 0.05..=1.1), 0);
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
        let labels = |ticks: &[f64], span, scientific| -> Vec<String> {
            ticks
                .iter()
                .map(|t| tick_label(*t, span, scientific))
                .collect()
        };
        let lr = [7e-27, 5e-6, 1e-5, 3.0 * 5e-6, 2e-5];
        assert_eq!(
            labels(&lr, 2e-5, true),
            ["0", "5e-6", "1e-5", "1.5e-5", "2e-5"]
        );
        let loss = [1.2345, 1.2345 + 0.0005, 1.2355];
        assert_eq!(labels(&loss, 0.0018, false), ["1.2345", "1.235", "1.2355"]);
        let grad = [0.5, 1.0, 1.5, 2.0];
        assert_eq!(labels(&grad, 2.0, false), ["0.5", "1", "1.5", "2"]);
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
