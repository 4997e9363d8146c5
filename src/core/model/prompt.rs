//! Prompts: the `llama3` conversation template as the MedTrinity-25M / LLaVA-pp code
//! defines it (`conv_llama3`, separator style MPT), and tokenisation around `<image>`
//! placeholders with the checkpoint's `tokenizer.json`.
//!
//! The template text starts with `<|begin_of_text|>`, so chunks are encoded without
//! the tokenizer's own special-token post-processing: exactly one BOS.

use std::path::Path;

use anyhow::{Result, anyhow};
use tokenizers::Tokenizer;

use super::llava::Piece;

/// The placeholder an image takes in prompt text.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// `conv_llama3.system`'s message.
pub const LLAMA3_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// A single-turn `llama3` prompt: the image first, then the question, as LLaVA's eval
/// scripts build it (`<image>\n` + question) unless the question places `<image>` itself.
pub fn llama3_prompt(question: &str) -> String {
    let user = if question.contains(IMAGE_PLACEHOLDER) {
        question.to_string()
    } else {
        format!("{IMAGE_PLACEHOLDER}\n{question}")
    };
    format!(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{LLAMA3_SYSTEM}<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    )
}

/// The checkpoint's tokenizer.
pub struct TextCodec {
    tokenizer: Tokenizer,
}

impl TextCodec {
    /// Loads `tokenizer.json` from a checkpoint folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        Ok(Self { tokenizer })
    }

    /// Token ids of `text` without added special tokens (specials written in the text
    /// itself, like `<|eot_id|>`, are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenise prompt: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` as a Hugging Face tokenizer call (`tokenizer(text)`) gives them:
    /// with the tokenizer's own special tokens added (Llama-3's BOS, when its
    /// post-processor adds one).
    pub fn encode_with_specials(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow!("cannot tokenise text: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A prompt split at its `<image>` placeholders.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<Piece>> {
        let mut pieces = Vec::new();
        for (i, chunk) in text.split(IMAGE_PLACEHOLDER).enumerate() {
            if i > 0 {
                pieces.push(Piece::Image);
            }
            pieces.push(Piece::Text(self.encode(chunk)?));
        }
        Ok(pieces)
    }

    /// Text of generated ids, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| anyhow!("cannot decode tokens: {e}"))
    }

    /// The id of a token written out, e.g. `<|eot_id|>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
}

/// Tokens a prompt occupies once each image contributes `image_tokens` rows.
pub fn prompt_len(pieces: &[Piece], image_tokens: usize) -> usize {
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
    fn llama3_prompt_matches_conv_llama3() {
        let p = llama3_prompt("What is shown?");
        assert_eq!(
            p,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nA chat between a curious user and an \
             artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the \
             user's questions.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is shown?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            llama3_prompt("<image> then text")
                .matches(IMAGE_PLACEHOLDER)
                .count(),
            1
        );
    }
}
