//! FIBER's fine-grained model (docs/model.md §5): the fused backbone's stage outputs, an FPN,
//! a DyHead tower of modulated deformable convolutions, and per-level box, centerness and
//! region–token grounding outputs over one anchor per location; [`Detector`] runs a detector
//! folder on image files.

pub mod anchors;
pub mod atss;
pub mod box_coder;
pub mod config;
pub mod deform;
pub mod drop_block;
pub mod dyhead;
pub mod dyrelu;
pub mod fpn;
pub mod head;
pub mod inference;
pub mod loss;
pub mod model;
pub mod phrases;
pub mod postprocess;
pub mod pretrained;
pub mod weights;

pub use config::DetectorConfig;
pub use inference::{DetectorInferenceSettings, DetectorPipeline, EncodedPrompt, ImageDetection};
pub use model::{DetectorOutput, GroundingDetector};
pub use pretrained::{Detector, GroundedPhrase};
