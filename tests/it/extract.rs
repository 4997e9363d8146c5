//! Image-shard extraction and the manifest check (`medtrinity::core::hub::extract`),
//! on the real `25M_full` fixture and on hand-made archives built here.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use medtrinity::core::hub::extract::*;

use crate::common;

const FULL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/medtrinity-full");

fn shards() -> Vec<PathBuf> {
    (0..2)
        .map(|k| PathBuf::from(format!("{FULL}/25M_accessible/images_{k:03}.tar.zst")))
        .collect()
}

fn manifest() -> PathBuf {
    PathBuf::from(format!("{FULL}/25M_full/train-00000-of-00001.parquet"))
}

/// The regular-file members of a `.tar.zst` (or `.tar`), read independently of the
/// code under test.
fn members(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = File::open(archive).unwrap();
    let reader: Box<dyn Read> = if archive.to_string_lossy().ends_with(".zst") {
        Box::new(zstd::Decoder::new(file).unwrap())
    } else {
        Box::new(file)
    };
    let mut tar = tar::Archive::new(reader);
    let mut out = BTreeMap::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            out.insert(name, bytes);
        }
    }
    out
}

/// Every regular file under `root` with its content, the state folder excluded.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let kind = e.file_type().unwrap();
            if dir == root && e.file_name() == STATE_DIR {
                continue;
            }
            if kind.is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

/// Files under `root`, counted while another process writes there (errors ignored).
fn count_files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(k) if k.is_dir() => stack.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}

fn done_marker(dest: &Path, archive: &Path) -> PathBuf {
    dest.join(STATE_DIR).join(format!(
        "{}.done",
        archive.file_name().unwrap().to_string_lossy()
    ))
}

#[test]
fn real_shards_extract_byte_for_byte_and_a_rerun_skips_them() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("images");
    let mut expected = BTreeMap::new();
    for shard in shards() {
        let want = members(&shard);
        let report = extract_shard(&shard, &dest).unwrap();
        assert_eq!(report.shard, shard);
        assert!(!report.skipped);
        assert_eq!(report.entries, want.len() as u64);
        assert_eq!(
            report.bytes,
            want.values().map(|b| b.len() as u64).sum::<u64>()
        );
        assert_eq!(report.ignored, 0);
        let marker: serde_json::Value =
            serde_json::from_slice(&fs::read(done_marker(&dest, &shard)).unwrap()).unwrap();
        assert_eq!(marker["entries"], report.entries);
        assert_eq!(marker["bytes"], report.bytes);
        assert_eq!(marker["archive_bytes"], fs::metadata(&shard).unwrap().len());
        expected.extend(want);
    }
    assert_eq!(expected.len(), 32);
    // Every file is the member, byte for byte, and nothing else is there (no temporaries).
    assert_eq!(files(&dest), expected);
    let state: Vec<_> = fs::read_dir(dest.join(STATE_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(state.len(), 2, "{state:?}");

    for shard in shards() {
        let again = extract_shard(&shard, &dest).unwrap();
        assert!(again.skipped);
        assert_eq!(again.entries, 16);
    }
    assert_eq!(files(&dest), expected);
}

/// Checks that extracting `archive` fails as truncated, leaves no marker, and that every
/// file it did write is a complete member. Returns the error message.
fn assert_truncated(archive: &Path, dest: &Path, good: &BTreeMap<String, Vec<u8>>) -> String {
    let err = extract_shard(archive, dest).expect_err("a truncated shard was accepted");
    let msg = format!("{err:#}");
    let head = format!("{}: truncated or corrupt after ", archive.display());
    assert!(msg.starts_with(&head), "{msg}");
    let n = members_in(&msg);
    assert_eq!(msg.contains(" members (last `"), n > 0, "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    assert!(!done_marker(dest, archive).exists());
    for (name, bytes) in files(dest) {
        assert_eq!(
            good.get(&name),
            Some(&bytes),
            "{name}: not a complete member"
        );
    }
    msg
}

/// The `N` of `after N members`.
fn members_in(msg: &str) -> usize {
    let rest = &msg[msg.find("after ").unwrap() + 6..];
    rest[..rest.find(' ').unwrap()].parse().unwrap()
}

#[test]
fn a_shard_cut_at_any_offset_is_reported_and_never_marked_done() {
    let t = tempfile::tempdir().unwrap();
    let shard = &shards()[0];
    let bytes = fs::read(shard).unwrap();
    let good = members(shard);
    let n = bytes.len();
    let mut offsets = vec![0, 1, 3, 4, 5, 9, 100, 513, 4096, 20_000];
    offsets.extend([n / 4, n / 2, 3 * n / 4]);
    // The end of the frame: last block, the content checksum.
    offsets.extend([n - 600, n - 100, n - 16, n - 9, n - 5, n - 4, n - 3, n - 1]);
    let mut seen_some = false;
    for cut in offsets {
        let archive = t.path().join(format!("cut{cut}/images_000.tar.zst"));
        fs::create_dir_all(archive.parent().unwrap()).unwrap();
        fs::write(&archive, &bytes[..cut]).unwrap();
        let dest = t.path().join(format!("cut{cut}/out"));
        let msg = assert_truncated(&archive, &dest, &good);
        seen_some |= members_in(&msg) > 0;
        // The same destination takes the complete shard afterwards.
        fs::write(&archive, &bytes).unwrap();
        let report = extract_shard(&archive, &dest).unwrap();
        assert_eq!((report.entries, report.skipped), (16, false));
        assert_eq!(files(&dest), good);
    }
    assert!(seen_some);
}

#[test]
fn a_frame_cut_after_the_last_member_is_still_reported() {
    // With a content checksum at the end of the frame, a cut in the last bytes leaves
    // every member and the end-of-archive block decodable: only reading the stream to
    // its end shows that the frame is incomplete.
    let t = tempfile::tempdir().unwrap();
    let good = members(&shards()[0]);
    let (tar, _) = tar_bytes(&good);
    let mut enc = zstd::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    std::io::Write::write_all(&mut enc, &tar).unwrap();
    let bytes = enc.finish().unwrap();
    for cut in 1..=4 {
        let archive = t.path().join(format!("c{cut}/s.tar.zst"));
        fs::create_dir_all(archive.parent().unwrap()).unwrap();
        fs::write(&archive, &bytes[..bytes.len() - cut]).unwrap();
        let dest = t.path().join(format!("c{cut}/out"));
        let msg = assert_truncated(&archive, &dest, &good);
        assert_eq!(members_in(&msg), good.len(), "{msg}");
        assert_eq!(files(&dest), good);
    }
}

/// A tar stream of `members` in order, and the offset where each header starts.
fn tar_bytes(members: &BTreeMap<String, Vec<u8>>) -> (Vec<u8>, Vec<usize>) {
    let mut b = tar::Builder::new(Vec::new());
    let mut starts = Vec::new();
    for (name, data) in members {
        starts.push(b.get_ref().len());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    starts.push(b.get_ref().len()); // end of the last member, before the end blocks
    (b.into_inner().unwrap(), starts)
}

#[test]
fn a_shard_cut_at_a_member_boundary_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let good = members(&shards()[1]);
    let names: Vec<_> = good.keys().cloned().collect();
    let (tar, starts) = tar_bytes(&good);
    // One zstd frame per member (as pzstd and seekable writers make): cutting between
    // frames leaves a valid zstd stream that stops at a member boundary.
    let mut frames = Vec::new();
    let mut frame_ends = Vec::new();
    for w in starts.windows(2) {
        frames.extend(zstd::encode_all(&tar[w[0]..w[1]], 1).unwrap());
        frame_ends.push(frames.len());
    }
    for k in [0, 1, 7, names.len() - 1, names.len()] {
        let expect_last = match k {
            0 => "members: ".to_string(),
            _ => format!("members (last `{}`): ", names[k - 1]),
        };
        // A plain tar, a single frame of the cut tar, and the multi-frame file cut.
        let cut_tar = &tar[..starts[k]];
        let variants = [
            ("s.tar", cut_tar.to_vec()),
            ("s.tar.zst", zstd::encode_all(cut_tar, 3).unwrap()),
            (
                "m.tar.zst",
                frames[..if k == 0 { 0 } else { frame_ends[k - 1] }].to_vec(),
            ),
        ];
        for (name, bytes) in variants {
            let archive = t.path().join(format!("b{k}/{name}"));
            fs::create_dir_all(archive.parent().unwrap()).unwrap();
            fs::write(&archive, bytes).unwrap();
            let msg = assert_truncated(&archive, &t.path().join(format!("b{k}/out-{name}")), &good);
            assert_eq!(members_in(&msg), k, "{msg}");
            assert!(msg.contains(&expect_last), "{msg}");
        }
    }
    // A plain tar cut inside a header or inside a member's data.
    for (i, cut) in [
        starts[3] + 100,
        starts[3] + 512 + 10,
        starts[16] - 1,
        511,
        513,
    ]
    .into_iter()
    .enumerate()
    {
        let archive = t.path().join(format!("mid{i}/s.tar"));
        fs::create_dir_all(archive.parent().unwrap()).unwrap();
        fs::write(&archive, &tar[..cut]).unwrap();
        assert_truncated(&archive, &t.path().join(format!("mid{i}/out")), &good);
    }
    // The complete multi-frame file is fine.
    let mut whole = frames.clone();
    whole.extend(zstd::encode_all(&tar[starts[names.len()]..], 1).unwrap());
    let archive = t.path().join("whole.tar.zst");
    fs::write(&archive, whole).unwrap();
    assert_eq!(
        extract_shard(&archive, &t.path().join("whole"))
            .unwrap()
            .entries,
        16
    );
    assert_eq!(files(&t.path().join("whole")), good);
}

/// A tar header for `name` written raw (the tar crate's own setters refuse `..` and
/// absolute paths, which is the point here).
fn raw_header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_old();
    let raw = &mut h.as_old_mut().name;
    raw[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

fn hostile_archive(path: &Path, members: &[(&str, tar::EntryType, &[u8], Option<&str>)]) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in members {
        let h = raw_header(name, *kind, data.len() as u64, *link);
        b.append(&h, *data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    fs::write(path, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
}

/// Every path under `root` (files, folders, links), relative.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            out.push(
                e.path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_members_write_nothing_outside_the_destination() {
    use tar::EntryType::{Fifo, Link, Regular, Symlink};
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = root.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let dest = root.join("a/b/dest");
    let abs = root.join("abs-evil");
    let abs = abs.to_str().unwrap();
    let passwd = fs::read("/etc/passwd").ok();
    let outside_s = outside.to_str().unwrap();

    // Links, devices and fifos are skipped and counted; a file "through" a skipped
    // symlink lands in a real folder inside dest.
    let links = root.join("links.tar.zst");
    hostile_archive(
        &links,
        &[
            ("ok.txt", Regular, b"fine", None),
            ("passwd", Symlink, b"", Some("/etc/passwd")),
            ("out", Symlink, b"", Some(outside_s)),
            ("hard", Link, b"", Some("/etc/passwd")),
            ("pipe", Fifo, b"", None),
            ("out/evil.txt", Regular, b"evil", None),
            ("passwd2", Link, b"", Some("../../../outside/x")),
        ],
    );
    let report = extract_shard(&links, &dest).unwrap();
    assert_eq!((report.entries, report.ignored), (2, 5));
    assert_eq!(
        tree(&dest),
        vec![
            ".mt-extract",
            ".mt-extract/links.tar.zst.done",
            "ok.txt",
            "out",
            "out/evil.txt"
        ]
    );
    assert!(fs::symlink_metadata(dest.join("out")).unwrap().is_dir());
    assert!(tree(&outside).is_empty());

    // `..`, absolute paths, and the state folder fail the whole shard, naming the member.
    let cases: [(&str, &str, &str); 4] = [
        ("dotdot.tar.zst", "../../../outside/evil", "`..` component"),
        ("abs.tar.zst", abs, "absolute path"),
        (
            "inner.tar.zst",
            "x/../../../../outside/evil2",
            "`..` component",
        ),
        (
            "state.tar.zst",
            ".mt-extract/forged.tar.zst.done",
            "reserved",
        ),
    ];
    for (file, name, why) in cases {
        let archive = root.join(file);
        hostile_archive(
            &archive,
            &[
                ("first.txt", Regular, b"1", None),
                ("link", Symlink, b"", Some("/etc/passwd")),
                ("hl", Link, b"", Some("/etc/passwd")),
                (name, Regular, b"evil", None),
                ("after.txt", Regular, b"2", None),
            ],
        );
        let msg = format!("{:#}", extract_shard(&archive, &dest).unwrap_err());
        assert!(
            msg.starts_with(&format!("{}: member `{name}`", archive.display())),
            "{msg}"
        );
        assert!(msg.contains(why), "{msg}");
        assert!(!done_marker(&dest, &archive).exists());
        assert!(!dest.join("after.txt").exists());
    }
    // Nothing appeared anywhere but in dest (and the archives we made).
    let mut everything = tree(&root);
    everything.retain(|p| !p.starts_with("a/b/dest/") && !p.ends_with(".tar.zst"));
    assert_eq!(everything, vec!["a", "a/b", "a/b/dest", "outside"]);
    assert!(!Path::new(abs).exists());
    assert_eq!(fs::read("/etc/passwd").ok(), passwd);
    assert!(!dest.join(".mt-extract/forged.tar.zst.done").exists());
}

#[test]
fn the_manifest_check_finds_exactly_what_is_missing_and_extra() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("images");
    for shard in shards() {
        extract_shard(&shard, &dest).unwrap();
    }
    let check = check_manifest(&[manifest()], &dest, "file_name").unwrap();
    assert_eq!(
        check,
        ManifestCheck {
            expected: 32,
            present: 32,
            nulls: 0,
            missing: vec![],
            extra: vec![]
        }
    );

    fs::remove_file(dest.join("nema-ct_00005.png")).unwrap();
    fs::create_dir_all(dest.join("stray/deep")).unwrap();
    fs::write(dest.join("stray/deep/not-in-manifest.jpg"), b"x").unwrap();
    let check = check_manifest(&[manifest()], &dest, "file_name").unwrap();
    assert_eq!((check.expected, check.present), (32, 31));
    assert_eq!(check.missing, vec!["nema-ct_00005.png".to_string()]);
    assert_eq!(
        check.extra,
        vec!["stray/deep/not-in-manifest.jpg".to_string()]
    );

    // A manifest listed twice expects every row twice.
    let twice = check_manifest(&[manifest(), manifest()], &dest, "file_name").unwrap();
    assert_eq!((twice.expected, twice.present), (64, 62));
    assert_eq!(twice.missing.len(), 2);

    let err = check_manifest(&[manifest()], &dest, "nope").unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("train-00000-of-00001.parquet: no column `nope`"),
        "{msg}"
    );
    let err = check_manifest(&[manifest()], &dest, "bbox").unwrap_err();
    assert!(format!("{err:#}").contains("expected a string"), "{err:#}");
}

#[test]
fn bare_manifest_names_match_members_several_folders_deep() {
    // The real MedTrinity-25M shards keep images several folders deep while the manifest
    // names them bare: repack the fixture that way.
    let t = tempfile::tempdir().unwrap();
    let mut deep = BTreeMap::new();
    for shard in shards() {
        for (name, bytes) in members(&shard) {
            let k = deep.len() % 3;
            deep.insert(format!("dataset_shard_0/part_{k}/img/{name}"), bytes);
        }
    }
    let (tar, _) = tar_bytes(&deep);
    let archive = t.path().join("dataset_shard_0.tar.zst");
    fs::write(&archive, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    let dest = t.path().join("out");
    assert_eq!(extract_shard(&archive, &dest).unwrap().entries, 32);
    assert_eq!(files(&dest), deep);
    let check = check_manifest(&[manifest()], &dest, "file_name").unwrap();
    assert_eq!((check.expected, check.present), (32, 32));
    assert!(
        check.missing.is_empty() && check.extra.is_empty(),
        "{check:?}"
    );
}

/// A hub cache (`HF_HUB_CACHE` layout) holding `archive` as the only file of the dataset
/// repository `org/shards` at `main`, so that `mt download` offline finds it complete.
fn offline_cache(cache: &Path, archive: &[u8]) {
    let repo = cache.join("datasets--org--shards");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let etag = "3f2c5b0a".repeat(8);
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), commit).unwrap();
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::write(repo.join("blobs").join(&etag), archive).unwrap();
    let snapshot = repo.join("snapshots").join(commit);
    fs::create_dir_all(&snapshot).unwrap();
    std::os::unix::fs::symlink(format!("../../blobs/{etag}"), snapshot.join("big.tar.zst"))
        .unwrap();
}

/// `mt download org/shards --extract-to DEST` on the offline cache: the real command
/// extracting the shard, as the child to kill.
fn extract_command(cache: &Path, dest: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mt"));
    cmd.args([
        "--no-run-dir",
        "-q",
        "download",
        "org/shards",
        "--repo-type",
    ])
    .args(["dataset", "--extract-to"])
    .arg(dest)
    .env("HF_HUB_CACHE", cache)
    .env("HF_HUB_OFFLINE", "1")
    .env("HF_HOME", cache.join("home"))
    .env_remove("RUST_LOG")
    .env_remove("HF_ENDPOINT")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    cmd
}

#[test]
fn a_kill_9_in_the_middle_is_finished_by_a_rerun() {
    let t = tempfile::tempdir().unwrap();
    // Many members, so the kill lands in the middle.
    let mut many = BTreeMap::new();
    for i in 0..6000u32 {
        let body: Vec<u8> = (0..2000u32)
            .map(|j| (i.wrapping_mul(31) ^ j) as u8)
            .collect();
        many.insert(format!("d{:02}/s/{i:05}.png", i % 40), body);
    }
    let (tar, _) = tar_bytes(&many);
    let cache = t.path().join("cache");
    offline_cache(&cache, &zstd::encode_all(&tar[..], 1).unwrap());
    let archive = cache.join(
        "datasets--org--shards/snapshots/0123456789abcdef0123456789abcdef01234567/big.tar.zst",
    );
    let mut landed = None;
    // Kill once some members are in place; if the child had finished by then, wait for
    // fewer members in a fresh folder (a bounded number of times), then fail.
    for (attempt, wait_for) in [50, 10, 1].into_iter().enumerate() {
        let dest = t.path().join(format!("out{attempt}"));
        let mut child = extract_command(&cache, &dest).spawn().unwrap();
        let limit = Duration::from_secs(60);
        let Err(status) = common::kill_9_when(&mut child, limit, || count_files(&dest) >= wait_for)
        else {
            landed = Some(dest);
            break;
        };
        assert!(
            status.success(),
            "the extraction failed on its own: {status}"
        );
        eprintln!("attempt {attempt}: the child finished before the kill; again, earlier");
    }
    let dest = landed.expect("every kill came after the extraction had finished");
    assert!(!done_marker(&dest, &archive).exists());
    // Whatever is under a member's name is complete (a temporary may be there too).
    let written = files(&dest);
    for (name, bytes) in &written {
        if let Some(want) = many.get(name) {
            assert_eq!(want, bytes, "{name}");
        } else {
            assert!(name.contains("/.mt-tmp-"), "{name}");
        }
    }
    // The rerun (the same command) finishes the shard.
    let rerun = extract_command(&cache, &dest).status().unwrap();
    assert!(rerun.success(), "{rerun}");
    assert!(done_marker(&dest, &archive).exists());
    assert_eq!(files(&dest), many, "stray or wrong files after the rerun");
    let report = extract_shard(&archive, &dest).unwrap();
    assert_eq!((report.entries, report.skipped), (6000, true));
}
