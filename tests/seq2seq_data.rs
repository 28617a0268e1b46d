//! Sequence-to-sequence data: the built-in tasks, the vocabulary, TSV files, the split and the
//! bucketed batches. Every claim is checked against a computation made here (a date parser,
//! sums, a layout walk), not by the code under test.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use shadergrad::data::text::{
    bucketed_batches, longest, read_tsv, split_pairs, write_tsv, Bucketing, EncodedPair, Pair,
    SeqBatch, Task, Vocab, BOS, EOS, PAD, SPECIAL_TOKENS, UNK,
};
use shadergrad::data::tokens::{PairVocab, PairVocabSpec};
use shadergrad::rng::Rng;
use shadergrad::Error;

/// A fresh folder for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("s2s-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pair(source: &str, target: &str) -> Pair {
    Pair {
        source: source.into(),
        target: target.into(),
    }
}

fn all_tasks() -> [Task; 5] {
    [
        Task::Addition {
            digits: 3,
            reverse_input: false,
        },
        Task::Addition {
            digits: 2,
            reverse_input: true,
        },
        Task::Reverse,
        Task::Sort,
        Task::Dates,
    ]
}

#[test]
fn generation_is_deterministic_and_held_out() {
    for task in all_tasks() {
        let (train, valid) = task.generate(300, 60, 11).unwrap();
        assert_eq!((train.len(), valid.len()), (300, 60), "{task:?}");
        assert_eq!(
            task.generate(300, 60, 11).unwrap(),
            (train.clone(), valid.clone())
        );
        assert_ne!(task.generate(300, 60, 12).unwrap().0, train, "{task:?}");
        // Held out, and no repeats within a part either.
        let sources: HashSet<&str> = train
            .iter()
            .chain(&valid)
            .map(|p| p.source.as_str())
            .collect();
        assert_eq!(sources.len(), 360, "{task:?}: a source repeats");
        // The validation pairs do not depend on how many training pairs were asked for.
        assert_eq!(task.generate(10, 60, 11).unwrap().1, valid, "{task:?}");
    }
}

#[test]
fn a_task_with_too_few_sources_is_an_error() {
    let one_digit = Task::parse("addition", 1, false).unwrap();
    // All 100 sources of 1-digit addition can be drawn…
    let (train, valid) = one_digit.generate(90, 10, 3).unwrap();
    let sources: HashSet<String> = train.into_iter().chain(valid).map(|p| p.source).collect();
    assert_eq!(sources.len(), 100);
    // …but not one more.
    let error = one_digit.generate(95, 10, 3).unwrap_err().to_string();
    assert!(error.contains("100") && error.contains("105"), "{error}");
}

#[test]
fn parse_and_names() {
    for name in Task::NAMES {
        assert_eq!(Task::parse(name, 3, false).unwrap().name(), name);
    }
    assert_eq!(
        Task::parse("addition", 9, true).unwrap(),
        Task::Addition {
            digits: 9,
            reverse_input: true
        }
    );
    let error = Task::parse("copy", 3, false).unwrap_err().to_string();
    assert!(error.contains("\"copy\""), "{error}");
    for name in Task::NAMES {
        assert!(error.contains(name), "{error} does not list {name}");
    }
    for digits in [0, 10] {
        let error = Task::parse("addition", digits, false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&digits.to_string()) && error.contains("1 to 9"),
            "{error}"
        );
    }
}

/// A decimal number without leading zeros, or None.
fn number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().unwrap())
}

#[test]
fn addition_sums_right() {
    for (digits, reverse_input) in [(1, true), (3, false), (3, true), (9, false)] {
        let task = Task::Addition {
            digits,
            reverse_input,
        };
        let limit = 10u64.pow(digits as u32);
        let (mut train, valid) = task.generate(90, 10, 5).unwrap();
        train.extend(valid);
        let mut widest = 0;
        for Pair { source, target } in &train {
            let written: String = if reverse_input {
                source.chars().rev().collect()
            } else {
                source.clone()
            };
            let (a, b) = written
                .split_once('+')
                .unwrap_or_else(|| panic!("{source:?}"));
            let (a, b) = (number(a).unwrap(), number(b).unwrap());
            assert!(a < limit && b < limit, "{source:?} for {digits} digits");
            assert_eq!(number(target), Some(a + b), "{source:?} → {target:?}");
            widest = widest.max(a.max(b).to_string().len());
        }
        assert_eq!(widest, digits, "operands should reach {digits} digits");
    }
}

#[test]
fn reverse_and_sort_are_right() {
    for task in [Task::Reverse, Task::Sort] {
        let (train, _) = task.generate(1000, 0, 8).unwrap();
        let mut lengths = BTreeSet::new();
        for Pair { source, target } in &train {
            assert!(source.bytes().all(|b| b.is_ascii_lowercase()), "{source:?}");
            lengths.insert(source.len());
            let mut expected: Vec<char> = source.chars().collect();
            match task {
                Task::Reverse => expected.reverse(),
                _ => expected.sort(),
            }
            assert_eq!(*target, expected.into_iter().collect::<String>());
        }
        assert_eq!(lengths, (1..=10).collect(), "{task:?}");
    }
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

fn leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Sakamoto's method; 0 is Sunday.
fn weekday(year: u32, month: u32, day: u32) -> usize {
    const OFFSETS: [u32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if month < 3 { year - 1 } else { year };
    ((y + y / 4 - y / 100 + y / 400 + OFFSETS[month as usize - 1] + day) % 7) as usize
}

/// 1-based month of a full or three-letter name, any case.
fn month_of(word: &str) -> Option<u32> {
    let word = word.to_lowercase();
    MONTHS
        .iter()
        .position(|name| *name == word || (word.len() == 3 && name.starts_with(&word)))
        .map(|i| i as u32 + 1)
}

/// A day of the month, with or without an English ordinal suffix (which must be the right one).
fn day_of(word: &str) -> Option<(u32, bool)> {
    let digits = word.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let day: u32 = digits.parse().ok()?;
    let suffix = &word[digits.len()..];
    if suffix.is_empty() {
        return Some((day, false));
    }
    let right = match (day % 10, day % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    (suffix == right).then_some((day, true))
}

/// (year, month, day) and a name for the format, parsed from one of the human forms, checking
/// the weekday where one is written.
fn parse_date(source: &str) -> Option<((u32, u32, u32), &'static str)> {
    let numbers =
        |parts: Vec<&str>| -> Option<Vec<u32>> { parts.iter().map(|p| p.parse().ok()).collect() };
    let (date, format) = if source.contains('/') {
        let parts: Vec<&str> = source.split('/').collect();
        let n = numbers(parts.clone())?;
        if parts.len() != 3 {
            return None;
        }
        if parts[0].len() == 4 {
            (parts[1].len() == 2 && parts[2].len() == 2).then_some(())?;
            ((n[0], n[1], n[2]), "yyyy/mm/dd")
        } else {
            (!parts[0].starts_with('0') && !parts[1].starts_with('0')).then_some(())?;
            ((n[2], n[0], n[1]), "m/d/yyyy")
        }
    } else if source.contains('.') {
        let parts: Vec<&str> = source.split('.').collect();
        (parts.len() == 3 && parts[0].len() == 2 && parts[1].len() == 2).then_some(())?;
        let n = numbers(parts)?;
        ((n[2], n[1], n[0]), "dd.mm.yyyy")
    } else if source.contains('-') {
        let parts: Vec<&str> = source.split('-').collect();
        (parts.len() == 3 && parts[0].len() == 2 && parts[1].len() == 3).then_some(())?;
        (
            (
                parts[2].parse().ok()?,
                month_of(parts[1])?,
                parts[0].parse().ok()?,
            ),
            "dd-Mon-yyyy",
        )
    } else {
        let mut words: Vec<&str> = source.split(' ').collect();
        let mut written_weekday = None;
        if let Some(day) = WEEKDAYS
            .iter()
            .position(|w| words[0].to_lowercase() == format!("{w},"))
        {
            written_weekday = Some(day);
            words.remove(0);
        }
        if words.len() != 3 {
            return None;
        }
        let year: u32 = words[2].parse().ok()?;
        let format = if let Some(month) = month_of(words[0].trim_end_matches(',')) {
            let comma = words[1].ends_with(',');
            let (day, ordinal) = day_of(words[1].trim_end_matches(','))?;
            let word = words[0].trim_end_matches(',');
            let full = MONTHS.contains(&word.to_lowercase().as_str());
            let short = word.len() == 3; // "May" is both
            let capitalised = word.starts_with(|c: char| c.is_uppercase());
            let format = match (written_weekday.is_some(), comma, ordinal) {
                (true, true, false) if full && capitalised => "Weekday, Month d, yyyy",
                (false, true, false) if full && capitalised => "Month d, yyyy",
                (false, false, false) if short && capitalised => "Mon d yyyy",
                (false, false, true) if full && word.chars().all(char::is_lowercase) => {
                    "month dth yyyy"
                }
                _ => return None,
            };
            ((year, month, day), format)
        } else {
            let (day, ordinal) = day_of(words[0])?;
            let full = MONTHS.contains(&words[1].to_lowercase().as_str());
            let capitalised = words[1].starts_with(|c: char| c.is_uppercase());
            (!ordinal && written_weekday.is_none() && full && capitalised).then_some(())?;
            ((year, month_of(words[1])?, day), "d Month yyyy")
        };
        if let Some(written) = written_weekday {
            let (year, month, day) = format.0;
            if weekday(year, month, day) != written {
                return None;
            }
        }
        format
    };
    let (year, month, day) = date;
    let valid = (1950..=2049).contains(&year)
        && (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day);
    valid.then_some((date, format))
}

#[test]
fn dates_parse_back_to_their_iso_target() {
    let (train, valid) = Task::Dates.generate(3000, 0, 21).unwrap();
    assert!(valid.is_empty());
    let mut formats = BTreeSet::new();
    let mut years = BTreeSet::new();
    for Pair { source, target } in &train {
        let ((year, month, day), format) =
            parse_date(source).unwrap_or_else(|| panic!("cannot parse {source:?}"));
        assert_eq!(
            *target,
            format!("{year:04}-{month:02}-{day:02}"),
            "{source:?}"
        );
        formats.insert(format);
        years.insert(year);
    }
    assert_eq!(formats.len(), 9, "formats seen: {formats:?}");
    assert!(
        years.first() <= Some(&1951) && years.last() >= Some(&2048),
        "{years:?}"
    );
    // The parser itself, on dates checked by hand (5 March 2021 was a Friday).
    for source in [
        "March 5, 2021",
        "5 March 2021",
        "Mar 5 2021",
        "05-Mar-2021",
        "3/5/2021",
        "05.03.2021",
        "Friday, March 5, 2021",
        "2021/03/05",
        "march 5th 2021",
    ] {
        assert_eq!(
            parse_date(source).map(|(date, _)| date),
            Some((2021, 3, 5)),
            "{source}"
        );
    }
    for wrong in [
        "Thursday, March 5, 2021",
        "march 5st 2021",
        "2/30/2021",
        "1/1/1949",
    ] {
        assert_eq!(parse_date(wrong), None, "{wrong}");
    }
}

#[test]
fn examples_come_from_the_rng() {
    let mut a = Rng::new(4);
    let mut b = Rng::new(4);
    for task in all_tasks() {
        assert_eq!(task.example(&mut a), task.example(&mut b));
    }
}

#[test]
fn vocab_round_trip_and_unknown_characters() {
    let vocab = Vocab::from_text("b+acaba aé");
    assert_eq!(vocab.chars(), &[' ', '+', 'a', 'b', 'c', 'é']);
    assert_eq!(vocab.len(), SPECIAL_TOKENS + 6);
    let (ids, unknown) = vocab.encode("cab é");
    let first = SPECIAL_TOKENS as u32;
    assert_eq!(ids, [first + 4, first + 2, first + 3, first, first + 5]);
    assert!(unknown.is_empty());
    assert_eq!(vocab.decode(&ids), "cab é");

    let (ids, unknown) = vocab.encode("xa?x");
    assert_eq!(ids, [UNK, first + 2, UNK, UNK]);
    assert_eq!(unknown, ['x', '?']);
    assert_eq!(vocab.decode(&ids), "\u{FFFD}a\u{FFFD}\u{FFFD}");

    // Decoding stops at EOS and skips PAD and BOS; an id beyond the vocabulary is not a panic.
    let c = first + 4;
    assert_eq!(vocab.decode(&[BOS, c, PAD, c, EOS, c, c]), "cc");
    assert_eq!(vocab.decode(&[first + 6, u32::MAX]), "\u{FFFD}\u{FFFD}");
    assert_eq!(vocab.decode(&[]), "");

    // A checkpoint's characters give back the same vocabulary, in the order saved.
    assert_eq!(Vocab::from_chars(vocab.chars()).unwrap(), vocab);
    let unsorted = Vocab::from_chars(&['z', 'a']).unwrap();
    assert_eq!(unsorted.encode("az").0, [first + 1, first]);
    let error = Vocab::from_chars(&['a', 'b', 'a']).unwrap_err().to_string();
    assert!(error.contains("'a'") && error.contains("twice"), "{error}");
    assert_eq!(Vocab::from_chars(&[]).unwrap().len(), SPECIAL_TOKENS);

    // A model's vocabularies, one per side, encode pairs; each side reports its own
    // unknown tokens.
    let pairs = [pair("b+a", "cab"), pair("a a", "é")];
    let vocab = PairVocab::learn(&pairs, PairVocabSpec::default()).unwrap();
    assert_eq!(vocab.source.tokens(), [" ", "+", "a", "b"]);
    assert_eq!(vocab.target.tokens(), ["a", "b", "c", "é"]);
    let (encoded, unknown) = vocab.encode(&[pair("ab", "?c")]);
    assert_eq!(
        encoded,
        [EncodedPair {
            source: vec![first + 2, first + 3],
            target: vec![UNK, first + 2]
        }]
    );
    assert!(unknown.source.is_empty());
    assert_eq!(unknown.target, ["?"]);
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn tsv_reads_writes_and_handles_crlf() {
    let dir = scratch("tsv");
    let pairs = vec![
        pair("hello world", "dlrow olleh"),
        pair(" x", "y "),
        pair("ü", "u"),
    ];
    let path = dir.join("pairs.tsv");
    write_tsv(&path, &pairs).unwrap();
    assert_eq!(read_tsv(&path).unwrap().contents, pairs);

    let crlf = write(
        &dir,
        "crlf.tsv",
        "\u{feff}a b\tc\r\n\r\n  \r\nd\te\r\n".as_bytes(),
    );
    assert_eq!(
        read_tsv(&crlf).unwrap().contents,
        [pair("a b", "c"), pair("d", "e")]
    );

    for (bad, side) in [
        (pair("a\tb", "c"), "source"),
        (pair("a", ""), "target"),
        (pair("a", "b\n"), "target"),
    ] {
        let error = write_tsv(dir.join("bad.tsv"), &[pair("ok", "ok"), bad])
            .unwrap_err()
            .to_string();
        assert!(error.contains("pair 1") && error.contains(side), "{error}");
    }
    assert!(write_tsv(dir.join("none.tsv"), &[]).is_err());
    assert!(!dir.join("bad.tsv").exists() && !dir.join("none.tsv").exists());
}

#[test]
fn tsv_errors_name_the_file_and_line() {
    let dir = scratch("tsv-errors");
    let cases: [(&[u8], &str); 8] = [
        (b"a\tb\nno tab here\n", "line 2: no tab in \"no tab here\""),
        (b"a\tb\tc\n", "line 1: 2 tabs; expected exactly one"),
        (b"\n\n\tb\n", "line 3: the source (before the tab) is empty"),
        (
            b"a\tb\r\nc\t\r\n",
            "line 2: the target (after the tab) is empty",
        ),
        (b"\t\n", "line 1: the source"),
        (b"a\tb\nc\t\xff\n", "line 2: not UTF-8 text"),
        (b"", "holds no pairs"),
        (b"\n  \r\n\n", "holds no pairs"),
    ];
    for (number, (contents, expected)) in cases.iter().enumerate() {
        let path = write(&dir, &format!("bad{number}.tsv"), contents);
        let error = read_tsv(&path).unwrap_err();
        assert!(matches!(error, Error::Format { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{}: ", path.display())),
            "{message:?} does not start with the path"
        );
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
    let missing = dir.join("missing.tsv");
    let error = read_tsv(&missing).unwrap_err();
    assert!(
        matches!(&error, Error::Io { path, .. } if path == &missing),
        "{error:?}"
    );
}

#[test]
fn split_pairs_shuffles_and_checks_its_fraction() {
    let pairs: Vec<Pair> = (0..20).map(|i| pair(&i.to_string(), "x")).collect();
    let (train, valid) = split_pairs(&pairs, 0.25, 9).unwrap();
    assert_eq!((train.len(), valid.len()), (15, 5));
    let mut all: Vec<Pair> = train.iter().chain(&valid).cloned().collect();
    all.sort_by_key(|p| p.source.parse::<u32>().unwrap());
    assert_eq!(all, pairs);
    assert_eq!(
        split_pairs(&pairs, 0.25, 9).unwrap(),
        (train.clone(), valid)
    );
    assert_ne!(split_pairs(&pairs, 0.25, 10).unwrap().0, train);

    for fraction in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        let error = split_pairs(&pairs, fraction, 0).unwrap_err().to_string();
        assert!(error.contains("between 0 and 1"), "{fraction}: {error}");
    }
    for (count, fraction) in [(3, 0.1), (3, 0.9), (1, 0.5)] {
        let error = split_pairs(&pairs[..count], fraction, 0)
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("of {count} pairs")), "{error}");
    }
}

/// Checks every field of `batch` against the pairs it claims to hold.
fn check_layout(batch: &SeqBatch, pairs: &[EncodedPair], bucketing: &Bucketing) {
    let (b_rows, ts, td) = (batch.batch, batch.source_steps, batch.target_steps);
    assert_eq!(batch.examples.len(), batch.real);
    assert!(batch.real >= 1 && batch.real <= b_rows && b_rows <= bucketing.batch);
    assert_eq!(ts % bucketing.round_to, 0);
    assert_eq!(td % bucketing.round_to, 0);
    let held: Vec<&EncodedPair> = batch.examples.iter().map(|&i| &pairs[i]).collect();
    let (longest_source, longest_target) = held.iter().fold((0, 0), |(s, t), p| {
        (s.max(p.source.len()), t.max(p.target.len()))
    });
    assert!(ts >= longest_source && ts < longest_source + bucketing.round_to);
    assert!(td > longest_target && td <= longest_target + bucketing.round_to);
    assert_eq!(batch.source.len(), ts * b_rows);
    assert_eq!(batch.decoder_input.len(), td * b_rows);
    assert_eq!(batch.target.len(), b_rows * td);
    assert_eq!(batch.source_lengths.len(), b_rows);
    assert_eq!(batch.target_lengths.len(), b_rows);
    for b in 0..b_rows {
        let (source, target): (&[u32], &[u32]) = match held.get(b) {
            Some(p) => (&p.source, &p.target),
            None => (&[], &[]),
        };
        let real = b < batch.real;
        assert_eq!(batch.source_lengths[b] as usize, source.len());
        assert_eq!(
            batch.target_lengths[b] as usize,
            if real { target.len() + 1 } else { 0 }
        );
        for t in 0..ts {
            let expected = source.get(t).copied().unwrap_or(PAD);
            assert_eq!(batch.source[t * b_rows + b], expected, "source t={t} b={b}");
        }
        for t in 0..td {
            let input = match t {
                0 if real => BOS,
                _ => target.get(t.wrapping_sub(1)).copied().unwrap_or(PAD),
            };
            assert_eq!(
                batch.decoder_input[t * b_rows + b],
                input,
                "decoder t={t} b={b}"
            );
            let output = match target.get(t) {
                Some(&id) => id,
                None if real && t == target.len() => EOS,
                None => PAD,
            };
            assert_eq!(batch.target[b * td + t], output, "target b={b} t={t}");
        }
    }
}

/// Random pairs of ids 4..9, sources of length 1..=lengths, targets of 0..=lengths.
fn random_encoded(count: usize, lengths: usize, seed: u64) -> Vec<EncodedPair> {
    let mut rng = Rng::new(seed);
    let mut ids = |n: usize| (0..n).map(|_| 4 + rng.below(6) as u32).collect::<Vec<_>>();
    (0..count)
        .map(|_| {
            let source_length = 1 + (ids(1)[0] as usize * 7) % lengths;
            let target_length = (ids(1)[0] as usize * 3) % (lengths + 1);
            EncodedPair {
                source: ids(source_length),
                target: ids(target_length),
            }
        })
        .collect()
}

#[test]
fn batch_layout_in_the_given_order() {
    let pairs = vec![
        EncodedPair {
            source: vec![4, 5, 6],
            target: vec![7],
        },
        EncodedPair {
            source: vec![8],
            target: vec![],
        },
        EncodedPair {
            source: vec![9, 10],
            target: vec![11, 12, 13],
        },
    ];
    let bucketing = Bucketing {
        batch: 2,
        round_to: 1,
        pad_last: true,
    };
    let batches = bucketed_batches(&pairs, &bucketing, None).unwrap();
    assert_eq!(batches.len(), 2);
    let first = &batches[0];
    assert_eq!(
        (
            first.batch,
            first.real,
            first.source_steps,
            first.target_steps
        ),
        (2, 2, 3, 2)
    );
    assert_eq!(first.examples, [0, 1]);
    // Time-major [Ts, B]: row 0 is 4 5 6, row 1 is 8.
    assert_eq!(first.source, [4, 8, 5, PAD, 6, PAD]);
    assert_eq!(first.source_lengths, [3, 1]);
    assert_eq!(first.decoder_input, [BOS, BOS, 7, PAD]);
    // Batch-major [B, Td].
    assert_eq!(first.target, [7, EOS, EOS, PAD]);
    assert_eq!(first.target_lengths, [2, 1]);
    // The last batch is padded with an empty row.
    let last = &batches[1];
    assert_eq!(
        (last.batch, last.real, last.source_steps, last.target_steps),
        (2, 1, 2, 4)
    );
    assert_eq!(last.examples, [2]);
    assert_eq!(last.source, [9, PAD, 10, PAD]);
    assert_eq!(last.source_lengths, [2, 0]);
    assert_eq!(last.decoder_input, [BOS, PAD, 11, PAD, 12, PAD, 13, PAD]);
    assert_eq!(last.target, [11, 12, 13, EOS, PAD, PAD, PAD, PAD]);
    assert_eq!(last.target_lengths, [4, 0]);

    // Rounding to 4 steps; without pad_last the last batch is smaller.
    let rounded = Bucketing {
        batch: 2,
        round_to: 4,
        pad_last: false,
    };
    let batches = bucketed_batches(&pairs, &rounded, None).unwrap();
    assert_eq!((batches[0].source_steps, batches[0].target_steps), (4, 4));
    assert_eq!((batches[1].batch, batches[1].real), (1, 1));
    assert_eq!((batches[1].source_steps, batches[1].target_steps), (4, 4));
    assert_eq!(batches[1].source, [9, 10, PAD, PAD]);
    for batch in &batches {
        check_layout(batch, &pairs, &rounded);
    }
    assert_eq!(longest(&pairs), (3, 3));
    assert_eq!(longest(&[]), (0, 0));
}

#[test]
fn bucketed_batches_hold_every_example_once() {
    let pairs = random_encoded(1037, 12, 2);
    for (batch, round_to, pad_last) in [
        (16, 1, true),
        (16, 4, false),
        (7, 3, true),
        (2000, 2, false),
    ] {
        let bucketing = Bucketing {
            batch,
            round_to,
            pad_last,
        };
        for seed in [None, Some(1), Some(2)] {
            let batches = bucketed_batches(&pairs, &bucketing, seed).unwrap();
            let mut seen = vec![0; pairs.len()];
            for b in &batches {
                check_layout(b, &pairs, &bucketing);
                for &i in &b.examples {
                    seen[i] += 1;
                }
                if pad_last {
                    assert_eq!(b.batch, batch);
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{bucketing:?} {seed:?}");
            assert_eq!(batches.len(), pairs.len().div_ceil(batch));
            assert_eq!(
                batches.iter().filter(|b| b.real < batch).count(),
                usize::from(!pairs.len().is_multiple_of(batch))
            );
            if seed.is_none() {
                let order: Vec<usize> = batches.iter().flat_map(|b| b.examples.clone()).collect();
                assert_eq!(order, (0..pairs.len()).collect::<Vec<_>>());
            }
        }
    }
}

#[test]
fn bucketing_groups_similar_lengths_and_follows_the_seed() {
    let pairs = random_encoded(3000, 30, 5);
    let bucketing = Bucketing {
        batch: 32,
        round_to: 1,
        pad_last: true,
    };
    let padding = |batches: &[SeqBatch]| -> usize {
        batches
            .iter()
            .map(|b| b.source_steps * b.real - b.source_lengths.iter().sum::<u32>() as usize)
            .sum()
    };
    let bucketed = bucketed_batches(&pairs, &bucketing, Some(3)).unwrap();
    let in_order = bucketed_batches(&pairs, &bucketing, None).unwrap();
    // In the given order a batch's sources span nearly every length; sorted, only a few.
    assert!(
        padding(&bucketed) * 5 < padding(&in_order),
        "{} vs {}",
        padding(&bucketed),
        padding(&in_order)
    );
    assert_eq!(
        bucketed_batches(&pairs, &bucketing, Some(3)).unwrap(),
        bucketed
    );
    assert_ne!(
        bucketed_batches(&pairs, &bucketing, Some(4)).unwrap(),
        bucketed
    );
    // The batch order is shuffled, not sorted by length.
    let steps: Vec<usize> = bucketed.iter().map(|b| b.source_steps).collect();
    assert!(steps.windows(2).any(|w| w[0] > w[1]) && steps.windows(2).any(|w| w[0] < w[1]));
}

#[test]
fn bucketing_errors() {
    let pairs = random_encoded(10, 5, 1);
    let good = Bucketing {
        batch: 4,
        round_to: 1,
        pad_last: false,
    };
    let cases = [
        (
            pairs.clone(),
            Bucketing { batch: 0, ..good },
            "batch size must be at least 1",
        ),
        (
            pairs.clone(),
            Bucketing {
                round_to: 0,
                ..good
            },
            "round_to must be at least 1",
        ),
        (Vec::new(), good, "no pairs"),
        (
            vec![
                pairs[0].clone(),
                EncodedPair {
                    source: vec![],
                    target: vec![4],
                },
            ],
            good,
            "pair 1 has an empty source",
        ),
    ];
    for (pairs, bucketing, expected) in cases {
        let error = bucketed_batches(&pairs, &bucketing, Some(1))
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{error:?} lacks {expected:?}");
    }
}

#[test]
fn a_task_end_to_end() {
    let task = Task::parse("dates", 0, false).unwrap();
    let (train, valid) = task.generate(200, 20, 1).unwrap();
    let vocab = PairVocab::learn(&train, PairVocabSpec::default()).unwrap();
    let encoded = vocab.encode(&valid).0;
    let bucketing = Bucketing {
        batch: 8,
        round_to: 4,
        pad_last: true,
    };
    for batch in bucketed_batches(&encoded, &bucketing, None).unwrap() {
        for (b, &i) in batch.examples.iter().enumerate() {
            let row = &batch.target[b * batch.target_steps..(b + 1) * batch.target_steps];
            // A validation target may hold a character training never saw.
            let expected: String = valid[i]
                .target
                .chars()
                .map(|c| {
                    if vocab.target.tokens().contains(&c.to_string()) {
                        c
                    } else {
                        '\u{FFFD}'
                    }
                })
                .collect();
            assert_eq!(vocab.target.decode(row), expected);
        }
    }
}
