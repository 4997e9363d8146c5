//! LLaVA conversations as training sequences, exactly as the reference's
//! `preprocess_multimodal` + `preprocess` build them (MedTrinity-25M `llava/train/train.py`,
//! and LLaVA-pp's `Phi-3-V/train.py` for `phi3`): `<image>` moved to the front of its
//! message, the template's prompt, `tokenizer_image_token`'s chunking (including its habit
//! of dropping the first token of every chunk after an image when the prompt starts with
//! BOS), instruction tokens masked per round with each `preprocess_*` function's own length
//! arithmetic, and the whole sample masked when the per-round lengths do not add up to
//! the sequence length (the reference's "tokenization mismatch").

use std::path::Path;

use anyhow::{Result, bail};
use serde::Deserialize;

use crate::core::model::arch::llava::Piece;
use crate::core::model::engine::conversation::{Conversation, Style, TemplateParts};
use crate::core::model::engine::prompt::{IMAGE_PLACEHOLDER, PromptTokens, TextCodec};
use crate::core::model::load::checkpoint::Checkpoint;

/// Label of a position that takes no part in the loss.
pub(crate) const IGNORE_INDEX: i64 = -100;
/// The id an `<image>` placeholder gets in `input_ids` (replaced by the image rows).
pub(crate) const IMAGE_TOKEN_INDEX: i64 = -200;

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

/// The tokenizer's BOS and padding ids and `legacy` flag, as the reference's Hugging Face
/// tokenizer has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `tokenizer.bos_token_id`, if the tokenizer names one.
    pub bos: Option<u32>,
    /// `tokenizer.pad_token_id`: the reference sets `pad_token = unk_token` for every
    /// template but v0, so the unk token; without one the configured pad token, else
    /// `<|end_of_text|>`, else EOS.
    pub pad: u32,
    /// `tokenizer.legacy` (`preprocess_v1`, `_mpt` and `_phi3` count differently with a
    /// legacy tokenizer): the config's `legacy`, else true for a `LlamaTokenizer` (what
    /// transformers 4 defaults to, the version the reference pins), else false.
    pub legacy: bool,
}

impl SpecialTokens {
    /// Reads `tokenizer_config.json` / `special_tokens_map.json` of a checkpoint folder.
    pub fn load(dir: &Path, codec: &TextCodec) -> Result<Self> {
        let named = |key: &str| codec.named_token(dir, key);
        let bos = named("bos_token");
        let pad = named("unk_token")
            .or_else(|| named("pad_token"))
            .or_else(|| codec.token_id("<|end_of_text|>"))
            .or_else(|| named("eos_token"));
        let Some(pad) = pad else {
            bail!(
                "{}: the tokenizer has no unk or pad token, no <|end_of_text|> and no eos token",
                dir.display()
            );
        };
        let legacy = codec.setting(dir, "legacy").and_then(|v| v.as_bool());
        let llama_class = codec
            .setting(dir, "tokenizer_class")
            .and_then(|v| v.as_str().map(|c| c.starts_with("Llama")))
            .unwrap_or(false);
        Ok(Self {
            bos,
            pad,
            legacy: legacy.unwrap_or(llama_class),
        })
    }
}

/// Which of the reference's `preprocess_*` functions a template trains with (`preprocess`'s
/// dispatch: separator style first, then `version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preprocess {
    /// `preprocess_plain`: the image, the caption, `sep` (stage-1 pretraining).
    Plain,
    /// `preprocess_llama_2` (`llama_2`, `llava_llama_2`, `mistral_instruct`).
    Llama2,
    /// `preprocess_v1` (versions `v1*`: `vicuna_v1`, `llava_v1`, `v1_mmtag`).
    V1,
    /// `preprocess_mpt` (version `mpt`: `mpt`, `chatml_direct`).
    Mpt,
    /// `preprocess_llama3` (MedTrinity's `llama3`).
    Llama3,
    /// LLaVA-pp's `preprocess_phi3` (`phi3_instruct`).
    Phi3,
}

impl Preprocess {
    fn of(parts: &TemplateParts) -> Option<Self> {
        Some(match (parts.style, parts.version) {
            (Style::Plain, _) => Self::Plain,
            (Style::Llama2, _) => Self::Llama2,
            (Style::Two, v) if v.starts_with("v1") => Self::V1,
            (Style::Mpt, "mpt") => Self::Mpt,
            (Style::Mpt, "llama3") => Self::Llama3,
            (Style::Mpt, "phi3") => Self::Phi3,
            _ => return None,
        })
    }

    /// What is added to the token counts of round `i` (`round_len`, `instruction_len`),
    /// exactly as each function adjusts them.
    fn adjust(self, i: usize, legacy: bool) -> (i64, i64) {
        let later = i64::from(i > 0);
        match self {
            Self::Plain => (0, 0),
            Self::Llama2 => (0, -2),
            Self::V1 if i > 0 && !legacy => (-1, -3),
            Self::V1 => (0, -2),
            Self::Mpt => (later * i64::from(legacy), -1 + later * i64::from(legacy)),
            Self::Llama3 => (1 - later, -later),
            Self::Phi3 if i == 0 => (1, 0),
            Self::Phi3 => (-2 + i64::from(legacy), -3 + i64::from(legacy)),
        }
    }
}

/// A conversation template that trains: its prompt and its `preprocess_*` function.
#[derive(Debug, Clone)]
pub struct TrainTemplate {
    conv: Conversation,
    preprocess: Preprocess,
}

impl TrainTemplate {
    /// The template `name` (a `conv_templates` key, as LLaVA's `--version`).
    pub fn new(name: &str) -> Result<Self> {
        Self::from_conversation(Conversation::new(name)?)
    }

    /// `--conv-mode`, else the checkpoint family's template (as inference picks it); a
    /// template whose special tokens the tokenizer lacks is refused.
    pub(crate) fn for_checkpoint(
        name: Option<&str>,
        ckpt: &Checkpoint,
        codec: &TextCodec,
    ) -> Result<Self> {
        Self::from_conversation(Conversation::for_checkpoint(name, ckpt, codec)?)
    }

    fn from_conversation(conv: Conversation) -> Result<Self> {
        let Some(preprocess) = Preprocess::of(&conv.parts()) else {
            bail!(
                "conversation template `{}` trains with the reference's `### ` fallback \
                 (`_add_speaker_and_signal`), which mt does not reproduce; train with one of \
                 plain, vicuna_v1, llava_v1, v1_mmtag, llama_2, llava_llama_2, \
                 mistral_instruct, mpt, chatml_direct, llama3, phi3_instruct",
                conv.name()
            );
        };
        Ok(Self { conv, preprocess })
    }

    /// The template's name.
    pub fn name(&self) -> &'static str {
        self.conv.name()
    }
}

/// Encodes conversations with a template, as the reference's data set does per sample.
pub struct ConversationEncoder<'a> {
    /// The tokenizer.
    pub codec: &'a TextCodec,
    /// Its BOS and pad ids.
    pub specials: SpecialTokens,
    /// `model_max_length`: text-only samples are truncated to it (as the reference's
    /// tokenizer call does), and the mismatch check only applies below it.
    pub max_len: usize,
    /// The conversation template.
    pub template: TrainTemplate,
}

impl ConversationEncoder<'_> {
    /// `preprocess_multimodal` (when `has_image`) then `preprocess` for one sample. Fails
    /// (naming the turn) where the reference would raise: an unknown speaker, turns that do
    /// not alternate human / gpt, a `plain` sample that is not one image and its caption.
    pub fn encode(&self, turns: &[Turn], has_image: bool) -> Result<Encoded> {
        let parts = self.template.conv.parts();
        let mmtag = parts.version.contains("mmtag");
        let values: Vec<String> = turns
            .iter()
            .map(|turn| {
                if has_image && turn.value.contains(IMAGE_PLACEHOLDER) {
                    let moved = image_first(&turn.value);
                    if mmtag {
                        return moved.replace(IMAGE_PLACEHOLDER, "<Image><image></Image>");
                    }
                    moved
                } else {
                    turn.value.clone()
                }
            })
            .collect();
        if self.template.preprocess == Preprocess::Plain {
            return self.plain(&values, parts.sep);
        }
        let Some(opening) = turns.first() else {
            bail!("conversations: no messages");
        };
        // A first message that is not the human's is dropped (`source = source[1:]`).
        let first = usize::from(role(opening, 0)? != 0);
        for (j, turn) in turns.iter().enumerate().skip(first) {
            let r = role(turn, j)?;
            if r != (j - first) % 2 {
                bail!(
                    "conversations[{j}]: expected a {} turn (turns must alternate human, gpt)",
                    ["human", "gpt"][(j - first) % 2]
                );
            }
        }
        let messages: Vec<&str> = values[first..].iter().map(String::as_str).collect();
        let prompt = self.template.conv.messages_prompt(&messages)?;
        let mut input_ids = self.tokenize(&prompt, has_image)?;
        if !has_image {
            input_ids.truncate(self.max_len);
        }
        let pad = i64::from(self.specials.pad);
        let total_len = input_ids.iter().filter(|&&t| t != pad).count() as i64;
        let mut labels = input_ids.clone();
        let (rounds, sep, mut cur_len) = match self.template.preprocess {
            Preprocess::V1 => (
                py_split(&prompt, parts.sep2.unwrap_or_default())
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
                format!("{}{}: ", parts.sep, parts.roles[1]),
                1,
            ),
            Preprocess::Llama2 => (
                py_split(&prompt, parts.sep2.unwrap_or_default())
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                "[/INST] ".to_string(),
                1,
            ),
            _ => (
                rejoined_rounds(&prompt, parts.sep),
                format!("{}{}", parts.sep, parts.roles[1]),
                0,
            ),
        };
        mask(&mut labels, 0, cur_len);
        for (i, round) in rounds.iter().enumerate() {
            if round.is_empty() {
                break;
            }
            let pieces = py_split(round, &sep);
            if pieces.len() != 2 {
                break;
            }
            let instruction = format!("{}{sep}", pieces[0]);
            let (dr, di) = self.template.preprocess.adjust(i, self.specials.legacy);
            let round_len = self.tokenize(round, has_image)?.len() as i64 + dr;
            let instruction_len = self.tokenize(&instruction, has_image)?.len() as i64 + di;
            mask(&mut labels, cur_len, cur_len + instruction_len);
            cur_len += round_len;
        }
        mask(&mut labels, cur_len, i64::MAX);
        let mismatch = cur_len < self.max_len as i64 && cur_len != total_len;
        if mismatch {
            mask(&mut labels, 0, i64::MAX);
        }
        Ok(Encoded {
            input_ids,
            labels,
            mismatch,
        })
    }

    /// `preprocess_plain`: one image message and its caption become `<image>` + caption +
    /// `sep`, the image position unlabelled.
    fn plain(&self, values: &[String], sep: &str) -> Result<Encoded> {
        if values.len() != 2 {
            bail!(
                "the plain template trains on one image and its caption: this sample has {} \
                 messages, not 2",
                values.len()
            );
        }
        if !values[0].contains(IMAGE_PLACEHOLDER) {
            bail!("conversations[0]: the plain template needs an {IMAGE_PLACEHOLDER} here");
        }
        let input_ids = self.tokenize(&format!("{IMAGE_PLACEHOLDER}{}{sep}", values[1]), true)?;
        let mut labels = input_ids.clone();
        let image_len = self.tokenize(IMAGE_PLACEHOLDER, true)?.len() as i64;
        mask(&mut labels, 0, image_len);
        Ok(Encoded {
            input_ids,
            labels,
            mismatch: false,
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

/// The speaker of turn `t`: 0 for human, 1 for gpt (`user` / `assistant` accepted).
fn role(turn: &Turn, t: usize) -> Result<usize> {
    match turn.from.as_str() {
        "human" | "user" => Ok(0),
        "gpt" | "assistant" => Ok(1),
        other => bail!("conversations[{t}]: unknown speaker `{other}` (expected human or gpt)"),
    }
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

/// The MPT-style rounds: system + first exchange, then one per later exchange
/// (`sep.join(rounds[:3])`, then pairs from index 3), with Python's `split` semantics.
fn rejoined_rounds(prompt: &str, sep: &str) -> Vec<String> {
    let pieces = py_split(prompt, sep);
    let mut out = vec![pieces[..pieces.len().min(3)].join(sep)];
    for start in (3..pieces.len()).step_by(2) {
        out.push(pieces[start..(start + 2).min(pieces.len())].join(sep));
    }
    out
}

/// Python's `str.split(sep)` (an empty `sep` raises there; here it yields the text).
fn py_split<'t>(text: &'t str, sep: &str) -> Vec<&'t str> {
    if sep.is_empty() {
        return vec![text];
    }
    text.split(sep).collect()
}

/// `labels[from:to] = IGNORE_INDEX` with Python's slicing (negative ends count from the
/// back, ends past the length are clamped).
fn mask(labels: &mut [i64], from: i64, to: i64) {
    let len = labels.len() as i64;
    let index = |i: i64| (if i < 0 { (len + i).max(0) } else { i.min(len) }) as usize;
    let (start, end) = (index(from), index(to));
    if start < end {
        labels[start..end].fill(IGNORE_INDEX);
    }
}

fn widen(ids: Vec<u32>) -> Vec<i64> {
    ids.into_iter().map(i64::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_template_trains_with_its_reference_function() {
        let kind = |name: &str| TrainTemplate::new(name).unwrap().preprocess;
        assert_eq!(kind("plain"), Preprocess::Plain);
        assert_eq!(kind("mistral_instruct"), Preprocess::Llama2);
        assert_eq!(kind("llava_llama_2"), Preprocess::Llama2);
        assert_eq!(kind("v1"), Preprocess::V1);
        assert_eq!(kind("v1_mmtag"), Preprocess::V1);
        assert_eq!(kind("chatml_direct"), Preprocess::Mpt);
        assert_eq!(kind("llama3"), Preprocess::Llama3);
        assert_eq!(kind("phi3_instruct"), Preprocess::Phi3);
        for fallback in ["v0", "llava_v0", "v0_mmtag", "llama3_qa"] {
            let err = TrainTemplate::new(fallback).unwrap_err().to_string();
            assert!(err.contains("`### ` fallback"), "{fallback}: {err}");
        }
    }

    #[test]
    fn rounds_and_slices_follow_python() {
        let r = rejoined_rounds(
            "s<|eot_id|>u1<|eot_id|>a1<|eot_id|>u2<|eot_id|>a2<|eot_id|>",
            "<|eot_id|>",
        );
        assert_eq!(r, vec!["s<|eot_id|>u1<|eot_id|>a1", "u2<|eot_id|>a2", ""]);
        assert_eq!(py_strip("\x1c é \u{3000}"), "é");
        let mut labels = vec![1, 2, 3, 4];
        mask(&mut labels, 1, -1);
        assert_eq!(labels, [1, IGNORE_INDEX, IGNORE_INDEX, 4]);
        let mut labels = vec![1, 2, 3, 4];
        mask(&mut labels, 3, 99);
        mask(&mut labels, 2, 1);
        assert_eq!(labels, [1, 2, 3, IGNORE_INDEX]);
        assert_eq!(
            image_first("What is this?\n<image> "),
            "<image>\nWhat is this?"
        );
        assert_eq!(image_first(" <image> "), "<image>");
    }
}
