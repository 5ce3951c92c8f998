//! Training and evaluation of FIBER: the coarse-grained pre-training loop (ITC + ITM + MLM),
//! fine-tuning and evaluation for retrieval, VQA and captioning, checkpoints with exact resume
//! (spec C.5, D). So far it holds the run-time choice of compute backend shared by every
//! command; the loops follow as the model crates below it are completed.

pub mod backend;
pub mod error;
pub mod optim;

pub use backend::{run_on, BackendJob, BackendKind, UnknownBackend};
pub use error::TrainError;
