//! Token levels for sequence-to-sequence text: characters, words and subwords round-trip
//! through ids, unseen tokens become UNK and are reported, vocabularies respect their
//! limits, byte-pair encoding learns the merges it should, and vocabularies survive a
//! checkpoint's JSON.

use shadergrad::data::text::{SPECIAL_TOKENS, UNK};
use shadergrad::data::tokens::{TokenLevel, TokenVocab, VocabLimits, WORD_START};
use shadergrad::rng::Rng;

fn learn(texts: &[&str], level: TokenLevel) -> TokenVocab {
    TokenVocab::learn(texts.iter().copied(), level, VocabLimits::default()).unwrap()
}

fn round_trip(vocab: &TokenVocab, text: &str) -> String {
    let (ids, unknown) = vocab.encode(text);
    assert!(unknown.is_empty(), "{text:?}: unknown {unknown:?}");
    vocab.decode(&ids)
}

const SENTENCES: [&str; 8] = [
    "The cat sat on the mat.",
    "Don't stop: it's 1,000.5 km (about 621 miles)!",
    "She said \"hello\" and left...",
    "¿Dónde está el baño? ¡Allí!",
    "HH AH0 L OW1",
    "l'homme qui rit, 3.14 et 42%",
    "数据 很 好。",
    "",
];

#[test]
fn characters_round_trip_exactly() {
    let vocab = learn(&SENTENCES, TokenLevel::Char);
    for text in SENTENCES {
        assert_eq!(round_trip(&vocab, text), text);
    }
    // Whitespace is kept as it is, runs and tabs included.
    let spaced = "a  b\tc ";
    let vocab = learn(&[spaced], TokenLevel::Char);
    assert_eq!(round_trip(&vocab, spaced), spaced);
    // All fit: code-point order, as the character vocabularies before token levels.
    let mut sorted = vocab.tokens().to_vec();
    sorted.sort();
    assert_eq!(vocab.tokens(), sorted);
}

#[test]
fn words_split_punctuation_and_keep_joined_words() {
    let vocab = learn(&SENTENCES, TokenLevel::Word);
    let words = |text: &str| vocab.tokenize(text);
    assert_eq!(
        words("Don't stop: it's 1,000.5 km (about 621 miles)!"),
        ["Don't", "stop", ":", "it's", "1,000.5", "km", "(", "about", "621", "miles", ")", "!"]
    );
    assert_eq!(words("HH AH0 L OW1"), ["HH", "AH0", "L", "OW1"]);
    assert_eq!(words("end. 3, 4"), ["end", ".", "3", ",", "4"]);
    assert_eq!(words("  "), Vec::<String>::new());
    // Text written with the usual spacing decodes back exactly.
    for text in SENTENCES {
        assert_eq!(round_trip(&vocab, text), text);
    }
}

/// Whatever the spacing of the input, the decoded text encodes to the same tokens: on
/// random strings of words, punctuation and whitespace.
#[test]
fn decoded_words_encode_to_the_same_tokens() {
    let pieces = [
        "a", "bc", "de'f", "7", "1.5", " ", " ", "  ", "\t", ",", ".", "!", "?", "(", ")", "\"",
        "'", "«", "»", "¿", "-", "…", "%", ":",
    ];
    let mut rng = Rng::new(5);
    for _ in 0..300 {
        let length = rng.below(12);
        let text: String = (0..length)
            .map(|_| pieces[rng.below(pieces.len())])
            .collect();
        let vocab = learn(&[&text], TokenLevel::Word);
        let tokens = vocab.tokenize(&text);
        let decoded = round_trip(&vocab, &text);
        assert_eq!(vocab.tokenize(&decoded), tokens, "{text:?} → {decoded:?}");
    }
}

#[test]
fn unseen_tokens_become_unk_and_are_reported_once() {
    let vocab = learn(&["the cat sat", "the hat"], TokenLevel::Word);
    let (ids, unknown) = vocab.encode("the dog saw the dog");
    assert_eq!(unknown, ["dog", "saw"]);
    assert_eq!(ids.iter().filter(|&&id| id == UNK).count(), 3);
    assert_eq!(vocab.decode(&ids), "the \u{FFFD} \u{FFFD} the \u{FFFD}");
    let chars = learn(&["abc"], TokenLevel::Char);
    let (_, unknown) = chars.encode("abxyx");
    assert_eq!(unknown, ["x", "y"]);
}

#[test]
fn max_vocab_keeps_the_most_frequent_tokens() {
    let texts = ["a a a b b c", "a b d"];
    let limits = VocabLimits {
        max_vocab: Some(SPECIAL_TOKENS + 2),
        ..VocabLimits::default()
    };
    let vocab = TokenVocab::learn(texts, TokenLevel::Word, limits).unwrap();
    assert_eq!(vocab.tokens(), ["a", "b"]);
    assert_eq!(vocab.len(), SPECIAL_TOKENS + 2);
    assert_eq!(vocab.encode("c a").1, ["c"]);
    let bpe = TokenVocab::learn(
        ["low lower lowest slow slower"],
        TokenLevel::Bpe,
        VocabLimits {
            max_vocab: Some(SPECIAL_TOKENS + 9),
            merges: 100,
        },
    )
    .unwrap();
    assert!(bpe.len() <= SPECIAL_TOKENS + 9, "{:?}", bpe.tokens());
    let message = TokenVocab::learn(
        texts,
        TokenLevel::Word,
        VocabLimits {
            max_vocab: Some(SPECIAL_TOKENS),
            ..VocabLimits::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(message.contains("at most 4 ids has no room"), "{message}");
}

/// Sennrich et al.'s example corpus: the merges come in the order of their counts.
#[test]
fn byte_pair_encoding_merges_the_most_frequent_pairs_first() {
    let corpus = [
        "low ".repeat(5),
        "lower ".repeat(2),
        "newest ".repeat(6),
        "widest ".repeat(3),
    ];
    let texts: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let vocab = TokenVocab::learn(
        texts.iter().copied(),
        TokenLevel::Bpe,
        VocabLimits {
            max_vocab: None,
            merges: 4,
        },
    )
    .unwrap();
    // Among equal counts the pair that sorts first: (l, o) before (o, w) before (▁, l).
    let pair = |l: &str, r: &str| (l.to_string(), r.to_string());
    assert_eq!(
        vocab.merges(),
        [
            pair("e", "s"),
            pair("es", "t"),
            pair("l", "o"),
            pair("lo", "w")
        ]
    );
    assert_eq!(
        vocab.tokenize("lowest newer"),
        ["▁", "low", "est", "▁", "n", "e", "w", "e", "r"]
    );
    // Learning stops when no pair occurs twice, whatever the limit.
    let all = TokenVocab::learn(
        texts.iter().copied(),
        TokenLevel::Bpe,
        VocabLimits {
            max_vocab: None,
            merges: 1000,
        },
    )
    .unwrap();
    assert!(all.merges().len() < 20, "{:?}", all.merges());
    for word in ["low", "lower", "newest", "widest"] {
        assert_eq!(all.tokenize(word), [format!("{WORD_START}{word}")]);
    }
}

#[test]
fn subwords_round_trip_unseen_words_of_known_characters() {
    let vocab = TokenVocab::learn(
        SENTENCES,
        TokenLevel::Bpe,
        VocabLimits {
            max_vocab: None,
            merges: 50,
        },
    )
    .unwrap();
    for text in SENTENCES {
        assert_eq!(round_trip(&vocab, text), text);
    }
    // New words made of known characters need no UNK.
    assert_eq!(round_trip(&vocab, "hello mat cat"), "hello mat cat");
    // Whitespace runs collapse; an unseen character is UNK.
    assert_eq!(round_trip(&vocab, "  the   cat "), "the cat");
    let (ids, unknown) = vocab.encode("the zebra");
    assert_eq!(unknown, ["z"]);
    assert_eq!(vocab.decode(&ids), "the \u{FFFD}ebra");
}

#[test]
fn vocabularies_survive_json_and_bad_json_is_refused() {
    for level in [TokenLevel::Char, TokenLevel::Word, TokenLevel::Bpe] {
        let vocab = learn(&SENTENCES, level);
        let back = TokenVocab::from_json(&vocab.to_json(), "source").unwrap();
        assert_eq!(back, vocab);
        assert_eq!(TokenLevel::parse(level.name()).unwrap(), level);
    }
    let bad = |value: serde_json::Value| {
        TokenVocab::from_json(&value, "target vocabulary")
            .unwrap_err()
            .to_string()
    };
    let message = bad(serde_json::json!({"level": "phoneme", "tokens": [], "merges": []}));
    assert!(
        message.contains("target vocabulary") && message.contains("\"phoneme\""),
        "{message}"
    );
    let message =
        bad(serde_json::json!({"level": "word", "tokens": ["a", "b", "a"], "merges": []}));
    assert!(message.contains("\"a\" appears twice"), "{message}");
    let message = bad(serde_json::json!({"level": "char", "tokens": ["ab"], "merges": []}));
    assert!(message.contains("not one character"), "{message}");
    let message =
        bad(serde_json::json!({"level": "bpe", "tokens": ["a", "b"], "merges": [["a", "b"]]}));
    assert!(
        message.contains("makes \"ab\", which is not a token"),
        "{message}"
    );
    let message = bad(serde_json::json!({"level": "word", "tokens": ["a"]}));
    assert!(message.contains("no \"merges\" list"), "{message}");
    let message = TokenLevel::parse("words").unwrap_err().to_string();
    assert!(message.contains("char, word, bpe"), "{message}");
}

#[test]
fn encoding_a_corpus_at_once_equals_encoding_each_text() {
    for level in [TokenLevel::Char, TokenLevel::Word, TokenLevel::Bpe] {
        let vocab = learn(&SENTENCES[..4], level);
        let (all, unknown) = vocab.encode_all(SENTENCES);
        let mut expected_unknown: Vec<String> = Vec::new();
        for (text, ids) in SENTENCES.iter().zip(&all) {
            let (one, missing) = vocab.encode(text);
            assert_eq!(*ids, one, "{level:?} {text:?}");
            for token in missing {
                if !expected_unknown.contains(&token) {
                    expected_unknown.push(token);
                }
            }
        }
        assert_eq!(unknown, expected_unknown, "{level:?}");
    }
}
