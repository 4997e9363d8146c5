//! OpenAI's chat completions API on the wire: the request (messages of text and
//! `image_url` parts, decoding settings), the response and its streamed chunks, and the
//! error body every 4xx/5xx carries (`{"error": {"message", "type", "param", "code"}}`).

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use base64::Engine as _;
use image::DynamicImage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::core::model::engine::batcher::Sampling;
use crate::core::model::engine::generate::Finish;

/// An error answer: an HTTP status and OpenAI's error object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, ...
    pub kind: &'static str,
    /// OpenAI's `code` (`model_not_found`, `invalid_api_key`, ...).
    pub code: Option<&'static str>,
    /// The request field at fault.
    pub param: Option<String>,
}

impl ApiError {
    /// A 400 about field `param`.
    pub(crate) fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
            param: param.map(str::to_string),
        }
    }

    /// Any status, with OpenAI's type for it.
    pub(crate) fn status(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = match status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            408 | 504 => "timeout_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        };
        Self {
            status,
            message: message.into(),
            kind,
            code: None,
            param: None,
        }
    }

    /// With OpenAI's `code`.
    pub(crate) fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// `POST /v1/chat/completions`. Fields mt does not use (`frequency_penalty`, `user`,
/// ...) are accepted and ignored, as OpenAI-compatible servers do; the ones whose
/// meaning it cannot honour (`n` > 1, `logprobs`, `tools`) are refused.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// An extension (vLLM's, llama.cpp's): sample among the k most likely tokens.
    pub top_k: Option<usize>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub n: Option<usize>,
    pub logprobs: Option<bool>,
    pub tools: Option<Value>,
    /// An extension (vLLM's): generate `max_tokens` whatever the model says (benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

/// One message.
#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content: a string or a list of parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// One part of a message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

/// `image_url`: `{"url": ...}` (OpenAI) or the URL alone.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ImageUrl {
    Object { url: String },
    Url(String),
}

impl ImageUrl {
    fn url(&self) -> &str {
        match self {
            Self::Object { url } | Self::Url(url) => url,
        }
    }
}

/// Where images may come from and how big they may be.
#[derive(Debug, Clone)]
pub(crate) struct ImagePolicy {
    /// `file://` URLs are read only under this folder (none: refused).
    pub allow_files: Option<PathBuf>,
    /// Most pixels (width x height) an image may have.
    pub max_pixels: u64,
}

/// A request as the model takes it.
pub(crate) struct Conversation {
    pub system: Option<String>,
    /// The user's and the assistant's messages alternating, the user's first and last.
    pub messages: Vec<String>,
    pub image: Option<DynamicImage>,
}

impl ChatRequest {
    /// Refuses what mt cannot honour; `served` is the model's name.
    pub(crate) fn check(&self, served: &str) -> Result<(), ApiError> {
        if let Some(model) = &self.model
            && model != served
        {
            let message = format!("the model `{model}` does not exist; this server has `{served}`");
            return Err(ApiError::status(StatusCode::NOT_FOUND, message).code("model_not_found"));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(Some("n"), "only n = 1 is supported"));
        }
        if self.logprobs == Some(true) {
            return Err(ApiError::invalid(
                Some("logprobs"),
                "logprobs are not supported",
            ));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_null()) {
            return Err(ApiError::invalid(Some("tools"), "tools are not supported"));
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(ApiError::invalid(
                Some("temperature"),
                "temperature must be in [0, 2]",
            ));
        }
        if self.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(ApiError::invalid(Some("top_p"), "top_p must be in (0, 1]"));
        }
        if self.max_tokens() == Some(0) {
            return Err(ApiError::invalid(
                Some("max_tokens"),
                "max_tokens must be at least 1",
            ));
        }
        Ok(())
    }

    /// The answer's length limit: `max_completion_tokens`, else `max_tokens` (older).
    fn max_tokens(&self) -> Option<usize> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The decoding settings: the request's, else `defaults` (the server's flags).
    pub(crate) fn sampling(&self, defaults: &Sampling, request_seed: u64) -> Sampling {
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        Sampling {
            max_tokens: self.max_tokens().unwrap_or(defaults.max_tokens),
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            seed: self.seed.map_or(request_seed, |s| s as u64),
            stop,
            ignore_eos: self.ignore_eos,
        }
    }

    /// The conversation: system messages joined, user and assistant turns alternating
    /// (the user's first and last), at most one image, read as `policy` allows.
    pub(crate) fn conversation(&self, policy: &ImagePolicy) -> Result<Conversation, ApiError> {
        let mut system: Vec<String> = Vec::new();
        let mut messages: Vec<String> = Vec::new();
        let mut image = None;
        for (i, message) in self.messages.iter().enumerate() {
            let param = format!("messages[{i}]");
            let mut text = String::new();
            match &message.content {
                None => {}
                Some(Content::Text(t)) => text.push_str(t),
                Some(Content::Parts(parts)) => {
                    for (j, part) in parts.iter().enumerate() {
                        match part {
                            Part::Text { text: t } => {
                                if !text.is_empty() {
                                    text.push('\n');
                                }
                                text.push_str(t);
                            }
                            Part::ImageUrl { image_url } => {
                                let param = format!("{param}.content[{j}].image_url");
                                if message.role != "user" {
                                    let why = "images go in user messages";
                                    return Err(ApiError::invalid(Some(&param), why));
                                }
                                if image.is_some() {
                                    let why = "the model takes one image per conversation";
                                    return Err(ApiError::invalid(Some(&param), why));
                                }
                                image = Some(read_image(image_url.url(), policy, &param)?);
                            }
                        }
                    }
                }
            }
            match message.role.as_str() {
                "system" | "developer" => system.push(text),
                "user" | "assistant" => {
                    let want = ["user", "assistant"][messages.len() % 2];
                    if message.role != want {
                        let why = format!(
                            "expected a {want} message here: user and assistant messages alternate, the user's first"
                        );
                        return Err(ApiError::invalid(Some(&param), why));
                    }
                    messages.push(text);
                }
                other => {
                    let why = format!("unknown role `{other}` (system, user, assistant)");
                    return Err(ApiError::invalid(Some(&format!("{param}.role")), why));
                }
            }
        }
        if messages.len().is_multiple_of(2) {
            let why = "the last message must be the user's";
            return Err(ApiError::invalid(Some("messages"), why));
        }
        Ok(Conversation {
            system: (!system.is_empty()).then(|| system.join("\n")),
            messages,
            image,
        })
    }
}

/// Reads an `image_url`: a `data:` URL with base64, or a `file://` path under the
/// allowed folder; checks the pixel count before decoding.
fn read_image(url: &str, policy: &ImagePolicy, param: &str) -> Result<DynamicImage, ApiError> {
    let invalid = |why: String| ApiError::invalid(Some(param), why);
    let bytes = if let Some(rest) = url.strip_prefix("data:") {
        let Some((_, data)) = rest.split_once(";base64,") else {
            return Err(invalid(
                "a data: URL must be base64 (data:image/png;base64,...)".into(),
            ));
        };
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| invalid(format!("bad base64 in the data: URL: {e}")))?
    } else if let Some(path) = url.strip_prefix("file://") {
        read_allowed(Path::new(path), policy.allow_files.as_deref()).map_err(invalid)?
    } else {
        let why = "image URLs are data: (base64) or file:// (with --allow-files); \
                   the server fetches nothing from the network";
        return Err(invalid(why.into()));
    };
    let info = crate::core::image::probe(&bytes)
        .map_err(|e| invalid(format!("cannot decode the image: {e:#}")))?;
    let pixels = u64::from(info.width) * u64::from(info.height);
    if pixels > policy.max_pixels {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..invalid(format!(
                "the image is {}x{} = {pixels} pixels, over the limit of {} (--max-image-pixels)",
                info.width, info.height, policy.max_pixels
            ))
        });
    }
    crate::core::image::decode(&bytes)
        .map_err(|e| invalid(format!("cannot decode the image: {e:#}")))
}

/// A file's bytes when it lies under `allowed` (links resolved first).
fn read_allowed(path: &Path, allowed: Option<&Path>) -> Result<Vec<u8>, String> {
    let Some(allowed) = allowed else {
        return Err(
            "file:// URLs are refused unless the server runs with --allow-files DIR".into(),
        );
    };
    let real = path
        .canonicalize()
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if !real.starts_with(allowed) {
        return Err(format!(
            "{}: outside the --allow-files folder",
            path.display()
        ));
    }
    std::fs::read(&real).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// OpenAI's `finish_reason`.
pub(crate) fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    /// The counts of a prompt and its answer.
    pub(crate) fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The whole answer (`chat.completion`).
pub(crate) fn completion(
    id: &str,
    model: &str,
    created: u64,
    text: &str,
    finish: Finish,
    usage: Usage,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish_reason(finish),
        }],
        "usage": usage,
    })
}

/// One streamed chunk (`chat.completion.chunk`): `delta` and `finish`, or the usage
/// chunk (no choices) when `usage` is given.
pub(crate) fn chunk(
    id: &str,
    model: &str,
    created: u64,
    delta: Value,
    finish: Option<Finish>,
    usage: Option<Usage>,
) -> Value {
    let choices = match usage {
        Some(_) => json!([]),
        None => json!([{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish.map(finish_reason),
        }]),
    };
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
    })
}
