//! A MedTrinity-25M image shard (`.tar.zst`) extracted into a folder: nothing may land
//! outside it, whatever the members say.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrinity::core::hub::extract::extract_shard;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // Raw tar bytes half the time (compressed here), zstd frames as given otherwise.
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let archive = if kind % 2 == 0 {
        zstd_frame(bytes)
    } else {
        bytes.to_vec()
    };
    let path = common::file("shard/images_000.tar.zst", &archive);
    let dest = common::scratch().join("out/dest");
    let _ = std::fs::remove_dir_all(common::scratch().join("out"));
    std::fs::create_dir_all(&dest).unwrap();
    let _ = extract_shard(&path, &dest);
    // Everything written must be inside dest.
    for entry in std::fs::read_dir(common::scratch().join("out")).unwrap() {
        assert_eq!(entry.unwrap().file_name(), "dest", "extraction escaped its folder");
    }
});

fn zstd_frame(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 1).expect("zstd compresses anything")
}
