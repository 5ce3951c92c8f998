//! Every hyper-parameter of a run, in one TOML file (`cargo xtask train --config FILE.toml`).
//! The defaults are the tiny preset that trains on the built-in shapes world on a CPU in a few
//! minutes; `RunConfig::fiber_base()` holds FIBER-Base's values (docs/model.md §3.5, §4).

use std::path::{Path, PathBuf};

use burn::config::Config;
use fiber_data::detection_batch::DetectionBatchConfig;
use fiber_data::grounding::PromptConfig;
use fiber_data::shapes::ShapesWorldConfig;
use fiber_fusion::FiberConfig;
use fiber_heads::grounding::atss::DetectionLossConfig;
use fiber_heads::grounding::postprocess::PostProcessConfig;
use fiber_heads::grounding::{DetectorConfig, DetectorInferenceSettings};
use fiber_roberta::RobertaConfig;
use fiber_swin::SwinConfig;

use crate::error::TrainError;
use crate::optim::{AdamWConfig, LrSchedule};
use crate::replica::ReplicaConfig;

/// The model: sizes of both backbones and of the fusion.
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    /// The fused backbone (the text vocabulary size is replaced by the tokenizer's).
    pub fiber: FiberConfig,
    /// Text length in tokens (`<s>` and `</s>` included).
    #[config(default = 32)]
    pub max_text_len: usize,
    /// Vocabulary size of a tokenizer trained on the data's corpus.
    #[config(default = 400)]
    pub tokenizer_vocab_size: usize,
}

impl ModelConfig {
    /// The tiny preset: Swin with 3 stages (32/64/128 wide, window 4) at 64 px, a 4-layer
    /// 64-wide RoBERTa, the last 2 blocks/layers fused. New text and fusion modules are
    /// initialised with standard deviation 0.1 instead of 0.02: at width 64 the smaller value
    /// leaves the `<s>` token almost independent of the text at initialisation, and contrastive
    /// training from scratch then stalls. The fusion gates start at 1 with zero output
    /// projections instead of at 0: with gates at 0 they barely move from scratch and ITM never
    /// learns (docs/model.md §2.3).
    pub fn tiny() -> Self {
        let swin = SwinConfig::new(64, 32, vec![2, 2, 2], vec![2, 4, 8], 4)
            .with_mlp_ratio(2.0)
            .with_drop_path_rate(0.0);
        let roberta = RobertaConfig::new(400, 64, 4, 4, 128)
            .with_max_position_embeddings(40)
            .with_hidden_dropout_prob(0.0)
            .with_attention_probs_dropout_prob(0.0)
            .with_initializer_range(0.1);
        Self::new(
            FiberConfig::new(swin, roberta)
                .with_num_fuse_block(2)
                .with_initializer_range(0.1)
                .with_gate_init(1.0)
                .with_zero_fusion_outputs(true),
        )
    }
}

/// One training stage: steps, batches and optimisation.
#[derive(Config, Debug, PartialEq)]
pub struct StageConfig {
    /// Optimiser steps (0 skips the stage).
    pub steps: u64,
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step (effective batch = batch_size × accumulation).
    #[config(default = 1)]
    pub accumulation: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Fraction of the steps spent warming up.
    #[config(default = 0.1)]
    pub warmup_ratio: f64,
    /// Learning-rate multiplier of the task heads (5 pre-training, 50 fine-tuning).
    #[config(default = 5.0)]
    pub head_lr_multiplier: f64,
    /// Learning-rate multiplier of the fusion modules, gates included (5 in FIBER).
    #[config(default = 5.0)]
    pub fusion_lr_multiplier: f64,
    /// Learning-rate multiplier of the cross-modal projections and poolers (5 in FIBER).
    #[config(default = 5.0)]
    pub cross_modal_lr_multiplier: f64,
    /// Learning-rate multiplier of the ITC temperature (1 in FIBER).
    #[config(default = 1.0)]
    pub temperature_lr_multiplier: f64,
    /// AdamW.
    #[config(default = "AdamWConfig::new()")]
    pub optimizer: AdamWConfig,
    /// Save a checkpoint every this many steps (and at the end).
    #[config(default = 100)]
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    #[config(default = 2)]
    pub keep_checkpoints: usize,
    /// How the rate and the weight decay change over the steps (default: linear decay).
    #[config(default = "LrSchedule::new()")]
    pub schedule: LrSchedule,
    /// Keep an exponential moving average of the weights with this decay, evaluate it and save
    /// it with each checkpoint (0.999 in FIBER's fine-grained stage; none elsewhere).
    #[config(default = "None")]
    pub ema_decay: Option<f64>,
    /// Detector stages: learning-rate multiplier of everything under `language_backbone`
    /// (0.1 in FIBER's fine-grained pre-training: 1e-5 against the base 1e-4).
    #[config(default = 1.0)]
    pub text_lr_multiplier: f64,
    /// Detector stages: learning-rate multiplier of every parameter named `…bias…`, which is
    /// also not weight-decayed (2 in FIBER's fine-grained stages).
    #[config(default = 1.0)]
    pub bias_lr_multiplier: f64,
    /// Checkpoint-key prefixes of parameters that are not trained (the patch embedding and the
    /// first Swin stage in FIBER's fine-grained pre-training).
    #[config(default = "Vec::new()")]
    pub frozen: Vec<String>,
    /// Detector stages: flip training images horizontally with the detector's
    /// `flip_probability` (off in FIBER's referring-expression fine-tuning).
    #[config(default = true)]
    pub flip: bool,
}

/// The detector of the fine-grained stage on the run's backbone (docs/model.md §5) and its
/// data, losses and post-processing. The defaults are the tiny preset's; FIBER-Base's are
/// [`DetectorSettings::fiber_base`].
#[derive(Config, Debug, PartialEq)]
pub struct DetectorSettings {
    /// Width of the FPN levels and the DyHead tower (256 in FIBER).
    #[config(default = 32)]
    pub channels: usize,
    /// DyConv blocks (6 in FIBER-B; none in the tiny preset, where the tower's output
    /// layers read the FPN levels directly: on the built-in data two blocks cost 2.4× the
    /// stage's time and learned less in the same steps, docs/training.md).
    #[config(default = 0)]
    pub num_dyhead_blocks: usize,
    /// GroupNorm groups (16 in FIBER).
    #[config(default = 4)]
    pub group_norm_groups: usize,
    /// Anchor side as a multiple of the level stride (8 in FIBER; 4 in the tiny preset, whose
    /// 64-px images hold 16–24 px objects).
    #[config(default = 4)]
    pub anchor_stride_multiple: usize,
    /// DropBlock on P3 and P4 in training (GLIP's default, on in FIBER; off in the tiny
    /// preset, whose P3 map is 8 × 8 with objects two cells wide, docs/training.md).
    #[config(default = false)]
    pub drop_block: bool,
    /// Training shorter sides, drawn uniformly (480–800 in FIBER).
    #[config(default = "vec![64]")]
    pub shorter_sides: Vec<usize>,
    /// Longest longer side (1333).
    #[config(default = 1333)]
    pub max_longer: usize,
    /// Horizontal flip probability in training (captions naming a side are never flipped).
    #[config(default = 0.5)]
    pub flip_probability: f64,
    /// Shorter side at evaluation (800 in FIBER).
    #[config(default = 64)]
    pub eval_shorter_side: usize,
    /// Token positions of a prompt, `<s>` and `</s>` included (256 in FIBER; the tiny text
    /// model has 38 positions).
    #[config(default = 32)]
    pub max_text_len: usize,
    /// Most negative class names in a detection training prompt (85 in FIBER).
    #[config(default = 8)]
    pub random_sample_negative: usize,
    /// Class names per evaluation prompt: more classes are evaluated in several prompts, as
    /// the original evaluates LVIS in chunks.
    #[config(default = 8)]
    pub classes_per_prompt: usize,
    /// Assignment and loss settings.
    #[config(default = "DetectionLossConfig::new()")]
    pub loss: DetectionLossConfig,
    /// Post-processing of detection evaluation and `detect`.
    #[config(default = "PostProcessConfig::new()")]
    pub postprocess: PostProcessConfig,
    /// Post-processing of phrase grounding: no score threshold (as the original's RefExp
    /// setting), so that every phrase gets ranked boxes, and 100 boxes per image
    /// (docs/deviations.md: the original's Flickr30K evaluation keeps 100 per phrase).
    #[config(default = "PostProcessConfig::new().with_score_threshold(0.0)")]
    pub grounding_postprocess: PostProcessConfig,
    /// Post-processing of referring expressions (the original's RefExp settings: no score
    /// threshold, 3000 candidates per level).
    #[config(
        default = "PostProcessConfig::new().with_score_threshold(0.0).with_pre_nms_top_n(3000)"
    )]
    pub refexp_postprocess: PostProcessConfig,
    /// Images per forward pass in evaluation.
    #[config(default = 16)]
    pub eval_batch_size: usize,
}

impl DetectorSettings {
    /// FIBER-Base's detector and data settings (docs/model.md §5).
    pub fn fiber_base() -> Self {
        Self::new()
            .with_channels(256)
            .with_num_dyhead_blocks(6)
            .with_drop_block(true)
            .with_group_norm_groups(16)
            .with_anchor_stride_multiple(8)
            .with_shorter_sides(vec![480, 560, 640, 720, 800])
            .with_eval_shorter_side(800)
            .with_max_text_len(256)
            .with_random_sample_negative(85)
            .with_classes_per_prompt(80)
            .with_eval_batch_size(1)
    }

    /// The detector on backbone `fiber` (the detection variant of the coarse backbone).
    pub fn detector_config(&self, fiber: &FiberConfig) -> DetectorConfig {
        let mut config = DetectorConfig::for_coarse_backbone(fiber);
        config.channels = self.channels;
        config.num_dyhead_blocks = self.num_dyhead_blocks;
        config.group_norm_groups = self.group_norm_groups;
        config.anchor_stride_multiple = self.anchor_stride_multiple;
        config.drop_block = self.drop_block;
        config
    }

    /// Takes the detector's sizes (channels, DyConv blocks, groups, anchors, DropBlock) from
    /// `trained`, the settings of the run whose detector is fine-tuned; the data, loss and
    /// post-processing settings stay.
    pub fn adopt_architecture(&mut self, trained: &DetectorSettings) {
        self.channels = trained.channels;
        self.num_dyhead_blocks = trained.num_dyhead_blocks;
        self.group_norm_groups = trained.group_norm_groups;
        self.anchor_stride_multiple = trained.anchor_stride_multiple;
        self.drop_block = trained.drop_block;
    }

    /// The training batch.
    pub fn train_batch(&self) -> DetectionBatchConfig {
        DetectionBatchConfig {
            shorter_sides: self.shorter_sides.clone(),
            max_longer: self.max_longer,
            flip_probability: self.flip_probability,
            size_divisor: 32,
            max_text_len: self.max_text_len,
        }
    }

    /// How the detector is run on image files: evaluation, `detect`, `ground` and an exported
    /// detector folder's `inference.json`.
    pub fn inference(&self) -> DetectorInferenceSettings {
        DetectorInferenceSettings {
            max_text_len: self.max_text_len,
            classes_per_prompt: self.classes_per_prompt,
            shorter_side: self.eval_shorter_side,
            max_longer: self.max_longer,
            batch_size: self.eval_batch_size,
            postprocess: self.postprocess.clone(),
            grounding_postprocess: self.grounding_postprocess.clone(),
            refexp_postprocess: self.refexp_postprocess.clone(),
        }
    }

    /// How detection annotations become training prompts.
    pub fn prompts(&self) -> PromptConfig {
        PromptConfig {
            random_sample_negative: self.random_sample_negative,
            max_tokens: self.max_text_len,
            ..PromptConfig::default()
        }
    }
}

/// FIBER's fine-grained pre-training optimisation (docs/model.md §5.5) at `steps`, batch
/// `batch` × `accumulation`, base rate `lr`: warm-up, ×0.1 at 67 % and 89 % with the
/// weight-decay schedule, the text side at a tenth of the rate, biases ×2 without decay,
/// clipping at 1.0, an EMA of the weights, the patch embedding and the first Swin stage frozen.
pub fn fine_stage(
    steps: u64,
    batch: usize,
    accumulation: usize,
    lr: f64,
    warmup_ratio: f64,
    ema_decay: f64,
) -> StageConfig {
    detector_stage(steps, batch, accumulation, lr, warmup_ratio, ema_decay)
        .with_schedule(
            LrSchedule::new()
                .with_milestones(vec![0.67, 0.89])
                .with_weight_decay_ratio(Some(0.667)),
        )
        .with_text_lr_multiplier(0.1)
        .with_frozen(vec![
            "fusion_backbone.backbone.body.patch_embed.".into(),
            "fusion_backbone.backbone.body.layers.0.".into(),
        ])
        .with_optimizer(
            AdamWConfig::new()
                .with_beta2(0.999)
                .with_max_grad_norm(Some(1.0)),
        )
}

/// FIBER's downstream fine-tuning of a grounding detector (docs/model.md §5.5; GLIP's COCO and
/// RefCOCO configurations) at `steps`, batch `batch` × `accumulation`, rate `lr` for every
/// parameter (text side included): warm-up, ×0.1 at 67 % and 89 %, biases ×2 without decay,
/// weight decay 1e-4, no gradient clipping, an EMA of the weights, nothing frozen.
pub fn downstream_detector_stage(
    steps: u64,
    batch: usize,
    accumulation: usize,
    lr: f64,
    warmup_ratio: f64,
    ema_decay: f64,
) -> StageConfig {
    detector_stage(steps, batch, accumulation, lr, warmup_ratio, ema_decay)
        .with_text_lr_multiplier(1.0)
        .with_optimizer(
            AdamWConfig::new()
                .with_beta2(0.999)
                .with_weight_decay(1e-4)
                .with_max_grad_norm(None),
        )
}

/// What every detector stage shares: `steps` of batch `batch` × `accumulation` at rate `lr`,
/// warm-up over `warmup_ratio` of them, ×0.1 at 67 % and 89 %, biases ×2 without decay, an EMA
/// of the weights at `ema_decay`.
fn detector_stage(
    steps: u64,
    batch: usize,
    accumulation: usize,
    lr: f64,
    warmup_ratio: f64,
    ema_decay: f64,
) -> StageConfig {
    StageConfig::new(steps, batch, lr)
        .with_accumulation(accumulation)
        .with_warmup_ratio(warmup_ratio)
        .with_schedule(LrSchedule::new().with_milestones(vec![0.67, 0.89]))
        .with_ema_decay(Some(ema_decay))
        .with_bias_lr_multiplier(2.0)
}

/// Evaluation settings.
#[derive(Config, Debug, PartialEq)]
pub struct EvalConfig {
    /// Images (and as many captions, one per image) ranked in retrieval.
    #[config(default = 100)]
    pub retrieval_candidates: usize,
    /// ITC candidates re-ranked by ITM.
    #[config(default = 10)]
    pub itm_rerank_k: usize,
    /// Images captioned.
    #[config(default = 100)]
    pub caption_images: usize,
    /// Beam size of caption decoding.
    #[config(default = 3)]
    pub beam_size: usize,
    /// Longest generated caption in tokens.
    #[config(default = 30)]
    pub max_caption_len: usize,
    /// Questions per forward pass in VQA evaluation.
    #[config(default = 64)]
    pub vqa_batch_size: usize,
    /// Image pairs per forward pass in NLVR2 evaluation.
    #[config(default = 32)]
    pub nlvr2_batch_size: usize,
}

/// A whole run: data, model, the stages and evaluation.
#[derive(Config, Debug, PartialEq)]
pub struct RunConfig {
    /// The preset whose values the other keys override: `tiny` or `base` (a configuration file
    /// that names one is read over it).
    #[config(default = "String::from(\"tiny\")")]
    pub preset: String,
    /// Name of the run (its folder is `runs/<name>`).
    #[config(default = "String::from(\"shapes\")")]
    pub name: String,
    /// Seed of everything.
    #[config(default = 0)]
    pub seed: u64,
    /// Data folder (the built-in world is generated there when it does not exist).
    #[config(default = "PathBuf::from(\"data/shapes\")")]
    pub data_dir: PathBuf,
    /// Annotation files given one by one (`--annotations`) instead of the data folder's own;
    /// image paths resolve under `images_dir`, else `data_dir`, else beside each file
    /// (`fiber_data::layout`). One stage's format at a time.
    #[config(default = "Vec::new()")]
    pub annotations: Vec<PathBuf>,
    /// The folder image paths are relative to (`--images`), when not `data_dir`.
    #[config(default = "None")]
    pub images_dir: Option<PathBuf>,
    /// The built-in world, when `data_dir` holds (or will hold) it.
    #[config(default = "ShapesWorldConfig::new()")]
    pub world: ShapesWorldConfig,
    /// The model.
    #[config(default = "ModelConfig::tiny()")]
    pub model: ModelConfig,
    /// Coarse-grained pre-training (ITC + ITM + MLM). The tiny preset trains from scratch at a
    /// rate 100× FIBER's, so the temperature is held (multiplier 0) and the cross-modal
    /// projections and the fusion modules take the base rate (×1; with FIBER's ×5 for the
    /// fusion, VQA fine-tuned from the pre-training lost 0.05–0.1 accuracy, docs/training.md).
    #[config(
        default = "StageConfig::new(660, 16, 1e-3).with_temperature_lr_multiplier(0.0).with_cross_modal_lr_multiplier(1.0).with_fusion_lr_multiplier(1.0).with_optimizer(AdamWConfig::new().with_max_grad_norm(Some(1.0)))"
    )]
    pub pretrain: StageConfig,
    /// Weights of the pre-training losses `[itc, itm, mlm]` (1, 1, 1 in FIBER).
    #[config(default = "[1.0, 1.0, 1.0]")]
    pub loss_weights: [f64; 3],
    /// Share of the uniform distribution in the ITM negative draw `[at the first step, at the
    /// last step]`, linear in between (`[0, 0]` in FIBER: every negative from the ITC softmax;
    /// easier negatives first for a model trained from scratch, docs/training.md).
    #[config(default = "[1.0, 0.0]")]
    pub uniform_negatives: [f64; 2],
    /// Size of the ITC feature queue (4096 in FIBER; 0 in the tiny preset, whose features
    /// change too fast from step to step for queued features to be useful negatives).
    #[config(default = 0)]
    pub queue_size: usize,
    /// VQA fine-tuning (fusion at the base rate in the tiny preset: from a pre-training whose
    /// fusion is already open, ×5 cost 0.04 accuracy).
    #[config(
        default = "StageConfig::new(740, 8, 3e-4).with_head_lr_multiplier(10.0).with_cross_modal_lr_multiplier(1.0).with_fusion_lr_multiplier(1.0)"
    )]
    pub vqa: StageConfig,
    /// Fewest occurrences of an answer in the training questions for it to enter the VQA
    /// answer vocabulary (9 in FIBER: 3,129 answers on VQAv2).
    #[config(default = 9)]
    pub vqa_min_answer_count: usize,
    /// Captioning fine-tuning (150 steps in the tiny preset: at 50, captions repeat a few
    /// templates).
    #[config(default = "StageConfig::new(150, 16, 5e-4).with_cross_modal_lr_multiplier(1.0)")]
    pub caption: StageConfig,
    /// NLVR2 fine-tuning (`--stage nlvr2`).
    #[config(
        default = "StageConfig::new(200, 8, 5e-4).with_head_lr_multiplier(10.0).with_cross_modal_lr_multiplier(1.0)"
    )]
    pub nlvr2: StageConfig,
    /// ITC retrieval fine-tuning (`--stage retrieval-itc`); the queue is `queue_size`.
    #[config(
        default = "StageConfig::new(100, 16, 2e-4).with_temperature_lr_multiplier(0.0).with_cross_modal_lr_multiplier(1.0)"
    )]
    pub retrieval_itc: StageConfig,
    /// ITM retrieval fine-tuning (`--stage retrieval-itm`).
    #[config(default = "StageConfig::new(100, 16, 2e-4).with_cross_modal_lr_multiplier(1.0)")]
    pub retrieval_itm: StageConfig,
    /// Fine-grained pre-training of the detector (`--stage fine`; in the main job after the
    /// coarse stage). The tiny preset keeps an EMA at 0.99 instead of 0.999 (over its few thousand
    /// steps a 0.999 average would stay close to the initial weights), trains the text side at
    /// the base rate and freezes nothing: its coarse model, trained for minutes, has not learned
    /// what tells the classes apart (docs/training.md).
    #[config(
        default = "fine_stage(6000, 4, 1, 1e-3, 0.05, 0.99).with_text_lr_multiplier(1.0).with_frozen(Vec::new())"
    )]
    pub fine: StageConfig,
    /// Detection fine-tuning of the fine stage's detector (`--stage detect`) on the detection
    /// files' class-name prompts, at a tenth of the fine stage's rate as in FIBER.
    #[config(default = "downstream_detector_stage(300, 4, 1, 1e-4, 0.05, 0.99)")]
    pub detect: StageConfig,
    /// Phrase-grounding fine-tuning of the fine stage's detector (`--stage ground`) on the
    /// MDETR captions, without flipping (FIBER's RefCOCO setting).
    #[config(default = "downstream_detector_stage(300, 4, 1, 1e-4, 0.05, 0.99).with_flip(false)")]
    pub ground: StageConfig,
    /// The detector, its data, losses and post-processing.
    #[config(default = "DetectorSettings::new()")]
    pub detector: DetectorSettings,
    /// Evaluation.
    #[config(default = "EvalConfig::new()")]
    pub eval: EvalConfig,
    /// The data-parallel replicas (`--devices` overrides their `devices`) and how they
    /// synchronise. The tiny preset trains on two replicas, which on the CPU share its cores:
    /// one replica keeps about one core busy (docs/performance.md). Its batch sizes are per
    /// replica, half of each step's samples.
    #[config(default = "ReplicaConfig::new().with_devices(String::from(\"2\"))")]
    pub replicas: ReplicaConfig,
}

impl RunConfig {
    /// Seed of the VQA classifier's initialisation (each random stream of a run has its own
    /// seed derived from [`RunConfig::seed`], here and nowhere else).
    pub fn vqa_head_seed(&self) -> u64 {
        self.seed.wrapping_add(1)
    }

    /// Seed of the NLVR2 classifier's initialisation.
    pub fn nlvr2_head_seed(&self) -> u64 {
        self.seed.wrapping_add(2)
    }

    /// Seed of the detector's new modules (stage norms, FPN, DyHead, head).
    pub fn detector_init_seed(&self) -> u64 {
        self.seed.wrapping_add(3)
    }

    /// Seed of the masking in the masked-token evaluation.
    pub fn mlm_eval_seed(&self) -> u64 {
        self.seed ^ 0x3A5C
    }

    /// Where the stages read their data: `data_dir`, or the `annotations` files with
    /// `images_dir`.
    pub fn data_source(&self) -> fiber_data::layout::DataSource {
        fiber_data::layout::DataSource {
            folder: (!self.data_dir.as_os_str().is_empty()).then(|| self.data_dir.clone()),
            annotations: self.annotations.clone(),
            images: self.images_dir.clone(),
        }
    }

    /// The tiny preset (the defaults): built-in data on a CPU.
    pub fn tiny() -> Self {
        Self::new()
    }

    /// FIBER-Base's values (Swin-B/384 + RoBERTa-base, 6 fused pairs): pre-training
    /// as in docs/model.md §3.5 (effective batch 4096 = 8 × 512 accumulation steps here, lr 1e-5, queue
    /// 4096) and the fine-tuning stages of docs/model.md §4 (batch, epochs → steps on COCO/VQAv2/NLVR2
    /// sizes, learning rates, head ×50, cross-modal ×5, text length 50). Data comes from
    /// `--data` (required); the model from `--init`.
    pub fn fiber_base() -> Self {
        let model = ModelConfig::new(fiber_fusion::FiberConfig::fiber_base_384())
            .with_max_text_len(50)
            .with_tokenizer_vocab_size(50265);
        let finetune = |steps: u64, batch: usize, accumulation: usize, lr: f64| {
            StageConfig::new(steps, batch, lr)
                .with_accumulation(accumulation)
                .with_head_lr_multiplier(50.0)
                .with_checkpoint_every(1000)
        };
        Self::new()
            .with_preset("base".into())
            .with_name("fiber-base".into())
            // No built-in data at this size: `--data` names the datasets.
            .with_data_dir(PathBuf::new())
            .with_model(model)
            .with_pretrain(
                StageConfig::new(100_000, 8, 1e-5)
                    .with_accumulation(512)
                    .with_checkpoint_every(1000),
            )
            .with_queue_size(4096)
            .with_uniform_negatives([0.0, 0.0])
            // VQAv2 train + val ≈ 658K questions, batch 512, 10 epochs.
            .with_vqa(finetune(12_850, 8, 64, 2e-5))
            // COCO Karpathy train ≈ 567K captions, batch 512, 10 epochs.
            .with_caption(finetune(11_070, 8, 64, 5e-5).with_head_lr_multiplier(5.0))
            // NLVR2 train ≈ 86K statements, batch 256, 5 epochs.
            .with_nlvr2(finetune(1_680, 8, 32, 2e-5))
            // COCO Karpathy train, batch 1024, 10 epochs.
            .with_retrieval_itc(finetune(5_540, 8, 128, 2e-5).with_head_lr_multiplier(5.0))
            .with_retrieval_itm(finetune(5_540, 8, 128, 2e-5).with_head_lr_multiplier(5.0))
            // 800K iterations of 64 images, 2,000 warm-up iterations.
            .with_fine(
                fine_stage(800_000, 1, 64, 1e-4, 2000.0 / 800_000.0, 0.999)
                    .with_checkpoint_every(5000),
            )
            // COCO train2017 ≈ 118K images, batch 32, 24 epochs.
            .with_detect(
                downstream_detector_stage(88_650, 1, 32, 1e-5, 0.01, 0.999)
                    .with_checkpoint_every(5000),
            )
            // RefCOCO train ≈ 120K expressions, batch 16, 20 epochs, no flip.
            .with_ground(
                downstream_detector_stage(150_780, 1, 16, 1e-5, 0.01, 0.999)
                    .with_flip(false)
                    .with_checkpoint_every(5000),
            )
            .with_detector(DetectorSettings::fiber_base())
            // One replica unless `--devices` names the GPUs.
            .with_replicas(ReplicaConfig::new())
    }

    /// Reads a TOML file; a missing key takes its default, an unknown key or a wrong type is an
    /// error naming the file and where.
    pub fn from_toml_file(path: &Path) -> Result<Self, TrainError> {
        Self::from_toml_file_over(path, RunConfig::new())
    }

    /// Reads a TOML file whose missing keys take the values of `base` (a preset).
    pub fn from_toml_file_over(path: &Path, base: RunConfig) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str_over(&text, base).map_err(|message| TrainError::ConfigFile {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text (missing keys take their defaults; unknown keys are errors).
    pub fn from_toml_str(text: &str) -> Result<Self, String> {
        Self::from_toml_str_over(text, RunConfig::new())
    }

    /// The preset named `name`.
    pub fn preset(name: &str) -> Result<Self, String> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "base" => Ok(Self::fiber_base()),
            other => Err(format!("unknown preset `{other}`; `tiny` or `base`")),
        }
    }

    /// Parses TOML text over `base` (missing keys keep `base`'s values); text that names a
    /// `preset` is read over that preset instead.
    pub fn from_toml_str_over(text: &str, base: RunConfig) -> Result<Self, String> {
        let given: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let base = match given.get("preset") {
            Some(toml::Value::String(name)) => Self::preset(name)?,
            Some(_) => return Err("`preset` must be a string".into()),
            None => base,
        };
        let mut merged = toml::Table::try_from(base).map_err(|e| e.to_string())?;
        merge(&mut merged, given.clone());
        let config: RunConfig = merged
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        let known = toml::Table::try_from(&config).map_err(|e| e.to_string())?;
        check_known(&given, &known, "")?;
        Ok(config)
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a run configuration serialises to TOML")
    }
}

/// Overwrites `base` with `given`, recursively.
fn merge(base: &mut toml::Table, given: toml::Table) {
    for (key, value) in given {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => merge(inner, value),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Every key of `given` must exist in `known` (the parsed configuration written back).
fn check_known(given: &toml::Table, known: &toml::Table, path: &str) -> Result<(), String> {
    for (key, value) in given {
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match (known.get(key), value) {
            (None, _) => return Err(format!("unknown key `{full}`")),
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => {
                check_known(value, inner, &full)?
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let config = RunConfig::from_toml_str(
            "seed = 3\n[pretrain]\nsteps = 10\n[pretrain.optimizer]\nmax_grad_norm = 2.0\n",
        )
        .unwrap();
        assert_eq!(config.seed, 3);
        assert_eq!(config.pretrain.steps, 10);
        assert_eq!(
            config.pretrain.batch_size,
            RunConfig::new().pretrain.batch_size
        );
        assert_eq!(config.pretrain.optimizer.max_grad_norm, Some(2.0));
        let round_trip = RunConfig::from_toml_str(&config.to_toml()).unwrap();
        assert_eq!(round_trip, config);
        let err = RunConfig::from_toml_str("[pretrain]\nstep = 10\n").unwrap_err();
        assert!(err.contains("unknown key `pretrain.step`"), "{err}");
        let err = RunConfig::from_toml_str("seed = \"x\"\n").unwrap_err();
        assert!(err.contains("seed"), "{err}");
        let base =
            RunConfig::from_toml_str_over("[vqa]\nsteps = 7\n", RunConfig::fiber_base()).unwrap();
        assert_eq!(base.vqa.steps, 7);
        assert_eq!(base.vqa.lr, 2e-5);
        assert_eq!(base.model.fiber.roberta.hidden_size, 768);
        // A saved configuration names its preset, so it reads back whole (clipping off included).
        assert_eq!(RunConfig::from_toml_str(&base.to_toml()).unwrap(), base);
        assert_eq!(base.pretrain.optimizer.max_grad_norm, None);
        let err = RunConfig::from_toml_str("preset = \"huge\"\n").unwrap_err();
        assert!(err.contains("unknown preset"), "{err}");
    }
}
