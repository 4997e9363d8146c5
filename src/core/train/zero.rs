//! ZeRO's optimizer-state sharding (DeepSpeed's stages 1 and 2) over the data-parallel
//! ranks: every trained tensor, flattened, is cut into `world` contiguous pieces of
//! `ceil(n / world)` elements (the last ones shorter or empty); rank `r` keeps the f32
//! master weights and AdamW moments of piece `r` only, updates that piece, and the
//! ranks then all-gather the updated weights. Stage 1 sums full gradients over the ranks
//! once a step and keeps this rank's piece; stage 2 reduce-scatters each micro-batch's
//! gradients, so only this rank's piece of the accumulated gradient is ever held.

use std::ops::Range;

use serde::{Deserialize, Serialize};

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
