//! `--model org/name[@revision]`: a checkpoint named by its Hub id, as transformers'
//! `from_pretrained` takes one. A folder that exists is used as it is; otherwise an id
//! is looked up in the Hugging Face cache and whatever the snapshot lacks is fetched by
//! mt's downloader (resumable, verified, with progress) unless `HF_HUB_OFFLINE` is set.
//! Weights come as safetensors when the repository has them, else as `.bin`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::download::{self, Request};
use super::http::{Client, RetryPolicy};
use super::layout::Layout;
use super::repo::{RepoKind, RepoRef};
use super::select::Selection;
use super::settings::HubSettings;

/// Files a model snapshot does without: other frameworks' weights, and `.bin` weights
/// when safetensors are there.
const OTHER_FORMATS: [&str; 6] = [".msgpack", ".h5", ".onnx", ".gguf", ".ot", ".tflite"];
const TORCH_WEIGHTS: [&str; 3] = [".bin", ".pt", ".pth"];

/// Fetches the vision tower `name` (a Hub id, as LLaVA's builder loads
/// `mm_vision_tower`) into the Hugging Face cache. Offline, for a name that is no Hub
/// id, or when the fetch fails (a warning), nothing more happens: loading the checkpoint
/// then says the tower is missing and how to give it.
pub(crate) fn fetch_tower(name: &str) {
    match HubSettings::from_env(None) {
        Ok(settings) if !settings.offline => {
            if let Err(e) = resolve(Path::new(name)) {
                tracing::warn!("vision tower {name}: {e:#}");
            }
        }
        _ => {}
    }
}

/// The checkpoint folder `spec` names: itself when it exists (or cannot be a Hub id),
/// else the cache snapshot of the Hub model `org/name[@revision]`, completed first.
pub(crate) fn resolve(spec: &Path) -> Result<PathBuf> {
    let Some(text) = spec.to_str() else {
        return Ok(spec.to_path_buf());
    };
    let looks_like_id = !spec.exists()
        && (text.starts_with("hf://")
            || (text.matches('/').count() == 1 && !text.starts_with(['.', '/', '~'])));
    if !looks_like_id {
        return Ok(spec.to_path_buf());
    }
    let Ok(repo) = RepoRef::parse(text, RepoKind::Model) else {
        return Ok(spec.to_path_buf());
    };
    if repo.kind != RepoKind::Model || repo.path.is_some() {
        bail!("--model {text}: not a folder, and not a model repository id (org/name[@revision])");
    }
    let settings = HubSettings::from_env(None)?;
    let req = Request {
        revision: repo.revision.clone().unwrap_or_else(|| "main".into()),
        layout: Layout::cache(&settings.cache_dir, &repo),
        repo,
        files: Vec::new(),
        selection: Selection::new(&[], &[], &[])?,
        max_workers: 8,
        record: true,
    };
    let client = (!settings.offline).then(|| {
        let stall = Duration::from_secs(60);
        Client::new(
            &settings.endpoint,
            settings.token.clone(),
            stall,
            RetryPolicy::default(),
        )
    });
    let where_ = if settings.offline {
        format!(
            "the Hugging Face cache {} (HF_HUB_OFFLINE is set)",
            settings.cache_dir.display()
        )
    } else {
        settings.endpoint.clone()
    };
    let mut plan = download::plan(client.as_ref(), &req)
        .with_context(|| format!("--model {text}: no such folder; as a Hub model in {where_}"))?;
    let safetensors = plan
        .files
        .iter()
        .any(|f| f.file.path.ends_with(".safetensors"));
    let skipped = |path: &str| {
        let is = |exts: &[&str]| exts.iter().any(|ext| path.ends_with(ext));
        is(&OTHER_FORMATS) || (safetensors && is(&TORCH_WEIGHTS))
    };
    plan.files.retain(|f| !skipped(&f.file.path));
    let report = download::execute(client.as_ref(), &req, &plan);
    if let Some((file, error)) = report.failures().into_iter().next() {
        bail!("--model {text}: {file}: {error}");
    }
    let dir = req.layout.root(&plan.commit);
    tracing::info!("--model {text}: {}", dir.display());
    Ok(dir)
}
