//! What one worker accumulates while inspecting: everything is mergeable and bounded in
//! memory (large keyed sets spill to disk through [`KeyTally`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::dist::{Counter, Dist};
use crate::core::caption_parts::{self, MODALITIES, ORGANS, PARTS};
use crate::core::data::{Batch, ImageRef, Role, Sample};
use crate::core::extsort::KeyTally;
use crate::core::hash::keyed;
use crate::core::image;

/// Examples kept for each kind of problem.
pub(crate) const EXAMPLES: usize = 20;
/// Error messages kept (a million bad lines must not fill memory).
pub(crate) const MAX_FAILURES: usize = 1000;
/// Distinct values tracked per categorical column.
const CATEGORY_CAP: usize = 100_000;

/// The `k` items with the smallest keys, in key order. Mergeable: the result does not
/// depend on how the work was split between threads.
#[derive(Debug, Clone)]
pub(crate) struct SmallestK<T> {
    pub k: usize,
    /// Sorted by key.
    pub items: Vec<(u64, T)>,
}

impl<T> SmallestK<T> {
    /// An empty set of at most `k` items.
    pub(crate) fn new(k: usize) -> Self {
        SmallestK {
            k,
            items: Vec::new(),
        }
    }

    /// Keeps `make()` under `key` if it is among the `k` smallest so far (`make` runs
    /// only then).
    fn offer(&mut self, key: u64, make: impl FnOnce() -> T) {
        if self.items.len() < self.k || self.items.last().is_some_and(|x| key < x.0) {
            let at = self.items.partition_point(|x| x.0 < key);
            self.items.insert(at, (key, make()));
            self.items.truncate(self.k);
        }
    }

    fn merge(&mut self, other: SmallestK<T>) {
        self.items.extend(other.items);
        self.items.sort_by_key(|x| x.0);
        self.items.truncate(self.k);
    }

    /// The items in key order, leaving the set empty.
    pub(crate) fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items)
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }
}

/// A count plus the first few occurrences (by input order), for reports.
#[derive(Debug, Clone)]
pub(crate) struct Examples {
    pub count: u64,
    /// (id, detail) of the earliest occurrences.
    pub first: SmallestK<(String, String)>,
}

impl Default for Examples {
    fn default() -> Self {
        Examples {
            count: 0,
            first: SmallestK::new(EXAMPLES),
        }
    }
}

impl Examples {
    fn add(&mut self, key: u64, id: &str, detail: String) {
        self.count += 1;
        self.first.offer(key, || (id.to_string(), detail));
    }

    fn merge(&mut self, other: Examples) {
        self.count += other.count;
        self.first.merge(other.first);
    }
}

/// The `k` records with the smallest keys: a deterministic random sample when keys are
/// seeded hashes, the first records when keys are positions.
pub(crate) type Reservoir = SmallestK<Sample>;

/// Caption statistics.
#[derive(Debug, Clone, Default)]
pub(crate) struct CaptionTally {
    pub present: u64,
    pub empty: u64,
    pub chars: Dist,
    pub words: Dist,
    pub parts: [u64; PARTS.len()],
    pub all_parts: u64,
}

/// Image statistics.
pub(crate) struct ImageTally {
    pub seen: u64,
    pub missing: Examples,
    pub undecodable: Examples,
    pub width: Dist,
    pub height: Dist,
    /// Width / height in hundredths.
    pub aspect: Dist,
    pub bytes: Dist,
    pub formats: Counter,
    pub modes: Counter,
    /// First 16 bytes of the sha256 of each image, labelled with its id.
    pub hashes: KeyTally,
}

/// Everything one worker accumulates.
pub(crate) struct Tally {
    pub rows: u64,
    pub matched: u64,
    /// Records (or, for image shards, members) read per input.
    pub rows_per_input: BTreeMap<usize, u64>,
    pub nulls: BTreeMap<String, u64>,
    pub ids: KeyTally,
    pub ids_counted: u64,
    pub captions: CaptionTally,
    pub sources: Counter,
    pub modalities: Counter,
    pub organs: Counter,
    pub images: ImageTally,
    /// Image file names: tag 0 = referenced by a manifest row, tag 1 = archive member.
    pub archive_names: KeyTally,
    pub archive_members: u64,
    pub sample: Reservoir,
    /// Images for the contact sheet (records whose image can be shown).
    pub sheet: Reservoir,
    /// Error messages by input, at most [`MAX_FAILURES`].
    pub failures: Vec<(usize, String)>,
    /// Messages beyond [`MAX_FAILURES`], counted only.
    pub failures_suppressed: u64,
    /// Every input with at least one error.
    pub failed_inputs: BTreeSet<usize>,
}

/// What to compute.
#[derive(Debug, Clone)]
pub(crate) struct TallyOptions {
    pub images: bool,
    pub decode: bool,
    pub seed: u64,
    /// Records to draw at random (`--sample`).
    pub sample: usize,
    /// Images to draw at random for the contact sheet.
    pub sheet: usize,
    pub spill_budget: usize,
}

/// Orders records by input, then row.
pub(crate) fn order_key(input: usize, row: u64) -> u64 {
    ((input as u64) << 40) | (row & ((1 << 40) - 1))
}

impl Tally {
    pub(crate) fn new(opts: &TallyOptions) -> Self {
        let budget = opts.spill_budget;
        Tally {
            rows: 0,
            matched: 0,
            rows_per_input: BTreeMap::new(),
            nulls: BTreeMap::new(),
            ids: KeyTally::new(budget),
            ids_counted: 0,
            captions: CaptionTally::default(),
            sources: Counter::new(CATEGORY_CAP),
            modalities: Counter::new(CATEGORY_CAP),
            organs: Counter::new(CATEGORY_CAP),
            images: ImageTally {
                seen: 0,
                missing: Examples::default(),
                undecodable: Examples::default(),
                width: Dist::default(),
                height: Dist::default(),
                aspect: Dist::default(),
                bytes: Dist::default(),
                formats: Counter::new(64),
                modes: Counter::new(64),
                hashes: KeyTally::new(budget),
            },
            archive_names: KeyTally::new(budget),
            archive_members: 0,
            sample: Reservoir::new(opts.sample),
            sheet: Reservoir::new(opts.sheet),
            failures: Vec::new(),
            failures_suppressed: 0,
            failed_inputs: BTreeSet::new(),
        }
    }

    /// Accumulates the records of `batch` where `keep` is true (all when None).
    pub(crate) fn add_batch(
        &mut self,
        batch: &Batch,
        role: Role,
        keep: Option<&[bool]>,
        opts: &TallyOptions,
    ) -> Result<()> {
        if role == Role::ImageShard {
            return self.add_image_shard(batch, opts);
        }
        let n = batch.len();
        self.rows += n as u64;
        *self.rows_per_input.entry(batch.input).or_default() += n as u64;
        for (name, nulls) in batch.null_counts(keep) {
            *self.nulls.entry(name).or_default() += nulls;
        }
        let has_ids = batch.has_ids();
        let has_images = opts.images && batch.has_image_field();
        for i in 0..n {
            if keep.is_some_and(|k| !k[i]) {
                continue;
            }
            self.matched += 1;
            let row = batch.first_row + i as u64;
            let key = order_key(batch.input, row);
            let pick = keyed(opts.seed, batch.input as u64, row);
            // Ids are only needed for uniqueness and image reports (a fallback id costs
            // an allocation per row).
            let id = if has_ids || has_images {
                batch.id(i)
            } else {
                Cow::Borrowed("")
            };
            if has_ids {
                self.ids.push(id.as_bytes(), 0, "")?;
                self.ids_counted += 1;
            }
            if let Some(c) = batch.caption(i) {
                self.add_caption(c);
            }
            if let Some(s) = batch.source(i) {
                self.sources.add(s);
            }
            if has_images {
                let image = batch.image(i);
                let shown = matches!(image, ImageRef::Bytes { .. } | ImageRef::File(_));
                self.add_record_image(image, key, &id, opts)?;
                if shown {
                    self.sheet.offer(pick, || batch.sample(i));
                }
            }
            if self.sample.k > 0 {
                self.sample.offer(pick, || batch.sample(i));
            }
        }
        Ok(())
    }

    /// Image statistics of one record's image, wherever it is.
    fn add_record_image(
        &mut self,
        image: ImageRef<'_>,
        key: u64,
        id: &str,
        opts: &TallyOptions,
    ) -> Result<()> {
        match image {
            ImageRef::None => self
                .images
                .missing
                .add(key, id, "no image in the record".into()),
            ImageRef::Bytes { bytes, .. } => self.add_image(bytes, key, id, opts)?,
            ImageRef::File(path) => match std::fs::read(&path) {
                Ok(bytes) => self.add_image(&bytes, key, id, opts)?,
                Err(e) => self
                    .images
                    .missing
                    .add(key, id, format!("{}: {e}", path.display())),
            },
            ImageRef::Archived(name) => {
                self.archive_names.push(base_name(name).as_bytes(), 0, id)?
            }
        }
        Ok(())
    }

    fn add_image_shard(&mut self, batch: &Batch, opts: &TallyOptions) -> Result<()> {
        *self.rows_per_input.entry(batch.input).or_default() += batch.len() as u64;
        for i in 0..batch.len() {
            let key = order_key(batch.input, batch.first_row + i as u64);
            self.archive_members += 1;
            if let ImageRef::Bytes { bytes, path } = batch.image(i) {
                let id = batch.id(i);
                self.archive_names
                    .push(base_name(path.unwrap_or(&id)).as_bytes(), 1, &id)?;
                if opts.images {
                    self.add_image(bytes, key, &id, opts)?;
                }
                let pick = keyed(opts.seed, batch.input as u64, batch.first_row + i as u64);
                self.sheet.offer(pick, || batch.sample(i));
            }
        }
        Ok(())
    }

    fn add_caption(&mut self, caption: &str) {
        let c = &mut self.captions;
        c.present += 1;
        if caption.trim().is_empty() {
            c.empty += 1;
        }
        c.chars.add(caption_parts::char_count(caption) as u64);
        c.words.add(caption_parts::word_count(caption) as u64);
        let parts = caption_parts::analyze(caption);
        for (p, n) in c.parts.iter_mut().enumerate() {
            *n += u64::from(parts.has(p));
        }
        c.all_parts += u64::from(parts.mask.count_ones() as usize == PARTS.len());
        if let Some(m) = parts.modality {
            self.modalities.add(MODALITIES[m as usize].0);
        }
        if let Some(o) = parts.organ {
            self.organs.add(ORGANS[o as usize].0);
        }
    }

    fn add_image(&mut self, bytes: &[u8], key: u64, id: &str, opts: &TallyOptions) -> Result<()> {
        let im = &mut self.images;
        im.seen += 1;
        im.bytes.add(bytes.len() as u64);
        let digest = Sha256::digest(bytes);
        im.hashes.push(&digest[..16], 0, id)?;
        let info = image::probe(bytes).and_then(|info| match opts.decode {
            true => image::decode(bytes).map(|_| info),
            false => Ok(info),
        });
        match info {
            Ok(info) => {
                im.width.add(u64::from(info.width));
                im.height.add(u64::from(info.height));
                im.aspect.add(
                    (u64::from(info.width) * 100 + u64::from(info.height) / 2)
                        / u64::from(info.height),
                );
                im.formats.add(info.format);
                im.modes.add(info.mode);
            }
            Err(e) => im.undecodable.add(key, id, format!("{e:#}")),
        }
        Ok(())
    }

    /// Records an error of `input`.
    pub(crate) fn fail(&mut self, input: usize, message: String) {
        self.failed_inputs.insert(input);
        if self.failures.len() < MAX_FAILURES {
            self.failures.push((input, message));
        } else {
            self.failures_suppressed += 1;
        }
    }

    /// Adds everything in `other`.
    pub(crate) fn merge(&mut self, other: Tally) -> Result<()> {
        self.rows += other.rows;
        self.matched += other.matched;
        for (k, v) in other.rows_per_input {
            *self.rows_per_input.entry(k).or_default() += v;
        }
        for (k, v) in other.nulls {
            *self.nulls.entry(k).or_default() += v;
        }
        self.ids.absorb(other.ids)?;
        self.ids_counted += other.ids_counted;
        let (c, o) = (&mut self.captions, other.captions);
        c.present += o.present;
        c.empty += o.empty;
        c.chars.merge(&o.chars);
        c.words.merge(&o.words);
        for (a, b) in c.parts.iter_mut().zip(o.parts) {
            *a += b;
        }
        c.all_parts += o.all_parts;
        self.sources.merge(&other.sources);
        self.modalities.merge(&other.modalities);
        self.organs.merge(&other.organs);
        let (im, o) = (&mut self.images, other.images);
        im.seen += o.seen;
        im.missing.merge(o.missing);
        im.undecodable.merge(o.undecodable);
        im.width.merge(&o.width);
        im.height.merge(&o.height);
        im.aspect.merge(&o.aspect);
        im.bytes.merge(&o.bytes);
        im.formats.merge(&o.formats);
        im.modes.merge(&o.modes);
        im.hashes.absorb(o.hashes)?;
        self.archive_names.absorb(other.archive_names)?;
        self.archive_members += other.archive_members;
        self.sample.merge(other.sample);
        self.sheet.merge(other.sheet);
        self.failed_inputs.extend(other.failed_inputs);
        self.failures_suppressed += other.failures_suppressed;
        for (input, msg) in other.failures {
            self.fail(input, msg);
        }
        Ok(())
    }
}

/// The file name part of a path-like string.
fn base_name(name: &str) -> &str {
    Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_keep_the_earliest_in_input_order() {
        let mut a = Examples::default();
        let mut b = Examples::default();
        for k in (0..60).rev() {
            if k % 2 == 0 {
                a.add(k, &format!("r{k}"), String::new())
            } else {
                b.add(k, &format!("r{k}"), String::new())
            }
        }
        a.merge(b);
        assert_eq!(a.count, 60);
        assert_eq!(
            a.first.items.iter().map(|x| x.0).collect::<Vec<_>>(),
            (0..EXAMPLES as u64).collect::<Vec<_>>()
        );
    }

    #[test]
    fn failure_messages_are_capped_but_inputs_are_not() {
        let opts = TallyOptions {
            images: false,
            decode: false,
            seed: 0,
            sample: 0,
            sheet: 0,
            spill_budget: 1 << 16,
        };
        let (mut a, mut b) = (Tally::new(&opts), Tally::new(&opts));
        for n in 0..MAX_FAILURES {
            a.fail(0, format!("line {n}"));
        }
        b.fail(1, "late".into());
        b.fail(2, "later".into());
        a.merge(b).unwrap();
        assert_eq!(a.failures.len(), MAX_FAILURES);
        assert_eq!(a.failures_suppressed, 2);
        assert_eq!(a.failed_inputs.len(), 3);
    }

    #[test]
    fn order_keys_sort_by_input_then_row() {
        assert!(order_key(0, 999_999) < order_key(1, 0));
        assert!(order_key(3, 5) < order_key(3, 6));
    }
}
