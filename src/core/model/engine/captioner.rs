//! Captioning with a loaded checkpoint: every image gets the same prompt (the question in
//! the checkpoint's conversation template) unless it brings its own question (the
//! MedTrinity pipeline), images are preprocessed and
//! encoded in one batch, generation is batched with left padding, and each caption is
//! decoded with its token counts. The prompt tokens all rows share (the system prompt
//! before the image) run once and are cached for the following batches.

use std::sync::Mutex;

use anyhow::Result;
use candle_core::Tensor;
use image::DynamicImage;
use serde::Serialize;

use crate::core::hash::{fnv1a, keyed, mix64};
use crate::core::model::arch::llama::KvCache;
use crate::core::model::arch::llava::{Llava, Piece, shared_prefix, skip_prefix};
use crate::core::model::engine::generate::{GenerationConfig, generate, stop_at};
use crate::core::model::engine::preprocess::ImageProcessor;
use crate::core::model::engine::prompt::PromptFormat;
use crate::core::model::engine::prompt::{PromptTokens, TextCodec, prompt_len};
use crate::core::model::kernels;
use crate::core::model::load::checkpoint::Checkpoint;

/// One image to caption.
pub(crate) struct CaptionInput {
    pub id: String,
    /// Where the image came from (path or archive member), for the output.
    pub image: String,
    pub pixels: DynamicImage,
    /// This image's own conversation instead of the captioner's question: the user's
    /// messages and the assistant's answers alternating, the user's last.
    pub messages: Option<Vec<String>>,
}

/// One output line of `mt caption`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Caption {
    pub id: String,
    pub image: String,
    pub caption: String,
    pub model: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
}

/// A model ready to caption.
pub(crate) struct Captioner {
    pub(super) model: Llava,
    pub(super) codec: TextCodec,
    pub(super) processor: ImageProcessor,
    /// How questions become prompt text.
    pub(super) format: PromptFormat,
    pieces: Vec<Piece>,
    prompt_tokens: usize,
    pub(super) tokens: PromptTokens,
    pub(super) decoding: GenerationConfig,
    pub(super) stop_strings: Vec<String>,
    seed: u64,
    pub model_name: String,
    /// The cache of the prompt tokens the last batch's rows shared, and those tokens:
    /// batches that share them again (the system prompt, usually) start from it.
    prefix: Mutex<Option<(Vec<u32>, KvCache)>>,
}

impl Captioner {
    /// Loads the checkpoint and tokenises the prompt once, in the conversation template
    /// `conv_mode` (default: the checkpoint's). A template that writes its own BOS is
    /// tokenised without the tokenizer's added tokens, any other as LLaVA's
    /// `tokenizer_image_token` does. With `stop_at_eos`, the checkpoint's end-of-sequence
    /// tokens and the template's stop text join the stops.
    pub(crate) fn new(
        ckpt: Checkpoint,
        question: &str,
        mut decoding: GenerationConfig,
        mut stop_strings: Vec<String>,
        stop_at_eos: bool,
        seed: u64,
        conv_mode: Option<&str>,
    ) -> Result<Self> {
        let codec = TextCodec::for_checkpoint(&ckpt)?;
        let processor = ImageProcessor::for_checkpoint(&ckpt)?;
        let format = PromptFormat::for_checkpoint(conv_mode, &ckpt, &codec)?;
        if stop_at_eos {
            decoding.stop_tokens.extend(codec.stop_tokens(&ckpt));
            match format.stop_text().map(|t| (t, codec.token_id(t))) {
                Some((_, Some(id))) if !decoding.stop_tokens.contains(&id) => {
                    decoding.stop_tokens.push(id)
                }
                Some((text, None)) => stop_strings.push(text.to_string()),
                _ => {}
            }
        }
        let tokens = PromptTokens::for_checkpoint(&ckpt, &codec, format.writes_bos());
        let model_name = ckpt.name();
        let model = ckpt.load()?;
        let pieces = codec.encode_prompt_with(&format.question_prompt(question)?, tokens)?;
        let prompt_tokens = prompt_len(&pieces, model.cfg.image_tokens());
        Ok(Self {
            model,
            codec,
            processor,
            format,
            pieces,
            prompt_tokens,
            tokens,
            decoding,
            stop_strings,
            seed,
            model_name,
            prefix: Mutex::new(None),
        })
    }

    /// Tokenises prompts as LLaVA's `tokenizer_image_token` does (the reference's eval
    /// script), with the BOS token the checkpoint folder `dir` names.
    pub(crate) fn use_llava_tokenization(
        &mut self,
        dir: &std::path::Path,
        question: &str,
    ) -> Result<()> {
        self.tokens = PromptTokens::Llava {
            bos: self.codec.named_token(dir, "bos_token"),
        };
        self.pieces = self
            .codec
            .encode_prompt_with(&self.format.question_prompt(question)?, self.tokens)?;
        self.prompt_tokens = prompt_len(&self.pieces, self.model.cfg.image_tokens());
        Ok(())
    }

    /// Puts `message` in the prompts as the system message (`--system`).
    pub(crate) fn set_system(&mut self, message: &str) {
        self.format = self.format.with_system(message);
    }

    /// The decoding settings in force (stop tokens included).
    pub(crate) fn generation(&self) -> &GenerationConfig {
        &self.decoding
    }

    /// Captions a batch; `on_tokens(n)` reports generated tokens as they come. One
    /// result per item, in order: an image that cannot be prepared (over a memory
    /// budget) fails alone and the others are captioned; model errors fail the call.
    pub(crate) fn caption(
        &self,
        items: &[CaptionInput],
        on_tokens: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Vec<Result<Caption>>> {
        let images: Vec<&DynamicImage> = items.iter().map(|i| &i.pixels).collect();
        let mut ready = Vec::with_capacity(items.len());
        let mut planes = Vec::with_capacity(items.len());
        let mut results: Vec<Option<Result<Caption>>> = Vec::with_capacity(items.len());
        for (item, prepared) in items.iter().zip(self.processor.planes(&images)) {
            match prepared {
                Ok(plane) => {
                    ready.push(item);
                    planes.push(plane);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut captions = self
            .caption_prepared(&ready, planes, on_tokens)?
            .into_iter();
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Ok(captions.next().expect("one caption per ready item"))))
            .collect())
    }

    /// The vision tower's and projector's rows `(n, image tokens, hidden)` of `n` images
    /// prepared as `planes` of normalised pixels.
    pub(super) fn image_features(&self, planes: Vec<Vec<f32>>) -> Result<Tensor> {
        let device = self.model.llm.embed.device();
        let n = planes.len();
        let pixels = self
            .processor
            .tensor(planes, device)?
            .to_dtype(self.model.dtype())?;
        let started = std::time::Instant::now();
        let features = kernels::inference(device, || self.model.encode_images(&pixels))?;
        tracing::debug!(
            images = n,
            seconds = started.elapsed().as_secs_f64(),
            "vision tower + projector"
        );
        Ok(features)
    }

    /// The tokenised prompt of a conversation (the user's messages and the assistant's
    /// answers alternating, the user's last), about an image or not, with `system` in
    /// place of the template's system message.
    pub(super) fn conversation_pieces(
        &self,
        messages: &[String],
        system: Option<&str>,
        image: bool,
    ) -> Result<Vec<Piece>> {
        let messages: Vec<&str> = messages.iter().map(String::as_str).collect();
        let prompt = match system {
            Some(system) => self
                .format
                .with_system(system)
                .chat_prompt_about(&messages, image),
            None => self.format.chat_prompt_about(&messages, image),
        }?;
        self.codec.encode_prompt_with(&prompt, self.tokens)
    }

    /// Captions items whose images are already `planes` of normalised pixels.
    fn caption_prepared(
        &self,
        items: &[&CaptionInput],
        planes: Vec<Vec<f32>>,
        on_tokens: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Vec<Caption>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let device = self.model.llm.embed.device();
        let features = self.image_features(planes)?;
        let own: Vec<Option<Vec<Piece>>> = items
            .iter()
            .map(|i| {
                let messages = i.messages.as_deref();
                messages.map(|m| self.conversation_pieces(m, None, true))
            })
            .map(Option::transpose)
            .collect::<Result<_>>()?;
        let pieces: Vec<&[Piece]> = (0..items.len())
            .map(|i| own[i].as_deref().unwrap_or(&self.pieces))
            .collect();
        let shared_ids = shared_prefix(&pieces);
        let shared = shared_ids.len();
        let rows = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let own_part = skip_prefix(p, shared, self.model.cfg.image_tokens());
                self.model.embed_prompt(&own_part, &[features.get(i)?])
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = self.model.left_pad_after(shared, &rows)?;
        let mut memo = self
            .prefix
            .lock()
            .map_err(|_| anyhow::anyhow!("prefix cache poisoned"))?;
        if !shared_ids.is_empty() && memo.as_ref().is_none_or(|(ids, _)| ids != shared_ids) {
            let cache = kernels::inference(device, || self.model.llm.prefix_cache(shared_ids))?;
            *memo = Some((shared_ids.to_vec(), cache));
        }
        let prefix = memo.as_ref().map(|(_, cache)| cache).filter(|_| shared > 0);
        let seeds: Vec<u64> = items
            .iter()
            .map(|i| keyed(self.seed, mix64(fnv1a(&i.id)), 0))
            .collect();
        let stop_text = |_: usize, tokens: &[u32]| -> bool {
            !self.stop_strings.is_empty()
                && self
                    .codec
                    .decode(tokens)
                    .is_ok_and(|text| stop_at(&text, &self.stop_strings).is_some())
        };
        let outputs = generate(
            &self.model,
            &batch,
            prefix,
            &self.decoding,
            &seeds,
            &stop_text,
            on_tokens,
        )?;
        let image_tokens = self.model.cfg.image_tokens();
        items
            .iter()
            .zip(outputs)
            .enumerate()
            .map(|(i, (item, out))| {
                let mut text = self.codec.decode(&out.tokens)?;
                if let Some(cut) = stop_at(&text, &self.stop_strings) {
                    text.truncate(cut);
                }
                Ok(Caption {
                    id: item.id.clone(),
                    image: item.image.clone(),
                    caption: text.trim().to_string(),
                    model: self.model_name.clone(),
                    prompt_tokens: own[i]
                        .as_ref()
                        .map_or(self.prompt_tokens, |p| prompt_len(p, image_tokens)),
                    new_tokens: out.tokens.len(),
                })
            })
            .collect()
    }
}
