//! `mt chat`: ask a model about an image. Requests come as JSONL on stdin
//! (`{id, image, question}`, or `{id, image, conversations}` with the earlier turns, the
//! user's last), one JSONL answer per request goes to stdout as soon as it is written, so
//! `... | mt chat --model M > answers.jsonl` and a program talking through a pipe both
//! work. A request that cannot be answered gets an `error` line and the others go on
//! (exit 3 at the end).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::args::{DecodingArgs, DeviceArgs, ModelArgs};
use super::{Context, finish_failures};
use crate::core::error::usage;
use crate::core::model::engine::captioner::{CaptionInput, Captioner};
use crate::core::model::engine::generate::GenerationConfig;
use crate::core::model::load::checkpoint::{Checkpoint, device};
use crate::core::train::conversation::Turn;

const EXAMPLES: &str = "\
Examples:
  echo '{\"id\": \"q1\", \"image\": \"scan.png\", \"question\": \"Which organ is shown?\"}' | mt chat --model ckpts/LLaVA-Med-pp
  mt chat --model ckpts/llava-med-v1.5-mistral-7b --gpu 0 < questions.jsonl > answers.jsonl
  mt chat scan.png --model ckpts/LLaVA-Med-pp < follow_ups.jsonl      (requests without an image ask about scan.png)

A request: {\"id\", \"image\", \"question\"}, or {\"id\", \"image\", \"conversations\": [{\"from\": \"human\",
\"value\": ...}, {\"from\": \"gpt\", ...}, ..., {\"from\": \"human\", ...}]} (LLaVA's format; the
model answers the last message, with the earlier ones in its template). An answer:
{\"id\", \"image\", \"answer\", \"prompt_tokens\", \"new_tokens\"}, or {\"id\", \"error\"}.";

/// Ask a model about images: JSONL requests on stdin, JSONL answers on stdout.
#[derive(Debug, clap::Args, Serialize)]
#[command(
    after_help = EXAMPLES,
    mut_arg("max_new_tokens", |a| a.help("Most tokens generated per answer")),
)]
pub struct Args {
    /// The image a request without its own `image` is about.
    pub image: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// Where relative `image` paths of the requests resolve (default: the working folder).
    #[arg(long, visible_alias = "images", value_name = "DIR")]
    pub image_folder: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub decoding: DecodingArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceArgs,
}

/// One request line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    id: Option<Value>,
    image: Option<String>,
    question: Option<String>,
    conversations: Option<Vec<Turn>>,
}

/// Answers the requests on stdin.
pub(crate) fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    args.decoding.check()?;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(usage(
            "mt chat reads JSONL requests on stdin (see --help); the interactive mode is not \
             built yet",
        ));
    }
    let captioner = load(args, ctx)?;
    let mut out = std::io::stdout().lock();
    let (mut answered, mut failures) = (0usize, Vec::new());
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let (id, result) = answer(args, &captioner, &line, n + 1);
        let reply = match result {
            Ok(answer) => {
                answered += 1;
                answer
            }
            Err(e) => {
                let message = format!("{e:#}");
                let label = id.as_str().map_or_else(|| id.to_string(), str::to_string);
                failures.push((label, message.clone()));
                json!({"id": id, "error": message})
            }
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    let failed = failures.len();
    if !ctx.quiet && !ctx.json {
        eprintln!("answered {answered} requests, {failed} failed");
    }
    finish_failures(ctx, failures, failed, answered + failed)
}

/// The checkpoint, ready to answer.
fn load(args: &Args, ctx: &mut Context) -> Result<Captioner> {
    let gpu = args.device.gpu();
    let device = device(gpu)?;
    let dtype = args.model.dtype(&device)?;
    let ckpt = Checkpoint::open(
        args.model.path(),
        args.model.vision_tower.as_deref(),
        &device,
        dtype,
    )?;
    if let Some(run) = &mut ctx.run {
        run.write_json("model.json", &ckpt.config)?;
    }
    let decoding = GenerationConfig {
        max_new_tokens: args.decoding.max_new_tokens,
        temperature: args.decoding.temperature(),
        top_p: args.decoding.top_p(),
        top_k: args.decoding.top_k(),
        stop_tokens: Vec::new(),
    };
    let conv_mode = args.decoding.conv_mode.as_deref();
    Captioner::new(ckpt, "", decoding, Vec::new(), true, ctx.seed, conv_mode)
}

/// The answer line of request line `line` (number `n`), or why there is none; the
/// request's id as it gave it (`stdin:N` when it has none or cannot be read).
fn answer(args: &Args, captioner: &Captioner, line: &str, n: usize) -> (Value, Result<Value>) {
    let request: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            return (
                json!(format!("stdin:{n}")),
                Err(anyhow::anyhow!("stdin:{n}: {e}")),
            );
        }
    };
    let id = request
        .id
        .clone()
        .unwrap_or_else(|| json!(format!("stdin:{n}")));
    let label = id.as_str().map_or_else(|| id.to_string(), str::to_string);
    let result = (|| {
        let messages = messages(&request)?;
        let image = image_path(args, request.image.as_deref())?;
        let pixels = crate::core::image::decode_file(&image)?;
        let item = CaptionInput {
            id: label,
            image: image.display().to_string(),
            pixels,
            messages: Some(messages),
        };
        let mut results = captioner.caption(std::slice::from_ref(&item), &mut |_| {})?;
        let caption = results.remove(0)?;
        Ok(json!({
            "id": id,
            "image": caption.image,
            "answer": caption.caption,
            "prompt_tokens": caption.prompt_tokens,
            "new_tokens": caption.new_tokens,
        }))
    })();
    (id, result)
}

/// The conversation of a request: its question, or its turns (human and gpt
/// alternating, a human turn last).
fn messages(request: &Request) -> Result<Vec<String>> {
    match (&request.question, &request.conversations) {
        (Some(q), None) => Ok(vec![q.clone()]),
        (None, Some(turns)) => {
            let Some(last) = turns.last() else {
                bail!("`conversations` is empty");
            };
            for (i, turn) in turns.iter().enumerate() {
                let want = ["human", "gpt"][i % 2];
                let role = match turn.from.as_str() {
                    "human" | "user" => "human",
                    "gpt" | "assistant" => "gpt",
                    other => bail!("conversations[{i}]: unknown speaker `{other}`"),
                };
                if role != want {
                    bail!("conversations[{i}]: expected a {want} turn (human first, alternating)");
                }
            }
            if last.from != "human" && last.from != "user" {
                bail!("the last message is the model's: nothing to answer");
            }
            Ok(turns.iter().map(|t| t.value.clone()).collect())
        }
        (Some(_), Some(_)) => bail!("give `question` or `conversations`, not both"),
        (None, None) => bail!("the request has no `question` and no `conversations`"),
    }
}

/// The image file of a request: its `image` (under `--image-folder` when relative), else
/// the command line's.
fn image_path(args: &Args, image: Option<&str>) -> Result<PathBuf> {
    match (image, &args.image) {
        (Some(image), _) => Ok(match &args.image_folder {
            Some(folder) if Path::new(image).is_relative() => folder.join(image),
            _ => PathBuf::from(image),
        }),
        (None, Some(default)) => Ok(default.clone()),
        (None, None) => bail!("the request has no `image` and none was given on the command line"),
    }
}
