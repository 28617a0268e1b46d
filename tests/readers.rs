//! What every reader of a user's data file checks when the file is read: the length limits,
//! line ends, NUL bytes (a warning handed back, never printed), a CSV of one class; and
//! that a generator asked for more than memory holds fails at once, naming the sizes.

use std::path::{Path, PathBuf};

use shadergrad::data::classify::{
    parse_labelled_tsv, read_labelled_tsv, ClassifyTask, MAX_LABEL_CHARS, MAX_TEXT_WORDS,
};
use shadergrad::data::corpus::{parse_text, read_text};
use shadergrad::data::points::{parse_csv, BuiltinTask, Spirals, MAX_FEATURES};
use shadergrad::data::text::{parse_tsv, read_tsv, write_tsv, Pair, Task, MAX_SEQUENCE_CHARS};
use shadergrad::data::{Dataset, Parsed, Warning};
use shadergrad::Error;

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("readers-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The message of a parse that must fail, checked to name the file it came from.
fn format_error<T: std::fmt::Debug>(parsed: shadergrad::Result<T>, path: &str) -> String {
    let error = parsed.unwrap_err();
    assert!(matches!(error, Error::Format { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("{path}: ")),
        "{message:?} does not start with {path}"
    );
    message
}

fn nul_warning(path: &str, first_line: usize, count: usize) -> Warning {
    Warning::NulBytes {
        path: PathBuf::from(path),
        first_line,
        count,
    }
}

#[test]
fn a_source_or_target_past_the_limit_is_refused_naming_the_file_line_and_limit() {
    let path = Path::new("pairs.tsv");
    let longest = "é".repeat(MAX_SEQUENCE_CHARS); // characters count, not bytes
    let fine = format!("a\tb\n{longest}\t{longest}\n");
    assert_eq!(parse_tsv(&fine, path).unwrap().contents.len(), 2);
    let too_long = "x".repeat(MAX_SEQUENCE_CHARS + 1);
    for (text, side) in [
        (format!("a\tb\n\nc\td\n{too_long}\te\n"), "source"),
        (format!("a\tb\n\nc\td\ne\t{too_long}\n"), "target"),
    ] {
        let message = format_error(parse_tsv(&text, path), "pairs.tsv");
        assert!(
            message.contains(&format!(
                "line 4: the {side} has {} characters, more than the {MAX_SEQUENCE_CHARS}",
                MAX_SEQUENCE_CHARS + 1
            )),
            "{message}"
        );
    }
    let error = write_tsv(
        scratch("write-long").join("long.tsv"),
        &[Pair {
            source: too_long,
            target: "x".into(),
        }],
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("pair 0 has the source"), "{error}");
}

#[test]
fn a_text_past_its_words_or_a_label_past_its_characters_is_refused() {
    let path = Path::new("texts.tsv");
    let longest = "word ".repeat(MAX_TEXT_WORDS);
    let fine = format!("pos\t{longest}\nneg\tbad\n");
    assert_eq!(parse_labelled_tsv(&fine, path).unwrap().contents.len(), 2);
    let text = format!("pos\tgood\nneg\t{longest} one more\n");
    let message = format_error(parse_labelled_tsv(&text, path), "texts.tsv");
    assert!(
        message.contains(&format!(
            "line 2: the text (after the tab) has {} words, more than the {MAX_TEXT_WORDS}",
            MAX_TEXT_WORDS + 2
        )),
        "{message}"
    );
    // The label and text columns swapped.
    let swapped = format!("{}\tpos\n", "a long review ".repeat(10));
    let message = format_error(parse_labelled_tsv(&swapped, path), "texts.tsv");
    assert!(
        message.contains(&format!("line 1: the label (before the tab) has 139 characters, more than the {MAX_LABEL_CHARS}"))
            && message.contains("swapped"),
        "{message}"
    );
}

#[test]
fn a_carriage_return_without_a_line_feed_is_refused_where_lines_are_parsed() {
    type Parse = fn(&str) -> shadergrad::Result<()>;
    let checks: [(&str, Parse); 3] = [
        ("pairs.tsv", |text| {
            parse_tsv(text, Path::new("pairs.tsv")).map(drop)
        }),
        ("texts.tsv", |text| {
            parse_labelled_tsv(text, Path::new("texts.tsv")).map(drop)
        }),
        ("points.csv", |text| {
            parse_csv(text, Path::new("points.csv")).map(drop)
        }),
    ];
    for (path, parse) in checks {
        // Two lines each reader takes: "1," then "0" (a source and target, a label and a
        // text, or a feature and a label).
        parse("1,\t0\r\n2,\t1\r\n").unwrap_or_else(|error| panic!("{path}: {error}"));
        // Classic Mac OS line ends, and a file cut off between "\r" and "\n".
        for (text, line) in [("1,\t0\r2,\t1\r", 1), ("1,\t0\r\n2,\t1\r", 2)] {
            let message = format_error(parse(text), path);
            assert!(
                message.contains(&format!(
                    "line {line}: a carriage return (\\r) not followed by a line feed"
                )),
                "{path}: {message}"
            );
        }
    }
}

#[test]
fn a_text_to_learn_has_windows_line_ends_made_unix_and_nothing_but_whitespace_refused() {
    let path = Path::new("corpus.txt");
    let parsed = parse_text("\u{feff}one\r\ntwo\rthree\r\n", path).unwrap();
    assert_eq!(parsed.contents, "one\ntwo\rthree\n");
    assert!(parsed.warnings.is_empty());
    let message = format_error(parse_text(" \r\n\n\t", path), "corpus.txt");
    assert!(message.contains("is empty"), "{message}");
}

#[test]
fn nul_bytes_are_read_with_a_warning_naming_the_file_and_first_line() {
    assert_eq!(
        parse_tsv("a\tb\nc\t\0d\n\0\te\n", Path::new("pairs.tsv"))
            .unwrap()
            .warnings,
        [nul_warning("pairs.tsv", 2, 2)]
    );
    assert_eq!(
        parse_labelled_tsv("pos\tgood\n\nneg\tb\0ad\n", Path::new("texts.tsv"))
            .unwrap()
            .warnings,
        [nul_warning("texts.tsv", 3, 1)]
    );
    // A NUL byte in a number is an error; a header is read but not used.
    assert_eq!(
        parse_csv("x\0,y,label\n1,2,0\n3,4,1\n", Path::new("points.csv"))
            .unwrap()
            .warnings,
        [nul_warning("points.csv", 1, 1)]
    );
    let message = format_error(
        parse_csv("1,2\0,0\n3,4,1\n", Path::new("points.csv")),
        "points.csv",
    );
    assert!(message.contains(r#"line 1: field 2 ("2\0")"#), "{message}");
    assert_eq!(
        parse_text("some\ntext\0\n", Path::new("corpus.txt"))
            .unwrap()
            .warnings,
        [nul_warning("corpus.txt", 2, 1)]
    );
    assert!(parse_tsv("a\tb\n", Path::new("pairs.tsv"))
        .unwrap()
        .warnings
        .is_empty());

    let warning = nul_warning("data/pairs.tsv", 2, 5).to_string();
    assert!(
        warning.starts_with("data/pairs.tsv: line 2: a NUL byte (5 in the file)")
            && warning.contains("UTF-16"),
        "{warning}"
    );
}

#[test]
fn the_file_readers_hand_back_the_warnings_of_the_file() {
    let dir = scratch("file-warnings");
    let write = |name: &str, contents: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let pairs = write("pairs.tsv", b"a\0\tb\0\n\nc\td\n");
    let expected = |path: &Path, line, count| {
        vec![Warning::NulBytes {
            path: path.to_path_buf(),
            first_line: line,
            count,
        }]
    };
    let Parsed { contents, warnings } = read_tsv(&pairs).unwrap();
    assert_eq!(contents.len(), 2);
    assert_eq!(contents[0].source, "a\0");
    assert_eq!(warnings, expected(&pairs, 1, 2));

    let texts = write("texts.tsv", b"pos\tgood\0\nneg\tbad\n");
    assert_eq!(
        read_labelled_tsv(&texts).unwrap().warnings,
        expected(&texts, 1, 1)
    );
    let points = write("points.csv", b"x,y,\0label\n1,2,0\n3,4,1\n");
    assert_eq!(
        Dataset::from_csv(&points).unwrap().warnings,
        expected(&points, 1, 1)
    );
    let corpus = write("corpus.txt", b"text\n\n\0\0\n");
    assert_eq!(
        read_text(&corpus).unwrap().warnings,
        expected(&corpus, 3, 2)
    );
}

#[test]
fn a_csv_of_one_class_is_refused_naming_the_file_and_the_class() {
    let path = Path::new("points.csv");
    for (text, label) in [
        ("x,y,label\n0.5,1,2\n0.25,3,2\n", 2),
        ("0.5,1,0\n", 0),
        ("0.5,1,1\n\n0.25,3,1.0\n", 1),
    ] {
        let message = format_error(parse_csv(text, path), "points.csv");
        assert!(
            message.contains(&format!(
                "the examples have 1 class (every label is {label}); a classifier needs at \
                 least 2"
            )),
            "{message}"
        );
    }
    let two = parse_csv("0.5,1,0\n0.25,3,2\n", path).unwrap().contents;
    assert_eq!((two.n, two.classes), (2, 3));
}

#[test]
fn a_csv_row_of_more_features_than_the_limit_is_refused() {
    let path = Path::new("points.csv");
    let row = |features: usize, label: u32| format!("{}{label}\n", "0.5,".repeat(features));
    let widest = row(MAX_FEATURES, 0) + &row(MAX_FEATURES, 1);
    assert_eq!(parse_csv(&widest, path).unwrap().contents.dim, MAX_FEATURES);
    let message = format_error(parse_csv(&row(MAX_FEATURES + 1, 0), path), "points.csv");
    assert!(
        message.contains(&format!(
            "line 1: {} features, more than the {MAX_FEATURES}",
            MAX_FEATURES + 1
        )),
        "{message}"
    );
}

#[test]
fn generation_beyond_memory_is_refused_at_once_naming_the_sizes() {
    // Far past any machine's memory, yet within the sums the task can draw: without the
    // check, generating them would run until memory ran out.
    let addition = Task::parse("addition", 9, false).unwrap();
    let huge = 100_000_000_000_000_000; // 10^17 of the 10^18 sums of two 9-digit numbers
    let message = addition
        .check_memory(huge, 1000, ("--train-size", "--valid-size"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&format!(
            "--train-size {huge} + --valid-size 1000: {} pairs of about",
            huge + 1000
        )) && message.contains("pairs fit"),
        "{message}"
    );
    let message = addition.generate(huge, 0, 7).unwrap_err().to_string();
    assert!(
        message.contains(&format!("train {huge} + valid 0")),
        "{message}"
    );

    let reviews = ClassifyTask::parse("reviews").unwrap();
    let many = 10_000_000_000_000;
    let message = reviews
        .check_memory(many, 5, ("--train-size", "--valid-size"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&format!("--train-size {many} + --valid-size 5")),
        "{message}"
    );

    let message = BuiltinTask::Spirals
        .check_memory(usize::MAX / 4, "--points")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&format!("--points {} × 3 classes", usize::MAX / 4)),
        "{message}"
    );
    let spirals = Spirals {
        points_per_class: usize::MAX / 4,
        ..Spirals::default()
    };
    let message = spirals.generate(7).unwrap_err().to_string();
    assert!(message.contains("points_per_class"), "{message}");
}

#[test]
fn a_quick_generation_reports_no_progress() {
    let mut reports = 0;
    let (train, valid) = Task::Sort
        .generate_with_progress(200, 20, 7, &mut |_| reports += 1)
        .unwrap();
    assert_eq!((train.len(), valid.len(), reports), (200, 20, 0));
}
