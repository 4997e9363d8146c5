//! Building an index folder from corpus files: streamed into tantivy within a memory
//! budget, merged into one segment, and renamed into place only when complete.
//!
//! The work happens in `<parent>/.<name>.tmp-*` beside the output, under an exclusive
//! lock on `<parent>/.<name>.lock` (a second build of the same output waits for the
//! first). A build killed at any moment leaves only such a temporary folder, which is
//! never opened and is removed by the next build; the output is replaced by two renames
//! once the new index and its `mt-knowledge.json` are on disk.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use tantivy::indexer::NoMergePolicy;
use tantivy::{Index, IndexWriter, TantivyDocument};

use super::corpus::{DuplicateIds, PassageReader};
use super::manifest::{CorpusFile, MANIFEST, Manifest};
use super::schema::{self, Fields};
use crate::core::error::usage;
use crate::core::progress;

/// tantivy's smallest memory budget for one indexing thread.
const MIN_THREAD_MEMORY: usize = 15_000_000;
/// tantivy's largest budget for one indexing thread is just under 4 GiB.
const MAX_THREAD_MEMORY: usize = 4_000_000_000;
/// tantivy uses at most 8 indexing threads.
const MAX_THREADS: usize = 8;

/// How to build.
#[derive(Debug, Clone)]
pub(crate) struct BuildOptions {
    /// Memory for the indexing threads together (tantivy flushes a segment when its
    /// thread's share is full); at least 15 MB.
    pub memory_bytes: usize,
    /// Rebuild even when the index is up to date.
    pub force: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            memory_bytes: 256 << 20,
            force: false,
        }
    }
}

/// What [`build`] did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BuildReport {
    /// The index folder.
    pub index: PathBuf,
    /// False when the index was up to date and left alone.
    pub built: bool,
    /// Why it was built (`no index yet`, `--force`, what changed), or `up to date`.
    pub reason: String,
    pub passages: u64,
    /// Wall time of the call.
    pub seconds: f64,
    /// Size of the index folder.
    pub bytes: u64,
    pub segments: usize,
}

/// Builds the index of `corpus` (JSONL files, indexed in order) into the folder `out`,
/// unless `out` is an index of the same files, unchanged since (size and modification
/// time), and `opts.force` is off. `out` must not exist or be an index made here.
pub(crate) fn build(corpus: &[PathBuf], out: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    let started = Instant::now();
    if corpus.is_empty() {
        return Err(usage("no corpus files given"));
    }
    if opts.memory_bytes < MIN_THREAD_MEMORY {
        return Err(usage(format!(
            "the indexing memory budget must be at least {} MB (--memory)",
            MIN_THREAD_MEMORY / 1_000_000
        )));
    }
    let (parent, name) = split(out)?;
    let files = corpus
        .iter()
        .map(|p| CorpusFile::stat(p))
        .collect::<Result<Vec<_>>>()?;
    if rebuild_reason(out, &files, opts.force)?.is_none() {
        return up_to_date(out, started);
    }
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let _lock = lock(&parent, &name)?;
    // Another process may have built it while this one waited for the lock.
    let Some(reason) = rebuild_reason(out, &files, opts.force)? else {
        return up_to_date(out, started);
    };
    remove_leftovers(&parent, &name);
    tracing::info!("{}: building the knowledge index ({reason})", out.display());
    let tmp = tempfile::Builder::new()
        .prefix(&tmp_prefix(&name))
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    let (passages, segments) = index_corpus(corpus, tmp.path(), opts.memory_bytes)?;
    Manifest::new(files, passages).write(tmp.path())?;
    let bytes = dir_size(tmp.path())?;
    make_readable(tmp.path())?;
    replace(&tmp.keep(), out, &parent, &name)?;
    Ok(BuildReport {
        index: out.to_path_buf(),
        built: true,
        reason,
        passages,
        seconds: started.elapsed().as_secs_f64(),
        bytes,
        segments,
    })
}

/// Why `out` needs a build for `files` (None when it is up to date); an error when `out`
/// exists but is not an index made here.
fn rebuild_reason(out: &Path, files: &[CorpusFile], force: bool) -> Result<Option<String>> {
    if fs::symlink_metadata(out).is_err() {
        return Ok(Some("no index yet".into()));
    }
    if !out.join(MANIFEST).is_file() {
        bail!(
            "{}: exists and is not a knowledge index made by mt (no {MANIFEST}); remove it or \
             choose another output",
            out.display()
        );
    }
    if force {
        return Ok(Some("--force".into()));
    }
    Ok(match Manifest::read(out) {
        Ok(m) => m.stale_reason(files),
        Err(e) => Some(format!("{e:#}")),
    })
}

fn up_to_date(out: &Path, started: Instant) -> Result<BuildReport> {
    let manifest = Manifest::read(out)?;
    let index = Index::open_in_dir(out)
        .with_context(|| format!("{}: cannot open the tantivy index", out.display()))?;
    Ok(BuildReport {
        index: out.to_path_buf(),
        built: false,
        reason: "up to date".into(),
        passages: manifest.passages,
        seconds: started.elapsed().as_secs_f64(),
        bytes: dir_size(out)?,
        segments: index.searchable_segment_ids()?.len(),
    })
}

/// The folder that holds `out`, and `out`'s name.
fn split(out: &Path) -> Result<(PathBuf, String)> {
    let name = out
        .file_name()
        .ok_or_else(|| usage(format!("{}: not a folder name", out.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// The name prefix of the temporary folders of a build of `name`.
fn tmp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Holds `<parent>/.<name>.lock` exclusively, waiting while another process holds it.
fn lock(parent: &Path, name: &str) -> Result<File> {
    let path = parent.join(format!(".{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot create {} (a read-only folder? build the index elsewhere with \
                 `mt convert knowledge-index -o DIR`)",
                path.display()
            )
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            tracing::info!("waiting for another build of {name} to finish");
            file.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    Ok(file)
}

/// Removes the temporary folders of builds of `name` that were killed (run under the lock,
/// so none of them is in use).
fn remove_leftovers(parent: &Path, name: &str) {
    let prefix = tmp_prefix(name);
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            tracing::info!("removing {} (left by an interrupted build)", path.display());
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// Streams every passage into a new index in `dir`, commits, and merges the segments into
/// one. Returns the passage and segment counts.
fn index_corpus(corpus: &[PathBuf], dir: &Path, memory: usize) -> Result<(u64, usize)> {
    let index = Index::builder()
        .schema(schema::schema())
        .settings(schema::settings())
        .create_in_dir(dir)
        .with_context(|| format!("cannot create an index in {}", dir.display()))?;
    schema::register(&index);
    let f = Fields::of(&index.schema())?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(memory / MIN_THREAD_MEMORY)
        .max(1);
    let per_thread = (memory / threads).min(MAX_THREAD_MEMORY);
    let mut writer: IndexWriter = index.writer_with_num_threads(threads, per_thread * threads)?;
    // One merge at the end instead of many along the way.
    writer.set_merge_policy(Box::new(NoMergePolicy));
    let bar = progress::bar(None, "passages", "indexing");
    let mut ids = DuplicateIds::default();
    let mut n: u64 = 0;
    for (i, path) in corpus.iter().enumerate() {
        for item in PassageReader::open(path)? {
            let (line, p) = item?;
            ids.check(corpus, i, line, &p.id)?;
            let mut doc = TantivyDocument::default();
            doc.add_u64(f.ord, n);
            doc.add_text(f.id, &p.id);
            doc.add_text(f.title, &p.title);
            doc.add_text(f.text, &p.text);
            doc.add_text(f.source, &p.source);
            writer.add_document(doc)?;
            n += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if n == 0 {
        return Err(usage(format!(
            "no passages in {}",
            corpus
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    writer.commit()?;
    let segments = index.searchable_segment_ids()?;
    if segments.len() > 1 {
        tracing::info!("merging {} segments of {n} passages", segments.len());
        writer.merge(&segments).wait()?;
    }
    writer.wait_merging_threads()?;
    Ok((n, index.searchable_segment_ids()?.len()))
}

/// Puts the finished index `new` at `out` (moving an older one aside first, then
/// removing it), and syncs the folder so the renames survive a power cut where it can.
fn replace(new: &Path, out: &Path, parent: &Path, name: &str) -> Result<()> {
    let old = parent.join(format!("{}old", tmp_prefix(name)));
    let had_old = fs::symlink_metadata(out).is_ok();
    if had_old {
        fs::rename(out, &old)
            .with_context(|| format!("cannot move the old {} aside", out.display()))?;
    }
    fs::rename(new, out)
        .with_context(|| format!("cannot move the new index to {}", out.display()))?;
    if let Err(e) = File::open(parent).and_then(|d| d.sync_all()) {
        tracing::debug!("cannot sync {}: {e}", parent.display());
    }
    if had_old && let Err(e) = fs::remove_dir_all(&old) {
        tracing::warn!("cannot remove the old index {}: {e}", old.display());
    }
    Ok(())
}

/// Opens the finished index to other users, like a copied folder: the temporary folder
/// and the atomically written files (tantivy's `meta.json`, the manifest) are created
/// private (0700 / 0600), but an index is shared data (one per corpus, read by every
/// task of a cluster job, maybe of several users).
#[cfg(unix)]
fn make_readable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the permissions of {}", path.display()))
    };
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            set(&path, 0o644)?;
        }
    }
    set(dir, 0o755)
}

#[cfg(not(unix))]
fn make_readable(_dir: &Path) -> Result<()> {
    Ok(())
}

/// Bytes of the files in `dir` (not recursive: an index folder is flat).
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::knowledge::KnowledgeIndex;

    /// A JSONL passage line.
    pub(crate) fn line(id: &str, title: &str, text: &str) -> String {
        serde_json::json!({"id": id, "title": title, "text": text, "source": "test"}).to_string()
    }

    /// A temporary folder with `c.jsonl` holding `lines`.
    pub(crate) fn corpus(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        (dir, path)
    }

    /// [`build`] of one corpus file.
    fn build1(path: &Path, out: &Path, opts: &BuildOptions) -> Result<BuildReport> {
        build(&[path.to_path_buf()], out, opts)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn lines(n: usize, text: impl Fn(usize) -> String) -> Vec<String> {
        (0..n)
            .map(|i| line(&format!("p{i:05}"), "", &text(i)))
            .collect()
    }

    #[cfg(unix)]
    #[test]
    fn the_index_is_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kb.jsonl");
        fs::write(&path, "{\"id\": 1, \"text\": \"glioma of the brain\"}\n").unwrap();
        let out = dir.path().join("kb.bm25");
        build1(&path, &out, &BuildOptions::default()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o755);
        for name in [MANIFEST, "meta.json"] {
            assert_eq!(mode(&out.join(name)), 0o644, "{name}");
        }
    }

    #[test]
    fn builds_once_then_is_up_to_date_until_forced() {
        let (dir, path) = corpus(&lines(50, |i| format!("passage {i} about the liver")));
        let out = dir.path().join("kb");
        let first = build1(&path, &out, &BuildOptions::default()).unwrap();
        assert!(first.built);
        assert_eq!(
            (first.reason.as_str(), first.passages, first.segments),
            ("no index yet", 50, 1)
        );
        assert!(first.bytes > 0);
        let again = build1(&path, &out, &BuildOptions::default()).unwrap();
        assert!(!again.built);
        assert_eq!((again.reason.as_str(), again.passages), ("up to date", 50));
        let forced = BuildOptions {
            force: true,
            ..BuildOptions::default()
        };
        let third = build1(&path, &out, &forced).unwrap();
        assert_eq!((third.built, third.reason.as_str()), (true, "--force"));
        // Only the index and its lock beside the corpus: no temporary folders.
        assert_eq!(names(dir.path()), [".kb.lock", "c.jsonl", "kb"]);
    }

    #[test]
    fn many_segments_merge_into_one_in_corpus_order() {
        // All passages score the same, so the hits come in document order, which must be
        // the corpus order however the indexing threads shared the passages out.
        let (dir, path) = corpus(&lines(20_000, |_| "same words about the spleen".into()));
        let out = dir.path().join("kb");
        let opts = BuildOptions {
            memory_bytes: 2 * MIN_THREAD_MEMORY,
            force: false,
        };
        let report = build1(&path, &out, &opts).unwrap();
        assert_eq!((report.passages, report.segments), (20_000, 1));
        let index = KnowledgeIndex::open(&out).unwrap();
        let hits = index.search("spleen", 20_000).unwrap();
        let expected: Vec<String> = (0..20_000).map(|i| format!("p{i:05}")).collect();
        let got: Vec<String> = hits.into_iter().map(|h| h.id).collect();
        assert!(got == expected, "hits are not in corpus order");
    }

    #[test]
    fn stale_corpus_rebuilds_in_open_or_build() {
        let (dir, path) = corpus(&lines(3, |i| format!("kidney stone {i}")));
        let index = KnowledgeIndex::open_or_build(&path).unwrap();
        assert_eq!(index.len(), 3);
        let built_at = index.describe()["built_at"].clone();
        drop(index);
        // Same content, new modification time: rebuilt.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let index = KnowledgeIndex::open_or_build(&path).unwrap();
        let d = index.describe();
        assert_ne!(d["built_at"], built_at);
        let modified = jiff::Timestamp::try_from(later).unwrap().to_string();
        assert_eq!(d["corpus"][0]["modified"], modified);
        // Unchanged: opened as is.
        let index = KnowledgeIndex::open_or_build(&path).unwrap();
        assert_eq!(index.describe()["built_at"], d["built_at"]);
        // More passages: rebuilt with them.
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&line("new", "", "kidney cyst"));
        fs::write(&path, text).unwrap();
        let index = KnowledgeIndex::open_or_build(&path).unwrap();
        assert_eq!(index.len(), 4);
        assert_eq!(index.search("cysts", 5).unwrap()[0].id, "new");
        // The index folder opens directly too.
        assert_eq!(
            KnowledgeIndex::open_or_build(&dir.path().join("c.jsonl.bm25"))
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn leftovers_of_killed_builds_are_never_opened_and_are_removed() {
        let (dir, path) = corpus(&lines(5, |i| format!("lung {i}")));
        let out = dir.path().join("c.jsonl.bm25");
        build1(&path, &out, &BuildOptions::default()).unwrap();
        // A build killed before its rename leaves a complete-looking temporary folder;
        // one killed between the two renames of a rebuild leaves `.tmp-old` and no index.
        let killed = dir.path().join(".c.jsonl.bm25.tmp-x1y2z3");
        fs::rename(&out, &killed).unwrap();
        fs::create_dir(dir.path().join(".c.jsonl.bm25.tmp-old")).unwrap();
        let e = KnowledgeIndex::open(&out).err().unwrap().to_string();
        assert!(e.contains("no such knowledge index folder"), "{e}");
        let report = build1(&path, &out, &BuildOptions::default()).unwrap();
        assert_eq!(report.reason, "no index yet");
        assert_eq!(
            names(dir.path()),
            [".c.jsonl.bm25.lock", "c.jsonl", "c.jsonl.bm25"]
        );
        // A folder without mt-knowledge.json (a build that never finished) is refused.
        fs::remove_file(out.join(MANIFEST)).unwrap();
        let e = KnowledgeIndex::open(&out).err().unwrap().to_string();
        assert!(e.contains("not a knowledge index made by"), "{e}");
    }

    #[test]
    fn bad_corpora_fail_cleanly_and_foreign_folders_are_left_alone() {
        let (dir, path) = corpus(&[
            line("a", "", "x"),
            String::new(),
            r#"{"id": "b", "title": "t"}"#.into(),
        ]);
        let out = dir.path().join("kb");
        let e = build1(&path, &out, &BuildOptions::default()).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!("{}:3: missing field `text`", path.display())
        );
        assert_eq!(names(dir.path()), [".kb.lock", "c.jsonl"]);

        fs::write(
            &path,
            format!("{}\n{}\n", line("a", "", "x"), line("a", "", "y")),
        )
        .unwrap();
        let e = build1(&path, &out, &BuildOptions::default()).unwrap_err();
        let p = path.display();
        assert_eq!(
            e.to_string(),
            format!("{p}:2: duplicate id `a` (first at {p}:1); ids must be unique")
        );

        fs::write(&path, "\n\n").unwrap();
        let e = build1(&path, &out, &BuildOptions::default()).unwrap_err();
        assert!(e.to_string().starts_with("no passages in"), "{e}");

        let foreign = dir.path().join("mine");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("keep.txt"), "precious").unwrap();
        fs::write(&path, line("a", "", "x")).unwrap();
        let e = build1(&path, &foreign, &BuildOptions::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("is not a knowledge index made by mt"),
            "{e}"
        );
        assert_eq!(names(&foreign), ["keep.txt"]);

        let tiny = BuildOptions {
            memory_bytes: 1 << 20,
            force: false,
        };
        let e = build1(&path, &out, &tiny).unwrap_err();
        assert_eq!(crate::core::error::exit_code(&e), 2);
    }
}
