//! Text classification data: labelled texts from the built-in [`ClassifyTask`] or the user's
//! own TSV file ([`read_labelled_tsv`]), a word tokeniser ([`tokenize`]), a word
//! vocabulary ([`WordVocab`]), class [`Labels`] in sorted order, and padded
//! [`text_batches`].
//!
//! ```
//! use shadergrad::data::classify::{encode_texts, text_batches, ClassifyTask, Labels, WordVocab};
//!
//! let (train, valid) = ClassifyTask::parse("reviews")?.generate(500, 50, 7)?;
//! let labels = Labels::from_examples(&train)?;
//! let vocab = WordVocab::from_examples(&train);
//! let encoded = encode_texts(&vocab, &labels, &train, "training")?;
//! for batch in text_batches(&encoded, 32, 4, Some(7))? {
//!     assert_eq!(batch.ids.len(), 32 * batch.steps);
//!     assert!(batch.steps >= 4);
//! }
//! # let _ = valid;
//! # Ok::<(), shadergrad::Error>(())
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use super::generating::{check_fits_in_memory, ProgressReporter};
use super::reading::{check_line_ends, text_warnings};
use super::{check_distinct, permutation, GenerationProgress, Parsed};
use crate::rng::Rng;
use crate::{Error, Result};

/// Pads texts after their end (and fills padding rows).
pub const PAD: u32 = 0;
/// Stands for a word the vocabulary does not hold.
pub const UNK: u32 = 1;
/// How many ids the special tokens take; words follow them.
pub const SPECIAL_TOKENS: usize = 2;
/// The label of a padding row; the loss skips it.
pub const NO_LABEL: u32 = u32::MAX;

/// One example: a text and the name of its class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelledText {
    /// The name of the class, as the data file writes it.
    pub label: String,
    /// The raw text, before [`tokenize`].
    pub text: String,
}

/// The words of `text`: lowercased, split at whitespace, each punctuation mark a word of its
/// own ("Not good!" → `not`, `good`, `!`). An apostrophe between letters stays inside its
/// word ("don't"), so contractions keep their meaning.
pub fn tokenize(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let inner_apostrophe = c == '\''
            && !word.is_empty()
            && chars.get(i + 1).is_some_and(|next| next.is_alphanumeric());
        if c.is_alphanumeric() || inner_apostrophe {
            word.extend(c.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            words.push(c.to_string());
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The words a model reads, each with an id: word `words()[i]` has id `SPECIAL_TOKENS + i`,
/// after [`PAD`] and [`UNK`].
#[derive(Debug, Clone, PartialEq)]
pub struct WordVocab {
    words: Vec<String>,
    ids: HashMap<String, u32>,
}

impl WordVocab {
    /// Every word of the examples' texts (a minimum count of 1), in sorted order.
    pub fn from_examples(examples: &[LabelledText]) -> WordVocab {
        let words: BTreeSet<String> = examples.iter().flat_map(|e| tokenize(&e.text)).collect();
        WordVocab::with_words(words.into_iter().collect())
    }

    /// The vocabulary of `words` in the order given (as [`WordVocab::words`] returned them
    /// when a checkpoint was saved). A word given twice is an error, naming it.
    pub fn from_words(words: &[String]) -> Result<WordVocab> {
        check_distinct("word vocabulary", "word", words)?;
        Ok(WordVocab::with_words(words.to_vec()))
    }

    fn with_words(words: Vec<String>) -> WordVocab {
        let ids = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), (SPECIAL_TOKENS + i) as u32))
            .collect();
        WordVocab { words, ids }
    }

    /// The words, in id order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The number of ids: the special tokens and the words.
    #[allow(clippy::len_without_is_empty)] // never empty: the special tokens are always there
    pub fn len(&self) -> usize {
        SPECIAL_TOKENS + self.words.len()
    }

    /// The id of each word of `text` ([`tokenize`]), [`UNK`] for words it does not hold.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        tokenize(text)
            .iter()
            .map(|word| self.ids.get(word).copied().unwrap_or(UNK))
            .collect()
    }
}

/// The class names, in sorted order: class id `i` is `names()[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    names: Vec<String>,
}

impl Labels {
    /// The distinct labels of the examples, sorted; at least two are needed (one class has
    /// nothing to tell apart), an error naming the one found otherwise.
    pub fn from_examples(examples: &[LabelledText]) -> Result<Labels> {
        let names: BTreeSet<&str> = examples.iter().map(|e| e.label.as_str()).collect();
        Labels::from_names(names.into_iter().map(str::to_string).collect())
    }

    /// The labels `names` in the order given (as a checkpoint saved them): at least two,
    /// each once.
    pub fn from_names(names: Vec<String>) -> Result<Labels> {
        if names.len() < 2 {
            return Err(Error::invalid(
                "labels",
                format!(
                    "the training examples have {} class{} ({names:?}); a classifier needs at \
                     least 2",
                    names.len(),
                    if names.len() == 1 { "" } else { "es" }
                ),
            ));
        }
        let distinct: HashSet<&String> = names.iter().collect();
        if distinct.len() != names.len() {
            return Err(Error::invalid(
                "labels",
                format!("the labels {names:?} repeat one; expected each once"),
            ));
        }
        Ok(Labels { names })
    }

    /// The class names, in id order: class `i` is `names()[i]`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The number of classes (at least 2).
    #[allow(clippy::len_without_is_empty)] // never empty: from_names needs two
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The class id of `name`.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.names.iter().position(|n| n == name).map(|i| i as u32)
    }
}

/// A text as word ids, and its class id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedText {
    /// The word ids, one per word, [`UNK`] for words the vocabulary lacks.
    pub ids: Vec<u32>,
    /// The class id, below the number of classes.
    pub label: u32,
}

/// The examples as ids. A label outside `labels` is an error naming every such label (and
/// `what` the examples are: "validation"); a text with no words is an error naming it.
pub fn encode_texts(
    vocab: &WordVocab,
    labels: &Labels,
    examples: &[LabelledText],
    what: &str,
) -> Result<Vec<EncodedText>> {
    let unknown: BTreeSet<&str> = examples
        .iter()
        .filter(|e| labels.id(&e.label).is_none())
        .map(|e| e.label.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(Error::invalid(
            "labels",
            format!(
                "the {what} examples have labels the training examples lack: {unknown:?}; the \
                 model knows {:?}",
                labels.names()
            ),
        ));
    }
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let ids = vocab.encode(&e.text);
            if ids.is_empty() {
                return Err(Error::invalid(
                    "texts",
                    format!("{what} example {} ({:?}) has no words", i + 1, e.text),
                ));
            }
            Ok(EncodedText {
                ids,
                label: labels.id(&e.label).unwrap_or(NO_LABEL),
            })
        })
        .collect()
}

/// The most words ([`tokenize`]) a text of a labelled TSV file may have. A batch is padded
/// to its longest text, and each word is a row of every activation: at the command line's
/// defaults (64 texts of 64-wide embeddings) a text of 5,000 words makes the batch's
/// embeddings 82 MB, within the 128 MiB a storage buffer may bind on any WebGPU adapter.
/// Whole reviews or articles fit; a longer line is more likely a file whose line breaks
/// were lost. [`read_labelled_tsv`] checks it, so that such a line is an error naming it
/// when the file is read, not a tensor too large for the GPU during training.
pub const MAX_TEXT_WORDS: usize = 5_000;

/// The most characters a label (a class name) may have: a longer one is most likely a
/// text, in a file whose label and text columns are swapped.
pub const MAX_LABEL_CHARS: usize = 100;

/// Labelled texts from a TSV file; see [`parse_labelled_tsv`] for the format and the
/// errors.
pub fn read_labelled_tsv(path: impl AsRef<Path>) -> Result<Parsed<Vec<LabelledText>>> {
    let path = path.as_ref();
    parse_labelled_tsv(&crate::files::read_text_file(path)?, path)
}

/// Parses TSV text of labelled texts: a label, a tab, the text, per line (a tab inside the
/// text is kept as part of it, and the label is trimmed of spaces); `path` only names the
/// file in errors and warnings.
///
/// Blank lines are skipped; lines end in "\n" or "\r\n"; a UTF-8 byte order mark is
/// allowed. These are errors naming the file and the 1-based line: no tab, an empty label,
/// a label of more than [`MAX_LABEL_CHARS`] characters, a text of no words or of more than
/// [`MAX_TEXT_WORDS`] words, a carriage return not followed by a line feed. A file of no
/// examples is an error naming the file. NUL bytes are read as characters, with a
/// [`Warning`](super::Warning). Which labels a file may hold is for its user to check: a
/// training file needs two or more ([`Labels::from_examples`]), a validation file only
/// labels of its training file ([`encode_texts`]).
pub fn parse_labelled_tsv(text: &str, path: &Path) -> Result<Parsed<Vec<LabelledText>>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_line_ends(text, path)?;
    let at_line =
        |line: usize, message: String| Error::format(path, format!("line {line}: {message}"));
    let mut examples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((label, body)) = line.split_once('\t') else {
            return Err(at_line(
                index + 1,
                format!(
                    "no tab in {:?}; expected the label, a tab, then the text",
                    preview(line)
                ),
            ));
        };
        let label = label.trim();
        if label.is_empty() {
            return Err(at_line(
                index + 1,
                "the label (before the tab) is empty".into(),
            ));
        }
        let label_chars = label.chars().count();
        if label_chars > MAX_LABEL_CHARS {
            return Err(at_line(
                index + 1,
                format!(
                    "the label (before the tab) has {label_chars} characters, more than the \
                     {MAX_LABEL_CHARS} a class name may have: are the label and the text \
                     swapped? Expected the label, a tab, then the text"
                ),
            ));
        }
        let words = tokenize(body).len();
        if words == 0 {
            return Err(at_line(
                index + 1,
                format!("the text (after the tab) has no words: {:?}", preview(body)),
            ));
        }
        if words > MAX_TEXT_WORDS {
            return Err(at_line(
                index + 1,
                format!(
                    "the text (after the tab) has {words} words, more than the \
                     {MAX_TEXT_WORDS} a text may have"
                ),
            ));
        }
        examples.push(LabelledText {
            label: label.to_string(),
            text: body.to_string(),
        });
    }
    if examples.is_empty() {
        return Err(Error::format(
            path,
            "holds no examples; expected lines of a label, a tab, then the text",
        ));
    }
    Ok(Parsed {
        contents: examples,
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

/// Splits off `valid_fraction` (strictly between 0 and 1) of the examples, shuffled with the
/// seed: (train, valid), each with at least one example (an error naming the counts
/// otherwise).
pub fn split_examples(
    examples: &[LabelledText],
    valid_fraction: f64,
    seed: u64,
) -> Result<(Vec<LabelledText>, Vec<LabelledText>)> {
    super::split_held_out(examples, valid_fraction, seed, "examples")
}

/// A built-in classification task, generated from a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassifyTask {
    /// Short movie reviews of three classes, `negative`, `neutral` and `positive`, whose
    /// class depends on word n-grams, not on single words. The grammar:
    ///
    /// ```text
    /// review  = [opener] subject verb judgement [aside] [closer]
    /// opener  = "honestly ," | "overall" | "i think" | "well ,"
    /// subject = "the movie" | "this film" | "the acting" | "the plot" | "the soundtrack"
    ///         | "the ending" | "the cast" | "the script"
    /// verb    = "was" | "is" | "felt" | "seemed"
    /// judgement, one of four forms drawn with equal chance:
    ///         adjective                          → its polarity
    ///         intensifier adjective              → its polarity   ("very good": positive)
    ///         negation adjective                 → the opposite   ("not bad": positive)
    ///         negation intensifier adjective     → neutral        ("not very good")
    /// negation    = "not" | "never"
    /// intensifier = "very" | "really" | "so" | "quite" | "too"
    /// adjective   = good | great | fun | brilliant | wonderful | clever    (positive)
    ///             | bad | awful | boring | terrible | dull | clumsy        (negative)
    /// aside   = "and the" noun "was" [negation | intensifier] fact   (no bearing on the class)
    /// noun    = "music" | "story" | "camera" | "dialogue" | "pace"
    /// fact    = "long" | "short" | "loud" | "quiet" | "simple" | "dark" | "slow"
    /// closer  = "to be honest" | "for me" | "this time" | "in the end" | "!" | "."
    /// ```
    ///
    /// The opener, aside and closer each appear half of the time; an aside's fact is
    /// modified two times in three. Every word of the judgement occurs in all three classes,
    /// and the aside puts negations and intensifiers where they change nothing ("the plot was
    /// good and the pace was not slow"), so the set of words does not give the class: the
    /// model has to read "not good", "not very good", "very good" as units.
    Reviews,
}

/// What a generated review takes in memory on its way through training, by the estimate
/// that [`ClassifyTask::check_memory`] weighs: measured at 950 B on average from the peak
/// memory of generating half a million reviews (the texts, the set that keeps them
/// distinct), their vocabulary, ids and batches; the margin covers the longer reviews.
const BYTES_PER_REVIEW: u64 = 1_200;

const OPENERS: [&str; 4] = ["honestly ,", "overall", "i think", "well ,"];
const SUBJECTS: [&str; 8] = [
    "the movie",
    "this film",
    "the acting",
    "the plot",
    "the soundtrack",
    "the ending",
    "the cast",
    "the script",
];
const VERBS: [&str; 4] = ["was", "is", "felt", "seemed"];
const NEGATIONS: [&str; 2] = ["not", "never"];
const INTENSIFIERS: [&str; 5] = ["very", "really", "so", "quite", "too"];
const POSITIVE: [&str; 6] = ["good", "great", "fun", "brilliant", "wonderful", "clever"];
const NEGATIVE: [&str; 6] = ["bad", "awful", "boring", "terrible", "dull", "clumsy"];
const NOUNS: [&str; 5] = ["music", "story", "camera", "dialogue", "pace"];
const FACTS: [&str; 7] = ["long", "short", "loud", "quiet", "simple", "dark", "slow"];
const CLOSERS: [&str; 6] = [
    "to be honest",
    "for me",
    "this time",
    "in the end",
    "!",
    ".",
];

impl ClassifyTask {
    /// The names [`ClassifyTask::parse`] accepts.
    pub const NAMES: [&'static str; 1] = ["reviews"];

    /// The task called `name`.
    pub fn parse(name: &str) -> Result<ClassifyTask> {
        match name {
            "reviews" => Ok(ClassifyTask::Reviews),
            _ => Err(Error::invalid(
                "classification task",
                format!(
                    "unknown task {name:?}; expected one of {}",
                    ClassifyTask::NAMES.join(", ")
                ),
            )),
        }
    }

    /// The name [`ClassifyTask::parse`] knows the task by.
    pub fn name(&self) -> &'static str {
        match self {
            ClassifyTask::Reviews => "reviews",
        }
    }

    /// One example drawn at random.
    pub fn example(&self, rng: &mut Rng) -> LabelledText {
        match self {
            ClassifyTask::Reviews => review(rng),
        }
    }

    /// How many different texts the task can draw.
    fn distinct_texts(&self) -> u64 {
        match self {
            ClassifyTask::Reviews => {
                let adjectives = (POSITIVE.len() + NEGATIVE.len()) as u64;
                let (negations, intensifiers) = (NEGATIONS.len() as u64, INTENSIFIERS.len() as u64);
                let judgements =
                    adjectives * (1 + intensifiers + negations + negations * intensifiers);
                let asides =
                    1 + (NOUNS.len() * FACTS.len()) as u64 * (1 + negations + intensifiers);
                (1 + OPENERS.len() as u64)
                    * (SUBJECTS.len() * VERBS.len()) as u64
                    * judgements
                    * asides
                    * (1 + CLOSERS.len() as u64)
            }
        }
    }

    /// Fails at once, before anything is drawn, when `train` + `valid` examples would take
    /// more than half the memory this machine has free (by an estimate of a review's bytes), naming
    /// the sizes by `names` (the command line passes `("--train-size", "--valid-size")`) and
    /// the most examples that fit.
    pub fn check_memory(&self, train: usize, valid: usize, names: (&str, &str)) -> Result<()> {
        check_fits_in_memory(
            &format!("{} {train} + {} {valid}", names.0, names.1),
            train as u128 + valid as u128,
            "examples",
            BYTES_PER_REVIEW,
        )
    }

    /// `train` + `valid` examples, deterministic from the seed, no text in both (held out)
    /// nor twice in either; an error if the task has fewer distinct texts than asked, or if
    /// the examples would not fit in memory ([`ClassifyTask::check_memory`]). The
    /// validation examples are drawn first, so they depend only on `valid` and the seed.
    pub fn generate(
        &self,
        train: usize,
        valid: usize,
        seed: u64,
    ) -> Result<(Vec<LabelledText>, Vec<LabelledText>)> {
        self.generate_with_progress(train, valid, seed, &mut |_| {})
    }

    /// [`ClassifyTask::generate`], handing `report` its progress every two seconds when it
    /// takes more than two.
    pub fn generate_with_progress(
        &self,
        train: usize,
        valid: usize,
        seed: u64,
        report: &mut dyn FnMut(&GenerationProgress),
    ) -> Result<(Vec<LabelledText>, Vec<LabelledText>)> {
        let available = self.distinct_texts();
        let asked = train as u128 + valid as u128;
        if asked > u128::from(available) {
            return Err(Error::invalid(
                "classification task",
                format!(
                    "{train} training and {valid} validation examples need {asked} different \
                     texts, but the {} task has only {available}",
                    self.name()
                ),
            ));
        }
        self.check_memory(train, valid, ("train", "valid"))?;
        let mut progress = ProgressReporter::new(asked as u64, report);
        Ok(self.draw_examples(train, valid, seed, &mut progress))
    }

    /// The examples of [`ClassifyTask::generate`], once their number is checked.
    fn draw_examples(
        &self,
        train: usize,
        valid: usize,
        seed: u64,
        progress: &mut ProgressReporter,
    ) -> (Vec<LabelledText>, Vec<LabelledText>) {
        let mut rng = Rng::new(seed);
        let mut texts = HashSet::new();
        let mut drawn = 0u64;
        let mut draw = |count: usize| {
            let mut examples = Vec::with_capacity(count);
            while examples.len() < count {
                let example = self.example(&mut rng);
                if texts.insert(example.text.clone()) {
                    examples.push(example);
                    drawn += 1;
                    progress.advance(drawn);
                }
            }
            examples
        };
        let valid_examples = draw(valid);
        let train_examples = draw(train);
        progress.finish();
        (train_examples, valid_examples)
    }
}

/// One review of [`ClassifyTask::Reviews`].
fn review(rng: &mut Rng) -> LabelledText {
    let mut pick = |words: &[&'static str]| words[rng.below(words.len())];
    let mut parts: Vec<&str> = Vec::new();
    let opener = pick(&OPENERS);
    let subject = pick(&SUBJECTS);
    let verb = pick(&VERBS);
    let negation = pick(&NEGATIONS);
    let intensifier = pick(&INTENSIFIERS);
    let positive = rng.below(2) == 0;
    let adjective = if positive {
        POSITIVE[rng.below(POSITIVE.len())]
    } else {
        NEGATIVE[rng.below(NEGATIVE.len())]
    };
    if rng.below(2) == 0 {
        parts.push(opener);
    }
    parts.extend([subject, verb]);
    let polarity = |positive: bool| if positive { "positive" } else { "negative" };
    let label = match rng.below(4) {
        0 => polarity(positive),
        1 => {
            parts.push(intensifier);
            polarity(positive)
        }
        2 => {
            parts.push(negation);
            polarity(!positive)
        }
        _ => {
            parts.extend([negation, intensifier]);
            "neutral"
        }
    };
    parts.push(adjective);
    if rng.below(2) == 0 {
        let noun = NOUNS[rng.below(NOUNS.len())];
        let fact = FACTS[rng.below(FACTS.len())];
        parts.extend(["and the", noun, "was"]);
        match rng.below(3) {
            0 => {}
            1 => parts.push(NEGATIONS[rng.below(NEGATIONS.len())]),
            _ => parts.push(INTENSIFIERS[rng.below(INTENSIFIERS.len())]),
        }
        parts.push(fact);
    }
    if rng.below(2) == 0 {
        parts.push(CLOSERS[rng.below(CLOSERS.len())]);
    }
    LabelledText {
        label: label.to_string(),
        text: parts.join(" "),
    }
}

/// One padded batch of texts, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TextBatch {
    /// Rows (B), including padding rows.
    pub batch: usize,
    /// Rows that are real examples: the first `real`.
    pub real: usize,
    /// L: the longest text of the batch, at least the `min_steps` asked for.
    pub steps: usize,
    /// `[B, L]`: each text's ids, then [`PAD`]; padding rows hold only PAD.
    pub ids: Vec<u32>,
    /// `[B]`: each text's length in words; 0 for padding rows.
    pub lengths: Vec<u32>,
    /// `[B]`: each text's class; [`NO_LABEL`] for padding rows.
    pub labels: Vec<u32>,
    /// `[real]`: the index, into the texts given, of each real row.
    pub examples: Vec<usize>,
}

impl TextBatch {
    /// The batch cut into `parts` batches of consecutive rows, as equal as can be (the
    /// first ones a row longer), each with this batch's steps: the shares of data-parallel
    /// replicas. Errors when there are fewer rows than parts.
    pub fn shards(&self, parts: usize) -> Result<Vec<TextBatch>> {
        Ok(super::share_rows(self.batch, parts)?
            .into_iter()
            .map(|rows| TextBatch {
                batch: rows.len(),
                real: self.real.clamp(rows.start, rows.end) - rows.start,
                steps: self.steps,
                ids: self.ids[rows.start * self.steps..rows.end * self.steps].to_vec(),
                lengths: self.lengths[rows.clone()].to_vec(),
                labels: self.labels[rows.clone()].to_vec(),
                examples: self.examples[rows.start.min(self.real)..rows.end.min(self.real)]
                    .to_vec(),
            })
            .collect())
    }
}

/// Batches of `batch` rows (the last padded with empty rows, so that every batch has the
/// same B), shuffled with `seed` (`None` keeps the given order), each padded to its longest
/// text but at least `min_steps` (the widest filter of a CNN).
pub fn text_batches(
    texts: &[EncodedText],
    batch: usize,
    min_steps: usize,
    seed: Option<u64>,
) -> Result<Vec<TextBatch>> {
    if batch == 0 {
        return Err(Error::invalid(
            "text batches",
            "the batch size must be at least 1, got 0",
        ));
    }
    if texts.is_empty() {
        return Err(Error::invalid("text batches", "there are no texts"));
    }
    let order = match seed {
        Some(seed) => permutation(texts.len(), &mut Rng::new(seed)),
        None => (0..texts.len()).collect(),
    };
    Ok(order
        .chunks(batch)
        .map(|rows| {
            let steps = rows
                .iter()
                .map(|&i| texts[i].ids.len())
                .max()
                .unwrap_or(0)
                .max(min_steps)
                .max(1);
            let mut ids = vec![PAD; batch * steps];
            let mut lengths = vec![0; batch];
            let mut labels = vec![NO_LABEL; batch];
            for (row, &i) in rows.iter().enumerate() {
                let text = &texts[i];
                ids[row * steps..row * steps + text.ids.len()].copy_from_slice(&text.ids);
                lengths[row] = text.ids.len() as u32;
                labels[row] = text.label;
            }
            TextBatch {
                batch,
                real: rows.len(),
                steps,
                ids,
                lengths,
                labels,
                examples: rows.to_vec(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn generation_reports_its_progress_up_to_the_last_example() {
        let mut seen = Vec::new();
        let mut record = |progress: &GenerationProgress| seen.push(progress.done);
        let mut progress =
            ProgressReporter::with_timing(3000, Duration::ZERO, Duration::ZERO, &mut record);
        let (train, valid) = ClassifyTask::Reviews.draw_examples(2500, 500, 7, &mut progress);
        assert_eq!((train.len(), valid.len()), (2500, 500));
        assert_eq!(seen, [1024, 2048, 3000]);
    }
}
