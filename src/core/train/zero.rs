//! ZeRO's optimizer-state sharding (DeepSpeed's stages 1 and 2) over the data-parallel
//! ranks: every trained tensor, flattened, is cut into `world` contiguous pieces of
//! `ceil(n / world)` elements (the last ones shorter or empty); rank `r` keeps the f32
//! master weights and AdamW moments of piece `r` only, updates that piece, and the
//! ranks then all-gather the updated weights. Stage 1 sums full gradients over the ranks
//! once a step and keeps this rank's piece; stage 2 reduce-scatters each micro-batch's
//! gradients, so only this rank's piece of the accumulated gradient is ever held.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::export::read_safetensors;

/// How the optimiser state is spread over the ranks (`--zero`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ZeroStage {
    /// Every rank holds all of it (plain data parallelism).
    #[default]
    Off,
    /// Stage 1: master weights and moments sharded.
    Optimizer,
    /// Stage 2: master weights, moments and accumulated gradients sharded.
    Gradients,
}

impl ZeroStage {
    /// The stage from `--zero N` (0, 1 or 2).
    pub(crate) fn from_level(level: u8) -> Option<Self> {
        match level {
            0 => Some(Self::Off),
            1 => Some(Self::Optimizer),
            2 => Some(Self::Gradients),
            _ => None,
        }
    }

    /// DeepSpeed's number for the stage.
    pub(crate) fn level(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Optimizer => 1,
            Self::Gradients => 2,
        }
    }

    /// Whether the optimiser state is sharded.
    pub(crate) fn shards(self) -> bool {
        self != Self::Off
    }
}

/// The elements of a flattened `n`-element tensor that rank `rank` of `world` owns.
pub fn shard_range(n: usize, world: usize, rank: usize) -> Range<usize> {
    let piece = n.div_ceil(world);
    let start = (rank * piece).min(n);
    start..(start + piece).min(n)
}

/// The file of a checkpoint's optimizer state: one for the whole state, or one per rank
/// holding its pieces (`optimizer.rank-R-of-W.safetensors`).
pub(crate) fn state_file(dir: &Path, piece: Option<(usize, usize)>) -> PathBuf {
    match piece {
        None => dir.join("optimizer.safetensors"),
        Some((rank, world)) => dir.join(format!("optimizer.rank-{rank}-of-{world}.safetensors")),
    }
}

/// A checkpoint's saved optimizer state, whole or in the pieces of some number of ranks.
pub(crate) enum SavedState {
    /// `optimizer.safetensors`: every tensor whole.
    Whole(HashMap<String, Tensor>),
    /// The ranks' files, in rank order.
    Pieces(Vec<MmapedSafetensors>),
}

impl SavedState {
    /// Opens the state in checkpoint folder `dir` (the per-rank files must all be there).
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let whole = state_file(dir, None);
        if whole.is_file() {
            return Ok(Self::Whole(read_safetensors(&whole)?));
        }
        let first = fs_names(dir)?
            .into_iter()
            .find_map(|name| {
                let rest = name.strip_prefix("optimizer.rank-0-of-")?;
                rest.strip_suffix(".safetensors")?.parse::<usize>().ok()
            })
            .with_context(|| format!("{}: no optimizer state", dir.display()))?;
        let files = (0..first)
            .map(|rank| {
                let path = state_file(dir, Some((rank, first)));
                // SAFETY: the checkpoint is finished (committed by rename) and only read.
                unsafe { MmapedSafetensors::new(&path) }
                    .with_context(|| format!("cannot read {}", path.display()))
            })
            .collect::<Result<_>>()?;
        Ok(Self::Pieces(files))
    }

    /// The saved f32 values of `key` (a tensor of `n` elements, flattened) in `range`.
    pub(crate) fn read(&self, key: &str, n: usize, range: Range<usize>) -> Result<Tensor> {
        match self {
            Self::Whole(all) => {
                let t = all
                    .get(key)
                    .with_context(|| format!("optimizer state has no `{key}`"))?;
                if t.elem_count() != n {
                    bail!(
                        "optimizer state `{key}` has {} values, the model's tensor {n}",
                        t.elem_count()
                    );
                }
                Ok(t.flatten_all()?.narrow(0, range.start, range.len())?)
            }
            Self::Pieces(files) => {
                let mut parts = Vec::new();
                for (rank, file) in files.iter().enumerate() {
                    let held = shard_range(n, files.len(), rank);
                    let (start, end) = (held.start.max(range.start), held.end.min(range.end));
                    if start >= end {
                        continue;
                    }
                    let piece = file.load(key, &Device::Cpu).with_context(|| {
                        format!("optimizer state of rank {rank} has no `{key}`")
                    })?;
                    if piece.elem_count() != held.len() {
                        bail!(
                            "optimizer state `{key}` of rank {rank} has {} values, expected {}",
                            piece.elem_count(),
                            held.len()
                        );
                    }
                    parts.push(piece.narrow(0, start - held.start, end - start)?);
                }
                match parts.len() {
                    0 => Ok(Tensor::zeros(0, candle_core::DType::F32, &Device::Cpu)?),
                    _ => Ok(Tensor::cat(&parts, 0)?),
                }
            }
        }
    }
}

fn fs_names(dir: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_element_once_in_rank_order() {
        for (n, world) in [(10, 4), (3, 4), (8, 2), (1, 1), (0, 3), (7, 7)] {
            let ranges: Vec<_> = (0..world).map(|r| shard_range(n, world, r)).collect();
            let mut next = 0;
            for r in &ranges {
                assert_eq!(r.start, next.min(n), "{n} over {world}: {ranges:?}");
                next = r.end.max(next);
            }
            assert_eq!(next, n);
            assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), n);
        }
        assert_eq!(shard_range(10, 4, 3), 9..10);
        assert_eq!(shard_range(3, 4, 3), 3..3);
    }
}
