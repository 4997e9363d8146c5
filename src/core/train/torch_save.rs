//! `torch.save` of a dict of tensors, for the files LLaVA's Python code opens with
//! `torch.load` (`mm_projector.bin`, `non_lora_trainables.bin`): PyTorch's zip format
//! (`<name>/data.pkl`, one `<name>/data/<i>` record per tensor, `version`, `byteorder`)
//! with a protocol-2 pickle that uses only what `torch.load(weights_only=True)` allows:
//! `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and typed storages.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use candle_core::{DType, Tensor};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// Writes `tensors` (in order) as `torch.save(OrderedDict(...))` would, atomically.
pub(crate) fn write_torch_bin(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let archive = path
        .file_stem()
        .map_or_else(|| "archive".into(), |s| s.to_string_lossy().into_owned());
    let tmp = path.with_extension("bin.partial");
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut zip = ZipWriter::new(file);
    // PyTorch aligns records to 64 bytes so they can be memory-mapped.
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .with_alignment(64);
    let mut pickle = Pickle::default();
    pickle.start_ordered_dict();
    for (i, (name, t)) in tensors.iter().enumerate() {
        let (storage, bytes) = storage_of(t)?;
        pickle.tensor_entry(name, storage, i, t.dims());
        zip.start_file(format!("{archive}/data/{i}"), opts)?;
        zip.write_all(&bytes)?;
    }
    pickle.finish();
    zip.start_file(format!("{archive}/data.pkl"), opts)?;
    zip.write_all(&pickle.out)?;
    zip.start_file(format!("{archive}/byteorder"), opts)?;
    zip.write_all(b"little")?;
    zip.start_file(format!("{archive}/version"), opts)?;
    zip.write_all(b"3\n")?;
    zip.finish()?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The storage class and little-endian bytes of a tensor.
fn storage_of(t: &Tensor) -> Result<(&'static str, Vec<u8>)> {
    let flat = t.flatten_all()?.to_device(&candle_core::Device::Cpu)?;
    Ok(match t.dtype() {
        DType::F32 => (
            "FloatStorage",
            flat.to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::BF16 => (
            "BFloat16Storage",
            flat.to_vec1::<half::bf16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            "HalfStorage",
            flat.to_vec1::<half::f16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        other => bail!("cannot save a {other:?} tensor as a PyTorch file"),
    })
}

/// A protocol-2 pickle being written.
#[derive(Default)]
struct Pickle {
    out: Vec<u8>,
}

impl Pickle {
    fn op(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn global(&mut self, module: &str, name: &str) {
        self.op(b"c");
        self.op(format!("{module}\n{name}\n").as_bytes());
    }

    fn string(&mut self, s: &str) {
        self.op(b"X");
        self.op(&(s.len() as u32).to_le_bytes());
        self.op(s.as_bytes());
    }

    fn int(&mut self, v: usize) {
        self.op(b"J"); // BININT, 4-byte signed
        self.op(&(v as i32).to_le_bytes());
    }

    fn int_tuple(&mut self, values: &[usize]) {
        self.op(b"(");
        for &v in values {
            self.int(v);
        }
        self.op(b"t");
    }

    /// `collections.OrderedDict()` followed by a MARK for the items to come.
    fn start_ordered_dict(&mut self) {
        self.op(b"\x80\x02");
        self.global("collections", "OrderedDict");
        self.op(b")R(");
    }

    /// `name: _rebuild_tensor_v2(persistent(storage), 0, size, stride, False, OrderedDict())`.
    fn tensor_entry(&mut self, name: &str, storage: &str, key: usize, dims: &[usize]) {
        let numel: usize = dims.iter().product();
        let mut stride = vec![1usize; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * dims[i + 1];
        }
        self.string(name);
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(b"(");
        // Persistent id: ('storage', torch.<Storage>, '<key>', 'cpu', numel).
        self.op(b"(");
        self.string("storage");
        self.global("torch", storage);
        self.string(&key.to_string());
        self.string("cpu");
        self.int(numel);
        self.op(b"tQ");
        self.int(0);
        self.int_tuple(dims);
        self.int_tuple(&stride);
        self.op(b"\x89");
        self.global("collections", "OrderedDict");
        self.op(b")Rt");
        self.op(b"R");
    }

    /// SETITEMS for every entry, then STOP.
    fn finish(&mut self) {
        self.op(b"u.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn candle_reads_back_what_is_written() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mm_projector.bin");
        let a = Tensor::arange(0f32, 12., &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let b = Tensor::new(&[1.5f32, -2.0], &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let tensors = vec![
            ("model.mm_projector.0.weight".to_string(), a.clone()),
            ("model.mm_projector.0.bias".to_string(), b.clone()),
        ];
        write_torch_bin(&path, &tensors).unwrap();
        let back: std::collections::HashMap<String, Tensor> = candle_core::pickle::read_all(&path)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(back.len(), 2);
        let got = &back["model.mm_projector.0.weight"];
        assert_eq!(got.dims(), &[3, 4]);
        assert_eq!(got.to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap());
        let got = &back["model.mm_projector.0.bias"];
        assert_eq!(got.dtype(), DType::BF16);
        assert_eq!(
            got.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(),
            vec![1.5, -2.0]
        );
        assert!(!path.with_extension("bin.partial").exists());
    }
}
