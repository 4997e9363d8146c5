//! Prompts: the `llama3` conversation template as the MedTrinity-25M / LLaVA-pp code
//! defines it (`conv_llama3`, separator style MPT), and tokenisation around `<image>`
//! placeholders with the checkpoint's `tokenizer.json`.
//!
//! The template text starts with `<|begin_of_text|>`, so chunks are encoded without
//! the tokenizer's own special-token post-processing: exactly one BOS.

use std::path::Path;

use anyhow::{Result, anyhow};
use tokenizers::Tokenizer;

use super::chat_template::ChatTemplate;
use super::conversation::{self, Conversation};
use crate::core::model::arch::llava::Piece;
use crate::core::model::load::checkpoint::Checkpoint;
use crate::core::model::load::config::Layout;

/// The placeholder an image takes in prompt text.
pub(crate) const IMAGE_PLACEHOLDER: &str = "<image>";

/// A single-turn `llama3` prompt: the image first, then the question, as LLaVA's eval
/// scripts build it (`<image>\n` + question) unless the question places `<image>` itself.
pub fn llama3_prompt(question: &str) -> String {
    Conversation::new(conversation::DEFAULT)
        .and_then(|conv| conv.question_prompt(question))
        .expect("the llama3 template renders any question")
}

/// How a question becomes prompt text: one of LLaVA's conversation templates, or the
/// Jinja chat template a llava-hf checkpoint carries.
#[derive(Debug, Clone)]
pub(crate) enum PromptFormat {
    /// LLaVA's `conversation.py` template (`--conv-mode`).
    Conversation(Conversation),
    /// The checkpoint's own chat template, as its processor applies it.
    Chat(ChatTemplate),
}

impl PromptFormat {
    /// `--conv-mode` when given; else a llava-hf checkpoint's chat template, as
    /// transformers' processor uses it; else the family's conversation template
    /// ([`Conversation::for_checkpoint`]).
    pub(crate) fn for_checkpoint(
        conv_mode: Option<&str>,
        ckpt: &Checkpoint,
        codec: &TextCodec,
    ) -> Result<Self> {
        if conv_mode.is_none()
            && ckpt.config.layout == Layout::Hf
            && let Some(chat) = ChatTemplate::for_checkpoint(&ckpt.dir)?
        {
            return Ok(Self::Chat(chat));
        }
        Conversation::for_checkpoint(conv_mode, ckpt, codec).map(Self::Conversation)
    }

    /// The prompt of one question about one image.
    pub(crate) fn question_prompt(&self, question: &str) -> Result<String> {
        self.chat_prompt(&[question])
    }

    /// The format with `message` as the system message (a chat template gets a system
    /// turn first).
    pub(crate) fn with_system(&self, message: &str) -> Self {
        match self {
            Self::Conversation(conv) => Self::Conversation(conv.with_system(message)),
            Self::Chat(chat) => Self::Chat(chat.with_system(message)),
        }
    }

    /// The prompt of a conversation about one image: the user's messages and the
    /// assistant's answers alternating, the user's last.
    pub(crate) fn chat_prompt(&self, messages: &[&str]) -> Result<String> {
        self.chat_prompt_about(messages, true)
    }

    /// [`PromptFormat::chat_prompt`], or the conversation without an image when `image`
    /// is false.
    pub(crate) fn chat_prompt_about(&self, messages: &[&str], image: bool) -> Result<String> {
        match self {
            Self::Conversation(conv) => conv.chat_prompt_about(messages, image),
            Self::Chat(chat) => chat.chat_prompt_about(messages, image),
        }
    }

    /// Whether the prompt text carries its BOS and is tokenised without the tokenizer's
    /// added tokens (a chat template's text goes through the tokenizer as the processor
    /// sends it: with them).
    pub(crate) fn writes_bos(&self) -> bool {
        match self {
            Self::Conversation(conv) => conv.writes_bos(),
            Self::Chat(_) => false,
        }
    }

    /// The text that ends an answer beyond the end-of-sequence tokens.
    pub(crate) fn stop_text(&self) -> Option<&'static str> {
        match self {
            Self::Conversation(conv) => conv.stop_text(),
            Self::Chat(_) => None,
        }
    }
}

/// The checkpoint's tokenizer.
pub struct TextCodec {
    tokenizer: Tokenizer,
    /// `clean_up_tokenization_spaces` of tokenizer_config.json: transformers' decode
    /// then removes the space before `.`, `?`, `!`, `,`, `'s`, `n't`, ...
    clean_up_spaces: bool,
}

/// How prompt text becomes tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PromptTokens {
    /// Chunks without the tokenizer's added special tokens: the template's one BOS.
    Plain,
    /// LLaVA's `tokenizer_image_token` (the reference's eval and training code): each
    /// chunk as `tokenizer(chunk)`; when the first chunk starts with `bos`, that token is
    /// kept once and the first token of every chunk dropped. With a BOS-adding tokenizer
    /// (Meta-Llama-3's) and the template's own BOS, the prompt starts with two.
    Llava { bos: Option<u32> },
    /// transformers' `LlavaProcessor`: the whole text at once, `<image>` being the
    /// tokenizer's own token `image` (so the text after it is not tokenised as a new
    /// start), the tokenizer's special tokens added when `specials`.
    Whole { specials: bool, image: u32 },
}

impl PromptTokens {
    /// How a checkpoint's prompts are tokenised: as its processor does for a llava-hf
    /// checkpoint whose tokenizer has the image token, else as LLaVA's
    /// `tokenizer_image_token`; without the tokenizer's BOS when the template writes
    /// its own.
    pub(crate) fn for_checkpoint(ckpt: &Checkpoint, codec: &TextCodec, writes_bos: bool) -> Self {
        match ckpt.config.image_token_index {
            Some(image) if codec.token_id(IMAGE_PLACEHOLDER) == Some(image) => Self::Whole {
                specials: !writes_bos,
                image,
            },
            _ if writes_bos => Self::Plain,
            _ => Self::Llava {
                bos: codec.named_token(&ckpt.dir, "bos_token"),
            },
        }
    }
}

impl TextCodec {
    /// The tokenizer of a checkpoint.
    pub fn for_checkpoint(ckpt: &Checkpoint) -> Result<Self> {
        Self::load(&ckpt.dir)
    }

    /// Token ids that end generation with a checkpoint: its config's and
    /// `generation_config.json`'s `eos_token_id`, plus `<|eot_id|>` and `<|end_of_text|>`
    /// when this tokenizer has them.
    pub(crate) fn stop_tokens(&self, ckpt: &Checkpoint) -> Vec<u32> {
        let mut ids = ckpt.config.text.eos_token_ids.clone();
        if let Ok(text) = std::fs::read_to_string(ckpt.dir.join("generation_config.json"))
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
        {
            match json.get("eos_token_id") {
                Some(serde_json::Value::Array(a)) => {
                    ids.extend(a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32))
                }
                Some(v) => ids.extend(v.as_u64().map(|v| v as u32)),
                None => {}
            }
        }
        ids.extend(
            ["<|eot_id|>", "<|end_of_text|>"]
                .iter()
                .filter_map(|t| self.token_id(t)),
        );
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Loads `tokenizer.json` (or, without one, the SentencePiece `tokenizer.model`) and
    /// the decode settings of `tokenizer_config.json` from a checkpoint folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let tokenizer = if !path.exists() && dir.join("tokenizer.model").is_file() {
            super::sentencepiece::load(dir)?
        } else {
            Tokenizer::from_file(&path)
                .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?
        };
        let clean_up_spaces = tokenizer_settings(dir)
            .iter()
            .find_map(|j| j.get("clean_up_tokenization_spaces")?.as_bool())
            .unwrap_or(false);
        Ok(Self {
            tokenizer,
            clean_up_spaces,
        })
    }

    /// A setting of the checkpoint's tokenizer_config.json (or special_tokens_map.json).
    pub(crate) fn setting(&self, dir: &Path, key: &str) -> Option<serde_json::Value> {
        tokenizer_settings(dir)
            .into_iter()
            .find_map(|mut json| json.get_mut(key).map(serde_json::Value::take))
    }

    /// The id of a special token the checkpoint names (`bos_token`, `pad_token`, ...) in
    /// tokenizer_config.json or special_tokens_map.json.
    pub(crate) fn named_token(&self, dir: &Path, key: &str) -> Option<u32> {
        tokenizer_settings(dir)
            .iter()
            .find_map(|json| match json.get(key)? {
                serde_json::Value::String(s) => self.token_id(s),
                serde_json::Value::Object(o) => self.token_id(o.get("content")?.as_str()?),
                _ => None,
            })
    }

    /// Token ids of `text` without added special tokens (specials written in the text
    /// itself, like `<|eot_id|>`, are recognised).
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenise prompt: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` as a Hugging Face tokenizer call (`tokenizer(text)`) gives them:
    /// with the tokenizer's own special tokens added (Llama-3's BOS, when its
    /// post-processor adds one).
    pub(crate) fn encode_with_specials(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow!("cannot tokenise text: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A prompt split at its `<image>` placeholders.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<Piece>> {
        self.encode_prompt_with(text, PromptTokens::Plain)
    }

    /// A prompt split at its `<image>` placeholders, tokenised as `how` says.
    pub(crate) fn encode_prompt_with(&self, text: &str, how: PromptTokens) -> Result<Vec<Piece>> {
        if let PromptTokens::Whole { specials, image } = how {
            let ids = match specials {
                true => self.encode_with_specials(text)?,
                false => self.encode(text)?,
            };
            let mut pieces = Vec::new();
            for (i, chunk) in ids.split(|&t| t == image).enumerate() {
                if i > 0 {
                    pieces.push(Piece::Image);
                }
                pieces.push(Piece::Text(chunk.to_vec()));
            }
            return Ok(pieces);
        }
        let chunks = text
            .split(IMAGE_PLACEHOLDER)
            .map(|c| match how {
                PromptTokens::Plain => self.encode(c),
                _ => self.encode_with_specials(c),
            })
            .collect::<Result<Vec<_>>>()?;
        let bos = match how {
            PromptTokens::Llava { bos } => bos,
            _ => None,
        };
        let first = chunks[0].first().copied();
        let offset = usize::from(bos.is_some() && first == bos);
        let mut pieces = Vec::with_capacity(2 * chunks.len());
        for (i, mut chunk) in chunks.into_iter().enumerate() {
            if i > 0 {
                pieces.push(Piece::Image);
            }
            let keep_bos = i == 0 && offset == 1;
            chunk.drain(..offset.min(chunk.len()));
            if keep_bos {
                chunk.insert(0, first.expect("the first chunk starts with BOS"));
            }
            pieces.push(Piece::Text(chunk));
        }
        Ok(pieces)
    }

    /// Text of generated ids, special tokens dropped (and spaces cleaned up as
    /// transformers does when the checkpoint asks for it).
    pub(crate) fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self
            .tokenizer
            .decode(ids, true)
            .map_err(|e| anyhow!("cannot decode tokens: {e}"))?;
        Ok(match self.clean_up_spaces {
            true => clean_up_tokenization(&text),
            false => text,
        })
    }

    /// The id of a token written out, e.g. `<|eot_id|>`.
    pub(crate) fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
}

/// tokenizer_config.json and special_tokens_map.json of a checkpoint folder, where readable.
fn tokenizer_settings(dir: &Path) -> Vec<serde_json::Value> {
    ["tokenizer_config.json", "special_tokens_map.json"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect()
}

/// transformers' `clean_up_tokenization`, replacement for replacement.
fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// Tokens a prompt occupies once each image contributes `image_tokens` rows.
pub(crate) fn prompt_len(pieces: &[Piece], image_tokens: usize) -> usize {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(ids) => ids.len(),
            Piece::Image => image_tokens,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llava_tokenization_keeps_the_double_bos_of_a_bos_adding_tokenizer() {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let (bos_dir, plain_dir) = (
            testdata.join("train/tokenizer-bos"),
            testdata.join("models/tiny-llava"),
        );
        let text = llama3_prompt("What is shown?");
        let with_bos = TextCodec::load(&bos_dir).unwrap();
        let bos = with_bos.named_token(&bos_dir, "bos_token");
        assert!(bos.is_some());
        let plain = with_bos.encode_prompt(&text).unwrap();
        let llava = with_bos
            .encode_prompt_with(&text, PromptTokens::Llava { bos })
            .unwrap();
        let ids = |p: &[Piece]| -> Vec<Option<u32>> {
            p.iter()
                .flat_map(|p| match p {
                    Piece::Text(ids) => ids.iter().map(|&i| Some(i)).collect(),
                    Piece::Image => vec![None],
                })
                .collect()
        };
        let (plain, llava) = (ids(&plain), ids(&llava));
        assert_eq!(llava.len(), plain.len() + 1);
        assert_eq!(llava[0], bos);
        assert_eq!(
            &llava[1..],
            &plain[..],
            "one extra BOS in front, nothing else"
        );
        // With a tokenizer that adds nothing, the template's own BOS still sets the
        // offset: the first token after the image is dropped, as in the reference.
        let tiny = TextCodec::load(&plain_dir).unwrap();
        let bos = tiny.named_token(&plain_dir, "bos_token");
        let plain = ids(&tiny.encode_prompt(&text).unwrap());
        let llava = ids(&tiny
            .encode_prompt_with(&text, PromptTokens::Llava { bos })
            .unwrap());
        let image = plain.iter().position(Option::is_none).unwrap();
        let mut dropped = plain.clone();
        dropped.remove(image + 1);
        assert_eq!(llava, dropped);
    }

    #[test]
    fn spaces_are_cleaned_up_as_transformers_does() {
        assert_eq!(
            clean_up_tokenization("yes , it is n't the lung 's apex ."),
            "yes, it isn't the lung's apex."
        );
    }
}
