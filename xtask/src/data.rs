//! `cargo xtask data check`: reads a dataset folder the way a training run would, decodes every
//! image, and prints counts and every problem grouped by kind (`--json` for machines). Keep
//! this interface stable: outside checks of the readers run through it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use fiber_data::check::check_images;
use fiber_data::layout;
use fiber_data::shapes::{write_shapes_world, ShapesWorldConfig};
use fiber_data::{CaptionDataset, Problems, Split};

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
    /// VQAv2 `v2_OpenEnded_mscoco_<split>_questions.json` + `v2_mscoco_<split>_annotations.json`,
    /// images `<split>/COCO_<split>_<id:012>.jpg`; `train…`/`val…` splits train, the first
    /// `test…` split is held out.
    Vqa,
    /// NLVR2 `train.json` and `test1.json` (else `dev.json`), JSONL, in `nlvr2/` or the folder,
    /// images under `images/<split>/` beside them.
    Nlvr2,
    /// MDETR-style grounding annotations `mdetr_annotations/final_*.json` (COCO JSON with a
    /// `caption` per image entry and `tokens_positive` per box), image `file_name`s relative to
    /// the folder.
    Mdetr,
    /// COCO detection `annotations/instances_<name>.json`, images under `<name>/`; turned into
    /// grounding prompts for training.
    CocoDet,
}

/// Where a command reads a dataset: a data folder in the documented layout, or the published
/// annotation files where they lie with their image folder (docs/training.md lists the
/// mapping for each public dataset).
#[derive(Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// Data folder, in the layout of docs/training.md.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Annotation files, given one by one instead of a folder's (e.g. `dataset_coco.json`, or
    /// VQAv2 question files with their annotation files); one format at a time.
    #[arg(long, num_args = 1..)]
    pub annotations: Vec<PathBuf>,
    /// The folder the annotation files' image paths are relative to (e.g. the COCO 2014 root
    /// holding `train2014/` and `val2014/`); default: --data, else beside each file.
    #[arg(long)]
    pub images: Option<PathBuf>,
}

impl SourceArgs {
    /// Whether any of the three was given.
    pub fn given(&self) -> bool {
        self.data.is_some() || !self.annotations.is_empty() || self.images.is_some()
    }

    /// The data source these arguments name.
    pub fn source(&self) -> layout::DataSource {
        layout::DataSource {
            folder: self.data.clone(),
            annotations: self.annotations.clone(),
            images: self.images.clone(),
        }
    }
}

/// Arguments of `data check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The dataset format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// Where the dataset lies.
    #[command(flatten)]
    pub source: SourceArgs,
    /// VQAv2: fewest occurrences of an answer for it to enter the vocabulary (the VQA stage's
    /// `vqa_min_answer_count`).
    #[arg(long, default_value_t = fiber_data::vqa::DEFAULT_MIN_ANSWER_COUNT)]
    pub min_answer_count: usize,
    /// Exit with an error when any problem is found or a file training needs is missing.
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
    /// Files that training of this format needs and the folder lacks.
    pub missing: Vec<String>,
    /// Why the data as read cannot train (e.g. an empty VQA answer vocabulary).
    pub unusable: Vec<String>,
}

impl CheckReport {
    /// The report as JSON with keys `format`, `counts` and `problems`.
    pub fn to_json(&self, format: Format) -> serde_json::Value {
        serde_json::json!({
            "format": format!("{format:?}"),
            "counts": self.counts,
            "problems": self.problems.items,
            "missing": self.missing,
            "unusable": self.unusable,
        })
    }
}

fn check(args: CheckArgs) -> Result<()> {
    if args.source.data.is_none() && args.source.annotations.is_empty() {
        bail!("give --data DIR, or --annotations FILE… (with --images DIR)");
    }
    let source = args.source.source();
    let settings = CheckSettings {
        min_answer_count: args.min_answer_count,
    };
    let report = check_source(args.format, &source, &settings)?;
    let (counts, problems) = (&report.counts, &report.problems);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json(args.format))?
        );
    } else {
        println!("{} ({:?})", source.describe(), args.format);
        for (name, n) in counts {
            println!("  {name}: {n}");
        }
        for file in &report.missing {
            println!("  missing for training: {file}");
        }
        for why in &report.unusable {
            println!("  cannot train: {why}");
        }
        println!("  problems: {}", problems.len());
        for (kind, list) in problems.by_kind() {
            println!("  {kind:?} ({}):", list.len());
            for p in list {
                println!("    {} [{}]: {}", p.file.display(), p.location, p.message);
            }
        }
    }
    let failures = report.missing.len() + report.unusable.len();
    if args.strict && !(problems.is_empty() && failures == 0) {
        bail!(
            "{} problem(s) and {failures} reason(s) training cannot use the data found (--strict)",
            problems.len(),
        );
    }
    Ok(())
}

/// Settings of training that decide what a check reports.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSettings {
    /// VQAv2: the minimum answer count of the vocabulary.
    pub min_answer_count: usize,
}

impl Default for CheckSettings {
    fn default() -> Self {
        Self {
            min_answer_count: fiber_data::vqa::DEFAULT_MIN_ANSWER_COUNT,
        }
    }
}

/// Reads the dataset in `dir` as training of `format` reads it, with the default settings.
pub fn check_dataset(format: Format, dir: &Path) -> Result<CheckReport> {
    check_source(
        format,
        &layout::DataSource::folder(dir),
        &CheckSettings::default(),
    )
}

/// Reads the dataset at `source` as training of `format` reads it (through
/// `fiber_data::layout`, the module training uses) and decodes every image.
pub fn check_source(
    format: Format,
    source: &layout::DataSource,
    settings: &CheckSettings,
) -> Result<CheckReport> {
    let mut problems = Problems::default();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut cannot_train = Vec::new();
    let mut images: Vec<PathBuf> = Vec::new();
    match format {
        Format::Karpathy => {
            let data = layout::read_karpathy_source(source, &mut problems)?;
            caption_counts(&data, &mut counts);
            counts.insert("training_captions", data.split(Split::Train).captions.len());
            counts.insert("held_out_captions", data.split(Split::Test).captions.len());
            images.extend(data.images.iter().map(|i| i.path.clone()));
        }
        Format::CocoCaptions => {
            for data in layout::read_coco_captions_source(source, &mut problems)? {
                caption_counts(&data, &mut counts);
                images.extend(data.images.iter().map(|i| i.path.clone()));
            }
        }
        Format::Nlvr2 => {
            let folder = layout::Nlvr2Folder::read(source, &mut problems)?;
            missing.extend(folder.missing());
            let training = folder.training.unwrap_or_default();
            let held_out = folder.held_out.map(|(_, r)| r).unwrap_or_default();
            counts.insert("examples", training.len() + held_out.len());
            counts.insert("training_examples", training.len());
            counts.insert("held_out_examples", held_out.len());
            for r in training.into_iter().chain(held_out) {
                images.push(r.left);
                images.push(r.right);
            }
            images.sort();
            images.dedup();
            counts.insert("images", images.len());
        }
        Format::Vqa => {
            let folder = layout::VqaFolder::read(source, &mut problems)?;
            missing.extend(folder.missing());
            cannot_train.extend(folder.empty_vocabulary(settings.min_answer_count));
            let vocab = folder.vocabulary(settings.min_answer_count);
            counts.insert("questions", folder.training.len() + folder.held_out.len());
            counts.insert("training_questions", folder.training.len());
            counts.insert("held_out_questions", folder.held_out.len());
            counts.insert("answer_vocabulary", vocab.len());
            counts.insert(
                "training_questions_with_answer_in_vocabulary",
                folder
                    .training
                    .iter()
                    .filter(|r| !vocab.targets(r).is_empty())
                    .count(),
            );
            images.extend(
                folder
                    .training
                    .into_iter()
                    .chain(folder.held_out)
                    .map(|r| r.image),
            );
            images.sort();
            images.dedup();
            counts.insert("images", images.len());
        }
        Format::Mdetr => {
            let records = layout::read_mdetr_source(source, &mut problems)?;
            counts.insert("captions", records.len());
            counts.insert("boxes", records.iter().map(|r| r.boxes.len()).sum());
            counts.insert("phrases", records.iter().map(|r| r.phrase_count()).sum());
            images.extend(records.into_iter().map(|r| r.path));
            images.sort();
            images.dedup();
            counts.insert("images", images.len());
        }
        Format::CocoDet => {
            for data in layout::read_coco_detection_source(source, &mut problems)? {
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
    Ok(CheckReport {
        counts,
        problems,
        missing,
        unusable: cannot_train,
    })
}
