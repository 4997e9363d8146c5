//! The Linear layer every model part uses: `y = x W^T + b`, plus an optional LoRA
//! adapter (so training can adapt any projection without a second layer type), and
//! [`Matrix`], the weight a Linear layer or an embedding table holds: dense, or
//! quantized blocks (inference, and QLoRA training with the blocks frozen).

use anyhow::{Result, bail};
use candle_core::backend::BackendStorage;
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor};

use crate::core::model::arch::lora::LoraAdapter;
use crate::core::model::load::weights::Params;
use crate::core::model::ops;
use crate::core::model::quant::QuantMatrix;

/// A weight matrix `(rows, cols)`: a dense tensor, or GGML blocks (`--quantize`, GGUF
/// files) that products and row lookups dequantize on the fly.
#[derive(Debug, Clone)]
pub enum Matrix {
    /// Trainable, any dtype.
    Dense(Tensor),
    /// Frozen: inference, or training what sits around it (LoRA adapters, the
    /// projector); gradients flow through it to the input, never into the blocks.
    Quantized(QuantMatrix),
}

impl Matrix {
    /// `(rows, cols)`.
    pub(crate) fn dims(&self) -> (usize, usize) {
        match self {
            Self::Dense(t) => {
                let d = t.dims();
                (d[0], d[1])
            }
            Self::Quantized(q) => q.dims(),
        }
    }

    /// The dtype products and lookups return.
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Self::Dense(t) => t.dtype(),
            Self::Quantized(q) => q.dtype(),
        }
    }

    /// Where the weights live.
    pub(crate) fn device(&self) -> &Device {
        match self {
            Self::Dense(t) => t.device(),
            Self::Quantized(q) => q.device(),
        }
    }

    /// The dense tensor; an error for quantized weights (merging, exports, full
    /// training need the unquantized checkpoint).
    pub(crate) fn dense(&self) -> Result<&Tensor> {
        match self {
            Self::Dense(t) => Ok(t),
            Self::Quantized(q) => bail!(
                "these weights are loaded {:?}-quantized; merging, exporting and full training \
                 need the unquantized checkpoint",
                q.ggml_dtype()
            ),
        }
    }

    /// The rows `ids` `(B, L)`: `(B, L, cols)`, the embedding lookup.
    pub(crate) fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let cols = self.dims().1;
        match self {
            Self::Dense(t) => Ok(t
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, l, cols))?),
            Self::Quantized(q) => q.rows(ids),
        }
    }
}

/// A dense layer with weight `(out, in)`, optional bias and optional LoRA adapter.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Matrix,
    pub bias: Option<Tensor>,
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// Loads `weight` (and `bias` when `bias` is true) from `p`, quantized when the
    /// weights are loaded with `--quantize` and `p` is in the language model. On the CPU
    /// a dense weight is stored transposed (`(in, out)` in memory, still an `(out, in)`
    /// tensor), the layout candle's CPU matmul reads fastest as `x W^T`, for one row as
    /// for many.
    pub(crate) fn load(p: &Params, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = p.matrix("weight", (out_dim, in_dim))?;
        let bias = match bias {
            true => Some(p.get("bias", &[out_dim])?),
            false => None,
        };
        Self::with(weight, bias)
    }

    /// A layer of `weight` `(out, in)` (laid out as [`Linear::load`] does) and `bias`.
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Self::with(Matrix::Dense(weight), bias)
    }

    /// A layer of a dense or quantized weight.
    pub(crate) fn with(weight: Matrix, bias: Option<Tensor>) -> Result<Self> {
        let weight = match weight {
            Matrix::Dense(w) if w.device().is_cpu() => Matrix::Dense(w.t()?.contiguous()?.t()?),
            other => other,
        };
        Ok(Self {
            weight,
            bias,
            lora: None,
        })
    }

    /// The layers whose weights are stacked along the output rows of one checkpoint
    /// tensor (Phi-3's `qkv_proj`, `gate_up_proj`), `outs` rows each, no bias.
    pub(crate) fn load_fused<const N: usize>(
        p: &Params,
        in_dim: usize,
        outs: [usize; N],
    ) -> Result<[Self; N]> {
        let fused = p.get("weight", &[outs.iter().sum(), in_dim])?;
        let mut start = 0;
        let mut parts = Vec::with_capacity(N);
        for rows in outs {
            parts.push(Self::new(fused.narrow(0, start, rows)?, None)?);
            start += rows;
        }
        Ok(parts.try_into().expect("one layer per output size"))
    }

    /// Input width.
    pub(crate) fn in_dim(&self) -> usize {
        self.weight.dims().1
    }

    /// Output width.
    pub(crate) fn out_dim(&self) -> usize {
        self.weight.dims().0
    }

    /// Its tensors under `prefix`: `weight` (when dense), `bias`, and a LoRA adapter's
    /// `lora_A.weight` / `lora_B.weight` (PEFT's names).
    pub(crate) fn tensors_mut<'a>(
        &'a mut self,
        prefix: &str,
        out: &mut Vec<(String, &'a mut Tensor)>,
    ) {
        if let Matrix::Dense(w) = &mut self.weight {
            out.push((format!("{prefix}.weight"), w));
        }
        if let Some(b) = &mut self.bias {
            out.push((format!("{prefix}.bias"), b));
        }
        if let Some(lora) = &mut self.lora {
            out.push((format!("{prefix}.lora_A.weight"), &mut lora.a));
            out.push((format!("{prefix}.lora_B.weight"), &mut lora.b));
        }
    }

    /// Applies the layer to `x` of shape `(..., in)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [y] = Self::forward_each([self], x)?;
        Ok(y)
    }

    /// Applies each layer to the same `x` `(..., in)` (q/k/v, gate/up); inside
    /// [`kernels::inference`](crate::core::model::kernels::inference) their products on a few rows
    /// share one parallel pass.
    pub(crate) fn forward_each<const N: usize>(
        layers: [&Linear; N],
        x: &Tensor,
    ) -> Result<[Tensor; N]> {
        let dims = x.dims().to_vec();
        let (lead, in_dim) = dims.split_at(dims.len() - 1);
        let rows: usize = lead.iter().product();
        let flat = x.reshape((rows, in_dim[0]))?;
        let product = |i: usize| layers[i].product(&flat);
        let dense: Option<Vec<_>> = layers
            .iter()
            .map(|l| match &l.weight {
                Matrix::Dense(w) => Some((w, l.bias.as_ref())),
                Matrix::Quantized(_) => None,
            })
            .collect();
        let ys = match dense {
            Some(operands) => ops::linears(&flat, &operands, product)?,
            None => (0..N).map(product).collect::<Result<Vec<_>>>()?,
        };
        ys.into_iter()
            .zip(layers)
            .map(|(mut y, layer)| {
                if let Some(lora) = &layer.lora {
                    y = (y + lora.delta(&flat)?)?;
                }
                let mut out_dims = lead.to_vec();
                out_dims.push(layer.out_dim());
                Ok(y.reshape(out_dims)?)
            })
            .collect::<Result<Vec<_>>>()?
            .try_into()
            .map_err(|_| anyhow::anyhow!("one output per layer"))
    }

    /// `x W^T + b` for `x` `(rows, in)` through candle's ops.
    fn product(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Matrix::Quantized(q) if x.track_op() => {
                x.apply_op1(FrozenQuantized { weight: q.clone() })?
            }
            Matrix::Quantized(q) => q.product(x)?,
            Matrix::Dense(w) if x.track_op() && !w.track_op() => {
                x.apply_op1(FrozenWeight { weight: w.clone() })?
            }
            Matrix::Dense(w) => x.matmul(&w.t()?)?,
        };
        Ok(match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        })
    }
}

/// `x W^T` for a frozen `W` under a gradient: candle's own matmul backward would also
/// compute (and keep) a full-size gradient for `W` even though nothing trains it; this op
/// returns only the input's gradient, `grad W`.
struct FrozenWeight {
    /// `(out, in)`.
    weight: Tensor,
}

impl FrozenWeight {
    /// The storage-level matmul of `x` (layout `xl`, `(m, k)`) by `W^T`.
    fn forward<S: BackendStorage>(
        &self,
        x: &S,
        xl: &Layout,
        weight: impl Fn(&Storage) -> Option<&S>,
    ) -> candle_core::Result<(S, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let n = self.weight.dim(0)?;
        let (storage, wl) = self.weight.storage_and_layout();
        let Some(w) = weight(&storage) else {
            candle_core::bail!("frozen-weight matmul: input and weight on different devices");
        };
        let out = x.matmul(w, (1, m, n, k), xl, &wl.transpose(0, 1)?)?;
        Ok((out, Shape::from((m, n))))
    }
}

impl CustomOp1 for FrozenWeight {
    fn name(&self) -> &'static str {
        "frozen-weight-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward(x, xl, |s| match s {
            Storage::Cpu(w) => Some(w),
            _ => None,
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.forward(x, xl, |s| match s {
            Storage::Cuda(w) => Some(w),
            _ => None,
        })
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.weight)?))
    }
}

/// `x W^T` for quantized `W` under a gradient (QLoRA): the forward is the quantized
/// product; the backward returns only the input's gradient `grad W`, through `W`
/// dequantized for that call in the gradient's dtype and dropped after it.
struct FrozenQuantized {
    weight: QuantMatrix,
}

impl FrozenQuantized {
    /// [`QuantMatrix::product`] of the storage-level `x` (layout `xl`, `(m, k)`),
    /// returned as storage of `x`'s dtype; `wrap` and `unwrap` move between `S` and
    /// candle's `Storage`.
    fn forward<S: BackendStorage>(
        &self,
        x: &S,
        xl: &Layout,
        wrap: impl Fn(S) -> Storage,
        unwrap: impl Fn(&Storage) -> Option<&S>,
    ) -> candle_core::Result<(S, Shape)> {
        let input = wrap(x.to_dtype(xl, DType::F32)?);
        let input = Tensor::from_storage(input, xl.shape(), BackpropOp::none(), false);
        let y = self
            .weight
            .product(&input)
            .map_err(|e| candle_core::Error::msg(format!("{e:#}")))?;
        let (storage, layout) = y.storage_and_layout();
        let Some(y) = unwrap(&storage) else {
            candle_core::bail!("quantized product: the result is on another device");
        };
        Ok((y.to_dtype(layout, x.dtype())?, layout.shape().clone()))
    }
}

impl CustomOp1 for FrozenQuantized {
    fn name(&self) -> &'static str {
        "frozen-quantized-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward(x, xl, Storage::Cpu, |s| match s {
            Storage::Cpu(y) => Some(y),
            _ => None,
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.forward(x, xl, Storage::Cuda, |s| match s {
            Storage::Cuda(y) => Some(y),
            _ => None,
        })
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let weight = self
            .weight
            .dequantize(grad.dtype())
            .map_err(|e| candle_core::Error::msg(format!("{e:#}")))?;
        Ok(Some(grad.matmul(&weight)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::kernels;
    use candle_core::{Device, Tensor};

    #[test]
    fn linear_with_lora_matches_hand_computation() {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 6.]], &dev).unwrap();
        let b = Tensor::new(&[0.5f32, -0.5, 1.], &dev).unwrap();
        let mut lin = Linear {
            weight: Matrix::Dense(w),
            bias: Some(b),
            lora: None,
        };
        let x = Tensor::new(&[[[1f32, 1.]], [[2., -1.]]], &dev).unwrap();
        let y = lin.forward(&x).unwrap();
        assert_eq!(
            y.to_vec3::<f32>().unwrap(),
            vec![vec![vec![3.5, 6.5, 12.]], vec![vec![0.5, 1.5, 5.]]]
        );

        // A = [[1, 0]], B = [[1], [0], [2]], scale 2: delta = 2 * B (A x) = 2 * x0 * [1, 0, 2].
        let a = Tensor::new(&[[1f32, 0.]], &dev).unwrap();
        let bm = Tensor::new(&[[1f32], [0.], [2.]], &dev).unwrap();
        lin.lora = Some(LoraAdapter::new(a, bm, 2.0, 2, 3).unwrap());
        let y = lin.forward(&x).unwrap();
        assert_eq!(
            y.to_vec3::<f32>().unwrap(),
            vec![vec![vec![5.5, 6.5, 16.]], vec![vec![4.5, 1.5, 13.]]]
        );
    }

    #[test]
    fn a_frozen_weight_passes_the_input_gradient_and_gets_none() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (5, 3), &dev).unwrap();
        // The CPU layout Linear::load uses: (out, in) seen through a transposed copy.
        let w = w.t().unwrap().contiguous().unwrap().t().unwrap();
        let lin = Linear {
            weight: Matrix::Dense(w.clone()),
            bias: None,
            lora: None,
        };
        let x = candle_core::Var::randn(0f32, 1., (2, 4, 3), &dev).unwrap();
        let y = lin.forward(x.as_tensor()).unwrap();
        let plain = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
        assert!(crate::core::model::max_abs_diff(&y, &plain) < 1e-6);
        let g = (y.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        let h = (plain.sqr().unwrap().sum_all().unwrap())
            .backward()
            .unwrap();
        let (gx, hx) = (g.get(x.as_tensor()).unwrap(), h.get(x.as_tensor()).unwrap());
        assert!(crate::core::model::max_abs_diff(gx, hx) < 1e-5);
        // candle's matmul also makes (and keeps) a gradient for the weight's transpose.
        assert_eq!(
            g.get_ids().count() + 1,
            h.get_ids().count(),
            "the frozen weight gets no gradient"
        );
    }

    /// Under a gradient, a quantized weight gives the dense product of its dequantized
    /// matrix (the gemm path, 40 rows) and the input gradient `grad W` of that matrix,
    /// as a frozen dense Linear of it does; widths are whole blocks of each format.
    #[test]
    fn a_quantized_weight_passes_the_input_gradient_of_its_dequantized_matrix() {
        use crate::core::model::quant::QuantMatrix;
        use candle_core::quantized::GgmlDType;

        let dev = Device::Cpu;
        for (kind, width) in [(GgmlDType::Q8_0, 96), (GgmlDType::Q4K, 256)] {
            let w = Tensor::randn(0f32, 0.05, (48, width), &dev).unwrap();
            let read = |r: std::ops::Range<usize>| Ok(w.narrow(0, r.start, r.len())?);
            let q = QuantMatrix::quantize_rows(kind, (48, width), read, &dev, DType::F32).unwrap();
            let dense = Linear::new(q.dequantize(DType::F32).unwrap(), None).unwrap();
            let quantized = Linear::with(Matrix::Quantized(q), None).unwrap();
            let x = candle_core::Var::randn(0f32, 1., (2, 20, width), &dev).unwrap();
            let upstream = Tensor::randn(0f32, 1., (2, 20, 48), &dev).unwrap();
            let pass = |lin: &Linear| {
                let y = lin.forward(x.as_tensor()).unwrap();
                let grads = (&y * &upstream)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let gx = grads.get(x.as_tensor()).unwrap().clone();
                (y, gx, grads.get_ids().count())
            };
            let (want_y, want_gx, want_ids) = pass(&dense);
            let (got_y, got_gx, ids) = pass(&quantized);
            let scale = |t: &Tensor| {
                t.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let y_diff = crate::core::model::max_abs_diff(&got_y, &want_y) / scale(&want_y);
            let g_diff = crate::core::model::max_abs_diff(&got_gx, &want_gx) / scale(&want_gx);
            assert!(y_diff < 1e-5, "{kind:?} product: {y_diff}");
            assert!(g_diff < 1e-5, "{kind:?} input gradient: {g_diff}");
            // As many gradients as through the frozen dense weight: none for a weight.
            assert_eq!(ids, want_ids, "{kind:?}");
        }
    }

    /// The inference kernels (small-m matmuls for a few rows, gemm for more; one layer and two
    /// sharing a pass, over a width that splits across threads) against candle's matmul,
    /// with and without a bias.
    #[test]
    fn inference_products_match_candle() {
        let dev = Device::Cpu;
        // The CPU layout Linear::load uses.
        let layer = |out: usize, bias: bool| Linear {
            weight: Matrix::Dense(
                Tensor::randn(0f32, 1., (150, out), &dev)
                    .unwrap()
                    .t()
                    .unwrap(),
            ),
            bias: bias.then(|| Tensor::randn(0f32, 1., out, &dev).unwrap()),
            lora: None,
        };
        let (a, b) = (layer(70, true), layer(20, false));
        let want = |lin: &Linear, x: &Tensor| {
            let y = x
                .broadcast_matmul(&lin.weight.dense().unwrap().t().unwrap())
                .unwrap();
            match &lin.bias {
                Some(b) => y.broadcast_add(b).unwrap(),
                None => y,
            }
        };
        for rows in [1, 3, 16, 17, 200] {
            let x = Tensor::randn(0f32, 1., (2, rows, 150), &dev).unwrap();
            let [one] = kernels::inference(&dev, || Linear::forward_each([&b], &x)).unwrap();
            let [ya, yb] = kernels::inference(&dev, || Linear::forward_each([&a, &b], &x)).unwrap();
            for (got, lin) in [(one, &b), (ya, &a), (yb, &b)] {
                let want = want(lin, &x);
                assert_eq!(got.dims(), want.dims());
                let diff = crate::core::model::max_abs_diff(&got, &want);
                assert!(diff < 1e-4, "{rows} rows: {diff}");
            }
        }
    }

    #[test]
    fn lora_shapes_are_checked() {
        let dev = Device::Cpu;
        let a = Tensor::zeros((4, 8), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros((16, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(LoraAdapter::new(a, b, 1.0, 8, 16).is_err());
    }
}
