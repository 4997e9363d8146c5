//! Answering benchmark questions with a checkpoint the way the reference's
//! `model_vqa.py` does: `<image>` taken out of the question and put in front of it in
//! the `llama3` prompt, the decoded text stripped, one LLaVA answer line per question
//! (`prompt` is the question followed by `\n<image>`, as the reference writes it).

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::core::hash::{fnv1a, keyed, mix64};
use crate::core::model::engine::captioner::{CaptionInput, Captioner};
use crate::core::vqa::Id;
use crate::core::vqa::questions::Question;

/// One line of the LLaVA answer JSONL.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AnswerLine {
    pub question_id: Id,
    pub prompt: String,
    pub text: String,
    pub answer_id: String,
    pub model_id: String,
    /// Token counts (the reference leaves this empty).
    pub metadata: Map<String, Value>,
}

/// A batch's answers (keyed for a resumable output) and the questions that could not
/// be answered, with why.
#[derive(Debug, Default)]
pub(crate) struct Answered {
    pub lines: Vec<(String, AnswerLine)>,
    pub failed: Vec<(Id, String)>,
}

/// The question as the model gets it: `<image>` removed, blanks trimmed.
pub(crate) fn question_text(question: &str) -> String {
    question.replace("<image>", "").trim().to_string()
}

/// A 22-character id in shortuuid's alphabet, like the reference's `answer_id`, but a
/// function of the seed, model and question: reruns write the same bytes.
pub(crate) fn answer_id(seed: u64, model: &str, id: &Id) -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let high = keyed(seed, fnv1a(model), fnv1a(&id.to_string()));
    let mut n = (u128::from(high) << 64) | u128::from(mix64(high));
    (0..22)
        .map(|_| {
            let digit = (n % ALPHABET.len() as u128) as usize;
            n /= ALPHABET.len() as u128;
            ALPHABET[digit] as char
        })
        .collect()
}

/// Answers `questions` in one batch. Unreadable images fail their question only;
/// model errors fail the call. The model is asked for (`captioner()`, which may load
/// it) only when some image could be read.
pub(crate) fn answer<'a>(
    captioner: &mut dyn FnMut() -> anyhow::Result<&'a Captioner>,
    questions: &[&Question],
    seed: u64,
    on_tokens: &mut (dyn FnMut(usize) + Send),
) -> anyhow::Result<Answered> {
    let mut out = Answered::default();
    let mut items = Vec::with_capacity(questions.len());
    let mut asked = Vec::with_capacity(questions.len());
    for q in questions {
        let decoded = q
            .image
            .bytes()
            .and_then(|bytes| crate::core::image::decode(&bytes));
        match decoded {
            Ok(pixels) => {
                items.push(CaptionInput {
                    id: q.id.to_string(),
                    image: q.image.label().to_string(),
                    pixels,
                    messages: Some(vec![question_text(&q.question)]),
                });
                asked.push(*q);
            }
            Err(e) => out.failed.push((q.id.clone(), format!("{e:#}"))),
        }
    }
    if items.is_empty() {
        return Ok(out);
    }
    let captions = captioner()?.caption(&items, on_tokens)?;
    for (q, caption) in asked.into_iter().zip(captions) {
        let caption = match caption {
            Ok(caption) => caption,
            Err(e) => {
                out.failed.push((q.id.clone(), format!("{e:#}")));
                continue;
            }
        };
        let line = AnswerLine {
            question_id: q.id.clone(),
            prompt: format!("{}\n<image>", question_text(&q.question)),
            text: caption.caption,
            answer_id: answer_id(seed, &caption.model, &q.id),
            model_id: caption.model,
            metadata: json!({
                "prompt_tokens": caption.prompt_tokens,
                "new_tokens": caption.new_tokens,
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        };
        out.lines.push((caption.id, line));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_lose_their_image_placeholder_like_the_reference() {
        assert_eq!(question_text("<image>\nIs this a CT? "), "Is this a CT?");
        assert_eq!(
            question_text("Where is <image> the liver"),
            "Where is  the liver"
        );
    }

    #[test]
    fn answer_ids_look_like_shortuuids_and_are_stable() {
        let a = answer_id(0, "m", &Id::Int(7));
        assert_eq!(a.len(), 22);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() && !b"01lIO".contains(&b))
        );
        assert_eq!(a, answer_id(0, "m", &Id::Int(7)));
        assert_ne!(a, answer_id(1, "m", &Id::Int(7)));
        assert_ne!(a, answer_id(0, "m", &Id::Int(8)));
    }
}
