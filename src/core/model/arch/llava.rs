//! LLaVA: the CLIP tower (optionally wrapped in S2) feeds the projector, whose
//! output rows replace each `<image>` placeholder in the prompt's embeddings
//! (`prepare_inputs_labels_for_multimodal`), and the Llama decoder runs on the result.

use anyhow::{Result, ensure};
use candle_core::{DType, Tensor};

use crate::core::model::arch::attention::causal_padding_mask;
use crate::core::model::arch::clip::{ClipVision, select_tokens};
use crate::core::model::arch::llama::{Llama, Step};
use crate::core::model::arch::projector::Projector;
use crate::core::model::arch::s2::S2;
use crate::core::model::load::config::{LlavaConfig, SelectFeature};
use crate::core::model::load::weights::Weights;

/// Tiles the vision tower encodes per forward pass (bounds attention memory).
const VISION_CHUNK: usize = 32;

/// One piece of a tokenised prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text token ids.
    Text(Vec<u32>),
    /// An image: the next image's feature rows go here.
    Image,
}

/// The whole model.
pub struct Llava {
    /// The checkpoint's configuration.
    pub cfg: LlavaConfig,
    /// The CLIP vision tower (frozen in training).
    pub vision: ClipVision,
    /// S2 multi-scale encoding (`None`: single scale).
    pub s2: Option<S2>,
    /// The multimodal projector (`mm_projector` / `multi_modal_projector`).
    pub projector: Projector,
    /// The Llama language model.
    pub llm: Llama,
}

/// Left-padded prompt embeddings, ready for a forward pass.
pub struct PaddedBatch {
    /// `(B, T, hidden)`; padding slots are zero and masked.
    pub embeds: Tensor,
    /// `(B, T)` rotary positions: real tokens count from 0, padding gets 1 (as transformers).
    pub positions: Tensor,
    /// `valid[b][t]`: slot `t` of row `b` holds a real token.
    pub valid: Vec<Vec<bool>>,
    /// Real length of every row (a shared prefix included).
    pub lengths: Vec<usize>,
    /// Slots before `embeds` that the cache of a prefix every row shares fills
    /// (`KvCache::start_with`); 0 without one.
    pub past: usize,
}

/// The leading tokens every prompt shares: a common start of their leading text, leaving
/// each prompt at least one token of its own.
pub fn shared_prefix<'a>(prompts: &[&'a [Piece]]) -> &'a [u32] {
    let lead = |p: &'a [Piece]| -> &'a [u32] {
        match p.first() {
            // A prompt that is only text keeps its last token.
            Some(Piece::Text(ids)) => &ids[..ids.len().saturating_sub(usize::from(p.len() == 1))],
            _ => &[],
        }
    };
    let Some((first, rest)) = prompts.split_first() else {
        return &[];
    };
    rest.iter().fold(lead(first), |shared, p| {
        let n = shared
            .iter()
            .zip(lead(p))
            .take_while(|(a, b)| a == b)
            .count();
        &shared[..n]
    })
}

/// `pieces` without its first `n` tokens, an image counting `image_tokens` (`n` ends
/// before an image or after it, never inside).
pub fn skip_prefix(pieces: &[Piece], n: usize, image_tokens: usize) -> Vec<Piece> {
    let mut left = n;
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match piece {
            Piece::Text(ids) if left >= ids.len() => left -= ids.len(),
            Piece::Text(ids) => {
                out.push(Piece::Text(ids[left..].to_vec()));
                left = 0;
            }
            Piece::Image if left >= image_tokens => left -= image_tokens,
            Piece::Image => {
                debug_assert_eq!(left, 0, "a prefix that ends inside an image");
                out.push(Piece::Image);
                left = 0;
            }
        }
    }
    out
}

impl Llava {
    /// Builds the model from a resolved config and its weights.
    pub(crate) fn load(cfg: LlavaConfig, weights: &Weights) -> Result<Self> {
        let vcfg = cfg.vision().clone();
        let vision = ClipVision::load(&weights.scope("vision"), &vcfg, cfg.vision_layers_used())?;
        let projector = Projector::load(
            &weights.scope("projector"),
            cfg.projector,
            cfg.mm_hidden_size,
            cfg.text.hidden_size,
            cfg.projector_bias,
        )?;
        let llm = Llama::load(&weights.scope("llm"), &cfg.text)?;
        let s2 = cfg.s2_scales.clone().map(|scales| S2 { scales });
        Ok(Self {
            cfg,
            vision,
            s2,
            projector,
            llm,
        })
    }

    /// Vision features before the projector, `(N, tokens, mm_hidden)`, for
    /// preprocessed `pixels` `(N, 3, S, S)`.
    pub fn vision_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let keep_cls = self.cfg.select_feature == SelectFeature::ClsPatch;
        let encode = |x: &Tensor| -> Result<Tensor> {
            let n = x.dim(0)?;
            let chunks = (0..n)
                .step_by(VISION_CHUNK)
                .map(|start| {
                    let part = x.narrow(0, start, VISION_CHUNK.min(n - start))?;
                    select_tokens(&self.vision.forward(&part)?, keep_cls)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&chunks, 0)?)
        };
        match &self.s2 {
            Some(s2) => s2.forward(pixels, encode),
            None => encode(pixels),
        }
    }

    /// Projected image features `(N, tokens, hidden)`.
    pub fn encode_images(&self, pixels: &Tensor) -> Result<Tensor> {
        self.projector.forward(&self.vision_features(pixels)?)
    }

    /// Embeddings of one prompt `(len, hidden)`: text embeddings with each image's
    /// feature rows `(tokens, hidden)` spliced in at its placeholder, in order.
    pub fn embed_prompt(&self, pieces: &[Piece], images: &[Tensor]) -> Result<Tensor> {
        let device = self.llm.embed.device();
        let mut parts = Vec::with_capacity(pieces.len());
        let mut next_image = images.iter();
        for piece in pieces {
            match piece {
                Piece::Text(ids) if ids.is_empty() => {}
                Piece::Text(ids) => {
                    let ids = Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?;
                    parts.push(self.llm.embed_ids(&ids)?.squeeze(0)?);
                }
                Piece::Image => {
                    let features = next_image.next();
                    ensure!(
                        features.is_some(),
                        "the prompt has more <image> placeholders than images"
                    );
                    parts.push(
                        features
                            .expect("checked")
                            .to_dtype(self.llm.embed.dtype())?,
                    );
                }
            }
        }
        ensure!(
            next_image.next().is_none(),
            "more images than <image> placeholders in the prompt"
        );
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Stacks prompt embeddings `(len_b, hidden)` into a left-padded batch.
    pub fn left_pad(&self, rows: &[Tensor]) -> Result<PaddedBatch> {
        self.left_pad_after(0, rows)
    }

    /// [`Llava::left_pad`] for rows that continue a shared prefix of `past` tokens, whose
    /// cache fills the first `past` slots: the padding then sits between the prefix and
    /// each row's own tokens, and positions count on from `past`.
    pub fn left_pad_after(&self, past: usize, rows: &[Tensor]) -> Result<PaddedBatch> {
        let lengths = rows
            .iter()
            .map(|r| r.dim(0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let total = lengths.iter().copied().max().unwrap_or(0);
        let hidden = self.cfg.text.hidden_size;
        let device = self.llm.embed.device();
        let dtype = self.llm.embed.dtype();
        let mut padded = Vec::with_capacity(rows.len());
        let mut positions = Vec::with_capacity(rows.len() * total);
        let mut valid = Vec::with_capacity(rows.len());
        for (row, &len) in rows.iter().zip(&lengths) {
            let pad = total - len;
            padded.push(if pad == 0 {
                row.clone()
            } else {
                Tensor::cat(&[&Tensor::zeros((pad, hidden), dtype, device)?, row], 0)?
            });
            positions
                .extend(std::iter::repeat_n(1u32, pad).chain(past as u32..(past + len) as u32));
            valid.push(
                (0..past + total)
                    .map(|t| t < past || t >= past + pad)
                    .collect(),
            );
        }
        Ok(PaddedBatch {
            embeds: Tensor::stack(&padded, 0)?,
            positions: Tensor::from_vec(positions, (rows.len(), total), device)?,
            valid,
            lengths: lengths.iter().map(|l| past + l).collect(),
            past,
        })
    }

    /// Final hidden states `(B, T, hidden)` of a padded batch (no cache).
    pub fn forward_batch(&self, batch: &PaddedBatch) -> Result<Tensor> {
        ensure!(
            batch.past == 0,
            "a batch after a shared prefix needs its cache"
        );
        let total = batch.embeds.dim(1)?;
        let mask = causal_padding_mask(
            &batch.valid,
            0,
            total,
            self.cfg.text.sliding_window,
            self.llm.embed.dtype(),
            batch.embeds.device(),
        )?;
        let step = Step {
            positions: &batch.positions,
            mask: mask.as_ref(),
            last_only: false,
        };
        self.llm.forward(&batch.embeds, &step, None)
    }

    /// Every projector and language-model tensor under its canonical name (the
    /// vision tower is never trained, so it is not listed).
    pub(crate) fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = self.projector.tensors_mut();
        out.extend(self.llm.tensors_mut());
        out
    }

    /// The dtype the model computes in.
    pub(crate) fn dtype(&self) -> DType {
        self.llm.embed.dtype()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_prefix_is_the_common_leading_text_and_leaves_every_row_a_token() {
        let text = |ids: &[u32]| Piece::Text(ids.to_vec());
        let a = [text(&[1, 2, 3]), Piece::Image, text(&[9])];
        let b = [text(&[1, 2, 4]), Piece::Image];
        let only_text = [text(&[1, 2])];
        assert_eq!(shared_prefix(&[&a, &b]), &[1, 2]);
        assert_eq!(shared_prefix(&[&a]), &[1, 2, 3]);
        assert_eq!(shared_prefix(&[&a, &only_text]), &[1]);
        assert!(shared_prefix(&[&a, &[Piece::Image, text(&[1])]]).is_empty());
        assert!(shared_prefix(&[]).is_empty());
        assert_eq!(
            skip_prefix(&a, 2, 5),
            vec![text(&[3]), Piece::Image, text(&[9])]
        );
        assert_eq!(skip_prefix(&a, 3, 5), vec![Piece::Image, text(&[9])]);
        assert_eq!(skip_prefix(&a, 8, 5), vec![text(&[9])]);
    }
}
