//! `--plots DIR`: PNG histograms and bar charts of the report, and a contact sheet of
//! sampled images with their ids. Rendered at 1600 px wide with a bundled font, so the
//! figures look the same on every machine.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use image::{Rgb, RgbImage};
use plotters::prelude::*;

use super::dist::{CounterSummary, DistSummary};
use super::report::{Report, ScaledSummary};
use crate::core::data::{ImageSource, Sample};
use crate::core::display::ellipsize;
use crate::core::image as img;
use crate::core::plotting::{self, Area, FONT, plot_err};

const W: u32 = 1600;
const H: u32 = 1000;
const BAR: RGBColor = RGBColor(49, 110, 170);

/// Renders with plotters, then saves it as PNG.
fn render(path: &Path, w: u32, h: u32, draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<()> {
    save(path, plotting::render(w, h, draw)?)
}

fn save(path: &Path, image: RgbImage) -> Result<()> {
    image
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A histogram of `(lo, hi, count)` bins.
fn histogram(path: &Path, title: &str, x_label: &str, bins: &[(f64, f64, u64)]) -> Result<()> {
    let (Some(first), Some(last)) = (bins.first(), bins.last()) else {
        return Ok(());
    };
    let y_max = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64 * 1.08;
    render(path, W, H, |root| {
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 44))
            .margin(36)
            .x_label_area_size(100)
            .y_label_area_size(140)
            .build_cartesian_2d(first.0..last.1, 0f64..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12))
            .x_desc(x_label)
            .y_desc("count")
            .label_style((FONT, 28))
            .axis_desc_style((FONT, 32))
            .x_label_formatter(&|v| short_number(*v))
            .y_label_formatter(&|v| short_number(*v))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(
                bins.iter()
                    .map(|&(lo, hi, c)| Rectangle::new([(lo, 0.0), (hi, c as f64)], BAR.filled())),
            )
            .map_err(plot_err)?;
        chart
            .draw_series(bins.iter().map(|&(lo, hi, c)| {
                Rectangle::new([(lo, 0.0), (hi, c as f64)], WHITE.stroke_width(2))
            }))
            .map_err(plot_err)?;
        Ok(())
    })
}

/// Horizontal bars, one per label, longest first.
fn bars(path: &Path, title: &str, x_label: &str, items: &[(String, f64)]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let n = items.len();
    let x_max = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1e-9) * 1.12;
    let h = (220 + 56 * n as u32).max(500);
    let label_width = items
        .iter()
        .map(|i| i.0.chars().count())
        .max()
        .unwrap_or(4)
        .min(28) as u32
        * 17
        + 40;
    render(path, W, h, |root| {
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 44))
            .margin(36)
            .x_label_area_size(100)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0f64..x_max, (0..n - 1).into_segmented())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12))
            .x_desc(x_label)
            .label_style((FONT, 28))
            .axis_desc_style((FONT, 32))
            .y_labels(n)
            .x_label_formatter(&|v| short_number(*v))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if *i < n => ellipsize(&items[n - 1 - i].0, 28),
                _ => String::new(),
            })
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(items.iter().enumerate().map(|(i, (_, v))| {
                let row = n - 1 - i;
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(row)),
                        (*v, SegmentValue::Exact(row + 1)),
                    ],
                    BAR.filled(),
                );
                bar.set_margin(8, 8, 0, 0);
                bar
            }))
            .map_err(plot_err)?;
        Ok(())
    })
}

fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a.fract() == 0.0 || a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn int_bins(d: &DistSummary) -> Vec<(f64, f64, u64)> {
    d.histogram
        .iter()
        .map(|b| (b.lo as f64, b.hi as f64, b.count))
        .collect()
}

fn float_bins(d: &ScaledSummary) -> Vec<(f64, f64, u64)> {
    d.histogram.iter().map(|b| (b.lo, b.hi, b.count)).collect()
}

fn counts(c: &CounterSummary, limit: usize) -> Vec<(String, f64)> {
    c.top
        .iter()
        .take(limit)
        .map(|v| (v.value.clone(), v.count as f64))
        .collect()
}

/// One figure of the report.
enum Figure {
    Histogram {
        title: String,
        x: &'static str,
        bins: Vec<(f64, f64, u64)>,
    },
    Bars {
        title: String,
        x: &'static str,
        items: Vec<(String, f64)>,
    },
}

/// The figures `report` supports, with their file names.
fn figures(report: &Report) -> Vec<(&'static str, Figure)> {
    let hist = |title: String, x, bins| Figure::Histogram { title, x, bins };
    let bars = |title: &str, x, items| Figure::Bars {
        title: title.to_string(),
        x,
        items,
    };
    let mut out = Vec::new();
    let c = &report.captions;
    if c.count > 0 {
        let parts = c
            .parts
            .iter()
            .map(|p| (p.part.replace('_', " "), p.fraction * 100.0))
            .collect();
        let title = format!("Caption length (n = {})", c.count);
        out.push((
            "caption_chars.png",
            hist(title.clone(), "characters", int_bins(&c.chars)),
        ));
        out.push((
            "caption_words.png",
            hist(title, "words", int_bins(&c.words)),
        ));
        out.push((
            "caption_parts.png",
            bars(
                "Captions mentioning each MedTrinity part",
                "% of captions",
                parts,
            ),
        ));
        let modality = counts(&report.categories.modality, 20);
        out.push((
            "modality.png",
            bars("Modality named first in the caption", "captions", modality),
        ));
        let organ = counts(&report.categories.organ, 20);
        out.push((
            "organ.png",
            bars(
                "Organ / tissue named first in the caption",
                "captions",
                organ,
            ),
        ));
    }
    if report.categories.source.distinct > 0 {
        let sources = counts(&report.categories.source, 25);
        out.push(("source.png", bars("Records per source", "records", sources)));
    }
    if let Some(im) = report.images.as_ref().filter(|im| im.width.count > 0) {
        let n = im.width.count;
        out.push((
            "image_width.png",
            hist(
                format!("Image width (n = {n})"),
                "pixels",
                int_bins(&im.width),
            ),
        ));
        out.push((
            "image_height.png",
            hist(
                format!("Image height (n = {n})"),
                "pixels",
                int_bins(&im.height),
            ),
        ));
        out.push((
            "image_aspect.png",
            hist(
                format!("Image aspect ratio (n = {n})"),
                "width / height",
                float_bins(&im.aspect),
            ),
        ));
    }
    out
}

/// Writes every plot the report supports into `dir`, and a contact sheet of `sample`;
/// returns the files written.
pub(crate) fn write_all(
    dir: &Path,
    report: &Report,
    sample: &[Sample],
    seed: u64,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, figure) in figures(report) {
        let path = dir.join(name);
        match figure {
            Figure::Histogram { bins, .. } if bins.is_empty() => continue,
            Figure::Bars { items, .. } if items.is_empty() => continue,
            Figure::Histogram { title, x, bins } => histogram(&path, &title, x, &bins)?,
            Figure::Bars { title, x, items } => bars(&path, &title, x, &items)?,
        }
        written.push(path);
    }
    if !sample.is_empty() {
        let path = dir.join("contact_sheet.png");
        contact_sheet(&path, sample, seed)?;
        written.push(path);
    }
    Ok(written)
}

const CELL: u32 = 256;
const PAD: u32 = 16;
const LABEL: u32 = 64;
const HEADER: u32 = 90;

/// A grid of thumbnails, each labelled with its id and size.
pub(crate) fn contact_sheet(path: &Path, sample: &[Sample], seed: u64) -> Result<()> {
    let cols = (sample.len() as u32).clamp(1, 6);
    let rows = (sample.len() as u32).div_ceil(cols);
    let (w, h) = (
        PAD + cols * (CELL + PAD),
        HEADER + rows * (CELL + LABEL + PAD),
    );
    let mut canvas = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let mut labels = Vec::new();
    for (k, s) in sample.iter().enumerate() {
        let (col, row) = (k as u32 % cols, k as u32 / cols);
        let (x0, y0) = (
            PAD + col * (CELL + PAD),
            HEADER + row * (CELL + LABEL + PAD),
        );
        for y in y0..y0 + CELL {
            for x in x0..x0 + CELL {
                canvas.put_pixel(x, y, Rgb([24, 24, 24]));
            }
        }
        let decoded = match &s.image {
            ImageSource::Bytes { bytes, .. } => img::decode(bytes).map_err(|e| e.to_string()),
            ImageSource::File(p) => std::fs::read(p)
                .map_err(|e| e.to_string())
                .and_then(|b| img::decode(&b).map_err(|e| e.to_string())),
            ImageSource::Archived(_) => Err("image inside an archive".into()),
            ImageSource::None => Err("no image".into()),
        };
        let detail = match decoded {
            Ok(image) => {
                let thumb = img::thumbnail(&image, CELL);
                let (dx, dy) = ((CELL - thumb.width()) / 2, (CELL - thumb.height()) / 2);
                image::imageops::overlay(
                    &mut canvas,
                    &thumb,
                    i64::from(x0 + dx),
                    i64::from(y0 + dy),
                );
                format!("{}x{}", image.width(), image.height())
            }
            Err(e) => ellipsize(&e, 30),
        };
        labels.push((x0, y0 + CELL, ellipsize(&s.id, 24), detail));
    }
    render_labels(
        path,
        canvas,
        &format!("{} random samples (seed {seed})", sample.len()),
        &labels,
    )
}

fn render_labels(
    path: &Path,
    canvas: RgbImage,
    title: &str,
    labels: &[(u32, u32, String, String)],
) -> Result<()> {
    let image = plotting::draw_on(canvas, |root| {
        let title_style = TextStyle::from((FONT, 40).into_font()).color(&BLACK);
        root.draw_text(title, &title_style, (PAD as i32, 26))
            .map_err(plot_err)?;
        let id_style = TextStyle::from((FONT, 22).into_font()).color(&BLACK);
        let detail_style = TextStyle::from((FONT, 19).into_font()).color(&RGBColor(90, 90, 90));
        for (x, y, id, detail) in labels {
            root.draw_text(id, &id_style, (*x as i32 + 2, *y as i32 + 8))
                .map_err(plot_err)?;
            root.draw_text(detail, &detail_style, (*x as i32 + 2, *y as i32 + 36))
                .map_err(plot_err)?;
        }
        Ok(())
    })?;
    save(path, image)
}
