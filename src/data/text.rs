//! Sequence-to-sequence data: pairs of a source string and a target string, from the built-in
//! [`Task`]s or the user's own TSV file ([`read_tsv`]), and [`bucketed_batches`] of similar
//! lengths, padded and laid out for the model. Their tokens and vocabularies are
//! [`super::tokens`]'s; the character [`Vocab`] here serves the character language model.
//!
//! | task       | source (example)         | target          |
//! |------------|--------------------------|-----------------|
//! | `addition` | `535+61`                 | `596`           |
//! | `reverse`  | `hello`                  | `olleh`         |
//! | `sort`     | `hello`                  | `ehllo`         |
//! | `dates`    | `Friday, March 5, 2021`  | `2021-03-05`    |
//!
//! ```
//! use shadergrad::data::text::{bucketed_batches, Bucketing, Task};
//! use shadergrad::data::tokens::{PairVocab, PairVocabSpec};
//!
//! let task = Task::parse("addition", 3, false)?;
//! let (train, valid) = task.generate(1000, 100, 7)?;
//! let vocab = PairVocab::learn(&train, PairVocabSpec::default())?;
//! let (encoded, _unknown) = vocab.encode(&train);
//! let bucketing = Bucketing { batch: 32, round_to: 4, pad_last: true };
//! for epoch in 0..2 {
//!     for batch in bucketed_batches(&encoded, &bucketing, Some(7 + epoch))? {
//!         assert_eq!(batch.batch, 32);
//!         assert_eq!(batch.source.len(), batch.source_steps * 32);
//!     }
//! }
//! # let _ = valid;
//! # Ok::<(), shadergrad::Error>(())
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use super::generating::{check_fits_in_memory, ProgressReporter};
use super::reading::{check_line_ends, text_warnings};
use super::{check_distinct, permutation, GenerationProgress, Parsed};
use crate::files::write_atomically;
use crate::rng::Rng;
use crate::{Error, Result};

/// Pads sequences after their end, and fills padding rows.
pub const PAD: u32 = 0;
/// Begins the decoder's input, before the first target token.
pub const BOS: u32 = 1;
/// Ends every target: the decoder learns to emit it after the last token.
pub const EOS: u32 = 2;
/// Stands for a character the vocabulary does not hold.
pub const UNK: u32 = 3;
/// How many ids the special tokens above take; characters follow them.
pub const SPECIAL_TOKENS: usize = 4;

/// One example: the model reads `source` and learns to write `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pair {
    /// The text the model reads.
    pub source: String,
    /// The text the model must write.
    pub target: String,
}

/// The characters a model reads and writes, each with an id: character `chars()[i]` has id
/// `SPECIAL_TOKENS + i`, after [`PAD`], [`BOS`], [`EOS`] and [`UNK`].
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

impl Vocab {
    /// Every character of `text`, in code point order.
    pub fn from_text(text: &str) -> Vocab {
        let chars: BTreeSet<char> = text.chars().collect();
        Vocab::with_chars(chars.into_iter().collect())
    }

    /// The vocabulary of `chars` in the order given (as [`Vocab::chars`] returned them when a
    /// checkpoint was saved, so the ids are the ones the model was trained with). A character
    /// given twice is an error, since it would have two ids.
    pub fn from_chars(chars: &[char]) -> Result<Vocab> {
        check_distinct("vocabulary", "character", chars)?;
        Ok(Vocab::with_chars(chars.to_vec()))
    }

    fn with_chars(chars: Vec<char>) -> Vocab {
        let ids = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, (SPECIAL_TOKENS + i) as u32))
            .collect();
        Vocab { chars, ids }
    }

    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The number of ids: the special tokens and the characters.
    #[allow(clippy::len_without_is_empty)] // never empty: the special tokens are always there
    pub fn len(&self) -> usize {
        SPECIAL_TOKENS + self.chars.len()
    }

    /// The id of each character of `text`, [`UNK`] for those the vocabulary lacks, and those
    /// unknown characters, each once, in the order they first appear (to warn the user).
    pub fn encode(&self, text: &str) -> (Vec<u32>, Vec<char>) {
        let mut unknown = Vec::new();
        let ids = text
            .chars()
            .map(|c| match self.ids.get(&c) {
                Some(&id) => id,
                None => {
                    if !unknown.contains(&c) {
                        unknown.push(c);
                    }
                    UNK
                }
            })
            .collect();
        (ids, unknown)
    }

    /// The text of `ids` up to the first [`EOS`], skipping [`PAD`] and [`BOS`]; [`UNK`], and
    /// any id beyond the vocabulary, becomes U+FFFD, the replacement character.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .take_while(|&&id| id != EOS)
            .filter(|&&id| id != PAD && id != BOS)
            .map(|&id| {
                (id as usize)
                    .checked_sub(SPECIAL_TOKENS)
                    .and_then(|i| self.chars.get(i))
                    .copied()
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect()
    }
}

/// A built-in task: pairs drawn at random from a rule the model has to learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// `535+61` → `596`: two operands drawn uniformly from 0..10^`digits`, written without
    /// leading zeros, and their sum. With `reverse_input` the source is written backwards
    /// (`16+535`), which puts the low digits, where the carries start, first.
    Addition {
        /// The most digits an operand has, from 1 to 9.
        digits: usize,
        /// Whether the source is written backwards.
        reverse_input: bool,
    },
    /// `hello` → `olleh`: lowercase ASCII letters, a length drawn uniformly from 1..=10, and
    /// the same letters backwards.
    Reverse,
    /// `hello` → `ehllo`: lowercase ASCII letters, a length drawn uniformly from 1..=10, and
    /// the same letters in alphabetical order.
    Sort,
    /// A day drawn uniformly from 1950-01-01 to 2049-12-31, written in one of nine formats
    /// drawn uniformly, → the ISO 8601 date. For 2021-03-05 (a Friday) the formats are:
    /// `March 5, 2021`; `5 March 2021`; `Mar 5 2021`; `05-Mar-2021`; `3/5/2021` (month
    /// first); `05.03.2021` (day first); `Friday, March 5, 2021`; `2021/03/05`;
    /// `march 5th 2021`. No two (day, format) give the same source.
    Dates,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Starting from Sunday, as `weekday` counts.
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

const DATE_FORMATS: usize = 9;
const FIRST_YEAR: i64 = 1950;
const LAST_YEAR: i64 = 2049;
const LONGEST_WORD: usize = 10;
/// The longest source of the dates task: "Wednesday, September 30, 2049".
const LONGEST_DATE: usize = 29;
/// The length of an ISO 8601 date, the dates task's every target: "2049-09-30".
const ISO_DATE: usize = 10;

/// What a generated pair takes in memory on its way through training, by the estimate that
/// [`Task::check_memory`] weighs: a fixed part (the strings' and vectors' headers, the set
/// that keeps the sources distinct) and a part per character of the longest pair (its
/// text, its ids, its share of an epoch's batches). Measured from the peak memory of
/// generating, encoding and batching a million pairs: 411 B a pair for sort, 530 for dates,
/// 584 for 9-digit addition, which this estimate exceeds by 15 to 50%.
const BYTES_PER_PAIR: u64 = 320;
const BYTES_PER_PAIR_CHAR: u64 = 12;

impl Task {
    /// The names [`Task::parse`] accepts.
    pub const NAMES: [&'static str; 4] = ["addition", "reverse", "sort", "dates"];

    /// The task called `name`; `digits` (1 to 9, so the sum fits easily in a u64) and
    /// `reverse_input` only matter for addition.
    pub fn parse(name: &str, digits: usize, reverse_input: bool) -> Result<Task> {
        match name {
            "addition" => Task::addition(digits, reverse_input),
            "reverse" => Ok(Task::Reverse),
            "sort" => Ok(Task::Sort),
            "dates" => Ok(Task::Dates),
            _ => Err(Error::invalid(
                "sequence task",
                format!(
                    "unknown task {name:?}; expected one of {}",
                    Task::NAMES.join(", ")
                ),
            )),
        }
    }

    /// The addition task of `digits` (1 to 9) digits per operand, its source written
    /// reversed when `reverse_input` is set.
    pub fn addition(digits: usize, reverse_input: bool) -> Result<Task> {
        let task = Task::Addition {
            digits,
            reverse_input,
        };
        task.check()?;
        Ok(task)
    }

    /// Checks what [`Task::parse`] checks, for a task built by hand.
    fn check(&self) -> Result<()> {
        match *self {
            Task::Addition { digits, .. } if !(1..=9).contains(&digits) => Err(Error::invalid(
                "addition task",
                format!("digits must be from 1 to 9, got {digits}"),
            )),
            _ => Ok(()),
        }
    }

    /// The name [`Task::parse`] knows the task by.
    pub fn name(&self) -> &'static str {
        match self {
            Task::Addition { .. } => "addition",
            Task::Reverse => "reverse",
            Task::Sort => "sort",
            Task::Dates => "dates",
        }
    }

    /// One pair drawn at random. An addition built by hand with digits outside 1..=9 (which
    /// [`Task::parse`] and [`Task::generate`] refuse) draws as if they were 1 or 9.
    pub fn example(&self, rng: &mut Rng) -> Pair {
        match *self {
            Task::Addition {
                digits,
                reverse_input,
            } => {
                // Clamped so that no hand-built task can overflow the sum.
                let limit = 10u64.pow(digits.clamp(1, 9) as u32);
                let (a, b) = (rng.next_u64() % limit, rng.next_u64() % limit);
                let source = format!("{a}+{b}");
                Pair {
                    source: if reverse_input {
                        source.chars().rev().collect()
                    } else {
                        source
                    },
                    target: (a + b).to_string(),
                }
            }
            Task::Reverse => {
                let source = random_word(rng);
                let target = source.chars().rev().collect();
                Pair { source, target }
            }
            Task::Sort => {
                let source = random_word(rng);
                let mut letters: Vec<char> = source.chars().collect();
                letters.sort_unstable();
                Pair {
                    source,
                    target: letters.into_iter().collect(),
                }
            }
            Task::Dates => {
                let (first, days) = date_range();
                let day = first + rng.below(days) as i64;
                let format = rng.below(DATE_FORMATS);
                let (year, month, date) = civil_from_days(day);
                Pair {
                    source: write_date(format, day),
                    target: format!("{year:04}-{month:02}-{date:02}"),
                }
            }
        }
    }

    /// The longest source and target the task draws, in characters.
    fn longest(&self) -> (usize, usize) {
        match *self {
            Task::Addition { digits, .. } => {
                let digits = digits.clamp(1, 9);
                (2 * digits + 1, digits + 1)
            }
            Task::Reverse | Task::Sort => (LONGEST_WORD, LONGEST_WORD),
            Task::Dates => (LONGEST_DATE, ISO_DATE),
        }
    }

    /// Fails at once, before anything is drawn, when `train` + `valid` pairs would take more
    /// than half the memory this machine has free (by an estimate of a pair's bytes from
    /// the task's longest pair), naming the sizes by `names` (the command line passes
    /// `("--train-size", "--valid-size")`) and the most pairs that fit.
    pub fn check_memory(&self, train: usize, valid: usize, names: (&str, &str)) -> Result<()> {
        let (source, target) = self.longest();
        let bytes_per_pair = BYTES_PER_PAIR + BYTES_PER_PAIR_CHAR * (source + target) as u64;
        check_fits_in_memory(
            &format!("{} {train} + {} {valid}", names.0, names.1),
            train as u128 + valid as u128,
            "pairs",
            bytes_per_pair,
        )
    }

    /// How many different sources the task can draw.
    fn distinct_sources(&self) -> u64 {
        match *self {
            Task::Addition { digits, .. } => 10u64.saturating_pow(2 * digits as u32),
            Task::Reverse | Task::Sort => (1..=LONGEST_WORD as u32).map(|n| 26u64.pow(n)).sum(),
            Task::Dates => (date_range().1 * DATE_FORMATS) as u64,
        }
    }

    /// `train` + `valid` pairs, deterministic from the seed, no source in both (held out);
    /// an error if the task has fewer distinct sources than asked (e.g. 1-digit addition has
    /// 100), or if the pairs would not fit in memory ([`Task::check_memory`]). No source
    /// occurs twice at all: repeats are drawn again. The validation pairs are drawn first, so
    /// they depend only on `valid` and the seed, not on `train`.
    pub fn generate(
        &self,
        train: usize,
        valid: usize,
        seed: u64,
    ) -> Result<(Vec<Pair>, Vec<Pair>)> {
        self.generate_with_progress(train, valid, seed, &mut |_| {})
    }

    /// [`Task::generate`], handing `report` its progress every two seconds when it takes
    /// more than two.
    pub fn generate_with_progress(
        &self,
        train: usize,
        valid: usize,
        seed: u64,
        report: &mut dyn FnMut(&GenerationProgress),
    ) -> Result<(Vec<Pair>, Vec<Pair>)> {
        self.check()?;
        let available = self.distinct_sources();
        let asked = train as u128 + valid as u128;
        if asked > u128::from(available) {
            return Err(Error::invalid(
                "sequence task",
                format!(
                    "{train} training and {valid} validation pairs need {asked} different sources, \
                     but the {} task{} has only {available}",
                    self.name(),
                    match self {
                        Task::Addition { digits: 1, .. } => " with 1 digit".to_string(),
                        Task::Addition { digits, .. } => format!(" with {digits} digits"),
                        _ => String::new(),
                    }
                ),
            ));
        }
        self.check_memory(train, valid, ("train", "valid"))?;
        let mut progress = ProgressReporter::new(asked as u64, report);
        Ok(self.draw_pairs(train, valid, seed, &mut progress))
    }

    /// The pairs of [`Task::generate`], once their number is checked.
    fn draw_pairs(
        &self,
        train: usize,
        valid: usize,
        seed: u64,
        progress: &mut ProgressReporter,
    ) -> (Vec<Pair>, Vec<Pair>) {
        let mut rng = Rng::new(seed);
        let mut sources = HashSet::new();
        let mut drawn = 0u64;
        let mut draw = |count: usize| {
            let mut pairs = Vec::with_capacity(count);
            while pairs.len() < count {
                let pair = self.example(&mut rng);
                if sources.insert(pair.source.clone()) {
                    pairs.push(pair);
                    drawn += 1;
                    progress.advance(drawn);
                }
            }
            pairs
        };
        let valid_pairs = draw(valid);
        let train_pairs = draw(train);
        progress.finish();
        (train_pairs, valid_pairs)
    }
}

/// Lowercase letters, a length uniform in 1..=LONGEST_WORD.
fn random_word(rng: &mut Rng) -> String {
    let length = 1 + rng.below(LONGEST_WORD);
    (0..length)
        .map(|_| char::from(b'a' + rng.below(26) as u8))
        .collect()
}

/// The first day of the dates task (counted from 1970-01-01) and how many days it spans.
fn date_range() -> (i64, usize) {
    let first = days_from_civil(FIRST_YEAR, 1, 1);
    let last = days_from_civil(LAST_YEAR, 12, 31);
    (first, (last - first + 1) as usize)
}

/// Day `day` (counted from 1970-01-01) in date format `format` (see [`Task::Dates`]).
fn write_date(format: usize, day: i64) -> String {
    let (year, month, date) = civil_from_days(day);
    let name = MONTHS[month as usize - 1];
    let short = &name[..3];
    let weekday = WEEKDAYS[(day + 4).rem_euclid(7) as usize]; // 1970-01-01 was a Thursday
    match format {
        0 => format!("{name} {date}, {year}"),
        1 => format!("{date} {name} {year}"),
        2 => format!("{short} {date} {year}"),
        3 => format!("{date:02}-{short}-{year}"),
        4 => format!("{month}/{date}/{year}"),
        5 => format!("{date:02}.{month:02}.{year}"),
        6 => format!("{weekday}, {name} {date}, {year}"),
        7 => format!("{year}/{month:02}/{date:02}"),
        _ => format!(
            "{} {date}{} {year}",
            name.to_lowercase(),
            ordinal_suffix(date)
        ),
    }
}

/// "st", "nd", "rd" or "th", as English writes 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st.
fn ordinal_suffix(number: i64) -> &'static str {
    match (number % 10, number % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    }
}

/// Days from 1970-01-01 to the proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month, day) of the day `days` after 1970-01-01; the inverse of
/// [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The most characters a source, or a target, of a TSV file may have. A character-level
/// model takes a step per character: a recurrent layer runs its cell once per step;
/// attention weighs every source character against every target one (a batch of 64 pairs of
/// 4,000 characters holds a billion scores per layer and head, which the memory check
/// refuses before anything is allocated); and the model's `max_source` and `max_target` are
/// the data's longest pair, so one long target makes every validation decode run that many
/// steps. 4,000 characters hold a sentence of 200 words or subword pieces with room to
/// spare, and several paragraphs; a longer line is more likely a file whose line breaks were
/// lost than a pair to learn. [`read_tsv`] checks it, so that such a line is an error naming
/// it when the file is read, not a tensor too large for the GPU after a whole epoch.
pub const MAX_SEQUENCE_CHARS: usize = 4_000;

/// Pairs from a TSV file; see [`parse_tsv`] for the format and the errors.
pub fn read_tsv(path: impl AsRef<Path>) -> Result<Parsed<Vec<Pair>>> {
    let path = path.as_ref();
    parse_tsv(&crate::files::read_text_file(path)?, path)
}

/// Parses TSV text of pairs: source, a tab, target, per line; `path` only names the file in
/// errors and warnings.
///
/// Blank lines (no tab, nothing but whitespace) are skipped; lines end in "\n" or "\r\n"; a
/// UTF-8 byte order mark is allowed. Spaces are kept: they are characters of the source or
/// target like any other. These are errors naming the file and the 1-based line: no tab,
/// more than one tab, an empty source or target, a source or target of more than
/// [`MAX_SEQUENCE_CHARS`] characters, a carriage return not followed by a line feed. A file
/// of no pairs is an error naming the file. NUL bytes are read as characters, with a
/// [`Warning`](super::Warning).
pub fn parse_tsv(text: &str, path: &Path) -> Result<Parsed<Vec<Pair>>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_line_ends(text, path)?;
    let at_line =
        |line: usize, message: String| Error::format(path, format!("line {line}: {message}"));
    let mut pairs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[..] {
            [only] if only.trim().is_empty() => continue,
            [only] => {
                return Err(at_line(
                    line_number,
                    format!(
                        "no tab in {:?}; expected the source, a tab, then the target",
                        preview(only)
                    ),
                ))
            }
            ["", _] => {
                return Err(at_line(
                    line_number,
                    "the source (before the tab) is empty".into(),
                ))
            }
            [_, ""] => {
                return Err(at_line(
                    line_number,
                    "the target (after the tab) is empty".into(),
                ))
            }
            [source, target] => {
                for (side, value) in [("source", source), ("target", target)] {
                    let chars = value.chars().count();
                    if chars > MAX_SEQUENCE_CHARS {
                        return Err(at_line(
                            line_number,
                            format!(
                                "the {side} has {chars} characters, more than the \
                                 {MAX_SEQUENCE_CHARS} a source or target may have"
                            ),
                        ));
                    }
                }
                pairs.push(Pair {
                    source: source.to_string(),
                    target: target.to_string(),
                })
            }
            _ => {
                return Err(at_line(
                    line_number,
                    format!(
                        "{} tabs; expected exactly one, between the source and the target",
                        fields.len() - 1
                    ),
                ))
            }
        }
    }
    if pairs.is_empty() {
        return Err(Error::format(
            path,
            "holds no pairs; expected lines of a source, a tab, then the target",
        ));
    }
    Ok(Parsed {
        contents: pairs,
        warnings: text_warnings(text, path),
    })
}

/// The start of a long line, for an error message.
fn preview(line: &str) -> String {
    const SHOWN: usize = 60;
    if line.chars().count() <= SHOWN {
        line.to_string()
    } else {
        line.chars().take(SHOWN).chain("…".chars()).collect()
    }
}

/// Writes `pairs` as a TSV file that [`read_tsv`] reads back exactly (for instance to dump a
/// built-in task). Every source and target must be non-empty, at most
/// [`MAX_SEQUENCE_CHARS`] characters long and free of tabs and line breaks. The file is
/// written to a temporary file beside it and renamed, so it is never seen half-written.
pub fn write_tsv(path: impl AsRef<Path>, pairs: &[Pair]) -> Result<()> {
    if pairs.is_empty() {
        return Err(Error::invalid(
            "write_tsv",
            "no pairs to write; a TSV file needs at least one",
        ));
    }
    let mut text = String::new();
    for (index, pair) in pairs.iter().enumerate() {
        for (side, value) in [("source", &pair.source), ("target", &pair.target)] {
            if value.is_empty()
                || value.contains(['\t', '\n', '\r'])
                || value.chars().count() > MAX_SEQUENCE_CHARS
            {
                return Err(Error::invalid(
                    "write_tsv",
                    format!(
                        "pair {index} has the {side} {:?}; expected a non-empty text of at \
                         most {MAX_SEQUENCE_CHARS} characters without tabs or line breaks",
                        preview(value)
                    ),
                ));
            }
        }
        text.push_str(&pair.source);
        text.push('\t');
        text.push_str(&pair.target);
        text.push('\n');
    }
    write_atomically(path.as_ref(), text.as_bytes())
}

/// Splits off `valid_fraction` (in (0, 1), error otherwise; at least one pair on each side,
/// error naming the count otherwise) of the pairs, shuffled with the seed. The validation
/// part has round(`valid_fraction` × pairs) pairs; returns (train, valid). Pairs with equal
/// sources are not kept together: a file that repeats a source can have it on both sides.
pub fn split_pairs(
    pairs: &[Pair],
    valid_fraction: f64,
    seed: u64,
) -> Result<(Vec<Pair>, Vec<Pair>)> {
    super::split_held_out(pairs, valid_fraction, seed, "pairs")
}

/// A pair as token ids, without [`BOS`] or [`EOS`]; [`bucketed_batches`] adds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    /// The source's character ids.
    pub source: Vec<u32>,
    /// The target's character ids.
    pub target: Vec<u32>,
}

/// One padded batch, laid out for the model. Padding rows (after the `real` ones) hold only
/// [`PAD`] and have lengths 0.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqBatch {
    /// Rows (B), including padding rows.
    pub batch: usize,
    /// Rows that are real examples: the first `real`.
    pub real: usize,
    /// Ts: the longest source, rounded up to a multiple of [`Bucketing::round_to`].
    pub source_steps: usize,
    /// Td: the longest target + 1 (the EOS), rounded up like Ts.
    pub target_steps: usize,
    /// `[Ts, B]` TIME-MAJOR (index t·B + b): the source, then PAD.
    pub source: Vec<u32>,
    /// `[B]`: each source's length; 0 for padding rows.
    pub source_lengths: Vec<u32>,
    /// `[Td, B]` TIME-MAJOR (index t·B + b): BOS, the target, then PAD.
    pub decoder_input: Vec<u32>,
    /// `[B, Td]` BATCH-MAJOR (index b·Td + t): the target, EOS, then PAD.
    pub target: Vec<u32>,
    /// `[B]`: target length + 1 (the EOS); 0 for padding rows.
    pub target_lengths: Vec<u32>,
    /// `[real]`: the index, into the pairs given, of each real row.
    pub examples: Vec<usize>,
}

impl SeqBatch {
    /// The rows `rows` as a batch of their own, with this batch's steps, so that each row
    /// is computed exactly as in the whole batch. Errors on an empty or out-of-range range.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Result<SeqBatch> {
        if rows.is_empty() || rows.end > self.batch {
            return Err(Error::invalid(
                "SeqBatch::rows",
                format!(
                    "rows {rows:?} of a batch of {}: expected a non-empty range within it",
                    self.batch
                ),
            ));
        }
        let time_major = |values: &[u32]| super::time_major_rows(values, self.batch, rows.clone());
        Ok(SeqBatch {
            batch: rows.len(),
            real: self.real.clamp(rows.start, rows.end) - rows.start,
            source_steps: self.source_steps,
            target_steps: self.target_steps,
            source: time_major(&self.source),
            source_lengths: self.source_lengths[rows.clone()].to_vec(),
            decoder_input: time_major(&self.decoder_input),
            target: self.target[rows.start * self.target_steps..rows.end * self.target_steps]
                .to_vec(),
            target_lengths: self.target_lengths[rows.clone()].to_vec(),
            examples: self.examples[rows.start.min(self.real)..rows.end.min(self.real)].to_vec(),
        })
    }

    /// The batch cut into `parts` batches of consecutive rows, as equal as can be (the
    /// first ones a row longer), each with this batch's steps: the shares of data-parallel
    /// replicas. Errors when there are fewer rows than parts.
    pub fn shards(&self, parts: usize) -> Result<Vec<SeqBatch>> {
        super::share_rows(self.batch, parts)?
            .into_iter()
            .map(|rows| self.rows(rows))
            .collect()
    }

    /// Target tokens that count in the loss: every one but padding.
    pub fn target_tokens(&self) -> usize {
        self.target.iter().filter(|&&t| t != PAD).count()
    }
}

/// How [`bucketed_batches`] cuts and pads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucketing {
    /// Rows per batch (at least 1).
    pub batch: usize,
    /// Ts and Td are rounded up to a multiple of this (at least 1).
    pub round_to: usize,
    /// Pads the last, partial batch with empty rows up to `batch`.
    pub pad_last: bool,
}

/// How many batches' worth of pairs are sorted together by length: enough that each batch
/// finds pairs of nearly its length, few enough that batches still mix examples from all
/// over the data.
const SORTED_BATCHES: usize = 50;

/// Batches of similar lengths: shuffle (when `seed` is Some) the pairs, sort chunks of
/// 50 batches' worth by (source length, target length), cut them into batches, shuffle the
/// batch order. Ts and Td are each batch's longest, rounded up to a multiple of `round_to`
/// (≥ 1) so that few distinct shapes occur. With `pad_last` the last batch is padded with
/// empty rows up to `batch` (so every batch has the same B); otherwise it is smaller.
/// `seed: None` keeps the given order (for evaluation; the `examples` field maps back):
/// neither shuffle nor sort, so batch k holds pairs k·batch.. in order.
///
/// With a seed, the smaller (or padded) batch holds the longest pairs of the last chunk and
/// may come anywhere in the order. Every pair needs a non-empty source (a source length of 0
/// marks a padding row); an empty target is fine (the model learns to write EOS at once).
pub fn bucketed_batches(
    pairs: &[EncodedPair],
    bucketing: &Bucketing,
    seed: Option<u64>,
) -> Result<Vec<SeqBatch>> {
    if bucketing.batch == 0 {
        return Err(Error::invalid(
            "bucketed batches",
            "the batch size must be at least 1, got 0",
        ));
    }
    if bucketing.round_to == 0 {
        return Err(Error::invalid(
            "bucketed batches",
            "round_to must be at least 1 (1 rounds nothing), got 0",
        ));
    }
    if pairs.is_empty() {
        return Err(Error::invalid("bucketed batches", "there are no pairs"));
    }
    if let Some(empty) = pairs.iter().position(|pair| pair.source.is_empty()) {
        return Err(Error::invalid(
            "bucketed batches",
            format!("pair {empty} has an empty source; every source needs at least one token"),
        ));
    }
    let mut rng = seed.map(Rng::new);
    let order = match rng.as_mut() {
        Some(rng) => {
            let mut order = permutation(pairs.len(), rng);
            let chunk = SORTED_BATCHES.saturating_mul(bucketing.batch);
            for sorted in order.chunks_mut(chunk) {
                sorted.sort_by_key(|&i| (pairs[i].source.len(), pairs[i].target.len()));
            }
            order
        }
        None => (0..pairs.len()).collect(),
    };
    let batches: Vec<SeqBatch> = order
        .chunks(bucketing.batch)
        .map(|rows| pad_batch(pairs, rows, bucketing))
        .collect();
    Ok(match rng.as_mut() {
        Some(rng) => {
            let mut shuffled: Vec<Option<SeqBatch>> = batches.into_iter().map(Some).collect();
            permutation(shuffled.len(), rng)
                .into_iter()
                .filter_map(|k| shuffled[k].take())
                .collect()
        }
        None => batches,
    })
}

/// The batch of pairs `rows` (each with a non-empty source), laid out as [`SeqBatch`] says.
fn pad_batch(pairs: &[EncodedPair], rows: &[usize], bucketing: &Bucketing) -> SeqBatch {
    let batch = if bucketing.pad_last {
        bucketing.batch
    } else {
        rows.len()
    };
    let round_up = |steps: usize| steps.div_ceil(bucketing.round_to) * bucketing.round_to;
    let (longest_source, longest_target) = longest_of(rows.iter().map(|&i| &pairs[i]));
    let source_steps = round_up(longest_source);
    let target_steps = round_up(longest_target + 1);
    let mut source = vec![PAD; source_steps * batch];
    let mut decoder_input = vec![PAD; target_steps * batch];
    let mut target = vec![PAD; batch * target_steps];
    let mut source_lengths = vec![0; batch];
    let mut target_lengths = vec![0; batch];
    for (b, pair) in rows.iter().map(|&i| &pairs[i]).enumerate() {
        for (t, &id) in pair.source.iter().enumerate() {
            source[t * batch + b] = id;
        }
        decoder_input[b] = BOS;
        for (t, &id) in pair.target.iter().enumerate() {
            decoder_input[(t + 1) * batch + b] = id;
            target[b * target_steps + t] = id;
        }
        target[b * target_steps + pair.target.len()] = EOS;
        source_lengths[b] = pair.source.len() as u32;
        target_lengths[b] = pair.target.len() as u32 + 1;
    }
    SeqBatch {
        batch,
        real: rows.len(),
        source_steps,
        target_steps,
        source,
        source_lengths,
        decoder_input,
        target,
        target_lengths,
        examples: rows.to_vec(),
    }
}

/// The longest source and target (in tokens, without EOS) of the pairs; (0, 0) for none.
pub fn longest(pairs: &[EncodedPair]) -> (usize, usize) {
    longest_of(pairs.iter())
}

fn longest_of<'a>(pairs: impl Iterator<Item = &'a EncodedPair>) -> (usize, usize) {
    pairs.fold((0, 0), |(source, target), pair| {
        (source.max(pair.source.len()), target.max(pair.target.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Task::distinct_sources` counts every (day, format) as its own source, which holds only
    /// if no two of them are written alike; `generate` would loop forever otherwise.
    #[test]
    fn every_day_and_date_format_is_a_different_source() {
        let (first, days) = date_range();
        let mut sources = HashSet::new();
        for day in first..first + days as i64 {
            assert_eq!(days_from_civil_of(civil_from_days(day)), day);
            for format in 0..DATE_FORMATS {
                let source = write_date(format, day);
                assert!(
                    source.len() <= LONGEST_DATE,
                    "{source:?} is longer than LONGEST_DATE"
                );
                assert!(
                    sources.insert(source.clone()),
                    "{source:?} is written twice"
                );
            }
        }
        assert_eq!(sources.len() as u64, Task::Dates.distinct_sources());
    }

    fn days_from_civil_of((year, month, day): (i64, i64, i64)) -> i64 {
        days_from_civil(year, month, day)
    }

    #[test]
    fn generation_reports_its_progress_up_to_the_last_pair() {
        let mut seen = Vec::new();
        let mut record = |progress: &GenerationProgress| seen.push(progress.done);
        let mut progress = ProgressReporter::with_timing(
            3000,
            std::time::Duration::ZERO,
            std::time::Duration::ZERO,
            &mut record,
        );
        let (train, valid) = Task::Sort.draw_pairs(2500, 500, 7, &mut progress);
        assert_eq!((train.len(), valid.len()), (2500, 500));
        assert_eq!(seen, [1024, 2048, 3000]);
    }
}
