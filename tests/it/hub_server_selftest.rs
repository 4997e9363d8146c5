//! Tests of the fake Hub itself, with raw HTTP over std TcpStream, so the download
//! tests can rely on it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::hub_server::{self, FakeFile, FakeRepo, Fault, HubServer, Kind, ServerConfig};

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The server closed the connection before the declared body was complete.
    short: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

impl Conn {
    /// `url_or_endpoint`: `http://host:port` (anything after the authority is ignored).
    fn open(url: &str) -> Conn {
        let host = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let addr = host.replace("localhost", "127.0.0.1");
        let s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
            host,
        }
    }

    fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.writer.write_all(req.as_bytes()).unwrap();
        self.read_response(method == "HEAD")
    }

    fn read_response(&mut self, head: bool) -> Resp {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .expect("status line")
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').unwrap();
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = Vec::new();
        let mut short = false;
        if !head {
            self.reader
                .by_ref()
                .take(len as u64)
                .read_to_end(&mut body)
                .ok();
            short = body.len() < len;
        }
        Resp {
            status,
            headers,
            body,
            short,
        }
    }
}

fn get(url: &str, target: &str) -> Resp {
    Conn::open(url).send("GET", target, &[])
}

/// The path and query of an absolute URL.
fn target_of(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    rest[rest.find('/').unwrap()..].to_string()
}

fn sha256(b: &[u8]) -> String {
    hub_server::hex(&Sha256::digest(b))
}

fn big(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn model() -> FakeRepo {
    let mut r = FakeRepo::model("org/tiny");
    r.commit(
        "main",
        [
            ("hello.txt", b"hello".to_vec(), false),
            ("config.json", b"{\"a\": 1}".to_vec(), false),
            ("model.safetensors", big(100_000), true),
            ("dir/with space.txt", b"spaced".to_vec(), false),
        ],
    );
    let pr = r.commit("refs/pr/1", [("hello.txt", b"hello pr".to_vec(), false)]);
    r.set_ref("v1.0", &pr);
    r.set_ref("refs/convert/parquet", "main");
    r
}

#[test]
fn repo_info_revisions_and_errors() {
    let repo = model();
    let head = repo.head();
    let pr = repo.sha_of("refs/pr/1").unwrap();
    let server = HubServer::start(vec![repo], ServerConfig::default());
    let mut c = Conn::open(&server.endpoint());

    let r = c.send("GET", "/api/models/org/tiny", &[]);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["id"], "org/tiny");
    assert_eq!(v["sha"], head.as_str());
    assert_eq!(v["gated"], false);
    let mut names: Vec<&str> = v["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "dir/with space.txt",
            "hello.txt",
            "model.safetensors"
        ]
    );
    assert!(v["siblings"][0].get("size").is_none());

    let v = c
        .send("GET", "/api/models/org/tiny/revision/main?blobs=true", &[])
        .json();
    let sib = |name: &str| {
        v["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["rfilename"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        sib("hello.txt")["blobId"],
        "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"
    );
    assert_eq!(sib("hello.txt")["size"], 5);
    let lfs = sib("model.safetensors");
    assert_eq!(lfs["size"], 100_000);
    assert_eq!(lfs["lfs"]["sha256"], sha256(&big(100_000)).as_str());
    assert_eq!(lfs["lfs"]["size"], 100_000);

    // Encoded ref names, tags and shas.
    for rev in ["refs%2Fpr%2F1", "v1.0", "refs%2Ftags%2Fv1.0", pr.as_str()] {
        let v = c
            .send("GET", &format!("/api/models/org/tiny/revision/{rev}"), &[])
            .json();
        assert_eq!(v["sha"], pr.as_str(), "{rev}");
    }
    let v = c
        .send(
            "GET",
            "/api/models/org/tiny/revision/refs%2Fconvert%2Fparquet",
            &[],
        )
        .json();
    assert_eq!(v["sha"], head.as_str());

    let r = c.send("GET", "/api/models/org/tiny/revision/nope", &[]);
    assert_eq!(
        (r.status, r.header("X-Error-Code")),
        (404, Some("RevisionNotFound"))
    );
    assert!(r.json()["error"].is_string());
    let r = c.send("GET", "/api/models/org/missing", &[]);
    assert_eq!(
        (r.status, r.header("X-Error-Code")),
        (401, Some("RepoNotFound"))
    );
    let r = c.send(
        "GET",
        "/api/models/org/missing",
        &[("Authorization", "Bearer x")],
    );
    assert_eq!(
        (r.status, r.header("X-Error-Code")),
        (404, Some("RepoNotFound"))
    );
    // A model is not a dataset.
    let r = c.send("GET", "/api/datasets/org/tiny", &[]);
    assert_eq!(r.status, 401);

    let v = c.send("GET", "/api/models/org/tiny/refs", &[]).json();
    assert_eq!(v["branches"][0]["name"], "main");
    assert_eq!(v["branches"][0]["ref"], "refs/heads/main");
    assert_eq!(v["branches"][0]["targetCommit"], head.as_str());
    assert_eq!(v["tags"][0]["ref"], "refs/tags/v1.0");
    assert_eq!(v["converts"][0]["ref"], "refs/convert/parquet");
    assert!(v.get("pullRequests").is_none());
    let v = c
        .send("GET", "/api/models/org/tiny/refs?include_prs=1", &[])
        .json();
    assert_eq!(v["pullRequests"][0]["ref"], "refs/pr/1");

    // Absolute-form targets work too; all of it went over one connection.
    let r = c.send(
        "GET",
        &format!("{}/api/models/org/tiny", server.endpoint()),
        &[],
    );
    assert_eq!(r.status, 200);
    assert!(server.requests().iter().all(|l| l.host == "api"));
}

#[test]
fn tree_pagination_walks_every_entry_once() {
    let mut repo = FakeRepo::dataset("org/data");
    let files: Vec<(String, Vec<u8>, bool)> = (0..7)
        .map(|i| (format!("d{}/sub/f{i}.txt", i % 2), vec![b'x'; i], false))
        .chain([
            ("top.parquet".to_string(), big(1000), true),
            ("a b.txt".to_string(), vec![1], false),
        ])
        .collect();
    repo.commit("main", files.clone());
    let server = HubServer::start(
        vec![repo],
        ServerConfig {
            page_size: 2,
            ..Default::default()
        },
    );
    let mut c = Conn::open(&server.endpoint());
    let mut target = "/api/datasets/org/data/tree/main?recursive=true&expand=false".to_string();
    let (mut seen, mut pages) = (Vec::new(), 0);
    loop {
        let r = c.send("GET", &target, &[]);
        assert_eq!(r.status, 200);
        pages += 1;
        let v = r.json();
        assert!(v.as_array().unwrap().len() <= 2);
        for e in v.as_array().unwrap() {
            seen.push((
                e["type"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
            ));
            if e["path"] == "top.parquet" {
                assert_eq!(e["size"], 1000);
                assert_eq!(e["lfs"]["oid"], sha256(&big(1000)).as_str());
                assert_eq!(e["oid"].as_str().unwrap().len(), 40);
            }
        }
        let Some(link) = r.header("Link") else { break };
        let url = link.strip_prefix('<').unwrap().split('>').next().unwrap();
        assert!(url.starts_with(&server.endpoint()), "{link}");
        assert!(link.ends_with("; rel=\"next\""));
        assert!(url.contains("recursive=true") && url.contains("cursor="));
        target = target_of(url);
    }
    let mut file_paths: Vec<&str> = seen
        .iter()
        .filter(|(t, _)| t == "file")
        .map(|(_, p)| p.as_str())
        .collect();
    file_paths.sort();
    let mut want: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    want.sort();
    assert_eq!(file_paths, want, "every file exactly once");
    let dirs: Vec<&str> = seen
        .iter()
        .filter(|(t, _)| t == "directory")
        .map(|(_, p)| p.as_str())
        .collect();
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    assert_eq!(pages, seen.len().div_ceil(2));

    // One level, and under a path.
    let v = c
        .send("GET", "/api/datasets/org/data/tree/main?page=x", &[])
        .json();
    let top: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(top, ["a b.txt", "d0"], "first page, non-recursive");
    let r = c.send(
        "GET",
        "/api/datasets/org/data/tree/main/d1/sub?recursive=false",
        &[],
    );
    let v = r.json();
    assert_eq!(v[0]["path"], "d1/sub/f1.txt");
    assert!(r.header("Link").is_some());
    let r = c.send("GET", "/api/datasets/org/data/tree/main/nope", &[]);
    assert_eq!(
        (r.status, r.header("X-Error-Code")),
        (404, Some("EntryNotFound"))
    );
    let r = c.send("GET", "/api/datasets/org/data/tree/nope", &[]);
    assert_eq!(
        (r.status, r.header("X-Error-Code")),
        (404, Some("RevisionNotFound"))
    );
}

#[test]
fn lfs_resolve_redirects_to_cdn_which_serves_ranges() {
    let server = HubServer::start(vec![model()], ServerConfig::default());
    let data = big(100_000);
    let mut c = Conn::open(&server.endpoint());
    let r = c.send(
        "HEAD",
        "/org/tiny/resolve/main/model.safetensors",
        &[
            ("Authorization", "Bearer hf_x"),
            ("Accept-Encoding", "identity"),
        ],
    );
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("X-Linked-Etag").unwrap(),
        format!("\"{}\"", sha256(&data))
    );
    assert_eq!(r.header("X-Linked-Size"), Some("100000"));
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert_eq!(
        r.header("X-Repo-Commit").unwrap(),
        server.sha_of("org/tiny", "main").unwrap()
    );
    let info = server
        .file_info("org/tiny", "main", "model.safetensors")
        .unwrap();
    assert_eq!(r.header("ETag").unwrap(), format!("\"{}\"", info.oid));
    let loc = r.header("Location").unwrap().to_string();
    assert!(
        loc.starts_with(&format!(
            "http://localhost:{}/lfs/{}?",
            server.cdn_port(),
            sha256(&data)
        )),
        "{loc}"
    );
    assert!(loc.contains("X-Amz-Signature="));

    let mut cdn = Conn::open(&loc);
    let r = cdn.send("GET", &target_of(&loc), &[("Range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 10-19/100000"));
    assert_eq!(r.body, &data[10..20]);
    assert_eq!(r.header("ETag").unwrap(), format!("\"{}\"", sha256(&data)));
    let r = cdn.send("GET", &target_of(&loc), &[("Range", "bytes=99990-")]);
    assert_eq!((r.status, &r.body[..]), (206, &data[99990..]));
    let r = cdn.send("GET", &target_of(&loc), &[("Range", "bytes=100000-")]);
    assert_eq!(r.status, 416);
    let r = cdn.send("GET", &target_of(&loc), &[]);
    assert_eq!((r.status, r.body == data), (200, true));
    let r = cdn.send("HEAD", &target_of(&loc), &[]);
    assert_eq!(
        (r.status, r.header("Content-Length")),
        (200, Some("100000"))
    );
    assert!(!server.cdn_saw_authorization());
    // A client that forwards its token to the CDN is caught.
    let r = cdn.send("GET", &target_of(&loc), &[("Authorization", "Bearer hf_x")]);
    assert_eq!(r.status, 400);
    assert!(server.cdn_saw_authorization());

    let cdn_log: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|l| l.host == "cdn")
        .collect();
    assert_eq!(cdn_log.len(), 6);
    assert_eq!(cdn_log[0].range.as_deref(), Some("bytes=10-19"));
    assert_eq!(cdn_log[0].body_bytes, 10);
    assert_eq!(server.bytes_sent(), 10 + 10 + 100_000 + r.body.len() as u64);
}

#[test]
fn git_resolve_redirects_to_resolve_cache_with_git_etag() {
    let server = HubServer::start(vec![model()], ServerConfig::default());
    let head = server.sha_of("org/tiny", "main").unwrap();
    let mut c = Conn::open(&server.endpoint());
    let r = c.send("HEAD", "/org/tiny/resolve/main/hello.txt", &[]);
    assert_eq!(r.status, 307);
    assert_eq!(r.header("X-Repo-Commit"), Some(head.as_str()));
    let loc = r.header("Location").unwrap().to_string();
    assert_eq!(
        loc,
        format!("/api/resolve-cache/models/org/tiny/{head}/hello.txt")
    );
    let r = c.send("GET", &loc, &[]);
    assert_eq!(r.status, 200);
    // `printf hello | git hash-object --stdin`
    assert_eq!(
        r.header("ETag"),
        Some("\"b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0\"")
    );
    assert_eq!(r.header("X-Repo-Commit"), Some(head.as_str()));
    assert_eq!(r.body, b"hello");
    let r = c.send("GET", &loc, &[("Range", "bytes=1-2")]);
    assert_eq!((r.status, &r.body[..]), (206, &b"el"[..]));

    // Spaces in paths, an encoded revision.
    let r = c.send("GET", "/org/tiny/resolve/refs%2Fpr%2F1/hello.txt", &[]);
    let pr = server.sha_of("org/tiny", "refs/pr/1").unwrap();
    assert_eq!(r.header("X-Repo-Commit"), Some(pr.as_str()));
    let r = c.send("GET", r.header("Location").unwrap(), &[]);
    assert_eq!(r.body, b"hello pr");
    let r = c.send("GET", "/org/tiny/resolve/main/dir/with%20space.txt", &[]);
    assert_eq!(r.status, 307);
    assert!(
        r.header("Location")
            .unwrap()
            .ends_with("/dir/with%20space.txt")
    );
    let r = c.send("GET", r.header("Location").unwrap(), &[]);
    assert_eq!(r.body, b"spaced");

    // Missing file and revision.
    let r = c.send("HEAD", "/org/tiny/resolve/main/nope.txt", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("X-Error-Code"), Some("EntryNotFound"));
    assert_eq!(r.header("X-Repo-Commit"), Some(head.as_str()));
    let r = c.send("GET", "/org/tiny/resolve/nope/hello.txt", &[]);
    assert_eq!(
        (r.status, r.header("X-Error-Code")),
        (404, Some("RevisionNotFound"))
    );

    // Without the redirect step.
    let direct = HubServer::start(
        vec![model()],
        ServerConfig {
            git_redirect: false,
            ..Default::default()
        },
    );
    let r = get(&direct.endpoint(), "/org/tiny/resolve/main/hello.txt");
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
    assert_eq!(
        r.header("ETag"),
        Some("\"b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0\"")
    );
}

#[test]
fn gated_dataset_needs_its_token_for_files() {
    let repo = FakeRepo::new(Kind::Dataset, "org/gated")
        .with_commit(
            "main",
            [
                ("data/x.parquet", big(300), true),
                ("README.md", b"# hi".to_vec(), false),
            ],
        )
        .with_token("hf_good");
    let server = HubServer::start(vec![repo], ServerConfig::default());
    let ep = server.endpoint();
    let v = get(&ep, "/api/datasets/org/gated").json();
    assert_eq!(v["gated"], "manual");
    let mut c = Conn::open(&ep);
    for auth in [None, Some("Bearer hf_bad")] {
        let h: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = c.send("HEAD", "/datasets/org/gated/resolve/main/README.md", &h);
        assert_eq!(
            (r.status, r.header("X-Error-Code")),
            (401, Some("GatedRepo")),
            "{auth:?}"
        );
        let r = c.send("GET", "/datasets/org/gated/resolve/main/data/x.parquet", &h);
        assert_eq!(r.status, 401);
        assert!(r.json()["error"].as_str().unwrap().contains("restricted"));
    }
    let ok = [("Authorization", "Bearer hf_good")];
    assert_eq!(
        c.send("HEAD", "/datasets/org/gated/resolve/main/README.md", &ok)
            .status,
        307
    );
    assert_eq!(
        c.send(
            "HEAD",
            "/datasets/org/gated/resolve/main/data/x.parquet",
            &ok
        )
        .status,
        302
    );
    let r = c.send("GET", "/datasets/org/gated/resolve/main/README.md", &ok);
    let loc = r.header("Location").unwrap().to_string();
    assert!(loc.starts_with("/api/resolve-cache/datasets/org/gated/"));
    assert_eq!(c.send("GET", &loc, &[]).status, 401);
    assert_eq!(c.send("GET", &loc, &ok).body, b"# hi");
}

#[test]
fn rate_limit_fires_its_count_then_stops() {
    let server = HubServer::start(vec![model()], ServerConfig::default());
    server.faults().set(
        Fault::RateLimit {
            retry_after_secs: 7,
        },
        2,
        Some("config.json"),
    );
    let mut c = Conn::open(&server.endpoint());
    let path = "/org/tiny/resolve/main/config.json";
    let other = c.send("HEAD", "/org/tiny/resolve/main/hello.txt", &[]);
    assert_eq!(other.status, 307);
    for _ in 0..2 {
        let r = c.send("HEAD", path, &[]);
        assert_eq!(r.status, 429);
        assert_eq!(r.header("RateLimit"), Some("\"resolvers\";r=0;t=7"));
        assert_eq!(
            r.header("RateLimit-Policy"),
            Some("\"fixed window\";\"resolvers\";q=3000;w=300")
        );
        assert_eq!(r.header("Retry-After"), Some("7"));
    }
    assert_eq!(c.send("HEAD", path, &[]).status, 307);
    assert_eq!(server.faults().fired(), 2);
    assert_eq!(server.faults().rules()[0].remaining, 0);
    let log = server.requests();
    assert_eq!(
        log.iter().filter(|l| l.fault == Some("rate_limit")).count(),
        2
    );

    server.faults().clear();
    server
        .faults()
        .set(Fault::ServerError { status: 503 }, 1, None);
    let r = c.send("GET", "/api/models/org/tiny", &[]);
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].is_string());
    assert_eq!(c.send("GET", "/api/models/org/tiny", &[]).status, 200);
}

#[test]
fn body_faults_shape_file_bodies() {
    let server = HubServer::start(vec![model()], ServerConfig::default());
    let data = big(100_000);
    let loc = Conn::open(&server.endpoint())
        .send("HEAD", "/org/tiny/resolve/main/model.safetensors", &[])
        .header("Location")
        .unwrap()
        .to_string();
    let t = target_of(&loc);
    let f = server.faults();

    f.set(
        Fault::DropAfter { bytes: 1000 },
        1,
        Some("model.safetensors"),
    );
    let r = Conn::open(&loc).send("GET", &t, &[]);
    assert_eq!((r.status, r.body.len(), r.short), (200, 1000, true));
    assert_eq!(r.body, &data[..1000]);
    // The resumed request is served whole.
    let r = Conn::open(&loc).send("GET", &t, &[("Range", "bytes=1000-")]);
    assert_eq!((r.status, &r.body[..]), (206, &data[1000..]));

    f.set(Fault::Truncate { bytes: 500 }, 1, None);
    let r = Conn::open(&loc).send("GET", &t, &[]);
    assert_eq!(
        (r.status, r.header("Content-Length"), r.short),
        (200, Some("500"), false)
    );
    assert_eq!(r.body, &data[..500]);

    f.set(Fault::WrongBytes, 1, None);
    let r = Conn::open(&loc).send("GET", &t, &[]);
    assert_eq!(r.body.len(), data.len());
    let diff: Vec<usize> = (0..data.len()).filter(|&i| r.body[i] != data[i]).collect();
    assert_eq!(diff, [50_000]);

    f.set(Fault::IgnoreRange, 1, None);
    let r = Conn::open(&loc).send("GET", &t, &[("Range", "bytes=10-")]);
    assert_eq!((r.status, r.body == data), (200, true));

    f.set(
        Fault::StallMillis {
            after_bytes: 10,
            millis: 50,
        },
        1,
        None,
    );
    let r = Conn::open(&loc).send("GET", &t, &[]);
    assert_eq!((r.body.len(), r.short), (10, true));

    let faulted: Vec<_> = server
        .requests()
        .into_iter()
        .filter_map(|l| l.fault)
        .collect();
    assert_eq!(
        faulted,
        [
            "drop_after",
            "truncate",
            "wrong_bytes",
            "ignore_range",
            "stall"
        ]
    );
    assert!(f.rules().iter().all(|r| r.remaining == 0));
}

#[test]
fn survives_garbage_and_early_close() {
    let server = HubServer::start(vec![model()], ServerConfig::default());
    let ep = server.endpoint();
    let mut s = TcpStream::connect(ep.trim_start_matches("http://")).unwrap();
    s.write_all(b"\x00\xffgarbage\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).ok();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // A client that hangs up mid-body.
    let mut s = TcpStream::connect(ep.trim_start_matches("http://")).unwrap();
    s.write_all(b"GET /api/models/org/tiny HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    drop(s);
    let cdn = server.cdn_endpoint();
    let loc = get(&ep, "/org/tiny/resolve/main/model.safetensors")
        .header("Location")
        .unwrap()
        .to_string();
    let mut s = TcpStream::connect(
        cdn.trim_start_matches("http://")
            .replace("localhost", "127.0.0.1"),
    )
    .unwrap();
    s.write_all(format!("GET {} HTTP/1.1\r\n\r\n", target_of(&loc)).as_bytes())
        .unwrap();
    let mut first = [0u8; 16];
    s.read_exact(&mut first).unwrap();
    drop(s);
    // Still serving.
    assert_eq!(get(&ep, "/api/models/org/tiny").status, 200);
    assert_eq!(get(&ep, "/nothing/here").status, 404);
    let r = Conn::open(&ep).send("GET", "/api/models/org/tiny", &[("Connection", "close")]);
    assert_eq!(r.header("Connection"), Some("close"));
}

#[test]
fn disk_files_stream_with_ranges_and_faults() {
    let dir = std::env::temp_dir().join(format!("fake-hub-selftest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = big((3 << 20) + 123);
    let (blob, notes) = (dir.join("blob.bin"), dir.join("notes.txt"));
    std::fs::write(&blob, &data).unwrap();
    std::fs::write(&notes, b"hello").unwrap();
    let mut repo = FakeRepo::model("org/disk");
    repo.commit_files(
        "main",
        vec![
            FakeFile::disk("weights/blob.bin", &blob, true),
            FakeFile::disk("notes.txt", &notes, false),
        ],
    );
    let server = HubServer::start(
        vec![repo],
        ServerConfig {
            git_redirect: false,
            ..Default::default()
        },
    );
    let ep = server.endpoint();
    let r = get(&ep, "/org/disk/resolve/main/notes.txt");
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
    assert_eq!(
        r.header("ETag"),
        Some("\"b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0\"")
    );

    let r = Conn::open(&ep).send("HEAD", "/org/disk/resolve/main/weights/blob.bin", &[]);
    assert_eq!(
        r.header("X-Linked-Etag").unwrap(),
        format!("\"{}\"", sha256(&data))
    );
    let loc = r.header("Location").unwrap().to_string();
    let t = target_of(&loc);
    let mut cdn = Conn::open(&loc);
    assert!(cdn.send("GET", &t, &[]).body == data);
    let r = cdn.send("GET", &t, &[("Range", "bytes=1000000-2999999")]);
    assert_eq!(
        (r.status, r.body == data[1_000_000..3_000_000]),
        (206, true)
    );

    let f = server.faults();
    f.set(
        Fault::DropAfter { bytes: 1_500_000 },
        1,
        Some("weights/blob.bin"),
    );
    let r = Conn::open(&loc).send("GET", &t, &[]);
    assert_eq!((r.body.len(), r.short), (1_500_000, true));
    assert!(r.body == data[..1_500_000]);
    f.set(Fault::WrongBytes, 1, None);
    let r = Conn::open(&loc).send("GET", &t, &[("Range", "bytes=100-")]);
    let diff: Vec<usize> = (0..r.body.len())
        .filter(|&i| r.body[i] != data[100 + i])
        .collect();
    assert_eq!(diff, [(data.len() - 100) / 2]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn dropping_the_server_stops_it() {
    let server = HubServer::start(vec![model()], ServerConfig::default());
    let addr = server.endpoint().trim_start_matches("http://").to_string();
    let mut idle = Conn::open(&server.endpoint());
    assert_eq!(idle.send("GET", "/api/models/org/tiny", &[]).status, 200);
    drop(server);
    assert!(TcpStream::connect(&addr).is_err());
    // Kept-alive connections are closed too.
    let mut rest = Vec::new();
    let n = idle.reader.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0);
}
