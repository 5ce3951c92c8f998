//! End-to-end: `cargo xtask data check` on the hand-written format samples.

use fiber_data::layout::DataSource;
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
        format!("{err:#}")
            .contains("problem(s) and 0 reason(s) training cannot use the data found (--strict)"),
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
    let vqa =
        fiber_data::layout::VqaFolder::read(&DataSource::folder(&world), &mut problems).unwrap();
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
            vqa.vocabulary(fiber_data::vqa::DEFAULT_MIN_ANSWER_COUNT)
                .len()
        )
    );
    // train + val trained on (30 + 6 images, 3 questions each), test held out.
    assert_eq!((vqa.training.len(), vqa.held_out.len()), (36 * 3, 6 * 3));
    let (train, test) =
        fiber_data::layout::read_caption_splits(&DataSource::folder(&world), &mut problems)
            .unwrap();
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

#[test]
fn an_empty_answer_vocabulary_is_reported_with_its_threshold_and_setting() {
    // Three training questions, each answer once: nothing reaches FIBER's minimum count 9.
    let source = DataSource::folder(dir("vqa"));
    let check = |min_answer_count| {
        xtask::data::check_source(
            xtask::data::Format::Vqa,
            &source,
            &xtask::data::CheckSettings { min_answer_count },
        )
        .unwrap()
    };
    let report = check(9);
    assert_eq!(report.counts["answer_vocabulary"], 0);
    let why = report.unusable.join("\n");
    assert!(
        why.contains("at least 9 times")
            && why.contains("vqa_min_answer_count")
            && why.contains("--min-answer-count"),
        "{why}"
    );
    assert_eq!(
        report.to_json(xtask::data::Format::Vqa)["unusable"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let report = check(1);
    assert!(report.counts["answer_vocabulary"] > 0);
    assert!(report.unusable.is_empty(), "{:?}", report.unusable);
    // `--strict` fails on it; `--min-answer-count` is the check's setting.
    let vqa = dir("vqa");
    let strict = |extra: &[&str]| {
        let mut args = vec![
            "xtask", "data", "check", "--format", "vqa", "--data", &vqa, "--strict",
        ];
        args.extend(extra);
        xtask::run(args)
    };
    // (The fixture also lacks a held-out split: one reason either way.)
    let err = format!("{:#}", strict(&[]).unwrap_err());
    assert!(
        err.contains("2 reason(s) training cannot use the data"),
        "{err}"
    );
    let err = format!("{:#}", strict(&["--min-answer-count", "1"]).unwrap_err());
    assert!(err.contains("1 reason(s)"), "{err}");
}

/// Copies `files` of fixture folder `name` into a new temporary folder, apart from the images.
fn annotations_apart(name: &str, files: &[&str]) -> (tempfile::TempDir, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let copies = files
        .iter()
        .map(|f| {
            let to = tmp.path().join(PathBuf::from(f).file_name().unwrap());
            std::fs::copy(PathBuf::from(dir(name)).join(f), &to).unwrap();
            to.to_str().unwrap().to_string()
        })
        .collect();
    (tmp, copies)
}

#[test]
fn published_files_are_read_where_they_lie_with_annotations_and_images() {
    use xtask::data::Format;
    for (format, format_value, files, images) in [
        (
            "karpathy",
            Format::Karpathy,
            vec!["dataset_coco.json"],
            dir("karpathy"),
        ),
        (
            "vqa",
            Format::Vqa,
            vec![
                "v2_OpenEnded_mscoco_val2014_questions.json",
                "v2_mscoco_val2014_annotations.json",
            ],
            dir("vqa"),
        ),
        (
            "mdetr",
            Format::Mdetr,
            vec!["mdetr_annotations/final_mixed_train.json"],
            dir("mdetr"),
        ),
        (
            "nlvr2",
            Format::Nlvr2,
            vec!["dev.json"],
            format!("{}/images", dir("nlvr2")),
        ),
    ] {
        let name = format;
        let (_tmp, copies) = annotations_apart(name, &files);
        let settings = xtask::data::CheckSettings::default();
        let in_folder =
            xtask::data::check_source(format_value, &DataSource::folder(dir(name)), &settings)
                .unwrap();
        let apart = xtask::data::check_source(
            format_value,
            &DataSource::files(
                copies.iter().map(PathBuf::from).collect(),
                Some(images.clone().into()),
            ),
            &settings,
        )
        .unwrap();
        assert_eq!(apart.counts, in_folder.counts, "{format}");
        assert_eq!(
            apart.problems.len(),
            in_folder.problems.len(),
            "{format}: {:#?}",
            apart.problems
        );
        // The same through the command line.
        let mut args = vec![
            "xtask",
            "data",
            "check",
            "--format",
            format,
            "--annotations",
        ];
        args.extend(copies.iter().map(String::as_str));
        args.extend(["--images", &images, "--json"]);
        xtask::run(args).unwrap();
    }
    // COCO detection: the file with its image folder (`instances_val.json` + `val/`).
    let det = PathBuf::from(dir("coco-det"));
    let file = std::fs::read_dir(det.join("annotations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let name = file
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_start_matches("instances_")
        .to_string();
    let settings = xtask::data::CheckSettings::default();
    let apart = xtask::data::check_source(
        xtask::data::Format::CocoDet,
        &DataSource::files(vec![file], Some(det.join(name))),
        &settings,
    )
    .unwrap();
    let in_folder = xtask::data::check_source(
        xtask::data::Format::CocoDet,
        &DataSource::folder(&det),
        &settings,
    )
    .unwrap();
    assert_eq!(apart.counts, in_folder.counts);
    // A VQAv2 file not named as the format names its files is refused, naming it.
    let (_tmp, copies) = annotations_apart("karpathy", &["dataset_coco.json"]);
    let err = xtask::data::check_source(
        xtask::data::Format::Vqa,
        &DataSource::files(vec![PathBuf::from(&copies[0])], None),
        &settings,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("not a VQAv2 file name"),
        "{err:#}"
    );
}

#[test]
fn the_main_job_refuses_annotation_files_without_a_stage() {
    let err = xtask::run(["xtask", "train", "--annotations", "dataset_coco.json"]).unwrap_err();
    assert!(format!("{err:#}").contains("--stage"), "{err:#}");
    // A stage on published files has no data folder to train a tokenizer on: it says so.
    let runs = tempfile::tempdir().unwrap();
    let annotations = format!("{}/dataset_coco.json", dir("karpathy"));
    let err = xtask::run([
        "xtask",
        "train",
        "--stage",
        "coarse",
        "--annotations",
        &annotations,
        "--images",
        &dir("karpathy"),
        "--runs",
        runs.path().to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(format!("{err:#}").contains("--tokenizer"), "{err:#}");
}
