//! fiber-heads
