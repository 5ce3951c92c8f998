//! Training and evaluation of FIBER (docs/model.md §3, §4): the run-time choice of compute
//! backend, the optimiser (AdamW with FIBER's parameter groups, clipping, accumulation,
//! restorable state) and schedule, the training step and the stage loop with atomic checkpoints
//! and exact resume, the tasks (pre-training, VQA, NLVR2, retrieval, captioning), evaluation
//! metrics, the main job, and evaluation and inference on trained runs.
//!
//! Layers, top to bottom: [`job`] composes the tasks (`tasks`, internal); each task trains
//! through the workspace and the stage loop (`workspace`, `stage`, internal; the steps
//! [`step`] assembles with [`optim`]) and evaluates with [`eval`]; [`run`], [`saved`] and
//! [`infer`] open a trained run for evaluation and inference; [`benchmark`] times the training
//! step as [`step`] runs it. The public modules are the ones a program drives the trainer
//! through; docs/architecture.md lists their items.
//!
//! A trained run is opened with [`run::RunFolder`]; [`export::export_model`] writes its models
//! as model folders for `fiber_heads::Fiber`.
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use fiber_train::run::RunFolder;
//!
//! # fn main() -> Result<(), fiber_train::TrainError> {
//! let device = Default::default();
//! let run = RunFolder::open(std::path::Path::new("runs/shapes"))?;
//! let (vqa, answers) = run.vqa_model::<NdArray>(&device)?;
//! println!("{} answers", answers.len());
//! # Ok(()) }
//! ```

pub mod benchmark;
pub(crate) mod checkpoint;
pub mod config;
pub mod detect;
pub mod error;
pub mod eval;
pub mod export;
pub mod infer;
pub mod init;
pub(crate) mod input;
pub mod job;
pub(crate) mod log;
pub(crate) mod loss_scale;
pub mod metrics;
pub mod model_io;
pub mod nodes;
pub mod optim;
pub mod replica;
pub mod report;
pub mod run;
pub mod saved;
pub(crate) mod stage;
pub mod stages;
pub mod step;
pub(crate) mod tasks;
pub(crate) mod workspace;

pub use error::TrainError;
/// The run-time choice of compute backend (it lives in fiber-core, so that commands needing
/// only a backend do not depend on the trainer).
pub use fiber_core::backend::{
    check_backend, run_on, run_on_with, BackendJob, BackendKind, Checkpointing, Precision,
    UnknownBackend,
};
