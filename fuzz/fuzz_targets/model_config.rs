//! config.json of a checkpoint (original LLaVA and llava-hf layouts), then joined with a
//! CLIP tower config as a checkpoint load does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrinity::core::model::load::config::{ClipConfig, LlavaConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(cfg) = LlavaConfig::parse(&json) else {
        return;
    };
    // The original layout names its tower; the checkpoint loader resolves it first.
    let tower = ClipConfig::known("openai/clip-vit-large-patch14-336").expect("a known tower");
    let cfg = match cfg.with_vision(tower) {
        Ok(cfg) => cfg,
        Err(_) => return,
    };
    let _ = (cfg.input_size(), cfg.image_tokens(), cfg.vision_layers_used());
});
