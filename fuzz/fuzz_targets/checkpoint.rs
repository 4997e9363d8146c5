//! Weight files as a checkpoint load reads them: a safetensors header and its offsets,
//! a PyTorch `.bin` (zip + pickle), or a `model.safetensors.index.json`; every tensor
//! listed is then fetched.
#![no_main]
use candle_core::Device;
use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use libfuzzer_sys::fuzz_target;
use medtrinity::core::model::weights::weight_files;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
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
            let path = common::file("pt/w.bin", bytes);
            if let Ok(pth) = PthTensors::new(&path, None) {
                let names: Vec<String> = pth.tensor_infos().keys().cloned().collect();
                for name in names {
                    let _ = pth.get(&name);
                }
            }
        }
        _ => {
            let path = common::file("index/model.safetensors.index.json", bytes);
            let _ = weight_files(path.parent().unwrap());
        }
    }
});
