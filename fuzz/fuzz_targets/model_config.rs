//! config.json of a checkpoint (original LLaVA and llava-hf layouts).
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrinity::core::model::config::LlavaConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(cfg) = LlavaConfig::parse(&json)
    {
        let _ = (cfg.input_size(), cfg.image_tokens(), cfg.vision_layers_used());
    }
});
