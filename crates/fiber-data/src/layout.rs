//! Where each dataset format keeps its files inside a data folder (`--data DIR`), and which of
//! them a run reads. Training, evaluation and `cargo xtask data check` all read folders through
//! this module, so a check reports exactly what training of that format will read.
//!
//! | format | files | images |
//! |---|---|---|
//! | Karpathy | the first `dataset_*.json` (by name) | `filepath/filename` under the folder |
//! | COCO captions | `annotations/captions_<name>.json` | under `<name>/` |
//! | VQAv2 | `v2_OpenEnded_mscoco_<split>_questions.json` + `v2_mscoco_<split>_annotations.json` | `<split>/COCO_<split>_<id:012>.jpg` |
//! | NLVR2 | `{train,test1,dev}.json` in `nlvr2/` or in the folder | `images/<split>/…` beside them |
//! | MDETR | `mdetr_annotations/final_*.json` (or `final_*.json`) | `file_name` under the folder |
//! | COCO detection | `annotations/instances_<name>.json` | under `<name>/` |
//!
//! VQAv2 splits whose name starts with `train` or `val` are trained on (train + val, as FIBER
//! does; docs/model.md §4.1), in name order; the first split starting with `test` that has an
//! annotations file is held out. NLVR2 trains on `train` and holds out `test1`, else `dev`.

use std::path::{Path, PathBuf};

use crate::captions::{read_coco_captions, read_karpathy, CaptionDataset, Split};
use crate::error::DataError;
use crate::grounding::{read_coco_detection, read_mdetr, DetectionDataset, GroundingRecord};
use crate::nlvr2::{read_nlvr2, Nlvr2Record};
use crate::problem::Problems;
use crate::vqa::{read_vqa, AnswerVocab, VqaRecord, DEFAULT_MIN_ANSWER_COUNT};

/// The files of `dir` whose names start with `prefix` and end with `suffix`, sorted by name.
pub fn files_matching(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<PathBuf>, DataError> {
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

/// The part of a file name between `prefix` and `suffix`.
fn infix<'a>(path: &'a Path, prefix: &str, suffix: &str) -> &'a str {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.strip_prefix(prefix)
        .and_then(|n| n.strip_suffix(suffix))
        .unwrap_or_default()
}

/// The Karpathy split file of a folder: the first `dataset_*.json` by name.
pub fn karpathy_file(dir: &Path) -> Result<PathBuf, DataError> {
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

/// Every caption of the folder's Karpathy file (all splits; [`CaptionDataset::split`] selects).
pub fn read_karpathy_folder(
    dir: &Path,
    problems: &mut Problems,
) -> Result<CaptionDataset, DataError> {
    read_karpathy(&karpathy_file(dir)?, dir, problems)
}

/// Karpathy captions as training uses them: the training and the test split.
pub fn read_caption_splits(
    dir: &Path,
    problems: &mut Problems,
) -> Result<(CaptionDataset, CaptionDataset), DataError> {
    let captions = read_karpathy_folder(dir, problems)?;
    Ok((captions.split(Split::Train), captions.split(Split::Test)))
}

/// Every `annotations/captions_<name>.json` of a folder, with images under `<name>/`; the split
/// is guessed from the name (`train…`, `test…`, else validation).
pub fn read_coco_captions_folder(
    dir: &Path,
    problems: &mut Problems,
) -> Result<Vec<CaptionDataset>, DataError> {
    let files = files_matching(&dir.join("annotations"), "captions_", ".json")?;
    if files.is_empty() {
        return Err(missing(format!(
            "no annotations/captions_*.json in {}",
            dir.display()
        )));
    }
    files
        .iter()
        .map(|file| {
            let name = infix(file, "captions_", ".json");
            let split = if name.contains("train") {
                Split::Train
            } else if name.contains("test") {
                Split::Test
            } else {
                Split::Val
            };
            read_coco_captions(file, &dir.join(name), split, problems)
        })
        .collect()
}

/// The VQAv2 questions file of `split`.
pub fn vqa_questions_file(dir: &Path, split: &str) -> PathBuf {
    dir.join(format!("v2_OpenEnded_mscoco_{split}_questions.json"))
}

/// The VQAv2 annotations (answers) file of `split`.
pub fn vqa_annotations_file(dir: &Path, split: &str) -> PathBuf {
    dir.join(format!("v2_mscoco_{split}_annotations.json"))
}

/// Questions and answers of one VQAv2 split; images `{split}/COCO_{split}_{id:012}.jpg`.
pub fn read_vqa_split(
    dir: &Path,
    split: &str,
    problems: &mut Problems,
) -> Result<Vec<VqaRecord>, DataError> {
    read_vqa(
        &vqa_questions_file(dir, split),
        Some(&vqa_annotations_file(dir, split)),
        &dir.join(split),
        &format!("COCO_{split}_"),
        problems,
    )
}

/// Which VQAv2 splits of a folder a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VqaSplits {
    /// Trained on, in this order (`train…`, `val…` with annotations).
    pub training: Vec<String>,
    /// Held out for evaluation (the first `test…` split with annotations).
    pub held_out: Option<String>,
    /// Question files that are not read because their annotations are missing.
    pub unanswered: Vec<String>,
}

impl VqaSplits {
    /// The splits found in `dir`.
    pub fn find(dir: &Path) -> Result<Self, DataError> {
        let (prefix, suffix) = ("v2_OpenEnded_mscoco_", "_questions.json");
        let files = files_matching(dir, prefix, suffix)?;
        if files.is_empty() {
            return Err(missing(format!(
                "no v2_OpenEnded_mscoco_<split>_questions.json in {}",
                dir.display()
            )));
        }
        let mut splits = Self {
            training: Vec::new(),
            held_out: None,
            unanswered: Vec::new(),
        };
        for file in &files {
            let split = infix(file, prefix, suffix).to_string();
            if !vqa_annotations_file(dir, &split).exists() {
                splits.unanswered.push(split);
            } else if split.starts_with("train") || split.starts_with("val") {
                splits.training.push(split);
            } else if split.starts_with("test") && splits.held_out.is_none() {
                splits.held_out = Some(split);
            }
        }
        // `train…` before `val…`, whatever the names sort to.
        splits
            .training
            .sort_by_key(|s| (!s.starts_with("train"), s.clone()));
        Ok(splits)
    }
}

/// The VQAv2 records a run reads from a folder.
#[derive(Debug, Clone)]
pub struct VqaFolder {
    /// The splits read.
    pub splits: VqaSplits,
    /// Training questions (every training split, in order).
    pub training: Vec<VqaRecord>,
    /// Held-out questions (empty without a held-out split).
    pub held_out: Vec<VqaRecord>,
}

impl VqaFolder {
    /// Reads the training and held-out splits of `dir`.
    pub fn read(dir: &Path, problems: &mut Problems) -> Result<Self, DataError> {
        let splits = VqaSplits::find(dir)?;
        let mut training = Vec::new();
        for split in &splits.training {
            training.extend(read_vqa_split(dir, split, problems)?);
        }
        let held_out = match &splits.held_out {
            Some(split) => read_vqa_split(dir, split, problems)?,
            None => Vec::new(),
        };
        Ok(Self {
            splits,
            training,
            held_out,
        })
    }

    /// The answer vocabulary a run trains with (see [`training_answer_vocab`]).
    pub fn vocabulary(&self) -> AnswerVocab {
        training_answer_vocab(&self.training)
    }

    /// What a training run needs and the folder `dir` lacks: the training splits, the
    /// held-out split, or both (empty when nothing is missing).
    pub fn missing(&self, dir: &Path) -> Vec<String> {
        let mut missing = Vec::new();
        if self.splits.training.is_empty() {
            missing.push(format!(
                "no VQAv2 training split (train…/val… questions with annotations) in {}",
                dir.display()
            ));
        }
        missing.extend(self.missing_held_out(dir));
        missing
    }

    /// What evaluation needs and the folder `dir` lacks: a held-out split, if there is none.
    pub fn missing_held_out(&self, dir: &Path) -> Option<String> {
        self.splits.held_out.is_none().then(|| {
            format!(
                "no held-out VQAv2 split (test… questions with annotations) in {}",
                dir.display()
            )
        })
    }
}

/// The answer vocabulary of training records: normalised answers seen at least
/// [`DEFAULT_MIN_ANSWER_COUNT`] times (fewer when there are fewer questions, at least once).
pub fn training_answer_vocab(training: &[VqaRecord]) -> AnswerVocab {
    AnswerVocab::build(
        training,
        DEFAULT_MIN_ANSWER_COUNT.min(training.len()).max(1),
    )
}

/// The NLVR2 folder of a data folder: `nlvr2/` when it holds `train.json`, else the folder.
pub fn nlvr2_root(dir: &Path) -> PathBuf {
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
    /// The folder holding the JSONL files.
    pub root: PathBuf,
    /// `train.json`, when present.
    pub training: Option<Vec<Nlvr2Record>>,
    /// The held-out split (`test1`, else `dev`) and its statements, when present.
    pub held_out: Option<(String, Vec<Nlvr2Record>)>,
}

impl Nlvr2Folder {
    /// Reads the training and held-out splits of `dir` (see [`nlvr2_root`]).
    pub fn read(dir: &Path, problems: &mut Problems) -> Result<Self, DataError> {
        let root = nlvr2_root(dir);
        let file = |split: &str| root.join(format!("{split}.json"));
        let training = match file("train").exists() {
            true => Some(read_nlvr2(&file("train"), &root, "train", problems)?),
            false => None,
        };
        let held_out = match ["test1", "dev"].into_iter().find(|s| file(s).exists()) {
            Some(split) => Some((
                split.to_string(),
                read_nlvr2(&file(split), &root, split, problems)?,
            )),
            None => None,
        };
        if training.is_none() && held_out.is_none() {
            return Err(missing(format!(
                "no NLVR2 train.json, test1.json or dev.json in {} or {}",
                dir.display(),
                dir.join("nlvr2").display()
            )));
        }
        Ok(Self {
            root,
            training,
            held_out,
        })
    }

    /// The files a training run needs and the folder lacks (empty when nothing is missing).
    pub fn missing(&self) -> Vec<String> {
        let root = self.root.display();
        let mut missing = Vec::new();
        if self.training.is_none() {
            missing.push(format!("no NLVR2 train.json in {root}"));
        }
        if self.held_out.is_none() {
            missing.push(format!("no NLVR2 test1.json or dev.json in {root}"));
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

/// Every MDETR grounding file of a folder (`mdetr_annotations/final_*.json`, or `final_*.json`
/// in the folder itself); image `file_name`s resolve under the folder.
pub fn read_mdetr_folder(
    dir: &Path,
    problems: &mut Problems,
) -> Result<Vec<GroundingRecord>, DataError> {
    let sub = dir.join("mdetr_annotations");
    let folder = if sub.is_dir() { sub } else { dir.to_path_buf() };
    let files = files_matching(&folder, "final_", ".json")?;
    if files.is_empty() {
        return Err(missing(format!(
            "no mdetr_annotations/final_*.json (or final_*.json) in {}",
            dir.display()
        )));
    }
    let mut records = Vec::new();
    for file in files {
        records.extend(read_mdetr(&file, dir, problems)?);
    }
    Ok(records)
}

/// Every `annotations/instances_<name>.json` of a folder, with images under `<name>/`.
pub fn read_coco_detection_folder(
    dir: &Path,
    problems: &mut Problems,
) -> Result<Vec<DetectionDataset>, DataError> {
    let files = files_matching(&dir.join("annotations"), "instances_", ".json")?;
    if files.is_empty() {
        return Err(missing(format!(
            "no annotations/instances_*.json in {}",
            dir.display()
        )));
    }
    files
        .iter()
        .map(|file| {
            let name = infix(file, "instances_", ".json");
            read_coco_detection(file, &dir.join(name), problems)
        })
        .collect()
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
        let e = Nlvr2Folder::read(&d.join("nlvr2").join("x"), &mut Problems::default());
        assert!(e.is_err());
    }
}
