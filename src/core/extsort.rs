//! Grouping equal keys over streams bigger than memory: entries are buffered up to a
//! byte budget, sorted and spilled to anonymous temporary files, then merged. Used for
//! id uniqueness, duplicate images (by hash) and manifest/archive reconciliation, so
//! memory stays flat however many rows there are.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};

use anyhow::{Context as _, Result};

/// Labels kept per group (the smallest, in order).
pub(crate) const MAX_LABELS: usize = 8;
/// Runs merged at once; more are first merged in rounds.
const FAN_IN: usize = 64;

#[derive(Clone, Copy)]
struct Entry {
    offset: usize,
    key_len: u32,
    label_len: u32,
    tag: u8,
}

/// A multiset of `(key, tag, label)` entries, grouped by key at the end.
pub(crate) struct KeyTally {
    arena: Vec<u8>,
    entries: Vec<Entry>,
    budget: usize,
    runs: Vec<File>,
}

/// All entries of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub key: Vec<u8>,
    /// Entries per tag (tags 0 and 1).
    pub counts: [u64; 2],
    /// Up to [`MAX_LABELS`] labels, smallest first, with their tags.
    pub labels: Vec<(u8, String)>,
}

type Record = (Vec<u8>, u8, String);

impl KeyTally {
    /// A tally that spills once its buffer holds about `budget` bytes.
    pub(crate) fn new(budget: usize) -> Self {
        KeyTally {
            arena: Vec::new(),
            entries: Vec::new(),
            budget: budget.max(1024),
            runs: Vec::new(),
        }
    }

    /// Adds one entry; `tag` is 0 or 1.
    pub(crate) fn push(&mut self, key: &[u8], tag: u8, label: &str) -> Result<()> {
        debug_assert!(tag < 2);
        self.entries.push(Entry {
            offset: self.arena.len(),
            key_len: key.len() as u32,
            label_len: label.len() as u32,
            tag,
        });
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(label.as_bytes());
        if self.arena.len() + self.entries.len() * size_of::<Entry>() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// True when nothing was pushed.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.runs.is_empty()
    }

    /// Moves every entry of `other` into `self`.
    pub(crate) fn absorb(&mut self, mut other: KeyTally) -> Result<()> {
        self.runs.append(&mut other.runs);
        for e in &other.entries {
            let (key, label) = other.parts(e);
            self.push(key, e.tag, std::str::from_utf8(label).unwrap_or_default())?;
        }
        Ok(())
    }

    fn parts(&self, e: &Entry) -> (&[u8], &[u8]) {
        let k = e.offset + e.key_len as usize;
        (
            &self.arena[e.offset..k],
            &self.arena[k..k + e.label_len as usize],
        )
    }

    fn sort(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable_by(|a, b| {
            let (ka, la) = self.parts(a);
            let (kb, lb) = self.parts(b);
            (ka, a.tag, la).cmp(&(kb, b.tag, lb))
        });
        self.entries = entries;
    }

    fn spill(&mut self) -> Result<()> {
        self.sort();
        let mut out = BufWriter::new(tempfile::tempfile().context("cannot create a spill file")?);
        for e in &self.entries {
            let (key, label) = self.parts(e);
            write_record(&mut out, key, e.tag, label)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        self.runs.push(file);
        self.arena.clear();
        self.entries.clear();
        Ok(())
    }

    /// Visits every distinct key once, in byte order, with its counts and labels.
    pub(crate) fn groups(mut self, mut visit: impl FnMut(Group)) -> Result<()> {
        let records: Box<dyn Iterator<Item = io::Result<Record>>> = if self.runs.is_empty() {
            self.sort();
            let all: Vec<Record> = self
                .entries
                .iter()
                .map(|e| {
                    let (k, l) = self.parts(e);
                    (k.to_vec(), e.tag, String::from_utf8_lossy(l).into_owned())
                })
                .collect();
            Box::new(all.into_iter().map(Ok))
        } else {
            if !self.entries.is_empty() {
                self.spill()?;
            }
            let mut runs = std::mem::take(&mut self.runs);
            while runs.len() > FAN_IN {
                let rest = runs.split_off(FAN_IN);
                let mut out = BufWriter::new(tempfile::tempfile()?);
                for r in merge(runs)? {
                    let (k, t, l) = r?;
                    write_record(&mut out, &k, t, l.as_bytes())?;
                }
                runs = rest;
                runs.push(out.into_inner().map_err(|e| e.into_error())?);
            }
            Box::new(merge(runs)?)
        };
        let mut current: Option<Group> = None;
        for r in records {
            let (key, tag, label) = r.context("cannot read a spill file")?;
            match &mut current {
                Some(g) if g.key == key => add(g, tag, label),
                _ => {
                    if let Some(g) = current.take() {
                        visit(g);
                    }
                    let mut g = Group {
                        key,
                        counts: [0, 0],
                        labels: Vec::new(),
                    };
                    add(&mut g, tag, label);
                    current = Some(g);
                }
            }
        }
        if let Some(g) = current {
            visit(g);
        }
        Ok(())
    }
}

fn add(g: &mut Group, tag: u8, label: String) {
    g.counts[usize::from(tag.min(1))] += 1;
    if g.labels.len() < MAX_LABELS {
        g.labels.push((tag, label));
    }
}

fn write_record(out: &mut impl Write, key: &[u8], tag: u8, label: &[u8]) -> io::Result<()> {
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key)?;
    out.write_all(&[tag])?;
    out.write_all(&(label.len() as u32).to_le_bytes())?;
    out.write_all(label)
}

fn read_record(input: &mut impl BufRead) -> io::Result<Option<Record>> {
    if input.fill_buf()?.is_empty() {
        return Ok(None);
    }
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let mut key = vec![0; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut key)?;
    let mut tag = [0u8; 1];
    input.read_exact(&mut tag)?;
    input.read_exact(&mut len)?;
    let mut label = vec![0; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut label)?;
    Ok(Some((
        key,
        tag[0],
        String::from_utf8_lossy(&label).into_owned(),
    )))
}

/// K-way merge of sorted runs.
fn merge(runs: Vec<File>) -> io::Result<impl Iterator<Item = io::Result<Record>>> {
    let mut readers = Vec::with_capacity(runs.len());
    let mut heap = BinaryHeap::new();
    for (i, mut f) in runs.into_iter().enumerate() {
        f.seek(SeekFrom::Start(0))?;
        let mut r = BufReader::with_capacity(1 << 16, f);
        if let Some(rec) = read_record(&mut r)? {
            heap.push(Reverse((rec, i)));
        }
        readers.push(r);
    }
    Ok(std::iter::from_fn(move || {
        let Reverse((rec, i)) = heap.pop()?;
        match read_record(&mut readers[i]) {
            Ok(Some(next)) => heap.push(Reverse((next, i))),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(rec))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(t: KeyTally) -> Vec<Group> {
        let mut out = Vec::new();
        t.groups(|g| out.push(g)).unwrap();
        out
    }

    fn fill(budget: usize) -> KeyTally {
        let mut t = KeyTally::new(budget);
        for i in 0..5000u32 {
            let key = format!("k{:04}", i % 1700);
            t.push(key.as_bytes(), (i % 3 == 0) as u8, &format!("row{i:05}"))
                .unwrap();
        }
        t
    }

    #[test]
    fn spilled_and_in_memory_tallies_agree() {
        let small = fill(1024); // spills many times, and merges in rounds
        assert!(small.runs.len() > FAN_IN, "{}", small.runs.len());
        let big = fill(1 << 30);
        assert!(big.runs.is_empty());
        let (a, b) = (collect(small), collect(big));
        assert_eq!(a, b);
        assert_eq!(a.len(), 1700);
        let total: u64 = a.iter().map(|g| g.counts[0] + g.counts[1]).sum();
        assert_eq!(total, 5000);
        // Key k0000 appears at rows 0, 1700, 3400; only row 0 has i % 3 == 0 (tag 1).
        assert_eq!(a[0].key, b"k0000");
        assert_eq!(a[0].counts, [2, 1]);
        assert_eq!(
            a[0].labels,
            vec![
                (0, "row01700".into()),
                (0, "row03400".into()),
                (1, "row00000".into())
            ]
        );
    }

    #[test]
    fn absorbing_keeps_everything() {
        let mut a = KeyTally::new(2048);
        let mut b = KeyTally::new(2048);
        for i in 0..300 {
            a.push(format!("x{i}").as_bytes(), 0, "a").unwrap();
            b.push(format!("x{}", i + 150).as_bytes(), 1, "b").unwrap();
        }
        a.absorb(b).unwrap();
        let groups = collect(a);
        assert_eq!(groups.len(), 450);
        assert_eq!(groups.iter().filter(|g| g.counts == [1, 1]).count(), 150);
    }
}
