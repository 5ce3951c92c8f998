//! End-to-end: `cargo xtask data check` on the hand-written format samples.

use std::path::PathBuf;

fn dir(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data").join(name).to_str().unwrap().to_string()
}

#[test]
fn every_problem_is_counted_and_strict_mode_fails_on_them() {
    let karpathy = dir("karpathy");
    let report = xtask::data::check_dataset(xtask::data::Format::Karpathy, std::path::Path::new(&karpathy)).unwrap();
    assert_eq!(report.counts["images"], 5);
    assert_eq!(report.counts["captions"], 6);
    assert_eq!(report.counts["unusable_images"], 2);
    assert_eq!(report.problems.len(), 6, "{:#?}", report.problems);
    let json = report.to_json(xtask::data::Format::Karpathy);
    assert_eq!(json["counts"]["images"], 5);
    assert_eq!(json["problems"].as_array().unwrap().len(), 6);
    let nlvr2 = xtask::data::check_dataset(xtask::data::Format::Nlvr2, std::path::Path::new(&dir("nlvr2"))).unwrap();
    assert_eq!((nlvr2.counts["examples"], nlvr2.counts["images"], nlvr2.problems.len()), (3, 4, 2));
    let err = xtask::run(["xtask", "data", "check", "--format", "karpathy", "--data", &karpathy, "--strict"]).unwrap_err();
    assert!(format!("{err:#}").contains("problem(s) found (--strict)"), "{err:#}");
    xtask::run(["xtask", "data", "check", "--format", "karpathy", "--data", &karpathy, "--json"]).unwrap();
    xtask::run(["xtask", "data", "check", "--format", "nlvr2", "--data", &dir("nlvr2")]).unwrap();
    xtask::run(["xtask", "data", "check", "--format", "coco-captions", "--data", &dir("coco-captions")]).unwrap();
}

#[test]
fn formats_without_a_reader_say_so() {
    let vqa = xtask::data::check_dataset(xtask::data::Format::Vqa, std::path::Path::new(&dir("vqa"))).unwrap();
    assert_eq!((vqa.counts["questions"], vqa.counts["images"], vqa.problems.len()), (3, 2, 2));
    let err = xtask::run(["xtask", "data", "check", "--format", "mdetr", "--data", &dir("karpathy")]).unwrap_err();
    assert!(format!("{err:#}").contains("not implemented yet"), "{err:#}");
}
