//! The model's math: the CLIP tower with the S2 wrapper, the projector, the Llama
//! decoder and LLaVA around them, and the layers they share (attention, norms, Linear
//! with LoRA). Every module is written for training too (differentiable whenever a
//! gradient can flow). One file per family: a new family is a new file here.

pub(crate) mod attention;
pub(crate) mod clip;
pub(crate) mod linear;
pub(crate) mod llama;
pub mod llava;
pub(crate) mod lora;
pub(crate) mod norm;
pub(crate) mod projector;
pub(crate) mod s2;
