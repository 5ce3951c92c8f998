//! `cargo xtask data check`: reads a dataset folder the way a training run would, decodes every
//! image, and prints counts and every problem grouped by kind (`--json` for machines). Keep
//! this interface stable: outside checks of the readers run through it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use fiber_data::check::check_images;
use fiber_data::grounding::{read_coco_detection, read_mdetr};
use fiber_data::nlvr2::read_nlvr2;
use fiber_data::shapes::{write_shapes_world, ShapesWorldConfig};
use fiber_data::vqa::{read_vqa, AnswerVocab, DEFAULT_MIN_ANSWER_COUNT};
use fiber_data::{read_coco_captions, read_karpathy, CaptionDataset, Problems, Split};

/// `data` subcommands.
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Validate a dataset folder before training on it.
    Check(CheckArgs),
    /// Write the built-in shapes world (images, captions, boxes, questions) in the real formats.
    Generate(GenerateArgs),
}

/// Arguments of `data generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The folder to write (reused when it holds a world of the same configuration).
    #[arg(long, default_value = "data/shapes")]
    pub out: PathBuf,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training images.
    #[arg(long, default_value_t = 2000)]
    pub train: usize,
    /// Validation images.
    #[arg(long, default_value_t = 200)]
    pub val: usize,
    /// Test images.
    #[arg(long, default_value_t = 200)]
    pub test: usize,
    /// Side of the square images in pixels.
    #[arg(long, default_value_t = 96)]
    pub image_size: usize,
}

impl GenerateArgs {
    /// The world configuration these arguments describe.
    pub fn config(&self) -> ShapesWorldConfig {
        ShapesWorldConfig::new()
            .with_seed(self.seed)
            .with_train_images(self.train)
            .with_val_images(self.val)
            .with_test_images(self.test)
            .with_image_size(self.image_size)
    }
}

/// Dataset formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Karpathy split file `dataset_*.json` (COCO or Flickr30k), images under the folder.
    Karpathy,
    /// COCO `annotations/captions_<name>.json`, images under `<name>/`.
    CocoCaptions,
    /// VQAv2 `v2_OpenEnded_mscoco_<split>_questions.json` (+ `v2_mscoco_<split>_annotations.json`),
    /// images `<split>/COCO_<split>_<id:012>.jpg`.
    Vqa,
    /// NLVR2 `{train,dev,test1,test2}.json` (JSONL), images under `images/<split>/`.
    Nlvr2,
    /// MDETR-style grounding annotations `mdetr_annotations/final_*.json` (COCO JSON with a
    /// `caption` per image entry and `tokens_positive` per box), image `file_name`s relative to
    /// the folder.
    Mdetr,
    /// COCO detection `annotations/instances_<name>.json`, images under `<name>/`; turned into
    /// grounding prompts for training.
    CocoDet,
}

/// Arguments of `data check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The dataset format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// The dataset folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Exit with an error when any problem is found.
    #[arg(long)]
    pub strict: bool,
    /// Print the summary as JSON with keys `counts` and `problems`.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `data` subcommand.
pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Check(args) => check(args),
        DataCommand::Generate(args) => {
            let start = std::time::Instant::now();
            let summary = write_shapes_world(&args.config(), &args.out)?;
            let c = &summary.counts;
            let verb = if summary.reused {
                "reused"
            } else {
                "generated"
            };
            println!(
                "{verb} {}: {} images, {} captions, {} questions, {} boxes in {:.2} s",
                args.out.display(),
                c.images,
                c.captions,
                c.questions,
                c.boxes,
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

fn files_matching(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn caption_counts(data: &CaptionDataset, counts: &mut BTreeMap<&'static str, usize>) {
    *counts.entry("images").or_default() += data.images.len();
    *counts.entry("captions").or_default() += data.captions.len();
}

/// What `data check` found: counts by name and every problem.
#[derive(Debug)]
pub struct CheckReport {
    /// Counts (images, captions, examples, unusable_images …).
    pub counts: BTreeMap<&'static str, usize>,
    /// Every problem, in reading order.
    pub problems: Problems,
}

impl CheckReport {
    /// The report as JSON with keys `format`, `counts` and `problems`.
    pub fn to_json(&self, format: Format) -> serde_json::Value {
        serde_json::json!({ "format": format!("{format:?}"), "counts": self.counts, "problems": self.problems.items })
    }
}

fn check(args: CheckArgs) -> Result<()> {
    let report = check_dataset(args.format, &args.data)?;
    let (counts, problems) = (&report.counts, &report.problems);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json(args.format))?
        );
    } else {
        println!("{} ({:?})", args.data.display(), args.format);
        for (name, n) in counts {
            println!("  {name}: {n}");
        }
        println!("  problems: {}", problems.len());
        for (kind, list) in problems.by_kind() {
            println!("  {kind:?} ({}):", list.len());
            for p in list {
                println!("    {} [{}]: {}", p.file.display(), p.location, p.message);
            }
        }
    }
    if args.strict && !problems.is_empty() {
        bail!("{} problem(s) found (--strict)", problems.len());
    }
    Ok(())
}

/// Reads the dataset in `dir` as `format` would be read for training and decodes every image.
pub fn check_dataset(format: Format, dir: &Path) -> Result<CheckReport> {
    let mut problems = Problems::default();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut images: Vec<PathBuf> = Vec::new();
    match format {
        Format::Karpathy => {
            let files = files_matching(dir, "dataset_", ".json")?;
            let Some(file) = files.first() else {
                bail!("no dataset_*.json in {}", dir.display())
            };
            let data = read_karpathy(file, dir, &mut problems)?;
            caption_counts(&data, &mut counts);
            images.extend(data.images.iter().map(|i| i.path.clone()));
        }
        Format::CocoCaptions => {
            let files = files_matching(&dir.join("annotations"), "captions_", ".json")?;
            if files.is_empty() {
                bail!("no annotations/captions_*.json in {}", dir.display());
            }
            for file in files {
                let name = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .trim_start_matches("captions_")
                    .to_string();
                let split = if name.contains("train") {
                    Split::Train
                } else if name.contains("test") {
                    Split::Test
                } else {
                    Split::Val
                };
                let data = read_coco_captions(&file, &dir.join(&name), split, &mut problems)?;
                caption_counts(&data, &mut counts);
                images.extend(data.images.iter().map(|i| i.path.clone()));
            }
        }
        Format::Nlvr2 => {
            let mut found = false;
            for split in ["train", "dev", "test1", "test2"] {
                let file = dir.join(format!("{split}.json"));
                if !file.exists() {
                    continue;
                }
                found = true;
                let records = read_nlvr2(&file, dir, split, &mut problems)?;
                *counts.entry("examples").or_default() += records.len();
                for r in records {
                    images.push(r.left);
                    images.push(r.right);
                }
            }
            if !found {
                bail!(
                    "no train.json, dev.json, test1.json or test2.json in {}",
                    dir.display()
                );
            }
            images.sort();
            images.dedup();
            counts.insert("images", images.len());
        }
        Format::Vqa => {
            let files = files_matching(dir, "v2_OpenEnded_mscoco_", "_questions.json")?;
            if files.is_empty() {
                bail!(
                    "no v2_OpenEnded_mscoco_<split>_questions.json in {}",
                    dir.display()
                );
            }
            let mut records = Vec::new();
            for file in files {
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let split = name
                    .trim_start_matches("v2_OpenEnded_mscoco_")
                    .trim_end_matches("_questions.json")
                    .to_string();
                let annotations = dir.join(format!("v2_mscoco_{split}_annotations.json"));
                let annotations = annotations.exists().then_some(annotations);
                records.extend(read_vqa(
                    &file,
                    annotations.as_deref(),
                    &dir.join(&split),
                    &format!("COCO_{split}_"),
                    &mut problems,
                )?);
            }
            let vocab = AnswerVocab::build(&records, DEFAULT_MIN_ANSWER_COUNT);
            counts.insert("questions", records.len());
            counts.insert("answer_vocabulary", vocab.len());
            counts.insert(
                "questions_with_answer_in_vocabulary",
                records
                    .iter()
                    .filter(|r| !vocab.targets(r).is_empty())
                    .count(),
            );
            images.extend(records.into_iter().map(|r| r.image));
            images.sort();
            images.dedup();
            counts.insert("images", images.len());
        }
        Format::Mdetr => {
            let folder = if dir.join("mdetr_annotations").is_dir() {
                dir.join("mdetr_annotations")
            } else {
                dir.to_path_buf()
            };
            let files = files_matching(&folder, "final_", ".json")?;
            if files.is_empty() {
                bail!(
                    "no mdetr_annotations/final_*.json (or final_*.json) in {}",
                    dir.display()
                );
            }
            for file in files {
                let records = read_mdetr(&file, dir, &mut problems)?;
                *counts.entry("captions").or_default() += records.len();
                *counts.entry("boxes").or_default() +=
                    records.iter().map(|r| r.boxes.len()).sum::<usize>();
                *counts.entry("phrases").or_default() +=
                    records.iter().map(|r| r.phrase_count()).sum::<usize>();
                images.extend(records.into_iter().map(|r| r.path));
            }
            images.sort();
            images.dedup();
            counts.insert("images", images.len());
        }
        Format::CocoDet => {
            let files = files_matching(&dir.join("annotations"), "instances_", ".json")?;
            if files.is_empty() {
                bail!("no annotations/instances_*.json in {}", dir.display());
            }
            for file in files {
                let name = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .trim_start_matches("instances_")
                    .to_string();
                let data = read_coco_detection(&file, &dir.join(&name), &mut problems)?;
                *counts.entry("categories").or_default() += data.categories.len();
                *counts.entry("images").or_default() += data.images.len();
                *counts.entry("boxes").or_default() +=
                    data.images.iter().map(|i| i.boxes.len()).sum::<usize>();
                images.extend(data.images.into_iter().map(|i| i.path));
            }
        }
    }
    let unusable = check_images(&images, &mut problems);
    counts.insert("unusable_images", unusable.len());
    Ok(CheckReport { counts, problems })
}
