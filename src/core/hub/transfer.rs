//! One file over HTTP into its partial file: resumed with `Range` from whatever an
//! earlier run (even one killed with -9) left, hashed while streaming, checked against
//! the listed size and hash. A server that ignores `Range` restarts the file cleanly;
//! a stalled or dropped connection resumes where it stopped; bytes that do not hash
//! to the listed etag are deleted and fetched once more before the file fails.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use super::api::RemoteFile;
use super::checksum::ContentHash;
use super::http::{Client, Follow, HttpError, header};

/// What one [`fetch`] did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fetched {
    /// Body bytes received in this run.
    pub received: u64,
    /// Bytes a previous run had left, that were kept.
    pub resumed_from: u64,
    /// Times the file started over (Range ignored, bad checksum).
    pub restarts: u32,
}

/// The partial file and the hash of what it holds so far.
struct Partial<'a> {
    file: File,
    path: &'a Path,
    len: u64,
    hash: ContentHash,
    etag: &'a str,
    size: u64,
    /// Bytes appended in this run.
    received: u64,
}

impl<'a> Partial<'a> {
    fn open(path: &'a Path, remote: &'a RemoteFile) -> Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut len = file.metadata()?.len();
        let etag = remote.etag();
        let mut hash = ContentHash::for_etag(etag, remote.size)
            .with_context(|| format!("{}: etag `{etag}` is not a content hash", remote.path))?;
        if len > remote.size {
            file.set_len(0)?;
            len = 0;
        }
        file.seek(SeekFrom::Start(0))?;
        hash.update_from(&mut file, len, path)?;
        file.seek(SeekFrom::Start(len))?;
        Ok(Self {
            file,
            path,
            len,
            hash,
            etag,
            size: remote.size,
            received: 0,
        })
    }

    fn restart(&mut self) -> Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.len = 0;
        self.hash = ContentHash::for_etag(self.etag, self.size).expect("checked in open");
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        self.file
            .write_all(bytes)
            .map_err(|e| HttpError::Transport(format!("cannot write {}: {e}", self.path.display())))
            .map(|_| {
                self.hash.update(bytes);
                self.len += bytes.len() as u64;
                self.received += bytes.len() as u64;
            })
    }
}

/// Why an attempt ended without the whole file.
enum Interrupted {
    /// Worth another try.
    Retry(HttpError),
    /// A local error (disk full, permissions): no point retrying.
    Fatal(anyhow::Error),
}

/// Downloads `remote` from `url` into `partial_path` until it holds exactly the listed
/// bytes; `on_position` sees the file position after every chunk (it can go back to 0
/// when the file restarts). The caller moves the partial into place afterwards.
pub(crate) fn fetch(
    client: &Client,
    url: &str,
    remote: &RemoteFile,
    partial_path: &Path,
    on_position: &mut dyn FnMut(u64),
) -> Result<Fetched> {
    let mut part = Partial::open(partial_path, remote)?;
    let mut done = Fetched {
        resumed_from: part.len,
        ..Fetched::default()
    };
    on_position(part.len);
    let mut failures = 0u32;
    let mut bad_checksums = 0u32;
    // Only bytes past the furthest point reached count as progress: a server that
    // ignores Range, or an object shorter than listed, must not loop forever.
    let mut furthest = part.len;
    loop {
        if part.len < part.size {
            match attempt(client, url, &mut part, &mut done, on_position) {
                Ok(()) => {}
                Err(Interrupted::Fatal(e)) => return Err(e),
                Err(Interrupted::Retry(err)) => {
                    let progressed = part.len > furthest;
                    furthest = furthest.max(part.len);
                    if progressed {
                        failures = 0;
                    } else {
                        failures += 1;
                    }
                    if !err.retryable() || failures > client.policy.max_retries {
                        part.file.sync_data().ok();
                        return Err(anyhow::Error::new(err).context(format!(
                            "{} (partial download kept: {} of {} bytes)",
                            remote.path, part.len, part.size
                        )));
                    }
                    let wait = client.policy.wait(failures.max(1), &err);
                    tracing::warn!(
                        "{}: {err}; resuming at byte {} in {:.1} s",
                        remote.path,
                        part.len,
                        wait.as_secs_f64()
                    );
                    if !progressed {
                        std::thread::sleep(wait);
                    }
                    continue;
                }
            }
        }
        let got = std::mem::replace(
            &mut part.hash,
            ContentHash::for_etag(part.etag, part.size).expect("checked in open"),
        )
        .finish();
        if got == part.etag.to_ascii_lowercase() {
            part.file
                .sync_data()
                .with_context(|| format!("cannot write {}", partial_path.display()))?;
            // What was hashed is what we wrote; the file must still hold exactly that
            // (a second writer on a filesystem without working locks would show here).
            let on_disk = part.file.metadata()?.len();
            if on_disk != part.size {
                bail!(
                    "{}: the partial file changed under this process ({on_disk} bytes, expected {}); \
                     is another download writing it on a filesystem without file locks?",
                    remote.path,
                    part.size
                );
            }
            done.received = part.received;
            return Ok(done);
        }
        bad_checksums += 1;
        let what = format!(
            "{}: checksum mismatch: the {} bytes hash to {got}, the Hub lists {}",
            remote.path, part.size, part.etag
        );
        if bad_checksums > 1 {
            drop(part);
            std::fs::remove_file(partial_path).ok();
            bail!("{what}; deleted the download");
        }
        tracing::warn!("{what}; downloading it again");
        part.restart()?;
        done.restarts += 1;
        on_position(0);
    }
}

/// One GET from the current length of `part` to the end.
fn attempt(
    client: &Client,
    url: &str,
    part: &mut Partial<'_>,
    done: &mut Fetched,
    on_position: &mut dyn FnMut(u64),
) -> Result<(), Interrupted> {
    let retry = Interrupted::Retry;
    let range = (part.len > 0).then(|| vec![("Range", format!("bytes={}-", part.len))]);
    let resp = client.send("GET", url, range.as_deref().unwrap_or(&[]), Follow::All);
    let mut resp = match resp {
        Err(HttpError::Status { status: 416, .. }) => {
            part.restart().map_err(Interrupted::Fatal)?;
            done.restarts += 1;
            on_position(0);
            return Err(retry(HttpError::Transport(
                "the server refused the resume range; starting over".into(),
            )));
        }
        other => other.map_err(retry)?,
    };
    match resp.status().as_u16() {
        206 => {
            let start =
                header(resp.headers(), "content-range").and_then(|v| content_range_start(&v));
            if start != Some(part.len) {
                part.restart().map_err(Interrupted::Fatal)?;
                done.restarts += 1;
                on_position(0);
                return Err(retry(HttpError::Transport(format!(
                    "the server answered a different range ({start:?}); starting over"
                ))));
            }
        }
        200 if part.len > 0 => {
            tracing::warn!(
                "{}: the server ignored the resume range; starting the file over",
                super::http::redact(url)
            );
            part.restart().map_err(Interrupted::Fatal)?;
            done.restarts += 1;
            on_position(0);
        }
        200 => {}
        other => {
            return Err(retry(HttpError::Transport(format!(
                "unexpected HTTP {other} for a download"
            ))));
        }
    }
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Err(retry(HttpError::Transport(format!(
                    "connection lost after {} bytes: {e}",
                    part.len
                ))));
            }
        };
        if part.len + n as u64 > part.size {
            part.restart().map_err(Interrupted::Fatal)?;
            done.restarts += 1;
            on_position(0);
            return Err(retry(HttpError::Transport(format!(
                "the server sent more than the listed {} bytes; starting over",
                part.size
            ))));
        }
        part.append(&buf[..n])
            .map_err(|e| Interrupted::Fatal(e.into()))?;
        on_position(part.len);
    }
    if part.len < part.size {
        return Err(retry(HttpError::Transport(format!(
            "the body ended at byte {} of {}",
            part.len, part.size
        ))));
    }
    Ok(())
}

/// The first byte of a `Content-Range: bytes A-B/N` header.
fn content_range_start(value: &str) -> Option<u64> {
    let spec = value.trim().strip_prefix("bytes")?.trim();
    spec.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
    }
}
