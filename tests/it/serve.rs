//! `mt serve` as a real server on 127.0.0.1 (port 0), on the tiny llava-hf checkpoint:
//! OpenAI's Python SDK as the client (answers equal to `mt chat`'s, streamed or not,
//! concurrent or not), and the faults a server meets (auth, limits, a full queue, a
//! client that leaves, bad input, a deadline, SIGTERM) through plain HTTP.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::{mt_stdin, root, test_python, testdata};

const MODEL: &str = "models/tiny-llava-hf";
const KEY: &str = "test-key-5d41402abc4b2a76";

/// A running `mt serve`, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    run_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `mt serve --model tiny-llava-hf --cpu --port 0 EXTRA`, once it listens.
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let model = testdata(MODEL);
        let mut child = Command::new(env!("CARGO_BIN_EXE_mt"))
            .args(["serve", "--cpu", "--port", "0", "--model"])
            .arg(&model)
            .arg("--run-dir")
            .arg(&run_dir)
            .args(extra)
            .env("HOME", dir.path())
            .env_remove("MT_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let log = stderr.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while lines.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(rest) = line.split(" on http://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap().to_string());
                }
                log.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("mt serve did not start: {}", stderr.lock().unwrap()));
        Self {
            child,
            addr,
            run_dir,
            stderr,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then the exit code.
    fn terminate(mut self) -> (i32, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (
                    status.code().unwrap_or(-1),
                    self.stderr.lock().unwrap().clone(),
                );
            }
            assert!(Instant::now() < deadline, "mt serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The request log.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.run_dir.join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP agent that returns 4xx/5xx responses instead of errors.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// POSTs `body` (with the test key unless `key` says otherwise): status, JSON body,
/// and the Retry-After header.
fn post(server: &Server, body: &[u8], key: Option<&str>) -> (u16, Value, Option<String>) {
    let mut request = agent()
        .post(server.url("/v1/chat/completions"))
        .header("Content-Type", "application/json");
    if let Some(key) = key {
        request = request.header("Authorization", &format!("Bearer {key}"));
    }
    let mut response = request.send(body).unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
    (response.status().as_u16(), json, retry)
}

/// POSTs `body` on a bare connection, writing as much as the server takes (it may answer
/// and close before reading it all), and returns the raw response.
fn raw_post(server: &Server, body: &[u8], key: &str) -> String {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn data_url(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A one-question request about the image at `url`.
fn request(question: &str, url: &str, extra: Value) -> Vec<u8> {
    let mut body = json!({
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": question},
            {"type": "image_url", "image_url": {"url": url}},
        ]}],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::to_vec(&body).unwrap()
}

/// `mt chat`'s answers (JSONL mode) to `requests`.
fn chat_answers(requests: &[Value], max_new_tokens: &str) -> Vec<Value> {
    let model = testdata(MODEL);
    let input: String = requests.iter().map(|r| format!("{r}\n")).collect();
    let run = mt_stdin(
        &[
            "chat",
            "--cpu",
            "--model",
            model.to_str().unwrap(),
            "--max-new-tokens",
            max_new_tokens,
        ],
        input.as_bytes(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.json_lines()
}

/// OpenAI's SDK lists the model, gets `mt chat`'s answer whole and streamed (the deltas
/// add up to it, then the finish reason and the usage chunk), a two-turn conversation
/// answered as `mt chat` answers it, eight concurrent requests of different lengths
/// answered as they are one at a time, and the SDK's own error classes for a wrong
/// model (404), bad base64 (400), a wrong key (401) and an assistant message last (400).
#[test]
fn the_openai_sdk_gets_mt_chats_answers_from_the_server() {
    let Some(py) = test_python(&["openai"]) else {
        return;
    };
    let server = Server::start(&["--api-key", KEY]);
    let images = [testdata("images/phantom.png"), testdata("images/cell.png")];
    let out = Command::new(&py)
        .arg(root().join("tests/interop/openai_client.py"))
        .arg(server.url("/v1"))
        .args([KEY, "tiny-llava-hf"])
        .args(&images)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr.lock().unwrap()
    );
    let checks: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let check = |name: &str| checks.iter().find(|c| c["check"] == name).unwrap().clone();

    assert_eq!(check("models")["ids"], json!(["tiny-llava-hf"]));
    let image = images[0].to_str().unwrap();
    let want = chat_answers(
        &[
            json!({"id": "one", "image": image, "question": "What is shown?"}),
            json!({"id": "two", "image": image, "conversations": [
                {"from": "human", "value": "What is shown?"},
                {"from": "gpt", "value": "A phantom."},
                {"from": "human", "value": "Which modality?"},
            ]}),
        ],
        "12",
    );
    let whole = check("whole");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["role"], "assistant");
    let content = whole["content"].as_str().unwrap();
    assert_eq!(content.trim(), want[0]["answer"], "{whole}");
    assert_eq!(whole["usage"]["prompt_tokens"], want[0]["prompt_tokens"]);
    assert_eq!(whole["usage"]["completion_tokens"], want[0]["new_tokens"]);
    let finish = match want[0]["new_tokens"] == 12 {
        true => "length",
        false => "stop",
    };
    assert_eq!(whole["finish"], finish);

    let stream = check("stream");
    let deltas: Vec<&str> = stream["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(deltas.len() > 1, "{stream}");
    assert_eq!(deltas.concat(), content);
    assert_eq!(stream["roles"], json!(["assistant"]));
    assert_eq!(stream["finish"], finish);
    assert_eq!(stream["usage"], whole["usage"]);

    let two = check("two_turns");
    assert_eq!(two["content"].as_str().unwrap().trim(), want[1]["answer"]);
    assert_eq!(two["usage"]["prompt_tokens"], want[1]["prompt_tokens"]);

    let parallel = check("parallel")["answers"].clone();
    assert_eq!(parallel.as_array().unwrap().len(), 8);
    assert_eq!(parallel, check("serial")["answers"]);
    for answer in parallel.as_array().unwrap() {
        assert_eq!(
            answer[4], answer[2],
            "ignore_eos answers are max_tokens long"
        );
    }

    let errors = check("errors");
    let error = |name: &str| {
        (
            errors[name]["class"].clone(),
            errors[name]["status"].clone(),
        )
    };
    assert_eq!(error("wrong_model"), (json!("NotFoundError"), json!(404)));
    assert_eq!(errors["wrong_model"]["body"]["code"], "model_not_found");
    assert_eq!(error("bad_base64"), (json!("BadRequestError"), json!(400)));
    assert_eq!(
        errors["bad_base64"]["body"]["param"],
        "messages[0].content[0].image_url"
    );
    assert_eq!(
        error("wrong_key"),
        (json!("AuthenticationError"), json!(401))
    );
    assert_eq!(
        error("assistant_last"),
        (json!("BadRequestError"), json!(400))
    );

    // The request log: one line per chat request, never the key or an image's bytes.
    let log = std::fs::read_to_string(server.run_dir.join("requests.jsonl")).unwrap();
    assert!(!log.contains(KEY));
    let b64 = &data_url(&images[0])[22..80];
    assert!(!log.contains(b64));
    let run_json = std::fs::read_to_string(server.run_dir.join("run.json")).unwrap();
    assert!(!run_json.contains(KEY));
    let statuses: Vec<Value> = server
        .requests()
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 19);
}

/// Bad input and limits get OpenAI-style errors and the server keeps serving: bad
/// JSON, no key, a body over --max-body, an image over --max-image-pixels, bytes that
/// are no image, an http URL, file:// outside --allow-files (and inside it, answered), a
/// prompt longer than the context, an unknown route; then /health is still ok.
#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let allowed = tempfile::tempdir().unwrap();
    let inside = allowed.path().join("scan.png");
    std::fs::copy(testdata("images/cell.png"), &inside).unwrap();
    let dims = image::image_dimensions(&inside).unwrap();
    let pixels = u64::from(dims.0) * u64::from(dims.1);
    let server = Server::start(&[
        "--api-key",
        KEY,
        "--max-body",
        "1",
        "--max-image-pixels",
        &(pixels - 1).to_string(),
        "--allow-files",
        allowed.path().to_str().unwrap(),
        "--max-new-tokens",
        "4",
    ]);
    let small = data_url(&testdata("images/phantom.png"));
    let kind = |v: &Value| v["error"]["type"].as_str().unwrap_or("").to_string();

    let (status, body, _) = post(&server, b"{\"messages\": [", Some(KEY));
    assert_eq!(
        (status, kind(&body).as_str()),
        (400, "invalid_request_error")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1")
    );

    let ok = request("What is shown?", &small, json!({}));
    let (status, body, _) = post(&server, &ok, None);
    assert_eq!(
        (status, kind(&body).as_str()),
        (401, "authentication_error")
    );
    let (status, _, _) = post(&server, &ok, Some("wrong"));
    assert_eq!(status, 401);

    let huge = request(&"x".repeat(2 << 20), &small, json!({}));
    let answer = raw_post(&server, &huge, KEY);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("--max-body"), "{answer}");

    let big = request("Q?", &data_url(&inside), json!({}));
    let (status, body, _) = post(&server, &big, Some(KEY));
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pixels")
    );

    let not_image = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(b"hello, not a picture")
    );
    let (status, body, _) = post(&server, &request("Q?", &not_image, json!({})), Some(KEY));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot decode")
    );

    let http = request("Q?", "http://example.com/scan.png", json!({}));
    let (status, body, _) = post(&server, &http, Some(KEY));
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("network")
    );

    let outside = format!("file://{}", testdata("images/phantom.png").display());
    let (status, body, _) = post(&server, &request("Q?", &outside, json!({})), Some(KEY));
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outside")
    );
    let small_inside = allowed.path().join("phantom.png");
    std::fs::copy(testdata("images/phantom.png"), &small_inside).unwrap();
    let url = format!("file://{}", small_inside.display());
    let (status, body, _) = post(&server, &request("Q?", &url, json!({})), Some(KEY));
    assert_eq!(status, 200, "{body}");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() <= 4);

    let long = request(&"word ".repeat(3000), &small, json!({}));
    let (status, body, _) = post(&server, &long, Some(KEY));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("context")
    );

    let mut response = agent().get(server.url("/v2/nothing")).call().unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(kind(&body), "not_found_error");

    let (status, body, _) = post(&server, &ok, Some(KEY));
    assert_eq!(status, 200, "{body}");
    let mut health = agent().get(server.url("/health")).call().unwrap();
    let health: Value = serde_json::from_str(&health.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(health["status"], "ok");
    let log = server.requests();
    let statuses: Vec<u64> = log.iter().filter_map(|r| r["status"].as_u64()).collect();
    assert_eq!(
        statuses,
        [400, 401, 401, 413, 413, 400, 400, 400, 200, 400, 200]
    );
}

/// Reads server-sent events from a streamed response until `until` says stop; the
/// `data:` payloads.
fn read_events(reader: &mut impl BufRead, until: impl Fn(&str) -> bool) -> Vec<String> {
    let mut events = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            events.push(data.to_string());
            if until(data) {
                break;
            }
        }
        line.clear();
    }
    events
}

/// A streamed request on its own connection: the response's body reader.
fn open_stream(server: &Server, body: &[u8]) -> (u16, Box<dyn BufRead + Send>) {
    let response = agent()
        .post(server.url("/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    let reader = response.into_body().into_reader();
    (status, Box::new(BufReader::new(reader)))
}

fn health(server: &Server) -> Value {
    let mut r = agent().get(server.url("/health")).call().unwrap();
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

/// Waits until /health satisfies `ok`.
fn wait_health(server: &Server, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = health(server);
        if ok(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "health never got there: {h}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One running answer and one waiting fill a server of --max-batch 1 --queue 1: the
/// next request gets 429 with Retry-After; the running client hangs up, its slot goes
/// to the waiting one (which is answered), the log says the first client went away. A
/// request over --timeout gets 504. SIGTERM while an answer streams: it is finished to
/// [DONE], then the server exits 0.
#[test]
fn a_full_queue_a_client_that_leaves_a_deadline_and_sigterm() {
    let server = Server::start(&["--max-batch", "1", "--queue", "1"]);
    let image = data_url(&testdata("images/cell.png"));
    // Text alone: the longest answer the context allows (~2000 tokens).
    let endless = serde_json::to_vec(&json!({
        "messages": [{"role": "user", "content": "Q?"}],
        "stream": true, "max_tokens": 100000, "ignore_eos": true,
    }))
    .unwrap();
    let (status, mut first) = open_stream(&server, &endless);
    assert_eq!(status, 200);
    read_events(&mut first, |_| true);
    let waiting_body = request("Q?", &image, json!({"max_tokens": 3}));
    let waiting = {
        let addr = server.url("/v1/chat/completions");
        std::thread::spawn(move || {
            let mut r = agent().post(&addr).send(&waiting_body[..]).unwrap();
            let text = r.body_mut().read_to_string().unwrap();
            (
                r.status().as_u16(),
                serde_json::from_str::<Value>(&text).unwrap(),
            )
        })
    };
    wait_health(&server, |h| h["queued"] == 1 && h["running"] == 1);
    let (status, body, retry) = post(&server, &request("Q?", &image, json!({})), None);
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    drop(first);
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    wait_health(&server, |h| h["running"] == 0 && h["queued"] == 0);
    let log = server.requests();
    let left = log.iter().find(|r| r["stream"] == true).unwrap();
    assert_eq!(left["error"], "the client went away");

    // The deadline: 1 ms is over before the prompt has run.
    let hurried = Server::start(&["--timeout", "0.001"]);
    let (status, body, _) = post(&hurried, &request("Q?", &image, json!({})), None);
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["type"], "timeout_error");
    drop(hurried);

    let (status, mut streaming) = open_stream(
        &server,
        &request(
            "Q?",
            &image,
            json!({"stream": true, "max_tokens": 40, "ignore_eos": true}),
        ),
    );
    assert_eq!(status, 200);
    read_events(&mut streaming, |_| true);
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        streaming.read_to_string(&mut rest).unwrap();
        rest
    });
    let (code, stderr) = server.terminate();
    let rest = reader.join().unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    assert!(stderr.contains("draining"), "{stderr}");
}

/// A request's decoding settings: `stop` cuts the greedy answer where its text starts
/// (finish reason "stop"), the same `seed` samples the same answer at temperature 1 and
/// another seed another one, and `max_tokens` bounds the answer.
#[test]
fn stop_seed_and_max_tokens_shape_the_answer() {
    let server = Server::start(&[]);
    let image = data_url(&testdata("images/phantom.png"));
    let answer = |extra: Value| {
        let (status, body, _) = post(&server, &request("Describe it.", &image, extra), None);
        assert_eq!(status, 200, "{body}");
        let text = body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        let finish = body["choices"][0]["finish_reason"]
            .as_str()
            .unwrap()
            .to_string();
        (
            text,
            finish,
            body["usage"]["completion_tokens"].as_u64().unwrap(),
        )
    };
    let (greedy, finish, n) = answer(json!({"max_tokens": 24, "ignore_eos": true}));
    assert_eq!((finish.as_str(), n), ("length", 24));
    let chars: Vec<char> = greedy.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let (cut, finish, _) = answer(json!({"max_tokens": 24, "ignore_eos": true, "stop": [stop]}));
    assert_eq!(finish, "stop");
    assert_eq!(cut, greedy[..greedy.find(&stop).unwrap()], "stop {stop:?}");

    let sampled = |seed: u64| {
        answer(json!({"max_tokens": 16, "ignore_eos": true, "temperature": 1.0, "top_p": 0.95, "seed": seed})).0
    };
    assert_eq!(sampled(7), sampled(7));
    assert_ne!(sampled(7), sampled(8));
    assert_ne!(sampled(7), greedy);
    let (_, finish, n) = answer(json!({"max_tokens": 3}));
    assert!(n <= 3 && (finish == "length") == (n == 3));
}
