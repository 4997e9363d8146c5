//! Answer normalisation exactly as the reference scorers do it: `normalize_word` of the
//! MedTrinity-25M repository (`llava/eval/eval_metrics/glossary.py`, itself the VQA
//! challenge's answer processing) and `clean_str` of multimedeval 1.0.0, which is the
//! same function with the lower-casing moved first. Python's string semantics are kept
//! where they differ from Rust's: `str.split()` whitespace, Unicode `\d`, and
//! `period_strip.sub("", s, re.UNICODE)`, which passes `re.UNICODE` (32) as the
//! replacement *count*, so only the first 32 periods are removed.

use std::sync::OnceLock;

use regex::Regex;

/// How many periods the reference removes at most (`re.UNICODE == 32` passed as `count`).
const PERIOD_LIMIT: usize = 32;

/// `normalize_word(token)`: punctuation removed or turned into spaces, periods not
/// followed by a digit removed, number words to digits, articles dropped, contractions
/// restored, words joined by single spaces, commas removed. Does not lower-case except
/// where the reference does (the word lookups run on lower-cased words).
pub fn normalize_word(token: &str) -> String {
    // Each punctuation mark is removed everywhere when it touches a space somewhere in
    // the input (or the input has a digit-comma-digit), otherwise turned into a space.
    // The marks are single characters that no replacement creates, so the reference's
    // one `replace` per mark is one pass here.
    let delete_all = digit_comma_digit().is_match(token);
    let delete: Vec<bool> = PUNCT
        .iter()
        .map(|&p| delete_all || touches_space(token, p))
        .collect();
    let mut text = String::with_capacity(token.len());
    for c in token.chars() {
        match PUNCT.iter().position(|&p| p == c) {
            Some(i) if delete[i] => {}
            Some(_) => text.push(' '),
            None => text.push(c),
        }
    }
    let text = strip_periods(&text);
    let lower = text.to_lowercase();
    let mut words: Vec<&str> = py_split(&lower)
        .map(|w| lookup(NUMBER_WORDS, w).unwrap_or(w))
        .filter(|w| !ARTICLES.contains(w))
        .collect();
    for w in &mut words {
        if let Some(c) = lookup(CONTRACTIONS, w) {
            *w = c;
        }
    }
    words.join(" ").replace(',', "")
}

/// `p + " " in token or " " + p in token`.
fn touches_space(token: &str, p: char) -> bool {
    let mut prev = None;
    for c in token.chars() {
        if (prev == Some(p) && c == ' ') || (prev == Some(' ') && c == p) {
            return true;
        }
        prev = Some(c);
    }
    false
}

/// multimedeval's `clean_str`: lower-case, then [`normalize_word`].
pub(crate) fn clean_str(token: &str) -> String {
    normalize_word(&token.to_lowercase())
}

/// Python's `str.split()` without arguments: runs of whitespace as Python defines it
/// (Unicode whitespace plus the separators U+001C..U+001F), no empty pieces.
pub(crate) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn lookup<'a>(table: &'a [(&str, &str)], word: &str) -> Option<&'a str> {
    table.iter().find(|(k, _)| *k == word).map(|(_, v)| *v)
}

/// `re.compile("(\d)(\,)(\d)")`: `\d` is any Unicode decimal digit, as in Python.
fn digit_comma_digit() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\d,\d").expect("valid regex"))
}

fn is_decimal_digit(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"^\d$").expect("valid regex"));
    c.is_ascii_digit() || (!c.is_ascii() && re.is_match(c.encode_utf8(&mut [0; 4])))
}

/// `period_strip.sub("", text, 32)` with `period_strip = "(?!<=\d)(\.)(?!\d)"`: the
/// first lookahead is a typo for a lookbehind and never fires at a period, so this
/// removes periods not followed by a digit, the first 32 of them.
fn strip_periods(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let before_digit = chars.peek().is_some_and(|&n| is_decimal_digit(n));
        if c == '.' && !before_digit && removed < PERIOD_LIMIT {
            removed += 1;
        } else {
            out.push(c);
        }
    }
    out
}

/// `contractions` of the reference glossary: a spelling without apostrophes -> the
/// contraction (keys with capitals never match, since words are lower-cased first).
pub(crate) const CONTRACTIONS: &[(&str, &str)] = &[
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

/// `manual_map`: number words -> digits.
pub(crate) const NUMBER_WORDS: &[(&str, &str)] = &[
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

/// `articles`: dropped words.
pub(crate) const ARTICLES: &[&str] = &["a", "an", "the"];

/// `punct`, in the order the reference applies them.
pub(crate) const PUNCT: &[char] = &[
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_reference_on_hand_checked_cases() {
        for (input, want) in [
            ("the left lung", "left lung"),
            ("two nodules.", "2 nodules"),
            ("1.5 cm", "1.5 cm"),
            ("dont know", "don't know"),
            ("yes, it is", "yes it is"),
            ("x-ray", "x ray"),
            ("a - b", "b"),
            ("3,000 cells", "3000 cells"),
            ("(left)", "left"),
            ("", ""),
            ("None", "0"),
            ("Im here", "im here"),
            ("ct\u{a0}scan", "ct scan"),
        ] {
            assert_eq!(normalize_word(input), want, "{input:?}");
        }
    }

    #[test]
    fn only_the_first_32_periods_go() {
        let text = ".".repeat(40);
        assert_eq!(
            normalize_word(&format!("a{text}b")),
            format!("a{}b", ".".repeat(8))
        );
    }

    #[test]
    fn python_whitespace_and_digits() {
        assert_eq!(
            py_split(" a\u{1f}b\u{3000}c ").collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        // Arabic-Indic digit: Python's \d matches it, so the period before it stays.
        assert_eq!(normalize_word("x.\u{663}"), "x.\u{663}");
    }
}
