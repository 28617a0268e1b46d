//! Metrics of a sequence model's outputs (hypotheses), each scored against one reference:
//! exact match, edit distance and the token error rate built on it (word error rate over
//! words, phoneme error rate over phonemes), and corpus BLEU and chrF computed exactly as
//! sacreBLEU computes them with its defaults, so that a score printed here can be compared
//! with a published one (tests/scoring.rs checks them against sacreBLEU 2.6.0).

use std::collections::HashMap;
use std::hash::Hash;

use crate::{Error, Result};

/// The fraction, in [0, 1], of hypotheses identical to their reference (byte for byte).
///
/// Errors if the two lists differ in length or are empty.
pub fn exact_match(hypotheses: &[&str], references: &[&str]) -> Result<f64> {
    check_corpus("exact_match", hypotheses.len(), references.len())?;
    let same = hypotheses
        .iter()
        .zip(references)
        .filter(|(hypothesis, reference)| hypothesis == reference)
        .count();
    Ok(same as f64 / hypotheses.len() as f64)
}

/// The Levenshtein distance between `a` and `b`: the fewest insertions, deletions and
/// substitutions (each costing 1) that turn one into the other. It keeps one row of the
/// dynamic-programming table, of the shorter sequence's length plus one.
pub fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    // row[j] is the distance between the prefix of `long` read so far and short[..j].
    let mut row: Vec<usize> = (0..=short.len()).collect();
    for (i, x) in long.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in short.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(x != y))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[short.len()]
}

/// The corpus token error rate of `(hypothesis, reference)` token sequences: the sum of
/// their edit distances over the sum of the references' lengths. Over words it is the word
/// error rate, over phonemes the phoneme error rate. It can exceed 1 when hypotheses are
/// longer than their references.
///
/// When every reference is empty the rate is 0 if every hypothesis is empty too, and an
/// error otherwise (a hypothesis token against no reference token is an undefined rate).
/// It is also an error to give no pairs at all.
///
/// ```
/// use shadergrad::scoring::token_error_rate;
///
/// let hypothesis: Vec<&str> = "HH EH0 L OW1".split_whitespace().collect();
/// let reference: Vec<&str> = "HH AH0 L OW1".split_whitespace().collect();
/// assert_eq!(token_error_rate([(&hypothesis, &reference)])?, 0.25);
/// # Ok::<(), shadergrad::Error>(())
/// ```
pub fn token_error_rate<T, H, R>(pairs: impl IntoIterator<Item = (H, R)>) -> Result<f64>
where
    T: PartialEq,
    H: AsRef<[T]>,
    R: AsRef<[T]>,
{
    let (mut count, mut edits, mut hypothesis_tokens, mut reference_tokens) = (0, 0, 0, 0);
    for (hypothesis, reference) in pairs {
        let (hypothesis, reference) = (hypothesis.as_ref(), reference.as_ref());
        count += 1;
        edits += edit_distance(hypothesis, reference);
        hypothesis_tokens += hypothesis.len();
        reference_tokens += reference.len();
    }
    if count == 0 {
        return Err(Error::invalid("token_error_rate", "no sentences to score"));
    }
    if reference_tokens == 0 {
        return if hypothesis_tokens == 0 {
            Ok(0.0)
        } else {
            Err(Error::invalid(
                "token_error_rate",
                format!(
                    "the {count} references have no tokens but the hypotheses have \
                     {hypothesis_tokens}: the error rate is undefined"
                ),
            ))
        };
    }
    Ok(edits as f64 / reference_tokens as f64)
}

/// A corpus BLEU score and the statistics it is made of, as sacreBLEU reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bleu {
    /// BLEU in [0, 100]: the brevity penalty times the geometric mean of `precisions`.
    pub score: f64,
    /// The (smoothed) 1- to 4-gram precisions, each in [0, 100].
    pub precisions: [f64; 4],
    /// exp(1 - reference_length / hypothesis_length) when the hypotheses are the shorter,
    /// else 1 (0 when they have no tokens at all).
    pub brevity_penalty: f64,
    /// The hypotheses' tokens (by the 13a tokenizer), in all.
    pub hypothesis_length: usize,
    /// The references' tokens (by the 13a tokenizer), in all.
    pub reference_length: usize,
}

/// Corpus BLEU of `hypotheses` against one reference each, exactly as
/// `sacrebleu.corpus_bleu(hypotheses, [references])` computes it with its defaults:
/// the "13a" tokenizer (mteval-v13a's, WMT's), case-sensitive, n-grams up to 4 and
/// "exp" smoothing (a precision with no match counts as 1 / (2^k × its n-gram count), for
/// the k-th such order). sacreBLEU's early exits are kept: BLEU is 0 when no unigram
/// matches, and when the hypotheses have no n-grams of some order (all shorter than 4
/// tokens, say), even if they equal their references.
///
/// Errors if the two lists differ in length or are empty.
pub fn corpus_bleu(hypotheses: &[&str], references: &[&str]) -> Result<Bleu> {
    check_corpus("corpus_bleu", hypotheses.len(), references.len())?;
    let (mut hypothesis_length, mut reference_length) = (0, 0);
    let mut correct = [0usize; 4];
    let mut total = [0usize; 4];
    for (hypothesis, reference) in hypotheses.iter().zip(references) {
        let hypothesis = tokenize_13a(hypothesis);
        let reference = tokenize_13a(reference);
        hypothesis_length += hypothesis.len();
        reference_length += reference.len();
        let reference_counts = ngram_counts(&reference, 1..=4);
        for (ngram, count) in ngram_counts(&hypothesis, 1..=4) {
            total[ngram.len() - 1] += count;
            if let Some(&in_reference) = reference_counts.get(ngram) {
                correct[ngram.len() - 1] += count.min(in_reference);
            }
        }
    }

    let brevity_penalty = if hypothesis_length >= reference_length {
        1.0
    } else if hypothesis_length > 0 {
        (1.0 - reference_length as f64 / hypothesis_length as f64).exp()
    } else {
        0.0
    };
    let mut bleu = Bleu {
        score: 0.0,
        precisions: [0.0; 4],
        brevity_penalty,
        hypothesis_length,
        reference_length,
    };
    if correct.iter().all(|&c| c == 0) {
        return Ok(bleu);
    }
    let mut smoothing = 1.0;
    for n in 0..4 {
        if total[n] == 0 {
            break;
        }
        bleu.precisions[n] = if correct[n] == 0 {
            smoothing *= 2.0;
            100.0 / (smoothing * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    // sacreBLEU's `my_log`: the log of a zero precision is -9999999999, not -inf, which
    // still sends the score to 0.
    let log_sum: f64 = bleu
        .precisions
        .iter()
        .map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() })
        .sum();
    bleu.score = brevity_penalty * (log_sum / 4.0).exp();
    Ok(bleu)
}

/// A corpus chrF score, as sacreBLEU reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chrf {
    /// chrF (β = 2) in [0, 100].
    pub score: f64,
}

/// Corpus chrF of `hypotheses` against one reference each, exactly as
/// `sacrebleu.corpus_chrf(hypotheses, [references])` computes it with its defaults:
/// character n-grams of orders 1 to 6 (no word n-grams: chrF, not chrF++), whitespace
/// removed before they are taken, β = 2, case-sensitive, and without eps smoothing. The
/// hypothesis, reference and matching n-gram counts of each order are summed over the
/// corpus (a hypothesis's n-grams count only where its reference has n-grams of that
/// order); precision and recall are then averaged over the orders where both the
/// hypotheses and the references have n-grams, and combined into one F-score.
///
/// Errors if the two lists differ in length or are empty.
pub fn corpus_chrf(hypotheses: &[&str], references: &[&str]) -> Result<Chrf> {
    const ORDER: usize = 6;
    const BETA_SQUARED: f64 = 4.0;
    check_corpus("corpus_chrf", hypotheses.len(), references.len())?;
    // [hypothesis n-grams, reference n-grams, matches] per order, over the corpus.
    let mut statistics = [[0usize; 3]; ORDER];
    for (hypothesis, reference) in hypotheses.iter().zip(references) {
        let hypothesis: Vec<char> = hypothesis
            .chars()
            .filter(|&c| !is_python_space(c))
            .collect();
        let reference: Vec<char> = reference.chars().filter(|&c| !is_python_space(c)).collect();
        for (n, [hypothesis_count, reference_count, matches]) in
            (1..=ORDER).zip(statistics.iter_mut())
        {
            let reference_counts = ngram_counts(&reference, n..=n);
            if reference_counts.is_empty() {
                continue;
            }
            *reference_count += reference_counts.values().sum::<usize>();
            for (ngram, count) in ngram_counts(&hypothesis, n..=n) {
                *hypothesis_count += count;
                if let Some(&in_reference) = reference_counts.get(ngram) {
                    *matches += count.min(in_reference);
                }
            }
        }
    }

    let (mut precision, mut recall, mut orders) = (0.0, 0.0, 0);
    for &[hypothesis_count, reference_count, matches] in &statistics {
        if hypothesis_count > 0 && reference_count > 0 {
            precision += matches as f64 / hypothesis_count as f64;
            recall += matches as f64 / reference_count as f64;
            orders += 1;
        }
    }
    if orders > 0 {
        precision /= orders as f64;
        recall /= orders as f64;
    }
    let score = if precision + recall != 0.0 {
        100.0 * ((1.0 + BETA_SQUARED) * precision * recall / (BETA_SQUARED * precision + recall))
    } else {
        0.0
    };
    Ok(Chrf { score })
}

/// Checks that a corpus has one reference per hypothesis and at least one of each.
fn check_corpus(op: &'static str, hypotheses: usize, references: usize) -> Result<()> {
    if hypotheses != references {
        return Err(Error::invalid(
            op,
            format!(
                "{hypotheses} hypotheses but {references} references: each hypothesis needs \
                 exactly one reference"
            ),
        ));
    }
    if hypotheses == 0 {
        return Err(Error::invalid(op, "no sentences to score"));
    }
    Ok(())
}

/// The counts of the n-grams of `tokens` of every order in `orders`.
fn ngram_counts<T: Eq + Hash>(
    tokens: &[T],
    orders: std::ops::RangeInclusive<usize>,
) -> HashMap<&[T], usize> {
    let mut counts = HashMap::new();
    for n in orders {
        for ngram in tokens.windows(n) {
            *counts.entry(ngram).or_insert(0) += 1;
        }
    }
    counts
}

/// Python's `str.isspace`, by which sacreBLEU splits words and strips whitespace: Rust's
/// `char::is_whitespace` and the four ASCII separators U+001C to U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The tokens of `line` by sacreBLEU's "13a" tokenizer (mteval-v13a's), after the
/// `rstrip()` sacreBLEU applies first.
fn tokenize_13a(line: &str) -> Vec<String> {
    let line = line
        .trim_end_matches(is_python_space)
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    // tokenizer_re.py's first regex: every ASCII symbol but the apostrophe, comma, hyphen
    // and period becomes a token of its own. (Its class also pads spaces, which the final
    // split undoes.) The line is padded with a space at each end, as 13a does.
    let mut chars = vec![' '];
    for c in line.chars() {
        if c.is_ascii_punctuation() && !matches!(c, '\'' | ',' | '-' | '.') {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    chars.push(' ');
    let is_digit = |c: char| c.is_ascii_digit();
    let is_period_or_comma = |c: char| c == '.' || c == ',';
    // A period or comma is split off unless it stands between digits ("1,000.5").
    let chars = split_pairs(&chars, |a, b| !is_digit(a) && is_period_or_comma(b), true);
    let chars = split_pairs(&chars, |a, b| is_period_or_comma(a) && !is_digit(b), false);
    // A hyphen after a digit is split off.
    let chars = split_pairs(&chars, |a, b| is_digit(a) && b == '-', true);
    chars
        .split(|&c| is_python_space(c))
        .filter(|word| !word.is_empty())
        .map(|word| word.iter().collect())
        .collect()
}

/// Python's `re.sub` of a two-character pattern over `chars`: each leftmost
/// non-overlapping pair (a, b) for which `matches(a, b)` holds is spaced as "a b " when
/// `space_after` is true (`r'\1 \2 '`), else as " a b" (`r' \1 \2'`).
fn split_pairs(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    space_after: bool,
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        match chars.get(i + 1) {
            Some(&b) if matches(chars[i], b) => {
                if space_after {
                    out.extend([chars[i], ' ', b, ' ']);
                } else {
                    out.extend([' ', chars[i], ' ', b]);
                }
                i += 2;
            }
            _ => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_13a_follows_mteval() {
        let tokens = tokenize_13a("He said &quot;1,000.5 km&quot; (roughly), isn't it?  ");
        assert_eq!(
            tokens,
            [
                "He", "said", "\"", "1,000.5", "km", "\"", "(", "roughly", ")", ",", "isn't", "it",
                "?"
            ]
        );
        assert_eq!(
            tokenize_13a("well-\nknown 1990-2000."),
            ["wellknown", "1990", "-", "2000", "."]
        );
        assert_eq!(tokenize_13a("a<skipped>b ..."), ["ab", ".", ".", "."]);
        assert!(tokenize_13a(" \t\u{1f}").is_empty());
    }

    #[test]
    fn split_pairs_does_not_overlap() {
        let chars: Vec<char> = "x..".chars().collect();
        let spaced = split_pairs(&chars, |a, b| a != '0' && b == '.', true);
        assert_eq!(spaced.iter().collect::<String>(), "x . .");
    }
}
