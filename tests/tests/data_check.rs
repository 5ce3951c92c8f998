//! End-to-end: `cargo xtask data check` on the hand-written format samples.

use std::path::PathBuf;

fn dir(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/data")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_problem_is_counted_and_strict_mode_fails_on_them() {
    let karpathy = dir("karpathy");
    let report = xtask::data::check_dataset(
        xtask::data::Format::Karpathy,
        std::path::Path::new(&karpathy),
    )
    .unwrap();
    assert_eq!(report.counts["images"], 5);
    assert_eq!(report.counts["captions"], 6);
    assert_eq!(report.counts["unusable_images"], 2);
    assert_eq!(report.problems.len(), 6, "{:#?}", report.problems);
    let json = report.to_json(xtask::data::Format::Karpathy);
    assert_eq!(json["counts"]["images"], 5);
    assert_eq!(json["problems"].as_array().unwrap().len(), 6);
    let nlvr2 = xtask::data::check_dataset(
        xtask::data::Format::Nlvr2,
        std::path::Path::new(&dir("nlvr2")),
    )
    .unwrap();
    assert_eq!(
        (
            nlvr2.counts["examples"],
            nlvr2.counts["images"],
            nlvr2.problems.len()
        ),
        (3, 4, 2)
    );
    let err = xtask::run([
        "xtask", "data", "check", "--format", "karpathy", "--data", &karpathy, "--strict",
    ])
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("problem(s) and 0 missing file(s) found (--strict)"),
        "{err:#}"
    );
    xtask::run([
        "xtask", "data", "check", "--format", "karpathy", "--data", &karpathy, "--json",
    ])
    .unwrap();
    xtask::run([
        "xtask",
        "data",
        "check",
        "--format",
        "nlvr2",
        "--data",
        &dir("nlvr2"),
    ])
    .unwrap();
    xtask::run([
        "xtask",
        "data",
        "check",
        "--format",
        "coco-captions",
        "--data",
        &dir("coco-captions"),
    ])
    .unwrap();
}

#[test]
fn vqa_grounding_and_detection_folders_are_checked() {
    let vqa =
        xtask::data::check_dataset(xtask::data::Format::Vqa, std::path::Path::new(&dir("vqa")))
            .unwrap();
    assert_eq!(
        (
            vqa.counts["questions"],
            vqa.counts["images"],
            vqa.problems.len()
        ),
        (3, 2, 2)
    );
    let mdetr = xtask::data::check_dataset(
        xtask::data::Format::Mdetr,
        std::path::Path::new(&dir("mdetr")),
    )
    .unwrap();
    assert_eq!(
        (
            mdetr.counts["captions"],
            mdetr.counts["boxes"],
            mdetr.counts["phrases"],
            mdetr.counts["images"]
        ),
        (3, 4, 4, 2)
    );
    assert_eq!(
        (mdetr.counts["unusable_images"], mdetr.problems.len()),
        (1, 9),
        "{:#?}",
        mdetr.problems
    );
    let det = xtask::data::check_dataset(
        xtask::data::Format::CocoDet,
        std::path::Path::new(&dir("coco-det")),
    )
    .unwrap();
    assert_eq!(
        (
            det.counts["categories"],
            det.counts["images"],
            det.counts["boxes"],
            det.counts["unusable_images"]
        ),
        (3, 2, 3, 1)
    );
    assert_eq!(det.problems.len(), 6, "{:#?}", det.problems);
    let err = xtask::run([
        "xtask",
        "data",
        "check",
        "--format",
        "mdetr",
        "--data",
        &dir("karpathy"),
    ])
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("no mdetr_annotations/final_*.json"),
        "{err:#}"
    );
}

#[test]
fn the_shapes_world_passes_every_check_strictly() {
    let tmp = std::env::temp_dir().join(format!("fiber-world-check-{}", std::process::id()));
    let world = tmp.join("shapes");
    let world_str = world.to_str().unwrap();
    let generate = [
        "xtask",
        "data",
        "generate",
        "--out",
        world_str,
        "--train",
        "30",
        "--val",
        "6",
        "--test",
        "6",
        "--image-size",
        "64",
    ];
    xtask::run(generate).unwrap();
    // A second run reuses the folder.
    xtask::run(generate).unwrap();
    for format in ["karpathy", "coco-captions", "vqa", "mdetr", "coco-det"] {
        xtask::run([
            "xtask", "data", "check", "--format", format, "--data", world_str, "--strict",
        ])
        .unwrap_or_else(|e| panic!("{format}: {e:#}"));
    }
    xtask::run([
        "xtask",
        "data",
        "check",
        "--format",
        "nlvr2",
        "--data",
        world.join("nlvr2").to_str().unwrap(),
        "--strict",
    ])
    .unwrap();
    let report =
        xtask::data::check_dataset(xtask::data::Format::Nlvr2, &world.join("nlvr2")).unwrap();
    // What training reads: `train` and the held-out `test1` (not `dev`).
    assert_eq!(
        (
            report.counts["training_examples"],
            report.counts["held_out_examples"],
            report.counts["examples"]
        ),
        (15 * 2, 3 * 2, 15 * 2 + 3 * 2)
    );
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    // `data check` counts exactly what training reads (both go through `fiber_data::layout`).
    let mut problems = fiber_data::Problems::default();
    let vqa = fiber_data::layout::VqaFolder::read(&world, &mut problems).unwrap();
    let report = xtask::data::check_dataset(xtask::data::Format::Vqa, &world).unwrap();
    assert_eq!(
        (
            report.counts["training_questions"],
            report.counts["held_out_questions"],
            report.counts["answer_vocabulary"]
        ),
        (
            vqa.training.len(),
            vqa.held_out.len(),
            vqa.vocabulary().len()
        )
    );
    // train + val trained on (30 + 6 images, 3 questions each), test held out.
    assert_eq!((vqa.training.len(), vqa.held_out.len()), (36 * 3, 6 * 3));
    let (train, test) = fiber_data::layout::read_caption_splits(&world, &mut problems).unwrap();
    let report = xtask::data::check_dataset(xtask::data::Format::Karpathy, &world).unwrap();
    assert_eq!(
        (
            report.counts["training_captions"],
            report.counts["held_out_captions"]
        ),
        (train.captions.len(), test.captions.len())
    );
    assert!(problems.is_empty(), "{:?}", problems.items);
    let report = xtask::data::check_dataset(xtask::data::Format::CocoDet, &world).unwrap();
    assert_eq!(
        (report.counts["images"], report.counts["categories"]),
        (6 + 6 + 30, 3 * 24)
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}
