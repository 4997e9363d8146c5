//! PyTorch `.bin` files are zip archives holding a pickle. mt's reader (candle's) never
//! runs pickled code, but a pickle that names callables a weights file has no use for
//! (`os.system`, `builtins.eval`, ...) is a hostile or broken file: it is refused with
//! the name it asked for, before any tensor is read.

use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::pickle::{Object, Stack};

/// The globals `torch.save` writes for tensors, parameters and state dicts.
const ALLOWED: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "dtype"),
    ("torch", "bfloat16"),
    ("torch", "float16"),
    ("torch", "float32"),
    ("torch.storage", "UntypedStorage"),
    ("torch.serialization", "_get_layout"),
];

/// `torch.<Type>Storage` classes of the legacy format.
fn is_storage(module: &str, class: &str) -> bool {
    module == "torch" && class.ends_with("Storage")
}

/// Fails when a pickle in the `.bin` archive at `path` names a callable outside what
/// `torch.save` writes for weights.
pub(crate) fn check(path: &Path) -> Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("{}: not a PyTorch zip archive", path.display()))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| n.ends_with(".pkl"))
        .collect();
    for name in names {
        let mut pickle = Vec::new();
        zip.by_name(&name)
            .and_then(|mut member| Ok(member.read_to_end(&mut pickle)?))
            .with_context(|| format!("{}: cannot read {name}", path.display()))?;
        let unreadable = || format!("{}: {name} is not a readable pickle", path.display());
        // candle's reader, and the walk below, recurse once per level.
        crate::core::pickle::nesting::check(&pickle, crate::core::pickle::nesting::MAX_DEPTH)
            .with_context(unreadable)?;
        let mut stack = Stack::empty();
        stack
            .read_loop(&mut pickle.as_slice())
            .with_context(unreadable)?;
        let mut bad = None;
        for object in stack.stack() {
            find_foreign(object, &mut bad);
        }
        if let Some((module, class)) = bad {
            bail!(
                "{}: {name} names `{module}.{class}`, which a weights file never needs; \
                 refusing to load it (mt never runs pickled code, but this file is not plain weights)",
                path.display()
            );
        }
    }
    Ok(())
}

/// The first class reference outside [`ALLOWED`] in `object`, depth first.
fn find_foreign(object: &Object, bad: &mut Option<(String, String)>) {
    if bad.is_some() {
        return;
    }
    match object {
        Object::Class {
            module_name,
            class_name,
        } => {
            let known = ALLOWED
                .iter()
                .any(|(m, c)| m == module_name && c == class_name)
                || is_storage(module_name, class_name);
            if !known {
                *bad = Some((module_name.clone(), class_name.clone()));
            }
        }
        Object::Tuple(items) | Object::List(items) => {
            for item in items {
                find_foreign(item, bad);
            }
        }
        Object::Dict(pairs) => {
            for (k, v) in pairs {
                find_foreign(k, bad);
                find_foreign(v, bad);
            }
        }
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            find_foreign(callable, bad);
            find_foreign(args, bad);
        }
        Object::PersistentLoad(inner) => find_foreign(inner, bad),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::load::weights::{NameMap, Weights};
    use std::io::Write;

    fn archive(dir: &Path, pickle: &[u8]) -> std::path::PathBuf {
        let path = dir.join("w.bin");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", opts).unwrap();
        zip.write_all(pickle).unwrap();
        zip.finish().unwrap();
        path
    }

    #[test]
    fn a_pickle_naming_os_system_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        // PROTO 2, GLOBAL os.system, BINUNICODE "touch /tmp/pwned", TUPLE1, REDUCE, STOP.
        let mut pickle = b"\x80\x02cos\nsystem\nX\x10\x00\x00\x00touch /tmp/pwned".to_vec();
        pickle.extend_from_slice(b"\x85R.");
        let path = archive(dir.path(), &pickle);
        let err = check(&path).unwrap_err().to_string();
        assert!(
            err.contains("`os.system`") && err.contains("w.bin"),
            "{err}"
        );
    }

    #[test]
    fn a_pickle_nested_too_deep_is_refused_before_candle_reads_it() {
        // candle's reader and `find_foreign` recurse once per level: 100,000 nested lists
        // overflowed the stack.
        let pickle = crate::core::pickle::nesting::nested_lists(100_000);
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", check(&archive(dir.path(), &pickle)).unwrap_err());
        assert!(
            err.contains("w.bin") && err.contains("nests containers 100000 deep"),
            "{err}"
        );
    }

    #[test]
    fn real_torch_files_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        check(&root.join("models/tiny-clip/pytorch_model.bin")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("p.bin");
        let t = candle_core::Tensor::arange(0f32, 6., &candle_core::Device::Cpu).unwrap();
        crate::core::train::torch_save::write_torch_bin(&ours, &[("w".to_string(), t)]).unwrap();
        check(&ours).unwrap();
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = archive(dir.path(), b"\xff\x00garbage");
        assert!(check(&path).is_err());
        let not_zip = dir.path().join("x.bin");
        std::fs::write(&not_zip, b"not a zip").unwrap();
        assert!(
            check(&not_zip)
                .unwrap_err()
                .to_string()
                .contains("not a PyTorch zip")
        );
    }

    #[test]
    fn a_reader_panic_is_the_files_error() {
        // Found by fuzzing (fuzz/regressions/checkpoint/long1-shift-overflow.bin.input):
        // a LONG1 opcode of 9 bytes overflows the shift in candle's pickle reader, a
        // panic where overflow checks are on (as in this test build).
        let dir = tempfile::tempdir().unwrap();
        let path = archive(
            dir.path(),
            b"\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.",
        );
        let read = crate::core::train::export::read_tensors(&path);
        let mut weights = Weights::new(&candle_core::Device::Cpu, candle_core::DType::F32);
        let added = weights.add_file(&path, NameMap::Hf);
        if cfg!(debug_assertions) {
            for e in [read.unwrap_err(), added.unwrap_err()] {
                let e = e.to_string();
                assert!(
                    e.contains("w.bin") && e.contains("crashed: attempt to shift left"),
                    "{e}"
                );
            }
        }
    }
}
