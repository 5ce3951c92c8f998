//! Property tests ("fuzzing") of everything that reads outside input: the JSON readers and the
//! image loader must return a result — data or an error — for any bytes, never panic. Inputs are
//! random bytes, valid files with bytes flipped or cut off, and random JSON records.

use std::path::{Path, PathBuf};

use fiber_data::grounding::{read_coco_detection, read_mdetr};
use fiber_data::image::load_rgb;
use fiber_data::nlvr2::read_nlvr2;
use fiber_data::vqa::read_vqa;
use fiber_data::{read_coco_captions, read_karpathy, Problems, Split};
use proptest::prelude::*;
use serde_json::Value;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/data")
        .join(path)
}

/// Runs every JSON reader on `file`; any outcome but a panic is fine.
fn read_with_every_reader(file: &Path, root: &Path) {
    let mut problems = Problems::default();
    let _ = read_karpathy(file, root, &mut problems);
    let _ = read_coco_captions(file, root, Split::Val, &mut problems);
    let _ = read_vqa(file, Some(file), root, "COCO_val2014_", &mut problems);
    let _ = read_mdetr(file, root, &mut problems);
    let _ = read_coco_detection(file, root, &mut problems);
    let _ = read_nlvr2(file, &root.join("images/dev"), &mut problems);
}

/// Cases per property: 64 in the test suite, more with `FIBER_FUZZ_CASES=N` for a longer run.
fn fuzz_cases() -> u32 {
    std::env::var("FIBER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        "[a-z ./]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "images",
                    "annotations",
                    "questions",
                    "categories",
                    "id",
                    "image_id",
                    "file_name",
                    "filename",
                    "filepath",
                    "caption",
                    "sentences",
                    "raw",
                    "split",
                    "bbox",
                    "tokens_positive",
                    "category_id",
                    "height",
                    "width",
                    "name",
                    "question",
                    "question_id",
                    "answers",
                    "answer",
                    "multiple_choice_answer",
                    "iscrowd",
                ])
                .prop_map(String::from),
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn mutate(bytes: &[u8], flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for &(at, value) in flips {
        if !out.is_empty() {
            let i = at % out.len();
            out[i] = value;
        }
    }
    out.truncate(cut.min(out.len()));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    #[test]
    fn json_readers_survive_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input.json");
        std::fs::write(&file, &bytes).unwrap();
        read_with_every_reader(&file, dir.path());
    }

    #[test]
    fn json_readers_survive_random_records(images in json_value(), annotations in json_value(), extra in json_value()) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input.json");
        let document = serde_json::json!({"images": [images], "annotations": [annotations], "questions": [extra.clone()], "categories": [extra]});
        std::fs::write(&file, document.to_string()).unwrap();
        read_with_every_reader(&file, dir.path());
    }

    #[test]
    fn json_readers_survive_damaged_real_files(which in 0usize..5, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4), cut in any::<usize>()) {
        let source = ["karpathy/dataset_coco.json", "coco-captions/annotations/captions_val2017.json", "vqa/v2_mscoco_val2014_annotations.json",
            "mdetr/mdetr_annotations/final_mixed_train.json", "coco-det/annotations/instances_val2017.json"][which];
        let bytes = std::fs::read(fixture(source)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input.json");
        std::fs::write(&file, mutate(&bytes, &flips, cut % (bytes.len() + 1))).unwrap();
        read_with_every_reader(&file, dir.path());
    }

    #[test]
    fn the_image_loader_survives_damaged_images(which in 0usize..3, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in any::<usize>()) {
        let source = ["karpathy/val2014/COCO_val2014_000000000001.jpg", "nlvr2/images/dev/dev-850-0-img0.png", "../image/photo.png"][which];
        let path = fixture(source);
        let bytes = std::fs::read(&path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input.img");
        std::fs::write(&file, mutate(&bytes, &flips, cut % (bytes.len() + 1))).unwrap();
        if let Ok(image) = load_rgb(&file) {
            prop_assert_eq!(image.values.len(), 3 * image.height * image.width);
            prop_assert!(image.height > 0 && image.width > 0);
        }
    }
}
