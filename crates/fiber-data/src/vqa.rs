//! VQAv2 (docs/model.md §4.1): questions + annotations, answers normalised as the official VQA
//! evaluation does, an answer vocabulary of answers seen at least N times (9 by default), and
//! soft scores 0 / 0.3 / 0.6 / 0.9 / 1.0 for 0 / 1 / 2 / 3 / ≥ 4 of the ten annotators.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::DataError;
use crate::paths::resolve_under;
use crate::problem::{ProblemKind, Problems};

/// Default minimum count of an answer to enter the vocabulary (3129 answers on VQAv2).
pub const DEFAULT_MIN_ANSWER_COUNT: usize = 9;

const PUNCTUATION: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

const NUMBERS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// The official evaluation's contraction table (spelling without apostrophe → with).
const CONTRACTIONS: [(&str, &str); 120] = [
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// Whether `text` contains a digit, a comma and a digit in a row (the evaluation's `commaStrip`).
fn has_digit_comma_digit(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit())
}

/// Normalises an answer as the official VQA evaluation (and ViLT/METER/FIBER's answer
/// vocabulary) does: punctuation removed or turned into spaces, periods not followed by a digit
/// dropped, lower case, number words to digits, articles removed, contractions restored,
/// commas removed.
pub fn normalize_answer(answer: &str) -> String {
    let text = answer.replace(['\n', '\t'], " ");
    let text = text.trim();
    let strip_all = has_digit_comma_digit(text);
    let mut out = text.to_string();
    for p in PUNCTUATION {
        let spaced = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        out = out.replace(p, if spaced || strip_all { "" } else { " " });
    }
    // periods not followed by a digit (the evaluation removes at most 32 of them)
    let chars: Vec<char> = out.chars().collect();
    let mut removed = 0;
    let mut without_periods = String::with_capacity(out.len());
    for (i, &c) in chars.iter().enumerate() {
        let next_is_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c == '.' && !next_is_digit && removed < 32 {
            removed += 1;
            continue;
        }
        without_periods.push(c);
    }
    let words: Vec<String> = without_periods
        .to_lowercase()
        .split_whitespace()
        .map(|w| {
            NUMBERS
                .iter()
                .find(|(k, _)| *k == w)
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| w.to_string())
        })
        .filter(|w| !ARTICLES.contains(&w.as_str()))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(k, _)| *k == w)
                .map(|(_, v)| v.to_string())
                .unwrap_or(w)
        })
        .collect();
    words.join(" ").replace(',', "")
}

/// Soft score of an answer given by `count` of the ten annotators (docs/model.md §4.1).
pub fn soft_score(count: usize) -> f32 {
    match count {
        0 => 0.0,
        1 => 0.3,
        2 => 0.6,
        3 => 0.9,
        _ => 1.0,
    }
}

/// One question with its image and its annotators' normalised answers.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaRecord {
    /// VQA question id.
    pub question_id: u64,
    /// COCO image id.
    pub image_id: u64,
    /// Resolved image path.
    pub image: PathBuf,
    /// The question.
    pub question: String,
    /// The normalised `multiple_choice_answer` (empty without annotations).
    pub answer: String,
    /// The annotators' normalised answers (empty without annotations).
    pub answers: Vec<String>,
    /// The annotation's `question_type`, or the question's first three words without one.
    pub question_type: String,
}

/// Answers that occur often enough, with their class indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerVocab {
    /// Answers by class index (most frequent first, ties alphabetical).
    pub answers: Vec<String>,
    index: HashMap<String, usize>,
}

impl AnswerVocab {
    /// Answers whose normalised `multiple_choice_answer` count over `records` is ≥ `min_count`.
    pub fn build(records: &[VqaRecord], min_count: usize) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for r in records.iter().filter(|r| !r.answer.is_empty()) {
            *counts.entry(r.answer.as_str()).or_default() += 1;
        }
        let mut kept: Vec<(&str, usize)> = counts
            .into_iter()
            .filter(|(_, c)| *c >= min_count)
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Self::from_answers(kept.into_iter().map(|(a, _)| a.to_string()).collect())
    }

    /// A vocabulary of `answers`, in this order (e.g. as saved with a trained model).
    pub fn from_answers(answers: Vec<String>) -> Self {
        let index = answers
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i))
            .collect();
        Self { answers, index }
    }

    /// Number of answers.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Class index of a normalised answer.
    pub fn get(&self, answer: &str) -> Option<usize> {
        self.index.get(answer).copied()
    }

    /// Soft targets of a record: (class, score) for each in-vocabulary answer given by at
    /// least one annotator. Empty when no answer is in the vocabulary (such questions are
    /// dropped from training).
    pub fn targets(&self, record: &VqaRecord) -> Vec<(usize, f32)> {
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for a in &record.answers {
            if let Some(class) = self.get(a) {
                *counts.entry(class).or_default() += 1;
            }
        }
        let mut targets: Vec<(usize, f32)> = counts
            .into_iter()
            .map(|(c, n)| (c, soft_score(n)))
            .collect();
        targets.sort_by_key(|t| t.0);
        targets
    }
}

#[derive(Deserialize)]
struct Question {
    question_id: u64,
    image_id: u64,
    question: String,
}

#[derive(Deserialize)]
struct Answer {
    answer: String,
}

#[derive(Deserialize)]
struct Annotation {
    question_id: u64,
    multiple_choice_answer: String,
    answers: Vec<Answer>,
    #[serde(default)]
    question_type: Option<String>,
}

/// Reads a VQA questions file and, when given, its annotations file. Images are
/// `{image_prefix}{image_id:012}.jpg` under `image_root` (e.g. `COCO_train2014_`).
pub fn read_vqa(
    questions: &Path,
    annotations: Option<&Path>,
    image_root: &Path,
    image_prefix: &str,
    problems: &mut Problems,
) -> Result<Vec<VqaRecord>, DataError> {
    let value: Value = fiber_core::json::read_json(questions)?;
    let list = value
        .get("questions")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            DataError::Invalid(format!("{}: no `questions` array", questions.display()))
        })?;
    let mut answers: HashMap<u64, Annotation> = HashMap::new();
    if let Some(file) = annotations {
        let value: Value = fiber_core::json::read_json(file)?;
        let list = value
            .get("annotations")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                DataError::Invalid(format!("{}: no `annotations` array", file.display()))
            })?;
        for (i, record) in list.iter().enumerate() {
            match serde_json::from_value::<Annotation>(record.clone()) {
                Ok(a) => {
                    answers.insert(a.question_id, a);
                }
                Err(e) => problems.push(
                    ProblemKind::MalformedRecord,
                    file,
                    format!("annotations[{i}]"),
                    e.to_string(),
                ),
            }
        }
    }
    let mut out = Vec::new();
    for (i, record) in list.iter().enumerate() {
        let location = format!("questions[{i}]");
        let q: Question = match serde_json::from_value(record.clone()) {
            Ok(q) => q,
            Err(e) => {
                problems.push(
                    ProblemKind::MalformedRecord,
                    questions,
                    location,
                    e.to_string(),
                );
                continue;
            }
        };
        if q.question.trim().is_empty() {
            problems.push(
                ProblemKind::EmptyText,
                questions,
                location,
                "empty question dropped",
            );
            continue;
        }
        let image =
            match resolve_under(image_root, &format!("{image_prefix}{:012}.jpg", q.image_id)) {
                Ok(path) => path,
                Err(message) => {
                    problems.push(ProblemKind::PathOutsideRoot, questions, location, message);
                    continue;
                }
            };
        let first_words = || {
            q.question
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (answer, given, question_type) = match (annotations, answers.remove(&q.question_id)) {
            (None, _) => (String::new(), Vec::new(), first_words()),
            (Some(_), Some(a)) => (
                normalize_answer(&a.multiple_choice_answer),
                a.answers
                    .iter()
                    .map(|x| normalize_answer(&x.answer))
                    .collect(),
                a.question_type.unwrap_or_else(first_words),
            ),
            (Some(file), None) => {
                problems.push(
                    ProblemKind::MalformedRecord,
                    file,
                    format!("question_id {}", q.question_id),
                    "question has no annotation",
                );
                continue;
            }
        };
        out.push(VqaRecord {
            question_id: q.question_id,
            image_id: q.image_id,
            image,
            question: q.question.trim().to_string(),
            answer,
            answers: given,
            question_type,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_normalised_as_the_official_evaluation() {
        assert_eq!(normalize_answer("Two"), "2");
        assert_eq!(normalize_answer("a dog."), "dog");
        assert_eq!(normalize_answer("Yes!"), "yes");
        assert_eq!(normalize_answer("isnt"), "isn't");
        assert_eq!(normalize_answer("1,000"), "1000");
        assert_eq!(normalize_answer("3.5"), "3.5");
        assert_eq!(normalize_answer("black-and-white"), "black and white");
        assert_eq!(normalize_answer("left , right"), "left right");
        assert_eq!(normalize_answer("  The  Red\tone "), "red 1");
    }

    #[test]
    fn soft_scores_follow_the_annotator_count() {
        assert_eq!(
            [0, 1, 2, 3, 4, 10].map(soft_score),
            [0.0, 0.3, 0.6, 0.9, 1.0, 1.0]
        );
    }
}
