//! fiber-swin
