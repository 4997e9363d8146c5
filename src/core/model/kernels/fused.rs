//! Fused f32 CPU kernels for inference: `silu(gate) * up` in one pass, and, inside
//! [`inference`] only, Linear products (small-m matmul kernels or gemm called directly) and
//! CLIP's `quick_gelu`; plus the primitives the fused attention ([`super::attention`]) builds on. The elementwise
//! ones use a vectorisable `exp` (candle's CPU ops call the scalar libm one per
//! element). Callers take these paths only for contiguous-in-the-last-dimension f32 CPU
//! tensors that no gradient flows through; the composite candle ops remain the
//! reference and the training path.

use std::cell::Cell;

use anyhow::{Result, ensure};
use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

use super::small_m_matmul;
use crate::core::model::ops::tracks_grad;

/// Whether the fused kernels can run on these tensors.
pub(crate) fn applies(tensors: &[&Tensor]) -> bool {
    !tracks_grad(tensors)
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

thread_local! {
    /// Set while this thread runs inference ([`inference`]).
    static INFERENCE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the inference-only CPU kernels on: Linear products on the skinny
/// kernels (a few rows, as decoding makes) or on gemm called directly (more rows), and a
/// fused `quick_gelu`. They compute candle's math in another summation order. Training
/// never turns them on, so its passes with and without a gradient (activation
/// checkpointing) keep identical bits.
///
/// For a CPU `device`, `f` runs on one of rayon's threads: a decoding step forks a
/// hundred products onto the pool, and a fork from inside the pool runs its first half
/// on the calling thread while a spinning worker steals the second, where a fork from
/// outside queues both halves and sleeps until they are done (decoding ~10% faster).
pub(crate) fn inference<T: Send>(device: &Device, f: impl FnOnce() -> T + Send) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INFERENCE.set(self.0);
        }
    }
    let run = || {
        let _restore = Restore(INFERENCE.replace(true));
        f()
    };
    if device.is_cpu() && rayon::current_thread_index().is_none() {
        rayon::scope(|_| run())
    } else {
        run()
    }
}

/// Whether this thread runs inside [`inference`].
pub(crate) fn in_inference() -> bool {
    INFERENCE.get()
}

/// Whether the inference-only kernels run on these tensors: inside [`inference`], and
/// [`applies`].
pub(crate) fn inference_applies(tensors: &[&Tensor]) -> bool {
    in_inference() && applies(tensors)
}

/// `x W^T + b` for each layer inside [`inference`], for `x` `(m, in)`, Linear weights
/// `(out, in)` kept transposed in memory (`(in, out)` rows contiguous, as `Linear::load`
/// stores CPU weights) and optional biases `(out)`. Up to [`small_m_matmul::MAX_ROWS`] rows run
/// on the small-m matmul kernels, all layers in one parallel pass; more call gemm directly, as
/// `(W x^T)^T`, so that gemm takes the weight as it lies and writes into a buffer the
/// bias (or nothing) initialises, where candle's matmul packs the activations for every
/// column block and zeroes a fresh output first (prefill's Linear layers run ~10%
/// faster). `None` where this does not apply: outside inference, another layout or
/// dtype, or a gradient to track.
pub(crate) fn linears(
    x: &Tensor,
    layers: &[(&Tensor, Option<&Tensor>)],
) -> Result<Option<Vec<Tensor>>> {
    if !in_inference() {
        return Ok(None);
    }
    let (m, k) = x.dims2()?;
    let mut transposed = Vec::with_capacity(layers.len());
    for &(weight, bias) in layers {
        let wt = weight.t()?;
        if !applies(&[x, weight]) || bias.is_some_and(|b| !applies(&[b])) || !wt.is_contiguous() {
            return Ok(None);
        }
        transposed.push((wt, bias.map(Tensor::contiguous).transpose()?));
    }
    let x = x.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let xv = view(&xs, xl)?;
    let guards: Vec<_> = transposed
        .iter()
        .map(|(wt, bias)| {
            (
                wt.storage_and_layout(),
                bias.as_ref().map(|b| b.storage_and_layout()),
            )
        })
        .collect();
    // (weight `(k, n)`, bias, n) of every layer.
    let mut operands = Vec::with_capacity(layers.len());
    for ((wt, _), ((ws, wl), bs)) in transposed.iter().zip(&guards) {
        let n = wt.dim(1)?;
        let bias = match bs {
            Some((s, l)) => Some(&view(s, l)?.data[..n]),
            None => None,
        };
        operands.push((view(ws, wl)?.data, bias, n));
    }
    let ys = if m > small_m_matmul::MAX_ROWS || !small_m_matmul::supported() {
        operands
            .iter()
            .map(|&(w, bias, n)| gemm_transposed((m, n, k), xv.data, w, bias))
            .collect()
    } else {
        let mut ys: Vec<Vec<f32>> = operands
            .iter()
            .map(|&(_, _, n)| vec![0f32; m * n])
            .collect();
        let mut products: Vec<small_m_matmul::Product> = ys
            .iter_mut()
            .zip(&operands)
            .map(|(y, &(w, _, n))| small_m_matmul::Product {
                y: small_m_matmul::Out { data: y, stride: n },
                b: small_m_matmul::Rows { data: w, stride: n },
                n,
            })
            .collect();
        let x = small_m_matmul::Rows {
            data: xv.data,
            stride: k,
        };
        small_m_matmul::times_rows_each((m, k), x, &mut products, 1.0, true);
        for (y, &(_, bias, n)) in ys.iter_mut().zip(&operands) {
            if let Some(bias) = bias {
                y.chunks_mut(n)
                    .for_each(|row| row.iter_mut().zip(bias).for_each(|(y, b)| *y += b));
            }
        }
        ys
    };
    ys.into_iter()
        .zip(&operands)
        .map(|(y, &(_, _, n))| Ok(Tensor::from_vec(y, (m, n), &Device::Cpu)?))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// `x wt (+ bias)` for row-major `x` `(m, k)` and `wt` `(k, n)`, computed as gemm's
/// `(wt^T x^T)^T`: the `(n, k)` left operand is `wt` read column-major, which gemm's
/// kernels take as it is. Each of rayon's threads runs one serial gemm on its own block
/// of output columns (2-6% faster on the model's shapes than gemm's own split).
fn gemm_transposed(
    (m, n, k): (usize, usize, usize),
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(
        x.len() >= m * k && wt.len() >= k * n && bias.is_none_or(|b| b.len() == n),
        "linear operands outside their slices"
    );
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    if let Some(bias) = bias {
        (0..m).for_each(|_| y.extend_from_slice(bias));
    }
    /// The output, shared by threads that write disjoint columns of it.
    #[derive(Clone, Copy)]
    struct Out(*mut f32);
    // SAFETY: each thread writes only the columns of its own block.
    unsafe impl Send for Out {}
    unsafe impl Sync for Out {}
    let out = Out(y.as_mut_ptr());
    let block = (n.div_ceil(rayon::current_num_threads()).div_ceil(16) * 16).max(16);
    (0..n.div_ceil(block)).into_par_iter().for_each(|p| {
        let (j0, out) = (p * block, out);
        let cols = block.min(n - j0);
        // SAFETY: the assert keeps every read inside `x` and `wt`; gemm writes the
        // `m x cols` outputs of this block (element (i, j0 + j) at `i * n + j0 + j`, inside
        // the `m * n` reserved), reading them first only when the bias initialised them;
        // the blocks are disjoint.
        unsafe {
            gemm::gemm(
                cols,
                m,
                k,
                out.0.add(j0),
                n as isize,
                1,
                bias.is_some(),
                wt.as_ptr().add(j0),
                n as isize,
                1,
                x.as_ptr(),
                k as isize,
                1,
                if bias.is_some() { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    // SAFETY: the blocks cover all `n` columns of all `m` rows.
    unsafe { y.set_len(m * n) };
    y
}

/// CLIP's `quick_gelu`, `x * sigmoid(1.702 x)`, in one parallel pass.
pub(crate) fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let n = x.elem_count();
    let (xs, xl) = x.storage_and_layout();
    let xv = view(&xs, xl)?;
    let mut out = vec![0f32; n];
    out.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(xv.data[..n].par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(o, x)| quick_gelu_into(o, x));
    Ok(Tensor::from_vec(out, x.shape(), &Device::Cpu)?)
}

/// `out = x * sigmoid(1.702 x)` elementwise; multiversioned like [`softmax_row`].
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma"))]
fn quick_gelu_into(out: &mut [f32], x: &[f32]) {
    for (o, x) in out.iter_mut().zip(x) {
        *o = x / (1.0 + exp(-1.702 * x));
    }
}

/// Elements per task of the elementwise kernels.
const ELEMENTWISE_CHUNK: usize = 4096;

/// A borrowed f32 view of a CPU tensor: its data from the first element, and strides.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) data: &'a [f32],
    pub(super) stride: &'a [usize],
}

/// The f32 data of a CPU tensor's storage from `layout`'s first element.
pub(super) fn view<'a>(storage: &'a Storage, layout: &'a Layout) -> candle_core::Result<View<'a>> {
    let Storage::Cpu(cpu) = storage else {
        candle_core::bail!("fused CPU kernel given a non-CPU tensor");
    };
    view_cpu(cpu, layout)
}

/// [`view`] of CPU storage.
pub(super) fn view_cpu<'a>(
    cpu: &'a CpuStorage,
    layout: &'a Layout,
) -> candle_core::Result<View<'a>> {
    Ok(View {
        data: &cpu.as_slice::<f32>()?[layout.start_offset()..],
        stride: layout.stride(),
    })
}

/// A matrix inside a slice: element `(r, c)` at `r * row + c * col`.
pub(super) struct Strided<S> {
    data: S,
    row: usize,
    col: usize,
}

impl<S: AsRef<[f32]>> Strided<S> {
    /// Rows `row` apart, columns adjacent.
    pub(super) fn rows(data: S, row: usize) -> Self {
        Self { data, row, col: 1 }
    }

    pub(super) fn transposed(self) -> Self {
        Self {
            data: self.data,
            row: self.col,
            col: self.row,
        }
    }

    /// Panics unless an `r x c` matrix fits in the slice.
    fn check(&self, (r, c): (usize, usize)) {
        let last = (r.max(1) - 1) * self.row + (c.max(1) - 1) * self.col;
        assert!(
            r == 0 || c == 0 || last < self.data.as_ref().len(),
            "matrix outside its slice"
        );
    }
}

/// `dst = scale * lhs rhs` for `lhs` `(m, k)` and `rhs` `(k, n)` (`dst += ...` with
/// `accumulate`), on this thread (callers parallelise over blocks). A decoding step's
/// products (a query's grouped heads as rows) take the small-m matmul kernels; prefill and
/// training stay on gemm, so training's two forward passes (with and without a
/// gradient) compute the same bits.
pub(super) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: Strided<&mut [f32]>,
    lhs: Strided<&[f32]>,
    rhs: Strided<&[f32]>,
    scale: f32,
    (decoding, accumulate): (bool, bool),
) {
    dst.check((m, n));
    lhs.check((m, k));
    rhs.check((k, n));
    if decoding && !accumulate && lhs.col == 1 && dst.col == 1 && small_m_matmul::supported() {
        let (y, x) = (
            small_m_matmul::Out {
                data: dst.data,
                stride: dst.row,
            },
            small_m_matmul::Rows {
                data: lhs.data,
                stride: lhs.row,
            },
        );
        let b = |stride| small_m_matmul::Rows {
            data: rhs.data,
            stride,
        };
        if rhs.col == 1 {
            return small_m_matmul::times_rows((m, n, k), y, x, b(rhs.row), scale, false);
        }
        if rhs.row == 1 {
            return small_m_matmul::times_cols((m, n, k), y, x, b(rhs.col), scale);
        }
    }
    // SAFETY: the checks above keep every element the product reads or writes inside
    // its slice, and `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.col as isize,
            dst.row as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col as isize,
            lhs.row as isize,
            rhs.data.as_ptr(),
            rhs.col as isize,
            rhs.row as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Lanes of the vectorised reductions (one AVX-512 register, two AVX2 ones).
const LANES: usize = 16;

/// `softmax(xs + add)` of one row in place, numerically stable, with the vectorised
/// [`exp`] or, with `libm_exp`, the C library's (slower, within an ulp: what candle's ops
/// and training use). Compiled for AVX-512 and AVX2 as well, picked at run time.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma"))]
pub(super) fn softmax_row(xs: &mut [f32], add: Option<&[f32]>, libm_exp: bool) {
    if let Some(add) = add {
        xs.iter_mut().zip(add).for_each(|(x, a)| *x += a);
    }
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(m, x)| *m = m.max(*x));
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let sum = if libm_exp {
        shifted_exps(xs, max, f32::exp)
    } else {
        shifted_exps(xs, max, exp)
    };
    let inv = 1.0 / sum;
    xs.iter_mut().for_each(|x| *x *= inv);
}

/// `xs = exp(xs - max)`; returns their sum, in [`LANES`] partial sums.
#[inline(always)]
fn shifted_exps(xs: &mut [f32], max: f32, exp: impl Fn(f32) -> f32) -> f32 {
    let mut sums = [0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        c.iter_mut().zip(&mut sums).for_each(|(x, s)| {
            *x = exp(*x - max);
            *s += *x;
        });
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    sum + sums.iter().sum::<f32>()
}

/// `out = silu(g) * u` elementwise; multiversioned like [`softmax_row`].
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma"))]
fn silu_mul_into(out: &mut [f32], g: &[f32], u: &[f32]) {
    for ((o, g), u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

/// `exp(x)` by Cephes' single-precision polynomial (within 2 ulp of libm on the range
/// that matters), branch-free so that loops over it vectorise. Inputs below -87.3 give
/// 0, above 88.37 give `inf` (libm reaches it at 88.72).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let c = x.clamp(-87.336_55, 88.376_26);
    let shifted = c * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let poly = p * r * r + r + 1.0;
    // 2^n from the integer sitting in the low mantissa bits of `shifted`.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let scale = f32::from_bits(((n_bits + 127) as u32) << 23);
    let y = poly * scale;
    if x < -87.336_55 {
        0.0
    } else if x > 88.376_26 {
        f32::INFINITY
    } else {
        y
    }
}

/// `silu(gate) * up` elementwise, for same-shaped contiguous tensors.
pub(crate) fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    ensure!(gate.dims() == up.dims(), "silu_mul shapes differ");
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    let n = gate.elem_count();
    let (gs, gl) = gate.storage_and_layout();
    let (us, ul) = up.storage_and_layout();
    let (g, u) = (view(&gs, gl)?, view(&us, ul)?);
    let mut out = vec![0f32; n];
    out.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(g.data[..n].par_chunks(ELEMENTWISE_CHUNK))
        .zip(u.data[..n].par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((o, g), u)| silu_mul_into(o, g, u));
    Ok(Tensor::from_vec(out, gate.shape(), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::max_abs_diff;

    #[test]
    fn exp_follows_libm() {
        // Down to -87 (below, libm's results are subnormal and ours flush to 0).
        let xs: Vec<f32> = (-1960..=1990).map(|i| i as f32 * 0.0443).collect();
        let ys: Vec<f32> = xs.iter().map(|x| exp(*x)).collect();
        for (x, y) in xs.iter().zip(&ys) {
            let want = x.exp();
            assert!(
                (y - want).abs() <= 3e-7 * want,
                "exp({x}) = {y}, libm {want}"
            );
        }
        let edges = [f32::MIN, -100.0, 100.0, 0.0].map(exp);
        assert_eq!(edges, [0.0, 0.0, f32::INFINITY, 1.0]);
    }

    #[test]
    fn silu_mul_matches_the_composite() {
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 4., (3, 5000), &dev).unwrap();
        let u = Tensor::randn(0f32, 1., (3, 5000), &dev).unwrap();
        let want = (g.silu().unwrap() * &u).unwrap();
        assert!(max_abs_diff(&silu_mul(&g, &u).unwrap(), &want) < 1e-5);
    }

    #[test]
    fn quick_gelu_matches_the_composite() {
        let x = Tensor::randn(0f32, 4., (3, 5000), &Device::Cpu).unwrap();
        let want = (&x * candle_nn::ops::sigmoid(&(&x * 1.702).unwrap()).unwrap()).unwrap();
        assert!(max_abs_diff(&quick_gelu(&x).unwrap(), &want) < 1e-5);
    }
}
