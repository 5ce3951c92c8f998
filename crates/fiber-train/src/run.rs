//! A run folder (`runs/<name>`) as the evaluation and inference commands use it: its
//! configuration, tokenizer, answer vocabulary and the final model of each stage; and inference
//! on a user's own images (retrieval, VQA, captioning).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use fiber_core::store::tensor_values;
use fiber_data::image::PixelImage;
use fiber_data::vqa::AnswerVocab;
use fiber_fusion::FiberConfig;
use fiber_heads::retrieval::itc_scores;
use fiber_heads::{ClassifierHead, DecodeConfig, FiberModel};
use fiber_roberta::RobertaTokenizer;

use crate::checkpoint::CheckpointDir;
use crate::config::RunConfig;
use crate::error::TrainError;
use crate::nlvr2::Nlvr2Model;
use crate::stage::load_model;
use crate::tasks::{int_tensor, VqaModel};

/// A trained run.
pub struct RunFolder {
    /// The folder.
    pub dir: PathBuf,
    /// Its configuration (`config.toml`).
    pub config: RunConfig,
    /// Its tokenizer (`tokenizer.json`).
    pub tokenizer: RobertaTokenizer,
}

impl RunFolder {
    /// Opens `dir` (it must hold `config.toml` and `tokenizer.json`).
    pub fn open(dir: &Path) -> Result<Self, TrainError> {
        let config = RunConfig::from_toml_file(&dir.join("config.toml"))?;
        let tokenizer = RobertaTokenizer::from_file(dir.join("tokenizer.json"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
        })
    }

    /// The backbone configuration with the tokenizer's vocabulary.
    pub fn fiber_config(&self) -> FiberConfig {
        let mut config = self.config.model.fiber.clone();
        config.roberta.vocab_size = config.roberta.vocab_size.max(self.tokenizer.vocab_size());
        config
    }

    /// The weights of a stage's latest checkpoint.
    pub(crate) fn stage_store(&self, stage: &str) -> Result<fiber_core::TensorStore, TrainError> {
        let checkpoints = CheckpointDir::new(self.dir.join(stage).join("checkpoints"), 1);
        let (_, folder) = checkpoints.latest()?.ok_or_else(|| {
            TrainError::Checkpoint(format!(
                "{} has no `{stage}` checkpoint; train that stage first",
                self.dir.display()
            ))
        })?;
        Ok(fiber_core::TensorStore::from_safetensors_bytes(
            &CheckpointDir::read(&folder, "model.safetensors")?,
        )?)
    }

    /// The model of stage `stage` (`pretrain` or `caption`).
    pub fn model<B: Backend>(
        &self,
        stage: &str,
        device: &B::Device,
    ) -> Result<FiberModel<B>, TrainError> {
        let mut model = FiberModel::new(&self.fiber_config(), true, device)?;
        load_model(&mut model, self.stage_store(stage)?)?;
        Ok(model)
    }

    /// The VQA model and its answers (`answers.json`).
    pub fn vqa_model<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<(VqaModel<B>, AnswerVocab), TrainError> {
        let path = self.dir.join("answers.json");
        let answers: Vec<String> = fiber_core::json::read_json(&path)
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        let vocab = AnswerVocab::from_answers(answers);
        let config = self.fiber_config();
        let mut model = VqaModel {
            fiber: FiberModel::new(&config, true, device)?,
            vqa_classifier: ClassifierHead::vqa(
                2 * config.roberta.hidden_size,
                vocab.len(),
                device,
            ),
        };
        load_model(&mut model, self.stage_store("vqa")?)?;
        Ok((model, vocab))
    }

    /// The NLVR2 model.
    pub fn nlvr2_model<B: Backend>(&self, device: &B::Device) -> Result<Nlvr2Model<B>, TrainError> {
        let config = self.fiber_config();
        let mut model = Nlvr2Model::new(
            FiberModel::new(&config, true, device)?,
            config.roberta.hidden_size,
            device,
        );
        load_model(&mut model, self.stage_store("nlvr2")?)?;
        Ok(model)
    }

    /// Reads and preprocesses images as evaluation does (square resize, ImageNet normalisation).
    pub fn load_images(&self, paths: &[PathBuf]) -> Result<Vec<PixelImage>, TrainError> {
        crate::job::load_images(paths, self.config.model.fiber.swin.image_size)
    }

    /// Beam-search decoding settings of the run.
    pub fn decode_config(&self) -> DecodeConfig {
        crate::eval::decode_config(&self.tokenizer, &self.config.eval)
    }
}

/// Captions for `images`.
pub fn caption_images<B: Backend>(
    run: &RunFolder,
    model: &FiberModel<B>,
    images: &[PixelImage],
    device: &B::Device,
) -> Result<Vec<String>, TrainError> {
    let decode = run.decode_config();
    images
        .iter()
        .map(|image| {
            crate::eval::generate_caption_text(model, image, &decode, &run.tokenizer, device)
        })
        .collect()
}

/// The `top` most likely answers (with their sigmoid probability) to `question` about `image`.
pub fn answer_question<B: Backend>(
    run: &RunFolder,
    model: &VqaModel<B>,
    vocab: &AnswerVocab,
    image: &PixelImage,
    question: &str,
    top: usize,
    device: &B::Device,
) -> Result<Vec<(String, f32)>, TrainError> {
    let len = run.config.model.max_text_len;
    let tokens = run.tokenizer.encode_batch(&[question], len)?;
    let pixels = fiber_data::image::to_tensor::<B>(std::slice::from_ref(image), device)?;
    let logits = model.logits(
        pixels,
        int_tensor(&tokens.input_ids, len, device),
        int_tensor(&tokens.attention_mask, len, device),
    );
    let probs = tensor_values(burn::tensor::activation::sigmoid(logits));
    let mut ranked: Vec<(String, f32)> = vocab.answers.iter().cloned().zip(probs).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(top);
    Ok(ranked)
}

/// For each text, the images ranked by ITC cosine similarity, the first `rerank` re-ordered by
/// the ITM matching logit: `(image index, ITC score, ITM logit if re-ranked)`, best first.
pub fn retrieve_images<B: Backend>(
    run: &RunFolder,
    model: &FiberModel<B>,
    images: &[PixelImage],
    texts: &[String],
    rerank: usize,
    device: &B::Device,
) -> Result<Vec<Vec<(usize, f32, Option<f32>)>>, TrainError> {
    let len = run.config.model.max_text_len;
    let tokens = run.tokenizer.encode_batch(texts, len)?;
    let image_state = model
        .backbone
        .image_prefix(fiber_data::image::to_tensor::<B>(images, device)?);
    let text_state = model.backbone.text_prefix(
        int_tensor(&tokens.input_ids, len, device),
        int_tensor(&tokens.attention_mask, len, device),
    );
    let (image_feats, text_feats) = model.itc_features(&image_state, &text_state);
    let scores = tensor_values(itc_scores(text_feats, image_feats));
    let n = images.len();
    Ok(scores
        .chunks(n)
        .enumerate()
        .map(|(t, row)| {
            let mut ranked: Vec<(usize, f32, Option<f32>)> =
                row.iter().enumerate().map(|(i, &s)| (i, s, None)).collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            let k = rerank.min(n);
            if k > 0 {
                let pairs: Vec<(usize, usize)> = ranked[..k].iter().map(|r| (r.0, t)).collect();
                let itm = tensor_values(model.itm_scores(&image_state, &text_state, &pairs));
                for (r, s) in ranked[..k].iter_mut().zip(itm) {
                    r.2 = Some(s);
                }
                ranked[..k]
                    .sort_by(|a, b| b.2.unwrap_or(f32::MIN).total_cmp(&a.2.unwrap_or(f32::MIN)));
            }
            ranked
        })
        .collect())
}
