//! The reference's `--num-chunks` split of a benchmark (`split_list`: contiguous
//! chunks of ceil(n / N) questions), and where each chunk keeps its answers in a run
//! directory: `<run>/chunks/chunk-K-of-N/answers.jsonl`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Chunk `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Chunk {
    pub index: usize,
    pub count: usize,
}

impl Chunk {
    /// Parses `K/N` (0 <= K < N).
    pub(crate) fn parse(text: &str) -> Result<Chunk> {
        match crate::core::shard::index_of_count(text) {
            Some((index, count)) => Ok(Chunk { index, count }),
            None => bail!("`{text}` is not K/N with 0 <= K < N (e.g. 0/4)"),
        }
    }

    /// Every chunk of a split into `count`.
    pub(crate) fn all(count: usize) -> impl Iterator<Item = Chunk> {
        (0..count).map(move |index| Chunk { index, count })
    }

    /// The questions of this chunk among `total`, as the reference cuts them: chunks
    /// of ceil(total / count), the last ones shorter or empty.
    pub(crate) fn range(self, total: usize) -> Range<usize> {
        let size = total.div_ceil(self.count.max(1));
        let start = (self.index * size).min(total);
        start..(start + size).min(total)
    }

    /// This chunk's folder in the run directory `root`.
    pub(crate) fn dir(self, root: &Path) -> PathBuf {
        root.join("chunks")
            .join(format!("chunk-{}-of-{}", self.index, self.count))
    }

    /// This chunk's answer file in the run directory `root`.
    pub(crate) fn answers(self, root: &Path) -> PathBuf {
        self.dir(root).join("answers.jsonl")
    }
}

impl std::fmt::Display for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The run directory a chunk folder (from [`Chunk::dir`]) belongs to.
pub(crate) fn root_of(chunk_dir: &Path) -> &Path {
    chunk_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `split_list` of run_med_datasets_eval_batch / model_vqa.py.
    fn reference(total: usize, n: usize) -> Vec<Range<usize>> {
        let size = total.div_ceil(n);
        (0..total)
            .step_by(size.max(1))
            .map(|i| i..(i + size).min(total))
            .collect()
    }

    #[test]
    fn chunks_cut_like_the_reference_and_cover_every_question_once() {
        for total in [0, 1, 7, 8, 9, 10, 1061, 451] {
            for n in 1..=9 {
                let ours: Vec<Range<usize>> = Chunk::all(n).map(|c| c.range(total)).collect();
                let nonempty: Vec<_> = ours.iter().filter(|r| !r.is_empty()).cloned().collect();
                if total > 0 {
                    assert_eq!(nonempty, reference(total, n), "{total} in {n}");
                }
                let covered: usize = ours.iter().map(|r| r.len()).sum();
                assert_eq!(covered, total);
                assert!(ours.windows(2).all(|w| w[0].end == w[1].start));
            }
        }
    }

    #[test]
    fn parses_k_of_n_and_finds_its_way_back_to_the_run() {
        let c = Chunk::parse("2/8").unwrap();
        assert_eq!(c, Chunk { index: 2, count: 8 });
        assert_eq!(c.to_string(), "2/8");
        for bad in ["8/8", "x/2", "3", "-1/2", "1/0"] {
            assert!(Chunk::parse(bad).is_err(), "{bad}");
        }
        let root = Path::new("runs/eval-x");
        assert_eq!(
            c.answers(root),
            root.join("chunks/chunk-2-of-8/answers.jsonl")
        );
        assert_eq!(root_of(&c.dir(root)), root);
    }
}
