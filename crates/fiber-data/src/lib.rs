//! fiber-data
