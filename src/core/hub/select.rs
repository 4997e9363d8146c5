//! Which files of a listing to fetch: `--include` / `--exclude` with huggingface_hub's
//! semantics (Python `fnmatch`: `*` also matches `/`, `[!x]` negates, no escapes; a
//! pattern ending in `/` means everything under that folder).

use anyhow::{Result, bail};
use regex::Regex;

use super::api::RemoteFile;

/// A compiled `fnmatch` pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    regex: Regex,
}

impl Pattern {
    /// Compiles `pattern` the way `fnmatch.translate` does.
    pub(crate) fn new(pattern: &str) -> Result<Self> {
        let pattern = pattern.replace('\\', "/");
        let text = if pattern.ends_with('/') {
            format!("{pattern}*")
        } else {
            pattern.to_string()
        };
        let regex = Regex::new(&format!("(?s)^{}$", translate(&text)));
        match regex {
            Ok(regex) => Ok(Self { regex }),
            Err(e) => bail!("bad glob `{pattern}`: {e}"),
        }
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        if path.contains('\\') {
            self.regex.is_match(&path.replace('\\', "/"))
        } else {
            self.regex.is_match(path)
        }
    }
}

/// `fnmatch.translate` without the anchors.
fn translate(pat: &str) -> String {
    let chars: Vec<char> = pat.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                while chars.get(i) == Some(&'*') {
                    i += 1;
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '[' => match class_end(&chars, i) {
                None => out.push_str("\\["),
                Some(end) => {
                    out.push_str(&class(&chars[i..end]));
                    i = end + 1;
                }
            },
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out
}

/// The index of the `]` closing a class whose body starts at `start`.
fn class_end(chars: &[char], start: usize) -> Option<usize> {
    let mut j = start;
    if chars.get(j) == Some(&'!') {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    while j < chars.len() && chars[j] != ']' {
        j += 1;
    }
    (j < chars.len()).then_some(j)
}

/// A class body (`!a-z_`) as a regex class; every member is written as `\x{..}` so the
/// regex crate's class operators (`&&`, `--`, `~~`) cannot appear. Reversed ranges match
/// nothing, as in Python.
fn class(body: &[char]) -> String {
    let (negate, body) = match body.first() {
        Some('!') => (true, &body[1..]),
        _ => (false, body),
    };
    let esc = |c: char| format!("\\x{{{:x}}}", c as u32);
    let mut items = String::new();
    let mut k = 0;
    while k < body.len() {
        if k + 2 < body.len() && body[k + 1] == '-' {
            if body[k] <= body[k + 2] {
                items.push_str(&format!("{}-{}", esc(body[k]), esc(body[k + 2])));
            }
            k += 3;
        } else {
            items.push_str(&esc(body[k]));
            k += 1;
        }
    }
    match (negate, items.is_empty()) {
        (false, true) => "[^\\s\\S]".to_string(),
        (true, true) => "[\\s\\S]".to_string(),
        (false, false) => format!("[{items}]"),
        (true, false) => format!("[^{items}]"),
    }
}

/// `--include` / `--exclude`, within a config's file set (`--config`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    /// A config's folders: when set, only files under them.
    scope: Vec<Pattern>,
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl Selection {
    pub(crate) fn new(scope: &[String], include: &[String], exclude: &[String]) -> Result<Self> {
        let compile = |list: &[String]| {
            list.iter()
                .map(|p| Pattern::new(p))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Self {
            scope: compile(scope)?,
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    /// Whether `path` is wanted: inside the scope (if any), matched by some include (or
    /// there are none) and by no exclude.
    pub(crate) fn wants(&self, path: &str) -> bool {
        let any = |list: &[Pattern]| list.iter().any(|p| p.matches(path));
        (self.scope.is_empty() || any(&self.scope))
            && (self.include.is_empty() || any(&self.include))
            && !any(&self.exclude)
    }

    /// The wanted files of `files`, in their order.
    pub(crate) fn apply(&self, files: Vec<RemoteFile>) -> Vec<RemoteFile> {
        files.into_iter().filter(|f| self.wants(&f.path)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from CPython 3.11 `fnmatch.fnmatch(path, pattern)`.
    #[test]
    fn fnmatch_semantics() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.json", "config.json", true),
            ("*.json", "sub/config.json", true),
            ("*.safetensors", "model-00001-of-00004.safetensors", true),
            ("25M_demo/*", "25M_demo/train-00000-of-00010.parquet", true),
            ("25M_demo/*", "25M_demo_x/a", false),
            ("25M_demo/", "25M_demo/a/b.parquet", true),
            ("model-0000?-of-*", "model-00002-of-00004.safetensors", true),
            ("model-0000?-of-*", "model-0002-of-4", false),
            ("[!.]*", ".gitattributes", false),
            ("[!.]*", "README.md", true),
            ("[a-c]*", "b.txt", true),
            ("[c-a]*", "b.txt", false),
            ("[]]", "]", true),
            ("[!]]", "a", true),
            ("[", "[", true),
            ("a[b", "a[b", true),
            ("\\*", "\\x", true),
            ("a.b", "axb", false),
            ("*", "any/thing/at/all", true),
            ("CASE.txt", "case.txt", false),
            ("[&&]", "&", true),
            ("[a--]", "-", false),
        ];
        for &(pat, path, want) in cases {
            assert_eq!(
                Pattern::new(pat).unwrap().matches(path),
                want,
                "{pat} vs {path}"
            );
        }
    }

    #[test]
    fn include_then_exclude() {
        let s = Selection::new(
            &[],
            &["*.json".into(), "weights/".into()],
            &["*tokenizer*".into()],
        )
        .unwrap();
        assert!(s.wants("config.json"));
        assert!(s.wants("weights/a.bin"));
        assert!(!s.wants("tokenizer_config.json"));
        assert!(!s.wants("README.md"));
        assert!(Selection::default().wants("anything"));
        // A config narrows what --include picks.
        let s = Selection::new(&["25M_full/".into()], &["*.parquet".into()], &[]).unwrap();
        assert!(s.wants("25M_full/train-0.parquet"));
        assert!(!s.wants("25M_demo/train-0.parquet"));
        assert!(!s.wants("25M_full/README.md"));
    }
}
