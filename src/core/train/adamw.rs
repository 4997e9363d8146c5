//! AdamW with decoupled weight decay and f32 state (PyTorch's `torch.optim.AdamW`
//! arithmetic), and global-norm gradient clipping (`clip_grad_norm_`).
//!
//! Parameters kept in a lower precision (bf16 on the GPU) get an f32 master copy: the
//! update runs on the master and the parameter receives its rounded value, so small
//! updates are not lost to bf16 rounding (what DeepSpeed / mixed precision do).

use std::ops::Range;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Storage, Tensor, Var};
use rayon::prelude::*;

/// Hyperparameters shared by every parameter.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Decay rate of the first-moment average (`adam_beta1`).
    pub beta1: f64,
    /// Decay rate of the second-moment average (`adam_beta2`).
    pub beta2: f64,
    /// Added to the denominator for stability (`adam_epsilon`).
    pub eps: f64,
    /// Decoupled weight decay, multiplied by the learning rate (`weight_decay`).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// transformers' `TrainingArguments` defaults (adam_beta1/2, adam_epsilon); no decay.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// One trainable tensor and its optimiser state.
pub struct Param {
    /// Canonical name (`llm.layers.0.self_attn.q_proj.weight`, ...).
    pub name: String,
    /// The tensor inside the model that the update writes.
    pub var: Var,
    /// Peak learning rate of its group (before the schedule).
    pub lr: f64,
    /// Whether weight decay applies (not to biases and norm weights, as transformers' Trainer).
    pub decay: bool,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// f32 copy of a lower-precision parameter (or of the elements this rank owns).
    master: Option<Tensor>,
    /// The flattened elements this rank updates (ZeRO), or all of them.
    owned: Option<Range<usize>>,
}

impl Param {
    /// A parameter; the optimiser that takes it gives it its state ([`AdamW::placed`]).
    pub(crate) fn new(name: String, var: Var, lr: f64, decay: bool) -> Self {
        let none = Tensor::zeros(0, DType::F32, &Device::Cpu).expect("an empty CPU tensor");
        Self {
            exp_avg: none.clone(),
            exp_avg_sq: none,
            master: None,
            owned: None,
            name,
            var,
            lr,
            decay,
        }
    }

    /// Keeps the state of `owned` elements only (all when `None`) on `device`, zeroed,
    /// with an f32 master copy where the parameter is not f32 or lives elsewhere.
    fn place(&mut self, owned: Option<Range<usize>>, device: Device) -> Result<()> {
        let t = self.var.as_tensor();
        let values = match &owned {
            Some(r) => t.flatten_all()?.narrow(0, r.start, r.len())?,
            None => t.clone(),
        };
        let shape = values.shape().clone();
        self.exp_avg = Tensor::zeros(&shape, DType::F32, &device)?;
        self.exp_avg_sq = Tensor::zeros(&shape, DType::F32, &device)?;
        let elsewhere = !device.same_device(t.device());
        self.master = (t.dtype() != DType::F32 || elsewhere)
            .then(|| values.to_dtype(DType::F32)?.to_device(&device))
            .transpose()?
            .map(|m| m.detach());
        self.owned = owned;
        Ok(())
    }

    /// The f32 values of the elements this rank updates.
    fn current(&self) -> Result<Tensor> {
        Ok(match (&self.master, &self.owned) {
            (Some(m), _) => m.clone(),
            (None, Some(r)) => {
                self.var
                    .as_tensor()
                    .detach()
                    .flatten_all()?
                    .narrow(0, r.start, r.len())?
            }
            (None, None) => self.var.as_tensor().detach(),
        })
    }

    /// The elements this rank updates, as a range of the flattened tensor.
    pub(crate) fn owned(&self) -> Range<usize> {
        self.owned
            .clone()
            .unwrap_or(0..self.var.as_tensor().elem_count())
    }
}

/// One parameter's update scalars for the current step.
struct Scalars {
    b1: f64,
    b2: f64,
    eps: f64,
    /// `1 - lr * weight_decay`, where the parameter decays.
    keep: Option<f64>,
    bias_correction2_sqrt: f64,
    /// `lr / bias_correction1`.
    step_size: f64,
}

impl Scalars {
    /// The scalars of update `t` (from 1) at learning rate `lr`, with weight decay when
    /// the parameter `decay`s.
    fn new(cfg: &AdamWConfig, t: u64, lr: f64, decay: bool) -> Self {
        let t = t as i32;
        Self {
            b1: cfg.beta1,
            b2: cfg.beta2,
            eps: cfg.eps,
            keep: (decay && cfg.weight_decay != 0.0).then_some(1.0 - lr * cfg.weight_decay),
            bias_correction2_sqrt: (1.0 - cfg.beta2.powi(t)).sqrt(),
            step_size: lr / (1.0 - cfg.beta1.powi(t)),
        }
    }
}

impl Param {
    /// Updates the moments (and the master copy) with the f32 gradient `g` of the owned
    /// elements and returns their new f32 values.
    fn update(&mut self, g: &Tensor, s: &Scalars) -> Result<Tensor> {
        let current = self.current()?;
        let (updated, m, v) = match fused_update(&current, g, &self.exp_avg, &self.exp_avg_sq, s)? {
            Some(done) => done,
            None => composite_update(current, g, &self.exp_avg, &self.exp_avg_sq, s)?,
        };
        self.exp_avg = m;
        self.exp_avg_sq = v;
        if self.master.is_some() {
            self.master = Some(updated.clone());
        }
        Ok(updated)
    }
}

/// The update from candle's ops (any device and dtype): new values and moments.
fn composite_update(
    current: Tensor,
    g: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    s: &Scalars,
) -> Result<(Tensor, Tensor, Tensor)> {
    let decayed = match s.keep {
        Some(keep) => (&current * keep)?,
        None => current,
    };
    let m = (exp_avg + ((g - exp_avg)? * (1.0 - s.b1))?)?;
    let v = ((exp_avg_sq * s.b2)? + (g.sqr()? * (1.0 - s.b2))?)?;
    let denom = ((v.sqrt()? / s.bias_correction2_sqrt)? + s.eps)?;
    let updated = (decayed - ((&m / denom)? * s.step_size)?)?;
    Ok((updated, m, v))
}

/// [`composite_update`] in one parallel pass for f32 CPU tensors, operation for
/// operation as candle computes it (`t * x` is `t * (x as f32) + 0`, `t / x` is
/// `t * ((1 / x) as f32) + 0`, `t + x` is `t * 1 + (x as f32)`), so the bits are the
/// same; the composite's thirteen single-threaded passes and temporaries are what
/// it saves. `None` where it does not apply.
fn fused_update(
    current: &Tensor,
    g: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    s: &Scalars,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let all = [current, g, exp_avg, exp_avg_sq];
    let fits = |t: &&Tensor| {
        t.device().is_cpu()
            && t.dtype() == DType::F32
            && t.is_contiguous()
            && t.dims() == current.dims()
    };
    if !all.iter().all(fits) {
        return Ok(None);
    }
    let n = current.elem_count();
    let guards = all.map(|t| t.storage_and_layout());
    let mut inputs = Vec::with_capacity(4);
    for (storage, layout) in &guards {
        let Storage::Cpu(cpu) = &**storage else {
            bail!("fused AdamW given a non-CPU tensor");
        };
        inputs.push(&cpu.as_slice::<f32>()?[layout.start_offset()..][..n]);
    }
    let f = |x: f64| x as f32;
    let (c1, b2, c2) = (f(1.0 - s.b1), f(s.b2), f(1.0 - s.b2));
    let (inv_bc2, eps, step) = (f(1.0 / s.bias_correction2_sqrt), f(s.eps), f(s.step_size));
    let keep = s.keep.map(f);
    let (mut p_new, mut m_new, mut v_new) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    p_new
        .par_chunks_mut(CHUNK)
        .zip(m_new.par_chunks_mut(CHUNK))
        .zip(v_new.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((p_out, m_out), v_out))| {
            let at = c * CHUNK..c * CHUNK + p_out.len();
            let [p, g, m, v] = [0, 1, 2, 3].map(|i| &inputs[i][at.clone()]);
            for i in 0..p_out.len() {
                let decayed = keep.map_or(p[i], |keep| p[i] * keep + 0.0);
                let m = m[i] + ((g[i] - m[i]) * c1 + 0.0);
                let v = (v[i] * b2 + 0.0) + ((g[i] * g[i]) * c2 + 0.0);
                let denom = (v.sqrt() * inv_bc2 + 0.0) * 1.0 + eps;
                p_out[i] = decayed - ((m / denom) * step + 0.0);
                (m_out[i], v_out[i]) = (m, v);
            }
        });
    drop(guards);
    let shape = current.shape().clone();
    let tensor = |data| Tensor::from_vec(data, &shape, &Device::Cpu);
    Ok(Some((tensor(p_new)?, tensor(m_new)?, tensor(v_new)?)))
}

/// Elements per task of the fused update.
const CHUNK: usize = 1 << 16;

/// Writes a parameter's updated values into the model: the owned elements' new f32
/// values in, the whole tensor in the parameter's dtype on its device out (ZeRO's
/// all-gather where each rank owns a piece).
pub(crate) type GatherFn<'a> = dyn Fn(&Param, Tensor) -> Result<Tensor> + 'a;

/// Reads saved optimizer state: the flat f32 values of a key (of a tensor of so many
/// elements) in a range.
pub(crate) type ReadState<'a> = dyn Fn(&str, usize, Range<usize>) -> Result<Tensor> + 'a;

/// The optimiser: parameters, their state and the step count.
pub struct AdamW {
    /// The hyperparameters.
    pub cfg: AdamWConfig,
    /// The parameters with their state, in model order.
    pub params: Vec<Param>,
    /// Updates applied so far.
    pub steps: u64,
    /// The state lives in host memory (`--offload optimizer`).
    host: bool,
}

impl AdamW {
    /// An optimiser over `params`, each one's state zeroed next to it.
    pub fn new(cfg: AdamWConfig, params: Vec<Param>) -> Result<Self> {
        Self::placed(cfg, params, None, false)
    }

    /// An optimiser over `params` whose zeroed state is made once where it will live:
    /// for the elements `owned(n)` gives each parameter (ZeRO's piece of an `n`-element
    /// tensor), in host memory when `host` (`--offload optimizer`).
    pub(crate) fn placed(
        cfg: AdamWConfig,
        mut params: Vec<Param>,
        owned: Option<&dyn Fn(usize) -> Range<usize>>,
        host: bool,
    ) -> Result<Self> {
        for p in &mut params {
            let range = owned.map(|f| f(p.var.as_tensor().elem_count()));
            let device = if host {
                Device::Cpu
            } else {
                p.var.device().clone()
            };
            p.place(range, device)?;
        }
        Ok(Self {
            cfg,
            params,
            steps: 0,
            host,
        })
    }

    /// Applies one update with the gradients `grads[i]` of `params[i]`'s owned elements
    /// (any float dtype, widened to f32 on the state's device and multiplied by `scale`
    /// when it is not 1) and the learning rates scaled by `lr_factor`; `gather` turns
    /// each parameter's new values into the tensor the model holds.
    pub(crate) fn step(
        &mut self,
        grads: &[Tensor],
        scale: f64,
        lr_factor: f64,
        gather: &GatherFn,
    ) -> Result<()> {
        self.steps += 1;
        let (cfg, steps) = (self.cfg, self.steps);
        let widen = |g: &Tensor, device: &Device| -> Result<Tensor> {
            let g = g.to_dtype(DType::F32)?.to_device(device)?;
            Ok(if scale != 1.0 { (g * scale)? } else { g })
        };
        let apply = |p: &mut Param, g: Tensor| -> Result<()> {
            let s = Scalars::new(&cfg, steps, p.lr * lr_factor, p.decay);
            let updated = p.update(&g.reshape(p.exp_avg.shape())?, &s)?;
            let whole = gather(p, updated)?;
            p.var.set(&whole)?;
            Ok(())
        };
        if !self.host {
            for (p, g) in self.params.iter_mut().zip(grads) {
                let g = widen(g, &p.exp_avg.device().clone())?;
                apply(p, g)?;
            }
            return Ok(());
        }
        // Offloaded: a helper thread copies the next gradients to the host while this one
        // updates and copies the weights back.
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            scope.spawn(move || {
                for g in grads {
                    if tx.send(widen(g, &Device::Cpu)).is_err() {
                        break;
                    }
                }
            });
            for p in self.params.iter_mut() {
                let g = rx
                    .recv()
                    .map_err(|_| anyhow::anyhow!("the gradient copier stopped"))??;
                apply(p, g)?;
            }
            Ok(())
        })
    }

    /// The state to save: `{name}.exp_avg`, `{name}.exp_avg_sq` and `{name}.master` (the
    /// exact f32 values of the elements this rank owns: its master copy, or the
    /// parameter itself when it is f32).
    pub(crate) fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.params.len() * 3);
        for p in &self.params {
            out.push((format!("{}.exp_avg", p.name), p.exp_avg.clone()));
            out.push((format!("{}.exp_avg_sq", p.name), p.exp_avg_sq.clone()));
            out.push((format!("{}.master", p.name), p.current()?));
        }
        Ok(out)
    }

    /// Restores the state of the owned elements, `read(key, n, range)` giving the saved
    /// flat f32 values in `range` of `key` (of an `n`-element tensor), and each parameter
    /// whole from `read(name.master, n, 0..n)`.
    pub(crate) fn load_state(&mut self, read: &ReadState, steps: u64) -> Result<()> {
        for p in &mut self.params {
            let n = p.var.as_tensor().elem_count();
            let owned = p.owned();
            let state_device = p.exp_avg.device().clone();
            let take = |what: &str, range: Range<usize>, like: &Tensor| -> Result<Tensor> {
                let key = format!("{}.{what}", p.name);
                let t = read(&key, n, range)?;
                Ok(t.to_dtype(DType::F32)?
                    .reshape(like.shape())?
                    .to_device(like.device())?)
            };
            let m = take("exp_avg", owned.clone(), &p.exp_avg)?;
            let v = take("exp_avg_sq", owned.clone(), &p.exp_avg_sq)?;
            let whole = take("master", 0..n, p.var.as_tensor())?;
            p.var.set(&whole.to_dtype(p.var.dtype())?)?;
            (p.exp_avg, p.exp_avg_sq) = (m, v);
            if p.master.is_some() {
                let values = whole.flatten_all()?.narrow(0, owned.start, owned.len())?;
                p.master = Some(
                    values
                        .reshape(p.exp_avg.shape())?
                        .to_device(&state_device)?,
                );
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// The sum of the squares of every element of `grads` (widened to f32), in f64.
pub(crate) fn squared_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sum = 0f64;
    for g in grads {
        sum += g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(sum)
}

/// The factor `clip_grad_norm_` scales gradients of global norm `norm` by to bring it to
/// `max_norm` (1 when it is already within, or `max_norm <= 0`).
pub(crate) fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 {
        (max_norm / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    }
}

/// The whole new value of an unsharded parameter: its f32 values in its dtype, on its
/// device (the [`GatherFn`] of a single process).
pub(crate) fn keep_local(p: &Param, updated: Tensor) -> Result<Tensor> {
    let t = p.var.as_tensor();
    Ok(updated
        .to_dtype(t.dtype())?
        .to_device(t.device())?
        .reshape(t.shape())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn two_steps_match_torch_adamw() {
        // torch.optim.AdamW([p], lr=0.1, weight_decay=0.5) on p = [1, -2], grads [0.5, -1]
        // then [0.25, 3]: p after 1 = [0.85, -1.8], after 2 = [0.71428204, -1.75941885].
        let dev = Device::Cpu;
        let var = Var::new(&[1f32, -2.], &dev).unwrap();
        let cfg = AdamWConfig {
            weight_decay: 0.5,
            ..AdamWConfig::default()
        };
        let mut opt =
            AdamW::new(cfg, vec![Param::new("p".into(), var.clone(), 0.1, true)]).unwrap();
        opt.step(
            &[Tensor::new(&[0.5f32, -1.], &dev).unwrap()],
            1.0,
            1.0,
            &keep_local,
        )
        .unwrap();
        let p1 = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (p1[0] - 0.85).abs() < 1e-6 && (p1[1] + 1.8).abs() < 1e-6,
            "{p1:?}"
        );
        opt.step(
            &[Tensor::new(&[0.25f32, 3.], &dev).unwrap()],
            1.0,
            1.0,
            &keep_local,
        )
        .unwrap();
        let p2 = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!((p2[0] - 0.714_282_04).abs() < 1e-6, "{p2:?}");
        assert!((p2[1] + 1.759_418_8).abs() < 1e-6, "{p2:?}");
    }

    /// The fused update gives the composite's bits, with and without weight decay,
    /// over several steps, on values from zero to large (two chunks and a tail).
    #[test]
    fn the_fused_update_is_the_composite_bit_for_bit() {
        let dev = Device::Cpu;
        let n = CHUNK * 2 + 77;
        let start = (Tensor::randn(0f32, 3., n, &dev).unwrap() * 1e-3).unwrap();
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        for decay in [false, true] {
            let param = || Param::new("p".into(), Var::from_tensor(&start).unwrap(), 2e-3, decay);
            let (mut fused, mut composite) = (
                AdamW::new(cfg, vec![param()]).unwrap(),
                AdamW::new(cfg, vec![param()]).unwrap(),
            );
            for step in 0..3 {
                let mut g = Tensor::randn(0f32, 1., n, &dev)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                g[..8].copy_from_slice(&[0.0, -0.0, 1e-30, -1e-30, 1e-8, 3e4, -7e5, 0.5]);
                let g = Tensor::new(g, &dev).unwrap();
                fused
                    .step(std::slice::from_ref(&g), 1.0, 0.7, &keep_local)
                    .unwrap();
                composite.steps += 1;
                let s = Scalars::new(&cfg, composite.steps, 2e-3 * 0.7, decay);
                let p = &mut composite.params[0];
                let (updated, m, v) =
                    composite_update(p.current().unwrap(), &g, &p.exp_avg, &p.exp_avg_sq, &s)
                        .unwrap();
                p.var.set(&updated).unwrap();
                (p.exp_avg, p.exp_avg_sq) = (m, v);
                let bits = |opt: &AdamW| -> Vec<Vec<u32>> {
                    let p = &opt.params[0];
                    [p.var.as_tensor(), &p.exp_avg, &p.exp_avg_sq]
                        .map(|t| {
                            t.to_vec1::<f32>()
                                .unwrap()
                                .iter()
                                .map(|x| x.to_bits())
                                .collect()
                        })
                        .to_vec()
                };
                assert!(
                    bits(&fused) == bits(&composite),
                    "decay {decay}, step {step}"
                );
            }
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let dev = Device::Cpu;
        let grads = vec![
            Tensor::new(&[3f32], &dev).unwrap(),
            Tensor::new(&[4f32], &dev)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        ];
        let norm = squared_norm(&grads).unwrap().sqrt();
        assert!((norm - 5.0).abs() < 1e-9);
        assert!((clip_factor(norm, 1.0) * 3.0 - 0.6).abs() < 1e-6);
        assert_eq!(clip_factor(norm, 10.0), 1.0);
        assert_eq!(clip_factor(norm, 0.0), 1.0);
    }
}
