use super::*;

#[test]
fn member_paths_stay_inside_the_destination() {
    let ok = |raw: &str| member_path(raw.as_bytes()).unwrap().unwrap();
    assert_eq!(ok("a/b/c.jpg"), PathBuf::from("a/b/c.jpg"));
    assert_eq!(ok("./a//b/./c.jpg"), PathBuf::from("a/b/c.jpg"));
    assert_eq!(ok("x.mt-extract/y"), PathBuf::from("x.mt-extract/y"));
    assert_eq!(ok("a/.mt-extract/y"), PathBuf::from("a/.mt-extract/y"));
    assert_eq!(member_path(b"./").unwrap(), None);
    assert_eq!(member_path(b".").unwrap(), None);
    for bad in [
        "/etc/passwd",
        "//x",
        "../evil",
        "a/../../evil",
        "a/..",
        ".mt-extract/x.done",
        "./.mt-extract/x.done",
        "",
    ] {
        assert!(member_path(bad.as_bytes()).is_err(), "{bad:?} accepted");
    }
}

fn marker(bytes: u64, mtime_ns: i128) -> Marker {
    Marker {
        version: MARKER_VERSION,
        archive: "s.tar.zst".into(),
        archive_bytes: bytes,
        archive_mtime_ns: mtime_ns,
        entries: 3,
        bytes: 30,
        ignored: 0,
    }
}

#[test]
fn markers_match_size_and_time_of_their_version_only() {
    let stamp = Stamp {
        bytes: 100,
        mtime_ns: 5,
    };
    assert!(stamp.matches(&marker(100, 5)));
    assert!(!stamp.matches(&marker(99, 5)));
    assert!(!stamp.matches(&marker(100, 6)));
    let mut old = marker(100, 5);
    old.version = 0;
    assert!(!stamp.matches(&old));
}

#[test]
fn markers_round_trip_and_unreadable_ones_mean_not_done() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("s.tar.zst.done");
    assert_eq!(read_marker(&path), None);
    write_durably(&path, &serde_json::to_vec(&marker(1, 2)).unwrap()).unwrap();
    assert_eq!(read_marker(&path), Some(marker(1, 2)));
    fs::write(&path, b"{\"version\": 1, \"archi").unwrap();
    assert_eq!(read_marker(&path), None);
    // Only the marker is left: no temporary file of write_durably.
    let names: Vec<_> = fs::read_dir(t.path()).unwrap().flatten().collect();
    assert_eq!(names.len(), 1);
}

fn tar_zst(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).unwrap();
    }
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

#[test]
fn a_rerun_after_a_kill_removes_stale_temporaries_and_redoes_the_shard() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("s.tar.zst");
    fs::write(
        &archive,
        tar_zst(&[("d/a.png", b"aaa"), ("d/e/b.png", b"bb")]),
    )
    .unwrap();
    let dest = t.path().join("out");
    // What a kill -9 in the middle leaves: a journal, a temp file, no marker.
    let tag = shard_tag("s.tar.zst");
    fs::create_dir_all(dest.join(STATE_DIR)).unwrap();
    fs::create_dir_all(dest.join("d/e")).unwrap();
    fs::create_dir_all(dest.join("old")).unwrap();
    fs::write(
        dest.join(STATE_DIR).join("s.tar.zst.dirs"),
        "\"d\"\n\"old\"\n\"../../x\"\n\"d/e",
    )
    .unwrap();
    let stale = dest.join("old").join(format!("{}7", temp_prefix(&tag)));
    fs::write(&stale, b"half").unwrap();
    let other_shard = dest
        .join("old")
        .join(format!("{}7", temp_prefix("00000000")));
    fs::write(&other_shard, b"someone else's").unwrap();
    fs::write(dest.join("d/a.png"), b"partial").unwrap();

    let report = extract_shard(&archive, &dest).unwrap();
    assert_eq!(
        (report.entries, report.bytes, report.skipped),
        (2, 5, false)
    );
    assert!(!stale.exists());
    assert!(
        other_shard.exists(),
        "another shard's temporary file was removed"
    );
    assert_eq!(fs::read(dest.join("d/a.png")).unwrap(), b"aaa");
    assert!(!dest.join(STATE_DIR).join("s.tar.zst.dirs").exists());
    let marker = read_marker(&dest.join(STATE_DIR).join("s.tar.zst.done")).unwrap();
    assert_eq!((marker.entries, marker.bytes), (2, 5));
    assert!(extract_shard(&archive, &dest).unwrap().skipped);

    // A changed archive (other size) is redone, and its marker replaced.
    fs::write(&archive, tar_zst(&[("d/a.png", b"a2")])).unwrap();
    let again = extract_shard(&archive, &dest).unwrap();
    assert_eq!((again.entries, again.bytes, again.skipped), (1, 2, false));
    assert_eq!(fs::read(dest.join("d/a.png")).unwrap(), b"a2");
}

#[test]
fn members_over_the_limit_fail_the_shard() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("big.tar.zst");
    fs::write(
        &archive,
        tar_zst(&[("ok.png", b"1234"), ("big.png", &[7; 100])]),
    )
    .unwrap();
    let limits = Limits {
        member_bytes: 64,
        ..Limits::default()
    };
    let err = extract_with(&archive, &t.path().join("out"), limits).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("big.tar.zst: member `big.png` is 100 bytes, over the 64-byte limit"),
        "{msg}"
    );
    assert!(
        !t.path()
            .join("out")
            .join(STATE_DIR)
            .join("big.tar.zst.done")
            .exists()
    );
}

#[test]
fn bombs_of_many_members_or_many_bytes_fail_the_shard() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("bomb.tar.zst");
    let names: Vec<String> = (0..20).map(|i| format!("m{i}.png")).collect();
    let members: Vec<(&str, &[u8])> = names
        .iter()
        .map(|n| (n.as_str(), &b"12345678"[..]))
        .collect();
    fs::write(&archive, tar_zst(&members)).unwrap();
    let few = Limits {
        members: 10,
        ..Limits::default()
    };
    let msg = format!(
        "{:#}",
        extract_with(&archive, &t.path().join("a"), few).unwrap_err()
    );
    assert!(msg.contains("bomb.tar.zst: more than 10 members"), "{msg}");
    let small = Limits {
        total_bytes: 100,
        ..Limits::default()
    };
    let msg = format!(
        "{:#}",
        extract_with(&archive, &t.path().join("b"), small).unwrap_err()
    );
    assert!(msg.contains("past 100 bytes unpacked"), "{msg}");
    assert!(
        !t.path()
            .join("b")
            .join(STATE_DIR)
            .join("bomb.tar.zst.done")
            .exists()
    );
    // Within the bounds it extracts.
    extract_with(&archive, &t.path().join("c"), Limits::default()).unwrap();
}

#[test]
fn a_plain_tar_without_its_end_block_is_truncated() {
    let t = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    b.append_data(&mut h, "x/a.png", &b"abc"[..]).unwrap();
    let full = b.into_inner().unwrap();
    let archive = t.path().join("s.tar");
    // Cut right after the first member (a member boundary).
    fs::write(&archive, &full[..1024]).unwrap();
    let err = extract_shard(&archive, &t.path().join("out")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("truncated or corrupt after 1 members (last `x/a.png`)"),
        "{msg}"
    );
    // A lone end block is a complete archive (GNU tar accepts it with a warning).
    fs::write(&archive, &full[..1536]).unwrap();
    let report = extract_shard(&archive, &t.path().join("out")).unwrap();
    assert_eq!(report.entries, 1);
}

#[test]
fn names_match_by_aligned_suffix() {
    let mut check = ManifestCheck::default();
    let mut g = NameGroup {
        base: b"x.jpg".to_vec(),
        names: vec![
            ("a/x.jpg".into(), [1, 0]),
            ("b/x.jpg".into(), [1, 0]),
            ("s1/a/x.jpg".into(), [0, 1]),
            ("s2/ca/x.jpg".into(), [0, 1]),
            ("x.jpg".into(), [2, 0]),
        ],
    };
    g.settle(&mut check);
    assert_eq!(check.present, 3); // a/x.jpg once, x.jpg twice
    assert_eq!(check.missing, vec!["b/x.jpg".to_string()]);
    // s2/ca/x.jpg is matched by the bare `x.jpg`.
    assert!(check.extra.is_empty());
    assert_eq!(strip_dot_slash("././a/b"), "a/b");
    assert_eq!(strip_dot_slash("a/./b"), "a/./b");
}
