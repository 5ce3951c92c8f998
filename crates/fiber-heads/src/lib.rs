//! FIBER's objectives and task heads (docs/model.md §3, §4): the shared `cross_modal_*` projections and
//! poolers, ITC with a learnable temperature and a feature queue, ITM with hard negatives
//! mined from the ITC similarities, MLM (masking and the untied prediction head), the VQA and
//! NLVR2 classifiers and their models, retrieval scores and ITM re-ranking, and captioning (teacher-forced loss, greedy and beam
//! decoding).

pub mod caption;
pub mod classifier;
pub mod grounding;
pub mod itc;
pub mod itm;
pub mod loss;
pub mod mlm;
pub mod model;
pub mod projections;
pub mod retrieval;
pub mod task_models;
pub mod weights;

pub use caption::{Caption, DecodeConfig};
pub use classifier::ClassifierHead;
pub use itc::{itc_loss, FeatureQueue, ItcOutput, Temperature};
pub use itm::{draw_hard_negatives, ItmHead};
pub use mlm::{MaskedBatch, MlmHead, MlmMasker, IGNORE_INDEX};
pub use model::{FetchedInputs, FiberModel, PretrainBatch, PretrainLosses};
pub use projections::{l2_normalize, ModalityProjections, Pooler};
pub use retrieval::Query;
pub use task_models::{Nlvr2Model, VqaModel};
