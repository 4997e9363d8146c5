//! The ops of the model layers that have more than one implementation, one function
//! each. Each picks the fastest path that keeps the math: a hand-written CPU kernel
//! ([`super::kernels`]) where it applies (f32 on the CPU, contiguous rows; the
//! inference-only ones inside [`super::kernels::inference`]), candle's fused op where
//! no gradient flows, and candle's composite, differentiable ops otherwise (any device,
//! training). The layers call these and never branch on device or mode.

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::arch::attention;
use super::kernels::{self, fused, rowwise};

/// Whether any of these tensors takes part in a gradient computation.
pub(crate) fn tracks_grad(tensors: &[&Tensor]) -> bool {
    tensors.iter().any(|t| t.track_op())
}

/// Numerically stable softmax over the last dimension, computed in f32 and returned
/// in the input dtype; fused unless a gradient must flow.
pub(crate) fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let y = if tracks_grad(&[x]) {
        candle_nn::ops::softmax(&x32, candle_core::D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&x32.contiguous()?)?
    };
    Ok(y.to_dtype(dtype)?)
}

/// `LayerNorm(x) = (x - mean) / sqrt(var + eps) * weight + bias` over the last dimension.
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if tracks_grad(&[x, weight, bias]) {
        return Ok(candle_nn::ops::layer_norm_slow(
            x, weight, bias, eps as f32,
        )?);
    }
    Ok(candle_nn::ops::layer_norm(
        &x.contiguous()?,
        weight,
        bias,
        eps as f32,
    )?)
}

/// `x / sqrt(mean(x^2) + eps) * weight` over the last dimension.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if let Some(y) = rowwise::rms_norm(x, weight, eps)? {
        return Ok(y);
    }
    if tracks_grad(&[x, weight]) {
        return Ok(candle_nn::ops::rms_norm_slow(x, weight, eps as f32)?);
    }
    Ok(candle_nn::ops::rms_norm(
        &x.contiguous()?,
        weight,
        eps as f32,
    )?)
}

/// `silu(gate) * up` (Llama's MLP).
pub(crate) fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if fused::applies(&[gate, up]) {
        return fused::silu_mul(gate, up);
    }
    Ok((gate.silu()? * up)?)
}

/// CLIP's `quick_gelu`: `x * sigmoid(1.702 x)`.
pub(crate) fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if fused::inference_applies(&[x]) {
        return fused::quick_gelu(x);
    }
    Ok((x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?)
}

/// Rotary embedding, "rotate half" convention, for `x` `(B, H, L, D)` and `cos`/`sin`
/// `(B, L, D/2)`. Fused unless a gradient must flow.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !tracks_grad(&[x, cos, sin]) {
        return Ok(candle_nn::rotary_emb::rope(
            x,
            &cos.contiguous()?,
            &sin.contiguous()?,
        )?);
    }
    let half = x.dim(3)? / 2;
    let cos = Tensor::cat(&[cos, cos], 2)?.unsqueeze(1)?;
    let sin = Tensor::cat(&[sin, sin], 2)?.unsqueeze(1)?;
    let x1 = x.narrow(3, 0, half)?;
    let x2 = x.narrow(3, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
    Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
}

/// Projected rows `y` `(B, L, heads · D)` as heads `(B, heads, L, D)`, each rotated by
/// `rotary` (`cos`, `sin` of shape `(B, L, D/2)`) when given.
pub(crate) fn split_heads(
    y: &Tensor,
    heads: usize,
    rotary: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    if let Some(split) = rowwise::split_heads(y, heads, rotary)? {
        return Ok(split);
    }
    let (b, l, width) = y.dims3()?;
    let split = y
        .reshape((b, l, heads, width / heads))?
        .transpose(1, 2)?
        .contiguous()?;
    match rotary {
        Some((cos, sin)) => rope(&split, cos, sin),
        None => Ok(split),
    }
}

/// `softmax(q k^T * scale + mask) v` for `q` `(B, H, L, D)` and `k`, `v`
/// `(B, Hkv, T, D)` where `H` is a multiple of `Hkv` (query head `h` reads key/value
/// head `h / (H / Hkv)`, as `repeat_kv` does). `mask` is additive, `(B, 1, L, T)`.
/// With `causal`, query `i` sits at key slot `T - L + i` and `mask` already hides
/// later keys. Returns `(B, H, L, D)`. Key/value heads are never copied to match `H`,
/// and `k`, `v` may be views into a larger cache (strided along `T`).
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    causal: bool,
) -> Result<Tensor> {
    let on_kernel = |ts: &[&Tensor]| kernels::attention::applies(ts);
    if on_kernel(&[q, k, v]) && mask.is_none_or(|m| on_kernel(&[m])) {
        return kernels::attention::attend(q, k, v, mask, scale, causal);
    }
    attention::attend_unfused(q, k, v, mask, scale, causal)
}

/// [`attend`] of one query per row over a cache whose rows hold different numbers of
/// keys: row `b` sees its first `keys[b]`, which `mask` also says additively. The CPU
/// kernel skips each row's other keys instead of reading them; elsewhere the mask does it.
pub(crate) fn attend_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    keys: &[usize],
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    if kernels::attention::applies(&[q, k, v]) {
        return kernels::attention::attend_rows(q, k, v, keys, scale);
    }
    attend(q, k, v, mask, scale, true)
}

/// `x W^T + b` of each `(W, b)` of `layers` for the same `x` `(rows, in)`: inside
/// [`kernels::inference`] in one parallel pass on the CPU kernels, otherwise through
/// `product` (candle's ops) per layer.
pub(crate) fn linears(
    x: &Tensor,
    layers: &[(&Tensor, Option<&Tensor>)],
    product: impl Fn(usize) -> Result<Tensor>,
) -> Result<Vec<Tensor>> {
    match fused::linears(x, layers)? {
        Some(ys) => Ok(ys),
        None => (0..layers.len()).map(product).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_differentiable_rope_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 5, 8), &dev).unwrap();
        let angles = Tensor::randn(0f32, 3., (2, 5, 4), &dev).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let fused = rope(&x, &cos, &sin).unwrap();
        let var = Var::from_tensor(&x).unwrap();
        let slow = rope(var.as_tensor(), &cos, &sin).unwrap();
        let diff = crate::core::model::max_abs_diff(&fused, &slow);
        assert!(diff < 1e-5, "{diff}");
        assert!(
            slow.sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(var.as_tensor())
                .is_some()
        );
    }
}
