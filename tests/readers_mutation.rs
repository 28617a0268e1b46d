//! A seeded mutation test of every reader a user feeds: TSV pairs (train-seq2seq), labelled
//! TSV (train-cnn), CSV (train-mlp) and plain text (train-lm). Each starts from valid files
//! and reads thousands of mutants of them: bytes flipped, tabs, line breaks, NUL, carriage
//! returns, byte order marks and bytes that are not UTF-8 put in, numbers too large, NaN and
//! infinities, negative and huge labels, lines cut short, repeated and made very long.
//!
//! Every mutant must give `Ok` holding the reader's documented invariants, or an error whose
//! message names the file; a panic, an abort or a hang fails the test. A mutant goes through
//! what a reader does after reading the file's bytes: decoding them as UTF-8
//! ([`decode_text`]), then parsing the text. A failure prints the mutant, reproducible from
//! its seed.

use std::path::Path;

use shadergrad::data::classify::{
    parse_labelled_tsv, tokenize, LabelledText, MAX_LABEL_CHARS, MAX_TEXT_WORDS,
};
use shadergrad::data::corpus::parse_text;
use shadergrad::data::points::{parse_csv, MAX_FEATURES, MAX_LABEL};
use shadergrad::data::text::{parse_tsv, Pair, MAX_SEQUENCE_CHARS};
use shadergrad::data::{Dataset, Parsed, Warning};
use shadergrad::files::decode_text;
use shadergrad::rng::Rng;

const MUTANTS_PER_READER: u64 = 4000;

/// One reader under test: valid files to start from, and how to read a mutant.
struct Reader {
    name: &'static str,
    valid_files: &'static [&'static str],
    /// Fragments this reader's format gives meaning to, put into mutants.
    fragments: &'static [&'static str],
    /// Reads a mutant as the file `path` and judges the outcome.
    read: fn(&[u8], &Path) -> Outcome,
}

/// What became of a mutant.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Read, and the data holds the reader's invariants.
    Read,
    /// Refused with an error naming the file.
    Refused,
    /// A promise broken: invariants that do not hold, or an error that names no file.
    Broken(String),
}

const COMMON_FRAGMENTS: &[&str] = &[
    "\t", "\n", "\r", "\r\n", "\0", "\u{feff}", ",", " ", "é", "日本", "\t\t", "\n\n",
];

const READERS: [Reader; 4] = [
    Reader {
        name: "pairs.tsv",
        valid_files: &[
            "abc\tcba\nhello world\tdlrow olleh\n535+61\t596\n",
            "\u{feff}ü\tu\r\n\r\n x\ty \r\nMarch 5, 2021\t2021-03-05\r\n",
        ],
        fragments: &["a\tb", "\t\t\t", "  \t  "],
        read: read_pairs,
    },
    Reader {
        name: "texts.tsv",
        valid_files: &[
            "pos\tGreat fun!\nneg\tdull and slow\nneutral\tnot very good\n",
            "\u{feff}spam\tWIN a prize now\r\n\r\nham\tsee you at 5\tok\r\n",
        ],
        fragments: &["-1", "99999999999999999999", "label\t", "don't", "!!"],
        read: read_texts,
    },
    Reader {
        name: "points.csv",
        valid_files: &[
            "x,y,label\n0.5,-1.25,1\n3,1e-3,0\n-2,4,2\n",
            "\u{feff}0.5 , -1.25,\t1\r\n\r\n3,.001,0.0\r\n-2,4,+2\r\n",
        ],
        fragments: &[
            "1e39",
            "-1e400",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "1e-50",
            "-0",
            "-1",
            "65535",
            "65536",
            "4294967296",
            "99999999999999999999",
            "0.5",
            "+",
            "e",
            "1,2,3,",
        ],
        read: read_points,
    },
    Reader {
        name: "corpus.txt",
        valid_files: &[
            "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind\n",
            "\u{feff}First Citizen:\r\nBefore we proceed any further, hear me speak.\r\n",
        ],
        fragments: &["  ", "\r\r\n"],
        read: read_corpus,
    },
];

#[test]
fn every_mutant_reads_to_valid_data_or_an_error_naming_the_file() {
    for (number, reader) in READERS.iter().enumerate() {
        let path = Path::new("data").join(reader.name);
        let (mut read, mut refused) = (0, 0);
        for mutant in 0..MUTANTS_PER_READER {
            let seed = ((number as u64) << 32) | mutant;
            let bytes = mutate(reader, &mut Rng::new(seed));
            match (reader.read)(&bytes, &path) {
                Outcome::Read => read += 1,
                Outcome::Refused => refused += 1,
                Outcome::Broken(why) => panic!(
                    "{} mutant of seed {seed}: {why}\nthe mutant: {:?}",
                    reader.name,
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
        // Both outcomes are common, or the mutations test little.
        assert!(
            read > 100 && refused > 100,
            "{}: {read} mutants read, {refused} refused",
            reader.name
        );
    }
}

/// A valid file of `reader` changed by one to three random mutations.
fn mutate(reader: &Reader, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = reader.valid_files[rng.below(reader.valid_files.len())]
        .as_bytes()
        .to_vec();
    for _ in 0..1 + rng.below(3) {
        mutate_once(&mut bytes, reader, rng);
    }
    bytes
}

fn mutate_once(bytes: &mut Vec<u8>, reader: &Reader, rng: &mut Rng) {
    let at = rng.below(bytes.len() + 1);
    let last = bytes.len().saturating_sub(1);
    match rng.below(10) {
        // A bit flipped, or a byte replaced: often bytes that are not UTF-8.
        0 if !bytes.is_empty() => bytes[at.min(last)] ^= 1 << rng.below(8),
        1 if !bytes.is_empty() => bytes[at.min(last)] = rng.below(256) as u8,
        // A fragment of the format, or of trouble, put in.
        2 | 3 => {
            let fragments = if rng.below(2) == 0 {
                COMMON_FRAGMENTS
            } else {
                reader.fragments
            };
            let fragment = fragments[rng.below(fragments.len())];
            bytes.splice(at..at, fragment.bytes());
        }
        // Bytes that are never UTF-8, or start a sequence they do not finish.
        4 => {
            let invalid: [&[u8]; 4] = [b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80"];
            bytes.splice(at..at, invalid[rng.below(invalid.len())].iter().copied());
        }
        // The file cut short, or a piece of it cut out.
        5 => bytes.truncate(at),
        6 => {
            let end = (at + rng.below(12)).min(bytes.len());
            bytes.drain(at..end);
        }
        // A line repeated.
        7 => {
            let line = line_around(bytes, at);
            let copy = bytes[line.clone()].to_vec();
            bytes.splice(line.start..line.start, copy);
        }
        // A very long run of characters, words or features, around and past the limits.
        8 => {
            let run: &[u8] = match rng.below(3) {
                0 => b"x",
                1 => b"w ",
                _ => b"0.5,",
            };
            let repeats = match rng.below(4) {
                0 => MAX_FEATURES + rng.below(3),
                _ => MAX_SEQUENCE_CHARS.min(MAX_TEXT_WORDS) + rng.below(2 * MAX_TEXT_WORDS),
            };
            bytes.splice(at..at, run.repeat(repeats));
        }
        // Two lines swapped, or nothing but blank lines.
        _ => {
            if rng.below(8) == 0 {
                *bytes = b"\n \r\n\t\n".to_vec();
            } else {
                let first = line_around(bytes, at);
                let second = line_around(bytes, rng.below(bytes.len() + 1));
                if first.end <= second.start {
                    let (one, two) = (
                        bytes[first.clone()].to_vec(),
                        bytes[second.clone()].to_vec(),
                    );
                    bytes.splice(second, one);
                    bytes.splice(first, two);
                }
            }
        }
    }
}

/// The byte range of the line holding byte `at`, its "\n" included.
fn line_around(bytes: &[u8], at: usize) -> std::ops::Range<usize> {
    let at = at.min(bytes.len());
    let start = bytes[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let end = bytes[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| at + i + 1);
    start..end
}

/// Reads `bytes` as the user's file `path` would be read (the readers decode the bytes as
/// [`decode_text`] does, then parse the text); `check` judges what was read from the text.
fn read_with<T>(
    bytes: &[u8],
    path: &Path,
    parse: fn(&str, &Path) -> shadergrad::Result<Parsed<T>>,
    check: impl Fn(&T, &str) -> Result<(), String>,
) -> Outcome {
    let text = match decode_text(bytes.to_vec(), path) {
        Ok(text) => text,
        Err(error) => return refusal(&error, path),
    };
    match parse(&text, path) {
        Ok(parsed) => match check_warnings(&parsed.warnings, &text, path)
            .and_then(|()| check(&parsed.contents, &text))
        {
            Ok(()) => Outcome::Read,
            Err(why) => Outcome::Broken(why),
        },
        Err(error) => refusal(&error, path),
    }
}

/// An error must start with the file's name, then say something.
fn refusal(error: &shadergrad::Error, path: &Path) -> Outcome {
    let message = error.to_string();
    let named = format!("{}: ", path.display());
    if message.starts_with(&named) && message.len() > named.len() {
        Outcome::Refused
    } else {
        Outcome::Broken(format!("the error {message:?} does not name the file"))
    }
}

/// One warning, naming the file, exactly when the text holds NUL bytes.
fn check_warnings(warnings: &[Warning], text: &str, path: &Path) -> Result<(), String> {
    let nul_bytes = text.bytes().filter(|&b| b == 0).count();
    match warnings {
        [] if nul_bytes == 0 => Ok(()),
        [Warning::NulBytes {
            path: named, count, ..
        }] if named == path && *count == nul_bytes => Ok(()),
        _ => Err(format!(
            "warnings {warnings:?} for a text of {nul_bytes} NUL bytes"
        )),
    }
}

fn read_pairs(bytes: &[u8], path: &Path) -> Outcome {
    read_with(bytes, path, parse_tsv, |pairs, _| check_pairs(pairs))
}

fn read_texts(bytes: &[u8], path: &Path) -> Outcome {
    read_with(bytes, path, parse_labelled_tsv, |examples, _| {
        check_texts(examples)
    })
}

fn read_points(bytes: &[u8], path: &Path) -> Outcome {
    read_with(bytes, path, parse_csv, |data, _| check_points(data))
}

fn read_corpus(bytes: &[u8], path: &Path) -> Outcome {
    read_with(bytes, path, parse_text, |contents, text| {
        check_corpus(contents, text)
    })
}

/// At least one pair; every source and target non-empty, within the limit, on one line of
/// its own and free of tabs.
fn check_pairs(pairs: &[Pair]) -> Result<(), String> {
    if pairs.is_empty() {
        return Err("no pairs".into());
    }
    for pair in pairs {
        for side in [&pair.source, &pair.target] {
            let chars = side.chars().count();
            if chars == 0 || chars > MAX_SEQUENCE_CHARS || side.contains(['\t', '\n', '\r']) {
                return Err(format!("the pair {pair:?}"));
            }
        }
    }
    Ok(())
}

/// At least one example; every label a trimmed class name within its limit; every text of
/// one line, with words within the limit.
fn check_texts(examples: &[LabelledText]) -> Result<(), String> {
    if examples.is_empty() {
        return Err("no examples".into());
    }
    for example in examples {
        let label = &example.label;
        let words = tokenize(&example.text).len();
        if label.is_empty()
            || label.trim() != label
            || label.chars().count() > MAX_LABEL_CHARS
            || label.contains(['\t', '\n', '\r'])
            || !(1..=MAX_TEXT_WORDS).contains(&words)
            || example.text.contains(['\n', '\r'])
        {
            return Err(format!("the example {example:?}"));
        }
    }
    Ok(())
}

/// A consistent dataset of finite features within the limit, and of two labels or more,
/// each within the classes and the largest label allowed.
fn check_points(data: &Dataset) -> Result<(), String> {
    data.validate().map_err(|error| error.to_string())?;
    let distinct: std::collections::BTreeSet<u32> = data.labels.iter().copied().collect();
    let largest = distinct.last().copied();
    if data.n < 2
        || !(1..=MAX_FEATURES).contains(&data.dim)
        || data.features.iter().any(|value| !value.is_finite())
        || distinct.len() < 2
        || largest.map(|label| label as usize + 1) != Some(data.classes)
        || largest > Some(MAX_LABEL)
    {
        return Err(format!(
            "{} examples of {} features, {} classes, labels {distinct:?}",
            data.n, data.dim, data.classes
        ));
    }
    Ok(())
}

/// Some text beyond whitespace, with every line break kept.
fn check_corpus(contents: &str, text: &str) -> Result<(), String> {
    let line_breaks = |text: &str| text.matches('\n').count();
    if contents.trim().is_empty() || line_breaks(contents) != line_breaks(text) {
        return Err(format!("the text {contents:?}"));
    }
    Ok(())
}

#[test]
fn the_valid_files_read() {
    for reader in &READERS {
        for file in reader.valid_files {
            let outcome = (reader.read)(file.as_bytes(), Path::new(reader.name));
            assert_eq!(outcome, Outcome::Read, "{}: {file:?}", reader.name);
        }
    }
}
