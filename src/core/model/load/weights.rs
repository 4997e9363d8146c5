//! Checkpoint tensors: sharded safetensors (memory-mapped, loaded tensor by tensor)
//! and PyTorch `.bin` zip archives, under one canonical naming that both LLaVA
//! layouts map onto:
//!
//! | canonical | original LLaVA | llava-hf (old / transformers >= 4.52) |
//! |---|---|---|
//! | `llm.X` | `model.X` | `language_model.model.X` / `model.language_model.X` |
//! | `llm.lm_head.X` | `lm_head.X` | `language_model.lm_head.X` / `lm_head.X` |
//! | `projector.0.X`, `projector.2.X` | `model.mm_projector.{0,2}.X` | `(model.)multi_modal_projector.linear_{1,2}.X` |
//! | `vision.X` | `model.vision_tower.vision_tower.vision_model.X` | `(model.)vision_tower.(vision_model.)X` |
//!
//! A separate CLIP tower folder maps `vision_model.X` to `vision.X`.
//!
//! Modules ask for tensors by canonical name and shape. A missing tensor or a shape
//! mismatch is recorded (the module gets a zero-cost placeholder) so that
//! `Weights::finish` can list every problem at once instead of stopping at the first.
//!
//! With [`Weights::quantize`], the language model's matrices (`llm.*` Linear weights
//! and the token embeddings) load as GGML blocks, quantized a chunk of rows at a time
//! straight from the mapped file; the file's pages are handed back to the kernel as
//! each tensor is read, so a load holds the model's own size, not the file's.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::Content;

use crate::core::error::contain_panic;
use crate::core::model::arch::linear::Matrix;
use crate::core::model::load::gguf;
use crate::core::model::quant::{QuantKind, QuantMatrix, copy_to, is_block_type};

/// How a stored tensor name relates to the model.
#[derive(Debug, PartialEq, Eq)]
pub enum Naming {
    /// A tensor the model may use, under its canonical name.
    Canonical(String),
    /// A known tensor the model never needs (RoPE buffers, CLIP's text tower, ...).
    Ignore,
    /// A name no layout explains: reported as unexpected.
    Unknown,
}

/// Stored-name conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMap {
    /// `LlavaLlamaForCausalLM` checkpoints.
    Original,
    /// `LlavaForConditionalGeneration` checkpoints (both transformers generations).
    Hf,
    /// A CLIP model or vision-model folder.
    ClipTower,
}

impl NameMap {
    /// Maps one stored name.
    pub fn canonical(self, name: &str) -> Naming {
        if name.ends_with("rotary_emb.inv_freq") || name.ends_with("position_ids") {
            return Naming::Ignore;
        }
        let rules: &[(&str, &str)] = match self {
            NameMap::Original => &[
                ("model.mm_projector.", "projector."),
                ("model.vision_tower.vision_tower.vision_model.", "vision."),
                ("model.", "llm."),
                ("lm_head.", "llm.lm_head."),
            ],
            NameMap::Hf => &[
                ("model.language_model.", "llm."),
                ("language_model.model.", "llm."),
                ("language_model.lm_head.", "llm.lm_head."),
                ("lm_head.", "llm.lm_head."),
                ("model.multi_modal_projector.linear_1.", "projector.0."),
                ("model.multi_modal_projector.linear_2.", "projector.2."),
                ("multi_modal_projector.linear_1.", "projector.0."),
                ("multi_modal_projector.linear_2.", "projector.2."),
                ("model.vision_tower.vision_model.", "vision."),
                ("vision_tower.vision_model.", "vision."),
                ("model.vision_tower.", "vision."),
                ("vision_tower.", "vision."),
            ],
            NameMap::ClipTower => {
                if [
                    "text_model.",
                    "text_projection",
                    "visual_projection",
                    "logit_scale",
                ]
                .iter()
                .any(|p| name.starts_with(p))
                {
                    return Naming::Ignore;
                }
                &[("vision_model.", "vision.")]
            }
        };
        rules
            .iter()
            .find_map(|(from, to)| {
                name.strip_prefix(from)
                    .map(|rest| Naming::Canonical(format!("{to}{rest}")))
            })
            .unwrap_or(Naming::Unknown)
    }
}

/// The original LLaVA layout's stored name of a canonical name (the inverse of
/// [`NameMap::Original`]).
pub fn original_name(canonical: &str) -> String {
    StoredNames::Original.stored(canonical)
}

/// How a checkpoint names its tensors on disk: an export keeps its source's names, so a
/// fine-tuned llava-hf model loads where its base did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredNames {
    /// `LlavaLlamaForCausalLM`: `model.*`, `lm_head.*`, `model.mm_projector.*`,
    /// `model.vision_tower.vision_tower.vision_model.*`.
    Original,
    /// `LlavaForConditionalGeneration` as transformers >= 4.52 saves it:
    /// `model.language_model.*`, `lm_head.*`, `model.multi_modal_projector.linear_{1,2}.*`,
    /// `model.vision_tower.vision_model.*`.
    Hf,
    /// `LlavaForConditionalGeneration` as earlier transformers saved it (the llava-hf
    /// repositories): `language_model.model.*`, `language_model.lm_head.*`,
    /// `multi_modal_projector.*`, `vision_tower.vision_model.*`.
    HfLegacy,
}

impl StoredNames {
    /// The convention of the checkpoint in `dir`: its config's architecture, and for
    /// llava-hf the prefix its safetensors files use.
    pub(crate) fn of(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&config_path)
                .with_context(|| format!("cannot read {}", config_path.display()))?,
        )
        .with_context(|| format!("{}: invalid JSON", config_path.display()))?;
        let hf = config["architectures"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "LlavaForConditionalGeneration"));
        if !hf {
            return Ok(Self::Original);
        }
        for file in weight_files(dir)? {
            if file.extension().is_none_or(|e| e != "safetensors") {
                continue;
            }
            // SAFETY: read-only map of a checkpoint nobody is expected to truncate meanwhile.
            let st = unsafe { MmapedSafetensors::new(&file) }
                .with_context(|| format!("cannot read {}", file.display()))?;
            if st
                .tensors()
                .iter()
                .any(|(name, _)| name.starts_with("language_model."))
            {
                return Ok(Self::HfLegacy);
            }
        }
        Ok(Self::Hf)
    }

    /// How stored names map to canonical ones.
    pub(crate) fn name_map(self) -> NameMap {
        match self {
            Self::Original => NameMap::Original,
            Self::Hf | Self::HfLegacy => NameMap::Hf,
        }
    }

    /// The stored name of a canonical name.
    pub fn stored(self, canonical: &str) -> String {
        let rules: &[(&str, &str)] = match self {
            Self::Original => &[
                ("llm.lm_head.", "lm_head."),
                ("llm.", "model."),
                ("projector.", "model.mm_projector."),
                ("vision.", "model.vision_tower.vision_tower.vision_model."),
            ],
            Self::Hf => &[
                ("llm.lm_head.", "lm_head."),
                ("llm.", "model.language_model."),
                ("projector.0.", "model.multi_modal_projector.linear_1."),
                ("projector.2.", "model.multi_modal_projector.linear_2."),
                ("vision.", "model.vision_tower.vision_model."),
            ],
            Self::HfLegacy => &[
                ("llm.lm_head.", "language_model.lm_head."),
                ("llm.", "language_model.model."),
                ("projector.0.", "multi_modal_projector.linear_1."),
                ("projector.2.", "multi_modal_projector.linear_2."),
                ("vision.", "vision_tower.vision_model."),
            ],
        };
        rules
            .iter()
            .find_map(|(from, to)| {
                canonical
                    .strip_prefix(from)
                    .map(|rest| format!("{to}{rest}"))
            })
            .unwrap_or_else(|| canonical.to_string())
    }
}

enum TensorFile {
    Safetensors(MmapedSafetensors),
    Pth(PthTensors),
    /// A GGUF file's directory and the file to read tensors from.
    Gguf(Content, RefCell<std::fs::File>),
}

struct Entry {
    file: usize,
    stored: String,
    shape: Vec<usize>,
    /// GGUF query/key rows: the heads GGML interleaved.
    heads: Option<usize>,
}

/// All tensors of a model, from one or more folders, by canonical name.
pub struct Weights {
    files: Vec<(PathBuf, TensorFile)>,
    entries: HashMap<String, Entry>,
    unknown: Vec<String>,
    device: Device,
    dtype: DType,
    quantize: Option<QuantKind>,
    /// Matrices loaded quantized: count and bytes by GGML type.
    quantized: RefCell<BTreeMap<String, (usize, usize)>>,
    used: RefCell<HashSet<String>>,
    problems: RefCell<Vec<String>>,
}

impl Weights {
    /// An empty store that loads onto `device` as `dtype`.
    pub fn new(device: &Device, dtype: DType) -> Self {
        Self {
            files: Vec::new(),
            entries: HashMap::new(),
            unknown: Vec::new(),
            device: device.clone(),
            dtype,
            quantize: None,
            quantized: RefCell::new(BTreeMap::new()),
            used: RefCell::new(HashSet::new()),
            problems: RefCell::new(Vec::new()),
        }
    }

    /// Loads the language model's matrices (`llm.*`) quantized to `kind`.
    pub fn quantize(&mut self, kind: QuantKind) {
        self.quantize = Some(kind);
    }

    /// Adds the weight files of a folder. Tensors already known from an earlier folder
    /// keep priority (a checkpoint's own CLIP copy beats the tower folder's).
    pub(crate) fn add_dir(&mut self, dir: &Path, names: NameMap) -> Result<()> {
        for path in weight_files(dir)? {
            self.add_file(&path, names)?;
        }
        Ok(())
    }

    /// Adds one `.safetensors` or `.bin` file.
    pub fn add_file(&mut self, path: &Path, names: NameMap) -> Result<()> {
        let is_pth = path
            .extension()
            .is_some_and(|e| e == "bin" || e == "pt" || e == "pth");
        // The readers parse what the file claims; a panic on hostile bytes is its error.
        let reader = format!("{}: the checkpoint reader", path.display());
        let (file, listing) = contain_panic(&reader, || {
            Ok(if is_pth {
                crate::core::pickle::allow_list::check(path)?;
                let pth = PthTensors::new(path, None).map_err(|e| {
                    anyhow!("cannot read PyTorch checkpoint {}: {e}", path.display())
                })?;
                let listing: Vec<(String, Vec<usize>)> = pth
                    .tensor_infos()
                    .iter()
                    .map(|(name, info)| (name.clone(), info.layout.shape().dims().to_vec()))
                    .collect();
                (TensorFile::Pth(pth), listing)
            } else {
                // SAFETY: the file is mapped read-only; like every safetensors reader we
                // assume nobody truncates a checkpoint while it is being loaded.
                let st = unsafe { MmapedSafetensors::new(path) }
                    .map_err(|e| anyhow!("cannot read safetensors file {}: {e}", path.display()))?;
                let listing = st
                    .tensors()
                    .into_iter()
                    .map(|(name, view)| (name, view.shape().to_vec()))
                    .collect();
                (TensorFile::Safetensors(st), listing)
            })
        })?;
        let index = self.files.len();
        self.files.push((path.to_path_buf(), file));
        for (stored, shape) in listing {
            match names.canonical(&stored) {
                Naming::Canonical(name) => {
                    self.entries.entry(name).or_insert(Entry {
                        file: index,
                        stored,
                        shape,
                        heads: None,
                    });
                }
                Naming::Ignore => {}
                Naming::Unknown => self
                    .unknown
                    .push(format!("{stored} (in {})", path.display())),
            }
        }
        Ok(())
    }

    /// Adds the tensors of a GGUF file (llama.cpp's names, see [`gguf::canonical`]).
    pub(crate) fn add_gguf(&mut self, path: &Path) -> Result<()> {
        let content = gguf::read_header(path)?;
        let widths = gguf::Widths::of(&content);
        let index = self.files.len();
        for (stored, info) in &content.tensor_infos {
            match gguf::canonical(stored, info.shape.dims(), widths) {
                Some(mapped) => {
                    self.entries.entry(mapped.name).or_insert(Entry {
                        file: index,
                        stored: stored.clone(),
                        shape: info.shape.dims().to_vec(),
                        heads: mapped.heads,
                    });
                }
                None => self
                    .unknown
                    .push(format!("{stored} (in {})", path.display())),
            }
        }
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        self.files.push((
            path.to_path_buf(),
            TensorFile::Gguf(content, RefCell::new(file)),
        ));
        Ok(())
    }

    /// Whether a canonical name is present.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// A view that prefixes every name with `prefix.`.
    pub(crate) fn scope(&self, prefix: &str) -> Params<'_> {
        Params {
            weights: self,
            prefix: prefix.to_string(),
        }
    }

    /// The entry of `name` when it is stored with `shape`; records the name as used, or
    /// the problem.
    fn locate(&self, name: &str, shape: &[usize]) -> Option<&Entry> {
        self.used.borrow_mut().insert(name.to_string());
        let Some(entry) = self.entries.get(name) else {
            self.problems
                .borrow_mut()
                .push(format!("missing tensor {name} {shape:?}"));
            return None;
        };
        if entry.shape != shape {
            self.problems.borrow_mut().push(format!(
                "tensor {} has shape {:?}, expected {shape:?}",
                entry.stored, entry.shape
            ));
            return None;
        }
        Some(entry)
    }

    /// Loads a tensor by canonical name, checking its shape. Problems are recorded
    /// and a placeholder is returned; [`Weights::finish`] reports them.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let Some(entry) = self.locate(name, shape) else {
            return self.placeholder(shape);
        };
        Ok(self.load(entry, &self.device)?.to_dtype(self.dtype)?)
    }

    /// A stored tensor as it is stored, on `device`.
    fn load(&self, entry: &Entry, device: &Device) -> Result<Tensor> {
        let (path, file) = &self.files[entry.file];
        contain_panic("the checkpoint reader", || {
            Ok(match file {
                TensorFile::Safetensors(st) => {
                    let tensor = st.load(&entry.stored, device)?;
                    release_pages(st.get(&entry.stored)?.data());
                    tensor
                }
                TensorFile::Pth(pth) => pth
                    .get(&entry.stored)
                    .and_then(|t| t.ok_or_else(|| candle_core::Error::Msg("vanished".into())))
                    .and_then(|t| t.to_device(device))?,
                TensorFile::Gguf(..) => self
                    .gguf_tensor(entry)?
                    .dequantize(&Device::Cpu)?
                    .to_device(device)?,
            })
        })
        .map_err(|e| {
            anyhow!(
                "cannot load tensor {} from {}: {e:#}",
                entry.stored,
                path.display()
            )
        })
    }

    /// Counts a quantized matrix for the log of [`Weights::finish`].
    fn tally(&self, q: QuantMatrix) -> QuantMatrix {
        let mut tally = self.quantized.borrow_mut();
        let entry = tally
            .entry(format!("{:?}", q.ggml_dtype()).to_lowercase())
            .or_default();
        entry.0 += 1;
        entry.1 += q.size_in_bytes();
        q
    }

    /// A GGUF entry's tensor as stored, on the CPU, query/key rows in transformers'
    /// order.
    fn gguf_tensor(&self, entry: &Entry) -> Result<QTensor> {
        let TensorFile::Gguf(content, file) = &self.files[entry.file].1 else {
            bail!("{} is not in a GGUF file", entry.stored);
        };
        // The reader trusts the file's directory; a panic on hostile bytes is its error.
        let q = contain_panic("the GGUF reader", || {
            Ok(content.tensor(&mut *file.borrow_mut(), &entry.stored, &Device::Cpu)?)
        })?;
        match entry.heads {
            Some(heads) => gguf::reorder_heads(&q, heads, gguf::Order::FromGgml),
            None => Ok(q),
        }
    }

    /// Loads a matrix by canonical name: quantized when [`Weights::quantize`] asked
    /// for it, the name is in the language model (`llm.`) and a row is a whole number of
    /// blocks (else q8_0's; else dense); dense otherwise, as [`Weights::get`].
    /// A matrix stored quantized in a GGUF file loads as it is stored.
    pub(crate) fn matrix(&self, name: &str, (rows, cols): (usize, usize)) -> Result<Matrix> {
        let stored_quantized = self.entries.get(name).is_some_and(|entry| {
            matches!(&self.files[entry.file].1, TensorFile::Gguf(content, _)
                if content.tensor_infos.get(&entry.stored).is_some_and(|i| is_block_type(i.ggml_dtype)))
        });
        let kind = match self.quantize {
            Some(kind) if name.starts_with("llm.") => kind.for_width(cols),
            _ => None,
        };
        if !stored_quantized && kind.is_none() {
            return Ok(Matrix::Dense(self.get(name, &[rows, cols])?));
        }
        let Some(entry) = self.locate(name, &[rows, cols]) else {
            return Ok(Matrix::Dense(self.placeholder(&[rows, cols])?));
        };
        let (path, file) = &self.files[entry.file];
        let Some(kind) = kind.filter(|_| !stored_quantized) else {
            let q = self
                .gguf_tensor(entry)
                .with_context(|| format!("cannot load {} from {}", entry.stored, path.display()))?;
            let q = match self.device {
                Device::Cpu => q,
                _ => copy_to(&q, &self.device)?,
            };
            return Ok(Matrix::Quantized(
                self.tally(QuantMatrix::new(q, self.dtype)?),
            ));
        };
        let context = || format!("cannot quantize {} from {}", entry.stored, path.display());
        let quantized = match file {
            TensorFile::Safetensors(st) => {
                let view = st.get(&entry.stored).with_context(context)?;
                let dtype = stored_dtype(view.dtype()).with_context(context)?;
                let row_bytes = cols * dtype.size_in_bytes();
                let data = view.data();
                let read = |r: std::ops::Range<usize>| {
                    let bytes = &data[r.start * row_bytes..r.end * row_bytes];
                    let t = Tensor::from_raw_buffer(bytes, dtype, &[r.len(), cols], &Device::Cpu)?;
                    release_pages(bytes);
                    Ok(t)
                };
                QuantMatrix::quantize_rows(kind, (rows, cols), read, &self.device, self.dtype)
            }
            TensorFile::Pth(_) | TensorFile::Gguf(..) => {
                let dense = self.load(entry, &Device::Cpu)?;
                let read = |r: std::ops::Range<usize>| Ok(dense.narrow(0, r.start, r.len())?);
                QuantMatrix::quantize_rows(kind, (rows, cols), read, &self.device, self.dtype)
            }
        };
        Ok(Matrix::Quantized(
            self.tally(quantized.with_context(context)?),
        ))
    }

    fn placeholder(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::zeros((), self.dtype, &self.device)?.broadcast_as(shape)?)
    }

    /// Fails with the full list of missing and mis-shaped tensors, if any; logs stored
    /// tensors that no layout explains and language-model tensors nothing used.
    pub(crate) fn finish(self) -> Result<()> {
        let problems = self.problems.into_inner();
        if !problems.is_empty() {
            let shown: Vec<&str> = problems.iter().take(12).map(String::as_str).collect();
            let more = problems.len().saturating_sub(shown.len());
            bail!(
                "the checkpoint does not fit the config: {}{}",
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            );
        }
        for (kind, (count, bytes)) in self.quantized.into_inner() {
            tracing::info!(
                "language model: {count} matrices in {kind} ({:.1} MiB)",
                bytes as f64 / (1 << 20) as f64
            );
        }
        let used = self.used.into_inner();
        let unused: BTreeSet<&str> = self
            .entries
            .keys()
            .filter(|name| !used.contains(*name) && !name.starts_with("vision."))
            .map(String::as_str)
            .collect();
        if !self.unknown.is_empty() || !unused.is_empty() {
            tracing::warn!(
                unexpected = ?self.unknown,
                unused = ?unused,
                "checkpoint has tensors the model does not use"
            );
        }
        Ok(())
    }
}

/// A name-prefixed view of [`Weights`], handed to module constructors.
#[derive(Clone)]
pub(crate) struct Params<'a> {
    weights: &'a Weights,
    prefix: String,
}

impl<'a> Params<'a> {
    /// A deeper scope: `prefix.sub`.
    pub(crate) fn pp(&self, sub: impl std::fmt::Display) -> Params<'a> {
        Params {
            weights: self.weights,
            prefix: format!("{}.{sub}", self.prefix),
        }
    }

    /// Loads `prefix.name` with the expected shape.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.weights.get(&format!("{}.{name}", self.prefix), shape)
    }

    /// Loads the matrix `prefix.name`, quantized when asked (see [`Weights::matrix`]).
    pub(crate) fn matrix(&self, name: &str, shape: (usize, usize)) -> Result<Matrix> {
        self.weights
            .matrix(&format!("{}.{name}", self.prefix), shape)
    }

    /// Whether `prefix.name` is stored.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.weights.contains(&format!("{}.{name}", self.prefix))
    }
}

/// The candle dtype of a stored float tensor.
fn stored_dtype(dtype: safetensors::Dtype) -> Result<DType> {
    Ok(match dtype {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        other => bail!("a {other:?} tensor cannot be quantized"),
    })
}

/// Hands the pages of a memory-mapped tensor that has been read back to the kernel:
/// they leave this process's resident set (the page cache keeps them), so loading a
/// checkpoint does not hold the whole file in memory next to the model.
fn release_pages(bytes: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let start = bytes.as_ptr() as usize / page * page;
        let end = bytes.as_ptr() as usize + bytes.len();
        // SAFETY: the range covers pages of a read-only file mapping that stays mapped;
        // MADV_DONTNEED only drops them from this process, a later read faults them in
        // again from the file. Advice is best effort: a failure changes nothing.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
    #[cfg(not(unix))]
    let _ = bytes;
}

/// The weight files of a checkpoint folder, in load order: the shards an index
/// names, else `model.safetensors`, else every `*.safetensors`, else the `.bin`
/// equivalents.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    for index in [
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ] {
        let path = dir.join(index);
        if path.exists() {
            return index_shards(&path);
        }
    }
    for single in ["model.safetensors", "pytorch_model.bin"] {
        let path = dir.join(single);
        if path.exists() {
            return Ok(vec![path]);
        }
    }
    let listing =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut shards: Vec<PathBuf> = listing
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    shards.sort();
    if shards.is_empty() {
        bail!(
            "no weights in {} (looked for model.safetensors(.index.json), *.safetensors, pytorch_model.bin(.index.json))",
            dir.display()
        );
    }
    Ok(shards)
}

fn index_shards(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            anyhow!(
                "{}: field `weight_map` is missing or not an object",
                index.display()
            )
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .filter(|f| !f.contains('/') && !f.contains('\\') && !f.starts_with('.'))
            .ok_or_else(|| {
                anyhow!(
                    "{}: weight_map[{tensor:?}] is not a shard file name",
                    index.display()
                )
            })?;
        let path = dir.join(file);
        if !shards.contains(&path) {
            if !path.exists() {
                bail!("{} names shard {file}, which is missing", index.display());
            }
            shards.push(path);
        }
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_map_to_one_naming() {
        let cases = [
            (
                NameMap::Original,
                "model.layers.3.mlp.up_proj.weight",
                Some("llm.layers.3.mlp.up_proj.weight"),
            ),
            (
                NameMap::Original,
                "model.mm_projector.2.bias",
                Some("projector.2.bias"),
            ),
            (
                NameMap::Original,
                "lm_head.weight",
                Some("llm.lm_head.weight"),
            ),
            (
                NameMap::Original,
                "model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight",
                Some("vision.pre_layrnorm.weight"),
            ),
            (
                NameMap::Hf,
                "language_model.model.norm.weight",
                Some("llm.norm.weight"),
            ),
            (
                NameMap::Hf,
                "model.language_model.norm.weight",
                Some("llm.norm.weight"),
            ),
            (
                NameMap::Hf,
                "language_model.lm_head.weight",
                Some("llm.lm_head.weight"),
            ),
            (
                NameMap::Hf,
                "model.multi_modal_projector.linear_2.weight",
                Some("projector.2.weight"),
            ),
            (
                NameMap::Hf,
                "vision_tower.vision_model.post_layernorm.bias",
                Some("vision.post_layernorm.bias"),
            ),
            (
                NameMap::Hf,
                "vision_tower.pre_layrnorm.bias",
                Some("vision.pre_layrnorm.bias"),
            ),
            (
                NameMap::ClipTower,
                "vision_model.embeddings.class_embedding",
                Some("vision.embeddings.class_embedding"),
            ),
            (
                NameMap::Original,
                "model.layers.0.self_attn.rotary_emb.inv_freq",
                None,
            ),
            (
                NameMap::ClipTower,
                "text_model.embeddings.token_embedding.weight",
                None,
            ),
        ];
        for (map, stored, canonical) in cases {
            let want = canonical.map_or(Naming::Ignore, |c| Naming::Canonical(c.to_string()));
            assert_eq!(map.canonical(stored), want, "{stored}");
            // Every stored convention writes back the names it reads.
            let convention = match stored {
                _ if map == NameMap::Original => Some(StoredNames::Original),
                s if s.starts_with("model.") || s.starts_with("lm_head") => Some(StoredNames::Hf),
                s if s.starts_with("vision_tower.pre") => None,
                _ if map == NameMap::Hf => Some(StoredNames::HfLegacy),
                _ => None,
            };
            if let (Some(convention), Some(c)) = (convention, canonical) {
                assert_eq!(
                    convention.stored(c),
                    stored,
                    "the {convention:?} name of {c}"
                );
                assert_eq!(convention.name_map(), map);
            }
        }
        assert_eq!(
            StoredNames::Hf.stored("llm.lm_head.weight"),
            "lm_head.weight"
        );
        assert_eq!(NameMap::Hf.canonical("something.else"), Naming::Unknown);
    }

    #[test]
    fn missing_and_misshaped_tensors_are_all_listed() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(
            &HashMap::from([("model.norm.weight".to_string(), a)]),
            dir.path().join("model.safetensors"),
        )
        .unwrap();
        let mut w = Weights::new(&Device::Cpu, DType::F32);
        w.add_dir(dir.path(), NameMap::Original).unwrap();
        let p = w.scope("llm");
        assert_eq!(p.get("norm.weight", &[3, 2]).unwrap().dims(), &[3, 2]);
        assert_eq!(
            p.get("embed_tokens.weight", &[10, 3]).unwrap().dims(),
            &[10, 3]
        );
        let err = w.finish().unwrap_err().to_string();
        assert!(
            err.contains("model.norm.weight has shape [2, 3], expected [3, 2]"),
            "{err}"
        );
        assert!(
            err.contains("missing tensor llm.embed_tokens.weight [10, 3]"),
            "{err}"
        );
    }

    #[test]
    fn an_index_naming_a_missing_shard_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let err = weight_files(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("model-00001-of-00002.safetensors, which is missing"),
            "{err}"
        );
    }

    /// A change to a safetensors header.
    type Lie = dyn Fn(&mut serde_json::Value);

    /// A safetensors file whose header says what `lie` makes of two honest tensors.
    fn lying_file(dir: &Path, lie: &Lie) -> PathBuf {
        let mut header = serde_json::json!({
            "model.norm.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "lm_head.weight": {"dtype": "F32", "shape": [3], "data_offsets": [16, 28]},
        });
        lie(&mut header);
        let text = header.to_string();
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(&[0u8; 28]);
        let path = dir.join("model.safetensors");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn safetensors_headers_that_lie_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let lies: [(&str, &Lie); 4] = [
            ("offsets past the end", &|h| {
                h["lm_head.weight"]["data_offsets"] = serde_json::json!([16, 4096])
            }),
            ("a huge shape", &|h| {
                h["lm_head.weight"]["shape"] = serde_json::json!([1u64 << 40, 1u64 << 30])
            }),
            ("overlapping tensors", &|h| {
                h["lm_head.weight"]["data_offsets"] = serde_json::json!([0, 12])
            }),
            ("a header longer than the file", &|h| {
                h["pad"] = serde_json::json!("x".repeat(10));
            }),
        ];
        for (what, lie) in lies {
            let path = lying_file(dir.path(), lie);
            if what == "a header longer than the file" {
                // Claim a header far longer than the file holds.
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
                std::fs::write(&path, bytes).unwrap();
            }
            let mut w = Weights::new(&Device::Cpu, DType::F32);
            let err = match w.add_file(&path, NameMap::Original) {
                Err(e) => e.to_string(),
                Ok(()) => w
                    .get("llm.lm_head.weight", &[3])
                    .map(|_| String::new())
                    .unwrap_or_else(|e| e.to_string()),
            };
            assert!(err.contains("model.safetensors"), "{what}: {err:?}");
        }
    }
}
