//! A Swin stage: its blocks and the patch merging after them (`layers.{s}.*`).

use std::ops::Range;

use burn::prelude::*;
use fiber_core::weights::WeightVisitor;

use crate::block::SwinBlock;
use crate::config::SwinConfig;
use crate::merging::PatchMerging;

/// Stage `s`; keys `layers.{s}.blocks.{b}.*` and `layers.{s}.downsample.*`.
#[derive(Module, Debug)]
pub struct SwinStage<B: Backend> {
    /// The blocks, in order.
    pub blocks: Vec<SwinBlock<B>>,
    /// Patch merging after the blocks (all stages but the last).
    pub downsample: Option<PatchMerging<B>>,
}

impl<B: Backend> SwinStage<B> {
    /// Fresh stage `s`; `drop_paths` holds the stochastic-depth rate of each of its blocks.
    pub fn new(config: &SwinConfig, s: usize, drop_paths: &[f64], device: &B::Device) -> Self {
        let last = s + 1 == config.num_stages();
        Self {
            blocks: drop_paths
                .iter()
                .enumerate()
                .map(|(i, &dp)| SwinBlock::new(config, s, i, dp, device))
                .collect(),
            downsample: (!last).then(|| PatchMerging::new(config.stage_dim(s), device)),
        }
    }

    /// Runs blocks `range` on tokens `[batch, h·w, C]` on `grid` → same shape.
    pub fn forward_blocks(
        &self,
        mut x: Tensor<B, 3>,
        grid: (usize, usize),
        range: Range<usize>,
    ) -> Tensor<B, 3> {
        for block in &self.blocks[range] {
            x = block.forward(x, grid);
        }
        x
    }

    /// Applies the patch merging, if the stage has one: → (tokens, grid).
    pub fn merge(&self, x: Tensor<B, 3>, grid: (usize, usize)) -> (Tensor<B, 3>, (usize, usize)) {
        match &self.downsample {
            Some(merging) => merging.forward(x, grid),
            None => (x, grid),
        }
    }

    /// Walks the parameters under `{key}.blocks.{b}.*`, `{key}.downsample.*`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        for (b, block) in self.blocks.iter_mut().enumerate() {
            block.visit_weights(v, &format!("{key}.blocks.{b}"));
        }
        if let Some(merging) = &mut self.downsample {
            merging.visit_weights(v, &format!("{key}.downsample"));
        }
    }
}
