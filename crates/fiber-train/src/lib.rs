//! Training and evaluation of FIBER: the coarse-grained pre-training loop (ITC + ITM + MLM),
//! fine-tuning and evaluation for retrieval, VQA and captioning, checkpoints with exact resume
//! (spec C.5, D): the run-time choice of compute backend, the optimiser (AdamW with the spec's
//! parameter groups, clipping, accumulation, restorable state) and schedule, stages with atomic
//! checkpoints and resume, the pre-training / VQA / captioning tasks, evaluation metrics, the
//! main job and inference on trained runs.

pub mod backend;
pub mod benchmark;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod finetune_retrieval;
pub mod init;
pub mod job;
pub mod log;
pub mod loss_scale;
pub mod metrics;
pub mod nlvr2;
pub mod optim;
pub mod run;
pub mod stage;
pub mod tasks;

pub use backend::{
    check_backend, run_on, run_on_with, BackendJob, BackendKind, Checkpointing, Precision,
    UnknownBackend,
};
pub use error::TrainError;
