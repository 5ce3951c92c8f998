//! The FIBER data pipeline. So far: image decoding and the preprocessing of spec A.1 (square
//! bicubic resize with ImageNet normalisation for the coarse stage; aspect-preserving resize,
//! BGR 0–255 normalisation and padding to a multiple of 32 for detection). Dataset readers,
//! augmentation and the built-in shapes world follow.

pub mod error;
pub mod image;

pub use error::DataError;
