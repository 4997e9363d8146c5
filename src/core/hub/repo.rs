//! Which repository, revision and path a user means: `org/name`, `datasets/org/name`,
//! `hf://datasets/org/name@rev/path`.

use anyhow::Result;

use crate::core::error::usage;

/// The kind of Hub repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// Parses `model` / `dataset` (also the plural forms used in URLs).
    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "model" | "models" => Ok(Self::Model),
            "dataset" | "datasets" => Ok(Self::Dataset),
            other => Err(usage(format!(
                "unknown repository type `{other}` (model or dataset)"
            ))),
        }
    }

    /// The plural used in API paths and cache folder names (`models`, `datasets`).
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Self::Model => "models",
            Self::Dataset => "datasets",
        }
    }

    /// The URL prefix of resolve links (`` for models, `datasets/` for datasets).
    pub(crate) fn url_prefix(self) -> &'static str {
        match self {
            Self::Model => "",
            Self::Dataset => "datasets/",
        }
    }

    fn hf_hub(self) -> hf_hub::RepoType {
        match self {
            Self::Model => hf_hub::RepoType::Model,
            Self::Dataset => hf_hub::RepoType::Dataset,
        }
    }
}

/// A repository as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoRef {
    pub kind: RepoKind,
    /// `org/name` (or a legacy `name`).
    pub id: String,
    /// Revision from an `@rev` suffix, if any.
    pub revision: Option<String>,
    /// Folder or file inside the repository from an `hf://` path, if any.
    pub path: Option<String>,
}

impl RepoRef {
    /// Parses `org/name`, `datasets/org/name`, `models/org/name` or
    /// `hf://[datasets/]org/name[@rev][/path]`; `kind` applies when the text names none.
    /// In the `hf://` form a revision holding `/` is written URL-encoded
    /// (`@refs%2Fpr%2F1`), as huggingface_hub's HfFileSystem does.
    pub(crate) fn parse(text: &str, kind: RepoKind) -> Result<Self> {
        let (rest, is_url) = match text.strip_prefix("hf://") {
            Some(rest) => (rest, true),
            None => (text, false),
        };
        let (kind, rest) = match rest.split_once('/') {
            Some((prefix @ ("datasets" | "models"), tail)) => (RepoKind::parse(prefix)?, tail),
            _ => (kind, rest),
        };
        let mut parts = rest.splitn(3, '/');
        let first = parts.next().unwrap_or_default();
        let second = parts.next();
        let tail = parts.next();
        if !is_url && tail.is_some() {
            return Err(usage(format!(
                "`{text}` is not a repository id (org/name); use hf://{}{rest} for a path inside one",
                kind.url_prefix()
            )));
        }
        let (name, revision) = match second.unwrap_or(first).split_once('@') {
            Some((name, rev)) => (name, Some(percent_decode(rev))),
            None => (second.unwrap_or(first), None),
        };
        let id = match second {
            Some(_) => format!("{first}/{name}"),
            None => name.to_string(),
        };
        check_id(&id, text)?;
        if revision.as_deref() == Some("") {
            return Err(usage(format!("`{text}`: empty revision after `@`")));
        }
        let path = tail
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty());
        Ok(Self {
            kind,
            id,
            revision,
            path,
        })
    }

    /// The cache folder name (`datasets--org--name`).
    pub(crate) fn folder_name(&self) -> String {
        hf_hub::Repo::new(self.id.clone(), self.kind.hf_hub()).folder_name()
    }

    /// How messages name the repository (`datasets/org/name`).
    pub(crate) fn display(&self) -> String {
        format!("{}{}", self.kind.url_prefix(), self.id)
    }
}

/// Repository ids as the Hub accepts them: one or two parts of `[A-Za-z0-9._-]`, not
/// starting or ending with `-`/`.`, no `--` or `..`.
fn check_id(id: &str, text: &str) -> Result<()> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
            && !p.contains("--")
            && !p.contains("..")
    };
    if id.split('/').count() <= 2 && id.split('/').all(part_ok) {
        Ok(())
    } else {
        Err(usage(format!(
            "`{text}` is not a valid repository id (expected org/name of letters, digits, `-`, `_`, `.`)"
        )))
    }
}

/// Decodes `%XX` escapes (revisions in `hf://` URLs); invalid escapes stay as written.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a path or revision for a URL: unreserved characters stay, `/` stays when
/// `keep_slash`, everything else becomes `%XX`.
pub(crate) fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A 40-hex git commit id.
pub fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RepoRef {
        RepoRef::parse(text, RepoKind::Model).unwrap()
    }

    #[test]
    fn plain_and_prefixed_ids() {
        let r = parse("UCSC-VLAA/LLaVA-Med-pp");
        assert_eq!(
            (r.kind, r.id.as_str()),
            (RepoKind::Model, "UCSC-VLAA/LLaVA-Med-pp")
        );
        assert_eq!(r.folder_name(), "models--UCSC-VLAA--LLaVA-Med-pp");
        let d = parse("datasets/UCSC-VLAA/MedTrinity-25M");
        assert_eq!(d.kind, RepoKind::Dataset);
        assert_eq!(d.folder_name(), "datasets--UCSC-VLAA--MedTrinity-25M");
        assert_eq!(d.display(), "datasets/UCSC-VLAA/MedTrinity-25M");
        assert_eq!(parse("gpt2").id, "gpt2");
        let typed = RepoRef::parse("org/name", RepoKind::Dataset).unwrap();
        assert_eq!(typed.kind, RepoKind::Dataset);
    }

    #[test]
    fn hf_urls_carry_revision_and_path() {
        let r = parse("hf://datasets/UCSC-VLAA/MedTrinity-25M@main/25M_accessible/");
        assert_eq!(r.kind, RepoKind::Dataset);
        assert_eq!(r.id, "UCSC-VLAA/MedTrinity-25M");
        assert_eq!(r.revision.as_deref(), Some("main"));
        assert_eq!(r.path.as_deref(), Some("25M_accessible"));
        let pr = parse("hf://org/model@refs%2Fpr%2F3/a/b.json");
        assert_eq!(pr.revision.as_deref(), Some("refs/pr/3"));
        assert_eq!(pr.path.as_deref(), Some("a/b.json"));
        assert_eq!(parse("hf://org/model").path, None);
    }

    #[test]
    fn bad_ids_are_usage_errors() {
        for bad in [
            "a/b/c",
            "org/na me",
            "org/-x",
            "org//x",
            "hf://org/x@",
            "org/a..b",
        ] {
            let err = RepoRef::parse(bad, RepoKind::Model).unwrap_err();
            assert_eq!(crate::core::error::exit_code(&err), 2, "{bad}");
        }
    }

    #[test]
    fn percent_coding_round_trips() {
        assert_eq!(percent_encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(percent_encode("a b/c+d.txt", true), "a%20b/c%2Bd.txt");
        assert_eq!(
            percent_decode("refs%2Fconvert%2Fparquet"),
            "refs/convert/parquet"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("main"));
    }
}
