//! The readers on small hand-written samples of each format (`fixtures/data`), each with
//! deliberate problems that must be reported, not fatal.

use std::path::PathBuf;

use fiber_data::check::check_images;
use fiber_data::nlvr2::read_nlvr2;
use fiber_data::{read_coco_captions, read_karpathy, DataError, ProblemKind, Problems, Split};

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/data")
        .join(name)
}

fn count(problems: &Problems, kind: ProblemKind) -> usize {
    problems.items.iter().filter(|p| p.kind == kind).count()
}

#[test]
fn karpathy_records_are_read_and_every_problem_reported() {
    let root = dir("karpathy");
    let mut problems = Problems::default();
    let data = read_karpathy(&root.join("dataset_coco.json"), &root, &mut problems).unwrap();
    assert_eq!(data.images.len(), 5);
    assert_eq!(data.captions.len(), 6);
    assert_eq!(data.images[0].id, 1);
    assert_eq!(
        data.images[0].path,
        root.join("val2014/COCO_val2014_000000000001.jpg")
    );
    assert_eq!(
        data.split(Split::Train).images.len(),
        3,
        "restval counts as train"
    );
    assert_eq!(data.split(Split::Test).captions.len(), 1);
    assert_eq!(count(&problems, ProblemKind::EmptyText), 1);
    assert_eq!(count(&problems, ProblemKind::PathOutsideRoot), 1);
    assert_eq!(
        count(&problems, ProblemKind::MalformedRecord),
        2,
        "{problems:#?}"
    );
    let bad_record = problems
        .items
        .iter()
        .find(|p| p.kind == ProblemKind::MalformedRecord)
        .unwrap();
    assert_eq!(bad_record.location, "images[6]");
    assert!(
        bad_record.message.contains("sentences"),
        "{}",
        bad_record.message
    );

    let paths: Vec<PathBuf> = data.images.iter().map(|i| i.path.clone()).collect();
    let bad = check_images(&paths, &mut problems);
    assert_eq!(bad.into_iter().collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(count(&problems, ProblemKind::CorruptImage), 1);
    assert_eq!(count(&problems, ProblemKind::MissingImage), 1);
}

#[test]
fn coco_captions_are_read_and_unknown_images_and_empty_captions_reported() {
    let root = dir("coco-captions");
    let mut problems = Problems::default();
    let data = read_coco_captions(
        &root.join("annotations/captions_val2017.json"),
        &root.join("val2017"),
        Split::Val,
        &mut problems,
    )
    .unwrap();
    assert_eq!(data.images.len(), 2);
    assert_eq!(
        data.captions
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>(),
        vec!["A yellow patch.", "A teal patch.", "Teal, again."]
    );
    assert_eq!(count(&problems, ProblemKind::UnknownImage), 1);
    assert_eq!(count(&problems, ProblemKind::EmptyText), 1);
    assert!(check_images(
        &data
            .images
            .iter()
            .map(|i| i.path.clone())
            .collect::<Vec<_>>(),
        &mut problems
    )
    .is_empty());
}

#[test]
fn nlvr2_lines_are_read_with_line_numbers_for_bad_ones() {
    let root = dir("nlvr2");
    let mut problems = Problems::default();
    let data = read_nlvr2(
        &root.join("dev.json"),
        &root.join("images/dev"),
        &mut problems,
    )
    .unwrap();
    assert_eq!(
        data.iter()
            .map(|r| (r.identifier.as_str(), r.label))
            .collect::<Vec<_>>(),
        vec![
            ("dev-850-0-0", true),
            ("dev-850-0-1", false),
            ("dev-851-1-2", true)
        ]
    );
    assert_eq!(data[0].left, root.join("images/dev/dev-850-0-img0.png"));
    assert_eq!(
        problems
            .items
            .iter()
            .map(|p| p.location.as_str())
            .collect::<Vec<_>>(),
        vec!["line 3", "line 4"]
    );
}

#[test]
fn malformed_json_names_file_line_and_column() {
    let path = std::env::temp_dir().join(format!("fiber-broken-{}.json", std::process::id()));
    std::fs::write(&path, "{\"images\": [\n  {\"filename\": \"a.jpg\",,}\n]}").unwrap();
    let err =
        read_karpathy(&path, std::path::Path::new("."), &mut Problems::default()).unwrap_err();
    let DataError::Json(fiber_core::json::ConfigFileError::Parse { line, column, .. }) = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*line, *column), (2, 24));
    assert!(
        err.to_string()
            .contains(&format!("{}:2:24", path.display())),
        "{err}"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn vqa_questions_and_answers_are_read_normalised_and_scored() {
    use fiber_data::vqa::{read_vqa, AnswerVocab};
    let root = dir("vqa");
    let mut problems = Problems::default();
    let records = read_vqa(
        &root.join("v2_OpenEnded_mscoco_val2014_questions.json"),
        Some(&root.join("v2_mscoco_val2014_annotations.json")),
        &root.join("val2014"),
        "COCO_val2014_",
        &mut problems,
    )
    .unwrap();
    assert_eq!(
        records.iter().map(|r| r.question_id).collect::<Vec<_>>(),
        vec![10, 11, 20]
    );
    assert_eq!(
        records[0].image,
        root.join("val2014/COCO_val2014_000000000001.jpg")
    );
    assert_eq!(records[1].answer, "1", "number words become digits");
    assert_eq!(
        records[0].answers.iter().filter(|a| *a == "red").count(),
        8,
        "`Red.` normalises to `red`"
    );
    assert_eq!(count(&problems, ProblemKind::EmptyText), 1);
    assert_eq!(
        count(&problems, ProblemKind::MalformedRecord),
        1,
        "question 21 has no annotation"
    );

    let vocab = AnswerVocab::build(&records, 1);
    assert_eq!(vocab.answers, vec!["1", "red", "yes"]);
    assert_eq!(vocab.targets(&records[0]), vec![(1, 1.0)]);
    assert_eq!(
        vocab.targets(&records[1]),
        vec![(0, 1.0)],
        "`2` (2 annotators) is not in the vocabulary"
    );
    assert!(AnswerVocab::build(&records, 2).is_empty());
    assert!(check_images(
        &records.iter().map(|r| r.image.clone()).collect::<Vec<_>>(),
        &mut problems
    )
    .is_empty());
}

#[test]
fn mdetr_grounding_is_read_with_spans_and_bad_boxes_reported() {
    use fiber_data::grounding::read_mdetr;
    let root = dir("mdetr");
    let mut problems = Problems::default();
    let records = read_mdetr(
        &root.join("mdetr_annotations/final_mixed_train.json"),
        &root,
        &mut problems,
    )
    .unwrap();
    assert_eq!(
        records.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![0, 1, 5]
    );
    let first = &records[0];
    assert_eq!(first.path, root.join("images/2354786.jpg"));
    assert_eq!(first.boxes.len(), 2);
    assert_eq!(first.boxes[0].xyxy, [0.0, 0.0, 4.0, 4.0]);
    assert_eq!(
        first.boxes[1].xyxy,
        [6.0, 2.0, 11.0, 7.0],
        "xywh becomes xyxy"
    );
    let phrase = |r: &fiber_data::grounding::GroundingRecord, (s, e): (usize, usize)| {
        r.caption.chars().skip(s).take(e - s).collect::<String>()
    };
    assert_eq!(phrase(first, first.boxes[0].spans[0]), "red square");
    assert_eq!(phrase(first, first.boxes[1].spans[0]), "blue circle");
    assert_eq!(
        phrase(&records[1], records[1].boxes[0].spans[0]),
        "blue circle"
    );
    assert_eq!(count(&problems, ProblemKind::EmptyText), 1);
    assert_eq!(count(&problems, ProblemKind::PathOutsideRoot), 1);
    assert_eq!(count(&problems, ProblemKind::BadBox), 2, "{problems:#?}");
    assert_eq!(count(&problems, ProblemKind::UnknownImage), 1);
    assert_eq!(
        count(&problems, ProblemKind::MalformedRecord),
        3,
        "{problems:#?}"
    );
    let span = problems
        .items
        .iter()
        .find(|p| p.message.contains("span"))
        .unwrap();
    assert_eq!(span.location, "annotations[5]");
}

#[test]
fn coco_detection_is_read_and_turned_into_prompts() {
    use fiber_data::grounding::{detection_prompt, read_coco_detection, PromptConfig};
    use rand::SeedableRng;
    let root = dir("coco-det");
    let mut problems = Problems::default();
    let data = read_coco_detection(
        &root.join("annotations/instances_val2017.json"),
        &root.join("val2017"),
        &mut problems,
    )
    .unwrap();
    assert_eq!(data.categories, vec!["person", "traffic light", "bow"]);
    assert_eq!(data.images.len(), 2);
    assert_eq!(
        data.images[0].boxes,
        vec![[0.0, 0.0, 5.0, 5.0], [5.0, 2.0, 11.0, 8.0]]
    );
    assert_eq!(data.images[0].labels, vec![0, 1]);
    assert_eq!(count(&problems, ProblemKind::EmptyText), 1);
    assert_eq!(count(&problems, ProblemKind::BadBox), 1);
    assert_eq!(count(&problems, ProblemKind::UnknownImage), 1);
    assert_eq!(
        count(&problems, ProblemKind::MalformedRecord),
        2,
        "{problems:#?}"
    );

    let tokenizer =
        fiber_roberta::RobertaTokenizer::from_file(dir("../tokenizer/json-form/tokenizer.json"))
            .unwrap();
    let count_tokens = |s: &str| {
        tokenizer
            .encode_plain(s)
            .map(|ids| ids.len())
            .unwrap_or(usize::MAX)
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let config = PromptConfig {
        control_probabilities: [0.0, 0.0, 1.0, 0.0],
        ..Default::default()
    };
    let record = detection_prompt(
        &data.images[0],
        &data.categories,
        &config,
        &count_tokens,
        &mut rng,
    );
    assert_eq!(record.boxes.len(), 2);
    assert!(
        record.caption.contains("traffic light. ")
            && record.caption.contains("person. ")
            && record.caption.contains("bow. ")
    );
    let tokens = tokenizer.encode_with_char_offsets(&record.caption).unwrap();
    let map = fiber_data::grounding::token_map(&record.boxes, &tokens, 32);
    for (b, row) in record.boxes.iter().zip(&map) {
        let ids: Vec<u32> = row
            .iter()
            .enumerate()
            .filter(|(_, on)| **on)
            .map(|(t, _)| tokens[t - 1].0)
            .collect();
        let text = tokenizer.decode(&ids, true).unwrap();
        assert_eq!(text.trim(), data.categories[b.category.unwrap() as usize]);
    }
}
