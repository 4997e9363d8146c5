//! `mt download` against the fake Hub on 127.0.0.1: cache layout, revisions, selection,
//! local dirs, faults (429, 5xx, drops, stalls, truncation, wrong bytes, ignored
//! ranges), gated repos, offline mode, `--verify`, kill -9 and restart, and interop
//! with huggingface_hub.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common;
use crate::hub_server::{FakeRepo, Fault, HubServer, ServerConfig};

const TOKEN: &str = "hf_secretTOKENvalue123";

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Env {
    dir: tempfile::TempDir,
    endpoint: String,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    fn new(server: &HubServer) -> Self {
        Self::new_in(server, &std::env::temp_dir())
    }

    /// An environment whose home and cache live in a fresh folder under `parent`.
    fn new_in(server: &HubServer, parent: &Path) -> Self {
        Self {
            dir: tempfile::tempdir_in(parent).unwrap(),
            endpoint: server.endpoint(),
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn command(&self, args: &[&str], extra: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mt"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("HF_ENDPOINT", &self.endpoint)
            .env("HF_HOME", self.dir.path().join("home"))
            .env("HF_HUB_CACHE", self.cache())
            .env("MT_HUB_BACKOFF_MS", "20")
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("RUST_LOG")
            .env_remove("MT_RUNS_DIR")
            .envs(extra.iter().copied());
        cmd
    }

    fn mt_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Out {
        let out = self.command(args, extra).output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn mt(&self, args: &[&str]) -> Out {
        self.mt_env(args, &[])
    }
}

fn ok(out: &Out) {
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
}

/// Every file under `root` (symlinks followed) as (relative path, bytes).
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Paths under `root` whose name contains `needle` (stray temp files, markers).
fn find(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().contains(needle) {
                out.push(p.clone());
            }
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out
}

fn model_files() -> Files {
    vec![
        (
            "config.json".into(),
            br#"{"model_type": "llava_llama"}"#.to_vec(),
            false,
        ),
        ("README.md".into(), b"# tiny\n".to_vec(), false),
        ("tokenizer/tokenizer.json".into(), noise(5000, 1), false),
        (
            "model-00001-of-00002.safetensors".into(),
            noise(300_000, 2),
            true,
        ),
        (
            "model-00002-of-00002.safetensors".into(),
            noise(200_000, 3),
            true,
        ),
        ("deep/a/b/c/weights.bin".into(), noise(50_000, 4), true),
    ]
}

/// A repository's files: (path, bytes, stored in LFS).
type Files = Vec<(String, Vec<u8>, bool)>;

/// `files` as [`tree`] lists them.
fn sorted(files: Files) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = files.into_iter().map(|(p, b, _)| (p, b)).collect();
    v.sort();
    v
}

/// The model files plus a `big`-byte LFS file whose bodies come slowly: each response
/// sends `chunk` bytes, pauses `millis` and closes (the client resumes with Range).
fn slow_server(big: usize, chunk: u64, millis: u64) -> (HubServer, String, Files) {
    let mut files = model_files();
    files.push(("big.safetensors".into(), noise(big, 11), true));
    let repo = FakeRepo::model("org/tiny").with_commit("main", files.clone());
    let sha = repo.head();
    let server = HubServer::start(vec![repo], ServerConfig::default());
    server.faults().set(
        Fault::StallMillis {
            after_bytes: chunk,
            millis,
        },
        u32::MAX,
        Some("/lfs/"),
    );
    (server, sha, files)
}

fn model_server(config: ServerConfig) -> (HubServer, String) {
    let repo = FakeRepo::model("org/tiny").with_commit("main", model_files());
    let sha = repo.head();
    (HubServer::start(vec![repo], config), sha)
}

fn small_pages() -> ServerConfig {
    ServerConfig {
        page_size: 2,
        ..ServerConfig::default()
    }
}

#[test]
fn downloads_into_the_hub_cache_layout_and_reuses_it() {
    let (server, sha) = model_server(small_pages());
    let env = Env::new(&server);
    let out = env.mt(&["--no-run-dir", "download", "org/tiny"]);
    ok(&out);
    let repo_dir = env.cache().join("models--org--tiny");
    let snapshot = repo_dir.join("snapshots").join(&sha);
    assert_eq!(out.stdout.trim(), snapshot.to_str().unwrap());
    assert_eq!(fs::read_to_string(repo_dir.join("refs/main")).unwrap(), sha);
    assert_eq!(tree(&snapshot), sorted(model_files()));
    // Blobs are named by etag: sha256 for LFS files, the git blob id otherwise; the
    // snapshot entries are relative links to them.
    for (path, _, _) in model_files() {
        let info = server.file_info("org/tiny", "main", &path).unwrap();
        let link = snapshot.join(&path);
        let target = fs::read_link(&link).unwrap();
        let depth = path.matches('/').count() + 2;
        assert_eq!(
            target,
            PathBuf::from(format!("{}blobs/{}", "../".repeat(depth), info.etag))
        );
        assert!(repo_dir.join("blobs").join(&info.etag).is_file());
    }
    assert!(find(&env.cache(), ".incomplete").is_empty());
    assert!(out.stderr.contains("downloaded 6"), "{}", out.stderr);
    // Pagination was used (6 files, pages of 2).
    assert!(
        server
            .requests()
            .iter()
            .filter(|r| r.path.contains("/tree/"))
            .count()
            >= 3
    );

    // A second run transfers nothing.
    server.reset_log();
    let again = env.mt(&["--no-run-dir", "download", "org/tiny"]);
    ok(&again);
    assert!(
        again.stderr.contains("already present 6"),
        "{}",
        again.stderr
    );
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.path.contains("/resolve"))
            .count(),
        0
    );
}

#[test]
fn revisions_globs_and_hf_urls() {
    let mut repo = FakeRepo::dataset("org/data");
    let main = repo.commit(
        "main",
        vec![
            ("25M_demo/train-0.parquet", noise(4000, 5), true),
            ("25M_demo/train-1.parquet", noise(4000, 6), true),
            ("25M_full/train-0.parquet", noise(3000, 7), true),
            (
                "25M_accessible/dataset_shard_1.tar.zst",
                noise(9000, 8),
                true,
            ),
            ("README.md", b"card".to_vec(), false),
        ],
    );
    let pr = repo.commit(
        "refs/pr/1",
        vec![
            ("25M_demo/train-0.parquet", noise(4000, 5), true),
            ("25M_demo/train-1.parquet", noise(4100, 9), true),
            ("README.md", b"card v2".to_vec(), false),
        ],
    );
    let server = HubServer::start(vec![repo], small_pages());
    let env = Env::new(&server);

    let out = env.mt(&[
        "--no-run-dir",
        "download",
        "org/data",
        "--repo-type",
        "dataset",
        "--config",
        "25M_full",
    ]);
    ok(&out);
    let snap = env
        .cache()
        .join("datasets--org--data/snapshots")
        .join(&main);
    let names: Vec<String> = tree(&snap).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        names,
        [
            "25M_accessible/dataset_shard_1.tar.zst",
            "25M_full/train-0.parquet"
        ]
    );
    // --include narrows a --config (it does not add to it).
    let dry = env.mt(&[
        "--no-run-dir",
        "--json",
        "download",
        "datasets/org/data",
        "--config",
        "25M_full",
        "--include",
        "*.parquet",
        "--dry-run",
    ]);
    ok(&dry);
    let doc: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    let paths: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["25M_full/train-0.parquet"]);

    // hf:// form with a URL-encoded PR revision and a folder; --exclude.
    let out = env.mt(&[
        "--no-run-dir",
        "download",
        "hf://datasets/org/data@refs%2Fpr%2F1/25M_demo",
        "--exclude",
        "*-0.parquet",
    ]);
    ok(&out);
    let pr_snap = env.cache().join("datasets--org--data/snapshots").join(&pr);
    let files = tree(&pr_snap);
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0],
        ("25M_demo/train-1.parquet".to_string(), noise(4100, 9))
    );
    // refs/pr/1 nests under refs/, as huggingface_hub writes it.
    assert_eq!(
        fs::read_to_string(env.cache().join("datasets--org--data/refs/refs/pr/1")).unwrap(),
        pr
    );

    // A file main and the PR share is linked from the cache, not downloaded again.
    ok(&env.mt(&[
        "--no-run-dir",
        "download",
        "datasets/org/data",
        "25M_demo/train-0.parquet",
    ]));
    server.reset_log();
    let out = env.mt(&[
        "--no-run-dir",
        "download",
        "datasets/org/data",
        "--revision",
        "refs/pr/1",
        "--include",
        "25M_demo/*",
    ]);
    ok(&out);
    assert!(
        out.stderr.contains("already present 1") && out.stderr.contains("linked from cache 1"),
        "{}",
        out.stderr
    );
    assert_eq!(
        server.requests().iter().filter(|r| r.host == "cdn").count(),
        0
    );

    // A commit id works as a revision and writes no ref.
    let out = env.mt(&[
        "--no-run-dir",
        "download",
        "datasets/org/data",
        "README.md",
        "--revision",
        &main,
    ]);
    ok(&out);
    assert!(
        !env.cache()
            .join("datasets--org--data/refs")
            .join(&main)
            .exists()
    );

    // Unknown revision / repository: clear errors, exit 1.
    let out = env.mt(&[
        "--no-run-dir",
        "download",
        "datasets/org/data",
        "--revision",
        "nope",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("revision `nope` not found"),
        "{}",
        out.stderr
    );
    let out = env.mt(&["--no-run-dir", "download", "org/missing"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("org/missing"), "{}", out.stderr);
}

#[test]
fn named_files_missing_ones_and_dry_run() {
    let (server, sha) = model_server(ServerConfig::default());
    let env = Env::new(&server);
    let out = env.mt(&[
        "--no-run-dir",
        "download",
        "org/tiny",
        "config.json",
        "deep/a/b/c/weights.bin",
        "nope.txt",
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("nope.txt: not in the repository"),
        "{}",
        out.stderr
    );
    let repo_dir = env.cache().join("models--org--tiny");
    assert!(
        repo_dir
            .join(".no_exist")
            .join(&sha)
            .join("nope.txt")
            .is_file()
    );
    assert_eq!(tree(&repo_dir.join("snapshots").join(&sha)).len(), 2);

    let dry = env.mt(&[
        "--no-run-dir",
        "--json",
        "download",
        "org/tiny",
        "--dry-run",
    ]);
    ok(&dry);
    let doc: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    let status: Vec<(String, String)> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(status.len(), 6);
    assert!(status.contains(&("config.json".into(), "present".into())));
    assert!(status.contains(&("README.md".into(), "missing".into())));
    assert_eq!(doc["bytes_present"], 29 + 50_000);
    // Nothing was downloaded by the dry run.
    assert_eq!(tree(&repo_dir.join("snapshots").join(&sha)).len(), 2);
}

#[test]
fn local_dir_writes_huggingface_hub_metadata() {
    let (server, sha) = model_server(ServerConfig::default());
    let env = Env::new(&server);
    let dest = env.dir.path().join("ckpt");
    let args = [
        "--no-run-dir",
        "download",
        "org/tiny",
        "--local-dir",
        dest.to_str().unwrap(),
    ];
    let out = env.mt(&args);
    ok(&out);
    assert_eq!(out.stdout.trim(), dest.to_str().unwrap());
    for (path, bytes, _) in model_files() {
        assert_eq!(fs::read(dest.join(&path)).unwrap(), bytes, "{path}");
        let meta = fs::read_to_string(
            dest.join(".cache/huggingface/download")
                .join(format!("{path}.metadata")),
        )
        .unwrap();
        let lines: Vec<&str> = meta.lines().collect();
        let info = server.file_info("org/tiny", "main", &path).unwrap();
        assert_eq!(lines[..2], [sha.as_str(), info.etag.as_str()]);
    }
    assert!(
        !env.cache().exists(),
        "the cache is not touched in --local-dir mode"
    );
    // A file copied in by hand with the right content is adopted without a download;
    // one with the wrong content is replaced.
    let meta_dir = dest.join(".cache/huggingface/download");
    fs::remove_file(meta_dir.join("README.md.metadata")).unwrap();
    fs::remove_file(meta_dir.join("config.json.metadata")).unwrap();
    fs::write(dest.join("config.json"), vec![b'x'; 29]).unwrap();
    server.reset_log();
    let out = env.mt(&args);
    ok(&out);
    assert!(
        out.stderr.contains("downloaded 1 ") && out.stderr.contains("already present 5"),
        "{}",
        out.stderr
    );
    assert_eq!(
        fs::read(dest.join("config.json")).unwrap(),
        model_files()[0].1
    );
}

#[test]
fn retries_rate_limits_server_errors_and_broken_bodies() {
    let (server, sha) = model_server(ServerConfig::default());
    let env = Env::new(&server);
    let faults = server.faults();
    faults.set(
        Fault::RateLimit {
            retry_after_secs: 1,
        },
        2,
        Some("/tree/"),
    );
    faults.set(Fault::ServerError { status: 503 }, 2, Some("config.json"));
    faults.set(Fault::DropAfter { bytes: 70_000 }, 3, Some("model-00001"));
    faults.set(Fault::Truncate { bytes: 1000 }, 2, Some("model-00002"));
    faults.set(
        Fault::StallMillis {
            after_bytes: 10_000,
            millis: 3000,
        },
        1,
        Some("weights.bin"),
    );
    faults.set(
        Fault::ServerError { status: 500 },
        1,
        Some("tokenizer.json"),
    );
    let started = std::time::Instant::now();
    let out = env.mt(&[
        "--no-run-dir",
        "download",
        "org/tiny",
        "--stall-timeout",
        "0.5",
    ]);
    ok(&out);
    assert!(started.elapsed() < Duration::from_secs(20));
    let snapshot = env.cache().join("models--org--tiny/snapshots").join(&sha);
    assert_eq!(tree(&snapshot), sorted(model_files()));
    let log = server.requests();
    assert_eq!(log.iter().filter(|r| r.status == 429).count(), 2);
    assert!(log.iter().filter(|r| r.status >= 500).count() >= 3);
    // Dropped and stalled bodies resumed with Range instead of starting over.
    let resumed: Vec<&str> = log
        .iter()
        .filter(|r| r.host == "cdn")
        .filter_map(|r| r.range.as_deref())
        .collect();
    assert!(
        resumed.iter().any(|r| r.starts_with("bytes=70000-")),
        "{resumed:?}"
    );
    assert!(
        resumed.iter().any(|r| r.starts_with("bytes=10000-")),
        "{resumed:?}"
    );
    let big_bytes: u64 = log
        .iter()
        .filter(|r| r.host == "cdn")
        .map(|r| r.body_bytes)
        .sum();
    assert!(
        big_bytes < 600_000,
        "{big_bytes} body bytes for 550 kB of LFS files"
    );
    assert!(
        out.stderr.contains("retry") || out.stderr.contains("resuming"),
        "{}",
        out.stderr
    );
    // The signed CDN URL never got the token, even though the API did.
    assert!(!server.cdn_saw_authorization());
}

#[test]
fn ignored_ranges_restart_and_bad_bytes_are_caught() {
    let (server, sha) = model_server(ServerConfig::default());
    let env = Env::new(&server);
    // A partial from an earlier run, and a server that ignores Range.
    let info = server
        .file_info("org/tiny", "main", "model-00001-of-00002.safetensors")
        .unwrap();
    let blobs = env.cache().join("models--org--tiny/blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(
        blobs.join(format!("{}.incomplete", info.etag)),
        &noise(300_000, 2)[..120_000],
    )
    .unwrap();
    server.faults().set(Fault::IgnoreRange, u32::MAX, None);
    // One corrupt body is fetched again; a file that is always corrupt fails.
    server
        .faults()
        .set(Fault::WrongBytes, 1, Some("tokenizer.json"));
    server
        .faults()
        .set(Fault::WrongBytes, u32::MAX, Some("model-00002"));
    let out = env.mt(&["download", "org/tiny", "--run-dir", "run"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("checksum mismatch"), "{}", out.stderr);
    assert!(
        out.stderr.contains("model-00002-of-00002.safetensors"),
        "{}",
        out.stderr
    );
    let snapshot = env.cache().join("models--org--tiny/snapshots").join(&sha);
    assert_eq!(
        fs::read(snapshot.join("model-00001-of-00002.safetensors")).unwrap(),
        noise(300_000, 2)
    );
    assert_eq!(
        fs::read(snapshot.join("tokenizer/tokenizer.json")).unwrap(),
        noise(5000, 1)
    );
    assert!(!snapshot.join("model-00002-of-00002.safetensors").exists());
    assert!(
        find(&env.cache(), ".incomplete").is_empty(),
        "the bad partial is deleted"
    );
    let failures: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(env.dir.path().join("run/failures.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(failures.as_array().unwrap().len(), 1);
    let report: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(env.dir.path().join("run/download.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (report["downloaded"].as_u64(), report["failed"].as_u64()),
        (Some(5), Some(1))
    );
    // Fixed server: the rerun fetches only the failed file.
    server.faults().clear();
    server.reset_log();
    let out = env.mt(&["--no-run-dir", "download", "org/tiny"]);
    ok(&out);
    assert!(out.stderr.contains("downloaded 1 "), "{}", out.stderr);
}

/// A Hub serving `org/gated`, which needs [`TOKEN`], and an environment pointed at it.
fn gated_repo() -> (HubServer, Env) {
    let repo = FakeRepo::model("org/gated")
        .with_commit("main", model_files())
        .with_token(TOKEN);
    let server = HubServer::start(vec![repo], ServerConfig::default());
    let env = Env::new(&server);
    (server, env)
}

#[test]
fn gated_repos_need_a_token_that_never_leaks() {
    let (server, env) = gated_repo();
    let out = env.mt(&[
        "--no-run-dir",
        "download",
        "org/gated",
        "--max-workers",
        "2",
    ]);
    assert_eq!(out.code, 3);
    assert!(
        out.stderr.contains("401") && out.stderr.contains("HF_TOKEN"),
        "{}",
        out.stderr
    );
    // The first refusal stops the run: the other files are not tried one by one.
    let tried = server.requests().iter().filter(|r| r.status == 401).count();
    assert!(tried <= 2, "{tried} refused requests");
    let out = env.mt(&[
        "download",
        "org/gated",
        "--token",
        TOKEN,
        "--run-dir",
        "r1",
        "-vv",
    ]);
    ok(&out);
    let out2 = env.mt_env(
        &["download", "org/gated", "--run-dir", "r2", "--dry-run"],
        &[("HF_TOKEN", TOKEN)],
    );
    ok(&out2);
    let home = env.dir.path().join("home");
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join("token"), TOKEN).unwrap();
    let out3 = env.mt(&["--no-run-dir", "download", "org/gated", "--verify"]);
    ok(&out3);
    let token_flag = format!("--token={TOKEN}");
    ok(&env.mt(&["download", "org/gated", &token_flag, "--run-dir", "r3"]));
    assert!(
        !fs::read_to_string(env.dir.path().join("r3/run.json"))
            .unwrap()
            .contains(TOKEN)
    );
    for o in [&out, &out2, &out3] {
        assert!(!o.stdout.contains(TOKEN) && !o.stderr.contains(TOKEN));
    }
    for (path, bytes) in tree(&env.dir.path().join("r1"))
        .into_iter()
        .chain(tree(&env.dir.path().join("r2")))
    {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(TOKEN),
            "token in {path}"
        );
    }
    assert!(!server.cdn_saw_authorization());
}

#[test]
fn offline_mode_and_verify() {
    let (server, sha) = model_server(ServerConfig::default());
    let env = Env::new(&server);
    ok(&env.mt(&[
        "--no-run-dir",
        "download",
        "org/tiny",
        "--exclude",
        "README.md",
    ]));
    let offline = [
        ("HF_HUB_OFFLINE", "1"),
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
    ];
    let out = env.mt_env(
        &["--no-run-dir", "download", "org/tiny", "config.json"],
        &offline,
    );
    ok(&out);
    let out = env.mt_env(
        &["--no-run-dir", "download", "org/tiny", "README.md"],
        &offline,
    );
    assert_eq!(out.code, 3, "{}", out.stderr);

    let out = env.mt(&["--no-run-dir", "download", "org/tiny", "--verify"]);
    assert_eq!(
        out.code, 3,
        "README.md was never downloaded: {}",
        out.stderr
    );
    let out = env.mt(&[
        "--no-run-dir",
        "download",
        "org/tiny",
        "--verify",
        "--exclude",
        "README.md",
    ]);
    ok(&out);
    assert!(out.stderr.contains("verified 5"), "{}", out.stderr);
    // Corrupt one blob (same size): --verify finds it and drops it; a download fixes it.
    let info = server
        .file_info("org/tiny", "main", "model-00002-of-00002.safetensors")
        .unwrap();
    let blob = env.cache().join("models--org--tiny/blobs").join(&info.etag);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[1234] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    let out = env.mt_env(
        &[
            "--no-run-dir",
            "download",
            "org/tiny",
            "--verify",
            "--exclude",
            "README.md",
        ],
        &offline,
    );
    assert_eq!(out.code, 3);
    assert!(out.stderr.contains("does not hash to"), "{}", out.stderr);
    ok(&env.mt(&["--no-run-dir", "download", "org/tiny"]));
    let snapshot = env.cache().join("models--org--tiny/snapshots").join(&sha);
    assert_eq!(
        fs::read(snapshot.join("model-00002-of-00002.safetensors")).unwrap(),
        noise(200_000, 3)
    );
}

#[test]
fn kill_9_at_random_points_then_finish() {
    use std::os::unix::process::ExitStatusExt;
    // Twelve runs, each killed after a random wait; every kill must land mid-download
    // (the status says SIGKILL). If a run finished first, start over on a fresh server
    // and cache with shorter waits, at most twice.
    let mut landed = None;
    for shorter in [1, 2, 4] {
        let (server, sha, files) = slow_server(6_000_000, 100_000, 100);
        let env = Env::new(&server);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut kills = 0;
        for _ in 0..12 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let args = ["--no-run-dir", "-q", "download", "org/tiny"];
            let mut child = env
                .command(&[&args[..], &["--max-workers", "3"]].concat(), &[])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis((30 + x % 400) / shorter));
            let _ = child.kill(); // SIGKILL; the status tells whether it landed
            let status = child.wait().unwrap();
            if status.signal() != Some(9) {
                assert!(status.success(), "the download failed on its own: {status}");
                break;
            }
            kills += 1;
        }
        if kills == 12 {
            landed = Some((server, env, sha, files));
            break;
        }
        eprintln!("a download finished after {kills} kills; again with shorter waits");
    }
    let (server, env, sha, files) = landed.expect("a download always finished before the kill");
    server.faults().clear();
    let out = env.mt(&["--no-run-dir", "download", "org/tiny"]);
    ok(&out);
    let snapshot = env.cache().join("models--org--tiny/snapshots").join(&sha);
    assert_eq!(tree(&snapshot), sorted(files));
    assert!(find(&env.cache(), ".incomplete").is_empty());
    assert!(find(&env.cache(), ".link").is_empty());
    // Resume kept the bytes of the killed runs: the server sent little more than the file.
    let sent: u64 = server
        .requests()
        .iter()
        .filter(|r| r.host == "cdn")
        .map(|r| r.body_bytes)
        .sum();
    let lfs_total = (6_000_000 + 300_000 + 200_000 + 50_000) as u64;
    assert!(
        sent < lfs_total + lfs_total / 10,
        "sent {sent} for {lfs_total}"
    );
    ok(&env.mt(&["--no-run-dir", "download", "org/tiny", "--verify"]));
}

/// Disk full, run by `fault/disk_full.sh` (root): it mounts a 1 MB tmpfs at
/// `MT_DISK_FULL_DIR`. The download fails with one clear error naming the file, the tmpfs
/// is grown, and a rerun finishes with every file verified and no temp file left.
#[test]
#[ignore = "needs a small tmpfs at MT_DISK_FULL_DIR; fault/disk_full.sh runs it"]
fn disk_full_then_resume() {
    let dir = PathBuf::from(std::env::var("MT_DISK_FULL_DIR").expect("MT_DISK_FULL_DIR"));
    let mut files = model_files();
    files.push(("big.safetensors".into(), noise(3_000_000, 11), true));
    let repo = FakeRepo::model("org/tiny").with_commit("main", files.clone());
    let sha = repo.head();
    let server = HubServer::start(vec![repo], ServerConfig::default());
    let env = Env::new_in(&server, &dir);
    let full = env.mt(&["--no-run-dir", "download", "org/tiny"]);
    let line = full
        .stderr
        .lines()
        .find(|l| l.contains("big.safetensors: ") && l.contains("No space left on device"))
        .unwrap_or_else(|| panic!("no ENOSPC error (exit {}):\n{}", full.code, full.stderr));
    println!("MT_DISK_FULL_ERROR: {line}");
    assert_eq!(full.code, 3, "{}", full.stderr);
    let grown = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(
        grown.success(),
        "cannot grow the tmpfs at {}",
        dir.display()
    );
    ok(&env.mt(&["--no-run-dir", "download", "org/tiny"]));
    let snapshot = env.cache().join("models--org--tiny/snapshots").join(&sha);
    assert_eq!(tree(&snapshot), sorted(files));
    assert!(find(&env.cache(), ".incomplete").is_empty());
    assert!(find(&env.cache(), ".tmp").is_empty());
    ok(&env.mt(&["--no-run-dir", "download", "org/tiny", "--verify"]));
}

/// Runs `py args` (xet, telemetry and progress bars off) and returns its stdout.
fn python(py: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(py)
        .args(args)
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

#[test]
fn huggingface_hub_finds_what_mt_downloaded() {
    // Under CI=true a missing Python or huggingface_hub fails the test.
    let Some(py) = common::test_python(&["huggingface_hub"]) else {
        return;
    };
    let (server, sha) = model_server(ServerConfig::default());
    let env = Env::new(&server);
    ok(&env.mt(&["--no-run-dir", "download", "org/tiny"]));
    let script = r#"
import sys
from huggingface_hub import hf_hub_download, snapshot_download
for f in ["config.json", "model-00001-of-00002.safetensors", "deep/a/b/c/weights.bin"]:
    print(hf_hub_download("org/tiny", f, local_files_only=True))
print(snapshot_download("org/tiny", local_files_only=True))
"#;
    let stdout = python(
        &py,
        &["-c", script],
        &[
            ("HF_HUB_CACHE", env.cache().to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    let snapshot = env.cache().join("models--org--tiny/snapshots").join(&sha);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], snapshot.join("config.json").to_str().unwrap());
    assert_eq!(lines[3], snapshot.to_str().unwrap());

    // huggingface_hub accepts mt's --local-dir metadata: it checks etags, fetches nothing.
    let dest = env.dir.path().join("local");
    ok(&env.mt(&[
        "--no-run-dir",
        "download",
        "org/tiny",
        "--local-dir",
        dest.to_str().unwrap(),
    ]));
    server.reset_log();
    let script = "import sys; from huggingface_hub import snapshot_download; snapshot_download('org/tiny', local_dir=sys.argv[1])";
    let home = env.dir.path().join("home");
    python(
        &py,
        &["-c", script, dest.to_str().unwrap()],
        &[
            ("HF_ENDPOINT", &server.endpoint()),
            ("HF_HOME", home.to_str().unwrap()),
        ],
    );
    let gets: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.body_bytes > 0 && !r.path.starts_with("/api/"))
        .map(|r| r.path)
        .collect();
    assert!(
        gets.is_empty(),
        "huggingface_hub downloaded again: {gets:?}"
    );

    // And the other way: what huggingface_hub fetched from the fake Hub, mt finds present.
    let env2 = Env::new(&server);
    let script = "from huggingface_hub import snapshot_download; snapshot_download('org/tiny')";
    python(
        &py,
        &["-c", script],
        &[
            ("HF_HUB_CACHE", env2.cache().to_str().unwrap()),
            ("HF_ENDPOINT", &server.endpoint()),
        ],
    );
    server.reset_log();
    let out = env2.mt(&["--no-run-dir", "download", "org/tiny"]);
    ok(&out);
    assert!(out.stderr.contains("already present 6"), "{}", out.stderr);
    ok(&env2.mt(&["--no-run-dir", "download", "org/tiny", "--verify"]));
}

#[test]
fn two_processes_share_one_cache_without_corrupting_it() {
    let (server, sha, files) = slow_server(3_000_000, 300_000, 50);
    let env = Env::new(&server);
    let spawn = || {
        env.command(&["--no-run-dir", "download", "org/tiny"], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let snapshot = env.cache().join("models--org--tiny/snapshots").join(&sha);
    assert_eq!(tree(&snapshot), sorted(files));
    // Each LFS file crossed the wire once: the second process waited for the lock and
    // found the file done.
    let sent: u64 = server
        .requests()
        .iter()
        .filter(|r| r.host == "cdn")
        .map(|r| r.body_bytes)
        .sum();
    assert_eq!(sent, 3_000_000 + 300_000 + 200_000 + 50_000);
    assert!(find(&env.cache(), ".incomplete").is_empty());
}

/// The bundled 25M_full sample (manifest + two image shards) as a dataset repo; the
/// second shard optionally cut short.
fn medtrinity_full(cut_shard: bool) -> FakeRepo {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/medtrinity-full");
    let mut files = Vec::new();
    for rel in [
        "25M_full/train-00000-of-00001.parquet",
        "25M_accessible/images_000.tar.zst",
        "25M_accessible/images_001.tar.zst",
    ] {
        let mut bytes = fs::read(root.join(rel)).unwrap();
        if cut_shard && rel.ends_with("001.tar.zst") {
            bytes.truncate(bytes.len() * 2 / 3);
        }
        files.push((rel.to_string(), bytes, true));
    }
    files.push(("README.md".into(), b"card".to_vec(), false));
    FakeRepo::dataset("UCSC-VLAA/MedTrinity-25M").with_commit("main", files)
}

#[test]
fn extract_unpacks_shards_and_checks_the_manifest() {
    let server = HubServer::start(vec![medtrinity_full(false)], ServerConfig::default());
    let env = Env::new(&server);
    let args = [
        "download",
        "UCSC-VLAA/MedTrinity-25M",
        "--repo-type",
        "dataset",
        "--config",
        "25M_full",
        "--extract",
        "--run-dir",
        "run",
    ];
    let out = env.mt(&args);
    ok(&out);
    let dest = env.dir.path().join("MedTrinity-25M-extracted");
    let report: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(env.dir.path().join("run/download.json")).unwrap(),
    )
    .unwrap();
    let x = &report["extract"];
    assert_eq!(
        (x["shards"].as_u64(), x["extracted"].as_u64()),
        (Some(2), Some(2))
    );
    let manifest = &x["manifest"];
    assert_eq!(manifest["expected"], 32, "{x}");
    assert_eq!(
        (manifest["missing"].as_u64(), manifest["extra"].as_u64()),
        (Some(0), Some(0)),
        "{x}"
    );
    let extracted = tree(&dest)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".mt-extract"))
        .count();
    assert_eq!(extracted as u64, x["entries"].as_u64().unwrap());
    // A rerun skips finished shards; a removed image and a stray file show up.
    let victim = tree(&dest)
        .into_iter()
        .find(|(p, _)| p.ends_with(".jpg") || p.ends_with(".png"))
        .unwrap()
        .0;
    fs::remove_file(dest.join(&victim)).unwrap();
    fs::write(dest.join("stray.jpg"), b"x").unwrap();
    let out = env.mt(&[&args[..7], &["--run-dir", "run2"]].concat());
    ok(&out);
    assert!(out.stderr.contains("2 done before"), "{}", out.stderr);
    assert!(out.stderr.contains("1 missing, 1 extra"), "{}", out.stderr);
    let missing = fs::read_to_string(env.dir.path().join("run2/missing_files.txt")).unwrap();
    assert!(victim.ends_with(missing.trim()), "{victim} vs {missing}");
    assert_eq!(
        fs::read_to_string(env.dir.path().join("run2/extra_files.txt")).unwrap(),
        "stray.jpg\n"
    );
}

#[test]
fn extract_reports_a_truncated_shard() {
    let server = HubServer::start(vec![medtrinity_full(true)], ServerConfig::default());
    let env = Env::new(&server);
    let dest = env.dir.path().join("images");
    let out = env.mt(&[
        "--no-run-dir",
        "download",
        "datasets/UCSC-VLAA/MedTrinity-25M",
        "--include",
        "25M_*",
        "--extract-to",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("images_001.tar.zst") && out.stderr.contains("truncated"),
        "{}",
        out.stderr
    );
    assert!(dest.join(".mt-extract/images_000.tar.zst.done").is_file());
    assert!(!dest.join(".mt-extract/images_001.tar.zst.done").exists());
}

#[test]
fn a_server_that_never_lets_a_file_finish_fails_it_in_bounded_time() {
    let (server, _) = model_server(ServerConfig::default());
    let env = Env::new(&server);
    // The stored object is shorter than listed (a truncated upload): the resume at its
    // end gets 416, starting over gets no further, and the retries run out instead of
    // looping forever.
    server.faults().set(
        Fault::ShortObject { bytes: 50_000 },
        u32::MAX,
        Some("model-00001"),
    );
    let started = std::time::Instant::now();
    let out = env.mt(&["--no-run-dir", "download", "org/tiny", "--retries", "3"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        out.stderr.contains("model-00001-of-00002.safetensors"),
        "{}",
        out.stderr
    );
    let tries = server
        .requests()
        .iter()
        .filter(|r| r.host == "cdn" && r.path.contains("X-Amz"))
        .count();
    assert!(tries <= 10, "{tries} requests for the broken file");
}

#[test]
fn local_dir_follows_the_branch_and_dry_runs_write_nothing() {
    let (server, first) = model_server(ServerConfig::default());
    let env = Env::new(&server);
    // A dry run on a fresh cache leaves no trace (no refs/ without snapshots/).
    ok(&env.mt(&["--no-run-dir", "download", "org/tiny", "--dry-run"]));
    assert!(!env.cache().exists());

    let dest = env.dir.path().join("ckpt");
    let local = [
        "--no-run-dir",
        "download",
        "org/tiny",
        "--local-dir",
        dest.to_str().unwrap(),
    ];
    ok(&env.mt(&local));
    // main moves on; only config.json changes.
    let mut files = model_files();
    files[0].1 = br#"{"model_type": "llava_llama", "v": 2}"#.to_vec();
    let repo = FakeRepo::model("org/tiny").with_commit("main", files.clone());
    let second = repo.head();
    assert_ne!(first, second);
    server.set_repo(repo);
    let out = env.mt(&local);
    ok(&out);
    assert!(
        out.stderr.contains("downloaded 1 ") && out.stderr.contains("already present 5"),
        "{}",
        out.stderr
    );
    for (path, bytes, _) in &files {
        assert_eq!(&fs::read(dest.join(path)).unwrap(), bytes);
        let meta = fs::read_to_string(
            dest.join(".cache/huggingface/download")
                .join(format!("{path}.metadata")),
        )
        .unwrap();
        assert_eq!(meta.lines().next(), Some(second.as_str()), "{path}");
    }
    // Offline, the local dir resolves to the new commit and verifies every file.
    let offline = [("HF_HUB_OFFLINE", "1")];
    let out = env.mt_env(&[&local[..], &["--verify"]].concat(), &offline);
    ok(&out);
    assert!(out.stderr.contains("verified 6"), "{}", out.stderr);
}

#[test]
fn replaying_a_run_given_a_token_takes_the_token_from_the_environment() {
    let (_server, env) = gated_repo();
    ok(&env.mt(&["download", "org/gated", "--token", TOKEN, "--run-dir", "r1"]));
    let dry = env.mt(&["--no-run-dir", "replay", "r1", "--dry-run"]);
    ok(&dry);
    assert!(
        !dry.stdout.contains("--token") && !dry.stdout.contains("***"),
        "{}",
        dry.stdout
    );
    // The redacted `***` is not replayed as the token: HF_TOKEN is used, into a fresh
    // cache so that every file is fetched again under the token.
    let fresh = env.dir.path().join("cache2");
    let fresh_cache = fresh.to_str().unwrap();
    let out = env.mt_env(
        &["replay", "r1"],
        &[("HF_TOKEN", TOKEN), ("HF_HUB_CACHE", fresh_cache)],
    );
    ok(&out);
    assert!(out.stderr.contains("was not kept"), "{}", out.stderr);
    assert_eq!(
        find(&fresh, "config.json").len(),
        1,
        "the replay fetched nothing"
    );
    // HF_TOKEN_PATH works the same; with no token at all the Hub refuses, by name.
    let token_file = env.dir.path().join("token.txt");
    fs::write(&token_file, TOKEN).unwrap();
    let third = env.dir.path().join("cache3");
    ok(&env.mt_env(
        &["--no-run-dir", "replay", "r1"],
        &[
            ("HF_TOKEN_PATH", token_file.to_str().unwrap()),
            ("HF_HUB_CACHE", third.to_str().unwrap()),
        ],
    ));
    let none = env.mt_env(
        &["--no-run-dir", "replay", "r1"],
        &[(
            "HF_HUB_CACHE",
            env.dir.path().join("cache4").to_str().unwrap(),
        )],
    );
    assert_eq!(none.code, 3, "{}", none.stderr);
    assert!(none.stderr.contains("HF_TOKEN"), "{}", none.stderr);
}

/// The files of the test checkpoint `testdata/models/<name>` as a Hub repository holds
/// them (weights in LFS), less its test references (`reference.safetensors`,
/// `meta.json`).
fn checkpoint_files(name: &str) -> Files {
    std::fs::read_dir(crate::common::testdata(&format!("models/{name}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("reference.safetensors") && !p.ends_with("meta.json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let lfs = name.ends_with(".safetensors") || name.ends_with(".bin");
            (name, std::fs::read(&p).unwrap(), lfs)
        })
        .collect()
}

/// `--model org/name` names a Hub model as transformers' `from_pretrained` does: mt
/// caption fetches its snapshot into the Hugging Face cache (safetensors, not the `.bin`
/// or Flax copies beside them), uses it from the cache offline, and says where it looked
/// for an id it cannot find.
#[test]
fn a_model_named_by_its_hub_id_is_fetched_into_the_cache_and_used_offline() {
    let mut files = checkpoint_files("tiny-llava-hf");
    files.push(("pytorch_model.bin".into(), noise(1000, 7), true));
    files.push(("flax_model.msgpack".into(), noise(1000, 8), true));
    let repo = FakeRepo::model("org/tiny-llava").with_commit("main", files);
    let sha = repo.head();
    let server = HubServer::start(vec![repo], ServerConfig::default());
    let env = Env::new(&server);
    let image = crate::common::testdata("images/cell.png");
    let caption = |model: &str, extra: &[(&str, &str)]| {
        let args = [
            "--no-run-dir",
            "caption",
            image.to_str().unwrap(),
            "--model",
            model,
            "--max-new-tokens",
            "3",
        ];
        env.mt_env(&args, extra)
    };
    let first = caption("org/tiny-llava", &[]);
    ok(&first);
    let snapshot = env
        .cache()
        .join(format!("models--org--tiny-llava/snapshots/{sha}"));
    assert!(snapshot.join("config.json").is_file());
    assert!(snapshot.join("model-00001-of-00002.safetensors").is_file());
    assert!(!snapshot.join("pytorch_model.bin").exists());
    assert!(!snapshot.join("flax_model.msgpack").exists());

    let offline = caption("org/tiny-llava", &[("HF_HUB_OFFLINE", "1")]);
    ok(&offline);
    assert_eq!(
        offline.stdout, first.stdout,
        "the same captions from the cache"
    );

    let missing = caption("org/nothing-here", &[("HF_HUB_OFFLINE", "1")]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("--model org/nothing-here")
            && missing.stderr.contains("HF_HUB_OFFLINE"),
        "{}",
        missing.stderr
    );
}

/// An original-layout checkpoint named by its Hub id whose `mm_vision_tower` is another
/// Hub id: both land in the cache (the tower as LLaVA's builder would load it), and the
/// captions equal those of the same checkpoint given as folders.
#[test]
fn the_vision_tower_a_hub_checkpoint_names_is_fetched_too() {
    let mut llava = checkpoint_files("tiny-llava");
    let (_, config, _) = llava
        .iter_mut()
        .find(|(n, _, _)| n == "config.json")
        .unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(config).unwrap();
    cfg["mm_vision_tower"] = "org/tiny-clip".into();
    *config = serde_json::to_vec(&cfg).unwrap();
    let clip = checkpoint_files("tiny-clip");
    let repos = vec![
        FakeRepo::model("org/tiny-llava-orig").with_commit("main", llava),
        FakeRepo::model("org/tiny-clip").with_commit("main", clip),
    ];
    let server = HubServer::start(repos, ServerConfig::default());
    let env = Env::new(&server);
    let image = crate::common::testdata("images/cell.png");
    let args = |model: &str| {
        vec![
            "--no-run-dir".to_string(),
            "caption".into(),
            image.display().to_string(),
            "--model".into(),
            model.into(),
            "--max-new-tokens".into(),
            "3".into(),
        ]
    };
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let hub = env.mt(&strs(&args("org/tiny-llava-orig")));
    ok(&hub);
    assert!(
        env.cache()
            .join("models--org--tiny-clip/refs/main")
            .is_file()
    );
    let local = crate::common::testdata("models/tiny-llava")
        .display()
        .to_string();
    let folders = env.mt(&strs(&args(&local)));
    ok(&folders);
    let captions = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["caption"].to_string())
            .collect()
    };
    assert_eq!(captions(&hub.stdout), captions(&folders.stdout));
}
