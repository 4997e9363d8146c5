//! LLaVA conversations as training sequences, exactly as the reference's
//! `preprocess_multimodal` + `preprocess_llama3` (MedTrinity-25M `llava/train/train.py`)
//! build them: `<image>` moved to the front of its message, the `llama3` template
//! (separator style MPT), `tokenizer_image_token`'s chunking (including its habit of
//! dropping the first token of every chunk after an image when the prompt starts with
//! BOS), instruction tokens masked per round, and the whole sample masked when the
//! per-round lengths do not add up to the sequence length.

use std::path::Path;

use anyhow::{Result, bail};
use serde::Deserialize;

use crate::core::model::arch::llava::Piece;
use crate::core::model::engine::prompt::{
    IMAGE_PLACEHOLDER, LLAMA3_SYSTEM, PromptTokens, TextCodec,
};

/// Label of a position that takes no part in the loss.
pub(crate) const IGNORE_INDEX: i64 = -100;
/// The id an `<image>` placeholder gets in `input_ids` (replaced by the image rows).
pub(crate) const IMAGE_TOKEN_INDEX: i64 = -200;

const SEP: &str = "<|eot_id|>";
const USER: &str = "<|start_header_id|>user<|end_header_id|>\n\n";
const ASSISTANT: &str = "<|start_header_id|>assistant<|end_header_id|>\n\n";

/// One message of a conversation (`{"from": "human" | "gpt", "value": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Turn {
    /// The speaker: `human` or `gpt`.
    pub from: String,
    /// The message text (`<image>` where the image goes).
    pub value: String,
}

/// A tokenised training sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, `IMAGE_TOKEN_INDEX` where an image goes.
    pub input_ids: Vec<i64>,
    /// The target of every position (`IGNORE_INDEX` = not trained on).
    pub labels: Vec<i64>,
    /// The reference's "tokenization mismatch": every label was masked.
    pub mismatch: bool,
}

/// The tokenizer's BOS and padding ids as the reference's Hugging Face tokenizer has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `tokenizer.bos_token_id`, if the tokenizer names one.
    pub bos: Option<u32>,
    /// `tokenizer.pad_token_id`: the configured pad token, else `<|end_of_text|>`, else EOS.
    pub pad: u32,
}

impl SpecialTokens {
    /// Reads `tokenizer_config.json` / `special_tokens_map.json` of a checkpoint folder.
    pub fn load(dir: &Path, codec: &TextCodec) -> Result<Self> {
        let named = |key: &str| codec.named_token(dir, key);
        let bos = named("bos_token");
        let pad = named("pad_token")
            .or_else(|| codec.token_id("<|end_of_text|>"))
            .or_else(|| named("eos_token"));
        let Some(pad) = pad else {
            bail!(
                "{}: the tokenizer has no pad token, no <|end_of_text|> and no eos token",
                dir.display()
            );
        };
        Ok(Self { bos, pad })
    }
}

/// Encodes conversations for the `llama3` template.
pub struct Llama3Encoder<'a> {
    /// The tokenizer.
    pub codec: &'a TextCodec,
    /// Its BOS and pad ids.
    pub specials: SpecialTokens,
    /// `model_max_length`: text-only samples are truncated to it (as the reference's
    /// tokenizer call does), and the mismatch check only applies below it.
    pub max_len: usize,
}

impl Llama3Encoder<'_> {
    /// `preprocess_multimodal` (when `has_image`) then `preprocess_llama3` for one sample.
    /// Fails (naming the turn) where the reference would raise: an unknown speaker or
    /// turns that do not alternate human / gpt.
    pub fn encode(&self, turns: &[Turn], has_image: bool) -> Result<Encoded> {
        let prompt = llama3_conversation(turns, has_image)?;
        let mut input_ids = self.tokenize(&prompt, has_image)?;
        if !has_image {
            input_ids.truncate(self.max_len);
        }
        let pad = i64::from(self.specials.pad);
        let total_len = input_ids.iter().filter(|&&t| t != pad).count();
        let mut labels = input_ids.clone();
        let mut cur_len = 0usize;
        let after_instruction = format!("{SEP}{ASSISTANT}");
        for (i, round) in rounds(&prompt).iter().enumerate() {
            if round.is_empty() {
                break;
            }
            let parts: Vec<&str> = round.split(&after_instruction).collect();
            if parts.len() != 2 {
                break;
            }
            let instruction = format!("{}{after_instruction}", parts[0]);
            let mut round_len = self.tokenize(round, has_image)?.len() + 1;
            let mut instruction_len = self.tokenize(&instruction, has_image)?.len();
            if i > 0 {
                round_len -= 1;
                instruction_len = instruction_len.saturating_sub(1);
            }
            mask(&mut labels, cur_len, cur_len + instruction_len);
            cur_len += round_len;
        }
        mask(&mut labels, cur_len, usize::MAX);
        let mismatch = cur_len < self.max_len && cur_len != total_len;
        if mismatch {
            mask(&mut labels, 0, usize::MAX);
        }
        Ok(Encoded {
            input_ids,
            labels,
            mismatch,
        })
    }

    /// `tokenizer_image_token(text)` when `has_image`, else `tokenizer(text).input_ids`.
    fn tokenize(&self, text: &str, has_image: bool) -> Result<Vec<i64>> {
        if !has_image {
            return Ok(widen(self.codec.encode_with_specials(text)?));
        }
        let how = PromptTokens::Llava {
            bos: self.specials.bos,
        };
        let pieces = self.codec.encode_prompt_with(text, how)?;
        Ok(pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Text(ids) => widen(ids.clone()),
                Piece::Image => vec![IMAGE_TOKEN_INDEX],
            })
            .collect())
    }
}

/// The `llama3` prompt of a conversation: `preprocess_multimodal`'s `<image>` move (when
/// `has_image`), a leading non-human turn dropped, then `conv.get_prompt()`.
pub(crate) fn llama3_conversation(turns: &[Turn], has_image: bool) -> Result<String> {
    let mut turns: Vec<(usize, String)> = turns
        .iter()
        .enumerate()
        .map(|(t, turn)| {
            let role = match turn.from.as_str() {
                "human" | "user" => 0,
                "gpt" | "assistant" => 1,
                other => {
                    bail!("conversations[{t}]: unknown speaker `{other}` (expected human or gpt)")
                }
            };
            let value = if has_image && turn.value.contains(IMAGE_PLACEHOLDER) {
                image_first(&turn.value)
            } else {
                turn.value.clone()
            };
            Ok((role, value))
        })
        .collect::<Result<_>>()?;
    let mut first = 0;
    if turns.first().is_some_and(|(role, _)| *role != 0) {
        turns.remove(0);
        first = 1;
    }
    let mut prompt = format!(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{LLAMA3_SYSTEM}{SEP}"
    );
    for (j, (role, value)) in turns.iter().enumerate() {
        if *role != j % 2 {
            bail!(
                "conversations[{}]: expected a {} turn (turns must alternate human, gpt)",
                j + first,
                ["human", "gpt"][j % 2]
            );
        }
        prompt.push_str([USER, ASSISTANT][*role]);
        if !value.is_empty() {
            prompt.push_str(value);
            prompt.push_str(SEP);
        }
    }
    Ok(prompt)
}

/// `preprocess_multimodal` for one message: `"<image>\n" + rest.strip()`, stripped.
fn image_first(value: &str) -> String {
    let rest = value.replace(IMAGE_PLACEHOLDER, "");
    let moved = format!("{IMAGE_PLACEHOLDER}\n{}", py_strip(&rest));
    py_strip(&moved).to_string()
}

/// Python's `str.strip()`: Unicode whitespace plus the ASCII separators `\x1c`..`\x1f`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// The reference's rounds: system + first exchange, then one per later exchange
/// (`rounds[:3]` joined, then pairs from index 3), with Python's `split` semantics.
fn rounds(prompt: &str) -> Vec<String> {
    let pieces: Vec<&str> = prompt.split(SEP).collect();
    let mut out = vec![pieces[..pieces.len().min(3)].join(SEP)];
    for start in (3..pieces.len()).step_by(2) {
        out.push(pieces[start..(start + 2).min(pieces.len())].join(SEP));
    }
    out
}

/// `labels[from..to] = IGNORE_INDEX` with Python's clamped slicing.
fn mask(labels: &mut [i64], from: usize, to: usize) {
    let end = to.min(labels.len());
    if from < end {
        labels[from..end].fill(IGNORE_INDEX);
    }
}

fn widen(ids: Vec<u32>) -> Vec<i64> {
    ids.into_iter().map(i64::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(from: &str, value: &str) -> Turn {
        Turn {
            from: from.into(),
            value: value.into(),
        }
    }

    #[test]
    fn image_moves_to_the_front_and_the_template_matches_conv_llama3() {
        let p = llama3_conversation(
            &[
                turn("human", "What is this?\n<image> "),
                turn("gpt", "A scan."),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            p,
            format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{LLAMA3_SYSTEM}<|eot_id|>\
                 {USER}<image>\nWhat is this?<|eot_id|>{ASSISTANT}A scan.<|eot_id|>"
            )
        );
        // Without an image the text is left alone; an empty answer gets no separator.
        let p = llama3_conversation(
            &[
                turn("gpt", "skipped"),
                turn("human", " <image> x"),
                turn("gpt", ""),
            ],
            false,
        )
        .unwrap();
        assert!(
            p.ends_with(&format!("{USER} <image> x<|eot_id|>{ASSISTANT}")),
            "{p}"
        );
    }

    #[test]
    fn bad_speakers_and_order_are_named() {
        let err =
            llama3_conversation(&[turn("human", "a"), turn("robot", "b")], false).unwrap_err();
        assert!(
            err.to_string()
                .contains("conversations[1]: unknown speaker `robot`")
        );
        let err =
            llama3_conversation(&[turn("human", "a"), turn("human", "b")], false).unwrap_err();
        assert!(
            err.to_string()
                .contains("conversations[1]: expected a gpt turn"),
            "{err}"
        );
    }

    #[test]
    fn rounds_follow_the_reference_split() {
        let r = rounds("s<|eot_id|>u1<|eot_id|>a1<|eot_id|>u2<|eot_id|>a2<|eot_id|>");
        assert_eq!(r, vec!["s<|eot_id|>u1<|eot_id|>a1", "u2<|eot_id|>a2", ""]);
        assert_eq!(py_strip("\x1c é \u{3000}"), "é");
    }
}
