//! Gradients of one micro-batch, with or without activation checkpointing.
//!
//! candle has no gradient checkpointing, so it is done by hand, layer by layer: the
//! forward pass keeps only each decoder layer's input (detached); the head's loss is
//! differentiated with respect to the last layer's output; then each layer, from the
//! top, is run again on its saved input and differentiated through the surrogate
//! `sum(output * upstream gradient)`, which yields its parameters' gradients and the
//! gradient for the layer below; the embeddings and projector come last. Memory holds
//! one layer's activations instead of all of them, for one extra forward pass.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::adamw::Param;
use super::batch::{Prepared, batch_loss, head_loss, scalar};
use crate::core::model::arch::llava::Llava;

/// Adds `scale * d(loss)/d(param)` of `prepared` to `sums` (one slot per parameter)
/// and returns the loss. A non-finite loss is returned before any backward pass.
pub(crate) fn accumulate_grads(
    model: &Llava,
    prepared: &Prepared,
    scale: f64,
    params: &[Param],
    sums: &mut [Option<Tensor>],
    checkpoint: bool,
) -> Result<f64> {
    if !checkpoint {
        let loss = batch_loss(model, prepared)?;
        let value = scalar(&loss)?;
        if value.is_finite() {
            add(&(loss * scale)?.backward()?, params, sums)?;
        }
        return Ok(value);
    }
    let rotary = model
        .llm
        .rotary(&prepared.positions, prepared.embeds.dtype())?;
    let mask = prepared.mask.as_ref();
    let layers = model.llm.layers.len();
    let mut inputs = Vec::with_capacity(layers);
    let mut x = prepared.embeds.detach();
    for i in 0..layers {
        // The input is a variable here as in the recomputation below, so that both passes
        // take the same kernels (candle's fused ones serve inputs that track no gradient)
        // and compute the same bits; the layer's graph is dropped with `next`'s detach.
        let input = Var::from_tensor(&x)?;
        let next = model
            .llm
            .layer_forward(i, input.as_tensor(), &rotary, mask)?
            .detach();
        inputs.push(x);
        x = next;
    }
    let top = Var::from_tensor(&x)?;
    let loss = head_loss(model, prepared, top.as_tensor())?;
    let value = scalar(&loss)?;
    if !value.is_finite() {
        return Ok(value);
    }
    let store = (loss * scale)?.backward()?;
    add(&store, params, sums)?;
    let mut upstream = gradient_of(&store, top.as_tensor())?;
    for i in (0..layers).rev() {
        let input = Var::from_tensor(&inputs[i])?;
        let out = model
            .llm
            .layer_forward(i, input.as_tensor(), &rotary, mask)?;
        let store = (out * &upstream)?.sum_all()?.backward()?;
        add(&store, params, sums)?;
        upstream = gradient_of(&store, input.as_tensor())?;
    }
    if prepared.embeds.track_op() {
        let store = (&prepared.embeds * &upstream)?.sum_all()?.backward()?;
        add(&store, params, sums)?;
    }
    Ok(value)
}

/// The gradient a backward pass left for `t` (zeros when nothing flowed into it).
fn gradient_of(store: &GradStore, t: &Tensor) -> Result<Tensor> {
    Ok(match store.get(t) {
        Some(g) => g.clone(),
        None => t.zeros_like()?,
    })
}

/// Adds the parameters' gradients in `store` (as f32) to `sums`.
fn add(store: &GradStore, params: &[Param], sums: &mut [Option<Tensor>]) -> Result<()> {
    for (slot, p) in sums.iter_mut().zip(params) {
        if let Some(g) = store.get(p.var.as_tensor()) {
            let g = g.to_dtype(DType::F32)?;
            *slot = Some(match slot.take() {
                Some(sum) => (sum + g)?,
                None => g,
            });
        }
    }
    Ok(())
}
