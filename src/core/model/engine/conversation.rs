//! LLaVA's conversation templates (`llava/conversation.py`): the prompt every LLaVA-style
//! checkpoint was trained and evaluated with, rendered exactly as
//! `Conversation.get_prompt()` renders it. The table holds every `conv_templates` entry of
//! the MedTrinity-25M code base (upstream LLaVA's plus `llama3` and `llama3_qa`) and
//! LLaVA-pp's `phi3_instruct`; LLaVA-Med's copy renders its `TWO` templates differently
//! (`llava-med:` names). `testdata/templates/prompts.json` holds what each code base's own
//! file renders for a set of conversations; the tests compare with it.

use anyhow::{Result, bail};

use super::prompt::{IMAGE_PLACEHOLDER, TextCodec};
use crate::core::model::load::checkpoint::Checkpoint;
use crate::core::model::load::config::TextFamily;

/// The template of MedTrinity's LLaVA-Med++ (Llama 3).
pub(crate) const DEFAULT: &str = "llama3";

/// How a template joins its turns (`SeparatorStyle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// `system sep`, then `role: message sep` per turn (`role:` for the open turn).
    Single,
    /// As `Single`, `sep` after the user's turns and `sep2` after the assistant's.
    Two,
    /// `system sep`, then `role message sep` per turn (`role` for the open turn).
    Mpt,
    /// The messages alone, `sep` after the user's and `sep2` after the assistant's.
    Plain,
    /// `[INST] <<SYS>>system<</SYS>> message [/INST] answer sep2`, each user turn after
    /// `sep`, the leading `sep` characters stripped.
    Llama2,
}

/// One entry of `conv_templates`.
#[derive(Debug)]
pub(crate) struct Template {
    /// The keys it is registered under.
    names: &'static [&'static str],
    system: &'static str,
    /// The user's and the assistant's role strings.
    roles: [&'static str; 2],
    style: Style,
    sep: &'static str,
    /// `None` where the Python sets none (a render that needs it fails, as there).
    sep2: Option<&'static str>,
    /// `mmtag` versions mark the image as `<Image><image></Image>`.
    version: &'static str,
    /// `false`: the image placeholder is removed from the prompt (MedTrinity's `has_image`).
    has_image: bool,
    /// Turns the template starts with (`conv_vicuna_v0`'s example exchange).
    examples: &'static [(&'static str, &'static str)],
}

/// Every template, in `conv_templates` order.
const TEMPLATES: &[Template] = &[
    Template {
        names: &["default", "v0"],
        system: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
        roles: ["Human", "Assistant"],
        style: Style::Single,
        sep: "###",
        sep2: None,
        version: "Unknown",
        has_image: true,
        examples: &[
            (
                "Human",
                "What are the key differences between renewable and non-renewable energy sources?",
            ),
            (
                "Assistant",
                "Renewable energy sources are those that can be replenished naturally in a relatively short amount of time, such as solar, wind, hydro, geothermal, and biomass. Non-renewable energy sources, on the other hand, are finite and will eventually be depleted, such as coal, oil, and natural gas. Here are some key differences between renewable and non-renewable energy sources:\n1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable energy sources are finite and will eventually run out.\n2. Environmental impact: Renewable energy sources have a much lower environmental impact than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, and other negative effects.\n3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically have lower operational costs than non-renewable sources.\n4. Reliability: Renewable energy sources are often more reliable and can be used in more remote locations than non-renewable sources.\n5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different situations and needs, while non-renewable sources are more rigid and inflexible.\n6. Sustainability: Renewable energy sources are more sustainable over the long term, while non-renewable sources are not, and their depletion can lead to economic and social instability.\n",
            ),
        ],
    },
    Template {
        names: &["v1", "vicuna_v1"],
        system: "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
        roles: ["USER", "ASSISTANT"],
        style: Style::Two,
        sep: " ",
        sep2: Some("</s>"),
        version: "v1",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["llama_2"],
        system: "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n\nIf a question does not make any sense, or is not factually coherent, explain why instead of answering something not correct. If you don't know the answer to a question, please don't share false information.",
        roles: ["USER", "ASSISTANT"],
        style: Style::Llama2,
        sep: "<s>",
        sep2: Some("</s>"),
        version: "llama_v2",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["mistral_instruct"],
        system: "",
        roles: ["USER", "ASSISTANT"],
        style: Style::Llama2,
        sep: "",
        sep2: Some("</s>"),
        version: "llama_v2",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["chatml_direct", "mistral_direct"],
        system: "<|im_start|>system\nAnswer the questions.",
        roles: ["<|im_start|>user\n", "<|im_start|>assistant\n"],
        style: Style::Mpt,
        sep: "<|im_end|>",
        sep2: None,
        version: "mpt",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["plain", "v0_plain"],
        system: "",
        roles: ["", ""],
        style: Style::Plain,
        sep: "\n",
        sep2: None,
        version: "Unknown",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["llava_v0"],
        system: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
        roles: ["Human", "Assistant"],
        style: Style::Single,
        sep: "###",
        sep2: None,
        version: "Unknown",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["v0_mmtag"],
        system: "A chat between a curious user and an artificial intelligence assistant. The assistant is able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.The visual content will be provided with the following format: <Image>visual content</Image>.",
        roles: ["Human", "Assistant"],
        style: Style::Single,
        sep: "###",
        sep2: None,
        version: "v0_mmtag",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["llava_v1"],
        system: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
        roles: ["USER", "ASSISTANT"],
        style: Style::Two,
        sep: " ",
        sep2: Some("</s>"),
        version: "v1",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["v1_mmtag"],
        system: "A chat between a curious user and an artificial intelligence assistant. The assistant is able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.The visual content will be provided with the following format: <Image>visual content</Image>.",
        roles: ["USER", "ASSISTANT"],
        style: Style::Two,
        sep: " ",
        sep2: Some("</s>"),
        version: "v1_mmtag",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["llava_llama_2"],
        system: "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.",
        roles: ["USER", "ASSISTANT"],
        style: Style::Llama2,
        sep: "<s>",
        sep2: Some("</s>"),
        version: "llama_v2",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["llama3"],
        system: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nA chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
        roles: [
            "<|start_header_id|>user<|end_header_id|>\n\n",
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ],
        style: Style::Mpt,
        sep: "<|eot_id|>",
        sep2: None,
        version: "llama3",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["llama3_qa"],
        system: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\n    You are an AI assistant specialized in biomedical topics. Please create VQA in the format of the example:\"<q>question</q><a>answer</a >\".\n\n    You are provided with a fine-grained caption of a medical image, including the Modality, Organ & Tissue \n    Detection, ROI Location & Description, Disease-related Color & Texture, and Region Relationship of this medical image. Unfortunately, you don't have access to the actual image.\n    Below are requirements for generating the questions and answers in the conversation:\n\n    - Avoid quoting or referring to specific facts, terms, abbreviations, dates, numbers, or names, as these may reveal the conversation is based on the text information, rather than the image itself. Focus on the visual aspects of the image that can be inferred without the text information.\n\n    - Do not use phrases like \"mentioned\", \"caption\", \"context\" in the conversation. Instead, refer to the information as being \"in the image.\"\n\n    - Ensure that questions are diverse and cover a range of visual aspects of the image.\n\n    - The conversation should include at least 2-3 turns of questions and answers about the visual aspects of the image.\n\n    - For general questions that start with \"Do\" or \"is\" or \"are\", please answer with \"yes\" or \"no\".\n\n    - For wh-questions that start with like 'what', please answer with a short phrase consisting of a few words.\n\n    - Answer responsibly, avoiding overconfidence, and do not provide medical advice or diagnostic information. Encourage the user to consult a healthcare professional for advice.\n    Below is the fine-grained need to be converted into VQA questions and answers in the format of the example:\"<q>question</q><a>answer</a >\".\n",
        roles: [
            "<|start_header_id|>user<|end_header_id|>\n\nFine-grained caption: ",
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ],
        style: Style::Mpt,
        sep: "<|eot_id|>",
        sep2: None,
        version: "llama3_qa",
        has_image: false,
        examples: &[],
    },
    Template {
        names: &["mpt"],
        system: "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. The assistant gives helpful and honest answers.",
        roles: ["<|im_start|>user\n", "<|im_start|>assistant\n"],
        style: Style::Mpt,
        sep: "<|im_end|>",
        sep2: None,
        version: "mpt",
        has_image: true,
        examples: &[],
    },
    Template {
        names: &["phi3_instruct"],
        system: "<|system|>\nYou are a helpful AI assistant.",
        roles: ["\n<|user|>\n", "\n<|assistant|>\n"],
        style: Style::Mpt,
        sep: "<|end|>",
        sep2: None,
        version: "phi3",
        has_image: true,
        examples: &[],
    },
];

/// The code bases whose `conversation.py` a name may be qualified with.
const SOURCES: [&str; 4] = ["medtrinity", "llava", "llava-med", "llava-pp"];

/// What the training code reads of a template (see [`Conversation::parts`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TemplateParts {
    pub style: Style,
    pub version: &'static str,
    pub roles: [&'static str; 2],
    pub sep: &'static str,
    pub sep2: Option<&'static str>,
}

/// A conversation being built: a template and its turns, the user's first.
#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    template: &'static Template,
    /// The name it was asked by.
    name: &'static str,
    /// LLaVA-Med's rendering of `TWO`: each message stripped, `sep2` followed by a space,
    /// the whole prompt stripped.
    llava_med: bool,
    /// (role index, message); `None` is the turn the model is to write.
    turns: Vec<(usize, Option<String>)>,
    /// The system text in place of the template's (`--system`), its header kept.
    system: Option<String>,
}

impl Conversation {
    /// The template `name` (`--conv-mode`): a `conv_templates` key, optionally qualified
    /// by its code base (`llava-med:vicuna_v1`, `medtrinity:llama3`, ...).
    pub(crate) fn new(name: &str) -> Result<Self> {
        let (source, key) = match name.split_once(':') {
            Some((source, key)) => (Some(source), key),
            None => (None, name),
        };
        if let Some(source) = source
            && !SOURCES.contains(&source)
        {
            bail!(
                "conversation template `{name}`: unknown code base `{source}` (one of {})",
                SOURCES.join(", ")
            );
        }
        let found = TEMPLATES
            .iter()
            .find_map(|t| Some((t, *t.names.iter().find(|n| **n == key)?)));
        let Some((template, name)) = found else {
            bail!(
                "no conversation template `{key}`; known: {}",
                names().collect::<Vec<_>>().join(", ")
            );
        };
        let turns = template
            .examples
            .iter()
            .map(|(role, text)| {
                let index = usize::from(*role != template.roles[0]);
                (index, Some(text.to_string()))
            })
            .collect();
        Ok(Self {
            template,
            name,
            llava_med: source == Some("llava-med"),
            turns,
            system: None,
        })
    }

    /// The template `name`, else the one the checkpoint's family is run with in its
    /// reference code: `llama3` for a Llama with Llama 3's tokenizer (MedTrinity's
    /// LLaVA-Med++), `llava_v1` for another Llama (LLaVA-1.5's eval scripts),
    /// `mistral_instruct` for Mistral (LLaVA-Med v1.5's README), `phi3_instruct` for
    /// Phi-3 (LLaVA-pp), `chatml_direct` for Qwen2 (ChatML). The checkpoint's
    /// tokenizer must have every special token the template writes: a template of another
    /// family is refused, never rendered into a wrong prompt.
    pub(crate) fn for_checkpoint(
        name: Option<&str>,
        ckpt: &Checkpoint,
        codec: &TextCodec,
    ) -> Result<Self> {
        let family_default = match ckpt.config.text.family {
            TextFamily::Mistral => "mistral_instruct",
            TextFamily::Phi3 => "phi3_instruct",
            TextFamily::Qwen2 => "chatml_direct",
            TextFamily::Llama if codec.token_id("<|start_header_id|>").is_some() => DEFAULT,
            TextFamily::Llama => "llava_v1",
        };
        let conv = Self::new(name.unwrap_or(family_default))?;
        if let Some(missing) = conv.special_tokens().find(|t| codec.token_id(t).is_none()) {
            bail!(
                "{}: the conversation template `{}` writes `{missing}`, which its tokenizer \
                 does not have as a token (a template of another model family?); pick the \
                 checkpoint's own with --conv-mode ({})",
                ckpt.dir.display(),
                conv.name(),
                names().collect::<Vec<_>>().join(", ")
            );
        }
        Ok(conv)
    }

    /// The conversation with `message` as its system message: the template's system
    /// header (`<|start_header_id|>system<|end_header_id|>`, `<|im_start|>system`,
    /// `<|system|>`) kept, its message replaced (LLaVA's `conv.system = ...` with the
    /// header written back).
    pub(crate) fn with_system(&self, message: &str) -> Self {
        const HEADERS: [&str; 3] = [
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n",
            "<|im_start|>system\n",
            "<|system|>\n",
        ];
        let header = HEADERS
            .iter()
            .find(|h| self.template.system.starts_with(**h))
            .copied()
            .unwrap_or("");
        Self {
            system: Some(format!("{header}{message}")),
            ..self.clone()
        }
    }

    /// The template's name, as asked for.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The special tokens the template's text writes (`<|eot_id|>`, `</s>`, ...).
    fn special_tokens(&self) -> impl Iterator<Item = &'static str> {
        let t = self.template;
        let texts = [
            t.system,
            t.roles[0],
            t.roles[1],
            t.sep,
            t.sep2.unwrap_or(""),
        ];
        let mut found: Vec<&'static str> = Vec::new();
        for text in texts {
            let mut rest = text;
            while let Some(start) = rest.find("<|") {
                let Some(len) = rest[start + 2..].find("|>") else {
                    break;
                };
                found.push(&rest[start..start + len + 4]);
                rest = &rest[start + len + 4..];
            }
            found.extend(["<s>", "</s>"].into_iter().filter(|tag| text.contains(tag)));
        }
        found.sort_unstable();
        found.dedup();
        found.into_iter()
    }

    /// Whether the template text starts with its own BOS (`<|begin_of_text|>`): its
    /// prompts are then tokenised without the tokenizer's added tokens.
    pub(crate) fn writes_bos(&self) -> bool {
        self.template.system.starts_with("<|begin_of_text|>")
    }

    /// The text that ends an answer, as LLaVA's eval scripts stop on it: `sep2` for the
    /// `TWO` style, else `sep` (none when empty).
    pub(crate) fn stop_text(&self) -> Option<&'static str> {
        let t = self.template;
        let stop = match t.style {
            Style::Two => t.sep2.unwrap_or(""),
            _ => t.sep,
        };
        (!stop.trim().is_empty()).then_some(stop)
    }

    /// A one-question prompt as LLaVA's eval scripts build it: the image first
    /// (`<image>\n` + question) unless the question places `<image>` itself, then the
    /// assistant's open turn.
    pub(crate) fn question_prompt(&self, question: &str) -> Result<String> {
        self.chat_prompt(&[question])
    }

    /// The prompt of a conversation about one image (the user's messages and the
    /// assistant's answers alternating, the user's last), as LLaVA's `serve/cli.py`
    /// builds it: the image before the first message unless a message places `<image>`
    /// itself, then the assistant's open turn.
    pub(crate) fn chat_prompt(&self, messages: &[&str]) -> Result<String> {
        self.chat_prompt_about(messages, true)
    }

    /// [`Conversation::chat_prompt`], or without an image (the messages as they are) when
    /// `image` is false.
    pub(crate) fn chat_prompt_about(&self, messages: &[&str], image: bool) -> Result<String> {
        let placed = !image || messages.iter().any(|m| m.contains(IMAGE_PLACEHOLDER));
        let mut conv = self.clone();
        for (i, message) in messages.iter().enumerate() {
            if i == 0 && !placed {
                conv.push(Some(&format!("{IMAGE_PLACEHOLDER}\n{message}")));
            } else {
                conv.push(Some(message));
            }
        }
        conv.push(None);
        conv.prompt()
    }

    /// The template's separator style, `version`, roles and separators: what the
    /// reference's training code (`train.py`'s `preprocess_*`) reads besides the prompt.
    pub(crate) fn parts(&self) -> TemplateParts {
        let t = self.template;
        TemplateParts {
            style: t.style,
            version: t.version,
            roles: t.roles,
            sep: t.sep,
            sep2: t.sep2,
        }
    }

    /// The prompt of `messages` alone, the user's first (`conv.messages = []`, then
    /// `append_message` for each, as the training code renders a record).
    pub(crate) fn messages_prompt(&self, messages: &[&str]) -> Result<String> {
        let conv = Self {
            turns: messages
                .iter()
                .enumerate()
                .map(|(i, m)| (i % 2, Some(m.to_string())))
                .collect(),
            ..self.clone()
        };
        conv.prompt()
    }

    /// Appends a turn: the user's and the assistant's alternate, the user's first
    /// (`append_message(conv.roles[i % 2], text)`); `None` leaves it to the model.
    pub(crate) fn push(&mut self, text: Option<&str>) {
        let own = self.turns.len() - self.template.examples.len();
        self.turns.push((own % 2, text.map(str::to_string)));
    }

    /// The prompt, as `get_prompt()` renders it; an error where the Python raises.
    pub(crate) fn prompt(&self) -> Result<String> {
        let t = self.template;
        let system = self.system.as_deref().unwrap_or(t.system);
        let role = |i: usize| t.roles[i];
        // Python's `if message:`: an empty message counts as none.
        fn text(m: &Option<String>) -> Option<&str> {
            m.as_deref().filter(|s| !s.is_empty())
        }
        let mut out = String::new();
        match t.style {
            Style::Single => {
                out.push_str(system);
                out.push_str(t.sep);
                for (r, m) in &self.turns {
                    match text(m) {
                        Some(m) => out.extend([role(*r), ": ", m, t.sep]),
                        None => out.extend([role(*r), ":"]),
                    }
                }
            }
            Style::Two => {
                let sep2 = t.sep2.unwrap_or_default();
                out.push_str(system);
                out.push_str(t.sep);
                for (i, (r, m)) in self.turns.iter().enumerate() {
                    let sep = if i % 2 == 0 { t.sep } else { sep2 };
                    match text(m) {
                        Some(m) if self.llava_med => {
                            let sep = if sep == sep2 {
                                format!("{sep2} ")
                            } else {
                                t.sep.into()
                            };
                            out.extend([role(*r), ": ", py_strip(m), sep.as_str()]);
                        }
                        Some(m) => out.extend([role(*r), ": ", m, sep]),
                        None => out.extend([role(*r), ":"]),
                    }
                }
                if self.llava_med {
                    out = py_strip(&out).to_string();
                }
            }
            Style::Mpt => {
                out.push_str(system);
                out.push_str(t.sep);
                for (r, m) in &self.turns {
                    match text(m) {
                        Some(m) => out.extend([role(*r), m, t.sep]),
                        None => out.push_str(role(*r)),
                    }
                }
            }
            Style::Plain => {
                out.push_str(system);
                for (i, (_, m)) in self.turns.iter().enumerate() {
                    if let Some(m) = text(m) {
                        let sep = match (i % 2, t.sep2) {
                            (0, _) => t.sep,
                            (_, Some(sep2)) => sep2,
                            (_, None) => bail!(
                                "template `{}` has no separator after an answer: it only \
                                 renders a question",
                                self.name
                            ),
                        };
                        out.extend([m, sep]);
                    }
                }
            }
            Style::Llama2 => {
                let sep2 = t.sep2.unwrap_or_default();
                for (i, (r, m)) in self.turns.iter().enumerate() {
                    if i == 0 && (text(m).is_none() || *r != 0) {
                        bail!("template `{}` starts with the user's message", self.name);
                    }
                    let Some(m) = text(m) else { continue };
                    if i % 2 == 0 {
                        let system = match (i, system) {
                            (0, "") | (1.., _) => String::new(),
                            (0, system) => format!("<<SYS>>\n{system}\n<</SYS>>\n\n"),
                        };
                        out.extend([t.sep, "[INST] ", &system, m, " [/INST]"]);
                    } else {
                        out.extend([" ", m, " ", sep2]);
                    }
                }
                let sep = t.sep;
                out = out.trim_start_matches(|c| sep.contains(c)).to_string();
            }
        }
        if !t.has_image {
            let mark = if t.version.contains("mmtag") {
                "<Image><image></Image>"
            } else {
                "<image>\n"
            };
            out = out.replace(mark, "");
        }
        Ok(out)
    }
}

/// Every template name.
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    TEMPLATES.iter().flat_map(|t| t.names.iter().copied())
}

/// Python's `str.strip()`: whitespace as `str.isspace` has it (Rust's, plus the four
/// information separators U+001C..U+001F).
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every render of `testdata/templates/prompts.json` (made by each code base's own
    /// `conversation.py`), for each code base that renders it so.
    #[test]
    fn every_template_renders_as_its_conversation_py() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/templates/prompts.json"
        );
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = golden["cases"].as_array().unwrap();
        let (mut checked, mut chats) = (0, 0);
        for case in cases {
            let key = case["template"].as_str().unwrap();
            for source in case["sources"].as_array().unwrap() {
                let source = source.as_str().unwrap();
                let source = source
                    .strip_prefix("llava-pp-")
                    .map_or(source, |_| "llava-pp");
                let mut conv = Conversation::new(&format!("{source}:{key}")).unwrap();
                for turn in case["turns"].as_array().unwrap() {
                    conv.push(turn.as_str());
                }
                let what = format!("{source}:{key} {}", case["conversation"]);
                match (conv.prompt(), case["prompt"].as_str()) {
                    (Ok(ours), Some(theirs)) => assert_eq!(ours, theirs, "{what}"),
                    (Err(_), None) => {}
                    (ours, _) => panic!("{what}: {ours:?}, the reference: {}", case["error"]),
                }
                checked += 1;
                // The same conversation as `mt chat` is given it: the messages without
                // the image, which goes before the first one.
                let turns: Vec<Option<&str>> = case["turns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str())
                    .collect();
                if let (Some((None, asked)), Some(theirs)) =
                    (turns.split_last(), case["prompt"].as_str())
                    && let Some(first) = asked.first().copied().flatten()
                    && let Some(first) = first.strip_prefix("<image>\n")
                {
                    let mut messages: Vec<&str> = asked.iter().map(|t| t.unwrap_or("")).collect();
                    messages[0] = first;
                    let conv = Conversation::new(&format!("{source}:{key}")).unwrap();
                    if conv.template.examples.is_empty() {
                        assert_eq!(
                            conv.chat_prompt(&messages).unwrap(),
                            theirs,
                            "{what} as a chat"
                        );
                        chats += 1;
                    }
                }
            }
        }
        assert!(checked >= 400, "{checked} renders checked");
        assert!(chats >= 100, "{chats} chat renders checked");
        for name in names() {
            assert!(
                cases.iter().any(|c| c["template"] == name),
                "{name} has no golden render"
            );
        }
    }

    #[test]
    fn special_tokens_bos_and_stop_text_follow_the_template() {
        let specials = |name: &str| {
            Conversation::new(name)
                .unwrap()
                .special_tokens()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            specials("llama3"),
            [
                "<|begin_of_text|>",
                "<|end_header_id|>",
                "<|eot_id|>",
                "<|start_header_id|>"
            ]
        );
        assert_eq!(specials("llava_llama_2"), ["</s>", "<s>"]);
        assert_eq!(specials("mistral_instruct"), ["</s>"]);
        assert_eq!(
            specials("phi3_instruct"),
            ["<|assistant|>", "<|end|>", "<|system|>", "<|user|>"]
        );
        assert!(specials("llava_v0").is_empty() && specials("plain").is_empty());
        let conv = |name: &str| Conversation::new(name).unwrap();
        assert!(conv("llama3").writes_bos() && !conv("vicuna_v1").writes_bos());
        assert_eq!(conv("llama3").stop_text(), Some("<|eot_id|>"));
        assert_eq!(conv("vicuna_v1").stop_text(), Some("</s>"));
        assert_eq!(conv("llava_v0").stop_text(), Some("###"));
        assert_eq!(conv("plain").stop_text(), None);
    }

    #[test]
    fn a_question_prompt_puts_the_image_first_once() {
        let conv = Conversation::new("llama3").unwrap();
        assert_eq!(
            conv.question_prompt("What is shown?").unwrap(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nA chat between a curious user and an \
             artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the \
             user's questions.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is shown?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let own = conv.question_prompt("<image> then text").unwrap();
        assert_eq!(own.matches(IMAGE_PLACEHOLDER).count(), 1);
        assert_eq!(
            Conversation::new("llava_v1")
                .unwrap()
                .question_prompt("Q?")
                .unwrap(),
            "A chat between a curious human and an artificial intelligence assistant. The assistant gives \
             helpful, detailed, and polite answers to the human's questions. USER: <image>\nQ? ASSISTANT:"
        );
    }

    #[test]
    fn unknown_names_are_refused_with_the_known_ones() {
        let err = Conversation::new("llama4").unwrap_err().to_string();
        assert!(err.contains("llama3, llama3_qa"), "{err}");
        let err = Conversation::new("vllm:llama3").unwrap_err().to_string();
        assert!(err.contains("unknown code base `vllm`"), "{err}");
    }

    #[test]
    fn a_system_message_replaces_the_templates_and_keeps_its_header() {
        let message = "Answer in one word.";
        let mut checked = 0;
        for name in names() {
            let conv = Conversation::new(name).unwrap();
            if !conv.template.examples.is_empty() || conv.template.style == Style::Plain {
                continue;
            }
            let (Ok(before), Ok(after)) = (
                conv.question_prompt("Which organ?"),
                conv.with_system(message).question_prompt("Which organ?"),
            ) else {
                continue;
            };
            let default = conv.with_system("").system.unwrap();
            let old = conv.template.system.strip_prefix(default.as_str()).unwrap();
            match (old, conv.template.style) {
                // Llama 2's empty system writes no <<SYS>> block; a message writes one.
                ("", Style::Llama2) => assert!(
                    after.contains(&format!("<<SYS>>\n{message}\n<</SYS>>")),
                    "{name}: {after}"
                ),
                ("", _) => assert_eq!(after, format!("{message}{before}"), "{name}"),
                _ => assert_eq!(after, before.replacen(old, message, 1), "{name}"),
            }
            checked += 1;
        }
        assert!(checked >= 12, "{checked} templates checked");
    }
}
