//! The Jinja chat template a llava-hf checkpoint carries (`chat_template.json`,
//! `chat_template.jinja`, or `chat_template` in `tokenizer_config.json`), rendered as
//! transformers' `apply_chat_template` renders it: blocks trimmed and left-stripped,
//! `raise_exception`, `strftime_now`, Python's string methods, `{% generation %}` blocks
//! (they only mark the assistant's tokens there), `bos_token` / `eos_token` from the
//! tokenizer's settings. `testdata/templates/chat_templates.json` holds transformers'
//! renders; the tests compare with them.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde};
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde_json::{Value as Json, json};

/// A chat template and the special tokens it may name.
#[derive(Debug, Clone)]
pub(crate) struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    /// A system turn put before the conversation (`--system`).
    system: Option<String>,
}

impl ChatTemplate {
    /// `source` with the tokenizer's BOS and EOS texts.
    pub(crate) fn new(source: &str, bos_token: &str, eos_token: &str) -> Self {
        Self {
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            system: None,
        }
    }

    /// The template with a system turn before every conversation.
    pub(crate) fn with_system(&self, message: &str) -> Self {
        Self {
            system: Some(message.to_string()),
            ..self.clone()
        }
    }

    /// The template in a checkpoint folder, where transformers looks for it:
    /// `chat_template.json`, `chat_template.jinja`, then `tokenizer_config.json` (a
    /// string, or a list of named templates of which `default` is taken).
    pub(crate) fn for_checkpoint(dir: &Path) -> Result<Option<Self>> {
        let read_json = |name: &str| -> Result<Option<Json>> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => serde_json::from_str(&text)
                    .map(Some)
                    .with_context(|| format!("{} is not valid JSON", path.display())),
                Err(_) => Ok(None),
            }
        };
        let tokenizer_config = read_json("tokenizer_config.json")?.unwrap_or(Json::Null);
        let source = match read_json("chat_template.json")? {
            Some(json) => json["chat_template"].as_str().map(str::to_string),
            None => std::fs::read_to_string(dir.join("chat_template.jinja"))
                .ok()
                .or_else(|| match &tokenizer_config["chat_template"] {
                    Json::String(s) => Some(s.clone()),
                    Json::Array(named) => named
                        .iter()
                        .find(|t| t["name"] == "default")
                        .and_then(|t| t["template"].as_str())
                        .map(str::to_string),
                    _ => None,
                }),
        };
        let token = |key: &str| match &tokenizer_config[key] {
            Json::String(s) => s.clone(),
            Json::Object(o) => o.get("content").and_then(Json::as_str).unwrap_or("").into(),
            _ => String::new(),
        };
        Ok(source.map(|s| Self::new(&s, &token("bos_token"), &token("eos_token"))))
    }

    /// The conversation `messages` (`[{role, content}]`, content a string or a list of
    /// `{type: image}` / `{type: text, text}` parts) as text, with the assistant's opening
    /// when `add_generation_prompt`.
    pub(crate) fn render(&self, messages: &Json, add_generation_prompt: bool) -> Result<String> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_filter("tojson", py_tojson);
        env.add_function("strftime_now", |format: String| {
            jiff::Zoned::now().strftime(&format).to_string()
        });
        env.add_template_owned("chat", without_generation_tags(&self.source))
            .map_err(|e| anyhow!("the chat template does not parse: {e}"))?;
        let template = env.get_template("chat").expect("just added");
        template
            .render(context! {
                messages => Value::from(Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| anyhow!("the chat template failed: {e}"))
    }

    /// A conversation about one image (the user's messages and the assistant's answers
    /// alternating, the user's last) and the assistant's opening: the image in the first
    /// user turn, `<image>` placeholders in the text dropped. One question gives the prompt
    /// a llava-hf processor builds for it.
    /// Without an image (none in the first turn) when `image` is false.
    pub(crate) fn chat_prompt_about(&self, messages: &[&str], image: bool) -> Result<String> {
        let mut messages: Vec<Json> = messages
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let text = text.replace("<image>", "");
                let text = json!({"type": "text", "text": text.trim_start()});
                match i {
                    0 if image => json!({"role": "user", "content": [{"type": "image"}, text]}),
                    _ => {
                        let role = ["user", "assistant"][i % 2];
                        json!({"role": role, "content": [text]})
                    }
                }
            })
            .collect();
        if let Some(system) = &self.system {
            let text = json!({"type": "text", "text": system});
            messages.insert(0, json!({"role": "system", "content": [text]}));
        }
        self.render(&Json::Array(messages), true)
    }
}

/// transformers' `tojson` filter: Python's `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)` with those keywords (`", "` and `": "` between
/// items without an indent, `","` and `": "` with one), not minijinja's compact JSON.
fn py_tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item, key) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be (item, key)",
            ));
        }
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let json = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let style = PyJson {
        indent,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
        item,
        key,
    };
    let mut out = String::new();
    style.write(&json, 0, &mut out);
    Ok(Value::from(out))
}

/// How Python's `json.dumps` lays a value out.
struct PyJson {
    indent: Option<usize>,
    ensure_ascii: bool,
    sort_keys: bool,
    item: String,
    key: String,
}

impl PyJson {
    fn write(&self, v: &Json, depth: usize, out: &mut String) {
        let open = |out: &mut String, depth: usize| {
            if let Some(n) = self.indent {
                out.push('\n');
                out.push_str(&" ".repeat(n * depth));
            }
        };
        let separator = |out: &mut String, depth: usize| {
            out.push_str(&self.item);
            open(out, depth);
        };
        match v {
            Json::Array(items) if !items.is_empty() => {
                out.push('[');
                open(out, depth + 1);
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        separator(out, depth + 1);
                    }
                    self.write(x, depth + 1, out);
                }
                open(out, depth);
                out.push(']');
            }
            Json::Object(map) if !map.is_empty() => {
                let mut entries: Vec<(&String, &Json)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                open(out, depth + 1);
                for (i, (k, x)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        separator(out, depth + 1);
                    }
                    self.string(k, out);
                    out.push_str(&self.key);
                    self.write(x, depth + 1, out);
                }
                open(out, depth);
                out.push('}');
            }
            Json::String(s) => self.string(s, out),
            other => out.push_str(&other.to_string()),
        }
    }

    /// A JSON string as Python writes it (`\u00e9` for non-ASCII when `ensure_ascii`).
    fn string(&self, s: &str, out: &mut String) {
        let quoted = Json::String(s.to_string()).to_string();
        if !self.ensure_ascii {
            out.push_str(&quoted);
            return;
        }
        for c in quoted.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
}

/// transformers' `{% generation %}` ... `{% endgeneration %}` (which only mark the
/// assistant's tokens) as a block that always renders, whitespace control kept.
fn without_generation_tags(source: &str) -> String {
    let re = regex::Regex::new(r"\{%(-?)\s*(end)?generation\s*(-?)%\}").expect("valid");
    re.replace_all(source, |c: &regex::Captures| match c.get(2) {
        Some(_) => format!("{{%{} endif {}%}}", &c[1], &c[3]),
        None => format!("{{%{} if true {}%}}", &c[1], &c[3]),
    })
    .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every render of `testdata/templates/chat_templates.json` (made by transformers'
    /// `apply_chat_template`), errors included.
    #[test]
    fn templates_render_as_transformers_renders_them() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/templates/chat_templates.json"
        );
        let golden: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let (bos, eos) = (
            golden["bos_token"].as_str().unwrap(),
            golden["eos_token"].as_str().unwrap(),
        );
        let cases = golden["cases"].as_array().unwrap();
        for case in cases {
            let name = case["template"].as_str().unwrap();
            let template = ChatTemplate::new(golden["templates"][name].as_str().unwrap(), bos, eos);
            let conv = &golden["conversations"][case["conversation"].as_str().unwrap()];
            let add = case["add_generation_prompt"].as_bool().unwrap();
            let what = format!("{name} {} {add}", case["conversation"]);
            match (template.render(conv, add), case["prompt"].as_str()) {
                (Ok(ours), Some(theirs)) => assert_eq!(ours, theirs, "{what}"),
                (Err(e), None) => assert!(e.to_string().contains("no system turns"), "{what}: {e}"),
                (ours, _) => panic!("{what}: {ours:?}, transformers: {}", case["error"]),
            }
        }
        assert_eq!(cases.len(), 48);
    }

    #[test]
    fn a_question_prompt_is_one_user_turn_with_the_image_first() {
        let golden: Json = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/testdata/templates/chat_templates.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let template =
            ChatTemplate::new(golden["templates"]["llava-1.5"].as_str().unwrap(), "", "");
        assert_eq!(
            template
                .chat_prompt_about(&["<image>\nWhat modality is this image?"], true)
                .unwrap(),
            "USER: <image>\nWhat modality is this image? ASSISTANT:"
        );
        let broken = ChatTemplate::new("{% for m in messages %}", "", "");
        let err = broken
            .chat_prompt_about(&["Q"], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not parse"), "{err}");
    }
}
