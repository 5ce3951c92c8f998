//! The metrics log of a run (`metrics.jsonl`: one JSON object per optimiser step) and the loss
//! curves drawn from it (`loss.svg`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// One logged step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Stage name.
    pub stage: String,
    /// Step number after the update (1-based).
    pub step: u64,
    /// Learning rate of the step.
    pub lr: f64,
    /// Loss (mean over micro-batches).
    pub loss: f64,
    /// Named parts of the loss.
    #[serde(default)]
    pub parts: std::collections::BTreeMap<String, f64>,
    /// Global gradient norm before clipping; `None` (JSON `null`) for a step that was skipped
    /// because its loss-scaled gradients overflowed.
    pub grad_norm: Option<f64>,
    /// Seconds since this process started the stage.
    pub seconds: f64,
}

/// An append-only JSONL log, flushed after every line.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl MetricsLog {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one step.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        stage: &str,
        step: u64,
        lr: f64,
        loss: f64,
        parts: &[(&'static str, f64)],
        grad_norm: Option<f64>,
        seconds: f64,
    ) -> Result<(), TrainError> {
        let record = StepRecord {
            stage: stage.to_string(),
            step,
            lr,
            loss,
            parts: parts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            grad_norm,
            seconds,
        };
        let line = serde_json::to_string(&record).expect("a step record serialises");
        writeln!(self.file, "{line}").map_err(io(&self.path))?;
        self.file.flush().map_err(io(&self.path))
    }

    /// Drops the lines of `stage` after `step` (a resumed run logs those steps again).
    pub fn truncate_stage(&mut self, stage: &str, step: u64) -> Result<(), TrainError> {
        let kept: Vec<String> = read_lines(&self.path)?
            .into_iter()
            .filter(|line| {
                serde_json::from_str::<StepRecord>(line)
                    .map(|r| r.stage != stage || r.step <= step)
                    .unwrap_or(false)
            })
            .collect();
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        fiber_core::store::write_atomically(&self.path, text.as_bytes())?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        Ok(())
    }

    /// Every record in the log (lines that do not parse are skipped).
    pub fn records(&self) -> Result<Vec<StepRecord>, TrainError> {
        read_records(&self.path)
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>, TrainError> {
    let file = File::open(path).map_err(io(path))?;
    BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(io(path))
}

/// Reads a metrics log.
pub fn read_records(path: &Path) -> Result<Vec<StepRecord>, TrainError> {
    Ok(read_lines(path)?
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The loss curves of every stage as an SVG document: one panel per stage with the total and
/// each named part (e.g. `itc`, `itm`, `mlm`; `grounding`, `giou`, `centerness`), log-scaled.
pub fn loss_svg(records: &[StepRecord]) -> String {
    const COLOURS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"];
    let mut stages: Vec<&str> = Vec::new();
    for r in records {
        if !stages.contains(&r.stage.as_str()) {
            stages.push(&r.stage);
        }
    }
    let (panel_w, panel_h, margin) = (360.0, 220.0, 40.0);
    let width = stages.len().max(1) as f64 * (panel_w + margin) + margin;
    let height = panel_h + 2.0 * margin + 14.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, stage) in stages.iter().enumerate() {
        let of_stage: Vec<&StepRecord> = records.iter().filter(|r| r.stage == *stage).collect();
        // The total first, then each named part, each as (name, points in log10).
        let mut names: Vec<&str> = vec!["loss"];
        for r in &of_stage {
            for name in r.parts.keys() {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        let series: Vec<(&str, Vec<(f64, f64)>)> = names
            .iter()
            .map(|&name| {
                let points = of_stage
                    .iter()
                    .filter_map(|r| {
                        let value = if name == "loss" {
                            Some(r.loss)
                        } else {
                            r.parts.get(name).copied()
                        };
                        value
                            .filter(|v| *v > 0.0)
                            .map(|v| (r.step as f64, v.log10()))
                    })
                    .collect();
                (name, points)
            })
            .collect();
        let x0 = margin + i as f64 * (panel_w + margin);
        let y0 = margin;
        svg.push_str(&format!("<rect x=\"{x0}\" y=\"{y0}\" width=\"{panel_w}\" height=\"{panel_h}\" fill=\"none\" stroke=\"#888\"/>\n"));
        svg.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{stage}: losses (log scale) by step</text>\n", x0 + panel_w / 2.0, y0 - 8.0));
        let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        if all.is_empty() {
            continue;
        }
        let (min_x, max_x) = all
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (min_y, max_y) = all
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let sx = |x: f64| x0 + (x - min_x) / (max_x - min_x).max(1e-9) * panel_w;
        let sy = |y: f64| y0 + panel_h - (y - min_y) / (max_y - min_y).max(1e-9) * panel_h;
        let mut legend_x = x0;
        for (k, (name, points)) in series.iter().enumerate() {
            if points.is_empty() {
                continue;
            }
            let colour = COLOURS[k % COLOURS.len()];
            let path: Vec<String> = points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let width = if k == 0 { 1.6 } else { 1.0 };
            svg.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" points=\"{}\"/>\n",
                path.join(" ")
            ));
            svg.push_str(&format!(
                "<text x=\"{legend_x}\" y=\"{}\" fill=\"{colour}\">{name}</text>\n",
                y0 + panel_h + 28.0
            ));
            legend_x += 8.0 * name.len() as f64 + 14.0;
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\">{:.3}</text>\n",
            x0 + 2.0,
            y0 + 12.0,
            10f64.powf(max_y)
        ));
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\">{:.3}</text>\n",
            x0 + 2.0,
            y0 + panel_h - 4.0,
            10f64.powf(min_y)
        ));
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">step {}</text>\n",
            x0 + panel_w,
            y0 + panel_h + 14.0,
            max_x
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_appends_truncates_a_stage_and_draws() {
        let dir = std::env::temp_dir().join(format!("fiber-log-{}", std::process::id()));
        let path = dir.join("metrics.jsonl");
        let mut log = MetricsLog::open(&path).unwrap();
        for step in 1..=5 {
            log.record(
                "pretrain",
                step,
                1e-3,
                1.0 / step as f64,
                &[("itc", 0.5)],
                Some(1.0),
                step as f64,
            )
            .unwrap();
        }
        // A skipped step (no gradient norm) survives the truncation like any other.
        log.record("vqa", 1, 1e-3, 2.0, &[], None, 1.0).unwrap();
        log.truncate_stage("pretrain", 3).unwrap();
        log.record("pretrain", 4, 1e-3, 0.25, &[], Some(1.0), 4.0)
            .unwrap();
        let records = log.records().unwrap();
        let steps: Vec<(String, u64)> = records.iter().map(|r| (r.stage.clone(), r.step)).collect();
        assert_eq!(
            steps,
            vec![
                ("pretrain".into(), 1),
                ("pretrain".into(), 2),
                ("pretrain".into(), 3),
                ("vqa".into(), 1),
                ("pretrain".into(), 4)
            ]
        );
        assert_eq!(records[0].parts["itc"], 0.5);
        assert_eq!(records[3].grad_norm, None);
        let svg = loss_svg(&records);
        assert!(svg.starts_with("<svg") && svg.contains("pretrain") && svg.contains("polyline"));
        // The named parts are drawn with the total, each with its legend entry.
        assert!(svg.contains(">itc</text>") && svg.contains(">loss</text>"));
        assert_eq!(
            svg.matches("<polyline").count(),
            3,
            "pretrain loss and itc, vqa loss"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
