//! The built-in "shapes world": procedurally rendered scenes of coloured shapes on textured
//! backgrounds, with captions that describe every object, boxes linked to the caption phrases
//! (`tokens_positive`) and VQA questions (colour, shape, count, relative position, yes/no).
//!
//! It is written to disk in the real formats, so the built-in data goes through the same readers
//! as COCO, VQAv2 and MDETR data (layout of a world folder):
//!
//! | file | format |
//! |---|---|
//! | `{split}/COCO_{split}_{id:012}.jpg` | the images (JPEG) |
//! | `dataset_shapes.json` | Karpathy captions, all splits |
//! | `annotations/captions_{split}.json` | COCO captions |
//! | `annotations/instances_{split}.json` | COCO detection, one category per colour + shape |
//! | `mdetr_annotations/final_shapes_{split}.json` | MDETR grounding, one entry per image–caption pair |
//! | `v2_OpenEnded_mscoco_{split}_questions.json`, `v2_mscoco_{split}_annotations.json` | VQAv2 |
//! | `nlvr2/{train,dev,test1}.json`, `nlvr2/images/{split}/{split}-{k}-0-img{0,1}.jpg` | NLVR2: pairs of consecutive images, one true and one false statement each |
//! | `corpus.txt` | training captions, questions and statements, for the tokenizer |
//! | `world.json` | the configuration it was generated from |
//!
//! Every image draws from its own random stream (seed, split, index), so a world is identical for
//! a seed whatever the thread count.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::config::Config;
use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::captions::Split;
use crate::error::DataError;
use crate::grounding::CharSpan;
use crate::transforms::BoxXyxy;

/// How a shapes world is generated.
#[derive(Config, Debug, PartialEq)]
pub struct ShapesWorldConfig {
    /// Seed of every random choice.
    #[config(default = 0)]
    pub seed: u64,
    /// Training images.
    #[config(default = 2000)]
    pub train_images: usize,
    /// Validation images.
    #[config(default = 200)]
    pub val_images: usize,
    /// Test images.
    #[config(default = 200)]
    pub test_images: usize,
    /// Side of the square images in pixels.
    #[config(default = 96)]
    pub image_size: usize,
    /// Most objects in a scene (at least 1).
    #[config(default = 3)]
    pub max_objects: usize,
    /// Captions per image.
    #[config(default = 2)]
    pub captions_per_image: usize,
    /// Questions per image.
    #[config(default = 3)]
    pub questions_per_image: usize,
    /// JPEG quality of the written images.
    #[config(default = 92)]
    pub jpeg_quality: u8,
}

/// Object colours, with their RGB values in [0, 1].
pub const COLOURS: [(&str, [f32; 3]); 6] = [
    ("red", [0.86, 0.12, 0.12]),
    ("green", [0.12, 0.68, 0.22]),
    ("blue", [0.16, 0.28, 0.92]),
    ("yellow", [0.96, 0.86, 0.12]),
    ("purple", [0.58, 0.20, 0.74]),
    ("orange", [1.00, 0.55, 0.06]),
];

/// Background names with their base grey level.
pub const BACKGROUNDS: [(&str, f32); 3] = [("black", 0.08), ("gray", 0.50), ("white", 0.93)];

/// Shape names.
pub const SHAPES: [&str; 4] = ["circle", "square", "triangle", "diamond"];

/// Size names with their radius as a fraction of the image side.
pub const SIZES: [(&str, f32); 2] = [("small", 0.13), ("large", 0.19)];

const COUNT_WORDS: [&str; 6] = ["zero", "one", "two", "three", "four", "five"];

/// One object of a scene.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeObject {
    /// Index into [`SHAPES`].
    pub shape: usize,
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Index into [`SIZES`].
    pub size: usize,
    /// Centre in pixels.
    pub centre: (f32, f32),
    /// Radius in pixels.
    pub radius: f32,
}

impl ShapeObject {
    /// "large red circle".
    pub fn phrase(&self) -> String {
        format!(
            "{} {} {}",
            SIZES[self.size].0, COLOURS[self.colour].0, SHAPES[self.shape]
        )
    }

    /// "red circle" (the detection category).
    pub fn category(&self) -> String {
        format!("{} {}", COLOURS[self.colour].0, SHAPES[self.shape])
    }

    /// Whether pixel centre `(x, y)` lies inside the shape.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let (dx, dy, r) = (x - self.centre.0, y - self.centre.1, self.radius);
        match SHAPES[self.shape] {
            "circle" => dx * dx + dy * dy <= r * r,
            "square" => dx.abs() <= 0.85 * r && dy.abs() <= 0.85 * r,
            "triangle" => dy >= -r && dy <= 0.8 * r && dx.abs() <= (dy + r) / 1.8,
            _ => dx.abs() + dy.abs() <= r,
        }
    }

    /// The tight box `[x0, y0, x1, y1]` of the shape.
    pub fn bbox(&self) -> BoxXyxy {
        let (cx, cy, r) = (self.centre.0, self.centre.1, self.radius);
        match SHAPES[self.shape] {
            "square" => [cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r],
            "triangle" => [cx - r, cy - r, cx + r, cy + 0.8 * r],
            _ => [cx - r, cy - r, cx + r, cy + r],
        }
    }
}

/// A scene: a background and non-overlapping objects, sorted left to right.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// Index into [`BACKGROUNDS`].
    pub background: usize,
    /// The objects, by increasing centre x.
    pub objects: Vec<ShapeObject>,
    /// Vertical gradient of the background (added at the bottom, subtracted at the top).
    pub gradient: f32,
    /// Seed of the background noise.
    pub noise_seed: u64,
}

impl Scene {
    /// A random scene of 1 to `max_objects` objects, no two with the same colour and shape, at
    /// least 4 pixels apart horizontally so "left of" is unambiguous.
    pub fn random(image_size: usize, max_objects: usize, rng: &mut impl Rng) -> Scene {
        let side = image_size as f32;
        let wanted = rng.random_range(1..=max_objects.max(1));
        let mut objects: Vec<ShapeObject> = Vec::new();
        let mut tries = 0;
        while objects.len() < wanted && tries < 200 {
            tries += 1;
            let (shape, colour, size) = (
                rng.random_range(0..SHAPES.len()),
                rng.random_range(0..COLOURS.len()),
                rng.random_range(0..SIZES.len()),
            );
            let radius = (SIZES[size].1 * side).max(2.0);
            let centre = (
                rng.random_range(radius + 1.0..side - radius - 1.0),
                rng.random_range(radius + 1.0..side - radius - 1.0),
            );
            let candidate = ShapeObject {
                shape,
                colour,
                size,
                centre,
                radius,
            };
            let clashes = objects.iter().any(|o| {
                let (dx, dy) = (o.centre.0 - centre.0, o.centre.1 - centre.1);
                (o.shape == shape && o.colour == colour)
                    || (dx * dx + dy * dy).sqrt() < o.radius + radius + 2.0
                    || dx.abs() < 4.0
            });
            if !clashes {
                objects.push(candidate);
            }
        }
        objects.sort_by(|a, b| a.centre.0.total_cmp(&b.centre.0));
        Scene {
            background: rng.random_range(0..BACKGROUNDS.len()),
            objects,
            gradient: rng.random_range(-0.08..0.08),
            noise_seed: rng.random(),
        }
    }

    /// The scene as 8-bit RGB, row-major `[height, width, 3]`.
    pub fn render(&self, image_size: usize) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(self.noise_seed);
        let base = BACKGROUNDS[self.background].1;
        let tints: Vec<[f32; 3]> = self
            .objects
            .iter()
            .map(|o| {
                COLOURS[o.colour]
                    .1
                    .map(|v| (v + rng.random_range(-0.04..0.04)).clamp(0.0, 1.0))
            })
            .collect();
        let mut pixels = Vec::with_capacity(image_size * image_size * 3);
        for y in 0..image_size {
            let shade = base + self.gradient * (2.0 * y as f32 / image_size as f32 - 1.0);
            for x in 0..image_size {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let rgb = match self.objects.iter().position(|o| o.contains(px, py)) {
                    Some(i) => tints[i],
                    None => [shade; 3].map(|v| v + rng.random_range(-0.03..0.03)),
                };
                pixels.extend(rgb.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8));
            }
        }
        pixels
    }

    fn listing(&self, order: &[usize]) -> (String, Vec<CharSpan>) {
        let mut text = String::new();
        let mut spans = vec![(0, 0); self.objects.len()];
        for (k, &i) in order.iter().enumerate() {
            if k > 0 {
                text.push_str(if k + 1 == order.len() { " and " } else { ", " });
            }
            text.push_str("a ");
            let start = text.chars().count();
            text.push_str(&self.objects[i].phrase());
            spans[i] = (start, text.chars().count());
        }
        (text, spans)
    }

    /// A caption naming every object (size, colour, shape) and the character span of each
    /// object's phrase, in one of several phrasings.
    pub fn caption(&self, rng: &mut impl Rng) -> (String, Vec<CharSpan>) {
        let background = BACKGROUNDS[self.background].0;
        let left_to_right: Vec<usize> = (0..self.objects.len()).collect();
        let n = self.objects.len();
        let template = rng.random_range(0..3);
        let (prefix, order, suffix) = match (template, n) {
            (0, 1) => (
                String::new(),
                left_to_right,
                format!(" on a {background} background."),
            ),
            (0, _) => (
                String::new(),
                left_to_right,
                format!(", from left to right, on a {background} background."),
            ),
            (1, _) => {
                let mut shuffled = left_to_right;
                shuffled.shuffle(rng);
                let noun = if n == 1 { "shape" } else { "shapes" };
                (
                    format!(
                        "a {background} picture with {} {noun}: ",
                        COUNT_WORDS[n.min(5)]
                    ),
                    shuffled,
                    ".".to_string(),
                )
            }
            (_, 1) => (
                "there is ".to_string(),
                left_to_right,
                format!(" in front of a {background} wall."),
            ),
            _ => (
                format!("on a {background} background, "),
                left_to_right,
                " in a row from the left.".to_string(),
            ),
        };
        let (listing, spans) = self.listing(&order);
        let offset = prefix.chars().count();
        (
            format!("{prefix}{listing}{suffix}"),
            spans
                .into_iter()
                .map(|(s, e)| (s + offset, e + offset))
                .collect(),
        )
    }

    /// Up to `count` questions of different kinds with their answers.
    pub fn questions(&self, count: usize, rng: &mut impl Rng) -> Vec<SceneQuestion> {
        let objects = &self.objects;
        let mut kinds: Vec<usize> = (0..7).collect();
        kinds.shuffle(rng);
        let mut out = Vec::new();
        for kind in kinds {
            if out.len() == count {
                break;
            }
            let question = match kind {
                0 => Some((
                    "how many shapes are there?".to_string(),
                    objects.len().to_string(),
                    "number",
                    "how many shapes",
                )),
                1 => {
                    let colour = if rng.random_bool(0.7) {
                        objects.choose(rng).map(|o| o.colour).unwrap_or(0)
                    } else {
                        rng.random_range(0..COLOURS.len())
                    };
                    let n = objects.iter().filter(|o| o.colour == colour).count();
                    Some((
                        format!("how many {} shapes are there?", COLOURS[colour].0),
                        n.to_string(),
                        "number",
                        "how many <colour> shapes",
                    ))
                }
                2 => {
                    let unique: Vec<&ShapeObject> = objects
                        .iter()
                        .filter(|o| objects.iter().filter(|p| p.shape == o.shape).count() == 1)
                        .collect();
                    unique.choose(rng).map(|o| {
                        (
                            format!("what color is the {}?", SHAPES[o.shape]),
                            COLOURS[o.colour].0.to_string(),
                            "other",
                            "what color is the <shape>",
                        )
                    })
                }
                3 => {
                    let unique: Vec<&ShapeObject> = objects
                        .iter()
                        .filter(|o| objects.iter().filter(|p| p.colour == o.colour).count() == 1)
                        .collect();
                    unique.choose(rng).map(|o| {
                        (
                            format!("what shape is the {} object?", COLOURS[o.colour].0),
                            SHAPES[o.shape].to_string(),
                            "other",
                            "what shape is the <colour> object",
                        )
                    })
                }
                4 => {
                    let (colour, shape, present) = if rng.random_bool(0.5) {
                        let o = objects
                            .choose(rng)
                            .expect("a scene has at least one object");
                        (o.colour, o.shape, true)
                    } else {
                        let (c, s) = (
                            rng.random_range(0..COLOURS.len()),
                            rng.random_range(0..SHAPES.len()),
                        );
                        (c, s, objects.iter().any(|o| o.colour == c && o.shape == s))
                    };
                    Some((
                        format!("is there a {} {}?", COLOURS[colour].0, SHAPES[shape]),
                        yes_no(present),
                        "yes/no",
                        "is there a <colour> <shape>",
                    ))
                }
                5 if objects.len() >= 2 => {
                    let mut pair: Vec<usize> = (0..objects.len()).collect();
                    pair.shuffle(rng);
                    let (a, b) = (&objects[pair[0]], &objects[pair[1]]);
                    Some((
                        format!("is the {} left of the {}?", a.category(), b.category()),
                        yes_no(a.centre.0 < b.centre.0),
                        "yes/no",
                        "is the <object> left of the <object>",
                    ))
                }
                6 => Some((
                    "what color is the background?".to_string(),
                    BACKGROUNDS[self.background].0.to_string(),
                    "other",
                    "what color is the background",
                )),
                _ => None,
            };
            out.extend(
                question.map(|(text, answer, answer_type, question_type)| SceneQuestion {
                    text,
                    answer,
                    answer_type,
                    question_type,
                }),
            );
        }
        out
    }

    /// A statement about the pair (`self` on the left, `right` on the right) in the manner of
    /// NLVR2, with its truth value; `None` when the drawn template does not apply.
    pub fn pair_statement(&self, right: &Scene, rng: &mut impl Rng) -> Option<(String, bool)> {
        let (l, r) = (&self.objects, &right.objects);
        let both: Vec<&ShapeObject> = l.iter().chain(r).collect();
        let has = |objects: &[ShapeObject], f: &dyn Fn(&ShapeObject) -> bool| objects.iter().any(f);
        // Attributes drawn from the objects present most of the time, so that both truth values
        // occur for every template.
        let colour = if rng.random_bool(0.7) {
            both.choose(rng)?.colour
        } else {
            rng.random_range(0..COLOURS.len())
        };
        let shape = if rng.random_bool(0.7) {
            both.choose(rng)?.shape
        } else {
            rng.random_range(0..SHAPES.len())
        };
        let (c, s) = (COLOURS[colour].0, SHAPES[shape]);
        Some(match rng.random_range(0..8) {
            0 => (
                "the left image has more shapes than the right image".to_string(),
                l.len() > r.len(),
            ),
            1 => (
                "the right image has more shapes than the left image".to_string(),
                r.len() > l.len(),
            ),
            2 => (
                format!("both images contain a {c} shape"),
                has(l, &|o| o.colour == colour) && has(r, &|o| o.colour == colour),
            ),
            3 => (
                format!("there is a {s} in each image"),
                has(l, &|o| o.shape == shape) && has(r, &|o| o.shape == shape),
            ),
            4 => {
                let (side, objects) = if rng.random_bool(0.5) {
                    ("left", l)
                } else {
                    ("right", r)
                };
                (
                    format!("the {side} image contains a {c} {s}"),
                    has(objects, &|o| o.colour == colour && o.shape == shape),
                )
            }
            5 => {
                let n = (l.len() + r.len()) as i64 + rng.random_range(-1..=1);
                (
                    format!("there are {n} shapes in total"),
                    n == (l.len() + r.len()) as i64,
                )
            }
            6 => {
                let background = if rng.random_bool(0.5) {
                    self.background
                } else {
                    rng.random_range(0..BACKGROUNDS.len())
                };
                (
                    format!(
                        "both images have a {} background",
                        BACKGROUNDS[background].0
                    ),
                    self.background == background && right.background == background,
                )
            }
            _ => (
                format!("exactly one image contains a {c} shape"),
                has(l, &|o| o.colour == colour) != has(r, &|o| o.colour == colour),
            ),
        })
    }
}

/// A question about a scene with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneQuestion {
    /// The question.
    pub text: String,
    /// Its answer.
    pub answer: String,
    /// VQAv2 `answer_type`: `number`, `yes/no` or `other`.
    pub answer_type: &'static str,
    /// VQAv2 `question_type`: the question's template, e.g. `what shape is the <colour> object`.
    pub question_type: &'static str,
}

fn yes_no(answer: bool) -> String {
    if answer { "yes" } else { "no" }.to_string()
}

/// How much a world holds (all splits).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorldCounts {
    /// Images.
    pub images: usize,
    /// Captions.
    pub captions: usize,
    /// Questions.
    pub questions: usize,
    /// Boxes (one per object).
    pub boxes: usize,
    /// NLVR2 statements about image pairs.
    #[serde(default)]
    pub statements: usize,
}

/// What [`write_shapes_world`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldSummary {
    /// The world folder.
    pub dir: PathBuf,
    /// Whether an existing world generated from the same configuration was reused.
    pub reused: bool,
    /// What the world holds.
    pub counts: WorldCounts,
}

/// Version of the world's file layout; a folder written by another version is not reused.
const WORLD_FORMAT: u32 = 2;

#[derive(serde::Serialize, serde::Deserialize)]
struct WorldMarker {
    #[serde(default)]
    format: u32,
    config: ShapesWorldConfig,
    counts: WorldCounts,
}

struct RenderedImage {
    id: u64,
    file_name: String,
    jpeg: Vec<u8>,
    scene: Scene,
    captions: Vec<(String, Vec<CharSpan>)>,
    questions: Vec<SceneQuestion>,
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Val => "val",
        Split::Test => "test",
    }
}

fn generate_split(
    config: &ShapesWorldConfig,
    split: Split,
    first_id: u64,
    count: usize,
) -> Result<Vec<RenderedImage>, DataError> {
    let name = split_name(split);
    let stream = match split {
        Split::Train => 1u64,
        Split::Val => 2,
        Split::Test => 3,
    };
    (0..count)
        .into_par_iter()
        .map(|i| {
            let mut rng = StdRng::seed_from_u64(
                config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (stream << 40) ^ i as u64,
            );
            let scene = Scene::random(config.image_size, config.max_objects, &mut rng);
            let pixels = scene.render(config.image_size);
            let mut jpeg = Vec::new();
            let side = config.image_size as u32;
            JpegEncoder::new_with_quality(&mut jpeg, config.jpeg_quality)
                .encode(&pixels, side, side, ExtendedColorType::Rgb8)
                .map_err(|e| DataError::Invalid(format!("encoding a shapes-world image: {e}")))?;
            let captions = (0..config.captions_per_image)
                .map(|_| scene.caption(&mut rng))
                .collect();
            let questions = scene.questions(config.questions_per_image, &mut rng);
            let id = first_id + i as u64;
            Ok(RenderedImage {
                id,
                file_name: format!("COCO_{name}_{id:012}.jpg"),
                jpeg,
                scene,
                captions,
                questions,
            })
        })
        .collect()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)
}

fn write_json(path: &Path, value: &Value) -> Result<(), DataError> {
    let text = serde_json::to_string(value)
        .map_err(|e| DataError::Invalid(format!("{}: {e}", path.display())))?;
    write_file(path, text.as_bytes())
}

fn category_id(o: &ShapeObject) -> usize {
    o.colour * SHAPES.len() + o.shape + 1
}

fn write_split(
    dir: &Path,
    split: Split,
    images: &[RenderedImage],
    config: &ShapesWorldConfig,
    corpus: &mut Vec<String>,
) -> Result<(), DataError> {
    let name = split_name(split);
    let size = config.image_size;
    let image_entries: Vec<Value> = images
        .iter()
        .map(|im| json!({"id": im.id, "file_name": im.file_name, "height": size, "width": size}))
        .collect();
    let mut caption_entries = Vec::new();
    let mut mdetr_images = Vec::new();
    let mut mdetr_boxes = Vec::new();
    let mut instances = Vec::new();
    let mut questions = Vec::new();
    let mut answers = Vec::new();
    for im in images {
        write_file(&dir.join(name).join(&im.file_name), &im.jpeg)?;
        for (k, (caption, spans)) in im.captions.iter().enumerate() {
            let pair_id = im.id * 100 + k as u64;
            caption_entries.push(json!({"id": pair_id, "image_id": im.id, "caption": caption}));
            mdetr_images.push(json!({"id": pair_id, "file_name": format!("{name}/{}", im.file_name), "height": size, "width": size,
                "caption": caption, "dataset_name": "shapes", "original_img_id": im.id, "tokens_negative": []}));
            for (o, span) in im.scene.objects.iter().zip(spans) {
                let b = o.bbox();
                mdetr_boxes.push(json!({"id": mdetr_boxes.len() + 1, "image_id": pair_id, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0, "category_id": category_id(o), "tokens_positive": [[span.0, span.1]]}));
            }
            if split == Split::Train {
                corpus.push(caption.clone());
            }
        }
        for o in &im.scene.objects {
            let b = o.bbox();
            instances.push(json!({"id": instances.len() + 1, "image_id": im.id, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0, "category_id": category_id(o)}));
        }
        for (k, q) in im.questions.iter().enumerate() {
            let question_id = im.id * 100 + k as u64;
            questions
                .push(json!({"image_id": im.id, "question": q.text, "question_id": question_id}));
            let given: Vec<Value> = (1..=10)
                .map(|a| json!({"answer": q.answer, "answer_confidence": "yes", "answer_id": a}))
                .collect();
            answers.push(json!({"question_id": question_id, "image_id": im.id, "question_type": q.question_type,
                "answer_type": q.answer_type, "multiple_choice_answer": q.answer, "answers": given}));
            if split == Split::Train {
                corpus.push(q.text.clone());
            }
        }
    }
    let categories: Vec<Value> = (0..COLOURS.len())
        .flat_map(|c| (0..SHAPES.len()).map(move |s| json!({"id": c * SHAPES.len() + s + 1, "name": format!("{} {}", COLOURS[c].0, SHAPES[s]), "supercategory": "shape"})))
        .collect();
    let info = json!({"description": "FIBER built-in shapes world", "seed": config.seed});
    write_json(
        &dir.join(format!("annotations/captions_{name}.json")),
        &json!({"info": info, "images": image_entries, "annotations": caption_entries}),
    )?;
    write_json(
        &dir.join(format!("annotations/instances_{name}.json")),
        &json!({"info": info, "images": image_entries, "annotations": instances, "categories": categories}),
    )?;
    write_json(
        &dir.join(format!("mdetr_annotations/final_shapes_{name}.json")),
        &json!({"info": info, "images": mdetr_images, "annotations": mdetr_boxes, "categories": categories}),
    )?;
    write_json(
        &dir.join(format!("v2_OpenEnded_mscoco_{name}_questions.json")),
        &json!({"info": info, "task_type": "Open-Ended", "data_type": "shapes", "data_subtype": name, "questions": questions}),
    )?;
    write_json(
        &dir.join(format!("v2_mscoco_{name}_annotations.json")),
        &json!({"info": info, "data_subtype": name, "annotations": answers}),
    )?;
    Ok(())
}

/// NLVR2 files of one split: consecutive images form pairs (the same JPEGs, copied under
/// `nlvr2/images/{split}/`), each with one true and one false statement, in `nlvr2/{split}.json`
/// (splits named `train`, `dev`, `test1` as in NLVR2). Returns the number of statements.
fn write_nlvr2_split(
    dir: &Path,
    split: Split,
    images: &[RenderedImage],
    config: &ShapesWorldConfig,
    corpus: &mut Vec<String>,
) -> Result<usize, DataError> {
    let name = match split {
        Split::Train => "train",
        Split::Val => "dev",
        Split::Test => "test1",
    };
    let root = dir.join("nlvr2");
    let mut lines = Vec::new();
    for (k, pair) in images.chunks_exact(2).enumerate() {
        let mut rng = StdRng::seed_from_u64(
            config.seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ ((split as u64 + 1) << 40) ^ k as u64,
        );
        let prefix = format!("{name}-{k}-0");
        for (side, im) in pair.iter().enumerate() {
            write_file(
                &root.join(format!("images/{name}/{prefix}-img{side}.jpg")),
                &im.jpeg,
            )?;
        }
        let mut wanted = [true, false];
        wanted.shuffle(&mut rng);
        for (j, want) in wanted.into_iter().enumerate() {
            let statement = (0..100)
                .filter_map(|_| pair[0].scene.pair_statement(&pair[1].scene, &mut rng))
                .find(|(_, truth)| *truth == want);
            if let Some((sentence, label)) = statement {
                let label = if label { "True" } else { "False" };
                lines.push(json!({"identifier": format!("{prefix}-{j}"), "sentence": sentence, "label": label}).to_string());
                if split == Split::Train {
                    corpus.push(sentence);
                }
            }
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    write_file(&root.join(format!("{name}.json")), text.as_bytes())?;
    Ok(lines.len())
}

fn karpathy_entries(split: Split, images: &[RenderedImage]) -> Vec<Value> {
    let name = split_name(split);
    images
        .iter()
        .map(|im| {
            let sentences: Vec<Value> = im.captions.iter().map(|(c, _)| json!({"raw": c, "tokens": c.trim_end_matches('.').split_whitespace().collect::<Vec<_>>()})).collect();
            json!({"filepath": name, "filename": im.file_name, "imgid": im.id, "cocoid": im.id, "split": name, "sentences": sentences})
        })
        .collect()
}

/// Generates the world described by `config` into `dir`, or reuses it when `dir/world.json`
/// holds the same configuration. The world is written into a temporary sibling folder and
/// renamed into place, so an interrupted run never leaves half a world; an existing folder
/// generated from another configuration is an error (it is not overwritten).
pub fn write_shapes_world(
    config: &ShapesWorldConfig,
    dir: &Path,
) -> Result<WorldSummary, DataError> {
    let marker = dir.join("world.json");
    if dir.exists() {
        let existing = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|text| serde_json::from_str::<WorldMarker>(&text).ok());
        return match existing {
            Some(existing) if &existing.config == config && existing.format == WORLD_FORMAT => Ok(WorldSummary { dir: dir.to_path_buf(), reused: true, counts: existing.counts }),
            _ => Err(DataError::Invalid(format!(
                "{} exists but was not generated from this configuration by this version ({} missing or different); remove it or choose another folder",
                dir.display(),
                marker.display()
            ))),
        };
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = parent.join(format!(
        ".{}.partial-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("world"),
        std::process::id()
    ));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let result = (|| {
        let mut corpus = Vec::new();
        let mut karpathy = Vec::new();
        let mut counts = WorldCounts::default();
        let mut first_id = 1;
        for (split, count) in [
            (Split::Train, config.train_images),
            (Split::Val, config.val_images),
            (Split::Test, config.test_images),
        ] {
            let images = generate_split(config, split, first_id, count)?;
            first_id += count as u64;
            write_split(&staging, split, &images, config, &mut corpus)?;
            counts.statements += write_nlvr2_split(&staging, split, &images, config, &mut corpus)?;
            karpathy.extend(karpathy_entries(split, &images));
            counts.images += images.len();
            counts.captions += images.iter().map(|im| im.captions.len()).sum::<usize>();
            counts.questions += images.iter().map(|im| im.questions.len()).sum::<usize>();
            counts.boxes += images
                .iter()
                .map(|im| im.scene.objects.len())
                .sum::<usize>();
        }
        write_json(
            &staging.join("dataset_shapes.json"),
            &json!({"dataset": "shapes", "images": karpathy}),
        )?;
        let mut text = Vec::new();
        for line in &corpus {
            writeln!(text, "{line}").expect("writing to memory");
        }
        write_file(&staging.join("corpus.txt"), &text)?;
        let marker = serde_json::to_string_pretty(&WorldMarker {
            format: WORLD_FORMAT,
            config: config.clone(),
            counts: counts.clone(),
        })
        .expect("the marker serialises");
        write_file(&staging.join("world.json"), marker.as_bytes())?;
        std::fs::rename(&staging, dir).map_err(io(dir))?;
        Ok(WorldSummary {
            dir: dir.to_path_buf(),
            reused: false,
            counts,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_seeded_and_objects_are_separated() {
        let a = Scene::random(96, 3, &mut StdRng::seed_from_u64(5));
        let b = Scene::random(96, 3, &mut StdRng::seed_from_u64(5));
        assert_eq!(a, b);
        for seed in 0..200 {
            let scene = Scene::random(96, 3, &mut StdRng::seed_from_u64(seed));
            assert!(!scene.objects.is_empty() && scene.objects.len() <= 3);
            for pair in scene.objects.windows(2) {
                assert!(
                    pair[1].centre.0 - pair[0].centre.0 >= 4.0,
                    "sorted left to right and apart"
                );
            }
            for o in &scene.objects {
                let b = o.bbox();
                assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 96.0 && b[3] <= 96.0);
            }
        }
    }

    #[test]
    fn rendered_objects_have_their_colour_inside_their_box() {
        let scene = Scene::random(96, 3, &mut StdRng::seed_from_u64(11));
        let pixels = scene.render(96);
        for o in &scene.objects {
            let (x, y) = (o.centre.0 as usize, o.centre.1 as usize);
            let rgb = &pixels[(y * 96 + x) * 3..(y * 96 + x) * 3 + 3];
            let want = COLOURS[o.colour].1;
            for c in 0..3 {
                assert!(
                    (rgb[c] as f32 / 255.0 - want[c]).abs() <= 0.05,
                    "{} at its centre: {rgb:?}",
                    o.phrase()
                );
            }
        }
    }

    #[test]
    fn captions_name_every_object_at_its_span_and_answers_are_true() {
        for seed in 0..100 {
            let mut rng = StdRng::seed_from_u64(seed);
            let scene = Scene::random(96, 3, &mut rng);
            let (caption, spans) = scene.caption(&mut rng);
            for (o, &(s, e)) in scene.objects.iter().zip(&spans) {
                assert_eq!(
                    caption.chars().skip(s).take(e - s).collect::<String>(),
                    o.phrase(),
                    "{caption}"
                );
            }
            for q in scene.questions(3, &mut rng) {
                if q.text == "how many shapes are there?" {
                    assert_eq!(q.answer, scene.objects.len().to_string());
                }
                if let Some(rest) = q.text.strip_prefix("is there a ") {
                    let present = scene
                        .objects
                        .iter()
                        .any(|o| format!("{}?", o.category()) == rest);
                    assert_eq!(q.answer, yes_no(present), "{}", q.text);
                }
            }
        }
    }
}
