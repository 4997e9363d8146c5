//! Fused f32 attention on the CPU, forward and backward, as one candle custom op.
//!
//! The forward pass never materialises the score tensor: each task takes a block of
//! queries, computes their scores over the keys they can see, the softmax and the value
//! product, and drops the scores. Under a gradient, candle's composite attention would
//! keep every intermediate of its graph until the backward pass (the scaled, masked,
//! shifted and exponentiated scores and the probabilities: about six `(B, H, L, T)`
//! tensors a layer); this op keeps only its inputs and output, and its backward pass
//! recomputes each block's probabilities, as flash attention does. Inference runs the
//! same kernel with a vectorised `exp`; both of training's passes run outside inference,
//! so a layer recomputed under activation checkpointing gives the bits of its first pass.

use anyhow::{Result, ensure};
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Tensor};
use rayon::prelude::*;

use super::fused::{self, Strided, View, matmul, softmax_row, view, view_cpu};

/// Query rows per attention task: big enough for the score matmul to run at speed,
/// small enough that a task's scores (`rep x QUERY_BLOCK x keys`) stay in L2 (on the
/// 100M bench model's prefill, 64 beat 32 and 16 by ~5% in three interleaved runs).
const QUERY_BLOCK: usize = 64;

/// Whether [`attend`] runs on these tensors: f32 on the CPU (with or without a
/// gradient).
pub(crate) fn applies(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// `softmax(q k^T * scale + mask) v`, the contract of `attention::attend`: `q`
/// `(B, H, L, D)`, `k`/`v` `(B, Hkv, T, D)` (views into a cache are fine), `mask`
/// additive `(B, 1, L, T)` (it gets no gradient). With `causal`, query `i` sees keys
/// `..= T - L + i` and the later ones are skipped entirely. Returns `(B, H, L, D)`;
/// gradients flow to `q`, `k` and `v`.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    causal: bool,
) -> Result<Tensor> {
    apply(q, k, v, mask, scale, causal, None)
}

/// [`attend`] of one query per batch row over a cache whose rows hold different numbers
/// of keys: row `b` sees its first `keys[b]` keys, and the ones after are never read (a
/// continuous-batching decoding step). Inference only (no gradient).
pub(crate) fn attend_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    keys: &[usize],
    scale: f64,
) -> Result<Tensor> {
    apply(q, k, v, None, scale, true, Some(keys))
}

/// The op on `q`, `k`, `v` (each made contiguous along `D` if it is not), with each
/// batch row's key count when given.
fn apply(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    causal: bool,
    row_keys: Option<&[usize]>,
) -> Result<Tensor> {
    let inner = |x: &Tensor| -> Result<Tensor> {
        Ok(if x.stride()[3] == 1 {
            x.clone()
        } else {
            x.contiguous()?
        })
    };
    let (q, k, v) = (inner(q)?, inner(k)?, inner(v)?);
    let mask = mask.map(|m| inner(&m.detach())).transpose()?;
    let mut shape = Shape::new(&q, &k, &v, mask.as_ref(), scale, causal)?;
    if let Some(keys) = row_keys {
        ensure!(
            shape.l == 1
                && keys.len() == shape.batch
                && keys.iter().all(|&n| n > 0 && n <= shape.t),
            "one query per row and 1..={} keys for each of {} rows: {keys:?}",
            shape.t,
            shape.batch
        );
        shape.row_keys = Some(keys.to_vec());
    }
    let out = q.apply_op3(&k, &v, Attention { shape, mask })?;
    // (B, L, H, D) in memory, returned as the (B, H, L, D) view callers expect.
    Ok(out.transpose(1, 2)?)
}

/// The op: `shape` and the additive mask, if any.
struct Attention {
    shape: Shape,
    mask: Option<Tensor>,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "mt-cpu-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, candle_core::Shape)> {
        let s = &self.shape;
        let (q, k, v) = (view_cpu(q, ql)?, view_cpu(k, kl)?, view_cpu(v, vl)?);
        let out = self.with_mask(|mask| Ok(s.forward(&q, &k, &v, mask)))?;
        Ok((CpuStorage::F32(out), (s.batch, s.l, s.heads, s.d).into()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let storages = [q, k, v, out, &grad].map(|t| t.storage_and_layout());
        let [q_, k_, v_, out_, grad_] = &storages;
        let [dq, dk, dv] = self.with_mask(|mask| {
            Ok(self.shape.backward(Operands {
                q: view(&q_.0, q_.1)?,
                k: view(&k_.0, k_.1)?,
                v: view(&v_.0, v_.1)?,
                mask: mask.copied(),
                out: view(&out_.0, out_.1)?,
                grad: view(&grad_.0, grad_.1)?,
            }))
        })?;
        let tensor = |data, like: &Tensor| Tensor::from_vec(data, like.dims(), &Device::Cpu);
        Ok((
            Some(tensor(dq, q)?),
            Some(tensor(dk, k)?),
            Some(tensor(dv, v)?),
        ))
    }
}

impl Attention {
    /// Runs `f` with a view of the mask, if any.
    fn with_mask<R>(
        &self,
        f: impl FnOnce(Option<&View>) -> candle_core::Result<R>,
    ) -> candle_core::Result<R> {
        match &self.mask {
            Some(m) => {
                let (storage, layout) = m.storage_and_layout();
                f(Some(&view(&storage, layout)?))
            }
            None => f(None),
        }
    }
}

/// What the backward pass reads: the inputs, the mask, the op's output `(B, L, H, D)` and
/// its gradient (same layout).
struct Operands<'a> {
    q: View<'a>,
    k: View<'a>,
    v: View<'a>,
    mask: Option<View<'a>>,
    out: View<'a>,
    grad: View<'a>,
}

/// The mask rows `(L, T)` of one batch row.
struct MaskRows<'a> {
    data: &'a [f32],
    row_stride: usize,
}

/// The dimensions and settings of one attention call, checked.
struct Shape {
    batch: usize,
    heads: usize,
    rep: usize,
    l: usize,
    t: usize,
    d: usize,
    scale: f32,
    past: Option<usize>,
    /// One query per row: a decoding step, whose products take the small-m matmul kernels.
    decoding: bool,
    /// Keys each batch row sees at most (a decoding step over rows of different lengths
    /// in one cache: the keys past a row's own are skipped, not read).
    row_keys: Option<Vec<usize>>,
    /// The softmax's `exp` is the C library's (outside [`fused::inference`], so
    /// training's too), not the vectorised one: gradients come closer to PyTorch's.
    libm_exp: bool,
}

impl Shape {
    fn new(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scale: f64,
        causal: bool,
    ) -> Result<Self> {
        let (batch, heads, l, d) = q.dims4()?;
        let (_, kv_heads, t, _) = k.dims4()?;
        ensure!(
            kv_heads > 0 && heads % kv_heads == 0,
            "{heads} heads over {kv_heads} kv heads"
        );
        ensure!(l > 0 && t > 0, "attention over {l} queries and {t} keys");
        ensure!(
            k.dims() == [batch, kv_heads, t, d]
                && v.dims() == [batch, kv_heads, t, d]
                && (!causal || t >= l),
            "attention shapes: q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
        if let Some(m) = mask {
            ensure!(
                m.dims() == [batch, 1, l, t],
                "attention mask shape {:?}",
                m.dims()
            );
        }
        Ok(Self {
            batch,
            heads,
            rep: heads / kv_heads,
            l,
            t,
            d,
            scale: scale as f32,
            past: if causal { Some(t - l) } else { None },
            decoding: l == 1,
            row_keys: None,
            libm_exp: !fused::in_inference(),
        })
    }

    /// Keys query `i` may see (before the additive mask).
    fn visible(&self, i: usize) -> usize {
        self.past.map_or(self.t, |past| past + i + 1)
    }

    /// Keys query `i` of batch row `row` may see: [`Shape::visible`] within the row's own.
    fn seen(&self, row: usize, i: usize) -> usize {
        let visible = self.visible(i);
        self.row_keys
            .as_ref()
            .map_or(visible, |keys| visible.min(keys[row]))
    }

    fn mask_rows<'a>(mask: Option<&View<'a>>, row: usize) -> Option<MaskRows<'a>> {
        mask.map(|m| MaskRows {
            data: &m.data[row * m.stride[0]..],
            row_stride: m.stride[2],
        })
    }

    /// The output, laid out `(B, L, H, D)`; one task per batch row and query block.
    fn forward(&self, q: &View, k: &View, v: &View, mask: Option<&View>) -> Vec<f32> {
        let (l, hd) = (self.l, self.heads * self.d);
        let mut out = vec![0f32; self.batch * l * hd];
        out.par_chunks_mut(l * hd)
            .enumerate()
            .flat_map(|(row, out)| {
                out.par_chunks_mut(QUERY_BLOCK * hd)
                    .enumerate()
                    .map(move |(block, out)| (row, block * QUERY_BLOCK, out))
            })
            .for_each(|(row, i0, out)| {
                let len = QUERY_BLOCK.min(l - i0);
                self.block(q, k, v, Self::mask_rows(mask, row), row, i0, len, out);
            });
        out
    }

    /// The stacked row `n` of query block `i0 .. i0 + len` of key/value head `g`: the
    /// (query head, query) it holds. The queries of the heads that share a key/value head
    /// are stacked into one matrix (head-major), so that the products run once per
    /// key/value head on `rep` times the rows, where gemm runs faster.
    fn stacked(&self, g: usize, i0: usize, len: usize, n: usize) -> (usize, usize) {
        (g * self.rep + n / len, i0 + n % len)
    }

    /// `probs` `(rep x len, keys)` = the softmax of the scaled, masked scores of the
    /// stacked `queries` of block `(row, g, i0, len)` against the keys the block's last
    /// query may see (`keys`, returned); entries past what a query may see are 0.
    fn probabilities(
        &self,
        probs: &mut [f32],
        queries: &[f32],
        k: &View,
        mask: Option<&MaskRows>,
        (row, g, i0, len): (usize, usize, usize, usize),
    ) -> usize {
        let (rows, keys) = (self.rep * len, self.seen(row, i0 + len - 1));
        matmul(
            (rows, keys, self.d),
            Strided::rows(&mut probs[..rows * keys], keys),
            Strided::rows(queries, self.d),
            Strided::rows(&k.data[row * k.stride[0] + g * k.stride[1]..], k.stride[2]).transposed(),
            self.scale,
            (self.decoding, false),
        );
        for (n, p) in probs[..rows * keys].chunks_mut(keys).enumerate() {
            let i = self.stacked(g, i0, len, n).1;
            let seen = self.seen(row, i).min(keys);
            let add = mask.map(|m| &m.data[i * m.row_stride..][..seen]);
            softmax_row(&mut p[..seen], add, self.libm_exp);
            p[seen..].fill(0.0);
        }
        keys
    }

    /// Attention for queries `i0 .. i0 + len` of batch row `row`, all heads, written
    /// to `out` laid out `(len, H, D)`.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        q: &View,
        k: &View,
        v: &View,
        mask: Option<MaskRows>,
        row: usize,
        i0: usize,
        len: usize,
        out: &mut [f32],
    ) {
        let (rep, d) = (self.rep, self.d);
        let keys = self.seen(row, i0 + len - 1);
        let rows = rep * len;
        let mut queries = vec![0f32; rows * d];
        let mut probs = vec![0f32; rows * keys];
        let mut mixed = vec![0f32; rows * d];
        for g in 0..self.heads / rep {
            let at = (row, g, i0, len);
            self.gather(&mut queries, q, at, false);
            self.probabilities(&mut probs, &queries, k, mask.as_ref(), at);
            let vp = &v.data[row * v.stride[0] + g * v.stride[1]..];
            matmul(
                (rows, d, keys),
                Strided::rows(&mut mixed, d),
                Strided::rows(&probs, keys),
                Strided::rows(vp, v.stride[2]),
                1.0,
                (self.decoding, false),
            );
            for (n, src) in mixed.chunks(d).enumerate() {
                let (head, i) = self.stacked(g, i0, len, n);
                out[((i - i0) * self.heads + head) * d..][..d].copy_from_slice(src);
            }
        }
    }

    /// Copies the stacked rows of block `(row, g, i0, len)` of `x` into `dst`: from `x`
    /// `(B, H, L, D)` (the queries), or `(B, L, H, D)` with `by_position` (the output and
    /// its gradient).
    fn gather(
        &self,
        dst: &mut [f32],
        x: &View,
        (row, g, i0, len): (usize, usize, usize, usize),
        by_position: bool,
    ) {
        let s = x.stride;
        for (n, dst) in dst[..self.rep * len * self.d]
            .chunks_mut(self.d)
            .enumerate()
        {
            let (head, i) = self.stacked(g, i0, len, n);
            let (a, b) = if by_position { (i, head) } else { (head, i) };
            dst.copy_from_slice(&x.data[row * s[0] + a * s[1] + b * s[2]..][..self.d]);
        }
    }

    /// The gradients `[dq (B, H, L, D), dk, dv (B, Hkv, T, D)]`; one task per batch row
    /// and key/value head, which owns that head's `dk`, `dv` and its query heads' `dq`.
    fn backward(&self, ops: Operands) -> [Vec<f32>; 3] {
        let (rep, l, t, d) = (self.rep, self.l, self.t, self.d);
        let mut dq = vec![0f32; self.batch * self.heads * l * d];
        let mut dk = vec![0f32; self.batch * (self.heads / rep) * t * d];
        let mut dv = dk.clone();
        dq.par_chunks_mut(rep * l * d)
            .zip(dk.par_chunks_mut(t * d))
            .zip(dv.par_chunks_mut(t * d))
            .enumerate()
            .for_each(|(task, ((dq, dk), dv))| {
                let groups = self.heads / rep;
                self.backward_group(&ops, (task / groups, task % groups), dq, dk, dv);
            });
        [dq, dk, dv]
    }

    /// [`Self::backward`] for key/value head `g` of batch row `row`: `dq` `(rep, L, D)`,
    /// `dk` and `dv` `(T, D)`, query block by query block:
    /// `dV += P^T dO`, `dS = P * (dO V^T - rowsum(dO * O))`, `dQ = scale dS K`,
    /// `dK += scale dS^T Q`.
    fn backward_group(
        &self,
        ops: &Operands,
        (row, g): (usize, usize),
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
    ) {
        let (rep, d) = (self.rep, self.d);
        let (k, v) = (&ops.k, &ops.v);
        let kp = &k.data[row * k.stride[0] + g * k.stride[1]..];
        let vp = &v.data[row * v.stride[0] + g * v.stride[1]..];
        let mask = Self::mask_rows(ops.mask.as_ref(), row);
        let most = rep * QUERY_BLOCK.min(self.l);
        let (mut queries, mut outs, mut d_outs, mut d_queries) = (
            vec![0f32; most * d],
            vec![0f32; most * d],
            vec![0f32; most * d],
            vec![0f32; most * d],
        );
        let widest = self.visible(self.l - 1);
        let (mut probs, mut d_scores) = (vec![0f32; most * widest], vec![0f32; most * widest]);
        for i0 in (0..self.l).step_by(QUERY_BLOCK) {
            let len = QUERY_BLOCK.min(self.l - i0);
            let at = (row, g, i0, len);
            self.gather(&mut queries, &ops.q, at, false);
            self.gather(&mut outs, &ops.out, at, true);
            self.gather(&mut d_outs, &ops.grad, at, true);
            let keys = self.probabilities(&mut probs, &queries, k, mask.as_ref(), at);
            let rows = rep * len;
            let (probs, d_scores) = (&probs[..rows * keys], &mut d_scores[..rows * keys]);
            let (queries, d_outs) = (&queries[..rows * d], &d_outs[..rows * d]);
            // dV += P^T dO
            matmul(
                (keys, d, rows),
                Strided::rows(&mut dv[..keys * d], d),
                Strided::rows(probs, keys).transposed(),
                Strided::rows(d_outs, d),
                1.0,
                (false, true),
            );
            // dP = dO V^T, then dS = P * (dP - rowsum(dO * O)).
            matmul(
                (rows, keys, d),
                Strided::rows(&mut *d_scores, keys),
                Strided::rows(d_outs, d),
                Strided::rows(vp, v.stride[2]).transposed(),
                1.0,
                (false, false),
            );
            for (n, (ds, p)) in d_scores
                .chunks_mut(keys)
                .zip(probs.chunks(keys))
                .enumerate()
            {
                let (d_out, out) = (&d_outs[n * d..][..d], &outs[n * d..][..d]);
                let delta: f32 = d_out.iter().zip(out).map(|(a, b)| a * b).sum();
                ds.iter_mut()
                    .zip(p)
                    .for_each(|(ds, p)| *ds = p * (*ds - delta));
            }
            // dQ = scale dS K, scattered back to (rep, L, D).
            matmul(
                (rows, d, keys),
                Strided::rows(&mut d_queries[..rows * d], d),
                Strided::rows(&*d_scores, keys),
                Strided::rows(kp, k.stride[2]),
                self.scale,
                (false, false),
            );
            for (n, src) in d_queries[..rows * d].chunks(d).enumerate() {
                let (head, i) = self.stacked(g, i0, len, n);
                dq[((head - g * rep) * self.l + i) * d..][..d].copy_from_slice(src);
            }
            // dK += scale dS^T Q
            matmul(
                (keys, d, rows),
                Strided::rows(&mut dk[..keys * d], d),
                Strided::rows(&*d_scores, keys).transposed(),
                Strided::rows(queries, d),
                self.scale,
                (false, true),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::arch::attention::{attend_unfused, causal_padding_mask};
    use crate::core::model::max_abs_diff;
    use candle_core::Var;

    /// `(l, past, causal, padded)` cases: prefill with history, padding and grouped
    /// heads, several query blocks, decoding, and no mask. Padding covers the first 4
    /// keys, so a query sees at least one real key (a query that sees none is padding,
    /// whose output is of no use and which the two kernels spread differently).
    const CASES: [(usize, usize, bool, bool); 6] = [
        (70, 5, true, true),
        (150, 5, true, true),
        (150, 0, true, false),
        (1, 40, true, true),
        (1, 9, true, false),
        (33, 0, false, false),
    ];

    fn inputs(
        l: usize,
        past: usize,
        causal: bool,
        padded: bool,
    ) -> (Tensor, Tensor, Tensor, Option<Tensor>) {
        let dev = Device::Cpu;
        let t = past + l;
        let q = Tensor::randn(0f32, 1., (2, 6, l, 16), &dev).unwrap();
        // Keys and values as views into a larger cache, as decoding passes them.
        let cache = Tensor::randn(0f32, 1., (2, 2, t + 7, 16), &dev).unwrap();
        let k = cache.narrow(2, 0, t).unwrap();
        let v = (cache.narrow(2, 3, t).unwrap() * 2.0).unwrap();
        let mut valid = vec![vec![true; t]; 2];
        if padded {
            valid[1][..4].iter_mut().for_each(|x| *x = false);
        }
        let mask = if causal {
            causal_padding_mask(&valid, past, l, None, DType::F32, &dev).unwrap()
        } else {
            None
        };
        (q, k, v, mask)
    }

    #[test]
    fn attention_matches_the_composite() {
        for (l, past, causal, padded) in CASES {
            let (q, k, v, mask) = inputs(l, past, causal, padded);
            let composite = attend_unfused(&q, &k, &v, mask.as_ref(), 0.25, causal).unwrap();
            let run = || attend(&q, &k, &v, mask.as_ref(), 0.25, causal).unwrap();
            // Outside inference (C library exp) and inside (the vectorised one).
            for fused in [run(), fused::inference(&Device::Cpu, run)] {
                assert_eq!(fused.dims(), composite.dims());
                let diff = max_abs_diff(&fused, &composite);
                assert!(diff < 1e-5, "l {l} past {past}: {diff}");
            }
        }
    }

    /// An attention function with [`attend`]'s signature.
    type Attend = fn(&Tensor, &Tensor, &Tensor, Option<&Tensor>, f64, bool) -> Result<Tensor>;

    /// The op's gradients for `q`, `k` and `v` against candle's autograd through the
    /// composite attention, under a random upstream gradient.
    #[test]
    fn gradients_match_the_composite() {
        let dev = Device::Cpu;
        for (l, past, causal, padded) in CASES {
            let (q, k, v, mask) = inputs(l, past, causal, padded);
            let vars = [q, k, v].map(|t| Var::from_tensor(&t.contiguous().unwrap()).unwrap());
            let upstream = Tensor::randn(0f32, 1., (2, 6, l, 16), &dev).unwrap();
            let grads = |f: Attend| {
                let [q, k, v] = [0, 1, 2].map(|i| vars[i].as_tensor());
                let out = f(q, k, v, mask.as_ref(), 0.25, causal).unwrap();
                let store = (out * &upstream)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                [q, k, v].map(|t| store.get(t).unwrap().clone())
            };
            let (fused, composite) = (grads(attend), grads(attend_unfused));
            for (name, (a, b)) in ["q", "k", "v"].iter().zip(fused.iter().zip(&composite)) {
                assert_eq!(a.dims(), b.dims());
                let diff = max_abs_diff(a, b);
                assert!(diff < 1e-5, "d{name}, l {l} past {past}: {diff}");
            }
        }
    }
}
