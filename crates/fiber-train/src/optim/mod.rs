//! Optimisation as in FIBER (docs/model.md §3.5): HuggingFace's AdamW (bias-corrected moments, decoupled weight
//! decay applied after the Adam update), parameter groups chosen by checkpoint key (no weight
//! decay for biases and norms, learning-rate multipliers for fusion / cross-modal modules and
//! heads), global gradient-norm clipping, gradient accumulation, and a state that is saved and
//! restored exactly (moments and step count, keyed by checkpoint key).
//!
//! Mixed precision: on a backend that computes in half precision (`Cuda<bf16>`, `Wgpu<f16>`, …)
//! the optimiser keeps f32 **master weights** next to the half-precision parameters, and its
//! moments, the gradient norm and the update in f32; the parameters are the master weights
//! rounded to half precision after each step. Updates far below a half-precision ulp (1e-4
//! steps on weights near 1 vanish in bf16, whose ulp there is 7.8e-3) then accumulate instead
//! of being rounded away, and ε = 1e-8 (0 in f16) keeps `m / (√v + ε)` finite where a gradient
//! is exactly zero. With f16 parameters the loss can also be scaled dynamically
//! (`loss_scaling`, the crate's `loss_scale` module) so that small gradients survive the backward pass.
//!
//! Parameters are reached through the models' `visit_weights`, so the optimiser sees the same
//! names as the checkpoints and the original's rules apply to them literally.

use std::collections::BTreeMap;

use burn::config::Config;
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Element, FloatDType};
use fiber_core::weights::{Layout, WeightVisitor};
use fiber_core::{StoredTensor, TensorStore};

pub mod ema;
pub mod gradients;
pub mod groups;
pub mod schedule;

pub use ema::WeightAverage;
pub use gradients::{GradientCollector, KeyedGradients};
pub use groups::{Freeze, ParamGroups};
pub use schedule::{linear_schedule, LrSchedule};

use crate::error::TrainError;
use crate::loss_scale::{DynamicLossScale, INIT_SCALE};

/// AdamW hyper-parameters (defaults of docs/model.md §3.5).
#[derive(Config, Debug, PartialEq)]
pub struct AdamWConfig {
    /// β₁.
    #[config(default = 0.9)]
    pub beta1: f64,
    /// β₂.
    #[config(default = 0.98)]
    pub beta2: f64,
    /// ε added to the root of the second moment.
    #[config(default = 1e-8)]
    pub eps: f64,
    /// Decoupled weight decay.
    #[config(default = 0.01)]
    pub weight_decay: f64,
    /// Gradients are rescaled so that their global L2 norm is at most this (none when absent).
    #[config(default = "None")]
    pub max_grad_norm: Option<f64>,
    /// Where the backend computes in half precision (f16, bf16), keep f32 master weights and
    /// do the update in f32; `false` updates the half-precision parameters directly (pure half
    /// precision, which loses small updates and turns ε = 1e-8 into 0 in f16).
    #[config(default = true)]
    pub master_weights: bool,
    /// Where the parameters are f16 and master weights are kept, scale the loss dynamically
    /// (the crate's `loss_scale` module) so that small gradients do not flush to zero; steps whose
    /// gradients overflow are skipped. Off by default: on the built-in data the scale's search
    /// for a value that does not overflow skipped 6 of the first 7 steps and the run ended 4 %
    /// above f32, where unscaled f16 ended within 0.2 % (docs/performance.md).
    #[config(default = false)]
    pub loss_scaling: bool,
}

/// HuggingFace AdamW with parameter groups and a saved state.
pub struct AdamW<B: Backend> {
    config: AdamWConfig,
    groups: ParamGroups,
    step: u64,
    moments: BTreeMap<String, (Tensor<B, 1>, Tensor<B, 1>)>,
    /// The float type of master weights and moments, when it differs from the parameters'.
    master: Option<FloatDType>,
    masters: BTreeMap<String, Tensor<B, 1>>,
    loss_scale: Option<DynamicLossScale>,
    weight_decay_factor: f64,
}

/// f32 master weights where `B` computes in half precision (f16, bf16); none otherwise.
pub fn default_master_weights<B: Backend>() -> Option<FloatDType> {
    match <B::FloatElem as Element>::dtype() {
        DType::F16 | DType::BF16 => Some(FloatDType::F32),
        _ => None,
    }
}

/// Gradients ready for the update ([`AdamW::prepare`]): in the update's float type and
/// divided by the loss scale.
pub struct PreparedGradients<B: Backend> {
    gradients: KeyedGradients<B>,
}

impl<B: Backend> PreparedGradients<B> {
    /// Their squared global L2 norm `[1]` (f32), on the device; `None` without gradients.
    pub fn squared_norm(&self) -> Option<Tensor<B, 1>> {
        self.gradients.squared_norm()
    }
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The factor the gradients were scaled by (1 without clipping).
    pub clip_factor: f64,
    /// Parameters updated.
    pub updated: usize,
    /// Whether the step was skipped because the scaled gradients overflowed (loss scaling).
    pub skipped: bool,
}

impl<B: Backend> AdamW<B> {
    /// A fresh optimiser, with f32 master weights where `B` computes in half precision
    /// ([`default_master_weights`]) unless `config.master_weights` is off.
    pub fn new(config: AdamWConfig, groups: ParamGroups) -> Self {
        let master = match config.master_weights {
            true => default_master_weights::<B>(),
            false => None,
        };
        let f16 = <B::FloatElem as Element>::dtype() == DType::F16;
        let loss_scale = (config.loss_scaling && f16 && master.is_some())
            .then(|| DynamicLossScale::new(INIT_SCALE));
        Self {
            config,
            groups,
            step: 0,
            moments: BTreeMap::new(),
            master,
            masters: BTreeMap::new(),
            loss_scale,
            weight_decay_factor: 1.0,
        }
    }

    /// Scales the loss dynamically starting from `init` (`None`: no loss scaling), whatever the
    /// parameters' type.
    pub fn with_loss_scaling(mut self, init: Option<f64>) -> Self {
        self.loss_scale = init.map(DynamicLossScale::new);
        self
    }

    /// The factor the loss is multiplied by before the backward pass, if the loss is scaled.
    pub fn loss_scale(&self) -> Option<f64> {
        self.loss_scale.map(|s| s.scale())
    }

    /// `loss` `[1]` multiplied by the current loss scale (unchanged without loss scaling); take
    /// the gradients of this, and [`AdamW::begin_step`] divides them by the scale again.
    pub fn scale_loss<A: AutodiffBackend<InnerBackend = B>>(
        &self,
        loss: Tensor<A, 1>,
    ) -> Tensor<A, 1> {
        match self.loss_scale {
            Some(s) => loss.mul_scalar(s.scale()),
            None => loss,
        }
    }

    /// Keeps master weights, moments and the update in `dtype` (`None`: in the parameters' own
    /// float type).
    pub fn with_master_weights(mut self, dtype: Option<FloatDType>) -> Self {
        self.master = dtype;
        self
    }

    /// The float type of the master weights, if the optimiser keeps any.
    pub fn master_weights(&self) -> Option<FloatDType> {
        self.master
    }

    /// Multiplies the configured weight decay by `factor` from the next step on (a weight-decay
    /// schedule; 1 by default).
    pub fn set_weight_decay_factor(&mut self, factor: f64) {
        self.weight_decay_factor = factor;
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The parameter groups.
    pub fn groups(&self) -> &ParamGroups {
        &self.groups
    }

    /// Brings `gradients` into the update's type (the master weights' type, if any) and
    /// divides them by the loss scale, all on the device; their squared norm
    /// ([`PreparedGradients::squared_norm`]) can then be read back together with the step's
    /// other scalars before [`AdamW::begin_prepared_step`].
    pub fn prepare(&self, gradients: KeyedGradients<B>) -> PreparedGradients<B> {
        let mut gradients = gradients;
        gradients.grads.retain(|key, _| !self.groups.is_frozen(key));
        if let Some(dtype) = self.master {
            for g in gradients.grads.values_mut() {
                *g = g.clone().cast(dtype);
            }
        }
        if let Some(s) = self.loss_scale {
            gradients.scale(1.0 / s.scale());
        }
        PreparedGradients { gradients }
    }

    /// [`AdamW::prepare`], a read of the gradient norm, and [`AdamW::begin_prepared_step`].
    pub fn begin_step(
        &mut self,
        lr: f64,
        gradients: KeyedGradients<B>,
    ) -> Result<AdamWUpdate<'_, B>, TrainError> {
        let prepared = self.prepare(gradients);
        let grad_norm = prepared.gradients.global_norm();
        self.begin_prepared_step(lr, prepared, grad_norm)
    }

    /// Prepares one step at base learning rate `lr` from gradients that went through
    /// [`AdamW::prepare`] and their global norm `grad_norm` (the square root of their
    /// [`PreparedGradients::squared_norm`], read back): checks the norm is finite, clips, and
    /// returns the visitor that applies the update to each parameter it visits (run the
    /// model's `visit_weights` with it, then [`AdamWUpdate::finish`]). With loss scaling, if the
    /// gradients overflowed, the step is skipped (the visitor changes nothing,
    /// [`StepInfo::skipped`]) and the scale halved.
    pub fn begin_prepared_step(
        &mut self,
        lr: f64,
        prepared: PreparedGradients<B>,
        grad_norm: f64,
    ) -> Result<AdamWUpdate<'_, B>, TrainError> {
        let PreparedGradients { gradients } = prepared;
        if !grad_norm.is_finite() {
            let scale = self
                .loss_scale
                .as_mut()
                .map(|s| (s.scale(), s.record_overflow()));
            return match scale {
                Some((_, true)) => Ok(AdamWUpdate {
                    optimizer: self,
                    lr,
                    gradients: KeyedGradients {
                        grads: BTreeMap::new(),
                    },
                    info: StepInfo {
                        grad_norm,
                        clip_factor: 0.0,
                        updated: 0,
                        skipped: true,
                    },
                }),
                Some((scale, false)) => Err(TrainError::NonFinite(format!(
                    "the gradient norm is {grad_norm} even at loss scale {scale}"
                ))),
                None => Err(TrainError::NonFinite(format!(
                    "the gradient norm is {grad_norm}"
                ))),
            };
        }
        if let Some(s) = self.loss_scale.as_mut() {
            s.record_finite();
        }
        let clip_factor = match self.config.max_grad_norm {
            Some(max) if grad_norm > max => max / (grad_norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        Ok(AdamWUpdate {
            optimizer: self,
            lr,
            gradients,
            info: StepInfo {
                grad_norm,
                clip_factor,
                updated: 0,
                skipped: false,
            },
        })
    }

    /// The state (moments under `exp_avg.{key}` / `exp_avg_sq.{key}`, master weights under
    /// `master.{key}`, the loss scale under `loss_scale` / `loss_scale_good_steps`, the step
    /// count under `step`) as named tensors.
    pub fn state(&self) -> TensorStore {
        let mut store = TensorStore::new();
        store.insert("step", StoredTensor::i64(vec![1], vec![self.step as i64]));
        for (key, (m, v)) in &self.moments {
            store.insert(
                format!("exp_avg.{key}"),
                StoredTensor::from_tensor(m.clone()),
            );
            store.insert(
                format!("exp_avg_sq.{key}"),
                StoredTensor::from_tensor(v.clone()),
            );
        }
        for (key, w) in &self.masters {
            store.insert(
                format!("master.{key}"),
                StoredTensor::from_tensor(w.clone()),
            );
        }
        if let Some(s) = self.loss_scale {
            store.insert(
                "loss_scale",
                StoredTensor::f32(vec![1], vec![s.scale() as f32]),
            );
            store.insert(
                "loss_scale_good_steps",
                StoredTensor::i64(vec![1], vec![s.good_steps() as i64]),
            );
        }
        store
    }

    /// Restores a state written by [`AdamW::state`].
    pub fn load_state(
        &mut self,
        store: &TensorStore,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let step = store
            .get("step")
            .and_then(|t| t.as_i64())
            .and_then(|v| v.first().copied())
            .ok_or_else(|| {
                TrainError::OptimizerState("the optimiser state has no `step`".into())
            })?;
        let master = self.master;
        let read = |name: &str| -> Result<Tensor<B, 1>, TrainError> {
            let t = store.get(name).ok_or_else(|| {
                TrainError::OptimizerState(format!("the optimiser state lacks `{name}`"))
            })?;
            let values = t
                .as_f32()
                .ok_or_else(|| TrainError::OptimizerState(format!("`{name}` is not f32")))?;
            let data = TensorData::new(values.to_vec(), [values.len()]);
            // Master weights and their moments are created in the master type directly, not
            // through the device's (half-precision) default.
            Ok(match master {
                Some(dtype) => Tensor::from_data(data, (device, DType::from(dtype))),
                None => Tensor::from_data(data, device),
            })
        };
        let mut moments = BTreeMap::new();
        for name in store.names() {
            let Some(key) = name.strip_prefix("exp_avg.") else {
                continue;
            };
            moments.insert(
                key.to_string(),
                (read(name)?, read(&format!("exp_avg_sq.{key}"))?),
            );
        }
        let mut masters = BTreeMap::new();
        if self.master.is_some() {
            for name in store.names() {
                if let Some(key) = name.strip_prefix("master.") {
                    masters.insert(key.to_string(), read(name)?);
                }
            }
        }
        if self.loss_scale.is_some() {
            let scale = store
                .get("loss_scale")
                .and_then(|t| t.as_f32())
                .and_then(|v| v.first().copied());
            let good = store
                .get("loss_scale_good_steps")
                .and_then(|t| t.as_i64())
                .and_then(|v| v.first().copied());
            if let (Some(scale), Some(good)) = (scale, good) {
                self.loss_scale = Some(DynamicLossScale::restored(scale as f64, good as u64));
            }
        }
        self.step = step as u64;
        self.moments = moments;
        self.masters = masters;
        Ok(())
    }
}

/// Applies one AdamW step to the parameters it visits.
pub struct AdamWUpdate<'a, B: Backend> {
    optimizer: &'a mut AdamW<B>,
    lr: f64,
    gradients: KeyedGradients<B>,
    info: StepInfo,
}

impl<B: Backend> AdamWUpdate<'_, B> {
    /// Ends the step; every gradient must have met its parameter (unless the step was skipped).
    pub fn finish(self) -> Result<StepInfo, TrainError> {
        if let Some(key) = self.gradients.grads.keys().next() {
            return Err(TrainError::OptimizerState(format!(
                "a gradient for `{key}` met no parameter"
            )));
        }
        Ok(self.info)
    }

    fn update(&mut self, key: &str, value: Tensor<B, 1>) -> Option<Tensor<B, 1>> {
        let grad = self
            .gradients
            .grads
            .remove(key)?
            .mul_scalar(self.info.clip_factor);
        let c = &self.optimizer.config;
        let (beta1, beta2) = (c.beta1, c.beta2);
        let param_dtype = value.dtype();
        let value = match self.optimizer.master {
            Some(dtype) => match self.optimizer.masters.remove(key) {
                // Where the parameter was changed outside the optimiser (the temperature clamp,
                // a reload), the parameter wins over its master.
                Some(master) => {
                    let changed = master.clone().cast(param_dtype).not_equal(value.clone());
                    master.mask_where(changed, value.cast(dtype))
                }
                None => value.cast(dtype),
            },
            None => value,
        };
        let (m, v) = match self.optimizer.moments.remove(key) {
            Some(state) => state,
            None => (grad.zeros_like(), grad.zeros_like()),
        };
        let m = m.mul_scalar(beta1) + grad.clone().mul_scalar(1.0 - beta1);
        let v = v.mul_scalar(beta2) + grad.powf_scalar(2.0).mul_scalar(1.0 - beta2);
        let t = self.optimizer.step as i32;
        let lr = self.lr * self.optimizer.groups.multiplier(key);
        let step_size = lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t));
        let denom = v.clone().sqrt().add_scalar(c.eps);
        let mut updated = value - (m.clone() / denom).mul_scalar(step_size);
        let weight_decay = c.weight_decay * self.optimizer.weight_decay_factor;
        if self.optimizer.groups.decays(key) && weight_decay > 0.0 {
            updated = updated.clone() - updated.mul_scalar(lr * weight_decay);
        }
        self.optimizer.moments.insert(key.to_string(), (m, v));
        self.info.updated += 1;
        if self.optimizer.master.is_some() {
            self.optimizer
                .masters
                .insert(key.to_string(), updated.clone());
            return Some(updated.cast(param_dtype));
        }
        Some(updated)
    }
}

impl<A: AutodiffBackend> WeightVisitor<A> for AdamWUpdate<'_, A::InnerBackend> {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<A, D>>,
        _layout: Layout,
    ) {
        let value = param.val().inner();
        let shape = value.shape();
        let flat = value.flatten::<1>(0, D - 1);
        if let Some(updated) = self.update(key, flat) {
            let tensor = Tensor::<A, D>::from_inner(updated.reshape(shape)).require_grad();
            *param = Param::initialized(param.id, tensor);
        }
    }
}
