//! Weight files as a checkpoint load reads them: a safetensors header and its offsets,
//! a PyTorch `.bin` (zip + pickle), or a `model.safetensors.index.json`; every tensor
//! listed is then fetched.
#![no_main]
use candle_core::{DType, Device};
use candle_core::safetensors::MmapedSafetensors;
use libfuzzer_sys::fuzz_target;
use medtrinity::core::model::load::weights::{NameMap, Weights, weight_files};
use medtrinity::core::train::export::read_tensors;

#[path = "common.rs"]
mod common;

fuzz_target!(init: medtrinity::core::error::quiet_contained_panics(), |data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            let path = common::file("st/w.safetensors", bytes);
            // SAFETY: the scratch file is not changed while mapped.
            if let Ok(st) = unsafe { MmapedSafetensors::new(&path) } {
                for (name, _) in st.tensors() {
                    let _ = st.load(&name, &Device::Cpu);
                }
            }
        }
        1 => {
            // As mt reads a `.bin`: the pickle guard, then candle's reader, under
            // contain_panic (a panic contained there is an error, not a finding).
            let path = common::file("pt/w.bin", bytes);
            let _ = read_tensors(&path);
            let mut weights = Weights::new(&Device::Cpu, DType::F32);
            let _ = weights.add_file(&path, NameMap::Hf);
        }
        _ => {
            let path = common::file("index/model.safetensors.index.json", bytes);
            let _ = weight_files(path.parent().unwrap());
        }
    }
});
