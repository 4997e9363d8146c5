//! Where the Hub is and who we are: `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, the token
//! (`--token`, `HF_TOKEN`, `HF_TOKEN_PATH`, `$HF_HOME/token`) and `HF_HUB_OFFLINE` (or
//! `TRANSFORMERS_OFFLINE`), with
//! huggingface_hub's precedence and defaults.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The public Hub.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// An access token. Its `Debug`/`Display` never show the value, so it cannot leak
/// into logs, run.json or error messages by accident.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token {
    value: String,
    /// Where it came from (`--token`, `HF_TOKEN`, a file path), for messages.
    pub source: String,
}

impl Token {
    /// The secret itself, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(*** from {})", self.source)
    }
}

/// Everything the client reads from the environment.
#[derive(Debug, Clone)]
pub(crate) struct HubSettings {
    /// Base URL without a trailing slash.
    pub endpoint: String,
    /// The hub cache (`$HF_HUB_CACHE`, default `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    pub token: Option<Token>,
    /// `HF_HUB_OFFLINE`: no HTTP at all.
    pub offline: bool,
}

impl HubSettings {
    /// Reads the process environment; `token` is the `--token` flag.
    pub(crate) fn from_env(token: Option<String>) -> Result<Self> {
        Self::from_vars(token, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Like [`Self::from_env`] with `var` standing in for the environment.
    pub(crate) fn from_vars(
        token: Option<String>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let home_dir = || var("HOME").map(PathBuf::from);
        let hf_home = match var("HF_HOME") {
            Some(h) => expand_tilde(&h, home_dir()),
            None => match var("XDG_CACHE_HOME") {
                Some(x) => PathBuf::from(x).join("huggingface"),
                None => match home_dir() {
                    Some(h) => h.join(".cache").join("huggingface"),
                    None => {
                        bail!("cannot find the Hugging Face cache: set HF_HOME or HF_HUB_CACHE")
                    }
                },
            },
        };
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map_or_else(|| hf_home.join("hub"), |c| expand_tilde(&c, home_dir()));
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            bail!("HF_ENDPOINT `{endpoint}` is not an http(s) URL");
        }
        let offline = var("HF_HUB_OFFLINE")
            .or_else(|| var("TRANSFORMERS_OFFLINE"))
            .is_some_and(|v| is_true(&v));
        let token_path = var("HF_TOKEN_PATH")
            .map_or_else(|| hf_home.join("token"), |p| expand_tilde(&p, home_dir()));
        let token = match token.filter(|t| !t.trim().is_empty()) {
            Some(t) => Some(Token {
                value: t.trim().to_string(),
                source: "--token".into(),
            }),
            None => match var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")) {
                Some(t) => Some(Token {
                    value: t.trim().to_string(),
                    source: "HF_TOKEN".into(),
                }),
                None => read_token_file(&token_path),
            },
        };
        Ok(Self {
            endpoint,
            cache_dir,
            token,
            offline,
        })
    }
}

fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "on" | "yes" | "true"
    )
}

fn expand_tilde(path: &str, home: Option<PathBuf>) -> PathBuf {
    match (path.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

/// The token saved by `hf auth login`, if there is one; warns when others may read it.
fn read_token_file(path: &Path) -> Option<Token> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = text.trim();
    if value.is_empty() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "token file {} can be read by other users (mode {:o}); run `chmod 600` on it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    Some(Token {
        value: value.to_string(),
        source: path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)], flag: Option<&str>) -> HubSettings {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubSettings::from_vars(flag.map(str::to_string), |k| map.get(k).cloned()).unwrap()
    }

    #[test]
    fn defaults_follow_huggingface_hub() {
        let s = settings(&[("HOME", "/home/u")], None);
        assert_eq!(s.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(s.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert!(!s.offline);
        let s = settings(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")], None);
        assert_eq!(s.cache_dir, PathBuf::from("/x/huggingface/hub"));
        let s = settings(&[("HOME", "/h"), ("HF_HOME", "~/hf")], None);
        assert_eq!(s.cache_dir, PathBuf::from("/h/hf/hub"));
        let s = settings(
            &[
                ("HF_HOME", "/hf"),
                ("HF_HUB_CACHE", "/c"),
                ("HF_ENDPOINT", "http://127.0.0.1:9/"),
                ("HF_HUB_OFFLINE", "True"),
            ],
            None,
        );
        assert_eq!(s.cache_dir, PathBuf::from("/c"));
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert!(s.offline);
    }

    #[test]
    fn token_precedence_and_secrecy() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let from_file = settings(&[("HF_HOME", home)], None).token.unwrap();
        assert_eq!(from_file.expose(), "hf_file");
        let env = settings(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")], None);
        assert_eq!(env.token.as_ref().unwrap().expose(), "hf_env");
        let flag = settings(
            &[("HF_HOME", home), ("HF_TOKEN", "hf_env")],
            Some("hf_flag"),
        );
        let token = flag.token.unwrap();
        assert_eq!(token.expose(), "hf_flag");
        assert!(
            !format!(
                "{token:?} {flag:?}",
                flag = settings(&[("HF_HOME", home)], None)
            )
            .contains("hf_")
        );
        assert!(
            settings(&[("HF_HOME", "/nonexistent")], None)
                .token
                .is_none()
        );
    }

    #[test]
    fn a_bad_endpoint_is_an_error() {
        let r = HubSettings::from_vars(None, |k| {
            (k == "HF_ENDPOINT").then(|| "huggingface.co".into())
        });
        assert!(r.is_err());
    }
}
