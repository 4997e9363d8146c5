//! `mt download`: dataset shards and checkpoints from the Hugging Face Hub.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::args::RepoTypeArg;
use super::{Context, finish_failures, print};
use crate::core::display::human_bytes;
use crate::core::error::usage;
use crate::core::hub::download::{self, Plan, Report, Request};
use crate::core::hub::extract_all::{Unpacked, unpack};
use crate::core::hub::http::{Client, RetryPolicy};
use crate::core::hub::layout::{Layout, Presence};
use crate::core::hub::repo::RepoRef;
use crate::core::hub::select::Selection;
use crate::core::hub::settings::HubSettings;

const EXAMPLES: &str = "\
Examples:
  mt download UCSC-VLAA/MedTrinity-25M --repo-type dataset --config 25M_demo
  mt download UCSC-VLAA/LLaVA-Med-pp --include 'slake/*'
  mt download openai/clip-vit-large-patch14-336 --local-dir ckpts/clip
  mt download hf://datasets/UCSC-VLAA/MedTrinity-25M@main/25M_accessible --dry-run
  mt download --verify UCSC-VLAA/LLaVA-Med-Captioner

Files go to the Hugging Face cache ($HF_HUB_CACHE, default $HF_HOME/hub or
~/.cache/huggingface/hub) in its standard layout, so transformers, datasets and
huggingface_hub find them (and mt reuses what they fetched); the snapshot folder is
printed on stdout. A killed download resumes where it stopped; every file is checked
against the Hub's sha256 (LFS) or git blob id while it streams. Token: --token, HF_TOKEN,
HF_TOKEN_PATH or $HF_HOME/token. HF_ENDPOINT picks another Hub; HF_HUB_OFFLINE=1 makes
no requests. Exit 3 when some files failed (listed, and in the run's failures.json).";

/// Download dataset shards and model checkpoints from the Hugging Face Hub (resumable,
/// verified, into the standard cache shared with huggingface_hub).
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Repository (`org/name`, `datasets/org/name` or `hf://datasets/org/name@rev/path`).
    pub repo: String,
    /// Files to fetch (default: the whole repository, after --include / --exclude).
    pub files: Vec<String>,
    /// Repository type.
    #[arg(long, value_enum, default_value = "model")]
    pub repo_type: RepoTypeArg,
    /// Branch, tag, commit, refs/pr/N or refs/convert/parquet (default: main).
    #[arg(long)]
    pub revision: Option<String>,
    /// Only files matching these globs (fnmatch; `*` matches `/`; `dir/` = all under dir).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip files matching these globs.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// MedTrinity-25M file set: 25M_demo (parquet with images) or 25M_full (parquet
    /// manifests + 25M_accessible/ image shards); any other name selects `NAME/`.
    #[arg(long)]
    pub config: Option<String>,
    /// Put files at their paths in this folder instead of the shared cache.
    #[arg(long, value_name = "DIR")]
    pub local_dir: Option<PathBuf>,
    /// List files, sizes and what is already present; download nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-check a finished download (sha256 / git id) without downloading.
    #[arg(long, conflicts_with = "dry_run")]
    pub verify: bool,
    /// Parallel downloads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_workers: u16,
    /// After downloading, extract the .tar.zst image shards (resumable per shard) and
    /// check the parquet manifests' file_name column against the extracted files.
    #[arg(long, conflicts_with = "verify")]
    pub extract: bool,
    /// Where --extract puts the files (implies --extract; default: <local dir>/extracted,
    /// or ./<repo name>-extracted when downloading into the cache).
    #[arg(long, value_name = "DIR", conflicts_with = "verify")]
    pub extract_to: Option<PathBuf>,
    /// Access token (else HF_TOKEN, HF_TOKEN_PATH, $HF_HOME/token). Never logged.
    #[arg(long, value_name = "TOKEN")]
    #[serde(skip)]
    pub token: Option<String>,
    /// Give up on a connection after this many seconds without a byte, and resume.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub stall_timeout: f64,
    /// Failed attempts per request before a file fails (attempts that moved bytes are free).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

/// Runs `mt download`.
pub(crate) fn run(args: &Args, ctx: &mut Context) -> Result<()> {
    let settings = HubSettings::from_env(args.token.clone())?;
    let req = request(args, &settings)?;
    let client = (!settings.offline).then(|| client(args, &settings));
    if settings.offline {
        tracing::info!("HF_HUB_OFFLINE is set: using only what is on disk");
    }
    let plan = download::plan(client.as_ref(), &req)?;
    if args.dry_run {
        return dry_run(&req, &plan, ctx);
    }
    let report = if args.verify {
        download::verify(&req, &plan)
    } else {
        download::execute(client.as_ref(), &req, &plan)
    };
    if !ctx.quiet && !ctx.json {
        eprint!("{}", summary(&report, args.verify));
    }
    let mut failures = report.failures();
    let mut doc = serde_json::to_value(&report)?;
    if args.extract || args.extract_to.is_some() {
        let dest = extract_dir(args.extract_to.as_deref(), &req);
        let ready: Vec<PathBuf> = report
            .details
            .iter()
            .filter(|d| !matches!(d.outcome, download::FileOutcome::Failed { .. }))
            .map(|d| report.path.join(&d.path))
            .collect();
        let (unpacked, check) = unpack(&ready, &dest, usize::from(args.max_workers))?;
        if let (Some(run), Some(check)) = (&ctx.run, &check) {
            write_list(run, "missing_files.txt", &check.missing)?;
            write_list(run, "extra_files.txt", &check.extra)?;
        }
        if !ctx.quiet && !ctx.json {
            eprint!("{}", extract_summary(&unpacked));
        }
        failures.extend(unpacked.failed.iter().cloned());
        doc["extract"] = serde_json::to_value(&unpacked)?;
    }
    if let Some(run) = &ctx.run {
        run.write_json("download.json", &doc)?;
    }
    if ctx.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        print(&format!("{}\n", report.path.display()))?;
    }
    let failed = failures.len();
    finish_failures(ctx, failures, failed, report.files)
}

/// `--extract`'s folder: as given, or beside the files.
fn extract_dir(dir: Option<&Path>, req: &Request) -> PathBuf {
    if let Some(dir) = dir {
        return dir.to_path_buf();
    }
    match &req.layout {
        Layout::LocalDir { root } => root.join("extracted"),
        Layout::Cache { .. } => {
            let name = req.repo.id.rsplit('/').next().unwrap_or(&req.repo.id);
            PathBuf::from(format!("{name}-extracted"))
        }
    }
}

fn write_list(run: &crate::core::run::RunDir, name: &str, lines: &[String]) -> Result<()> {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    crate::core::files::write_atomic(&run.path().join(name), text.as_bytes())
}

fn extract_summary(u: &Unpacked) -> String {
    let mut s = format!(
        "Extracted {} of {} shards into {} ({} done before, {} failed): {} files, {}\n",
        u.extracted,
        u.shards,
        u.dest.display(),
        u.skipped,
        u.failed.len(),
        u.entries,
        human_bytes(u.bytes)
    );
    if u.ignored > 0 {
        let _ = writeln!(
            s,
            "  {} links/devices in the shards were not extracted",
            u.ignored
        );
    }
    if let Some(m) = &u.manifest {
        let _ = writeln!(
            s,
            "  manifest check ({} parquet): {} names, {} present, {} missing, {} extra files",
            m.manifests, m.expected, m.present, m.missing, m.extra
        );
        for (what, list, n) in [
            ("missing", &m.missing_sample, m.missing),
            ("extra", &m.extra_sample, m.extra),
        ] {
            for name in list {
                let _ = writeln!(s, "    {what}: {name}");
            }
            if n > list.len() {
                let _ = writeln!(
                    s,
                    "    ... {} more {what} (all in the run directory's {what}_files.txt)",
                    n - list.len()
                );
            }
        }
    }
    s
}

fn request(args: &Args, settings: &HubSettings) -> Result<Request> {
    if !(args.stall_timeout.is_finite() && args.stall_timeout > 0.0) {
        return Err(usage(format!(
            "--stall-timeout {} is not a positive number of seconds",
            args.stall_timeout
        )));
    }
    let repo = RepoRef::parse(&args.repo, args.repo_type.into())?;
    let revision = match (&args.revision, &repo.revision) {
        (Some(a), Some(b)) if a != b => {
            return Err(usage(format!(
                "--revision {a} contradicts `@{b}` in {}",
                args.repo
            )));
        }
        (Some(r), _) | (None, Some(r)) => r.clone(),
        (None, None) => "main".to_string(),
    };
    let scope = args
        .config
        .as_deref()
        .map(config_patterns)
        .unwrap_or_default();
    let layout = match &args.local_dir {
        Some(dir) => Layout::LocalDir { root: dir.clone() },
        None => Layout::cache(&settings.cache_dir, &repo),
    };
    Ok(Request {
        repo,
        revision,
        files: args.files.clone(),
        selection: Selection::new(&scope, &args.include, &args.exclude)?,
        layout,
        max_workers: usize::from(args.max_workers),
        record: !args.dry_run && !args.verify,
    })
}

/// The folders a `--config` name selects.
fn config_patterns(config: &str) -> Vec<String> {
    match config {
        "25M_full" => vec!["25M_full/".into(), "25M_accessible/".into()],
        other => vec![format!("{other}/")],
    }
}

fn client(args: &Args, settings: &HubSettings) -> Client {
    let stall = Duration::from_secs_f64(args.stall_timeout.clamp(0.1, 3600.0));
    let mut policy = RetryPolicy {
        max_retries: args.retries,
        ..RetryPolicy::default()
    };
    // Tests shorten the backoff; the server's Retry-After is honoured regardless.
    if let Some(ms) = std::env::var("MT_HUB_BACKOFF_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        policy.base = Duration::from_millis(ms);
        policy.max_backoff = Duration::from_millis(ms * 8);
    }
    Client::new(&settings.endpoint, settings.token.clone(), stall, policy)
}

fn dry_run(req: &Request, plan: &Plan, ctx: &Context) -> Result<()> {
    #[derive(Serialize)]
    struct Row<'a> {
        path: &'a str,
        size: u64,
        lfs: bool,
        status: String,
    }
    let rows: Vec<Row> = plan
        .files
        .iter()
        .map(|p| Row {
            path: &p.file.path,
            size: p.file.size,
            lfs: p.file.lfs_sha256.is_some(),
            status: match p.presence {
                Presence::Complete => "present".into(),
                Presence::BlobOnly => "in cache".into(),
                Presence::Partial(n) => format!("partial {}", human_bytes(n)),
                Presence::Missing => "missing".into(),
            },
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.size).sum();
    let present: u64 = plan
        .files
        .iter()
        .filter(|p| matches!(p.presence, Presence::Complete | Presence::BlobOnly))
        .map(|p| p.file.size)
        .sum();
    if ctx.json {
        let doc = serde_json::json!({
            "repo": req.repo.display(), "revision": req.revision, "commit": plan.commit,
            "path": req.layout.root(&plan.commit), "files": rows, "absent": plan.absent,
            "bytes_total": total, "bytes_present": present, "bytes_to_download": total - present,
        });
        return print(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    let mut out = String::new();
    for r in &rows {
        writeln!(
            out,
            "{:>12}  {:<14} {}",
            human_bytes(r.size),
            r.status,
            r.path
        )?;
    }
    for a in &plan.absent {
        writeln!(out, "{:>12}  {:<14} {a}", "-", "not in repo")?;
    }
    writeln!(
        out,
        "{} files, {} total, {} present, {} to download ({} @ {})",
        rows.len(),
        human_bytes(total),
        human_bytes(present),
        human_bytes(total - present),
        req.repo.display(),
        &plan.commit[..plan.commit.len().min(12)]
    )?;
    print(&out)
}

fn summary(r: &Report, verify: bool) -> String {
    let rate = if r.seconds > 0.0 {
        format!(
            ", {}/s",
            human_bytes((r.bytes_received as f64 / r.seconds) as u64)
        )
    } else {
        String::new()
    };
    let head = if verify { "Verified" } else { "Downloaded" };
    let mut s = format!(
        "{head} {} @ {} ({}): {} files, {} in {:.1} s{rate}\n",
        r.repo,
        r.revision,
        &r.commit[..r.commit.len().min(12)],
        r.files,
        human_bytes(r.bytes_received),
        r.seconds
    );
    let _ = writeln!(
        s,
        "  downloaded {} (verified {}), already present {}, linked from cache {}, failed {}, resumed {}",
        r.downloaded,
        r.verified,
        r.present,
        r.linked,
        r.failed,
        human_bytes(r.bytes_resumed)
    );
    s
}
