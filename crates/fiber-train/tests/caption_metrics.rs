//! BLEU and CIDEr-D against the coco-caption scorers (`scripts/caption_metric_fixtures.py`).

use fiber_train::metrics::{bleu, cider_d};

fn tokens(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[test]
fn bleu_and_cider_match_the_reference_scorers() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/metrics/caption_scores.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut ids: Vec<&String> = fixture["candidates"].as_object().unwrap().keys().collect();
    ids.sort();
    let candidates: Vec<Vec<String>> = ids
        .iter()
        .map(|id| tokens(fixture["candidates"][id.as_str()][0].as_str().unwrap()))
        .collect();
    let references: Vec<Vec<Vec<String>>> = ids
        .iter()
        .map(|id| {
            fixture["references"][id.as_str()]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| tokens(r.as_str().unwrap()))
                .collect()
        })
        .collect();
    let ours = bleu(&candidates, &references);
    for (k, expected) in fixture["bleu"].as_array().unwrap().iter().enumerate() {
        let expected = expected.as_f64().unwrap();
        assert!(
            (ours[k] - expected).abs() < 1e-9,
            "BLEU-{}: {} vs {expected}",
            k + 1,
            ours[k]
        );
    }
    let (score, per) = cider_d(&candidates, &references);
    let expected = fixture["cider"].as_f64().unwrap();
    assert!(
        (score - expected).abs() < 1e-9,
        "CIDEr-D {score} vs {expected}"
    );
    for (ours, theirs) in per
        .iter()
        .zip(fixture["cider_per_image"].as_array().unwrap())
    {
        assert!((ours - theirs.as_f64().unwrap()).abs() < 1e-9);
    }
}
