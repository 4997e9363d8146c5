//! `mt download --extract`: streaming, resumable extraction of `.tar.zst` image shards,
//! and the check of a `25M_full` manifest against the extracted files.
//!
//! **Extraction** ([`extract_shard`]) streams an archive (`.tar.zst`, `.tzst` or plain
//! `.tar`; zstd is also recognised by its magic number) member by member into `dest`
//! with 1 MiB buffers: no temporary copy of the archive, memory flat whatever its size.
//!
//! - *Atomic files.* Each member is written to `.mt-tmp-<tag>-<n>` in its own folder and
//!   renamed into place when complete, so a kill -9 never leaves a half-written file
//!   under a member's name. The folders a run writes temporary files in are journalled
//!   in `dest/.mt-extract/<shard>.dirs`; a rerun first removes what a killed run left
//!   there, and a successful run leaves no temporary file.
//! - *Resumable per shard.* A shard is done when `dest/.mt-extract/<shard file name>.done`
//!   exists (see `Marker`). It is written only after the last member is in place, the
//!   end of the tar stream and of the zstd frame were seen, and the destination
//!   filesystem was flushed (`syncfs`); the marker itself goes through temp + fsync +
//!   rename + fsync of the folder. A rerun skips a shard whose marker matches the
//!   archive's size and modification time, and redoes any other from its first member
//!   (overwriting what it had written).
//! - *Truncation is never silent.* A shard cut at any byte fails with
//!   `<archive>: truncated or corrupt after N members (last `a/b.jpg`): <cause>` (the
//!   `(last ...)` part is left out when N is 0). zstd reports a frame cut short (the
//!   stream is read to its very end, past the tar end-of-archive block, so a cut in the
//!   last bytes of the frame is seen too), a short member is caught by its size, and a
//!   tar stream that stops at a member boundary without its end-of-archive block is
//!   reported as well.
//! - *Safety.* Member paths must be relative and stay inside `dest`: an absolute path, a
//!   `..` component or a top-level `.mt-extract` fails the shard, naming the member.
//!   Symlinks, hard links, devices and fifos are not extracted; they are counted in
//!   [`ShardReport::ignored`] and logged as a warning. A member over
//!   `MAX_MEMBER_BYTES`, more than `MAX_SHARD_MEMBERS` members or more than
//!   `MAX_SHARD_BYTES` unpacked fail the shard (decompression bombs). Files get default permissions (no modes,
//!   owners or times from the archive).
//!
//! **Manifest check** ([`check_manifest`]) reads only the file-name column of each
//! parquet manifest, row group by row group, and compares it with the regular files
//! under `dest` (the `.mt-extract` state folder excluded). The matching rule is the one
//! `mt inspect` uses to join `25M_full` rows with archive members (by file name), made
//! exact for names that carry folders: a manifest value `v` (leading `./` dropped)
//! matches an extracted file at relative path `p` when `p == v` or `p` ends with `/v`.
//! A bare name (`x.jpg`, as in MedTrinity-25M) therefore matches `x.jpg` in any folder
//! of the archives; `a/x.jpg` matches `a/x.jpg` and `shard_3/a/x.jpg` but not `b/x.jpg`.
//! The comparison goes through an external sort (`KeyTally`), so memory stays flat in
//! the number of rows and files (only the returned lists grow).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use arrow_array::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::data::ParquetShard;
pub(crate) use crate::core::data::archive::MAX_MEMBER_BYTES;
use crate::core::data::columns::StrColumn;
use crate::core::data::parquet::{batches, check_row_groups};
use crate::core::extsort::KeyTally;

/// The state folder under the destination (markers and journals). Reserved: archive
/// members may not write into it, and [`check_manifest`] does not count it.
pub const STATE_DIR: &str = ".mt-extract";
/// Version of the [`Marker`] format; a marker of another version is not trusted.
const MARKER_VERSION: u32 = 1;
/// Buffer size of the compressed input, the decompressed stream and file copies.
const BUF_BYTES: usize = 1 << 20;
/// Memory the manifest check sorts in before spilling to temporary files.
const CHECK_BUDGET: usize = 256 << 20;
/// Rows per record batch when reading manifests.
const MANIFEST_BATCH_ROWS: usize = 64 * 1024;

/// Outcome of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardReport {
    /// The archive.
    pub shard: PathBuf,
    /// Regular files written (or, when `skipped`, written by the run that finished it).
    pub entries: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Members not extracted: symlinks, hard links, devices, fifos, unknown types.
    pub ignored: u64,
    /// The shard was already extracted (its marker matches the archive); nothing was done.
    pub skipped: bool,
}

/// What `dest/.mt-extract/<shard file name>.done` holds (JSON). A marker matches an
/// archive when `version`, `archive_bytes` and `archive_mtime_ns` all agree with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub version: u32,
    /// The archive's file name.
    pub archive: String,
    /// The archive's size in bytes when it was extracted.
    pub archive_bytes: u64,
    /// The archive's modification time (nanoseconds since the Unix epoch).
    pub archive_mtime_ns: i128,
    pub entries: u64,
    pub bytes: u64,
    pub ignored: u64,
}

/// The manifest check: every file name of the manifests against the files under `dest`.
/// `present + missing.len() == expected`; `missing` and `extra` are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestCheck {
    /// Manifest rows with a (non-null) file name.
    pub expected: u64,
    /// Rows whose file is under `dest`.
    pub present: u64,
    /// Rows whose file name column is null (counted apart, not in `expected`).
    pub nulls: u64,
    /// The file name of each row whose file is absent (a name listed twice in the
    /// manifests and absent appears twice).
    pub missing: Vec<String>,
    /// Files under `dest` (relative paths, `/`-separated) that no row refers to.
    pub extra: Vec<String>,
}

/// Extracts `archive` (`.tar.zst`, `.tzst` or `.tar`) into `dest` (created if needed),
/// streaming, unless the marker of an earlier complete run matches it. Errors name the
/// archive; a truncated or corrupt one reads
/// `<archive>: truncated or corrupt after N members (last `a/b.jpg`): <cause>` and leaves
/// the shard without a marker (a rerun redoes it from the start).
pub fn extract_shard(archive: &Path, dest: &Path) -> Result<ShardReport> {
    extract_with(archive, dest, Limits::default())
}

/// Checks the file-name `column` (`"file_name"` for `25M_full`) of the parquet
/// `manifests` against the regular files under `dest`; see the module notes for the
/// matching rule. Fails on an unreadable manifest, a missing or non-string column, or an
/// unreadable folder, naming it.
pub fn check_manifest(manifests: &[PathBuf], dest: &Path, column: &str) -> Result<ManifestCheck> {
    // Keys are `<base name>\0<full name>`: the entries of one base name sort together,
    // and each distinct full name is one group with its counts (tag 0 = manifest rows,
    // tag 1 = files).
    let mut tally = KeyTally::new(CHECK_BUDGET);
    let mut check = ManifestCheck::default();
    let mut key = Vec::new();
    for manifest in manifests {
        read_names(manifest, column, &mut |name| {
            let Some(name) = name else {
                check.nulls += 1;
                return Ok(());
            };
            check.expected += 1;
            let name = strip_dot_slash(name);
            if name.is_empty() || name.contains('\0') || name.ends_with('/') {
                // No file can have this name.
                check.missing.push(name.to_string());
                return Ok(());
            }
            tally_key(&mut key, name);
            tally.push(&key, 0, "")
        })?;
    }
    walk_files(dest, &mut |rel| {
        tally_key(&mut key, rel);
        tally.push(&key, 1, "")
    })?;
    let mut group = NameGroup::default();
    tally.groups(|g| {
        let Some(sep) = g.key.iter().position(|&b| b == 0) else {
            return;
        };
        let full = String::from_utf8_lossy(&g.key[sep + 1..]).into_owned();
        if group.base.as_slice() != &g.key[..sep] {
            group.settle(&mut check);
            group.base = g.key[..sep].to_vec();
        }
        group.names.push((full, g.counts));
    })?;
    group.settle(&mut check);
    check.missing.sort_unstable();
    check.extra.sort_unstable();
    Ok(check)
}

// ---------------------------------------------------------------------------------
// Extraction

/// Bounds on what one shard may unpack: a decompression bomb (a huge member, a flood of
/// tiny ones, or terabytes in all) fails the shard with a clear error instead of filling
/// the disk.
#[derive(Debug, Clone, Copy)]
struct Limits {
    member_bytes: u64,
    members: u64,
    total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            member_bytes: MAX_MEMBER_BYTES,
            members: MAX_SHARD_MEMBERS,
            total_bytes: MAX_SHARD_BYTES,
        }
    }
}

/// Most members (files and folders) one shard may hold (MedTrinity-25M's hold ~10^5).
pub(crate) const MAX_SHARD_MEMBERS: u64 = 10_000_000;

/// Most bytes one shard may unpack to (MedTrinity-25M's are a few GB).
pub(crate) const MAX_SHARD_BYTES: u64 = 1 << 40;

fn extract_with(archive: &Path, dest: &Path, limits: Limits) -> Result<ShardReport> {
    let shown = archive.display();
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{shown}: not a file name"))?;
    let stamp = Stamp::of(archive)?;
    let state = dest.join(STATE_DIR);
    fs::create_dir_all(&state).with_context(|| format!("cannot create {}", state.display()))?;
    let marker_path = state.join(format!("{name}.done"));
    let journal_path = state.join(format!("{name}.dirs"));
    let tag = shard_tag(&name);

    if let Some(marker) = read_marker(&marker_path) {
        if stamp.matches(&marker) {
            // A run killed between the marker and the journal removal left the journal.
            let _ = fs::remove_file(&journal_path);
            return Ok(ShardReport {
                shard: archive.to_path_buf(),
                entries: marker.entries,
                bytes: marker.bytes,
                ignored: marker.ignored,
                skipped: true,
            });
        }
        fs::remove_file(&marker_path)
            .with_context(|| format!("cannot remove the stale {}", marker_path.display()))?;
    }
    clean_stale_temps(dest, &journal_path, &tag)?;

    let mut journal = Journal::create(&journal_path)?;
    let counts = unpack(archive, dest, limits, &tag, &mut journal)?;
    if Stamp::of(archive)? != stamp {
        bail!("{shown}: the archive changed while it was being extracted; run again");
    }
    sync_filesystem(dest)?;
    let marker = Marker {
        version: MARKER_VERSION,
        archive: name,
        archive_bytes: stamp.bytes,
        archive_mtime_ns: stamp.mtime_ns,
        entries: counts.entries,
        bytes: counts.bytes,
        ignored: counts.ignored,
    };
    write_durably(&marker_path, &serde_json::to_vec_pretty(&marker)?)?;
    drop(journal);
    let _ = fs::remove_file(&journal_path);
    if counts.ignored > 0 {
        tracing::warn!(
            "{shown}: {} member(s) not extracted (symlinks, hard links, devices or fifos; first `{}`)",
            counts.ignored,
            counts.first_ignored
        );
    }
    Ok(ShardReport {
        shard: archive.to_path_buf(),
        entries: counts.entries,
        bytes: counts.bytes,
        ignored: counts.ignored,
        skipped: false,
    })
}

/// What identifies the archive a marker was written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    bytes: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(archive: &Path) -> Result<Self> {
        let meta =
            fs::metadata(archive).with_context(|| format!("{}: cannot open", archive.display()))?;
        if !meta.is_file() {
            bail!("{}: not a file", archive.display());
        }
        let mtime_ns = meta
            .modified()
            .ok()
            .map(|t| match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            })
            .unwrap_or(0);
        Ok(Stamp {
            bytes: meta.len(),
            mtime_ns,
        })
    }

    fn matches(&self, marker: &Marker) -> bool {
        marker.version == MARKER_VERSION
            && marker.archive_bytes == self.bytes
            && marker.archive_mtime_ns == self.mtime_ns
    }
}

/// The marker at `path`, None when absent or unreadable (then the shard is redone).
fn read_marker(path: &Path) -> Option<Marker> {
    let bytes = fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(
                "{}: unreadable marker ({e}); redoing the shard",
                path.display()
            );
            None
        }
    }
}

/// Eight hex digits naming a shard's temporary files, so shards extracted side by side
/// into one folder never share a temporary name.
fn shard_tag(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    crate::core::hash::hex(&digest[..4])
}

fn temp_prefix(tag: &str) -> String {
    format!(".mt-tmp-{tag}-")
}

/// The folders (relative to `dest`) a run of one shard writes temporary files in, one
/// JSON string a line, appended before the first temporary file goes there. Not fsynced:
/// it only has to survive a killed process, and the page cache does.
struct Journal {
    out: BufWriter<File>,
    seen: HashSet<PathBuf>,
}

impl Journal {
    fn create(path: &Path) -> Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Journal {
            out: BufWriter::new(file),
            seen: HashSet::new(),
        })
    }

    fn note(&mut self, dir: &Path) -> io::Result<()> {
        if self.seen.contains(dir) {
            return Ok(());
        }
        let line = serde_json::to_string(&dir.to_string_lossy())?;
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        self.seen.insert(dir.to_path_buf());
        Ok(())
    }
}

/// Removes the temporary files a killed run of this shard left in the folders its
/// journal lists.
fn clean_stale_temps(dest: &Path, journal: &Path, tag: &str) -> Result<()> {
    let mut dirs = Vec::new();
    match File::open(journal) {
        Ok(f) => {
            for line in BufReader::new(f).lines() {
                let line = line.with_context(|| format!("cannot read {}", journal.display()))?;
                // A line cut short by the kill is no folder of ours.
                if let Ok(dir) = serde_json::from_str::<String>(&line) {
                    dirs.push(dir);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", journal.display())),
    }
    let prefix = temp_prefix(tag);
    let mut removed = 0u64;
    for dir in dirs {
        // Only folders that are still safe relative paths (the journal is ours, but a
        // hand-edited one must not make us delete elsewhere).
        let rel = if dir.is_empty() {
            PathBuf::new()
        } else {
            match member_path(dir.as_bytes()) {
                Ok(Some(rel)) => rel,
                _ => continue,
            }
        };
        let Ok(entries) = fs::read_dir(dest.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                fs::remove_file(entry.path()).with_context(|| {
                    format!("cannot remove the stale {}", entry.path().display())
                })?;
                removed += 1;
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            "{}: removed {removed} temporary file(s) left by an interrupted extraction",
            dest.display()
        );
    }
    Ok(())
}

/// The relative path a member may be written to: `./` and empty components dropped.
/// Ok(None) for the destination itself (`.` or `./`). An absolute path, a `..`
/// component, a top-level [`STATE_DIR`] or an empty name is an error (the reason).
fn member_path(raw: &[u8]) -> std::result::Result<Option<PathBuf>, &'static str> {
    use std::os::unix::ffi::OsStrExt as _;
    if raw.is_empty() {
        return Err("has an empty name");
    }
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => {
                if out.as_os_str().is_empty() && part == STATE_DIR {
                    return Err("writes into the reserved .mt-extract folder");
                }
                out.push(part);
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("has an absolute path"),
            Component::ParentDir => return Err("has a `..` component"),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Counts of one extraction.
#[derive(Debug, Default)]
struct Counts {
    entries: u64,
    bytes: u64,
    ignored: u64,
    first_ignored: String,
}

/// A reader that remembers whether it was read past its end.
struct Tracked<R> {
    inner: R,
    eof: bool,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        Ok(n)
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The decompressed tar stream of `archive`.
fn open_stream(archive: &Path) -> Result<Box<dyn Read>> {
    let file =
        File::open(archive).with_context(|| format!("{}: cannot open", archive.display()))?;
    let mut input = BufReader::with_capacity(BUF_BYTES, file);
    let name = archive.to_string_lossy().to_ascii_lowercase();
    let head = input
        .fill_buf()
        .with_context(|| format!("{}: cannot read", archive.display()))?;
    let zstd = name.ends_with(".zst") || name.ends_with(".tzst") || head.starts_with(&ZSTD_MAGIC);
    Ok(if zstd {
        let decoder = zstd::Decoder::with_buffer(input)
            .with_context(|| format!("{}: cannot start a zstd decoder", archive.display()))?;
        Box::new(BufReader::with_capacity(BUF_BYTES, decoder))
    } else {
        Box::new(input)
    })
}

/// Why copying a member stopped.
enum CopyError {
    /// The archive (truncated, corrupt).
    Read(io::Error),
    /// The member ended before its declared size.
    Short { got: u64, size: u64 },
    /// The destination.
    Write(io::Error),
}

fn unpack(
    archive: &Path,
    dest: &Path,
    limits: Limits,
    tag: &str,
    journal: &mut Journal,
) -> Result<Counts> {
    let shown = archive.display();
    let mut tar = tar::Archive::new(Tracked {
        inner: open_stream(archive)?,
        eof: false,
    });
    let mut counts = Counts::default();
    let mut last: Option<String> = None;
    let broken = |counts: &Counts, last: &Option<String>, cause: &dyn std::fmt::Display| {
        let n = counts.entries;
        match last {
            Some(last) => {
                anyhow!("{shown}: truncated or corrupt after {n} members (last `{last}`): {cause}")
            }
            None => anyhow!("{shown}: truncated or corrupt after {n} members: {cause}"),
        }
    };
    let prefix = temp_prefix(tag);
    let mut buf = vec![0u8; BUF_BYTES];
    let mut ready_dir: Option<PathBuf> = None;
    let entries = tar.entries().map_err(|e| broken(&counts, &last, &e))?;
    let mut members = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| broken(&counts, &last, &e))?;
        members += 1;
        if members > limits.members {
            bail!(
                "{shown}: more than {} members; refusing to go on (a decompression bomb?)",
                limits.members
            );
        }
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let shown_member = || String::from_utf8_lossy(&raw).into_owned();
        let is_file = kind.is_file() || kind.is_gnu_sparse();
        if !is_file && !kind.is_dir() {
            if kind.is_pax_global_extensions() {
                continue;
            }
            if counts.ignored == 0 {
                counts.first_ignored = shown_member();
            }
            counts.ignored += 1;
            continue;
        }
        let rel = match member_path(&raw) {
            Ok(p) => p,
            Err(why) => bail!(
                "{shown}: member `{}` {why}; refusing to extract it (nothing is written outside {})",
                shown_member(),
                dest.display()
            ),
        };
        let Some(rel) = rel else {
            if is_file {
                bail!(
                    "{shown}: member `{}` is a file without a name",
                    shown_member()
                );
            }
            continue;
        };
        let target = dest.join(&rel);
        if kind.is_dir() {
            fs::create_dir_all(&target).with_context(|| {
                format!("{shown}: cannot create the folder {}", target.display())
            })?;
            continue;
        }
        let size = entry.size();
        if size > limits.member_bytes {
            bail!(
                "{shown}: member `{}` is {size} bytes, over the {}-byte limit per member",
                rel.display(),
                limits.member_bytes
            );
        }
        if counts.bytes + size > limits.total_bytes {
            bail!(
                "{shown}: member `{}` would take the shard past {} bytes unpacked; refusing to go on \
                 (a decompression bomb?)",
                rel.display(),
                limits.total_bytes
            );
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        if ready_dir.as_deref() != Some(parent) {
            journal
                .note(parent)
                .with_context(|| format!("cannot write the journal of {shown}"))?;
            let dir = dest.join(parent);
            fs::create_dir_all(&dir)
                .with_context(|| format!("{shown}: cannot create the folder {}", dir.display()))?;
            ready_dir = Some(parent.to_path_buf());
        }
        let temp = dest
            .join(parent)
            .join(format!("{prefix}{}", counts.entries + counts.ignored));
        match copy_member(&mut entry, size, &temp, &mut buf) {
            Ok(()) => {}
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(match e {
                    CopyError::Read(e) => {
                        broken(&counts, &last, &format!("reading `{}`: {e}", rel.display()))
                    }
                    CopyError::Short { got, size } => broken(
                        &counts,
                        &last,
                        &format!("`{}` ends after {got} of its {size} bytes", rel.display()),
                    ),
                    CopyError::Write(e) => {
                        anyhow!("{shown}: cannot write {}: {e}", target.display())
                    }
                });
            }
        }
        if let Err(e) = fs::rename(&temp, &target) {
            let _ = fs::remove_file(&temp);
            bail!("{shown}: cannot move {} into place: {e}", target.display());
        }
        counts.entries += 1;
        counts.bytes += size;
        last = Some(rel.to_string_lossy().into_owned());
    }
    let mut rest = tar.into_inner();
    if rest.eof {
        return Err(broken(
            &counts,
            &last,
            &"the tar stream stops without its end-of-archive block",
        ));
    }
    // Read the padding after the end-of-archive block to the end: only then does zstd
    // see (and check) the end of its frame.
    io::copy(&mut rest, &mut io::sink()).map_err(|e| broken(&counts, &last, &e))?;
    Ok(counts)
}

/// Copies exactly `size` bytes of a member into a new file at `temp`.
fn copy_member(
    entry: &mut impl Read,
    size: u64,
    temp: &Path,
    buf: &mut [u8],
) -> std::result::Result<(), CopyError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(temp)
        .map_err(CopyError::Write)?;
    let mut got = 0u64;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        file.write_all(&buf[..n]).map_err(CopyError::Write)?;
        got += n as u64;
    }
    if got != size {
        return Err(CopyError::Short { got, size });
    }
    Ok(())
}

/// Flushes everything written under `dest` to disk: one `syncfs` of its filesystem
/// (far cheaper than an fsync per file for millions of small files).
fn sync_filesystem(dest: &Path) -> Result<()> {
    let dir = File::open(dest).with_context(|| format!("cannot open {}", dest.display()))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot flush {} to disk", dest.display()));
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        drop(dir);
        // SAFETY: sync takes no arguments and cannot fail.
        unsafe { libc::sync() };
    }
    Ok(())
}

/// Writes `bytes` to `path` so that after a crash it holds the old content or the new,
/// and the new content is on disk when this returns: temp + fsync + rename + fsync of
/// the folder.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot move the new {} into place", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot flush the folder {}", dir.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Manifest check

/// Calls `visit` with the value of `column` in every row of the parquet `path` (None for
/// null), reading that column only, one row group at a time.
fn read_names(
    path: &Path,
    column: &str,
    visit: &mut dyn FnMut(Option<&str>) -> Result<()>,
) -> Result<()> {
    let shown = path.display();
    let shard = ParquetShard::open(path)?;
    let projection = shard.projection(Some(&[column.to_string()]))?;
    let file = File::open(path).with_context(|| format!("{shown}: cannot open"))?;
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .with_context(|| format!("{shown}: not a readable parquet file"))?;
    check_row_groups(path, shard.bytes, meta.metadata())?;
    let mask = ProjectionMask::roots(meta.parquet_schema(), projection);
    for rg in 0..meta.metadata().num_row_groups() {
        // One reader per row group, as `ParquetShard::read_row_groups` does.
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file.try_clone()?, meta.clone())
                .with_row_groups(vec![rg])
                .with_projection(mask.clone())
                .with_batch_size(MANIFEST_BATCH_ROWS);
        let reader =
            batches(reader).with_context(|| format!("{shown}: row group {rg}: cannot read"))?;
        for batch in reader {
            let batch: RecordBatch =
                batch.with_context(|| format!("{shown}: row group {rg}: corrupt data"))?;
            let names =
                StrColumn::new(column, batch.column(0)).with_context(|| format!("{shown}"))?;
            for i in 0..batch.num_rows() {
                visit(names.get(i))?;
            }
        }
    }
    Ok(())
}

/// Every regular file under `root`, as a `/`-separated relative path, the top-level
/// [`STATE_DIR`] excluded. Symlinks are not followed.
fn walk_files(root: &Path, visit: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries =
            fs::read_dir(&dir).with_context(|| format!("{}: cannot list folder", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("{}: cannot list folder", dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if rel.is_empty() && name == STATE_DIR {
                continue;
            }
            let path = if rel.is_empty() {
                name.into_owned()
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry
                .file_type()
                .with_context(|| format!("{}: cannot stat", entry.path().display()))?;
            if kind.is_dir() {
                stack.push((entry.path(), path));
            } else if kind.is_file() {
                visit(&path)?;
            }
        }
    }
    Ok(())
}

fn strip_dot_slash(mut name: &str) -> &str {
    while let Some(rest) = name.strip_prefix("./") {
        name = rest.trim_start_matches('/');
    }
    name
}

fn tally_key(key: &mut Vec<u8>, name: &str) {
    let base = name.rsplit('/').next().unwrap_or(name);
    key.clear();
    key.extend_from_slice(base.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
}

/// The distinct names sharing one base name: (full name, [manifest rows, files]).
#[derive(Default)]
struct NameGroup {
    base: Vec<u8>,
    names: Vec<(String, [u64; 2])>,
}

impl NameGroup {
    /// Matches the group's manifest names with its files and empties it.
    fn settle(&mut self, check: &mut ManifestCheck) {
        let names = std::mem::take(&mut self.names);
        let has_rows = names.iter().any(|(_, c)| c[0] > 0);
        let has_files = names.iter().any(|(_, c)| c[1] > 0);
        if !has_files {
            for (name, c) in &names {
                for _ in 0..c[0] {
                    check.missing.push(name.clone());
                }
            }
            return;
        }
        if !has_rows {
            check
                .extra
                .extend(names.into_iter().filter(|(_, c)| c[1] > 0).map(|(n, _)| n));
            return;
        }
        // Every `/`-aligned suffix of every file, and every manifest name.
        let mut suffixes: HashSet<&str> = HashSet::new();
        let mut wanted: HashSet<&str> = HashSet::new();
        for (name, c) in &names {
            if c[1] > 0 {
                suffixes.insert(name.as_str());
                suffixes.extend(name.match_indices('/').map(|(i, _)| &name[i + 1..]));
            }
            if c[0] > 0 {
                wanted.insert(name.as_str());
            }
        }
        for (name, c) in &names {
            if c[0] > 0 {
                if suffixes.contains(name.as_str()) {
                    check.present += c[0];
                } else {
                    for _ in 0..c[0] {
                        check.missing.push(name.clone());
                    }
                }
            }
            if c[1] > 0 {
                let matched = wanted.contains(name.as_str())
                    || name
                        .match_indices('/')
                        .any(|(i, _)| wanted.contains(&name[i + 1..]));
                if !matched {
                    check.extra.push(name.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
