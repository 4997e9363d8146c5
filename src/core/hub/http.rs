//! HTTP for the Hub: one pooled agent, redirects followed by hand (relative ones kept on
//! the host, `Authorization` never sent to another host), and retries with backoff on
//! 408/429/5xx and broken connections that honour `Retry-After` and `RateLimit`.

use std::time::Duration;

use ureq::http::{HeaderMap, Response};

use super::settings::Token;

/// How hard to try.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    /// Failed attempts allowed after the first (attempts that moved bytes are free).
    pub max_retries: u32,
    /// First backoff; doubles per failure up to `max_backoff`.
    pub base: Duration,
    pub max_backoff: Duration,
    /// The longest server-requested wait (`Retry-After`, `RateLimit`) we honour.
    pub max_server_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            max_server_wait: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `failures` (1-based) after `err`.
    pub(crate) fn wait(&self, failures: u32, err: &HttpError) -> Duration {
        if let Some(server) = err.retry_after() {
            return server.min(self.max_server_wait);
        }
        let exp = self
            .base
            .saturating_mul(1 << failures.saturating_sub(1).min(16));
        exp.min(self.max_backoff)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The server answered with an error status.
    #[error("{}", status_message(*.status, .code.as_deref(), .message))]
    Status {
        status: u16,
        /// `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`).
        code: Option<String>,
        /// `X-Error-Message` or the body's `error` field.
        message: String,
        /// From `Retry-After` or the `t=` of a `RateLimit` header.
        retry_after: Option<Duration>,
        /// `X-Repo-Commit`, sent with 404 EntryNotFound.
        commit: Option<String>,
    },
    /// Connection refused/reset, a timeout or a stall, a body cut short.
    #[error("{0}")]
    Transport(String),
}

fn status_message(status: u16, code: Option<&str>, message: &str) -> String {
    let hint = match (status, code) {
        (401 | 403, Some("GatedRepo")) | (403, _) => {
            " (gated or private: accept the terms on the Hub page and pass --token or set HF_TOKEN)"
        }
        (401, _) => {
            " (not found, or private/gated: check the name and pass --token or set HF_TOKEN)"
        }
        (429, _) => " (rate limited)",
        _ => "",
    };
    let code = code.map_or_else(String::new, |c| format!(" {c}"));
    let message = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    format!("HTTP {status}{code}{message}{hint}")
}

impl HttpError {
    /// Worth another attempt: 408, 429, 5xx and transport failures.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            Self::Transport(_) => true,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            Self::Transport(_) => None,
        }
    }

    /// The `X-Error-Code` of an error status.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Self::Status { code, .. } => code.as_deref(),
            Self::Transport(_) => None,
        }
    }
}

/// Which redirects a request follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Every redirect (downloads: the LFS 302 goes to a CDN).
    All,
    /// Only those on the same host (metadata requests stop at the CDN redirect, whose
    /// headers carry `X-Linked-Etag` and `X-Linked-Size`).
    SameHost,
}

/// A pooled HTTP client for one Hub endpoint.
#[derive(Clone)]
pub(crate) struct Client {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<Token>,
    pub policy: RetryPolicy,
}

const MAX_REDIRECTS: usize = 10;

impl Client {
    /// A client for `endpoint` that gives up on a connection when no byte arrives for
    /// `stall` (the transfer then resumes where it stopped).
    pub(crate) fn new(
        endpoint: &str,
        token: Option<Token>,
        stall: Duration,
        policy: RetryPolicy,
    ) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_per_read(Some(stall))
            .timeout_per_write(Some(stall))
            .user_agent(format!("mt/{}", env!("CARGO_PKG_VERSION")))
            .input_buffer_size(256 * 1024)
            .max_idle_connections_per_host(64)
            .build();
        Self {
            agent: config.new_agent(),
            endpoint: endpoint.to_string(),
            token,
            policy,
        }
    }

    /// The endpoint this client talks to (no trailing slash).
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One attempt: sends `method url` with `headers`, follows redirects as `follow`
    /// says and returns the final response, or the error status as [`HttpError`].
    /// The redirect responses' headers are merged under the final ones (the final
    /// response wins), so `X-Linked-Etag` from a CDN redirect stays visible.
    pub(crate) fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        follow: Follow,
    ) -> Result<Response<ureq::Body>, HttpError> {
        let mut url = url.to_string();
        let mut seen = HeaderMap::new();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = ureq::http::Request::builder()
                .method(method)
                .uri(&url)
                .header("Accept-Encoding", "identity");
            if let Some(token) = &self.token
                && authority(&url) == authority(&self.endpoint)
            {
                req = req.header("Authorization", format!("Bearer {}", token.expose()));
            }
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let req = req.body(()).map_err(|e| {
                HttpError::Transport(format!("bad request for {}: {e}", redact(&url)))
            })?;
            let mut resp = self
                .agent
                .run(req)
                .map_err(|e| HttpError::Transport(format!("{}: {e}", redact(&url))))?;
            let status = resp.status().as_u16();
            if (300..400).contains(&status)
                && let Some(loc) = header(resp.headers(), "location")
            {
                let next = join_url(&url, &loc);
                if follow == Follow::SameHost && authority(&next) != authority(&url) {
                    merge_under(resp.headers_mut(), &seen);
                    return Ok(resp);
                }
                for (k, v) in resp.headers() {
                    seen.insert(k.clone(), v.clone());
                }
                url = next;
                continue;
            }
            merge_under(resp.headers_mut(), &seen);
            if status >= 400 {
                return Err(status_error(resp));
            }
            return Ok(resp);
        }
        Err(HttpError::Transport(format!(
            "{}: more than {MAX_REDIRECTS} redirects",
            redact(&url)
        )))
    }

    /// GET `url` and parse the body as JSON, with retries; also returns the next page
    /// from a `Link: <...>; rel="next"` header.
    pub(crate) fn get_json(
        &self,
        url: &str,
    ) -> anyhow::Result<(serde_json::Value, Option<String>)> {
        self.retrying(&redact(url), || {
            let mut resp = self.send("GET", url, &[], Follow::All)?;
            let next = header(resp.headers(), "link").and_then(|l| next_link(&l));
            let text = resp
                .body_mut()
                .with_config()
                .limit(256 << 20)
                .read_to_string()
                .map_err(|e| HttpError::Transport(format!("{}: {e}", redact(url))))?;
            let value = serde_json::from_str(&text).map_err(|e| HttpError::Status {
                status: 200,
                code: None,
                message: format!("the answer is not JSON ({e})"),
                retry_after: None,
                commit: None,
            })?;
            Ok((value, next))
        })
        .map_err(|e| anyhow::Error::new(e).context(format!("GET {}", redact(url))))
    }

    /// Runs `attempt` until it succeeds, fails for good, or retries run out, sleeping
    /// per the policy in between. Retries are logged with `what`.
    pub(crate) fn retrying<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> Result<T, HttpError>,
    ) -> Result<T, HttpError> {
        let mut failures = 0;
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && failures < self.policy.max_retries => {
                    failures += 1;
                    let wait = self.policy.wait(failures, &e);
                    tracing::warn!(
                        "{what}: {e}; retry {failures}/{} in {:.1} s",
                        self.policy.max_retries,
                        wait.as_secs_f64()
                    );
                    std::thread::sleep(wait);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Copies headers from `earlier` that `headers` lacks.
fn merge_under(headers: &mut HeaderMap, earlier: &HeaderMap) {
    for (k, v) in earlier {
        if !headers.contains_key(k) {
            headers.insert(k.clone(), v.clone());
        }
    }
}

fn status_error(mut resp: Response<ureq::Body>) -> HttpError {
    let status = resp.status().as_u16();
    let h = resp.headers();
    let code = header(h, "x-error-code");
    let commit = header(h, "x-repo-commit");
    let retry_after = server_wait(h);
    let mut message = header(h, "x-error-message").unwrap_or_default();
    if message.is_empty() {
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
    }
    HttpError::Status {
        status,
        code,
        message: message.trim().to_string(),
        retry_after,
        commit,
    }
}

/// A header's value as text.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The wait a server asks for, from `Retry-After` (seconds) or the `t=` of `RateLimit`,
/// capped at a day (whatever the server says, it cannot make us panic or sleep forever).
fn server_wait(headers: &HeaderMap) -> Option<Duration> {
    header(headers, "retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .or_else(|| header(headers, "ratelimit").and_then(|v| ratelimit_reset(&v)))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

/// Seconds until the window resets from an IETF `RateLimit` header
/// (`"resolvers";r=0;t=42`).
pub fn ratelimit_reset(value: &str) -> Option<f64> {
    value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("t="))
        .and_then(|t| t.trim().parse().ok())
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// `host:port` of an absolute URL.
pub(crate) fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// Resolves a redirect `location` against the URL it came from.
pub fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme = base.split_once("://").map_or("https", |(s, _)| s);
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let origin = format!("{scheme}://{}", authority(base));
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let path = base
        .split_once("://")
        .and_then(|(_, r)| r.find('/').map(|i| &r[i..]))
        .unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!("{origin}{dir}{location}")
}

/// A URL without its query string (signed CDN URLs carry credentials there).
pub(crate) fn redact(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_like_a_browser() {
        let base = "http://127.0.0.1:8000/org/m/resolve/main/a/b.json?x=1";
        assert_eq!(
            join_url(base, "/api/resolve-cache/models/org/m/abc/a/b.json"),
            "http://127.0.0.1:8000/api/resolve-cache/models/org/m/abc/a/b.json"
        );
        assert_eq!(
            join_url(base, "c.json"),
            "http://127.0.0.1:8000/org/m/resolve/main/a/c.json"
        );
        assert_eq!(
            join_url(base, "https://cdn.example/x?s=1"),
            "https://cdn.example/x?s=1"
        );
        assert_eq!(join_url(base, "//cdn.example/x"), "http://cdn.example/x");
        assert_eq!(authority("http://localhost:9/x?y"), "localhost:9");
        assert_ne!(
            authority("http://localhost:9/"),
            authority("http://127.0.0.1:9/")
        );
        assert_eq!(
            redact("https://cdn/x?X-Amz-Signature=secret"),
            "https://cdn/x"
        );
    }

    #[test]
    fn link_and_rate_limit_headers() {
        assert_eq!(
            next_link("<http://h/api/models/a/b/tree/main?cursor=xyz>; rel=\"next\""),
            Some("http://h/api/models/a/b/tree/main?cursor=xyz".into())
        );
        assert_eq!(next_link("<http://h/p>; rel=\"prev\""), None);
        assert_eq!(ratelimit_reset("\"resolvers\";r=0;t=42"), Some(42.0));
        assert_eq!(ratelimit_reset("\"api\";r=10"), None);
        let wait = |name: &'static str, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            server_wait(&h)
        };
        assert_eq!(wait("retry-after", "7"), Some(Duration::from_secs(7)));
        assert_eq!(
            wait("retry-after", "1e20"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(wait("retry-after", "-3"), None);
        assert_eq!(wait("retry-after", "NaN"), None);
        assert_eq!(
            wait("ratelimit", "\"resolvers\";r=0;t=1e300"),
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn backoff_doubles_and_server_waits_win() {
        let p = RetryPolicy::default();
        let transport = HttpError::Transport("reset".into());
        let waits: Vec<u64> = (1..=5).map(|n| p.wait(n, &transport).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 8]);
        let limited = HttpError::Status {
            status: 429,
            code: None,
            message: String::new(),
            retry_after: Some(Duration::from_secs(30)),
            commit: None,
        };
        assert!(limited.retryable());
        assert_eq!(p.wait(1, &limited), Duration::from_secs(30));
        let gone = HttpError::Status {
            status: 404,
            code: Some("EntryNotFound".into()),
            message: String::new(),
            retry_after: None,
            commit: None,
        };
        assert!(!gone.retryable());
        assert_eq!(gone.to_string(), "HTTP 404 EntryNotFound");
    }
}
