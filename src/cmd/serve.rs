//! `mt serve`: an OpenAI-compatible chat server over one model, with continuous batching.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::Context;
use super::chat::{AnswerArgs, load_answerer};
use crate::core::error::usage;
use crate::core::model::engine::batcher::Batcher;
use crate::core::serve::openai::ImagePolicy;
use crate::core::serve::server::{Options, serve};

const EXAMPLES: &str = "\
Examples:
  mt serve --model ckpts/LLaVA-Med-pp --port 8000
  mt serve --model UCSC-VLAA/LLaVA-Med-pp --api-key \"$KEY\" --allow-files /data/scans

  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{
    \"model\": \"LLaVA-Med-pp\",
    \"messages\": [{\"role\": \"user\", \"content\": [
      {\"type\": \"text\", \"text\": \"Which organ is shown?\"},
      {\"type\": \"image_url\", \"image_url\": {\"url\": \"data:image/png;base64,'$(base64 -w0 scan.png)'\"}}]}]}'

Routes: POST /v1/chat/completions (OpenAI's chat API; `stream: true` for server-sent events),
GET /v1/models, GET /health. SIGTERM or Ctrl-C: finish the requests in flight, then exit 0.";

/// Serve a model over OpenAI's chat completions API (continuous batching).
#[derive(Debug, clap::Args, Serialize)]
#[command(
    after_help = EXAMPLES,
    mut_arg("max_new_tokens", |a| a.help("Most tokens per answer when a request gives no max_tokens")),
)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    pub answering: AnswerArgs,
    /// The model's name in the API (`model` of requests, `/v1/models`). Default: the
    /// checkpoint folder's name (NAME for a Hub id ORG/NAME).
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,
    /// Address to listen on (0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Clients must send `Authorization: Bearer KEY` (compared in constant time, never
    /// logged).
    #[arg(long, env = "MT_API_KEY", hide_env_values = true, value_name = "KEY")]
    #[serde(skip)]
    pub api_key: Option<String>,
    /// Let requests name images as file:// paths under this folder.
    #[arg(long, value_name = "DIR")]
    pub allow_files: Option<PathBuf>,
    /// Answers decoded together (the running batch).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_batch: usize,
    /// Requests that may wait for a place in the batch; more get 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub queue: usize,
    /// Longest a request may take, waiting included (seconds); then 504.
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    pub timeout: f64,
    /// Largest request body (MiB); larger get 413.
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub max_body: usize,
    /// Most pixels an image may have (width x height); larger get 413.
    #[arg(long, value_name = "N", default_value_t = 50_000_000)]
    pub max_image_pixels: u64,
}

/// Serves until SIGTERM or Ctrl-C.
pub(crate) fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    args.answering.decoding.check()?;
    if args.max_batch == 0 || args.queue == 0 || args.max_body == 0 || args.timeout <= 0.0 {
        return Err(usage(
            "--max-batch, --queue, --max-body and --timeout must be positive",
        ));
    }
    let allow_files = match &args.allow_files {
        Some(dir) => Some(
            dir.canonicalize()
                .with_context(|| format!("--allow-files {}: no such folder", dir.display()))?,
        ),
        None => None,
    };
    let mut captioner = load_answerer(&args.answering, ctx)?;
    if let Some(name) = &args.served_model_name {
        captioner.model_name = name.clone();
    }
    let batcher = Batcher::new(captioner, args.max_batch)?;
    let model = batcher.model_name().to_string();
    let options = Options {
        addr: SocketAddr::new(args.host, args.port),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        images: ImagePolicy {
            allow_files,
            max_pixels: args.max_image_pixels,
        },
        max_body: args.max_body << 20,
        queue: args.queue,
        timeout: Duration::from_secs_f64(args.timeout),
        defaults: args.answering.decoding.sampling(ctx.seed),
        seed: ctx.seed,
        request_log: ctx.run.as_ref().map(|r| r.path().join("requests.jsonl")),
    };
    let quiet = ctx.quiet;
    let served = serve(batcher, options, |addr| {
        tracing::info!(%addr, model = %model, "listening");
        if !quiet {
            eprintln!("mt serve: {model} on http://{addr}/v1 (Ctrl-C or SIGTERM to stop)");
        }
    })?;
    if let Some(run) = &mut ctx.run {
        run.set_count("answered", served.answered);
        run.set_count("failed", served.failed);
    }
    if !ctx.quiet {
        eprintln!(
            "mt serve: stopped; {} requests answered, {} failed",
            served.answered, served.failed
        );
    }
    Ok(())
}
