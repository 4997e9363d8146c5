//! The HTTP side of `mt serve`: axum on tokio. Routes `POST /v1/chat/completions`
//! (whole answers or server-sent events), `GET /v1/models` and `GET /health`; bearer
//! auth on `/v1`; the body limit, the bounded queue (429 with `Retry-After` when full,
//! 503 while draining), and one request-log line per chat request. The model runs on its
//! own thread ([`Batcher::run`]); handlers hand it [`Ask`]s through the queue and relay
//! its events, so a client that goes away drops its receiver and frees its slot.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::openai::{self, ApiError, ChatRequest, ImagePolicy, Usage};
use crate::core::files::JsonLines;
use crate::core::hash::{fnv1a, keyed};
use crate::core::model::engine::batcher::{Ask, Batcher, Event, Failure, Load, Sampling};
use crate::core::model::engine::generate::Finish;

/// How the server runs.
pub(crate) struct Options {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The bearer token clients must send (none: no auth).
    pub api_key: Option<String>,
    /// Where images may come from, how large.
    pub images: ImagePolicy,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Requests that may wait for a slot in the running batch.
    pub queue: usize,
    /// Longest a request may take, queue included.
    pub timeout: Duration,
    /// Decoding settings a request does not give.
    pub defaults: Sampling,
    /// The seed request seeds derive from.
    pub seed: u64,
    /// The request log (JSON lines), when there is a run directory.
    pub request_log: Option<PathBuf>,
}

/// What a finished server did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Served {
    /// Chat requests answered in full.
    pub answered: u64,
    /// Chat requests that got an error or whose client left.
    pub failed: u64,
}

/// Shared by the handlers.
struct App {
    asks: Mutex<Option<SyncSender<Ask>>>,
    load: Arc<Load>,
    model: String,
    key: Option<[u8; 32]>,
    images: ImagePolicy,
    timeout: Duration,
    defaults: Sampling,
    seed: u64,
    queue: usize,
    draining: AtomicBool,
    next_id: AtomicU64,
    log: Option<Mutex<JsonLines>>,
    answered: AtomicU64,
    failed: AtomicU64,
    started: Instant,
}

/// Serves `batcher`'s model until SIGTERM or Ctrl-C, then lets the requests in flight
/// finish and returns. `listening(addr)` is told the bound address (port 0 picks one).
pub(crate) fn serve(
    batcher: Batcher,
    opts: Options,
    listening: impl FnOnce(SocketAddr),
) -> Result<Served> {
    let (asks, queue) = std::sync::mpsc::sync_channel::<Ask>(opts.queue);
    let load = Arc::new(Load::default());
    let model = batcher.model_name().to_string();
    let worker = {
        let load = load.clone();
        std::thread::Builder::new()
            .name("mt-batcher".into())
            .spawn(move || batcher.run(&queue, &load))?
    };
    let log = match &opts.request_log {
        Some(path) => Some(Mutex::new(JsonLines::append(path)?)),
        None => None,
    };
    let app = Arc::new(App {
        asks: Mutex::new(Some(asks)),
        load,
        model,
        key: opts.api_key.as_deref().map(digest),
        images: opts.images.clone(),
        timeout: opts.timeout,
        defaults: opts.defaults.clone(),
        seed: opts.seed,
        queue: opts.queue,
        draining: AtomicBool::new(false),
        next_id: AtomicU64::new(0),
        log,
        answered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        started: Instant::now(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mt-serve")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .with_context(|| format!("cannot listen on {}", opts.addr))?;
        listening(listener.local_addr()?);
        let v1 = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(models))
            .route_layer(middleware::from_fn_with_state(app.clone(), authorize));
        let router = Router::new()
            .merge(v1)
            .route("/health", get(health))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(opts.max_body))
            .with_state(app.clone());
        let draining = app.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                draining.draining.store(true, Ordering::SeqCst);
                tracing::info!("draining: finishing the requests in flight, refusing new ones");
            })
            .await
            .context("the HTTP server failed")
    })?;
    app.asks.lock().expect("queue lock").take();
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the model thread panicked"))?;
    Ok(Served {
        answered: app.answered.load(Ordering::SeqCst),
        failed: app.failed.load(Ordering::SeqCst),
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// A digest of a key, so comparing two takes the same time whatever their lengths.
fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equal digests, in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Bearer auth for `/v1` when the server has a key.
async fn authorize(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(key) = &app.key else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| digest(v.trim()));
    if given.is_some_and(|g| same(&g, key)) {
        return next.run(request).await;
    }
    let message = match given {
        None => "missing API key: send `Authorization: Bearer KEY`",
        Some(_) => "incorrect API key",
    };
    app.write_log(json!({
        "path": request.uri().path(),
        "status": 401,
        "error": message,
    }));
    ApiError::status(StatusCode::UNAUTHORIZED, message)
        .code("invalid_api_key")
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if matches!(self.status.as_u16(), 429 | 503) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// `GET /health`: the model and the load.
async fn health(State(app): State<Arc<App>>) -> Response {
    let draining = app.draining.load(Ordering::SeqCst);
    let body = json!({
        "status": if draining { "draining" } else { "ok" },
        "model": app.model,
        "running": app.load.running.load(Ordering::SeqCst),
        "queued": app.load.queued.load(Ordering::SeqCst),
        "uptime_s": app.started.elapsed().as_secs(),
    });
    let status = match draining {
        true => StatusCode::SERVICE_UNAVAILABLE,
        false => StatusCode::OK,
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /v1/models`: the one model.
async fn models(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": app.model, "object": "model", "created": unix_now(), "owned_by": "mt"}],
    }))
    .into_response()
}

/// Any other path.
async fn not_found(request: Request) -> Response {
    let message = format!("no route {} {}", request.method(), request.uri().path());
    ApiError::status(StatusCode::NOT_FOUND, message).into_response()
}

/// Seconds since 1970.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The request-log record of one chat request, written when it is dropped (answered,
/// failed, or abandoned by its client).
struct Record {
    app: Arc<App>,
    id: String,
    stream: bool,
    started: Instant,
    status: Option<u16>,
    prompt_tokens: usize,
    completion_tokens: usize,
    finish: Option<&'static str>,
    error: Option<String>,
}

impl Record {
    fn fail(&mut self, error: &ApiError) {
        self.status.get_or_insert(error.status.as_u16());
        self.error = Some(error.message.clone());
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let answered = self.finish.is_some();
        let counter = match answered {
            true => &self.app.answered,
            false => &self.app.failed,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let error = match (&self.error, answered) {
            (None, false) => Some("the client went away".to_string()),
            (e, _) => e.clone(),
        };
        self.app.write_log(json!({
            "id": self.id,
            "path": "/v1/chat/completions",
            "status": self.status,
            "stream": self.stream,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish,
            "seconds": (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "error": error,
        }));
    }
}

impl App {
    /// One line of the request log (with the time), when there is one.
    fn write_log(&self, mut record: Value) {
        let Some(log) = &self.log else { return };
        record["time"] = json!(jiff::Timestamp::now().to_string());
        if let Ok(mut log) = log.lock()
            && let Err(e) = log.write(&record)
        {
            tracing::warn!("cannot write the request log: {e:#}");
        }
    }

    /// An [`Ask`] for a parsed request, in the queue; its events' receiver.
    fn enqueue(
        &self,
        request: &ChatRequest,
        conversation: openai::Conversation,
        id: &str,
    ) -> Result<UnboundedReceiver<Event>, ApiError> {
        let (events, receiver) = unbounded_channel();
        let ask = Ask {
            image: conversation.image,
            messages: conversation.messages,
            system: conversation.system,
            sampling: request.sampling(&self.defaults, keyed(self.seed, fnv1a(id), 0)),
            deadline: Some(Instant::now() + self.timeout),
            events,
        };
        let sender = self.asks.lock().expect("queue lock").clone();
        let Some(sender) = sender else {
            return Err(shutting_down());
        };
        self.load.queued.fetch_add(1, Ordering::SeqCst);
        match sender.try_send(ask) {
            Ok(()) => Ok(receiver),
            Err(e) => {
                self.load.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => ApiError::status(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!("the queue is full ({} waiting); retry shortly", self.queue),
                    )
                    .code("queue_full"),
                    TrySendError::Disconnected(_) => {
                        ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "the model has stopped")
                    }
                })
            }
        }
    }
}

/// `POST /v1/chat/completions`.
async fn chat_completions(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let n = app.next_id.fetch_add(1, Ordering::SeqCst);
    let id = format!(
        "chatcmpl-{:x}-{n}",
        app.started.elapsed().as_nanos() as u64 ^ app.seed
    );
    let mut record = Record {
        app: app.clone(),
        id: id.clone(),
        stream: false,
        started: Instant::now(),
        status: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        finish: None,
        error: None,
    };
    match prepare(&app, body, &id, &mut record).await {
        Ok((request, mut events)) if request.stream => {
            // Wait for the prompt to run, so a request refused then gets its status.
            let first = match events.recv().await {
                Some(Event::Failed(f)) => Err(failure(f)),
                Some(first) => Ok(first),
                None => Err(model_stopped()),
            };
            match first {
                Ok(first) => {
                    let include_usage = request
                        .stream_options
                        .as_ref()
                        .is_some_and(|o| o.include_usage);
                    streamed(app.model.clone(), id, first, events, record, include_usage)
                        .into_response()
                }
                Err(error) => {
                    record.fail(&error);
                    error.into_response()
                }
            }
        }
        Ok((_, events)) => whole(&app.model, &id, events, record).await,
        Err(error) => {
            record.fail(&error);
            error.into_response()
        }
    }
}

/// Reads, checks and queues a request.
async fn prepare(
    app: &Arc<App>,
    body: Result<Bytes, BytesRejection>,
    id: &str,
    record: &mut Record,
) -> Result<(ChatRequest, UnboundedReceiver<Event>), ApiError> {
    if app.draining.load(Ordering::SeqCst) {
        return Err(shutting_down());
    }
    let body = body.map_err(|e| {
        let message = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                "the request body is over the limit (--max-body)".to_string()
            }
            _ => e.body_text(),
        };
        ApiError::status(e.status(), message)
    })?;
    let request: ChatRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            None,
            format!("the body is not a chat completion request: {e}"),
        )
    })?;
    record.stream = request.stream;
    request.check(&app.model)?;
    let (request, conversation) = {
        let policy = app.images.clone();
        tokio::task::spawn_blocking(move || {
            let conversation = request.conversation(&policy);
            (request, conversation)
        })
        .await
        .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    };
    let events = app.enqueue(&request, conversation?, id)?;
    Ok((request, events))
}

/// The error answer of a failed request.
fn failure(failure: Failure) -> ApiError {
    match failure {
        Failure::Invalid(message) => ApiError::invalid(Some("messages"), message),
        Failure::Timeout => ApiError::status(
            StatusCode::GATEWAY_TIMEOUT,
            "the request took longer than the server's --timeout",
        ),
        Failure::Internal(message) => ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, message),
    }
}

/// A request that arrives while the server drains.
fn shutting_down() -> ApiError {
    ApiError::status(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down",
    )
}

/// A request whose answer ended without its last event (the model thread is gone).
fn model_stopped() -> ApiError {
    ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "the model stopped")
}

/// Waits for the whole answer.
async fn whole(
    model: &str,
    id: &str,
    mut events: UnboundedReceiver<Event>,
    mut record: Record,
) -> Response {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Started { prompt_tokens } => record.prompt_tokens = prompt_tokens,
            Event::Text(t) => text.push_str(&t),
            Event::Done {
                finish,
                completion_tokens,
            } => {
                record.completion_tokens = completion_tokens;
                record.finish = Some(openai::finish_reason(finish));
                record.status = Some(200);
                let usage = Usage::new(record.prompt_tokens, completion_tokens);
                let body = openai::completion(id, model, unix_now(), &text, finish, usage);
                return axum::Json(body).into_response();
            }
            Event::Failed(f) => {
                let error = failure(f);
                record.fail(&error);
                return error.into_response();
            }
        }
    }
    let error = model_stopped();
    record.fail(&error);
    error.into_response()
}

/// Where a streamed answer is.
struct Streaming {
    model: String,
    id: String,
    created: u64,
    events: UnboundedReceiver<Event>,
    record: Record,
    include_usage: bool,
    /// SSE events ready to go, in order.
    ready: std::collections::VecDeque<SseEvent>,
    ended: bool,
}

/// The answer as server-sent events: a role chunk, content deltas, a chunk with the
/// finish reason, the usage chunk when asked, then `[DONE]`. A failure mid-stream sends
/// an error object and ends the stream.
fn streamed(
    model: String,
    id: String,
    first: Event,
    events: UnboundedReceiver<Event>,
    record: Record,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut state = Streaming {
        model,
        id,
        created: unix_now(),
        events,
        record,
        include_usage,
        ready: Default::default(),
        ended: false,
    };
    state.push(first);
    let stream = stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.ready.pop_front() {
                return Some((Ok(event), s));
            }
            if s.ended {
                return None;
            }
            match s.events.recv().await {
                Some(event) => s.push(event),
                None => {
                    let error = model_stopped();
                    s.record.fail(&error);
                    s.send(error.body());
                    s.ended = true;
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

impl Streaming {
    fn send(&mut self, value: Value) {
        self.ready
            .push_back(SseEvent::default().data(value.to_string()));
    }

    fn chunk(&self, delta: Value, finish: Option<Finish>, usage: Option<Usage>) -> Value {
        openai::chunk(&self.id, &self.model, self.created, delta, finish, usage)
    }

    /// The SSE events of one batcher event.
    fn push(&mut self, event: Event) {
        match event {
            Event::Started { prompt_tokens } => {
                self.record.prompt_tokens = prompt_tokens;
                self.record.status = Some(200);
                let chunk = self.chunk(json!({"role": "assistant", "content": ""}), None, None);
                self.send(chunk);
            }
            Event::Text(text) => {
                let chunk = self.chunk(json!({"content": text}), None, None);
                self.send(chunk);
            }
            Event::Done {
                finish,
                completion_tokens,
            } => {
                self.record.completion_tokens = completion_tokens;
                self.record.finish = Some(openai::finish_reason(finish));
                let chunk = self.chunk(json!({}), Some(finish), None);
                self.send(chunk);
                if self.include_usage {
                    let usage = Usage::new(self.record.prompt_tokens, completion_tokens);
                    let chunk = self.chunk(json!({}), None, Some(usage));
                    self.send(chunk);
                }
                self.ready.push_back(SseEvent::default().data("[DONE]"));
                self.ended = true;
            }
            Event::Failed(f) => {
                let error = failure(f);
                self.record.fail(&error);
                let body = error.body();
                self.send(body);
                self.ended = true;
            }
        }
    }
}
