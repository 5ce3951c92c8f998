//! COCO box mAP (docs/model.md §5.6): the twelve COCOeval statistics of a detections file
//! against a COCO ground truth, computed by the pycocotools-compatible `hotcoco` crate.

use std::path::Path;

use hotcoco::params::IouType;
use hotcoco::{COCOeval, COCO};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The twelve COCOeval bbox statistics, in COCOeval's order (−1 where a range has no ground
/// truth, as pycocotools reports it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CocoBoxStats {
    /// AP at IoU 0.50:0.95, all areas, 100 detections.
    pub ap: f64,
    /// AP at IoU 0.50.
    pub ap50: f64,
    /// AP at IoU 0.75.
    pub ap75: f64,
    /// AP of small boxes (area < 32²).
    pub aps: f64,
    /// AP of medium boxes (32² … 96²).
    pub apm: f64,
    /// AP of large boxes (> 96²).
    pub apl: f64,
    /// AR with 1 detection per image.
    pub ar1: f64,
    /// AR with 10 detections per image.
    pub ar10: f64,
    /// AR with 100 detections per image.
    pub ar100: f64,
    /// AR of small boxes.
    pub ars: f64,
    /// AR of medium boxes.
    pub arm: f64,
    /// AR of large boxes.
    pub arl: f64,
}

fn coco_error(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Eval(format!("{}: {e}", path.display()))
}

impl CocoBoxStats {
    /// Scores a COCO results file (a JSON list of `{image_id, category_id, bbox: [x, y, w, h],
    /// score}`) against a COCO instances file.
    pub fn evaluate_files(ground_truth: &Path, detections: &Path) -> Result<Self, TrainError> {
        for path in [ground_truth, detections] {
            if !path.exists() {
                return Err(coco_error(path, "no such file"));
            }
        }
        let gt = COCO::new(ground_truth).map_err(|e| coco_error(ground_truth, e))?;
        let dt = gt
            .load_res(detections)
            .map_err(|e| coco_error(detections, e))?;
        Self::evaluate(gt, dt)
    }

    /// Scores loaded detections against a loaded ground truth.
    pub fn evaluate(ground_truth: COCO, detections: COCO) -> Result<Self, TrainError> {
        let mut eval = COCOeval::new(ground_truth, detections, IouType::Bbox);
        eval.evaluate()
            .map_err(|e| TrainError::Eval(format!("COCO evaluation: {e}")))?;
        eval.accumulate();
        eval.summarize_lines();
        let stats = eval
            .stats()
            .ok_or_else(|| TrainError::Eval("COCO evaluation produced no statistics".into()))?;
        let [ap, ap50, ap75, aps, apm, apl, ar1, ar10, ar100, ars, arm, arl] =
            <[f64; 12]>::try_from(stats).map_err(|_| {
                TrainError::Eval(format!("expected 12 COCO statistics, got {}", stats.len()))
            })?;
        Ok(Self {
            ap,
            ap50,
            ap75,
            aps,
            apm,
            apl,
            ar1,
            ar10,
            ar100,
            ars,
            arm,
            arl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/coco_eval")
    }

    #[test]
    fn the_twelve_statistics_equal_pycocotools() {
        let stats = CocoBoxStats::evaluate_files(
            &fixtures().join("instances.json"),
            &fixtures().join("detections.json"),
        )
        .unwrap();
        let expected: CocoBoxStats =
            fiber_core::json::read_json(&fixtures().join("expected_stats.json")).unwrap();
        let ours = serde_json::to_value(stats).unwrap();
        let theirs = serde_json::to_value(expected).unwrap();
        for (key, value) in theirs.as_object().unwrap() {
            let (a, e) = (ours[key].as_f64().unwrap(), value.as_f64().unwrap());
            assert!(
                (a - e).abs() <= 1e-12,
                "{key}: {a} against pycocotools' {e}"
            );
        }
        assert!(stats.ap > 0.2 && stats.ap50 > stats.ap75);
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let missing = fixtures().join("no-such.json");
        let err = CocoBoxStats::evaluate_files(&missing, &fixtures().join("detections.json"))
            .unwrap_err();
        assert!(err.to_string().contains("no-such.json"), "{err}");
        let bad = std::env::temp_dir().join(format!("fiber-bad-dets-{}.json", std::process::id()));
        std::fs::write(&bad, "[{\"image_id\": 1, \"bbox\": ").unwrap();
        let err =
            CocoBoxStats::evaluate_files(&fixtures().join("instances.json"), &bad).unwrap_err();
        assert!(err.to_string().contains("fiber-bad-dets"), "{err}");
        std::fs::remove_file(bad).unwrap();
    }
}
