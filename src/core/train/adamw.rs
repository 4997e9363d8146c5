//! AdamW with decoupled weight decay and f32 state (PyTorch's `torch.optim.AdamW`
//! arithmetic), and global-norm gradient clipping (`clip_grad_norm_`).
//!
//! Parameters kept in a lower precision (bf16 on the GPU) get an f32 master copy: the
//! update runs on the master and the parameter receives its rounded value, so small
//! updates are not lost to bf16 rounding (what DeepSpeed / mixed precision do).

use std::collections::HashMap;

use anyhow::{Context as _, Result, bail};
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
    /// f32 copy of a lower-precision parameter.
    master: Option<Tensor>,
}

impl Param {
    /// A parameter with zeroed moments.
    pub(crate) fn new(name: String, var: Var, lr: f64, decay: bool) -> Result<Self> {
        let t = var.as_tensor();
        let exp_avg = t.zeros_like()?.to_dtype(DType::F32)?;
        let master = if t.dtype() == DType::F32 {
            None
        } else {
            Some(t.to_dtype(DType::F32)?.detach())
        };
        Ok(Self {
            name,
            exp_avg_sq: exp_avg.clone(),
            exp_avg,
            master,
            var,
            lr,
            decay,
        })
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
    /// The update from candle's ops (any device and dtype).
    fn update(&mut self, g: &Tensor, s: &Scalars) -> Result<()> {
        let current = match &self.master {
            Some(m) => m.clone(),
            None => self.var.as_tensor().detach(),
        };
        let decayed = match s.keep {
            Some(keep) => (&current * keep)?,
            None => current,
        };
        self.exp_avg = (&self.exp_avg + ((g - &self.exp_avg)? * (1.0 - s.b1))?)?;
        self.exp_avg_sq = ((&self.exp_avg_sq * s.b2)? + (g.sqr()? * (1.0 - s.b2))?)?;
        let denom = ((self.exp_avg_sq.sqrt()? / s.bias_correction2_sqrt)? + s.eps)?;
        let updated = (decayed - ((&self.exp_avg / denom)? * s.step_size)?)?;
        match &mut self.master {
            Some(m) => {
                self.var.set(&updated.to_dtype(self.var.dtype())?)?;
                *m = updated;
            }
            None => self.var.set(&updated)?,
        }
        Ok(())
    }

    /// [`Param::update`] in one parallel pass for an f32 CPU parameter, operation for
    /// operation as candle computes it (`t * x` is `t * (x as f32) + 0`, `t / x` is
    /// `t * ((1 / x) as f32) + 0`, `t + x` is `t * 1 + (x as f32)`), so the bits are the
    /// same; the composite's thirteen single-threaded passes and temporaries are what
    /// it saves. Returns false where it does not apply.
    fn update_fused(&mut self, g: &Tensor, s: &Scalars) -> Result<bool> {
        let p = self.var.as_tensor();
        let all = [p, g, &self.exp_avg, &self.exp_avg_sq];
        let fits = |t: &&Tensor| {
            t.device().is_cpu()
                && t.dtype() == DType::F32
                && t.is_contiguous()
                && t.dims() == p.dims()
        };
        if self.master.is_some() || !all.iter().all(fits) {
            return Ok(false);
        }
        let n = p.elem_count();
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
        let shape = p.shape().clone();
        self.exp_avg = Tensor::from_vec(m_new, &shape, &Device::Cpu)?;
        self.exp_avg_sq = Tensor::from_vec(v_new, &shape, &Device::Cpu)?;
        self.var
            .set(&Tensor::from_vec(p_new, &shape, &Device::Cpu)?)?;
        Ok(true)
    }
}

/// Elements per task of the fused update.
const CHUNK: usize = 1 << 16;

/// The optimiser: parameters, their state and the step count.
pub struct AdamW {
    /// The hyperparameters.
    pub cfg: AdamWConfig,
    /// The parameters with their state, in model order.
    pub params: Vec<Param>,
    /// Updates applied so far.
    pub steps: u64,
}

impl AdamW {
    /// An optimiser over `params`.
    pub fn new(cfg: AdamWConfig, params: Vec<Param>) -> Self {
        Self {
            cfg,
            params,
            steps: 0,
        }
    }

    /// Applies one update with the gradients `grads[i]` (f32, for `params[i]`) and the
    /// learning rates scaled by `lr_factor`.
    pub(crate) fn step(&mut self, grads: &[Tensor], lr_factor: f64) -> Result<()> {
        self.steps += 1;
        for (p, g) in self.params.iter_mut().zip(grads) {
            let s = Scalars::new(&self.cfg, self.steps, p.lr * lr_factor, p.decay);
            if !p.update_fused(g, &s)? {
                p.update(g, &s)?;
            }
        }
        Ok(())
    }

    /// The state to save: `{name}.exp_avg`, `{name}.exp_avg_sq` and `{name}.master` (the
    /// parameter's exact f32 value: its master copy, or itself when it is f32).
    pub(crate) fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.params.len() * 3);
        for p in &self.params {
            out.push((format!("{}.exp_avg", p.name), p.exp_avg.clone()));
            out.push((format!("{}.exp_avg_sq", p.name), p.exp_avg_sq.clone()));
            let master = match &p.master {
                Some(m) => m.clone(),
                None => p.var.as_tensor().detach(),
            };
            out.push((format!("{}.master", p.name), master));
        }
        Ok(out)
    }

    /// Restores what [`AdamW::state_tensors`] saved, parameters included (every one
    /// must be there with its shape).
    pub(crate) fn load_state(
        &mut self,
        mut saved: HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<()> {
        for p in &mut self.params {
            let mut take = |what: &str, like: &Tensor| -> Result<Tensor> {
                let key = format!("{}.{what}", p.name);
                let t = saved
                    .remove(&key)
                    .with_context(|| format!("optimizer state has no `{key}`"))?;
                if t.dims() != like.dims() {
                    bail!(
                        "optimizer state `{key}` has shape {:?}, expected {:?}",
                        t.dims(),
                        like.dims()
                    );
                }
                Ok(t.to_dtype(DType::F32)?.to_device(like.device())?)
            };
            p.exp_avg = take("exp_avg", &p.exp_avg)?;
            p.exp_avg_sq = take("exp_avg_sq", &p.exp_avg_sq)?;
            let master = take("master", &p.exp_avg)?;
            p.var.set(&master.to_dtype(p.var.dtype())?)?;
            if p.master.is_some() {
                p.master = Some(master);
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm` (no-op for
/// `max_norm <= 0`) and returns the norm before clipping, like `clip_grad_norm_`.
pub(crate) fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sum = 0f64;
    for g in grads.iter() {
        sum += g
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = sum.sqrt();
    if max_norm > 0.0 {
        let coef = (max_norm / (norm + 1e-6)).min(1.0);
        if coef < 1.0 {
            for g in grads.iter_mut() {
                *g = (&*g * coef)?;
            }
        }
    }
    Ok(norm)
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
        let mut opt = AdamW::new(
            cfg,
            vec![Param::new("p".into(), var.clone(), 0.1, true).unwrap()],
        );
        opt.step(&[Tensor::new(&[0.5f32, -1.], &dev).unwrap()], 1.0)
            .unwrap();
        let p1 = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (p1[0] - 0.85).abs() < 1e-6 && (p1[1] + 1.8).abs() < 1e-6,
            "{p1:?}"
        );
        opt.step(&[Tensor::new(&[0.25f32, 3.], &dev).unwrap()], 1.0)
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
            let param =
                || Param::new("p".into(), Var::from_tensor(&start).unwrap(), 2e-3, decay).unwrap();
            let (mut fused, mut composite) = (
                AdamW::new(cfg, vec![param()]),
                AdamW::new(cfg, vec![param()]),
            );
            for step in 0..3 {
                let mut g = Tensor::randn(0f32, 1., n, &dev)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                g[..8].copy_from_slice(&[0.0, -0.0, 1e-30, -1e-30, 1e-8, 3e4, -7e5, 0.5]);
                let g = Tensor::new(g, &dev).unwrap();
                fused.step(std::slice::from_ref(&g), 0.7).unwrap();
                composite.steps += 1;
                let s = Scalars::new(&cfg, composite.steps, 2e-3 * 0.7, decay);
                composite.params[0].update(&g, &s).unwrap();
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
    fn clipping_scales_to_the_max_norm_and_reports_the_norm_before() {
        let dev = Device::Cpu;
        let mut grads = vec![
            Tensor::new(&[3f32], &dev).unwrap(),
            Tensor::new(&[4f32], &dev).unwrap(),
        ];
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-9);
        let after: f32 = grads[0].to_vec1::<f32>().unwrap()[0];
        assert!((after - 0.6).abs() < 1e-6, "{after}");
        let norm = clip_grad_norm(&mut grads, 10.0).unwrap();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
