//! fiber-fusion
