//! The FIBER data pipeline. So far: image decoding and the preprocessing of docs/model.md §1.1 and §5.4 (square
//! bicubic resize with ImageNet normalisation for the coarse stage; aspect-preserving resize,
//! BGR 0–255 normalisation and padding to a multiple of 32 for detection), readers for caption
//! datasets (Karpathy, COCO captions), VQAv2, NLVR2, MDETR grounding and COCO detection (turned
//! into GLIP-style prompts), problem reporting and parallel image checks.
//!
//! Main entry points: [`image`] (decoding and preprocessing; `load_square_batch` turns image
//! files into the coarse model's input), [`layout`] (where each format keeps its files),
//! [`loader`] (seeded, prefetching batches), [`shapes`] (the built-in world).
//!
//! ```
//! use burn::backend::NdArray;
//! use fiber_data::image::{preprocess_square, to_tensor, PixelImage};
//!
//! # fn main() -> Result<(), fiber_data::DataError> {
//! let device = Default::default();
//! // A decoded image (`fiber_data::image::load_rgb` reads one from a file).
//! let image = PixelImage::filled(48, 64, [1.0, 0.0, 0.0]);
//! let input = preprocess_square(&image, 32)?; // bicubic resize, ImageNet normalisation
//! let pixels = to_tensor::<NdArray>(&[input], &device)?;
//! assert_eq!(pixels.dims(), [1, 3, 32, 32]);
//! # Ok(()) }
//! ```

pub mod annotate;
pub mod captions;
pub mod check;
pub mod detection_batch;
pub mod error;
pub mod grounding;
pub mod image;
pub mod jpeg;
pub mod layout;
pub mod loader;
pub mod nlvr2;
pub mod paths;
pub mod problem;
pub mod randaugment;
pub mod shapes;
pub mod transforms;
pub mod vqa;

pub use captions::{
    read_coco_captions, read_karpathy, CaptionDataset, CaptionRecord, ImageRecord, Split,
};
pub use error::DataError;
pub use problem::{Problem, ProblemKind, Problems};
