//! Gradients of one micro-batch, with or without activation checkpointing.
//!
//! candle has no gradient checkpointing, so it is done by hand, layer by layer: the
//! forward pass keeps only each decoder layer's input (detached); the head's loss is
//! differentiated with respect to the last layer's output; then each layer, from the
//! top, is run again on its saved input and differentiated through the surrogate
//! `sum(output * upstream gradient)`, which yields its parameters' gradients and the
//! gradient for the layer below; the embeddings and projector come last. Memory holds
//! one layer's activations instead of all of them, for one extra forward pass.
//!
//! The gradients go into [`GradSums`]: kept in the parameters' dtype until a second one
//! is added (then f32), in host memory (`--offload optimizer`), or reduce-scattered over
//! the ranks after every micro-batch (ZeRO 2).

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use super::adamw::Param;
use super::batch::{Prepared, batch_loss, head_loss, scalar};
use super::parallel::Reducer;
use crate::core::model::arch::llava::Llava;

/// Where a step's gradients are summed.
#[derive(Clone, Copy)]
pub enum GradTarget<'a> {
    /// On the device, as the backward pass leaves them (widened to f32 once summed).
    Device,
    /// In host memory, in f32 (`--offload optimizer`).
    Host,
    /// Reduce-scattered over the ranks after every micro-batch, this rank's piece summed
    /// in f32 (ZeRO 2).
    Scattered(&'a dyn Reducer),
}

/// A step's gradient sums, one slot per parameter.
pub(crate) struct GradSums<'a> {
    target: GradTarget<'a>,
    /// This micro-batch's gradients (or, unscattered, the step's so far).
    pending: Vec<Option<Tensor>>,
    /// ZeRO 2: the sum of this rank's pieces.
    pieces: Vec<Option<Tensor>>,
}

impl<'a> GradSums<'a> {
    /// Empty sums for `n` parameters.
    pub(crate) fn new(target: GradTarget<'a>, n: usize) -> Self {
        Self {
            target,
            pending: vec![None; n],
            pieces: vec![None; n],
        }
    }

    /// Adds parameter `i`'s gradient `g`.
    fn add(&mut self, i: usize, g: &Tensor) -> Result<()> {
        let g = match self.target {
            GradTarget::Host => g.to_device(&Device::Cpu)?,
            _ => g.clone(),
        };
        let slot = &mut self.pending[i];
        *slot = Some(match slot.take() {
            None if matches!(self.target, GradTarget::Host) => g.to_dtype(DType::F32)?,
            None => g,
            Some(sum) => (sum.to_dtype(DType::F32)? + g.to_dtype(DType::F32)?)?,
        });
        Ok(())
    }

    /// Ends a micro-batch (every rank calls this once per micro-batch, whatever it had):
    /// under ZeRO 2 the gradients are reduce-scattered and this rank's pieces summed.
    pub(crate) fn end_micro_batch(&mut self, params: &[Param]) -> Result<()> {
        let GradTarget::Scattered(reducer) = self.target else {
            return Ok(());
        };
        for (i, p) in params.iter().enumerate() {
            let full = match self.pending[i].take() {
                Some(g) => g,
                None => p.var.as_tensor().zeros_like()?.to_dtype(DType::F32)?,
            };
            let piece = reducer.reduce_scatter(&full)?;
            let slot = &mut self.pieces[i];
            *slot = Some(match slot.take() {
                Some(sum) => (sum + piece)?,
                None => piece,
            });
        }
        Ok(())
    }

    /// Each parameter's summed gradient (this rank's piece under ZeRO 2); zeros where
    /// none flowed.
    pub(crate) fn finish(self, params: &[Param]) -> Result<Vec<Tensor>> {
        let slots = match self.target {
            GradTarget::Scattered(_) => self.pieces,
            _ => self.pending,
        };
        slots
            .into_iter()
            .zip(params)
            .map(|(g, p)| match g {
                Some(g) => Ok(g),
                None => Ok(p.var.as_tensor().zeros_like()?.to_dtype(DType::F32)?),
            })
            .collect()
    }
}

/// Adds `scale * d(loss)/d(param)` of `prepared` to `sums` and returns the loss. A
/// non-finite loss is returned before any backward pass.
pub(crate) fn accumulate_grads(
    model: &Llava,
    prepared: &Prepared,
    scale: f64,
    params: &[Param],
    sums: &mut GradSums,
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

/// Adds the parameters' gradients in `store` to `sums`.
fn add(store: &GradStore, params: &[Param], sums: &mut GradSums) -> Result<()> {
    for (i, p) in params.iter().enumerate() {
        if let Some(g) = store.get(p.var.as_tensor()) {
            sums.add(i, g)?;
        }
    }
    Ok(())
}
