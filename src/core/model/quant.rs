//! Quantized weight matrices for inference and QLoRA (`--quantize`, GGUF files): GGML's block
//! formats (the bytes llama.cpp reads and writes), held as candle `QTensor`s. On the CPU
//! a product `x Wᵀ` of a few rows quantizes them to 8 bits once and takes candle's block
//! dot products over the compact blocks only (so memory stays at the quantized size); a
//! prompt's many rows run a gemm over a dequantized copy of the one matrix. On CUDA,
//! candle's kernels. Matrices are quantized from dense rows a chunk at a time, so a load
//! never holds a large matrix in f32.

use std::ops::Range;
use std::sync::Arc;

use anyhow::{Result, bail};
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K,
    BlockQ8_0, GgmlType,
};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Storage, Tensor};
use rayon::prelude::*;

/// The formats `--quantize` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum QuantKind {
    /// 8-bit values in blocks of 32 with one f16 scale (8.5 bits a weight).
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 6-bit k-quants in super-blocks of 256 (6.56 bits a weight).
    #[serde(rename = "q6k")]
    Q6K,
    /// 4-bit k-quants in super-blocks of 256 with 6-bit scales and mins (4.5 bits a weight).
    #[serde(rename = "q4k")]
    Q4K,
}

impl QuantKind {
    /// GGML's type.
    pub(crate) fn ggml(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q6K => GgmlDType::Q6K,
            Self::Q4K => GgmlDType::Q4K,
        }
    }

    /// The name users type and logs show (`q8_0`, `q6k`, `q4k`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q6K => "q6k",
            Self::Q4K => "q4k",
        }
    }

    /// The type a `(rows, cols)` matrix gets: this one when `cols` is a whole number of
    /// its blocks, else q8_0 when that fits (as llama.cpp falls back), else none (the
    /// matrix stays dense).
    pub(crate) fn for_width(self, cols: usize) -> Option<GgmlDType> {
        [self.ggml(), GgmlDType::Q8_0]
            .into_iter()
            .find(|t| cols.is_multiple_of(t.block_size()))
    }
}

/// Runs `$body` with `$t` bound to the block type of a quantized `GgmlDType`.
macro_rules! with_block_type {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            GgmlDType::Q4_0 => {
                type $t = BlockQ4_0;
                $body
            }
            GgmlDType::Q4_1 => {
                type $t = BlockQ4_1;
                $body
            }
            GgmlDType::Q5_0 => {
                type $t = BlockQ5_0;
                $body
            }
            GgmlDType::Q5_1 => {
                type $t = BlockQ5_1;
                $body
            }
            GgmlDType::Q8_0 => {
                type $t = BlockQ8_0;
                $body
            }
            GgmlDType::Q2K => {
                type $t = BlockQ2K;
                $body
            }
            GgmlDType::Q3K => {
                type $t = BlockQ3K;
                $body
            }
            GgmlDType::Q4K => {
                type $t = BlockQ4K;
                $body
            }
            GgmlDType::Q5K => {
                type $t = BlockQ5K;
                $body
            }
            GgmlDType::Q6K => {
                type $t = BlockQ6K;
                $body
            }
            other => bail!("{other:?} is not a block-quantized type"),
        }
    };
}

/// Whether mt runs products over this GGML type (the block formats llama.cpp's K-quant
/// and legacy files use; f32/f16/bf16 tensors load dense).
pub(crate) fn is_block_type(dtype: GgmlDType) -> bool {
    !matches!(
        dtype,
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::Q8_1 | GgmlDType::Q8K
    )
}

/// A `(rows, cols)` weight matrix in GGML blocks along its rows, computing in `dtype`.
#[derive(Clone, Debug)]
pub struct QuantMatrix {
    q: Arc<QTensor>,
    dtype: DType,
    device: Device,
}

impl QuantMatrix {
    /// Wraps a 2-D quantized tensor whose products return `dtype`.
    pub(crate) fn new(q: QTensor, dtype: DType) -> Result<Self> {
        let (_, cols) = q.shape().dims2()?;
        if !is_block_type(q.dtype()) || !cols.is_multiple_of(q.dtype().block_size()) {
            bail!(
                "a {:?} matrix of {cols} columns cannot be used quantized",
                q.dtype()
            );
        }
        Ok(Self {
            device: q.device(),
            q: Arc::new(q),
            dtype,
        })
    }

    /// Quantizes a `(rows, cols)` matrix to `kind`, reading its rows a chunk at a time:
    /// `read(range)` returns those rows as a tensor of any float dtype, on the CPU.
    pub(crate) fn quantize_rows(
        kind: GgmlDType,
        (rows, cols): (usize, usize),
        read: impl FnMut(Range<usize>) -> Result<Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let chunk = (CHUNK_VALUES / cols.max(1)).max(1);
        let storage =
            with_block_type!(kind, T => quantize_into::<T>((rows, cols), chunk, read, device)?);
        Self::new(QTensor::new(storage, (rows, cols))?, dtype)
    }

    /// `(rows, cols)`.
    pub(crate) fn dims(&self) -> (usize, usize) {
        let d = self.q.shape().dims();
        (d[0], d[1])
    }

    /// The block format.
    pub(crate) fn ggml_dtype(&self) -> GgmlDType {
        self.q.dtype()
    }

    /// The dtype products and lookups return.
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// Where the blocks live.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// The quantized tensor (for writing GGUF files).
    pub(crate) fn qtensor(&self) -> &QTensor {
        &self.q
    }

    /// Bytes the blocks take.
    pub(crate) fn size_in_bytes(&self) -> usize {
        self.q.storage_size_in_bytes()
    }

    /// `x Wᵀ` for `x` `(m, cols)`: `(m, rows)` in the matrix's dtype.
    pub(crate) fn product(&self, x: &Tensor) -> Result<Tensor> {
        let (m, k) = x.dims2()?;
        let (n, cols) = self.dims();
        if k != cols {
            bail!("a product of {k} columns with a ({n}, {cols}) quantized matrix");
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let y = if x.device().is_cpu() {
            let (storage, layout) = x.storage_and_layout();
            let Storage::Cpu(cpu) = &*storage else {
                bail!("the CPU product got a tensor on another device");
            };
            let lhs = &cpu.as_slice::<f32>()?[layout.start_offset()..][..m * k];
            let data = self.q.data()?;
            if m >= GEMM_ROWS {
                // A prompt's many rows: one dense copy of the matrix and a gemm beat
                // block dot products row by row (the copy is freed after the product).
                let mut w = vec![0f32; n * k];
                with_block_type!(self.q.dtype(), T => {
                    let blocks = blocks::<T>(&data)?;
                    w.par_chunks_mut(k)
                        .zip(blocks.par_chunks(k / T::BLCK_SIZE))
                        .for_each(|(row, b)| T::to_float(b, row));
                });
                drop(storage);
                let w = Tensor::from_vec(w, (n, k), &Device::Cpu)?;
                x.matmul(&w.t()?)?
            } else {
                let dst = with_block_type!(self.q.dtype(), T => {
                    dot_rows::<T>((m, k, n), lhs, blocks::<T>(&data)?)
                });
                Tensor::from_vec(dst, (m, n), &Device::Cpu)?
            }
        } else {
            x.apply_op1_no_bwd(self.q.as_ref())?
        };
        Ok(y.to_dtype(self.dtype)?)
    }

    /// The rows `ids` (any shape of integer ids) dequantized: `(ids..., cols)`, the
    /// embedding lookup.
    pub(crate) fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.q.embedding(ids)?.to_dtype(self.dtype)?)
    }

    /// The whole matrix dequantized, in `dtype`, on its device.
    pub(crate) fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        Ok(self.q.dequantize(&self.device)?.to_dtype(dtype)?)
    }
}

/// Output columns per parallel task of [`dot_rows`].
const DOT_COLUMNS: usize = 32;

/// `x Wᵀ` for a few rows `x` `(m, k)` and `W` `(n, k)` in `T` blocks: each row of `x`
/// quantized once to `T`'s dot-product format, then block dot products, the output
/// columns spread over the thread pool the other CPU kernels use (candle's own
/// `k_quants::matmul` runs on a second pool, whose threads contend with it).
fn dot_rows<T: GgmlType>((m, k, n): (usize, usize, usize), x: &[f32], w: &[T]) -> Vec<f32> {
    let per_row = k / T::BLCK_SIZE;
    let mut xq: Vec<T::VecDotType> = (0..m * per_row).map(|_| T::VecDotType::zeros()).collect();
    for (row, q) in x.chunks(k).zip(xq.chunks_mut(per_row)) {
        T::VecDotType::from_float(row, q);
    }
    let mut y = vec![0f32; m * n];
    // Column-major tasks: a task reads its columns' blocks once for all rows.
    let mut by_column = vec![0f32; n * m];
    by_column
        .par_chunks_mut(DOT_COLUMNS * m)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * DOT_COLUMNS;
            for (c, col) in out.chunks_mut(m).enumerate() {
                let blocks = &w[(first + c) * per_row..(first + c + 1) * per_row];
                for (r, slot) in col.iter_mut().enumerate() {
                    *slot = T::vec_dot(k, blocks, &xq[r * per_row..(r + 1) * per_row]);
                }
            }
        });
    for (c, col) in by_column.chunks(m).enumerate() {
        for (r, v) in col.iter().enumerate() {
            y[r * n + c] = *v;
        }
    }
    y
}

/// Rows from which a CPU product dequantizes the matrix and runs a gemm instead of
/// block dot products.
const GEMM_ROWS: usize = 32;

/// A copy of the blocks of `q` on `device`.
pub(crate) fn copy_to(q: &QTensor, device: &Device) -> Result<QTensor> {
    let storage = QStorage::from_data(q.data()?, device, q.dtype())?;
    Ok(QTensor::new(storage, q.shape().clone())?)
}

/// The blocks of a quantized CPU tensor's bytes.
fn blocks<T: GgmlType>(data: &[u8]) -> Result<&[T]> {
    let size = std::mem::size_of::<T>();
    if !data.len().is_multiple_of(size)
        || !(data.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
    {
        bail!("quantized storage is not a whole, aligned number of blocks");
    }
    // SAFETY: the bytes are a `Vec<T>`'s (candle's CPU storage), whole and aligned as
    // checked; block types are plain data.
    Ok(unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<T>(), data.len() / size) })
}

/// Rows quantized per chunk: bounds the f32 copy a load holds at once (~64 MB at 4096
/// columns).
const CHUNK_VALUES: usize = 16 << 20;

/// Quantizes `rows x cols` values read `chunk_rows` rows at a time into `T` blocks on
/// `device`, the rows of a chunk in parallel.
fn quantize_into<T: GgmlType + 'static>(
    (rows, cols): (usize, usize),
    chunk_rows: usize,
    mut read: impl FnMut(Range<usize>) -> Result<Tensor>,
    device: &Device,
) -> Result<QStorage> {
    let per_row = cols / T::BLCK_SIZE;
    let mut out: Vec<T> = (0..rows * per_row).map(|_| T::zeros()).collect();
    let mut start = 0;
    while start < rows {
        let end = rows.min(start + chunk_rows);
        let values = read(start..end)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if values.len() != (end - start) * cols {
            bail!("rows {start}..{end} read {} values", values.len());
        }
        out[start * per_row..end * per_row]
            .par_chunks_mut(per_row)
            .zip(values.par_chunks(cols))
            .for_each(|(dst, src)| T::from_float(src, dst));
        start = end;
    }
    Ok(match device {
        Device::Cpu => QStorage::Cpu(Box::new(out)),
        _ => {
            // SAFETY: block types are plain data; the bytes are the vector's own.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    out.as_ptr().cast::<u8>(),
                    out.len() * std::mem::size_of::<T>(),
                )
            };
            QStorage::from_data(bytes.into(), device, T::DTYPE)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize) -> Tensor {
        Tensor::randn(0f32, 0.05, (rows, cols), &Device::Cpu).unwrap()
    }

    fn quantized(w: &Tensor, kind: GgmlDType) -> QuantMatrix {
        let dims = w.dims2().unwrap();
        let read = |r: Range<usize>| Ok(w.narrow(0, r.start, r.len())?);
        QuantMatrix::quantize_rows(kind, dims, read, &Device::Cpu, DType::F32).unwrap()
    }

    /// Relative error of the quantized product against the dense one, per format: each
    /// within the format's precision, and ordered as the formats' bits are.
    #[test]
    fn products_follow_the_dense_matrix_within_each_formats_precision() {
        let w = matrix(48, 512);
        // A few rows take the block dot products, a prompt's many rows the gemm over a
        // dequantized copy; both see the same blocks.
        for rows in [5, GEMM_ROWS + 3] {
            let x = Tensor::randn(0f32, 1., (rows, 512), &Device::Cpu).unwrap();
            let dense = x.matmul(&w.t().unwrap()).unwrap();
            let norm = dense.sqr().unwrap().mean_all().unwrap();
            let norm = norm.to_scalar::<f32>().unwrap();
            let error = |kind| {
                let q = quantized(&w, kind);
                let got = q.product(&x).unwrap();
                assert_eq!(got.dims(), &[rows, 48]);
                let exact = x
                    .matmul(&q.dequantize(DType::F32).unwrap().t().unwrap())
                    .unwrap();
                let d = (&got - &dense).unwrap().sqr().unwrap().mean_all().unwrap();
                let e = (&got - &exact).unwrap().sqr().unwrap().mean_all().unwrap();
                let rel = |d: Tensor| (d.to_scalar::<f32>().unwrap() / norm).sqrt();
                (rel(d), rel(e))
            };
            let [q8, q6, q4] = [GgmlDType::Q8_0, GgmlDType::Q6K, GgmlDType::Q4K].map(error);
            assert!(
                q8.0 < 0.01 && q6.0 < 0.03 && q4.0 < 0.1,
                "{q8:?} {q6:?} {q4:?}"
            );
            assert!(q8.0 < q6.0 && q6.0 < q4.0, "{q8:?} {q6:?} {q4:?}");
            // Against the dequantized matrix: exact for the gemm, the 8-bit rounding of
            // x's rows for the dot products.
            for (_, e) in [q8, q6, q4] {
                assert!(
                    e < if rows < GEMM_ROWS { 0.01 } else { 1e-5 },
                    "{rows}: {e}"
                );
            }
        }
    }

    /// Quantizing a chunk of rows at a time gives the blocks of quantizing at once, and
    /// a row lookup is the dequantized row.
    #[test]
    fn chunked_quantization_and_row_lookups_agree() {
        let w = matrix(40, 256);
        let whole = quantized(&w, GgmlDType::Q4K);
        let mut calls = 0;
        let read = |r: Range<usize>| {
            calls += 1;
            Ok(w.narrow(0, r.start, r.len())?)
        };
        let storage = quantize_into::<BlockQ4K>((40, 256), 7, read, &Device::Cpu).unwrap();
        let chunked = QuantMatrix::new(QTensor::new(storage, (40, 256)).unwrap(), DType::F32);
        assert_eq!(calls, 6);
        assert_eq!(
            whole.qtensor().data().unwrap(),
            chunked.unwrap().qtensor().data().unwrap()
        );
        let ids = Tensor::new(&[[3u32, 39], [0, 3]], &Device::Cpu).unwrap();
        let rows = whole.rows(&ids).unwrap();
        assert_eq!(rows.dims(), &[2, 2, 256]);
        let all = whole.dequantize(DType::F32).unwrap();
        let want = all.index_select(&Tensor::new(&[3u32, 39, 0, 3], &Device::Cpu).unwrap(), 0);
        assert_eq!(
            rows.flatten_to(1).unwrap().to_vec2::<f32>().unwrap(),
            want.unwrap().to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn widths_that_are_not_whole_blocks_fall_back() {
        assert_eq!(QuantKind::Q4K.for_width(4096), Some(GgmlDType::Q4K));
        assert_eq!(QuantKind::Q4K.for_width(64), Some(GgmlDType::Q8_0));
        assert_eq!(QuantKind::Q6K.for_width(20), None);
    }

    /// A random LLaVA checkpoint (original layout, the tiny CLIP tower) whose language
    /// model is 256 wide, so every format's blocks fit its rows.
    fn wide_checkpoint(dir: &std::path::Path) {
        use std::collections::HashMap;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let models = root.join("testdata/models");
        let mut cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(models.join("tiny-llava/config.json")).unwrap(),
        )
        .unwrap();
        cfg["hidden_size"] = 256.into();
        cfg["intermediate_size"] = 512.into();
        cfg["mm_vision_tower"] = models.join("tiny-clip").to_string_lossy().as_ref().into();
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let (h, f, v, kv) = (256, 512, 326, 128);
        // Uniform values of standard deviation `std` from a fixed xorshift stream.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut randn = |shape: (usize, usize), std: f32| {
            let values: Vec<f32> = (0..shape.0 * shape.1)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
                    (unit * 2. - 1.) * std * 3f32.sqrt()
                })
                .collect();
            Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
        };
        let mut t = HashMap::new();
        t.insert("model.embed_tokens.weight".to_string(), randn((v, h), 1.0));
        t.insert("lm_head.weight".to_string(), randn((v, h), 0.2));
        t.insert(
            "model.norm.weight".to_string(),
            Tensor::ones(h, DType::F32, &Device::Cpu).unwrap(),
        );
        for i in 0..2 {
            let p = format!("model.layers.{i}");
            for (name, shape) in [
                ("self_attn.q_proj", (h, h)),
                ("self_attn.k_proj", (kv, h)),
                ("self_attn.v_proj", (kv, h)),
                ("self_attn.o_proj", (h, h)),
                ("mlp.gate_proj", (f, h)),
                ("mlp.up_proj", (f, h)),
                ("mlp.down_proj", (h, f)),
            ] {
                t.insert(format!("{p}.{name}.weight"), randn(shape, 0.08));
            }
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                let ones = Tensor::ones(h, DType::F32, &Device::Cpu).unwrap();
                t.insert(format!("{p}.{norm}.weight"), ones);
            }
        }
        for (i, shape) in [(0, (h, 32)), (2, (h, h))] {
            t.insert(format!("model.mm_projector.{i}.weight"), randn(shape, 0.1));
            let bias = Tensor::zeros(h, DType::F32, &Device::Cpu).unwrap();
            t.insert(format!("model.mm_projector.{i}.bias"), bias);
        }
        candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    }

    /// Mean KL divergence `KL(p || q)` of the softmaxes of two `(T, V)` logit rows.
    fn mean_kl(p: &Tensor, q: &Tensor) -> f32 {
        let lp = candle_nn::ops::log_softmax(p, 1).unwrap();
        let lq = candle_nn::ops::log_softmax(q, 1).unwrap();
        let kl = (lp.exp().unwrap() * (&lp - &lq).unwrap()).unwrap();
        kl.sum(1)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A model loaded with `--quantize` has its language model's matrices in the asked
    /// format (the vision tower and the projector dense) and gives next-token
    /// distributions close to the f32 model's on an image prompt: closer with more bits,
    /// and with q8_0 nearly every position's most likely token the same.
    #[test]
    fn a_quantized_model_follows_the_f32_model() {
        use crate::core::model::arch::linear::Matrix;
        use crate::core::model::arch::llava::{Llava, Piece};
        use crate::core::model::load::checkpoint::Checkpoint;

        let dir = tempfile::tempdir().unwrap();
        wide_checkpoint(dir.path());
        let load = |kind: Option<QuantKind>| -> Llava {
            let mut ckpt = Checkpoint::open(dir.path(), None, &Device::Cpu, DType::F32).unwrap();
            if let Some(kind) = kind {
                ckpt.quantize(kind);
            }
            ckpt.load().unwrap()
        };
        let pixels = Tensor::arange(0u32, 3 * 336 * 336, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .affine(0.37, 0.)
            .unwrap()
            .sin()
            .unwrap()
            .reshape((1, 3, 336, 336))
            .unwrap();
        let pieces = [
            Piece::Text(vec![320, 5, 17, 99]),
            Piece::Image,
            Piece::Text((40..90).collect()),
        ];
        let logits = |model: &Llava| {
            let features = model.encode_images(&pixels).unwrap();
            let row = model
                .embed_prompt(&pieces, &[features.get(0).unwrap()])
                .unwrap();
            let batch = model.left_pad(&[row]).unwrap();
            let hidden = model.forward_batch(&batch).unwrap().get(0).unwrap();
            model.llm.logits(&hidden).unwrap()
        };
        let dense = load(None);
        let want = logits(&dense);
        let argmax = |l: &Tensor| l.argmax(1).unwrap().to_vec1::<u32>().unwrap();
        let mut kls = Vec::new();
        for kind in [QuantKind::Q8_0, QuantKind::Q6K, QuantKind::Q4K] {
            let model = load(Some(kind));
            let layer = &model.llm.layers[1];
            for matrix in [
                &layer.attn.k.weight,
                &layer.mlp.down.weight,
                &model.llm.lm_head.weight,
                &model.llm.embed,
            ] {
                match matrix {
                    Matrix::Quantized(q) => assert_eq!(q.ggml_dtype(), kind.ggml()),
                    Matrix::Dense(_) => panic!("{kind:?}: a language-model matrix stayed dense"),
                }
            }
            assert!(matches!(model.projector.layers[0].weight, Matrix::Dense(_)));
            let got = logits(&model);
            let kl = mean_kl(&want, &got);
            if kind == QuantKind::Q8_0 {
                let same = argmax(&want)
                    .iter()
                    .zip(argmax(&got))
                    .filter(|(a, b)| **a == *b)
                    .count();
                assert!(
                    same * 100 >= 93 * argmax(&want).len(),
                    "{same} of {}",
                    argmax(&want).len()
                );
            }
            kls.push(kl);
        }
        // This random model's distributions are sharp and easily moved (a real model's
        // q8_0 KL is ~1e-4); the bounds hold with a margin and a broken product or
        // layout gives several nats.
        assert!(kls[0] < 5e-3 && kls[1] < 0.02 && kls[2] < 0.25, "{kls:?}");
        assert!(kls[0] < kls[1] && kls[1] < kls[2], "{kls:?}");
    }
}
