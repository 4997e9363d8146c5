//! The training presets: the settings of the reference scripts
//! (`scripts/med/llava3_med_stage1.sh`, `llava3_med_stage2.sh`, `llava3_med_fintune.sh`,
//! `llava3_med_stage2_lora.sh`) that `mt train --stage 1|2` and `mt finetune` start from,
//! before their flags override any of them.

use super::params::{LoraSpec, Tune};

/// Which preset a command starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preset {
    /// `mt train --stage 1`: projector alignment.
    Stage1,
    /// `mt train --stage 2`: instruction tuning.
    Stage2,
    /// `mt finetune`: a benchmark's training split.
    Finetune,
}

/// A preset's values for the settings a flag may override.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Defaults {
    /// Peak learning rate.
    pub lr: f64,
    /// Peak learning rate of the projector (none: `lr`).
    pub projector_lr: Option<f64>,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub model_max_length: usize,
    /// `pad` or `square`.
    pub image_aspect_ratio: &'static str,
    pub group_by_modality: bool,
    pub epochs: f64,
}

/// LoRA dropout when none is given (the reference's).
pub(crate) const LORA_DROPOUT: f64 = 0.05;

impl Preset {
    /// What the preset trains: LoRA adapters when `lora` is given, else the projector
    /// (stage 1) or the language model and the projector.
    pub(crate) fn tune(self, lora: Option<LoraSpec>) -> Tune {
        match (lora, self) {
            (Some(spec), _) => Tune::Lora(spec),
            (None, Preset::Stage1) => Tune::Projector,
            (None, _) => Tune::Full,
        }
    }

    /// The preset's values; with `lora`, the LoRA script's (whatever the stage).
    pub(crate) fn defaults(self, lora: bool) -> Defaults {
        let (lr, batch_size, grad_accum, model_max_length, image_aspect_ratio, grouped, epochs) =
            match (self, lora) {
                (_, true) => (2e-4, 4, 4, 4096, "pad", false, 3.0),
                (Preset::Stage1, false) => (2e-3, 2, 4, 2048, "square", false, 1.0),
                (Preset::Stage2, false) => (2e-5, 4, 8, 4096, "pad", true, 1.0),
                (Preset::Finetune, false) => (2e-5, 4, 8, 4096, "pad", false, 1.0),
            };
        Defaults {
            lr,
            projector_lr: lora.then_some(2e-5),
            batch_size,
            grad_accum,
            model_max_length,
            image_aspect_ratio,
            group_by_modality: grouped,
            epochs,
        }
    }
}

impl Defaults {
    /// The values for help text: `lr 2e-5, batch 4 x accum 8, max length 4096, padded
    /// images, 1 epoch` (the projector's rate and modality grouping when set).
    pub(crate) fn describe(&self) -> String {
        let mut parts = vec![format!("lr {:e}", self.lr)];
        parts.extend(self.projector_lr.map(|lr| format!("projector lr {lr:e}")));
        parts.push(format!(
            "batch {} x accum {}",
            self.batch_size, self.grad_accum
        ));
        parts.push(format!("max length {}", self.model_max_length));
        parts.push(match self.image_aspect_ratio {
            "pad" => "padded images".to_string(),
            other => format!("{other} images"),
        });
        if self.group_by_modality {
            parts.push("modality-grouped order".into());
        }
        let plural = if self.epochs == 1.0 { "" } else { "s" };
        parts.push(format!("{} epoch{plural}", self.epochs));
        parts.join(", ")
    }
}

/// LoRA of rank `r`: alpha 2 x r and dropout [`LORA_DROPOUT`] unless given.
pub(crate) fn lora(r: usize, alpha: Option<f64>, dropout: Option<f64>) -> LoraSpec {
    LoraSpec {
        r,
        alpha: alpha.unwrap_or(2.0 * r as f64),
        dropout: dropout.unwrap_or(LORA_DROPOUT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_overrides_the_stage_and_alpha_defaults_to_twice_the_rank() {
        assert_eq!(
            Preset::Stage1.defaults(true),
            Preset::Finetune.defaults(true)
        );
        assert_eq!(Preset::Stage1.defaults(false).lr, 2e-3);
        assert!(Preset::Stage2.defaults(false).group_by_modality);
        assert_eq!(
            Preset::Stage2.defaults(false).describe(),
            "lr 2e-5, batch 4 x accum 8, max length 4096, padded images, modality-grouped order, 1 epoch"
        );
        assert_eq!(
            Preset::Finetune.defaults(true).describe(),
            "lr 2e-4, projector lr 2e-5, batch 4 x accum 4, max length 4096, padded images, 3 epochs"
        );
        let spec = lora(8, None, None);
        assert_eq!((spec.alpha, spec.dropout), (16.0, 0.05));
        assert!(matches!(Preset::Stage1.tune(None), Tune::Projector));
        assert!(matches!(Preset::Finetune.tune(None), Tune::Full));
    }
}
