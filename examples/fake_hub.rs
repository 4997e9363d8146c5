//! Serves a directory as a Hugging Face Hub repo on 127.0.0.1, for benchmarks and
//! manual runs of `mt download`:
//!
//! ```text
//! cargo run --release --example fake_hub -- --dir DIR --repo org/name \
//!     [--repo-type model|dataset] [--lfs-threshold BYTES] [--port PORT] \
//!     [--page-size N] [--token TOKEN] [--no-git-redirect] [--fault SPEC ...] [--log]
//! ```
//!
//! Every file under DIR (recursively) is served from disk as branch `main`. Files of at
//! least `--lfs-threshold` bytes (default 10 MiB, as on the Hub) and every
//! `.safetensors .bin .parquet .zst .tar` file are LFS (redirected to the CDN
//! listener). Prints `endpoint http://127.0.0.1:PORT` once ready and serves until
//! killed. `--fault` specs: see `Fault::parse_spec`, e.g.
//! `drop_after:bytes=1000000,times=3,path=shard` or `rate_limit:secs=2,times=5`.
//! `--log` prints each request to stderr as it is answered; `--stats FILE` keeps the
//! number of body bytes actually sent (requests cut short count what went out) in FILE.

#[path = "../tests/it/hub_server/mod.rs"]
mod hub_server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hub_server::{FakeFile, FakeRepo, Fault, HubServer, Kind, ServerConfig};

const USAGE: &str = "usage: fake_hub --dir DIR --repo ORG/NAME [--repo-type model|dataset] \
[--lfs-threshold BYTES] [--port PORT] [--page-size N] [--token TOKEN] [--no-git-redirect] \
[--fault SPEC ...] [--log] [--stats FILE]";

const LFS_EXTENSIONS: &[&str] = &["safetensors", "bin", "parquet", "zst", "tar"];

struct Args {
    dir: PathBuf,
    repo: String,
    kind: Kind,
    lfs_threshold: u64,
    config: ServerConfig,
    token: Option<String>,
    faults: Vec<(Fault, u32, Option<String>)>,
    log: bool,
    /// Keeps the total of body bytes actually sent in this file (rewritten as it grows).
    stats: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut dir = None;
    let mut repo = None;
    let mut kind = Kind::Model;
    let mut lfs_threshold = 10 << 20;
    let mut config = ServerConfig::default();
    let mut token = None;
    let mut faults = Vec::new();
    let mut log = false;
    let mut stats = None;
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let number = |name: &str, v: String| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--repo" => repo = Some(value("--repo")?),
            "--repo-type" => {
                kind = match value("--repo-type")?.as_str() {
                    "model" => Kind::Model,
                    "dataset" => Kind::Dataset,
                    other => return Err(format!("--repo-type: {other:?} is not model or dataset")),
                }
            }
            "--lfs-threshold" => {
                lfs_threshold = number("--lfs-threshold", value("--lfs-threshold")?)?
            }
            "--port" => config.port = number("--port", value("--port")?)? as u16,
            "--page-size" => {
                config.page_size = number("--page-size", value("--page-size")?)? as usize
            }
            "--token" => token = Some(value("--token")?),
            "--no-git-redirect" => config.git_redirect = false,
            "--fault" => faults.push(Fault::parse_spec(&value("--fault")?)?),
            "--log" => log = true,
            "--stats" => stats = Some(PathBuf::from(value("--stats")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        dir: dir.ok_or(format!("--dir is required\n{USAGE}"))?,
        repo: repo.ok_or(format!("--repo is required\n{USAGE}"))?,
        kind,
        lfs_threshold,
        config,
        token,
        faults,
        log,
        stats,
    })
}

/// Every regular file under `dir` as (`/`-separated relative path, absolute path, size).
fn walk(dir: &Path) -> std::io::Result<Vec<(String, PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            let meta = std::fs::metadata(&p)?;
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = p.strip_prefix(dir).expect("under dir");
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push((rel.join("/"), p, meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fake_hub: {e}");
            std::process::exit(2);
        }
    };
    let files = match walk(&args.dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake_hub: cannot read {}: {e}", args.dir.display());
            std::process::exit(1);
        }
    };
    let t = Instant::now();
    let total: u64 = files.iter().map(|f| f.2).sum();
    let fake: Vec<FakeFile> = files
        .into_iter()
        .map(|(rel, path, size)| {
            let ext = rel
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default();
            let lfs = size >= args.lfs_threshold || LFS_EXTENSIONS.contains(&ext.as_str());
            FakeFile::disk(rel, path, lfs)
        })
        .collect();
    let n = fake.len();
    let n_lfs = fake.iter().filter(|f| f.lfs).count();
    let mut repo = FakeRepo::new(args.kind, args.repo.clone());
    let sha = repo.commit_files("main", fake);
    repo.token = args.token.clone();
    let server = HubServer::start(vec![repo], args.config.clone());
    for (f, times, path) in &args.faults {
        server.faults().set(f.clone(), *times, path.as_deref());
    }
    eprintln!(
        "fake_hub: {} {} at {sha}: {n} files ({n_lfs} LFS, {:.1} MB) hashed in {:.1} s; CDN {}",
        args.kind.plural(),
        args.repo,
        total as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        server.cdn_endpoint()
    );
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "endpoint {}", server.endpoint());
    let _ = stdout.flush();
    let mut shown = 0;
    loop {
        let fast = args.log || args.stats.is_some();
        std::thread::sleep(Duration::from_millis(if fast { 100 } else { 1000 }));
        if let Some(path) = &args.stats {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, format!("{}\n", server.bytes_sent())).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
        if args.log {
            let log = server.requests();
            for l in log.iter().skip(shown) {
                eprintln!(
                    "{} {} {} {}{} -> {} ({} bytes){}",
                    l.host,
                    l.method,
                    l.path,
                    if l.auth { "[auth] " } else { "" },
                    l.range
                        .as_deref()
                        .map(|r| format!("[{r}]"))
                        .unwrap_or_default(),
                    l.status,
                    l.body_bytes,
                    l.fault.map(|f| format!(" fault {f}")).unwrap_or_default()
                );
            }
            shown = log.len();
        }
    }
}
