//! The caption run loop: read a dataset's records in order, keep this shard's, skip the
//! ids an output already holds, prepare each record (decode its image; in the MedTrinity
//! pipeline, assemble its prompt and draw its ROIs), caption them in batches and append
//! the lines. Records and inputs that fail are listed and the run goes on; a failure of
//! the run itself (writing, retrieval, the model) stops it.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::captioner::{Caption, CaptionInput, Captioner};
use crate::core::data::{Batch, Dataset, Flow, ImageRef, ReadOptions};
use crate::core::pipeline::{Audit, Pipeline, draw_rois};
use crate::core::progress;
use crate::core::records::RecordOutput;
use crate::core::shard::Shard;

/// What one caption run reads and how it captions.
pub(crate) struct CaptionRun<'a> {
    pub dataset: &'a Dataset,
    pub read: &'a ReadOptions,
    /// Only the records whose id this shard owns.
    pub shard: Option<Shard>,
    /// The MedTrinity pipeline (prompt and ROIs per record), or one prompt for all.
    pub pipeline: Option<&'a Pipeline>,
    /// `None` is a dry run: each line carries the prompt and what went into it.
    pub captioner: Option<&'a Captioner>,
    /// The instruction given with every image outside the pipeline (dry-run lines show it).
    pub prompt: &'a str,
    /// Images per forward pass.
    pub batch_size: usize,
}

/// What a caption run did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Lines appended to the output.
    pub written: usize,
    /// New tokens generated.
    pub tokens: usize,
    /// Records left to other shards.
    pub other_shards: usize,
    /// (id or input, message) of every record and input that failed.
    pub failures: Vec<(String, String)>,
    /// How many of the failures were whole inputs (a shard with any is not done).
    pub input_failures: usize,
    /// Wall time of the loop.
    pub seconds: f64,
}

/// The records waiting for the next forward pass.
type Pending = Vec<(CaptionInput, Option<Audit>)>;

impl CaptionRun<'_> {
    /// Captions every record `out` does not hold yet, appending as each batch finishes.
    pub(crate) fn run(&self, out: &mut RecordOutput) -> Result<Outcome> {
        let dataset = self.dataset;
        let total = dataset.known_rows(&dataset.units(&[], 1));
        let unit_name = if self.captioner.is_some() {
            "images"
        } else {
            "prompts"
        };
        let bar = progress::bar(total, unit_name, "captioning");
        let started = Instant::now();
        let mut outcome = Outcome::default();
        let mut pending: Pending = Vec::new();
        let flush = |pending: &mut Pending, out: &mut RecordOutput, outcome: &mut Outcome| {
            let records = pending.len();
            let lines = self.lines(pending, outcome)?;
            out.write_all(&lines)?;
            outcome.written += lines.len();
            bar.inc(records as u64);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "captioning, {:.1} tokens/s",
                outcome.tokens as f64 / secs
            ));
            anyhow::Ok(())
        };
        for unit in dataset.units(&[], 1) {
            let mut failed: Option<anyhow::Error> = None;
            let input_failed = |outcome: &mut Outcome, e: &anyhow::Error| {
                outcome.input_failures += 1;
                let input = dataset.inputs[unit.input].display();
                outcome.failures.push((input, format!("{e:#}")));
            };
            let result = dataset.read(&unit, self.read, &mut |batch| {
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        input_failed(&mut outcome, &e);
                        return Flow::Continue;
                    }
                };
                for i in 0..batch.len() {
                    let id = batch.id(i).into_owned();
                    if self.shard.is_some_and(|s| !s.owns(&id)) {
                        outcome.other_shards += 1;
                        bar.inc(1);
                        continue;
                    }
                    if out.contains(&id) || pending.iter().any(|(p, _)| p.id == id) {
                        bar.inc(1);
                        continue;
                    }
                    match prepare(&batch, i, id.clone(), self.pipeline) {
                        Ok(Ok(item)) => pending.push(item),
                        Ok(Err(e)) => {
                            tracing::warn!("{id}: {e:#}");
                            bar.inc(1);
                            outcome.failures.push((id, format!("{e:#}")));
                        }
                        Err(e) => {
                            failed = Some(e);
                            return Flow::Stop;
                        }
                    }
                    if pending.len() == self.batch_size
                        && let Err(e) = flush(&mut pending, out, &mut outcome)
                    {
                        failed = Some(e);
                        return Flow::Stop;
                    }
                }
                Flow::Continue
            });
            if let Some(e) = failed {
                return Err(e);
            }
            if let Err(e) = result {
                input_failed(&mut outcome, &e);
            }
        }
        flush(&mut pending, out, &mut outcome)?;
        bar.finish_and_clear();
        outcome.seconds = started.elapsed().as_secs_f64();
        Ok(outcome)
    }

    /// The output lines of a batch: captions, or with a dry run the prompts. Images that
    /// could not be captioned go to the outcome's failures.
    fn lines(&self, pending: &mut Pending, outcome: &mut Outcome) -> Result<Vec<(String, Line)>> {
        let Some(captioner) = self.captioner else {
            let prompt = self.prompt;
            return Ok(pending
                .drain(..)
                .map(|(item, audit)| dry_run_line(item, audit, prompt))
                .collect());
        };
        let (items, audits): (Vec<_>, Vec<_>) = std::mem::take(pending).into_iter().unzip();
        let captions = captioner.caption(&items, &mut |n| outcome.tokens += n)?;
        let mut lines = Vec::with_capacity(items.len());
        for ((item, caption), audit) in items.iter().zip(captions).zip(audits) {
            match caption {
                Ok(caption) => {
                    let head = Head::Caption(caption);
                    let line = Line {
                        head,
                        prompt: None,
                        audit,
                    };
                    lines.push((item.id.clone(), line));
                }
                Err(e) => {
                    tracing::warn!("{}: {e:#}", item.id);
                    outcome.failures.push((item.id.clone(), format!("{e:#}")));
                }
            }
        }
        Ok(lines)
    }
}

/// One record made ready: its image decoded and, in the pipeline, its prompt assembled
/// and its ROIs drawn on the image. The inner error is the record's (skip it), the
/// outer one the run's (retrieval failed: stop).
fn prepare(
    batch: &Batch,
    i: usize,
    id: String,
    pipeline: Option<&Pipeline>,
) -> Result<Result<(CaptionInput, Option<Audit>)>> {
    let (image, pixels) = match load_image(batch.image(i)) {
        Ok(loaded) => loaded,
        Err(e) => return Ok(Err(e)),
    };
    let Some(pipeline) = pipeline else {
        let item = CaptionInput {
            id,
            image,
            pixels,
            messages: None,
        };
        return Ok(Ok((item, None)));
    };
    let mut record = batch.extra(i);
    if let Some(caption) = batch.caption(i) {
        record.insert("caption".into(), caption.into());
    }
    let size = (pixels.width() as usize, pixels.height() as usize);
    let case = match pipeline.case(&id, &record, batch.source(i).unwrap_or(""), size) {
        Ok(case) => case,
        Err(e) => return Ok(Err(e)),
    };
    let audit = pipeline.audit(case)?;
    let item = CaptionInput {
        id,
        image,
        pixels: draw_rois(&pixels, &audit.rois),
        messages: Some(vec![audit.prompt.clone()]),
    };
    Ok(Ok((item, Some(audit))))
}

/// The dry-run line of one record: the prompt and what went into it.
fn dry_run_line(item: CaptionInput, audit: Option<Audit>, prompt: &str) -> (String, Line) {
    let line = Line {
        head: Head::Input {
            id: item.id.clone(),
            image: item.image,
        },
        prompt: audit.is_none().then(|| prompt.to_string()),
        audit,
    };
    (item.id, line)
}

/// One output line: the caption (in a dry run, the record) and, in the pipeline,
/// everything that went into its prompt.
#[derive(Serialize)]
struct Line {
    #[serde(flatten)]
    head: Head,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    #[serde(flatten)]
    audit: Option<Audit>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Head {
    Caption(Caption),
    Input { id: String, image: String },
}

/// Decodes a record's image; returns its label for the output and the pixels.
fn load_image(image: ImageRef<'_>) -> Result<(String, image::DynamicImage)> {
    let label = match &image {
        ImageRef::Archived(name) => anyhow::bail!(
            "image {name} is inside a .tar.zst shard; caption the shards themselves (mt caption shard.tar.zst ...)"
        ),
        ImageRef::Bytes { path, .. } => path.unwrap_or("").to_string(),
        ImageRef::File(path) => path.to_string_lossy().into_owned(),
        ImageRef::None => String::new(),
    };
    let bytes = image.bytes()?;
    let pixels = crate::core::image::decode(&bytes)?;
    Ok((label, pixels))
}
