//! The sequence metrics of `shadergrad::scoring` against sacreBLEU: the BLEU statistics
//! and chrF of every case in `tests/data/sacrebleu/cases.json` (written by
//! `scripts/sacrebleu-reference.py` from sacreBLEU's unrounded results) within 1e-9, and
//! the token error rates the script computed with a plain Levenshtein. Then edit distance,
//! exact match and the errors, on cases small enough to check by hand.

use std::path::Path;

use serde::Deserialize;
use shadergrad::scoring::{
    corpus_bleu, corpus_chrf, edit_distance, exact_match, token_error_rate, Bleu,
};

/// The largest difference allowed from sacreBLEU, on scores and precisions in 0..100.
const TOLERANCE: f64 = 1e-9;

#[derive(Deserialize)]
struct Cases {
    sacrebleu_version: String,
    corpus: Vec<CorpusCase>,
    token_error_rate: Vec<TokenCase>,
}

#[derive(Deserialize)]
struct CorpusCase {
    name: String,
    hypotheses: Vec<String>,
    references: Vec<String>,
    bleu: SacreBleu,
    chrf: f64,
    exact_match: f64,
}

/// The fields of sacreBLEU's `BLEUScore`, under its names.
#[derive(Deserialize)]
struct SacreBleu {
    score: f64,
    precisions: [f64; 4],
    bp: f64,
    sys_len: usize,
    ref_len: usize,
}

#[derive(Deserialize)]
struct TokenCase {
    name: String,
    hypotheses: Vec<Vec<String>>,
    references: Vec<Vec<String>>,
    rate: f64,
}

fn cases() -> Cases {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sacrebleu/cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases: Cases = serde_json::from_str(&text).unwrap();
    assert!(
        cases.corpus.len() >= 12,
        "only {} corpus cases",
        cases.corpus.len()
    );
    cases
}

impl CorpusCase {
    fn texts(&self) -> (Vec<&str>, Vec<&str>) {
        (
            self.hypotheses.iter().map(String::as_str).collect(),
            self.references.iter().map(String::as_str).collect(),
        )
    }
}

/// Checks each `(what, ours, sacreBLEU's)` of every case within [`TOLERANCE`], failing
/// with the list of those that are not, and returns the largest difference.
fn assert_all_close(metric: &str, values: &[(String, f64, f64)]) -> f64 {
    let mut largest: f64 = 0.0;
    let mut failures = Vec::new();
    for (what, ours, theirs) in values {
        let difference = (ours - theirs).abs();
        largest = largest.max(difference);
        if difference.is_nan() || difference > TOLERANCE {
            failures.push(format!("{what}: {ours} here, {theirs} in sacreBLEU"));
        }
    }
    assert!(failures.is_empty(), "{metric}:\n{}", failures.join("\n"));
    eprintln!("{metric}: largest difference from sacreBLEU {largest:e}");
    largest
}

#[test]
fn bleu_matches_sacrebleu() {
    let cases = cases();
    let mut values = Vec::new();
    for case in &cases.corpus {
        let (hypotheses, references) = case.texts();
        let bleu: Bleu = corpus_bleu(&hypotheses, &references).unwrap();
        let expected = &case.bleu;
        let name = &case.name;
        assert_eq!(
            (bleu.hypothesis_length, bleu.reference_length),
            (expected.sys_len, expected.ref_len),
            "{name}: (hypothesis, reference) lengths, sacreBLEU {}",
            cases.sacrebleu_version
        );
        values.push((format!("{name} score"), bleu.score, expected.score));
        values.push((format!("{name} bp"), bleu.brevity_penalty, expected.bp));
        for (n, (&ours, &theirs)) in bleu.precisions.iter().zip(&expected.precisions).enumerate() {
            values.push((format!("{name} {}-gram precision", n + 1), ours, theirs));
        }
    }
    assert_all_close("BLEU", &values);
}

#[test]
fn chrf_matches_sacrebleu() {
    let values: Vec<_> = cases()
        .corpus
        .iter()
        .map(|case| {
            let (hypotheses, references) = case.texts();
            let chrf = corpus_chrf(&hypotheses, &references).unwrap();
            (case.name.clone(), chrf.score, case.chrf)
        })
        .collect();
    assert_all_close("chrF", &values);
}

#[test]
fn exact_match_matches_the_script() {
    for case in &cases().corpus {
        let (hypotheses, references) = case.texts();
        let fraction = exact_match(&hypotheses, &references).unwrap();
        assert_eq!(fraction, case.exact_match, "{}", case.name);
    }
}

#[test]
fn token_error_rate_matches_the_script() {
    for case in &cases().token_error_rate {
        let rate = token_error_rate(case.hypotheses.iter().zip(&case.references)).unwrap();
        assert!(
            (rate - case.rate).abs() <= 1e-12,
            "{}: {rate} here, {} in the script",
            case.name,
            case.rate
        );
    }
}

#[test]
fn edit_distance_of_known_pairs() {
    let chars = |s: &str| s.chars().collect::<Vec<_>>();
    for (a, b, distance) in [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("intention", "execution", 5),
        ("", "abc", 3),
        ("abc", "", 3),
        ("", "", 0),
        ("same", "same", 0),
        ("ab", "ba", 2),
        ("a", "b", 1),
    ] {
        assert_eq!(edit_distance(&chars(a), &chars(b)), distance, "{a:?} {b:?}");
        assert_eq!(edit_distance(&chars(b), &chars(a)), distance, "{b:?} {a:?}");
    }
    let words = |s: &'static str| s.split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        edit_distance(&words("the cat sat"), &words("a cat sat down")),
        2
    );
}

#[test]
fn exact_match_counts_identical_strings() {
    assert_eq!(
        exact_match(&["a", "b", "c", "d"], &["a", "x", "c", "d "]).unwrap(),
        0.5
    );
    assert_eq!(exact_match(&[""], &[""]).unwrap(), 1.0);
    assert_eq!(exact_match(&["Hello"], &["hello"]).unwrap(), 0.0);
}

#[test]
fn token_error_rate_takes_any_token_sequences() {
    let hypotheses = [vec!["a".to_string(), "b".to_string()]];
    let references = [vec!["a".to_string(), "c".to_string()]];
    assert_eq!(
        token_error_rate(hypotheses.iter().zip(&references)).unwrap(),
        0.5
    );
    let pairs: [(&[u32], &[u32]); 2] = [(&[1, 2, 3], &[1, 2, 3, 4]), (&[], &[5])];
    assert_eq!(token_error_rate(pairs).unwrap(), 0.4);
    let empty: [(&[u32], &[u32]); 2] = [(&[], &[]), (&[], &[])];
    assert_eq!(token_error_rate(empty).unwrap(), 0.0);
}

#[test]
fn errors_name_the_bad_counts() {
    let message = exact_match(&["a", "b"], &["a", "b", "c"])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("2 hypotheses but 3 references"),
        "{message}"
    );
    let message = corpus_bleu(&["a"], &[]).unwrap_err().to_string();
    assert!(
        message.contains("corpus_bleu") && message.contains("1 hypotheses but 0 references"),
        "{message}"
    );
    let message = corpus_chrf(&[], &["a", "b"]).unwrap_err().to_string();
    assert!(
        message.contains("corpus_chrf") && message.contains("0 hypotheses but 2 references"),
        "{message}"
    );

    for message in [
        exact_match(&[], &[]).unwrap_err().to_string(),
        corpus_bleu(&[], &[]).unwrap_err().to_string(),
        corpus_chrf(&[], &[]).unwrap_err().to_string(),
        token_error_rate(std::iter::empty::<(&[u8], &[u8])>())
            .unwrap_err()
            .to_string(),
    ] {
        assert!(message.contains("no sentences to score"), "{message}");
    }

    let pairs: [(&[u8], &[u8]); 2] = [(b"ab", b""), (b"c", b"")];
    let message = token_error_rate(pairs).unwrap_err().to_string();
    assert!(
        message.contains("the 2 references have no tokens but the hypotheses have 3"),
        "{message}"
    );
}
