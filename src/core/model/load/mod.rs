//! Reading checkpoints: the config (original LLaVA or llava-hf layout), the weights
//! (sharded safetensors, memory-mapped, or PyTorch `.bin` behind `core::pickle`) under
//! canonical names, and the folder as a whole with its vision tower and tokenizer.

pub mod checkpoint;
pub mod config;
pub(crate) mod gguf;
pub mod weights;
