//! The model's math: the CLIP tower with the S2 wrapper, the projector, the Llama
//! decoder and LLaVA around them, and the layers they share (attention, norms, Linear
//! with LoRA). Every module is written for training too (differentiable whenever a
//! gradient can flow). One file per family: a new family is a new file here.

pub mod attention;
pub mod clip;
pub mod linear;
pub mod llama;
pub mod llava;
pub mod lora;
pub mod norm;
pub mod projector;
pub mod s2;
