//! Data-parallel training: where this process sits in the job (torchrun's `RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, or Slurm's `SLURM_PROCID`, `SLURM_NTASKS`,
//! `SLURM_LOCALID`), and the gradient sum across processes: nothing to do for one
//! process, NCCL all-reduce between GPUs (`--features nccl`).
//!
//! Every rank runs the same steps; micro-batch `i` of step `s` on rank `r` is global
//! micro-batch `(s * accum + i) * world + r`, so `world` processes with accumulation `a`
//! train on exactly the batches one process with accumulation `a * world` would, and
//! averaging the ranks' gradients gives the same update.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use candle_core::Tensor;
use serde::Serialize;

pub use super::zero::shard_range;

/// This process's place in a data-parallel job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct World {
    /// This process's index in the job, `0..size` (`RANK`, `SLURM_PROCID`).
    pub rank: usize,
    /// Processes in the job (`WORLD_SIZE`, `SLURM_NTASKS`).
    pub size: usize,
    /// The GPU index on this node.
    pub local_rank: usize,
}

impl World {
    /// One process alone.
    pub const SINGLE: World = World {
        rank: 0,
        size: 1,
        local_rank: 0,
    };

    /// Reads the launcher's variables (`get` is `std::env::var`, or a map in tests).
    pub(crate) fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<World> {
        let read = |name: &str| -> Result<Option<usize>> {
            match get(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .with_context(|| format!("{name}={v}: expected a number")),
            }
        };
        let (rank, size, local) = match (read("RANK")?, read("WORLD_SIZE")?) {
            (Some(r), Some(w)) => (r, w, read("LOCAL_RANK")?.unwrap_or(r)),
            (None, None) => match (read("SLURM_PROCID")?, read("SLURM_NTASKS")?) {
                (Some(r), Some(w)) => (r, w, read("SLURM_LOCALID")?.unwrap_or(r)),
                _ => return Ok(World::SINGLE),
            },
            _ => bail!("RANK and WORLD_SIZE must be set together"),
        };
        if size == 0 || rank >= size {
            bail!("rank {rank} does not fit a world of {size} processes");
        }
        Ok(World {
            rank,
            size,
            local_rank: local,
        })
    }

    /// Whether this process writes files (metrics, checkpoints, exports).
    pub(crate) fn is_main(&self) -> bool {
        self.rank == 0
    }
}

/// Sums and gathers tensors over the processes of a job.
pub trait Reducer {
    /// The job.
    fn world(&self) -> World;
    /// The element-wise sum of `t` over all ranks (every rank gets the result).
    fn sum(&self, t: &Tensor) -> Result<Tensor>;
    /// This rank's piece ([`shard_range`]) of the element-wise f32 sum over all ranks of
    /// `t` flattened. By default the piece of a full sum: the same values a
    /// reduce-scatter gives, for twice its traffic.
    fn reduce_scatter(&self, t: &Tensor) -> Result<Tensor> {
        let total = self.sum(&t.flatten_all()?.to_dtype(candle_core::DType::F32)?)?;
        let world = self.world();
        let r = shard_range(total.elem_count(), world.size, world.rank);
        Ok(total.narrow(0, r.start, r.len())?)
    }

    /// The flattened `n`-element tensor whose pieces ([`shard_range`]) the ranks hold, each
    /// giving its own `piece` (same dtype on every rank). By default a sum of each rank's
    /// piece in place among zeros, which is exact.
    fn all_gather(&self, piece: &Tensor, n: usize) -> Result<Tensor> {
        let world = self.world();
        let r = shard_range(n, world.size, world.rank);
        let f32 = candle_core::DType::F32;
        let device = piece.device();
        let mut parts = Vec::with_capacity(3);
        for (len, t) in [(r.start, None), (r.len(), Some(piece)), (n - r.end, None)] {
            match t {
                Some(t) => parts.push(t.to_dtype(f32)?),
                None if len > 0 => parts.push(Tensor::zeros(len, f32, device)?),
                None => {}
            }
        }
        let placed = Tensor::cat(&parts, 0)?;
        Ok(self.sum(&placed)?.to_dtype(piece.dtype())?)
    }
}

/// A sum over the ranks of an f64 (a partial gradient norm): sent as two f32s (the value
/// and its rounding error) so the total keeps about 48 bits.
pub(crate) fn sum_f64(reducer: &dyn Reducer, x: f64) -> Result<f64> {
    if reducer.world().size == 1 {
        return Ok(x);
    }
    let hi = x as f32;
    let lo = (x - f64::from(hi)) as f32;
    let t = Tensor::new(&[hi, lo], &candle_core::Device::Cpu)?;
    let v = reducer.sum(&t)?.to_vec1::<f32>()?;
    Ok(f64::from(v[0]) + f64::from(v[1]))
}

/// A job of one process: sums are the tensor itself.
pub struct Alone;

impl Reducer for Alone {
    fn world(&self) -> World {
        World::SINGLE
    }

    fn sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }

    fn reduce_scatter(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.flatten_all()?.to_dtype(candle_core::DType::F32)?)
    }

    fn all_gather(&self, piece: &Tensor, _n: usize) -> Result<Tensor> {
        Ok(piece.clone())
    }
}

/// The launcher variables that tell one launch from another: Slurm's job, step and
/// restart count, torchrun's run id and restart count, the master address and port.
const LAUNCH_VARIABLES: [&str; 7] = [
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_RESTART_COUNT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "MASTER_ADDR",
    "MASTER_PORT",
];

/// The file through which rank 0 hands the NCCL id to the others: in the shared run
/// directory, named after this launch (a hash of the launcher's variables), so the file
/// of an earlier launch in the same run directory is not read. Rank 0 deletes it once
/// every rank has joined.
pub(crate) fn rendezvous_file(
    run_dir: &Path,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<std::path::PathBuf> {
    if LAUNCH_VARIABLES.iter().all(|k| get(k).is_none()) {
        bail!(
            "multi-process training needs the launcher's variables (torchrun's MASTER_ADDR/MASTER_PORT or \
             Slurm's SLURM_JOB_ID) to meet"
        );
    }
    let values: Vec<String> = LAUNCH_VARIABLES
        .iter()
        .map(|k| format!("{k}={}", get(k).unwrap_or_default()))
        .collect();
    let tag = crate::core::hash::fnv1a(&values.join(";"));
    Ok(run_dir.join(format!(".nccl-id-{tag:016x}")))
}

#[cfg(feature = "nccl")]
pub(crate) use nccl::NcclReducer;

#[cfg(feature = "nccl")]
mod nccl {
    use std::path::Path;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use anyhow::{Context as _, Result, anyhow, bail};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

    use super::{Reducer, World, shard_range};

    /// Sums over GPUs with NCCL.
    pub(crate) struct NcclReducer {
        comm: Rc<Comm>,
        world: World,
    }

    impl NcclReducer {
        /// Joins the job: rank 0 creates the NCCL id and writes it to `id_file`
        /// (atomically), the others wait for it (up to 10 minutes).
        pub(crate) fn connect(world: World, device: &Device, id_file: &Path) -> Result<Self> {
            let Device::Cuda(dev) = device else {
                bail!("NCCL needs a GPU device");
            };
            let id = if world.is_main() {
                let id = Id::new().map_err(|e| anyhow!("cannot create the NCCL id: {e:?}"))?;
                let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
                crate::core::files::write_atomic(id_file, &bytes)?;
                id
            } else {
                let started = Instant::now();
                let bytes = loop {
                    match std::fs::read(id_file) {
                        Ok(b) if b.len() == 128 => break b,
                        _ if started.elapsed() > Duration::from_secs(600) => {
                            bail!(
                                "rank {}: no NCCL id in {} after 10 minutes",
                                world.rank,
                                id_file.display()
                            )
                        }
                        _ => std::thread::sleep(Duration::from_millis(200)),
                    }
                };
                let mut internal = [0 as ::core::ffi::c_char; 128];
                for (dst, src) in internal.iter_mut().zip(&bytes) {
                    *dst = *src as ::core::ffi::c_char;
                }
                Id::uninit(internal)
            };
            let stream = dev.cuda_stream();
            let comm = Comm::from_rank(stream, world.rank, world.size, id)
                .map_err(|e| anyhow!("NCCL init failed on rank {}: {e:?}", world.rank))
                .context("joining the data-parallel job")?;
            if world.is_main() {
                // Every rank has joined: the id is spent.
                let _ = std::fs::remove_file(id_file);
            }
            Ok(Self {
                comm: Rc::new(comm),
                world,
            })
        }
    }

    impl Reducer for NcclReducer {
        fn world(&self) -> World {
            self.world
        }

        fn sum(&self, t: &Tensor) -> Result<Tensor> {
            let t = t.to_dtype(candle_core::DType::F32)?.contiguous()?;
            Ok(t.apply_op1_no_bwd(&Collective {
                comm: self.comm.clone(),
                kind: Kind::AllReduce,
                out: t.elem_count(),
            })?)
        }

        fn reduce_scatter(&self, t: &Tensor) -> Result<Tensor> {
            let (world, n) = (self.world, t.elem_count());
            let piece = n.div_ceil(world.size);
            let flat = padded(&t.flatten_all()?.to_dtype(DType::F32)?, piece * world.size)?;
            let mine = flat.apply_op1_no_bwd(&Collective {
                comm: self.comm.clone(),
                kind: Kind::ReduceScatter,
                out: piece,
            })?;
            Ok(mine.narrow(0, 0, shard_range(n, world.size, world.rank).len())?)
        }

        fn all_gather(&self, piece: &Tensor, n: usize) -> Result<Tensor> {
            let world = self.world;
            let len = n.div_ceil(world.size);
            let mine = padded(&piece.to_dtype(DType::F32)?, len)?;
            let all = mine.apply_op1_no_bwd(&Collective {
                comm: self.comm.clone(),
                kind: Kind::AllGather,
                out: len * world.size,
            })?;
            Ok(all.narrow(0, 0, n)?.to_dtype(piece.dtype())?)
        }
    }

    /// `t` (1-D) with zeros after it up to `len` elements, contiguous.
    fn padded(t: &Tensor, len: usize) -> Result<Tensor> {
        let have = t.elem_count();
        if have == len {
            return Ok(t.contiguous()?);
        }
        let zeros = Tensor::zeros(len - have, DType::F32, t.device())?;
        Ok(Tensor::cat(&[t, &zeros], 0)?)
    }

    /// Which NCCL collective a [`Collective`] runs.
    #[derive(Clone, Copy)]
    enum Kind {
        /// Every rank gets the sum.
        AllReduce,
        /// Each rank gets its equal piece of the sum.
        ReduceScatter,
        /// Each rank gets every rank's piece, in rank order.
        AllGather,
    }

    /// An NCCL collective (sums) as a candle op on a contiguous f32 CUDA tensor, giving
    /// `out` elements.
    struct Collective {
        comm: Rc<Comm>,
        kind: Kind,
        out: usize,
    }

    impl CustomOp1 for Collective {
        fn name(&self) -> &'static str {
            match self.kind {
                Kind::AllReduce => "nccl-all-reduce",
                Kind::ReduceScatter => "nccl-reduce-scatter",
                Kind::AllGather => "nccl-all-gather",
            }
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("NCCL collectives run on GPU tensors only")
        }

        fn cuda_fwd(
            &self,
            s: &candle_core::CudaStorage,
            l: &Layout,
        ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
            let n = l.shape().elem_count();
            let dev = s.device().clone();
            let src = s.as_cuda_slice::<f32>()?;
            let src = match l.contiguous_offsets() {
                Some((start, end)) if end - start == n => src.slice(start..end),
                _ => candle_core::bail!("NCCL collectives need a contiguous tensor"),
            };
            let mut dst = dev.alloc_zeros::<f32>(self.out)?;
            let done = match self.kind {
                Kind::AllReduce => self.comm.all_reduce(&src, &mut dst, &ReduceOp::Sum),
                Kind::ReduceScatter => self.comm.reduce_scatter(&src, &mut dst, &ReduceOp::Sum),
                Kind::AllGather => self.comm.all_gather(&src, &mut dst),
            };
            done.map_err(|e| candle_core::Error::Msg(format!("{}: {e:?}", self.name())))?;
            let shape = match self.kind {
                Kind::AllReduce => l.shape().clone(),
                _ => Shape::from(self.out),
            };
            Ok((candle_core::CudaStorage::wrap_cuda_slice(dst, dev), shape))
        }
    }
}

/// Ranks as threads of one process, for testing the data-parallel loop on the CPU: sums
/// go through shared memory, in rank order.
#[cfg(test)]
pub(crate) struct LocalGroup {
    world: World,
    shared: std::sync::Arc<(std::sync::Barrier, std::sync::Mutex<Vec<Vec<f32>>>)>,
}

#[cfg(test)]
impl LocalGroup {
    /// One reducer per rank of a `size`-rank group.
    pub(crate) fn new(size: usize) -> Vec<LocalGroup> {
        let shared = std::sync::Arc::new((
            std::sync::Barrier::new(size),
            std::sync::Mutex::new(vec![Vec::new(); size]),
        ));
        (0..size)
            .map(|rank| LocalGroup {
                world: World {
                    rank,
                    size,
                    local_rank: rank,
                },
                shared: shared.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
impl Reducer for LocalGroup {
    fn world(&self) -> World {
        self.world
    }

    fn sum(&self, t: &Tensor) -> Result<Tensor> {
        let (barrier, slots) = &*self.shared;
        let mine = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        slots.lock().expect("no panics while holding the lock")[self.world.rank] = mine;
        barrier.wait();
        let total = {
            let slots = slots.lock().expect("no panics while holding the lock");
            let mut total = slots[0].clone();
            for other in &slots[1..] {
                for (a, b) in total.iter_mut().zip(other) {
                    *a += b;
                }
            }
            total
        };
        barrier.wait();
        Ok(Tensor::from_vec(total, t.shape(), t.device())?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_world_comes_from_torchrun_or_slurm_variables() {
        assert_eq!(World::from_env(&env(&[])).unwrap(), World::SINGLE);
        let w = World::from_env(&env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
        ]))
        .unwrap();
        assert_eq!((w.rank, w.size, w.local_rank), (3, 8, 1));
        let w = World::from_env(&env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "5"),
        ]))
        .unwrap();
        assert_eq!((w.rank, w.size, w.local_rank), (5, 16, 5));
        assert!(World::from_env(&env(&[("RANK", "8"), ("WORLD_SIZE", "8")])).is_err());
        assert!(World::from_env(&env(&[("RANK", "1")])).is_err());
        let err = World::from_env(&env(&[("RANK", "x"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(err.to_string().contains("RANK=x"));
        let meet = |step: &str| {
            rendezvous_file(
                Path::new("/runs/a"),
                &env(&[("SLURM_JOB_ID", "12"), ("SLURM_STEP_ID", step)]),
            )
            .unwrap()
        };
        assert!(meet("0").starts_with("/runs/a"));
        assert!(
            meet("0")
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".nccl-id-")
        );
        assert_eq!(meet("0"), meet("0"));
        assert_ne!(
            meet("0"),
            meet("1"),
            "another srun step of the job meets elsewhere"
        );
        assert!(rendezvous_file(Path::new("/r"), &env(&[])).is_err());
    }
}
