//! `mt chat`: ask a model about an image. On a terminal (or with `--interactive`): a
//! line editor with history, answers printed as they are written, the conversation kept
//! in the template from turn to turn, `/image`, `/reset`, `/save`. Otherwise requests
//! come as JSONL on stdin (`{id, image, question}`, or `{id, image, conversations}` with the
//! earlier turns, the user's last) and one JSONL answer per request goes to stdout as soon
//! as it is written, so `... | mt chat --model M > answers.jsonl` and a program talking
//! through a pipe both work; a request that cannot be answered gets an `error` line and
//! the others go on (exit 3 at the end).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result, bail};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::args::{DecodingArgs, DeviceArgs, ModelArgs, QuantizeArgs};
use super::{Context, finish_failures};
use crate::core::error::usage;
use crate::core::model::engine::batcher::{self, Batcher, Sampling};
use crate::core::model::engine::captioner::{CaptionInput, Captioner};
use crate::core::model::load::checkpoint::device;
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

/// Ask a model about an image: a conversation on the terminal, or JSONL requests on stdin.
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
    pub answering: AnswerArgs,
    /// Where relative `image` paths of the requests resolve (default: the working folder).
    #[arg(long, visible_alias = "images", value_name = "DIR")]
    pub image_folder: Option<PathBuf>,
    /// Converse line by line even when stdin is not a terminal (a script of turns).
    #[arg(long)]
    pub interactive: bool,
}

/// The model and how it answers: what `mt chat` and `mt serve` share.
#[derive(Debug, clap::Args, Serialize)]
pub struct AnswerArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub decoding: DecodingArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub quantize: QuantizeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceArgs,
    /// The system message, in place of the template's (its header kept; a chat template
    /// gets a system turn); `mt serve`: for requests that bring none.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
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
    args.answering.decoding.check()?;
    let stdin = std::io::stdin();
    if args.interactive || stdin.is_terminal() {
        if let Some(image) = &args.image
            && !image.is_file()
        {
            return Err(usage(format!("{}: no such image file", image.display())));
        }
        let batcher = Batcher::new(load_answerer(&args.answering, ctx)?, 1)?;
        return interactive(args, &batcher, ctx.seed);
    }
    let captioner = load_answerer(&args.answering, ctx)?;
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

/// A checkpoint ready to answer questions (`mt chat`, `mt serve`): its end-of-sequence
/// tokens and template stop text end answers, `system` replaces the template's message.
pub(super) fn load_answerer(args: &AnswerArgs, ctx: &mut Context) -> Result<Captioner> {
    let AnswerArgs {
        model,
        decoding,
        quantize,
        device: device_args,
        system,
    } = args;
    let gpu = device_args.gpu();
    let device = device(gpu)?;
    let dtype = model.dtype(&device)?;
    let mut ckpt = model.open(&device, dtype)?;
    quantize.apply(&mut ckpt);
    if let Some(run) = &mut ctx.run {
        run.set_device(quantize.describe(gpu, dtype));
        run.write_json("model.json", &ckpt.config)?;
    }
    let conv_mode = decoding.conv_mode.as_deref();
    let generation = decoding.generation();
    let mut captioner =
        Captioner::new(ckpt, "", generation, Vec::new(), true, ctx.seed, conv_mode)?;
    if let Some(system) = system.as_deref() {
        captioner.set_system(system);
    }
    Ok(captioner)
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

/// A conversation on a terminal: the image it is about and its turns so far.
struct Session {
    image: Option<PathBuf>,
    /// The user's messages and the model's answers, alternating.
    turns: Vec<String>,
    /// The model's cache of the conversation so far.
    cache: batcher::Session,
}

const HELP: &str = "\
Commands:
  /image PATH   talk about another image (a new conversation)
  /reset        forget the conversation, keep the image
  /save FILE    write the conversation as a LLaVA record (FILE.jsonl: appended as a line)
  /quit         leave (or Ctrl-D); Ctrl-C stops an answer being written";

/// `mt chat` on a terminal: a line editor with history, each answer printed as it is
/// written, the conversation kept in the template from turn to turn.
fn interactive(args: &Args, batcher: &Batcher, seed: u64) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())
        .context("cannot catch Ctrl-C")?;
    let mut editor = DefaultEditor::new().context("cannot start the line editor")?;
    let history = history_file();
    if let Some(file) = &history {
        let _ = editor.load_history(file);
    }
    let mut session = Session {
        image: args.image.clone(),
        turns: Vec::new(),
        cache: batcher::Session::default(),
    };
    eprintln!(
        "mt chat with {}; /help for the commands",
        batcher.model_name()
    );
    loop {
        let line = match editor.readline("> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read the terminal"),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let outcome = match command {
            "/quit" | "/exit" => break,
            "/help" => {
                eprintln!("{HELP}");
                Ok(())
            }
            "/reset" => {
                session.turns.clear();
                session.cache.reset();
                Ok(())
            }
            "/image" if !rest.is_empty() => {
                let path = PathBuf::from(rest);
                match path.is_file() {
                    true => {
                        session.image = Some(path);
                        session.turns.clear();
                        session.cache.reset();
                        Ok(())
                    }
                    false => Err(anyhow::anyhow!("{rest}: no such image file")),
                }
            }
            "/save" if !rest.is_empty() => save(&session, Path::new(rest)),
            _ if command.starts_with('/') => Err(anyhow::anyhow!(
                "unknown command {command}; /help lists them"
            )),
            _ => ask(
                batcher,
                &mut session,
                line,
                &args.answering.decoding.sampling(seed),
                &stop,
            ),
        };
        if let Err(e) = outcome {
            eprintln!("error: {e:#}");
        }
    }
    if let Some(file) = &history {
        let _ = std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")));
        let _ = editor.save_history(file);
    }
    Ok(())
}

/// Where the line editor keeps its history: `chat_history` in mt's cache.
fn history_file() -> Option<PathBuf> {
    Some(crate::core::model::load::checkpoint::mt_cache_dir().join("chat_history"))
}

/// Answers `question` in `session`, printing the answer as it is written; Ctrl-C (`stop`)
/// ends it where it is. The question and the answer join the conversation, and the cache
/// of the conversation is kept, so the next turn runs only its own tokens.
fn ask(
    batcher: &Batcher,
    session: &mut Session,
    question: &str,
    sampling: &Sampling,
    stop: &AtomicBool,
) -> Result<()> {
    let Some(image) = session.image.clone() else {
        bail!("no image yet: /image PATH first");
    };
    let pixels = crate::core::image::decode_file(&image)?;
    let mut messages = session.turns.clone();
    messages.push(question.to_string());
    stop.store(false, Ordering::Relaxed);
    let mut show = |text: &str| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        !stop.load(Ordering::Relaxed)
    };
    let result = batcher.answer_in(
        &mut session.cache,
        Some(pixels),
        messages,
        sampling.clone(),
        &mut show,
    );
    println!();
    let answer = result.map_err(|f| anyhow::anyhow!("{f}"))?;
    tracing::debug!(
        prompt_tokens = answer.prompt_tokens,
        reused = answer.reused,
        "turn answered"
    );
    if answer.finish.is_none() {
        eprintln!("(stopped)");
    }
    session.turns.push(question.to_string());
    session.turns.push(answer.text.trim().to_string());
    Ok(())
}

/// Writes the conversation as a LLaVA training record: `{id, image, conversations}`, as a
/// JSON list of one record, or appended as a line to a `.jsonl` file.
fn save(session: &Session, file: &Path) -> Result<()> {
    if session.turns.is_empty() {
        bail!("nothing to save yet");
    }
    let conversations: Vec<Value> = session
        .turns
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let text = match (i, &session.image) {
                (0, Some(_)) if !text.contains("<image>") => format!("<image>\n{text}"),
                _ => text.clone(),
            };
            let from = ["human", "gpt"][i % 2];
            json!({"from": from, "value": text})
        })
        .collect();
    let id = file
        .file_stem()
        .map_or_else(|| "chat".to_string(), |s| s.to_string_lossy().into_owned());
    let mut record = json!({"id": id, "conversations": conversations});
    if let Some(image) = &session.image {
        record["image"] = json!(image.display().to_string());
    }
    let jsonl = file.extension().is_some_and(|e| e == "jsonl");
    if jsonl {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .with_context(|| format!("cannot open {}", file.display()))?;
        writeln!(f, "{record}")?;
    } else {
        crate::core::files::write_atomic(
            file,
            serde_json::to_vec_pretty(&json!([record]))?.as_slice(),
        )?;
    }
    eprintln!("saved to {}", file.display());
    Ok(())
}
