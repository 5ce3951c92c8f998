//! The phrases of a prompt: class names as the original writes them (`"person. bicycle. dog"`)
//! and the phrases of a free caption, each with its character span, for detection and phrase
//! grounding with [`super::Detector`].

use fiber_data::grounding::CharSpan;

use crate::error::HeadsError;

/// The class names of a prompt written as the original writes them, `"person. bicycle. dog"`
/// (names separated by full stops; blanks trimmed, empty names dropped).
pub fn parse_classes(text: &str) -> Vec<String> {
    text.split('.')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Words that end a phrase (prepositions, conjunctions and verbs of place).
const PHRASE_BREAKS: [&str; 28] = [
    "on", "in", "at", "of", "with", "and", "or", "to", "from", "by", "under", "over", "above",
    "below", "behind", "beside", "near", "next", "is", "are", "was", "were", "has", "have", "sits",
    "stands", "holding", "into",
];

/// Words dropped at the start of a phrase.
const ARTICLES: [&str; 5] = ["a", "an", "the", "some", "two"];

/// The phrases of a caption with their character spans: runs of words between punctuation and
/// break words (prepositions and conjunctions: "on", "and", "with", …), without leading
/// articles ("a red cup on a wooden table" → "red cup", "wooden table"). A simple stand-in for the noun-phrase chunker of GLIP's demo;
/// pass the phrases explicitly where it splits wrongly.
pub fn caption_phrases(caption: &str) -> Vec<(String, CharSpan)> {
    let chars: Vec<char> = caption.chars().collect();
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut breaks_after: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_alphanumeric() || chars[i] == '-' || chars[i] == '\'' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '-' || chars[i] == '\'')
            {
                i += 1;
            }
            words.push((start, i));
            breaks_after.push(false);
        } else {
            if !chars[i].is_whitespace() {
                if let Some(last) = breaks_after.last_mut() {
                    *last = true;
                }
            }
            i += 1;
        }
    }
    let text = |(s, e): (usize, usize)| chars[s..e].iter().collect::<String>();
    let mut phrases = Vec::new();
    let mut current: Vec<(usize, usize)> = Vec::new();
    let mut flush = |current: &mut Vec<(usize, usize)>| {
        while current
            .first()
            .is_some_and(|&w| ARTICLES.contains(&text(w).to_lowercase().as_str()))
        {
            current.remove(0);
        }
        if let (Some(first), Some(last)) = (current.first(), current.last()) {
            let span = (first.0, last.1);
            phrases.push((text(span), span));
        }
        current.clear();
    };
    for (w, &word) in words.iter().enumerate() {
        if PHRASE_BREAKS.contains(&text(word).to_lowercase().as_str()) {
            flush(&mut current);
        } else {
            current.push(word);
        }
        if breaks_after[w] {
            flush(&mut current);
        }
    }
    flush(&mut current);
    phrases
}

/// The phrases to ground in `caption`: `phrases` located in it (the first occurrence of
/// each), or, when none are given, those [`caption_phrases`] finds; an error names a phrase
/// the caption does not contain, or says that no phrase was found.
pub fn phrase_spans<S: AsRef<str>>(
    caption: &str,
    phrases: &[S],
) -> Result<Vec<(String, CharSpan)>, HeadsError> {
    let found: Vec<(String, CharSpan)> = if phrases.is_empty() {
        caption_phrases(caption)
    } else {
        phrases
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let start = caption.find(p).ok_or_else(|| {
                    HeadsError::Invalid(format!(
                        "the phrase `{p}` is not in the caption `{caption}`"
                    ))
                })?;
                let start = caption[..start].chars().count();
                Ok((p.to_string(), (start, start + p.chars().count())))
            })
            .collect::<Result<_, HeadsError>>()?
    };
    if found.is_empty() {
        return Err(HeadsError::Invalid(format!(
            "no phrase found in the caption `{caption}`; name the phrases to ground"
        )));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_split_into_phrases_at_prepositions_and_punctuation() {
        let phrases = caption_phrases("a red cup on a wooden table");
        assert_eq!(
            phrases,
            vec![
                ("red cup".to_string(), (2, 9)),
                ("wooden table".to_string(), (15, 27))
            ]
        );
        let shapes =
            caption_phrases("a small red circle, a large blue square and a green triangle.");
        let names: Vec<&str> = shapes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["small red circle", "large blue square", "green triangle"]
        );
        assert!(caption_phrases("on the ...").is_empty());
        assert_eq!(
            parse_classes("person. bicycle.  hot dog. "),
            ["person", "bicycle", "hot dog"]
        );
    }

    #[test]
    fn named_phrases_are_located_in_the_caption_by_characters() {
        let spans = phrase_spans("a café table and a cup", &["cup", "café table"]).unwrap();
        assert_eq!(spans[0], ("cup".to_string(), (19, 22)));
        assert_eq!(spans[1], ("café table".to_string(), (2, 12)));
        let missing = phrase_spans("a red cup", &["plate"])
            .unwrap_err()
            .to_string();
        assert!(missing.contains("`plate`"), "{missing}");
        assert!(phrase_spans::<&str>("on the ...", &[]).is_err());
    }
}
