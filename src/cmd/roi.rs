//! `mt roi`: regions of interest from masks and boxes.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::args::{ConnectivityArg, OrientationArg};
use super::{Context, failure_list, finish_failures};
use crate::core::convert::image_files::id_key;
use crate::core::progress;
use crate::core::records::RecordOutput;
use crate::core::roi::inputs::{Item, Regions, read_inputs};
use crate::core::roi::measure::{MeasureOptions, measure, measure_box};
use crate::core::roi::{LabelMap, Roi, overlay};

const EXAMPLES: &str = "\
Examples:
  mt roi masks/ -o rois.jsonl
  mt roi masks/ -o rois.parquet
  mt roi cases.jsonl --overlay overlays/ --orientation radiological
  mt roi seg.nii.gz --min-size 20 -o rois.jsonl
  mt roi instances.json --image-folder coco/images -o rois.jsonl

Inputs: mask images (PNG/TIFF: binary, label maps, instance masks as Cellpose writes),
NIfTI masks (one item per slice with foreground, id <stem>#<z>), COCO JSON (boxes and
polygons; --image-folder resolves file_name), or a JSONL of {id, image, mask | bbox}.
Output: one JSON line per item: {id, image, source, width, height, rois: [{label, bbox,
bbox_norm, area, area_pct, centroid, components, position}]}; bbox is [x0, y0, x1, y1)
in pixels. An output ending in .parquet gets the same rows as a zstd parquet file, rois
a list of structs; they are staged in <output>.partial.jsonl while the run goes on, and
the file is written at its end. A rerun skips ids already in the output (JSONL, staged or
parquet) and adds the new rows. Items that cannot be read are listed (failures.json in
the run directory) and give exit 3; empty masks give rois [].

Position words come from a 3x3 grid on the centroid (\"left upper\", \"center\", \"right
lower\", ...). --orientation radiological (the default, for CT/MR/X-ray shown in the
radiological convention) names sides from the patient's view: the image's left is the
patient's right. anatomical names them as the image shows them.";

/// Regions of interest from masks or boxes: boxes, area %, position words, overlays.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Mask images, NIfTI masks, COCO JSON or a JSONL of {id, image, mask|bbox}.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output JSONL, or parquet for *.parquet (`-` = stdout).
    #[arg(short, long, default_value = "-")]
    pub output: PathBuf,
    /// Write images with the ROI drawn as a green box into DIR.
    #[arg(long, value_name = "DIR")]
    pub overlay: Option<PathBuf>,
    /// Also draw the mask's outline (yellow) on the overlays.
    #[arg(long, requires = "overlay")]
    pub outline: bool,
    /// Left/right convention for position words.
    #[arg(long, value_enum, default_value = "radiological")]
    pub orientation: OrientationArg,
    /// Smallest connected component kept, in pixels.
    #[arg(long, default_value_t = 1)]
    pub min_size: u64,
    /// Pixel connectivity of components: 4 or 8.
    #[arg(long, value_enum, default_value = "8")]
    pub connectivity: ConnectivityArg,
    /// Merge components of one label whose boxes are at most this many pixels apart.
    #[arg(long, default_value_t = 0)]
    pub merge_distance: u32,
    /// One ROI per connected component instead of one per label.
    #[arg(long)]
    pub split_components: bool,
    /// Folder the images named in COCO JSON live in (default: the JSON's folder).
    #[arg(long = "image-folder", visible_alias = "images", value_name = "DIR")]
    pub images: Option<PathBuf>,
}

/// One output line.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    image: Option<&'a Path>,
    source: &'a str,
    width: usize,
    height: usize,
    rois: Vec<Roi>,
}

/// Runs `mt roi`.
pub(crate) fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    let opts = MeasureOptions {
        orientation: args.orientation.into(),
        connectivity: args.connectivity.neighbours(),
        min_size: args.min_size,
        merge_distance: args.merge_distance,
        split_components: args.split_components,
    };
    let mut out = RecordOutput::open(&args.output, "id")?;
    if !out.is_empty() {
        tracing::info!(
            "{}: {} items already done; skipping them",
            args.output.display(),
            out.len()
        );
    }
    if let Some(dir) = &args.overlay {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let bar = progress::bar(None, "items", "roi");
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut batch: Vec<(String, serde_json::Value)> = Vec::new();
    read_inputs(&args.inputs, args.images.as_deref(), &mut |item: Item| {
        bar.inc(1);
        tally.items += 1;
        if out.contains(&item.id) {
            tally.resumed += 1;
            return Ok(());
        }
        match row(&item, &opts, args) {
            Ok(value) => {
                if value["rois"].as_array().is_some_and(Vec::is_empty) {
                    tally.empty += 1;
                }
                batch.push((item.id.clone(), value));
                if batch.len() >= 256 {
                    out.write_all(&batch)?;
                    tally.written += batch.len();
                    batch.clear();
                }
            }
            Err(e) => failures.push((item.source.clone(), format!("{e:#}"))),
        }
        Ok(())
    })?;
    out.write_all(&batch)?;
    tally.written += batch.len();
    bar.finish_and_clear();
    // Failed items do not stop the parquet file: the rows written so far go into it.
    out.finish()?;
    if let Some(run) = &mut ctx.run {
        run.set_count("items", tally.items);
        run.set_count("written", tally.written);
        run.set_count("resumed", tally.resumed);
        run.set_count("empty", tally.empty);
        run.set_count("failed", failures.len());
    }
    let json = serde_json::json!({
        "output": args.output,
        "items": tally.items,
        "written": tally.written,
        "resumed": tally.resumed,
        "empty": tally.empty,
        "failed": failures.len(),
        "failures": failure_list(&failures),
    });
    super::summary(ctx, args.output == Path::new("-"), &json, || {
        format!(
            "roi: {} items, {} written, {} already done, {} with no region, {} failed",
            tally.items,
            tally.written,
            tally.resumed,
            tally.empty,
            failures.len()
        )
    })?;
    let failed = failures.len();
    finish_failures(ctx, failures, failed, tally.items)
}

#[derive(Default)]
struct Tally {
    items: usize,
    written: usize,
    resumed: usize,
    empty: usize,
}

/// Measures one item (and draws its overlay).
fn row(item: &Item, opts: &MeasureOptions, args: &Args) -> Result<serde_json::Value> {
    let regions = match &item.regions {
        Ok(r) => r,
        Err(e) => anyhow::bail!("{e:#}"),
    };
    let (width, height, mask, mut rois): (usize, usize, Option<&LabelMap>, Vec<Roi>) = match regions
    {
        Regions::Mask(map) => (map.width, map.height, Some(map), measure(map, opts)),
        Regions::Boxes {
            width,
            height,
            boxes,
        } => {
            let rois = boxes
                .iter()
                .map(|(label, b)| measure_box(*b, label, *width, *height, opts.orientation))
                .collect();
            (*width, *height, None, rois)
        }
    };
    if let Some(names) = &item.label_names {
        for roi in &mut rois {
            if let Some(name) = roi.label.parse::<u32>().ok().and_then(|v| names.get(&v)) {
                roi.label = name.clone();
            }
        }
    }
    if let Some(dir) = &args.overlay {
        let img = overlay::draw(
            item.image.as_deref(),
            mask,
            (width, height),
            &rois,
            args.outline,
        )
        .with_context(|| format!("{}: overlay", item.source))?;
        let path = dir.join(format!("{}.png", id_key(&item.id)));
        img.save(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(serde_json::to_value(Row {
        id: &item.id,
        image: item.image.as_deref(),
        source: &item.source,
        width,
        height,
        rois,
    })?)
}
