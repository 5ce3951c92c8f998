//! Where each dataset format keeps its files, and which of them a run reads. Training,
//! evaluation and `cargo xtask data check` all read data through this module, so a check reports
//! exactly what training of that format will read.
//!
//! A [`DataSource`] is either a data folder (`--data DIR`) in the layout below, or the published
//! files where they lie: annotation files given one by one (`--annotations FILE…`) and the
//! folder their image paths are relative to (`--images DIR`).
//!
//! | format | files in a data folder | images in a data folder | with `--annotations` / `--images` |
//! |---|---|---|---|
//! | Karpathy | the first `dataset_*.json` (by name) | `filepath/filename` under the folder | one file of any name; `filepath/filename` under `--images` |
//! | COCO captions | `annotations/captions_<name>.json` | under `<name>/` | files of any name; `file_name` under `--images` |
//! | VQAv2 | `v2_OpenEnded_mscoco_<split>_questions.json` + `v2_mscoco_<split>_annotations.json` | `<split>/COCO_<split>_<id:012>.jpg` | question files (answers given too, or beside them, by the same names); `<split>/COCO_…` under `--images` |
//! | NLVR2 | `{train,test1,dev}.json` in `nlvr2/` or in the folder | `images/<split>/…` beside them | `<split>.json` files; `<split>/…` under `--images` |
//! | MDETR | `mdetr_annotations/final_*.json` (or `final_*.json`) | `file_name` under the folder | files of any name; `file_name` under `--images` |
//! | COCO detection | `annotations/instances_<name>.json` | under `<name>/` | files of any name; `file_name` under `--images` |
//!
//! Without `--images`, image paths resolve under `--data`, else beside the annotation file.
//! VQAv2 splits whose name starts with `train` or `val` are trained on (train + val, as FIBER
//! does; docs/model.md §4.1), in name order; the first split starting with `test` that has an
//! annotations file is held out. NLVR2 trains on `train` and holds out `test1`, else `dev`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::captions::{read_coco_captions, read_karpathy, CaptionDataset, Split};
use crate::error::DataError;
use crate::grounding::{read_coco_detection, read_mdetr, DetectionDataset, GroundingRecord};
use crate::nlvr2::{read_nlvr2, Nlvr2Record};
use crate::problem::Problems;
use crate::vqa::{read_vqa, AnswerVocab, VqaRecord};

/// Where a dataset's files lie: a data folder in the layout of this module, or annotation files
/// given one by one with the folder their image paths are relative to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSource {
    /// The data folder (`--data`).
    pub folder: Option<PathBuf>,
    /// Annotation files given one by one (`--annotations`); when there are any, the folder's
    /// own annotation files are not looked for.
    pub annotations: Vec<PathBuf>,
    /// The folder image paths are relative to (`--images`).
    pub images: Option<PathBuf>,
}

impl DataSource {
    /// A data folder in the layout of this module.
    pub fn folder(dir: impl Into<PathBuf>) -> Self {
        Self {
            folder: Some(dir.into()),
            ..Self::default()
        }
    }

    /// Annotation files with the folder their image paths are relative to (`None`: beside
    /// each file).
    pub fn files(annotations: Vec<PathBuf>, images: Option<PathBuf>) -> Self {
        Self {
            folder: None,
            annotations,
            images,
        }
    }

    /// The source as the messages name it: the folder, or the files.
    pub fn describe(&self) -> String {
        if self.annotations.is_empty() {
            match &self.folder {
                Some(dir) => dir.display().to_string(),
                None => "no data (give --data DIR or --annotations FILE)".into(),
            }
        } else {
            self.annotations
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// The data folder, or an error saying that this source has none.
    fn dir(&self) -> Result<&Path, DataError> {
        self.folder.as_deref().ok_or_else(|| {
            DataError::Missing("no data folder or annotation files: give --data DIR, or --annotations FILE with --images DIR".into())
        })
    }

    /// The annotation files given, or `None` when the folder's are to be found.
    fn given(&self) -> Option<&[PathBuf]> {
        (!self.annotations.is_empty()).then_some(self.annotations.as_slice())
    }

    /// The folder image paths of `file` (a given annotation file) are relative to: `--images`,
    /// else the data folder, else the file's own folder.
    fn image_root(&self, file: &Path) -> PathBuf {
        self.images
            .clone()
            .or_else(|| self.folder.clone())
            .unwrap_or_else(|| file.parent().map(Path::to_path_buf).unwrap_or_default())
    }

    /// The folder that a data folder's images are relative to: `--images`, else the folder.
    fn folder_images(&self, dir: &Path) -> PathBuf {
        self.images.clone().unwrap_or_else(|| dir.to_path_buf())
    }
}

/// The files of `dir` whose names start with `prefix` and end with `suffix`, sorted by name.
pub(crate) fn files_matching(
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
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

fn missing(what: String) -> DataError {
    DataError::Missing(what)
}

/// The part of a file name between `prefix` and `suffix` (`None` when it does not have them).
fn infix<'a>(path: &'a Path, prefix: &str, suffix: &str) -> Option<&'a str> {
    path.file_name()
        .and_then(|n| n.to_str())?
        .strip_prefix(prefix)?
        .strip_suffix(suffix)
}

/// The Karpathy split file of a folder: the first `dataset_*.json` by name.
pub(crate) fn karpathy_file(dir: &Path) -> Result<PathBuf, DataError> {
    files_matching(dir, "dataset_", ".json")?
        .into_iter()
        .next()
        .ok_or_else(|| {
            missing(format!(
                "no dataset_*.json (Karpathy captions) in {}",
                dir.display()
            ))
        })
}

/// Every caption of the source's Karpathy file (all splits; [`CaptionDataset::split`] selects):
/// the one file given, or the folder's.
pub fn read_karpathy_source(
    source: &DataSource,
    problems: &mut Problems,
) -> Result<CaptionDataset, DataError> {
    match source.given() {
        Some([file]) => read_karpathy(file, &source.image_root(file), problems),
        Some(files) => Err(DataError::Invalid(format!(
            "Karpathy captions come from one file; {} were given ({})",
            files.len(),
            source.describe()
        ))),
        None => {
            let dir = source.dir()?;
            read_karpathy(&karpathy_file(dir)?, &source.folder_images(dir), problems)
        }
    }
}

/// Karpathy captions as training uses them: the training and the test split.
pub fn read_caption_splits(
    source: &DataSource,
    problems: &mut Problems,
) -> Result<(CaptionDataset, CaptionDataset), DataError> {
    let captions = read_karpathy_source(source, problems)?;
    Ok((captions.split(Split::Train), captions.split(Split::Test)))
}

/// The split of a COCO captions file, guessed from its name (`train…`, `test…`, else
/// validation).
fn coco_split(name: &str) -> Split {
    if name.contains("train") {
        Split::Train
    } else if name.contains("test") {
        Split::Test
    } else {
        Split::Val
    }
}

/// The COCO caption files of the source: the files given (images under `--images`), or every
/// `annotations/captions_<name>.json` of the folder (images under `<name>/`).
pub fn read_coco_captions_source(
    source: &DataSource,
    problems: &mut Problems,
) -> Result<Vec<CaptionDataset>, DataError> {
    if let Some(files) = source.given() {
        return files
            .iter()
            .map(|file| {
                let name = file
                    .file_stem()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                read_coco_captions(file, &source.image_root(file), coco_split(name), problems)
            })
            .collect();
    }
    let dir = source.dir()?;
    let files = files_matching(&dir.join("annotations"), "captions_", ".json")?;
    if files.is_empty() {
        return Err(missing(format!(
            "no annotations/captions_*.json in {}",
            dir.display()
        )));
    }
    let images = source.folder_images(dir);
    files
        .iter()
        .map(|file| {
            let name = infix(file, "captions_", ".json").unwrap_or_default();
            read_coco_captions(file, &images.join(name), coco_split(name), problems)
        })
        .collect()
}

const VQA_QUESTIONS: (&str, &str) = ("v2_OpenEnded_mscoco_", "_questions.json");
const VQA_ANSWERS: (&str, &str) = ("v2_mscoco_", "_annotations.json");

/// The VQAv2 questions file of `split` in `dir`.
pub fn vqa_questions_file(dir: &Path, split: &str) -> PathBuf {
    dir.join(format!("{}{split}{}", VQA_QUESTIONS.0, VQA_QUESTIONS.1))
}

/// The VQAv2 annotations (answers) file of `split` in `dir`.
pub(crate) fn vqa_annotations_file(dir: &Path, split: &str) -> PathBuf {
    dir.join(format!("{}{split}{}", VQA_ANSWERS.0, VQA_ANSWERS.1))
}

/// Which VQAv2 splits a run reads, and their files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VqaSplits {
    /// Trained on, in this order (`train…`, `val…` with annotations).
    pub training: Vec<String>,
    /// Held out for evaluation (the first `test…` split with annotations).
    pub held_out: Option<String>,
    /// Question files that are not read because their annotations are missing.
    pub unanswered: Vec<String>,
    /// Each read split's questions and answers files.
    pub files: BTreeMap<String, (PathBuf, PathBuf)>,
}

impl VqaSplits {
    /// The splits found in `dir`.
    pub fn find(dir: &Path) -> Result<Self, DataError> {
        let (prefix, suffix) = VQA_QUESTIONS;
        let files = files_matching(dir, prefix, suffix)?;
        if files.is_empty() {
            return Err(missing(format!(
                "no v2_OpenEnded_mscoco_<split>_questions.json in {}",
                dir.display()
            )));
        }
        Self::from_files(&files)
    }

    /// The splits of the files given: question files named
    /// `v2_OpenEnded_mscoco_<split>_questions.json`, each with its answers
    /// `v2_mscoco_<split>_annotations.json` among the files given or beside it. A file named
    /// neither way is an error naming it.
    pub fn from_files(given: &[PathBuf]) -> Result<Self, DataError> {
        let mut questions: Vec<(String, PathBuf)> = Vec::new();
        let mut answers: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in given {
            if let Some(split) = infix(file, VQA_QUESTIONS.0, VQA_QUESTIONS.1) {
                questions.push((split.to_string(), file.clone()));
            } else if let Some(split) = infix(file, VQA_ANSWERS.0, VQA_ANSWERS.1) {
                answers.insert(split.to_string(), file.clone());
            } else {
                return Err(DataError::Invalid(format!(
                    "{}: not a VQAv2 file name (v2_OpenEnded_mscoco_<split>_questions.json or \
                     v2_mscoco_<split>_annotations.json; the split names the image folder)",
                    file.display()
                )));
            }
        }
        if questions.is_empty() {
            return Err(missing(format!(
                "no v2_OpenEnded_mscoco_<split>_questions.json among {}",
                given
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        questions.sort();
        let mut splits = Self {
            training: Vec::new(),
            held_out: None,
            unanswered: Vec::new(),
            files: BTreeMap::new(),
        };
        for (split, file) in questions {
            let beside = vqa_annotations_file(file.parent().unwrap_or(Path::new("")), &split);
            let answers = answers.get(&split).cloned().unwrap_or(beside);
            if !answers.exists() {
                splits.unanswered.push(split);
                continue;
            }
            if split.starts_with("train") || split.starts_with("val") {
                splits.training.push(split.clone());
            } else if split.starts_with("test") && splits.held_out.is_none() {
                splits.held_out = Some(split.clone());
            } else {
                continue;
            }
            splits.files.insert(split, (file, answers));
        }
        // `train…` before `val…`, whatever the names sort to.
        splits
            .training
            .sort_by_key(|s| (!s.starts_with("train"), s.clone()));
        Ok(splits)
    }

    /// Questions and answers of one read split; images `{split}/COCO_{split}_{id:012}.jpg` under
    /// `image_root`.
    fn read_split(
        &self,
        split: &str,
        image_root: &Path,
        problems: &mut Problems,
    ) -> Result<Vec<VqaRecord>, DataError> {
        let (questions, answers) = &self.files[split];
        read_vqa(
            questions,
            Some(answers),
            &image_root.join(split),
            &format!("COCO_{split}_"),
            problems,
        )
    }
}

/// The VQAv2 records a run reads.
#[derive(Debug, Clone)]
pub struct VqaFolder {
    /// The splits read.
    pub splits: VqaSplits,
    /// Training questions (every training split, in order).
    pub training: Vec<VqaRecord>,
    /// Held-out questions (empty without a held-out split).
    pub held_out: Vec<VqaRecord>,
    /// Where they were read from (as messages name it).
    pub source: String,
}

impl VqaFolder {
    /// Reads the training and held-out splits of `source`.
    pub fn read(source: &DataSource, problems: &mut Problems) -> Result<Self, DataError> {
        let (splits, image_root) = match source.given() {
            Some(files) => (VqaSplits::from_files(files)?, source.image_root(&files[0])),
            None => {
                let dir = source.dir()?;
                (VqaSplits::find(dir)?, source.folder_images(dir))
            }
        };
        let mut training = Vec::new();
        for split in &splits.training {
            training.extend(splits.read_split(split, &image_root, problems)?);
        }
        let held_out = match &splits.held_out {
            Some(split) => splits.read_split(split, &image_root, problems)?,
            None => Vec::new(),
        };
        Ok(Self {
            splits,
            training,
            held_out,
            source: source.describe(),
        })
    }

    /// The answer vocabulary a run trains with: answers seen at least `min_count` times in the
    /// training questions.
    pub fn vocabulary(&self, min_count: usize) -> AnswerVocab {
        training_answer_vocab(&self.training, min_count)
    }

    /// Why the training questions give no answer vocabulary at `min_count` (`None` when they
    /// give one): the threshold, the most frequent answer's count and the setting to change.
    pub fn empty_vocabulary(&self, min_count: usize) -> Option<String> {
        if !self.vocabulary(min_count).is_empty() || self.training.is_empty() {
            return None;
        }
        let most = AnswerVocab::build(&self.training, 1)
            .answers
            .first()
            .map(|a| {
                let n = self.training.iter().filter(|r| &r.answer == a).count();
                format!("the most frequent answer, `{a}`, occurs {n} time(s)")
            })
            .unwrap_or_else(|| "no training question has an answer".into());
        Some(format!(
            "the answer vocabulary is empty: no answer occurs at least {min_count} times (the \
             minimum answer count) in the {} training questions of {} ({most}); lower it with \
             `vqa_min_answer_count` in the run configuration (`--min-answer-count` for data check)",
            self.training.len(),
            self.source
        ))
    }

    /// What a training run needs and the source lacks: the training splits, the held-out
    /// split, or both (empty when nothing is missing).
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if self.splits.training.is_empty() {
            missing.push(format!(
                "no VQAv2 training split (train…/val… questions with annotations) in {}",
                self.source
            ));
        }
        missing.extend(self.missing_held_out());
        missing
    }

    /// What evaluation needs and the source lacks: a held-out split, if there is none.
    pub fn missing_held_out(&self) -> Option<String> {
        self.splits.held_out.is_none().then(|| {
            format!(
                "no held-out VQAv2 split (test… questions with annotations) in {}",
                self.source
            )
        })
    }
}

/// The answer vocabulary of training records: normalised answers seen at least `min_count`
/// times ([`crate::vqa::DEFAULT_MIN_ANSWER_COUNT`], 9, in FIBER).
pub(crate) fn training_answer_vocab(training: &[VqaRecord], min_count: usize) -> AnswerVocab {
    AnswerVocab::build(training, min_count.max(1))
}

/// The NLVR2 folder of a data folder: `nlvr2/` when it holds `train.json`, else the folder.
pub(crate) fn nlvr2_root(dir: &Path) -> PathBuf {
    let sub = dir.join("nlvr2");
    if sub.join("train.json").exists() {
        sub
    } else {
        dir.to_path_buf()
    }
}

/// The NLVR2 statements a run reads.
#[derive(Debug, Clone)]
pub struct Nlvr2Folder {
    /// Where they were read from (as messages name it).
    pub source: String,
    /// `train.json`, when present.
    pub training: Option<Vec<Nlvr2Record>>,
    /// The held-out split (`test1`, else `dev`) and its statements, when present.
    pub held_out: Option<(String, Vec<Nlvr2Record>)>,
}

impl Nlvr2Folder {
    /// Reads the training and held-out splits of `source`: the `<split>.json` files given
    /// (images under `--images/<split>/`), or those of the data folder (`nlvr2/` when it holds `train.json`, else the folder;
    /// images under `images/<split>/` beside them, or `--images/<split>/`).
    pub fn read(source: &DataSource, problems: &mut Problems) -> Result<Self, DataError> {
        // Each split's statements file and the folder of its images.
        let files: BTreeMap<String, (PathBuf, PathBuf)> = match source.given() {
            Some(given) => given
                .iter()
                .map(|file| {
                    let split = file
                        .file_stem()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    let images = match &source.images {
                        Some(dir) => dir.clone(),
                        None => file.parent().unwrap_or(Path::new("")).join("images"),
                    };
                    (split.to_string(), (file.clone(), images.join(split)))
                })
                .collect(),
            None => {
                let root = nlvr2_root(source.dir()?);
                let images = source.images.clone().unwrap_or(root.join("images"));
                ["train", "test1", "dev"]
                    .into_iter()
                    .map(|s| {
                        (
                            s.to_string(),
                            (root.join(format!("{s}.json")), images.join(s)),
                        )
                    })
                    .filter(|(_, (file, _))| file.exists())
                    .collect()
            }
        };
        let mut read = |split: &str| -> Result<Option<Vec<Nlvr2Record>>, DataError> {
            match files.get(split) {
                Some((file, images)) => Ok(Some(read_nlvr2(file, images, problems)?)),
                None => Ok(None),
            }
        };
        let training = read("train")?;
        let held_out = match ["test1", "dev"]
            .into_iter()
            .find(|s| files.contains_key(*s))
        {
            Some(split) => read(split)?.map(|r| (split.to_string(), r)),
            None => None,
        };
        if training.is_none() && held_out.is_none() {
            return Err(missing(match source.given() {
                Some(_) => format!(
                    "no NLVR2 train.json, test1.json or dev.json among {}",
                    source.describe()
                ),
                None => {
                    let dir = source.dir()?;
                    format!(
                        "no NLVR2 train.json, test1.json or dev.json in {} or {}",
                        dir.display(),
                        dir.join("nlvr2").display()
                    )
                }
            }));
        }
        Ok(Self {
            source: source.describe(),
            training,
            held_out,
        })
    }

    /// The files a training run needs and the source lacks (empty when nothing is missing).
    pub fn missing(&self) -> Vec<String> {
        let source = &self.source;
        let mut missing = Vec::new();
        if self.training.is_none() {
            missing.push(format!("no NLVR2 train.json in {source}"));
        }
        if self.held_out.is_none() {
            missing.push(format!("no NLVR2 test1.json or dev.json in {source}"));
        }
        missing
    }

    /// The training and held-out statements, or an error naming the missing files.
    pub fn into_splits(self) -> Result<(Vec<Nlvr2Record>, Vec<Nlvr2Record>), DataError> {
        let lacking = self.missing();
        match (self.training, self.held_out) {
            (Some(training), Some((_, held_out))) => Ok((training, held_out)),
            _ => Err(missing(lacking.join("; "))),
        }
    }
}

/// Every MDETR grounding file of the source: the files given, or the folder's
/// `mdetr_annotations/final_*.json` (or `final_*.json` in the folder itself); image
/// `file_name`s resolve under `--images`, else the folder.
pub fn read_mdetr_source(
    source: &DataSource,
    problems: &mut Problems,
) -> Result<Vec<GroundingRecord>, DataError> {
    let (files, image_root) = match source.given() {
        Some(files) => (files.to_vec(), source.image_root(&files[0])),
        None => {
            let dir = source.dir()?;
            let sub = dir.join("mdetr_annotations");
            let folder = if sub.is_dir() { sub } else { dir.to_path_buf() };
            let files = files_matching(&folder, "final_", ".json")?;
            if files.is_empty() {
                return Err(missing(format!(
                    "no mdetr_annotations/final_*.json (or final_*.json) in {}",
                    dir.display()
                )));
            }
            (files, source.folder_images(dir))
        }
    };
    let mut records = Vec::new();
    for file in files {
        records.extend(read_mdetr(&file, &image_root, problems)?);
    }
    Ok(records)
}

/// The COCO detection files of the source: the files given (images under `--images`), or every
/// `annotations/instances_<name>.json` of the folder (images under `<name>/`).
pub fn read_coco_detection_source(
    source: &DataSource,
    problems: &mut Problems,
) -> Result<Vec<DetectionDataset>, DataError> {
    if let Some(files) = source.given() {
        return files
            .iter()
            .map(|file| read_coco_detection(file, &source.image_root(file), problems))
            .collect();
    }
    let dir = source.dir()?;
    let files = files_matching(&dir.join("annotations"), "instances_", ".json")?;
    if files.is_empty() {
        return Err(missing(format!(
            "no annotations/instances_*.json in {}",
            dir.display()
        )));
    }
    let images = source.folder_images(dir);
    files
        .iter()
        .map(|file| {
            let name = infix(file, "instances_", ".json").unwrap_or_default();
            read_coco_detection(file, &images.join(name), problems)
        })
        .collect()
}

/// The grounded data of the fine-grained stage, split into training and held-out parts.
#[derive(Debug, Default)]
pub struct GroundingSplits {
    /// MDETR records trained on (files whose name contains `train`).
    pub train: Vec<GroundingRecord>,
    /// COCO-format detection datasets trained on (their images become GLIP prompts).
    pub detection_train: Vec<DetectionDataset>,
    /// Held-out MDETR records (the `test` files, else the `val` files).
    pub held_out: Vec<GroundingRecord>,
    /// The held-out detection file and its dataset (`instances_test.json`, else
    /// `instances_val.json`), for COCO mAP.
    pub detection_held_out: Option<(PathBuf, DetectionDataset)>,
}

/// Whether a file belongs to the training part (its name contains `train`).
fn is_training_file(file: &Path) -> bool {
    file.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains("train"))
}

/// The held-out files among `files`: those naming `test`, else those naming `val`.
fn held_out_files(files: &[PathBuf]) -> Vec<PathBuf> {
    let named = |word: &str| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|f| {
                !is_training_file(f)
                    && f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.contains(word))
            })
            .cloned()
            .collect()
    };
    let test = named("test");
    if test.is_empty() {
        named("val")
    } else {
        test
    }
}

impl GroundingSplits {
    /// Reads the fine-grained stage's data: from a folder, `mdetr_annotations/final_*.json`
    /// and `annotations/instances_*.json` (either may be absent, not both); from files given
    /// one by one, MDETR files are those named `final_*` (their published names) and every
    /// other file is COCO-format detection (COCO, Objects365, LVIS). Files whose name contains
    /// `train` are trained on; the others are held out (`test` before `val`).
    pub fn read(source: &DataSource, problems: &mut Problems) -> Result<Self, DataError> {
        let (mdetr, detection, mdetr_images, detection_images): (
            Vec<PathBuf>,
            Vec<PathBuf>,
            Box<dyn Fn(&Path) -> PathBuf>,
            Box<dyn Fn(&Path) -> PathBuf>,
        ) = match source.given() {
            Some(files) => {
                let (mdetr, detection): (Vec<PathBuf>, Vec<PathBuf>) =
                    files.iter().cloned().partition(|f| {
                        f.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("final_"))
                    });
                let a = source.clone();
                let b = source.clone();
                (
                    mdetr,
                    detection,
                    Box::new(move |f| a.image_root(f)),
                    Box::new(move |f| b.image_root(f)),
                )
            }
            None => {
                let dir = source.dir()?.to_path_buf();
                let sub = dir.join("mdetr_annotations");
                let mdetr_dir = if sub.is_dir() { sub } else { dir.clone() };
                let mdetr = files_matching(&mdetr_dir, "final_", ".json")?;
                let annotations = dir.join("annotations");
                let detection = if annotations.is_dir() {
                    files_matching(&annotations, "instances_", ".json")?
                } else {
                    Vec::new()
                };
                let images = source.folder_images(&dir);
                let coco_images = images.clone();
                (
                    mdetr,
                    detection,
                    Box::new(move |_| images.clone()),
                    Box::new(move |f| {
                        coco_images.join(infix(f, "instances_", ".json").unwrap_or_default())
                    }),
                )
            }
        };
        if mdetr.is_empty() && detection.is_empty() {
            return Err(missing(
                "no grounding data: MDETR mdetr_annotations/final_*.json or COCO-format annotations/instances_*.json"
                    .into(),
            ));
        }
        let mut splits = Self::default();
        for file in mdetr.iter().filter(|f| is_training_file(f)) {
            splits
                .train
                .extend(read_mdetr(file, &mdetr_images(file), problems)?);
        }
        for file in held_out_files(&mdetr) {
            splits
                .held_out
                .extend(read_mdetr(&file, &mdetr_images(&file), problems)?);
        }
        for file in detection.iter().filter(|f| is_training_file(f)) {
            splits.detection_train.push(read_coco_detection(
                file,
                &detection_images(file),
                problems,
            )?);
        }
        if let Some(file) = held_out_files(&detection).into_iter().next() {
            let dataset = read_coco_detection(&file, &detection_images(&file), problems)?;
            splits.detection_held_out = Some((file, dataset));
        }
        if splits.train.is_empty() && splits.detection_train.iter().all(|d| d.images.is_empty()) {
            return Err(missing(
                "no training file among the grounding data (a name containing `train`)".into(),
            ));
        }
        Ok(splits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), "[]").unwrap();
    }

    #[test]
    fn vqa_splits_train_on_train_and_val_and_hold_out_the_first_answered_test() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for split in ["val2014", "train2014", "test", "test-dev2015"] {
            touch(d, &format!("v2_OpenEnded_mscoco_{split}_questions.json"));
        }
        for split in ["val2014", "train2014", "test"] {
            touch(d, &format!("v2_mscoco_{split}_annotations.json"));
        }
        let splits = VqaSplits::find(d).unwrap();
        assert_eq!(splits.training, vec!["train2014", "val2014"]);
        assert_eq!(splits.held_out.as_deref(), Some("test"));
        assert_eq!(splits.unanswered, vec!["test-dev2015"]);
        let e = VqaSplits::find(&d.join("nowhere")).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }

    #[test]
    fn nlvr2_reads_the_subfolder_only_when_it_holds_training_statements() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("nlvr2")).unwrap();
        assert_eq!(nlvr2_root(d), d);
        touch(&d.join("nlvr2"), "train.json");
        assert_eq!(nlvr2_root(d), d.join("nlvr2"));
        let e = Nlvr2Folder::read(
            &DataSource::folder(d.join("nlvr2").join("x")),
            &mut Problems::default(),
        );
        assert!(e.is_err());
    }
}
