//! The built-in shapes world, written to disk and read back through the real readers.

use std::path::Path;

use fiber_data::grounding::{read_coco_detection, read_mdetr, token_map};
use fiber_data::nlvr2::read_nlvr2;
use fiber_data::shapes::{write_shapes_world, ShapesWorldConfig};
use fiber_data::vqa::{read_vqa, AnswerVocab};
use fiber_data::{read_coco_captions, read_karpathy, Problems, Split};

fn small() -> ShapesWorldConfig {
    ShapesWorldConfig::new()
        .with_train_images(40)
        .with_val_images(8)
        .with_test_images(8)
        .with_image_size(64)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn the_world_is_read_by_every_reader_without_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("world");
    let summary = write_shapes_world(&small(), &dir).unwrap();
    assert!(!summary.reused);
    assert_eq!(summary.counts.images, 56);
    assert_eq!(summary.counts.captions, 112);
    assert_eq!(summary.counts.questions, 168);

    let mut problems = Problems::default();
    let karpathy = read_karpathy(&dir.join("dataset_shapes.json"), &dir, &mut problems).unwrap();
    assert_eq!((karpathy.images.len(), karpathy.captions.len()), (56, 112));
    assert_eq!(karpathy.split(Split::Train).images.len(), 40);
    assert_eq!(karpathy.split(Split::Test).captions.len(), 16);
    let coco = read_coco_captions(
        &dir.join("annotations/captions_val.json"),
        &dir.join("val"),
        Split::Val,
        &mut problems,
    )
    .unwrap();
    assert_eq!((coco.images.len(), coco.captions.len()), (8, 16));
    let vqa = read_vqa(
        &dir.join("v2_OpenEnded_mscoco_train_questions.json"),
        Some(&dir.join("v2_mscoco_train_annotations.json")),
        &dir.join("train"),
        "COCO_train_",
        &mut problems,
    )
    .unwrap();
    assert_eq!(vqa.len(), 120);
    let vocab = AnswerVocab::build(&vqa, 1);
    assert!(
        vocab.get("yes").is_some() && vocab.get("1").is_some(),
        "{:?}",
        vocab.answers
    );
    assert!(
        vqa.iter()
            .all(|q| vocab.targets(q) == vec![(vocab.get(&q.answer).unwrap(), 1.0)]),
        "ten identical answers give a soft score of 1"
    );
    let grounding = read_mdetr(
        &dir.join("mdetr_annotations/final_shapes_train.json"),
        &dir,
        &mut problems,
    )
    .unwrap();
    assert_eq!(grounding.len(), 80);
    let detection = read_coco_detection(
        &dir.join("annotations/instances_test.json"),
        &dir.join("test"),
        &mut problems,
    )
    .unwrap();
    assert_eq!(detection.categories.len(), 24);
    assert_eq!(detection.images.len(), 8);
    let nlvr2 = dir.join("nlvr2");
    let pairs = read_nlvr2(
        &nlvr2.join("train.json"),
        &nlvr2.join("images/train"),
        &mut problems,
    )
    .unwrap();
    assert_eq!(
        pairs.len(),
        40,
        "20 pairs, one true and one false statement each"
    );
    assert_eq!(pairs.iter().filter(|p| p.label).count(), 20);
    assert!(pairs.iter().all(|p| p.left.exists() && p.right.exists()));
    assert_eq!(summary.counts.statements, 40 + 8 + 8);
    assert!(problems.is_empty(), "{problems:#?}");
    let paths: Vec<_> = karpathy.images.iter().map(|i| i.path.clone()).collect();
    assert!(fiber_data::check::check_images(&paths, &mut problems).is_empty());

    // A tokenizer trained on the corpus maps every box to exactly the tokens of its phrase.
    let corpus = std::fs::read_to_string(dir.join("corpus.txt")).unwrap();
    assert_eq!(corpus.lines().count(), 80 + 120 + 40);
    let tokenizer = fiber_roberta::RobertaTokenizer::train(corpus.lines(), 300, 2).unwrap();
    for record in &grounding {
        let tokens = tokenizer.encode_with_char_offsets(&record.caption).unwrap();
        let map = token_map(&record.boxes, &tokens, tokens.len() + 2);
        for (b, row) in record.boxes.iter().zip(&map) {
            let ids: Vec<u32> = row
                .iter()
                .enumerate()
                .filter(|(_, on)| **on)
                .map(|(t, _)| tokens[t - 1].0)
                .collect();
            let (s, e) = b.spans[0];
            let phrase: String = record.caption.chars().skip(s).take(e - s).collect();
            assert_eq!(
                tokenizer.decode(&ids, true).unwrap().trim(),
                phrase,
                "{}",
                record.caption
            );
        }
    }
}

#[test]
fn the_world_is_deterministic_reused_and_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_shapes_world(&small(), &a).unwrap();
    write_shapes_world(&small(), &b).unwrap();
    for file in [
        "dataset_shapes.json",
        "mdetr_annotations/final_shapes_val.json",
        "v2_mscoco_test_annotations.json",
        "corpus.txt",
        "train/COCO_train_000000000007.jpg",
    ] {
        assert_eq!(read(&a.join(file)), read(&b.join(file)), "{file}");
    }
    let again = write_shapes_world(&small(), &a).unwrap();
    assert!(again.reused);
    assert_eq!(again.counts.images, 56);
    let other = write_shapes_world(&small().with_seed(1), &a).unwrap_err();
    assert!(
        other
            .to_string()
            .contains("not generated from this configuration"),
        "{other}"
    );
    let c = tmp.path().join("c");
    write_shapes_world(&small().with_seed(1), &c).unwrap();
    assert_ne!(
        read(&a.join("corpus.txt")),
        read(&c.join("corpus.txt")),
        "another seed, another world"
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty());
}
