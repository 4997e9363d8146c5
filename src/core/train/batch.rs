//! A micro-batch as the reference trains on it: `DataCollatorForSupervisedDataset`
//! (truncation to `model_max_length`, pad tokens dropped by the attention mask) and
//! `prepare_inputs_labels_for_multimodal` (each `<image>` replaced by its projected
//! feature rows labelled -100, truncation to `tokenizer_model_max_length`, right
//! padding), then the mean next-token cross entropy over the supervised positions.

use anyhow::{Context as _, Result, bail, ensure};
use candle_core::{D, DType, Tensor};

use super::conversation::{ConversationEncoder, Encoded, IGNORE_INDEX, IMAGE_TOKEN_INDEX};
use super::data::Record;
use crate::core::model::arch::attention::causal_padding_mask;
use crate::core::model::arch::llava::Llava;
use crate::core::model::engine::preprocess::ImageProcessor;

/// One sample ready for the model.
pub struct Example {
    /// The record's id.
    pub id: String,
    /// Token ids after truncation and pad removal; `IMAGE_TOKEN_INDEX` (-200) where the
    /// image goes.
    pub input_ids: Vec<i64>,
    /// The target of every position of `input_ids` (-100 = not trained on).
    pub labels: Vec<i64>,
    /// Preprocessed pixels `(3, S, S)` when the sample has an image.
    pub pixels: Option<Tensor>,
    /// The reference's "tokenization mismatch": every label was masked.
    pub mismatch: bool,
}

/// Builds examples from records: tokenisation, collator truncation, pad removal and
/// image preprocessing.
pub struct Collator<'a> {
    /// Tokenises the conversations (its `max_len` is the collator's truncation).
    pub encoder: ConversationEncoder<'a>,
    /// Turns images into the vision tower's pixels.
    pub processor: &'a ImageProcessor,
    /// Where the pixel tensors are put.
    pub device: &'a candle_core::Device,
}

impl Collator<'_> {
    /// The example of one record; errors name the record.
    pub fn example(&self, record: &Record) -> Result<Example> {
        let has_image = record.image.is_some();
        let Encoded {
            mut input_ids,
            mut labels,
            mismatch,
        } = self
            .encoder
            .encode(&record.turns, has_image)
            .with_context(|| record.origin.clone())?;
        let max = self.encoder.max_len;
        input_ids.truncate(max);
        labels.truncate(max);
        // The collator's attention mask (`input_ids != pad`) drops pad tokens, wherever
        // they are, before the image rows go in.
        let pad = i64::from(self.encoder.specials.pad);
        let (input_ids, labels): (Vec<i64>, Vec<i64>) = input_ids
            .into_iter()
            .zip(labels)
            .filter(|(t, _)| *t != pad)
            .unzip();
        let images = input_ids
            .iter()
            .filter(|&&t| t == IMAGE_TOKEN_INDEX)
            .count();
        if images > 1 {
            bail!(
                "{}: {images} <image> placeholders for one image",
                record.origin
            );
        }
        let pixels = match &record.image {
            Some(source) => {
                let image = source.open().with_context(|| record.origin.clone())?;
                let px = self
                    .processor
                    .batch(&[&image], self.device)
                    .with_context(|| record.origin.clone())?;
                Some(px.squeeze(0)?)
            }
            None => None,
        };
        if images == 1 && pixels.is_none() {
            bail!(
                "{}: the conversation has <image> but the record no `image`",
                record.origin
            );
        }
        Ok(Example {
            id: record.id.clone(),
            input_ids,
            labels,
            pixels,
            mismatch,
        })
    }
}

/// A micro-batch laid out for the language model.
pub(crate) struct Prepared {
    /// `(B, T, hidden)` input embeddings, right-padded with zeros; differentiable
    /// where the embedding or the projector is trained.
    pub embeds: Tensor,
    /// `(B, T)` positions `0..T` for every row (right padding keeps them exact).
    pub positions: Tensor,
    /// Causal + padding mask.
    pub mask: Option<Tensor>,
    /// Flat `b * T + t` indices of the positions that predict a label.
    picks: Tensor,
    /// The label each picked position predicts, `(N, 1)`.
    targets: Tensor,
    /// Supervised positions (N).
    pub tokens: usize,
}

/// Splices, truncates and right-pads `examples` (as `prepare_inputs_labels_for_multimodal`
/// does); `None` when no position in the batch is supervised.
pub(crate) fn prepare(
    model: &Llava,
    examples: &[Example],
    max_len: usize,
) -> Result<Option<Prepared>> {
    ensure!(!examples.is_empty(), "empty micro-batch");
    let with_pixels: Vec<&Tensor> = examples.iter().filter_map(|e| e.pixels.as_ref()).collect();
    let features = if with_pixels.is_empty() {
        None
    } else {
        let pixels = Tensor::stack(&with_pixels, 0)?;
        // The vision tower is frozen: its output is a constant for the projector.
        let vision = model.vision_features(&pixels)?.detach();
        Some(model.projector.forward(&vision)?)
    };
    let mut next_image = 0;
    let mut rows = Vec::with_capacity(examples.len());
    let mut row_labels = Vec::with_capacity(examples.len());
    for example in examples {
        let image = match &example.pixels {
            Some(_) => {
                next_image += 1;
                Some(next_image - 1)
            }
            None => None,
        };
        let (embeds, labels) = splice(model, example, image.map(|i| (features.as_ref(), i)))?;
        let keep = labels.len().min(max_len);
        rows.push(embeds.narrow(0, 0, keep)?);
        row_labels.push(labels[..keep].to_vec());
    }
    let total = row_labels.iter().map(Vec::len).max().unwrap_or(0);
    let hidden = model.cfg.text.hidden_size;
    let dtype = model.dtype();
    let device = model.llm.embed.device().clone();
    let mut padded = Vec::with_capacity(rows.len());
    let mut valid = Vec::with_capacity(rows.len());
    let mut picks = Vec::new();
    let mut targets = Vec::new();
    for (b, (row, labels)) in rows.iter().zip(&row_labels).enumerate() {
        let len = labels.len();
        padded.push(if len == total {
            row.clone()
        } else {
            Tensor::cat(
                &[row, &Tensor::zeros((total - len, hidden), dtype, &device)?],
                0,
            )?
        });
        valid.push((0..total).map(|t| t < len).collect::<Vec<bool>>());
        // Position t predicts the label at t + 1.
        for t in 0..len.saturating_sub(1) {
            let target = labels[t + 1];
            if target != IGNORE_INDEX {
                picks.push((b * total + t) as u32);
                targets.push(
                    u32::try_from(target)
                        .with_context(|| format!("label {target} is not a token id"))?,
                );
            }
        }
    }
    if picks.is_empty() {
        return Ok(None);
    }
    let positions: Vec<u32> = (0..rows.len()).flat_map(|_| 0..total as u32).collect();
    Ok(Some(Prepared {
        embeds: Tensor::stack(&padded, 0)?,
        positions: Tensor::from_vec(positions, (rows.len(), total), &device)?,
        mask: causal_padding_mask(
            &valid,
            0,
            total,
            model.cfg.text.sliding_window,
            dtype,
            &device,
        )?,
        tokens: picks.len(),
        picks: Tensor::new(picks.as_slice(), &device)?,
        targets: Tensor::new(targets.as_slice(), &device)?.unsqueeze(1)?,
    }))
}

/// The mean next-token cross entropy from the last decoder layer's output `x`
/// `(B, T, hidden)`: final norm, LM head and log-softmax at the supervised positions only.
pub(crate) fn head_loss(model: &Llava, prepared: &Prepared, x: &Tensor) -> Result<Tensor> {
    let (b, t, hidden) = x.dims3()?;
    let picked = x
        .reshape((b * t, hidden))?
        .index_select(&prepared.picks, 0)?;
    let logits = model.llm.logits(&model.llm.norm.forward(&picked)?)?; // (N, V) f32
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    Ok(log_probs.gather(&prepared.targets, 1)?.mean_all()?.neg()?)
}

/// The differentiable loss of a prepared batch, every activation kept for backward.
pub(crate) fn batch_loss(model: &Llava, prepared: &Prepared) -> Result<Tensor> {
    let rotary = model
        .llm
        .rotary(&prepared.positions, prepared.embeds.dtype())?;
    let mut x = prepared.embeds.clone();
    for i in 0..model.llm.layers.len() {
        x = model
            .llm
            .layer_forward(i, &x, &rotary, prepared.mask.as_ref())?;
    }
    head_loss(model, prepared, &x)
}

/// One row's embeddings and labels: text embeddings with the image's feature rows
/// (`features[index]`) at the `<image>` id, their labels -100.
fn splice(
    model: &Llava,
    example: &Example,
    image: Option<(Option<&Tensor>, usize)>,
) -> Result<(Tensor, Vec<i64>)> {
    let device = model.llm.embed.device();
    let mut parts = Vec::new();
    let mut labels = Vec::with_capacity(example.labels.len());
    let mut text: Vec<u32> = Vec::new();
    let flush = |text: &mut Vec<u32>, parts: &mut Vec<Tensor>| -> Result<()> {
        if !text.is_empty() {
            let ids = Tensor::new(text.as_slice(), device)?.unsqueeze(0)?;
            parts.push(model.llm.embed_ids(&ids)?.squeeze(0)?);
            text.clear();
        }
        Ok(())
    };
    for (&id, &label) in example.input_ids.iter().zip(&example.labels) {
        if id == IMAGE_TOKEN_INDEX {
            flush(&mut text, &mut parts)?;
            let Some((Some(features), index)) = image else {
                bail!("{}: <image> without an image", example.id);
            };
            let rows = features.get(index)?.to_dtype(model.dtype())?;
            labels.extend(std::iter::repeat_n(IGNORE_INDEX, rows.dim(0)?));
            parts.push(rows);
        } else {
            text.push(u32::try_from(id).with_context(|| format!("{}: token id {id}", example.id))?);
            labels.push(label);
        }
    }
    flush(&mut text, &mut parts)?;
    ensure!(!parts.is_empty(), "{}: empty sequence", example.id);
    Ok((Tensor::cat(&parts, 0)?, labels))
}

/// A scalar tensor's value.
pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}
