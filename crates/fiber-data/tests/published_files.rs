//! What published annotation files and real images contain that hand-made samples do not:
//! numeric strings (MDETR's Flickr30k files), truncated JPEGs, non-UTF-8 bytes and duplicate
//! image ids. Each file is written into a temporary folder by the test.

use std::path::Path;

use fiber_data::grounding::{read_coco_detection, read_mdetr};
use fiber_data::image::load_rgb;
use fiber_data::{read_coco_captions, read_karpathy, DataError, ProblemKind, Problems, Split};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn jpeg_bytes(width: u32, height: u32) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 13 % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(&pixels)
        .unwrap();
    bytes
}

#[test]
fn mdetr_and_coco_sides_written_as_strings_are_read_and_other_values_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "final_flickr_separateGT_train.json",
        br#"{"images": [
            {"id": 0, "file_name": "1.jpg", "height": "500", "width": "333", "caption": "a dog runs"},
            {"id": 1, "file_name": "2.jpg", "height": 375, "width": 500, "caption": "a cat sits"},
            {"id": 2, "file_name": "3.jpg", "height": "tall", "width": 500, "caption": "a bird"},
            {"id": 3, "file_name": "4.jpg", "height": true, "width": 500, "caption": "a fish"}],
          "annotations": [
            {"image_id": 0, "bbox": [10, 20, 300, 400], "tokens_positive": [[0, 5]]},
            {"image_id": 1, "bbox": [0, 0, 100, 100], "tokens_positive": [[2, 5]]}]}"#,
    );
    let mut problems = Problems::default();
    let records = read_mdetr(&file, dir.path(), &mut problems).unwrap();
    assert_eq!(records.len(), 2, "{problems:#?}");
    assert_eq!((records[0].height, records[0].width), (500, 333));
    assert_eq!(
        records[0].boxes.len(),
        1,
        "a box inside the string-sized image is kept"
    );
    assert_eq!((records[1].height, records[1].width), (375, 500));
    let locations: Vec<&str> = problems.items.iter().map(|p| p.location.as_str()).collect();
    assert_eq!(locations, ["images[2]", "images[3]"]);
    assert!(problems
        .items
        .iter()
        .all(|p| p.kind == ProblemKind::MalformedRecord));
    assert!(
        problems.items[0].message.contains("\"tall\""),
        "{}",
        problems.items[0].message
    );

    let coco = write(
        dir.path(),
        "instances_val.json",
        br#"{"categories": [{"id": 1, "name": "dog"}],
             "images": [{"id": 7, "file_name": "7.jpg", "height": "64", "width": "48"}],
             "annotations": [{"image_id": 7, "bbox": [1, 1, 40, 60], "category_id": 1}]}"#,
    );
    let mut problems = Problems::default();
    let detection = read_coco_detection(&coco, dir.path(), &mut problems).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        (detection.images[0].height, detection.images[0].width),
        (64, 48)
    );
    assert_eq!(detection.images[0].boxes.len(), 1);
}

#[test]
fn a_truncated_jpeg_is_a_decode_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let whole = jpeg_bytes(64, 48);
    let good = write(dir.path(), "good.jpg", &whole);
    assert_eq!(load_rgb(&good).unwrap().height, 48);
    // Bytes after the end-of-image marker (some cameras append data) do not matter.
    let mut trailing = whole.clone();
    trailing.extend_from_slice(b"appended by a camera");
    assert!(load_rgb(write(dir.path(), "trailing.jpg", &trailing)).is_ok());
    // Cut inside the compressed data: the decoder alone accepts it.
    let cut = write(dir.path(), "cut.jpg", &whole[..whole.len() * 2 / 3]);
    assert!(
        image::open(&cut).is_ok(),
        "the decoder alone fills the missing rows (otherwise this check is not needed)"
    );
    let err = load_rgb(&cut).unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("cut.jpg") && message.contains("truncated"),
        "{message}"
    );
    // Cut inside the headers.
    let err = load_rgb(write(dir.path(), "head.jpg", &whole[..40])).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // The image check of `data check` and the loader report it as a corrupt image.
    let mut problems = Problems::default();
    let bad = fiber_data::check::check_images(&[good, cut.clone()], &mut problems);
    assert_eq!(bad.into_iter().collect::<Vec<_>>(), vec![1]);
    assert_eq!(problems.items[0].kind, ProblemKind::CorruptImage);
    assert_eq!(problems.items[0].file, cut);
}

#[test]
fn non_utf8_annotations_are_located_by_line_column_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    // "é" in Latin-1 (0xE9) on line 2, after 16 characters.
    let mut bytes = b"{\"images\": [\n  {\"filename\": \"caf".to_vec();
    bytes.push(0xE9);
    bytes.extend_from_slice(b".jpg\"}]}");
    let file = write(dir.path(), "dataset_coco.json", &bytes);
    let err = read_karpathy(&file, dir.path(), &mut Problems::default()).unwrap_err();
    let DataError::Json(fiber_core::json::ConfigFileError::Parse { line, column, .. }) = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*line, *column), (2, 20));
    let message = err.to_string();
    assert!(message.contains("dataset_coco.json:2:20"), "{message}");
    assert!(
        message.contains("0xe9") && message.contains("byte offset 32"),
        "{message}"
    );
    // NLVR2's JSON lines go through the same reading.
    let lines = write(dir.path(), "nlvr2/dev.json", &bytes);
    let err =
        fiber_data::nlvr2::read_nlvr2(&lines, dir.path(), &mut Problems::default()).unwrap_err();
    assert!(err.to_string().contains("dev.json:2:20"), "{err}");
}

#[test]
fn duplicate_image_ids_are_reported_naming_both_entries_and_the_second_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "dataset_coco.json",
        br#"{"images": [
            {"filename": "a.jpg", "imgid": 3, "cocoid": 30, "split": "test", "sentences": [{"raw": "a red circle"}]},
            {"filename": "b.jpg", "imgid": 3, "cocoid": 31, "split": "test", "sentences": [{"raw": "a blue square"}]},
            {"filename": "c.jpg", "imgid": 4, "cocoid": 30, "split": "test", "sentences": [{"raw": "a green diamond"}]},
            {"filename": "d.jpg", "imgid": 5, "cocoid": 32, "split": "test", "sentences": [{"raw": "a yellow triangle"}]}]}"#,
    );
    let mut problems = Problems::default();
    let data = read_karpathy(&file, dir.path(), &mut problems).unwrap();
    let files: Vec<String> = data
        .images
        .iter()
        .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["a.jpg", "d.jpg"]);
    assert_eq!(
        data.captions
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>(),
        ["a red circle", "a yellow triangle"],
        "the skipped entries' captions are not attached to the first"
    );
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems
        .items
        .iter()
        .all(|p| p.kind == ProblemKind::DuplicateId));
    let first = &problems.items[0].message;
    assert!(
        first.contains("imgid 3")
            && first.contains("images[0] (a.jpg)")
            && first.contains("images[1] (b.jpg)"),
        "{first}"
    );
    assert!(
        problems.items[1].message.contains("cocoid 30"),
        "{}",
        problems.items[1].message
    );

    let coco = write(
        dir.path(),
        "captions_val.json",
        br#"{"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}],
             "annotations": [{"image_id": 1, "caption": "a red circle"}]}"#,
    );
    let mut problems = Problems::default();
    let data = read_coco_captions(&coco, dir.path(), Split::Val, &mut problems).unwrap();
    assert_eq!(data.images.len(), 1);
    assert_eq!(data.images[0].path, dir.path().join("a.jpg"));
    assert_eq!(problems.items[0].kind, ProblemKind::DuplicateId);
}
