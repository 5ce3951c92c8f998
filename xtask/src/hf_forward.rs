//! `cargo xtask hf-forward`: runs a HuggingFace-format checkpoint on inputs read from a
//! safetensors file and writes its outputs, named as HuggingFace returns them. This interface
//! is kept stable: outside parity checks rely on it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use clap::{Args, ValueEnum};
use fiber_core::backend::{run_on, BackendJob, BackendKind};
use fiber_core::{StoredTensor, TensorStore};
use fiber_roberta::{RobertaForMaskedLm, RobertaModel};
use fiber_swin::SwinModel;

/// Which model class the checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// HuggingFace `RobertaModel` (outputs `last_hidden_state`, `pooler_output`).
    Roberta,
    /// HuggingFace `RobertaForMaskedLM` (outputs `last_hidden_state`, `logits`).
    RobertaMlm,
    /// HuggingFace `SwinModel` (input `pixel_values` f32 `[batch, 3, H, W]`; outputs
    /// `last_hidden_state`, `pooler_output`, `hidden_states.{i}`, `reshaped_hidden_states.{i}`).
    Swin,
}

/// Arguments of `hf-forward`.
#[derive(Args, Debug, Clone)]
pub struct HfForwardArgs {
    /// Model class of the checkpoint.
    #[arg(long, value_enum)]
    pub arch: Arch,
    /// Folder with config.json and model.safetensors.
    #[arg(long)]
    pub model_dir: PathBuf,
    /// Safetensors file with the inputs: `input_ids` and `attention_mask` (int64 [batch, len])
    /// for RoBERTa, `pixel_values` (f32 [batch, 3, H, W]) for Swin.
    #[arg(long)]
    pub input: PathBuf,
    /// Safetensors file to write the f32 outputs to.
    #[arg(long)]
    pub output: PathBuf,
    /// Compute backend (any compiled one; ndarray is the CPU).
    #[arg(long, default_value = "ndarray")]
    pub backend: BackendKind,
}

/// Runs the checkpoint in eval mode (no dropout) and writes the outputs.
pub fn run(args: HfForwardArgs) -> Result<()> {
    let output = args.output.clone();
    let store = run_on(args.backend, HfForwardJob(args))??;
    store
        .write_safetensors(&output)
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

struct HfForwardJob(HfForwardArgs);

impl BackendJob for HfForwardJob {
    type Output = Result<TensorStore>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<TensorStore> {
        let args = self.0;
        let inputs = TensorStore::read_safetensors(&args.input)
            .with_context(|| format!("reading inputs {}", args.input.display()))?;
        let mut out = TensorStore::new();
        match args.arch {
            Arch::Roberta | Arch::RobertaMlm => {
                let ids = int_input::<B::InnerBackend>(&inputs, "input_ids", &device)?;
                let mask = int_input::<B::InnerBackend>(&inputs, "attention_mask", &device)?;
                anyhow::ensure!(
                    ids.dims() == mask.dims(),
                    "input_ids {:?} and attention_mask {:?} differ in shape",
                    ids.dims(),
                    mask.dims()
                );
                let load_context = || format!("loading {}", args.model_dir.display());
                if args.arch == Arch::Roberta {
                    let (model, _) = RobertaModel::<B>::from_pretrained(&args.model_dir, &device)
                        .with_context(load_context)?;
                    let y = model.valid().forward(ids, mask, false);
                    out.insert("last_hidden_state", to_stored(y.last_hidden_state));
                    if let Some(pooled) = y.pooler_output {
                        out.insert("pooler_output", to_stored(pooled));
                    }
                } else {
                    let (model, _) =
                        RobertaForMaskedLm::<B>::from_pretrained(&args.model_dir, &device)
                            .with_context(load_context)?;
                    let (hidden, logits) = model.valid().forward(ids, mask);
                    out.insert("last_hidden_state", to_stored(hidden));
                    out.insert("logits", to_stored(logits));
                }
            }
            Arch::Swin => {
                let pixels = float_input::<B::InnerBackend, 4>(&inputs, "pixel_values", &device)?;
                let (model, _) = SwinModel::<B>::from_pretrained(&args.model_dir, &device)
                    .with_context(|| format!("loading {}", args.model_dir.display()))?;
                let y = model.valid().forward(pixels);
                out.insert("last_hidden_state", to_stored(y.last_hidden_state));
                out.insert("pooler_output", to_stored(y.pooler_output));
                for (i, map) in y.hidden_states.iter().enumerate() {
                    out.insert(format!("hidden_states.{i}"), to_stored(map.tokens.clone()));
                    out.insert(format!("reshaped_hidden_states.{i}"), to_stored(map.nchw()));
                }
            }
        }
        Ok(out)
    }
}

/// Reads a float input of rank `D` by name.
pub fn float_input<B: Backend, const D: usize>(
    store: &TensorStore,
    name: &str,
    device: &B::Device,
) -> Result<Tensor<B, D>> {
    let t = store
        .get(name)
        .with_context(|| format!("input file has no `{name}` tensor"))?;
    let values = t
        .as_f32()
        .with_context(|| format!("`{name}` must be a float tensor"))?;
    anyhow::ensure!(
        t.shape.len() == D,
        "`{name}` must have {D} dimensions, got {:?}",
        t.shape
    );
    Ok(Tensor::from_data(
        TensorData::new(values.to_vec(), t.shape.clone()),
        device,
    ))
}

/// Reads an integer input `[batch, len]` by name.
pub fn int_input<B: Backend>(
    store: &TensorStore,
    name: &str,
    device: &B::Device,
) -> Result<Tensor<B, 2, Int>> {
    let t = store
        .get(name)
        .with_context(|| format!("input file has no `{name}` tensor"))?;
    let values = t
        .as_i64()
        .with_context(|| format!("`{name}` must be an integer tensor"))?;
    anyhow::ensure!(
        t.shape.len() == 2,
        "`{name}` must be [batch, len], got {:?}",
        t.shape
    );
    Ok(Tensor::from_data(
        TensorData::new(values.to_vec(), t.shape.clone()),
        device,
    ))
}

/// A float tensor as a stored f32 tensor.
pub fn to_stored<B: Backend, const D: usize>(t: Tensor<B, D>) -> StoredTensor {
    StoredTensor::from_tensor(t)
}
