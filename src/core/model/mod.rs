//! LLaVA-Med++ in candle: config, weights, the CLIP tower with the S2 wrapper, the
//! projector, Llama-3, prompts, preprocessing and batched generation. Every module
//! is written for training too (LoRA-capable Linear layers, differentiable ops
//! whenever a gradient can flow).

pub mod attention;
pub mod captioner;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod generate;
pub mod kernels;
pub mod linear;
pub mod llama;
pub mod llava;
pub mod lora;
pub mod norm;
pub mod ops;
pub mod preprocess;
pub mod projector;
pub mod prompt;
pub mod s2;
pub mod weights;

/// Largest absolute difference between two tensors of one shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("tensors of one shape")
}
