//! fiber-train
