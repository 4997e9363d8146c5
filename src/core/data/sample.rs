//! The one record type every reader produces, and the batches readers yield.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef};
use serde::Serialize;
use serde_json::{Map, Value};

use super::columns::{BinColumn, IdColumn, ImageStructColumn, StrColumn, json_value};
use super::inputs::ImageStore;

/// A dataset record: image (or where to find it), caption, source and any other fields.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub id: String,
    pub image: ImageSource,
    pub caption: Option<String>,
    pub source: Option<String>,
    /// Every other field of the record, by name.
    pub extra: Map<String, Value>,
}

/// Where an owned sample's image is.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ImageSource {
    #[default]
    None,
    /// Encoded bytes held in the record, with the original file name when known.
    Bytes {
        #[serde(skip)]
        bytes: Vec<u8>,
        path: Option<String>,
    },
    /// A file on disk.
    File(PathBuf),
    /// A member of the dataset's image archives, by file name.
    Archived(String),
}

impl ImageSource {
    /// A borrowed view.
    pub(crate) fn as_ref(&self) -> ImageRef<'_> {
        match self {
            ImageSource::None => ImageRef::None,
            ImageSource::Bytes { bytes, path } => ImageRef::Bytes {
                bytes,
                path: path.as_deref(),
            },
            ImageSource::File(p) => ImageRef::File(Cow::Borrowed(p)),
            ImageSource::Archived(n) => ImageRef::Archived(n),
        }
    }
}

/// Where a sample's image is, borrowed from its batch.
#[derive(Debug, Clone)]
pub enum ImageRef<'a> {
    None,
    Bytes {
        bytes: &'a [u8],
        path: Option<&'a str>,
    },
    File(Cow<'a, Path>),
    Archived(&'a str),
}

impl<'a> ImageRef<'a> {
    /// How the record names its image: the embedded image's path, the file's path, or
    /// the archive member; None without one.
    pub fn name(&self) -> Option<String> {
        match self {
            ImageRef::None => None,
            ImageRef::Bytes { path, .. } => path.map(str::to_string),
            ImageRef::File(p) => Some(p.to_string_lossy().into_owned()),
            ImageRef::Archived(name) => Some(name.to_string()),
        }
    }

    /// The encoded bytes of an image held in the record or in a file.
    pub fn bytes(&self) -> anyhow::Result<Cow<'a, [u8]>> {
        use anyhow::Context as _;
        match self {
            ImageRef::Bytes { bytes, .. } => Ok(Cow::Borrowed(*bytes)),
            ImageRef::File(p) => {
                Ok(Cow::Owned(std::fs::read(p).with_context(|| {
                    format!("{}: cannot read", p.display())
                })?))
            }
            ImageRef::Archived(name) => {
                anyhow::bail!("image {name} is inside a .tar.zst shard, not in the record")
            }
            ImageRef::None => anyhow::bail!("the record has no image"),
        }
    }

    /// An owned copy.
    pub(crate) fn to_source(&self) -> ImageSource {
        match self {
            ImageRef::None => ImageSource::None,
            ImageRef::Bytes { bytes, path } => ImageSource::Bytes {
                bytes: bytes.to_vec(),
                path: path.map(str::to_string),
            },
            ImageRef::File(p) => ImageSource::File(p.to_path_buf()),
            ImageRef::Archived(n) => ImageSource::Archived(n.to_string()),
        }
    }
}

/// A run of consecutive records from one input (a parquet row group slice, lines of a
/// JSONL file, files of a folder, members of an archive).
#[derive(Debug)]
pub struct Batch {
    /// Index of the input this batch came from.
    pub input: usize,
    /// Parquet row group, when the input has them.
    pub row_group: Option<usize>,
    /// Row number (within the input) of the first record.
    pub first_row: u64,
    data: BatchData,
}

#[derive(Debug)]
enum BatchData {
    Arrow(Box<ArrowRows>),
    Owned(Vec<Sample>),
}

/// Column roles of one Arrow record batch.
#[derive(Debug)]
pub(crate) struct ArrowRows {
    pub len: usize,
    pub id: Option<IdColumn>,
    pub caption: Option<StrColumn>,
    pub source: Option<StrColumn>,
    pub image: ArrowImage,
    /// Columns with no role, by name.
    pub extras: Vec<(String, ArrayRef)>,
    /// Every column read, by name (for null counts).
    pub columns: Vec<(String, ArrayRef)>,
    pub store: Arc<ImageStore>,
}

/// How a parquet shard holds its images.
#[derive(Debug)]
pub(crate) enum ArrowImage {
    None,
    /// HF `Image` feature: struct {bytes, path}.
    Struct(Box<ImageStructColumn>),
    /// Raw encoded bytes.
    Binary(BinColumn),
    /// A file name or relative path, resolved against the image store.
    Reference(StrColumn),
}

impl Batch {
    /// A batch of Arrow rows.
    pub(crate) fn arrow(
        input: usize,
        row_group: Option<usize>,
        first_row: u64,
        rows: ArrowRows,
    ) -> Self {
        Batch {
            input,
            row_group,
            first_row,
            data: BatchData::Arrow(Box::new(rows)),
        }
    }

    /// A batch of owned samples.
    pub(crate) fn owned(input: usize, first_row: u64, samples: Vec<Sample>) -> Self {
        Batch {
            input,
            row_group: None,
            first_row,
            data: BatchData::Owned(samples),
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        match &self.data {
            BatchData::Arrow(a) => a.len,
            BatchData::Owned(s) => s.len(),
        }
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record's identifier: the id column, else its file name or image path, else
    /// its row number in the input.
    pub fn id(&self, i: usize) -> Cow<'_, str> {
        match &self.data {
            BatchData::Owned(s) => Cow::Borrowed(&s[i].id),
            BatchData::Arrow(a) => {
                a.id.as_ref()
                    .and_then(|c| c.get(i))
                    .or_else(|| match &a.image {
                        ArrowImage::Reference(c) => c.get(i).map(Cow::Borrowed),
                        ArrowImage::Struct(c) => c.get(i).1.map(Cow::Borrowed),
                        _ => None,
                    })
                    .unwrap_or_else(|| Cow::Owned((self.first_row + i as u64).to_string()))
            }
        }
    }

    /// True when the id came from an id column (or field), so uniqueness is meaningful.
    pub(crate) fn has_ids(&self) -> bool {
        match &self.data {
            BatchData::Owned(_) => true,
            BatchData::Arrow(a) => a.id.is_some(),
        }
    }

    /// The caption, None when absent or null.
    #[inline]
    pub fn caption(&self, i: usize) -> Option<&str> {
        match &self.data {
            BatchData::Owned(s) => s[i].caption.as_deref(),
            BatchData::Arrow(a) => a.caption.as_ref().and_then(|c| c.get(i)),
        }
    }

    /// The source dataset, None when absent or null.
    #[inline]
    pub fn source(&self, i: usize) -> Option<&str> {
        match &self.data {
            BatchData::Owned(s) => s[i].source.as_deref(),
            BatchData::Arrow(a) => a.source.as_ref().and_then(|c| c.get(i)),
        }
    }

    /// Where the image is.
    pub fn image(&self, i: usize) -> ImageRef<'_> {
        match &self.data {
            BatchData::Owned(s) => s[i].image.as_ref(),
            BatchData::Arrow(a) => match &a.image {
                ArrowImage::None => ImageRef::None,
                ArrowImage::Binary(c) => c.get(i).map_or(ImageRef::None, |bytes| ImageRef::Bytes {
                    bytes,
                    path: None,
                }),
                ArrowImage::Struct(c) => match c.get(i) {
                    (Some(bytes), path) => ImageRef::Bytes { bytes, path },
                    (None, Some(path)) => a.store.resolve(path),
                    (None, None) => ImageRef::None,
                },
                ArrowImage::Reference(c) => c
                    .get(i)
                    .map_or(ImageRef::None, |name| a.store.resolve(name)),
            },
        }
    }

    /// Whether this batch's records are expected to carry an image at all.
    pub(crate) fn has_image_field(&self) -> bool {
        match &self.data {
            BatchData::Owned(_) => true,
            BatchData::Arrow(a) => !matches!(a.image, ArrowImage::None),
        }
    }

    /// The fields with no role, as JSON.
    pub fn extra(&self, i: usize) -> Map<String, Value> {
        match &self.data {
            BatchData::Owned(s) => s[i].extra.clone(),
            BatchData::Arrow(a) => a
                .extras
                .iter()
                .map(|(name, col)| (name.clone(), json_value(col.as_ref(), i)))
                .collect(),
        }
    }

    /// Names of the extra columns (the same for every record of an Arrow batch; the
    /// union of keys for owned records).
    pub(crate) fn extra_names(&self) -> Vec<String> {
        match &self.data {
            BatchData::Arrow(a) => a.extras.iter().map(|(n, _)| n.clone()).collect(),
            BatchData::Owned(s) => {
                let mut names: Vec<String> = Vec::new();
                for k in s.iter().flat_map(|x| x.extra.keys()) {
                    if !names.contains(k) {
                        names.push(k.clone());
                    }
                }
                names
            }
        }
    }

    /// One extra field of one record.
    pub(crate) fn extra_value(&self, i: usize, name: &str) -> Value {
        match &self.data {
            BatchData::Arrow(a) => a
                .extras
                .iter()
                .find(|(n, _)| n == name)
                .map_or(Value::Null, |(_, c)| json_value(c.as_ref(), i)),
            BatchData::Owned(s) => s[i].extra.get(name).cloned().unwrap_or(Value::Null),
        }
    }

    /// Null (or missing) counts per field over the records where `keep` is true (all
    /// records when None).
    pub fn null_counts(&self, keep: Option<&[bool]>) -> Vec<(String, u64)> {
        let kept = |i: usize| keep.is_none_or(|k| k[i]);
        let n = self.len();
        let count =
            |null: &dyn Fn(usize) -> bool| (0..n).filter(|&i| kept(i) && null(i)).count() as u64;
        match &self.data {
            BatchData::Arrow(a) => a
                .columns
                .iter()
                .map(|(name, col)| {
                    let nulls = match keep {
                        None => col.logical_null_count() as u64,
                        Some(_) => count(&|i| col.is_null(i)),
                    };
                    (name.clone(), nulls)
                })
                .collect(),
            BatchData::Owned(s) => {
                let mut out = vec![
                    ("caption".to_string(), count(&|i| s[i].caption.is_none())),
                    ("source".to_string(), count(&|i| s[i].source.is_none())),
                    (
                        "image".to_string(),
                        count(&|i| matches!(s[i].image, ImageSource::None)),
                    ),
                ];
                for name in self.extra_names() {
                    out.push((
                        name.clone(),
                        count(&|i| s[i].extra.get(&name).is_none_or(Value::is_null)),
                    ));
                }
                out
            }
        }
    }

    /// An owned copy of record `i`.
    pub(crate) fn sample(&self, i: usize) -> Sample {
        match &self.data {
            BatchData::Owned(s) => s[i].clone(),
            BatchData::Arrow(_) => Sample {
                id: self.id(i).into_owned(),
                image: self.image(i).to_source(),
                caption: self.caption(i).map(str::to_string),
                source: self.source(i).map(str::to_string),
                extra: self.extra(i),
            },
        }
    }
}
