//! Checkpoints of a run: one folder per saved step (`step-000123/`, holding e.g.
//! `model.safetensors`, `optimizer.safetensors` and `trainer.json`), written into a temporary
//! folder and renamed into place, so a run killed at any moment leaves only complete checkpoints.
//! The last `keep` checkpoints are kept; `latest` finds the newest complete one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::TrainError;

/// The checkpoint folder of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDir {
    /// Where the `step-*` folders live.
    pub root: PathBuf,
    /// How many checkpoints to keep (at least 1).
    pub keep: usize,
}

const PREFIX: &str = "step-";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl CheckpointDir {
    /// Checkpoints under `root`, keeping the last `keep`.
    pub fn new(root: impl Into<PathBuf>, keep: usize) -> Self {
        Self {
            root: root.into(),
            keep: keep.max(1),
        }
    }

    /// The folder of step `step`.
    pub fn path_of(&self, step: u64) -> PathBuf {
        self.root.join(format!("{PREFIX}{step:06}"))
    }

    /// Writes the checkpoint of `step` (file name → bytes) atomically and removes checkpoints
    /// beyond the last `keep`. Returns its folder.
    pub fn save(&self, step: u64, files: &[(&str, Vec<u8>)]) -> Result<PathBuf, TrainError> {
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let target = self.path_of(step);
        let staging = self
            .root
            .join(format!(".{PREFIX}{step:06}.partial-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        fs::create_dir_all(&staging).map_err(io(&staging))?;
        for (name, bytes) in files {
            let path = staging.join(name);
            let mut file = fs::File::create(&path).map_err(io(&path))?;
            file.write_all(bytes).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        if target.exists() {
            fs::remove_dir_all(&target).map_err(io(&target))?;
        }
        fs::rename(&staging, &target).map_err(io(&target))?;
        if let Ok(dir) = fs::File::open(&self.root) {
            let _ = dir.sync_all();
        }
        let steps = self.steps()?;
        for old in steps.iter().rev().skip(self.keep) {
            let path = self.path_of(*old);
            fs::remove_dir_all(&path).map_err(io(&path))?;
        }
        Ok(target)
    }

    /// The steps of the complete checkpoints, ascending (temporary folders are ignored).
    pub fn steps(&self) -> Result<Vec<u64>, TrainError> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let mut steps: Vec<u64> = fs::read_dir(&self.root)
            .map_err(io(&self.root))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix(PREFIX))
                    .and_then(|s| s.parse().ok())
            })
            .collect();
        steps.sort_unstable();
        Ok(steps)
    }

    /// The newest complete checkpoint, if any.
    pub fn latest(&self) -> Result<Option<(u64, PathBuf)>, TrainError> {
        Ok(self.steps()?.last().map(|&s| (s, self.path_of(s))))
    }

    /// Reads file `name` of a checkpoint folder.
    pub fn read(folder: &Path, name: &str) -> Result<Vec<u8>, TrainError> {
        let path = folder.join(name);
        fs::read(&path).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_land_whole_and_only_the_last_ones_are_kept() {
        let tmp = std::env::temp_dir().join(format!("fiber-ckpt-{}", std::process::id()));
        let dir = CheckpointDir::new(&tmp, 2);
        assert_eq!(dir.latest().unwrap(), None);
        for step in [10, 20, 30] {
            dir.save(
                step,
                &[
                    ("a.bin", vec![step as u8; 4]),
                    ("trainer.json", b"{}".to_vec()),
                ],
            )
            .unwrap();
        }
        assert_eq!(dir.steps().unwrap(), vec![20, 30]);
        let (step, folder) = dir.latest().unwrap().unwrap();
        assert_eq!(step, 30);
        assert_eq!(CheckpointDir::read(&folder, "a.bin").unwrap(), vec![30; 4]);
        // A half-written checkpoint (a run killed while saving) is not a checkpoint.
        fs::create_dir_all(tmp.join(".step-000040.partial-1")).unwrap();
        assert_eq!(dir.latest().unwrap().unwrap().0, 30);
        let missing = CheckpointDir::read(&folder, "nope.bin").unwrap_err();
        assert!(missing.to_string().contains("nope.bin"), "{missing}");
        fs::remove_dir_all(&tmp).unwrap();
    }
}
