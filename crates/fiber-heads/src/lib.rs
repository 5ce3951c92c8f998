//! FIBER's objectives and task heads (docs/model.md §3, §4), and the models built on them.
//!
//! For inference, [`Fiber`] is the entry point: it loads a model folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`; see [`pretrained`]) and encodes images and texts
//! for retrieval, scores image–text pairs with ITM, answers questions (VQA models) and writes
//! captions (captioning models). For the fine-grained tasks, [`grounding::Detector`] loads a
//! detector folder and detects named classes or grounds a caption's phrases on image files;
//! its network is [`grounding::GroundingDetector`].
//!
//! ```no_run
//! use burn::backend::NdArray; // or burn::backend::Wgpu, burn::backend::Cuda
//! use burn::tensor::Tensor;
//! use fiber_heads::{retrieval::itc_scores, Fiber};
//!
//! # fn main() -> Result<(), fiber_heads::HeadsError> {
//! let device = Default::default();
//! let fiber = Fiber::<NdArray>::load("models/shapes", &device)?;
//! let size = fiber.image_size();
//! // Images as the model was trained on them: `fiber_data::image::preprocess_square`.
//! let pixels = Tensor::<NdArray, 4>::zeros([2, 3, size, size], &device);
//! let images = fiber.image_features(pixels)?; // [2, H], L2-normalised
//! let texts = fiber.text_features(&["a red circle.", "a blue square."])?; // [2, H]
//! let similarities = itc_scores(texts, images); // [texts, images]
//! # Ok(()) }
//! ```
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use fiber_heads::grounding::{phrases::parse_classes, Detector};
//!
//! # fn main() -> Result<(), fiber_heads::HeadsError> {
//! let detector = Detector::<NdArray>::load("models/shapes-detector", &Default::default())?;
//! let classes = parse_classes("red circle. blue square");
//! for d in &detector.detect(&["a.jpg"], &classes)?[0] {
//!     println!("{} {:.2} {:?}", classes[d.class], d.score, d.bbox); // bbox: x0, y0, x1, y1
//! }
//! for phrase in detector.ground("a.jpg", "a red circle next to a blue square", &[] as &[&str])? {
//!     println!("{}: {:?}", phrase.phrase, phrase.boxes.first().map(|d| d.bbox));
//! }
//! # Ok(()) }
//! ```
//!
//! For training, the pieces: the shared `cross_modal_*` projections and poolers
//! ([`ModalityProjections`]), ITC with a learnable temperature and a feature queue, ITM with
//! hard negatives mined from the ITC similarities, MLM (masking and the untied prediction
//! head), the coarse model with its pre-training step ([`FiberModel`]), the VQA and NLVR2
//! classifiers and their models, retrieval scores and ITM re-ranking, captioning
//! (teacher-forced loss, greedy and beam decoding) and the grounding detector with its
//! targets, losses and post-processing.

pub mod caption;
pub mod classifier;
pub mod error;
pub mod grounding;
pub mod itc;
pub mod itm;
pub mod loss;
pub mod mlm;
pub mod model;
pub mod pretrained;
pub mod projections;
pub mod retrieval;
pub mod task_models;
pub mod weights;

pub use caption::{Caption, DecodeConfig};
pub use classifier::ClassifierHead;
pub use error::HeadsError;
pub use grounding::Detector;
pub use itc::{itc_loss, FeatureQueue, ItcOutput, Temperature};
pub use itm::{draw_hard_negatives, ItmHead};
pub use mlm::{MaskedBatch, MlmHead, MlmMasker, IGNORE_INDEX};
pub use model::{FetchedInputs, FiberModel, PretrainBatch, PretrainLosses};
pub use pretrained::{Fiber, InferenceSettings};
pub use projections::{l2_normalize, ModalityProjections, Pooler};
pub use retrieval::Query;
pub use task_models::{Nlvr2Model, VqaModel};

/// The Rust programs of the README ("Using the crates"), compiled as documentation tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeProgram;
