//! `.tar` / `.tar.zst` image shards, streamed member by member. Members that share a
//! key (WebDataset style: `dir/0001.png` + `dir/0001.txt`) form one record: the image,
//! a `.txt`/`.caption` caption, and `.json` fields.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Map, Value};

use super::inputs::IMAGE_EXTENSIONS;
use super::llava_records::{Rows, sample_from_json};
use super::sample::{ImageSource, Sample};
use super::{Flow, Visit};
use crate::core::data::inputs::ImageStore;

/// Members larger than this are reported, not read (guards against bombs).
pub(crate) const MAX_MEMBER_BYTES: u64 = 1 << 30;

/// A record being assembled from consecutive members with one key.
struct Group {
    key: String,
    sample: Sample,
    /// The id came from the group's `.json` (it then wins over the image's name).
    explicit_id: bool,
}

/// Streams the records of the archive at `path`. A truncated or corrupt archive ends
/// with an error naming the member it stopped at; records before it are delivered.
pub(crate) fn read_archive(
    input: usize,
    path: &Path,
    batch_rows: usize,
    visit: Visit<'_>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let name = path.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".zst") || name.ends_with(".tzst") {
        Box::new(
            zstd::Decoder::new(file)
                .with_context(|| format!("{}: not a zstd stream", path.display()))?,
        )
    } else {
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let mut archive = tar::Archive::new(reader);
    let mut rows = Rows::new(input, batch_rows);
    let mut group: Option<Group> = None;
    let mut members = 0usize;
    let mut last = String::from("(start)");
    let entries = archive
        .entries()
        .with_context(|| format!("{}: cannot read archive", path.display()))?;
    let broken = |members: usize, last: &str, e: &dyn std::fmt::Display| {
        anyhow!(
            "{}: archive truncated or corrupt after {members} members (last `{last}`): {e}",
            path.display()
        )
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                finish(group.take(), &mut rows, visit);
                rows.flush(visit);
                return Err(broken(members, &last, &e));
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry
            .path()
            .map(|p| p.to_string_lossy().trim_start_matches("./").to_string());
        let member = member.map_err(|e| broken(members, &last, &e))?;
        let size = entry.size();
        let mut bytes = Vec::new();
        if size <= MAX_MEMBER_BYTES {
            bytes.reserve(size as usize);
            if let Err(e) = entry.read_to_end(&mut bytes) {
                finish(group.take(), &mut rows, visit);
                rows.flush(visit);
                return Err(broken(members, &member, &e));
            }
        }
        members += 1;
        last.clone_from(&member);
        let (key, ext) = split_key(&member);
        if group.as_ref().is_some_and(|g| g.key != key)
            && finish(group.take(), &mut rows, visit) == Flow::Stop
        {
            return Ok(());
        }
        let g = group.get_or_insert_with(|| Group {
            explicit_id: false,
            key: key.to_string(),
            sample: Sample {
                id: key.to_string(),
                image: ImageSource::None,
                caption: None,
                source: None,
                extra: Map::new(),
            },
        });
        if size > MAX_MEMBER_BYTES {
            let err = anyhow!(
                "{}: member `{member}` is {size} bytes, over the {MAX_MEMBER_BYTES}-byte limit",
                path.display()
            );
            if rows.push(Err(err), visit) == Flow::Stop {
                return Ok(());
            }
            continue;
        }
        if let Err(e) = add_member(g, &member, ext, bytes) {
            let err = e.context(format!("{}: member `{member}`", path.display()));
            if rows.push(Err(err), visit) == Flow::Stop {
                return Ok(());
            }
        }
    }
    if finish(group, &mut rows, visit) == Flow::Stop {
        return Ok(());
    }
    rows.flush(visit);
    Ok(())
}

/// WebDataset key and extension: the key ends at the first dot of the file name.
fn split_key(member: &str) -> (&str, &str) {
    let start = member.rfind('/').map_or(0, |i| i + 1);
    match member[start..].find('.') {
        Some(dot) => (&member[..start + dot], &member[start + dot + 1..]),
        None => (member, ""),
    }
}

fn add_member(g: &mut Group, member: &str, ext: &str, bytes: Vec<u8>) -> Result<()> {
    let last_ext = ext.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    if IMAGE_EXTENSIONS.contains(&last_ext.as_str()) {
        if matches!(g.sample.image, ImageSource::None) {
            if !g.explicit_id {
                g.sample.id = member.to_string();
            }
            g.sample.image = ImageSource::Bytes {
                bytes,
                path: Some(member.to_string()),
            };
        } else {
            g.sample
                .extra
                .insert(ext.to_string(), serde_json::json!({"bytes": bytes.len()}));
        }
        return Ok(());
    }
    match last_ext.as_str() {
        "txt" | "caption" => {
            g.sample.caption = Some(String::from_utf8_lossy(&bytes).trim().to_string())
        }
        "json" => {
            let value: Value =
                serde_json::from_slice(&bytes).map_err(|e| anyhow!("invalid JSON: {e}"))?;
            if !value.is_object() {
                bail!("expected a JSON object");
            }
            let explicit_id = value.get("id").is_some_and(|v| !v.is_null());
            let fields = sample_from_json(value, 0, &ImageStore::None)?;
            if explicit_id {
                g.sample.id = fields.id;
                g.explicit_id = true;
            }
            if fields.caption.is_some() {
                g.sample.caption = fields.caption;
            }
            if fields.source.is_some() {
                g.sample.source = fields.source;
            }
            g.sample.extra.extend(fields.extra);
        }
        _ => {
            g.sample
                .extra
                .insert(ext.to_string(), serde_json::json!({"bytes": bytes.len()}));
        }
    }
    Ok(())
}

fn finish(group: Option<Group>, rows: &mut Rows, visit: Visit<'_>) -> Flow {
    match group {
        Some(g) => rows.push(Ok(g.sample), visit),
        None => Flow::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_end_at_the_first_dot_of_the_name() {
        assert_eq!(split_key("a/b.c/0001.ct.png"), ("a/b.c/0001", "ct.png"));
        assert_eq!(split_key("x.jpg"), ("x", "jpg"));
        assert_eq!(split_key("noext"), ("noext", ""));
    }
}
