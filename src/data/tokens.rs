//! Tokens for one side of sequence-to-sequence text: how a text becomes ids and back, at
//! the level of characters, words or subwords (byte-pair encoding), with a vocabulary
//! learned from the training texts of that side.
//!
//! | level  | `"Hello, world!"` becomes                       | for                              |
//! |--------|-------------------------------------------------|----------------------------------|
//! | `char` | `H e l l o , ␠ w o r l d !`                     | spelling, transliteration, digits |
//! | `word` | `Hello` `,` `world` `!`                         | phonemes, normalisation, short sentences |
//! | `bpe`  | `▁Hel` `lo` `,` `▁world` `!` (merges learned)   | translation: any word, few ids    |
//!
//! **Words** are maximal runs of characters that are neither whitespace nor punctuation; an
//! apostrophe between two letters (`don't`, `l'homme`) and a `.` or `,` between two digits
//! (`1,000.5`) stay inside the word. Every other punctuation character is a token of its own.
//! Decoding joins words with one space, but writes no space before closing punctuation
//! (`, . ! ? ; : % ) ] } ' ” » …`) nor after opening punctuation (`( [ { “ « ¿ ¡`), and
//! pairs straight double quotes as opening and closing by their order. So decoding gives back
//! the text for text written that way, and in any case encoding the decoded text gives the
//! same tokens again.
//!
//! **Subwords** follow SentencePiece's convention: the text splits at whitespace, each word
//! begins with the symbol `▁` (U+2581), and the merges, learned as in Sennrich et al.'s byte-pair
//! encoding (the most frequent adjacent pair of symbols first, within words), join symbols
//! into pieces. Decoding concatenates the pieces and turns `▁` back into spaces, so it gives
//! back the text with its whitespace runs collapsed to single spaces and trimmed.
//!
//! Characters are kept exactly. A token the vocabulary lacks (a word or character unseen in
//! training, or cut by `max_vocab`) becomes [`UNK`], which decodes as U+FFFD.
//!
//! ```
//! use shadergrad::data::tokens::{TokenLevel, TokenVocab, VocabLimits};
//!
//! let texts = ["the cat sat", "the cat ate", "a cat, the hat!"];
//! let words = TokenVocab::learn(texts, TokenLevel::Word, VocabLimits::default())?;
//! let (ids, unknown) = words.encode("the hat sat, the dog!");
//! assert_eq!(unknown, ["dog"]);
//! assert_eq!(words.decode(&ids), "the hat sat, the \u{FFFD}!");
//!
//! let pieces = TokenVocab::learn(texts, TokenLevel::Bpe, VocabLimits { merges: 8, ..VocabLimits::default() })?;
//! let (ids, _) = pieces.encode("the cat sat");
//! assert!(ids.len() < "the cat sat".len());
//! assert_eq!(pieces.decode(&ids), "the cat sat");
//! # Ok::<(), shadergrad::Error>(())
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use serde_json::{json, Value};

use super::check_distinct;
use super::text::{EncodedPair, Pair, BOS, EOS, PAD, SPECIAL_TOKENS, UNK};
use crate::{Error, Result};

/// Marks the start of a word in subword pieces (SentencePiece's "▁", U+2581).
pub const WORD_START: char = '\u{2581}';

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenLevel {
    /// One character.
    Char,
    /// A word or a punctuation mark.
    Word,
    /// A subword piece of byte-pair encoding.
    Bpe,
}

impl TokenLevel {
    /// The level's name in flags and checkpoints: `char`, `word`, `bpe`.
    pub fn name(self) -> &'static str {
        match self {
            TokenLevel::Char => "char",
            TokenLevel::Word => "word",
            TokenLevel::Bpe => "bpe",
        }
    }

    /// The level called `name` ([`TokenLevel::name`]), or an error naming the three.
    pub fn parse(name: &str) -> Result<TokenLevel> {
        match name {
            "char" => Ok(TokenLevel::Char),
            "word" => Ok(TokenLevel::Word),
            "bpe" => Ok(TokenLevel::Bpe),
            _ => Err(Error::invalid(
                "tokens",
                format!("token level {name:?} is not one of char, word, bpe"),
            )),
        }
    }
}

/// How large [`TokenVocab::learn`] may make a vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocabLimits {
    /// At most this many ids, the special tokens included: the most frequent tokens are
    /// kept, the rest become [`UNK`]. For subwords, merging stops there too. `None`: every
    /// token of the training texts.
    pub max_vocab: Option<usize>,
    /// How many merges byte-pair encoding learns at most (it stops earlier when no pair of
    /// symbols occurs twice); ignored by the other levels.
    pub merges: usize,
}

impl Default for VocabLimits {
    fn default() -> Self {
        VocabLimits {
            max_vocab: None,
            merges: 8_000,
        }
    }
}

/// One side's tokens: its level, its vocabulary (token `tokens()[i]` has id
/// `SPECIAL_TOKENS + i`, after [`PAD`], [`BOS`], [`EOS`] and [`UNK`]), and, for subwords, the
/// merges in the order learned.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenVocab {
    level: TokenLevel,
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    merges: Vec<(String, String)>,
    /// Each merge's rank by its left then its right symbol, looked up without allocating.
    ranks: HashMap<String, HashMap<String, usize>>,
}

impl TokenVocab {
    /// Learns the vocabulary of `level` from `texts` (one side's training texts), within
    /// `limits`. Character and word vocabularies order their tokens by frequency (then by
    /// the token itself), except that characters that all fit keep code-point order.
    pub fn learn<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        level: TokenLevel,
        limits: VocabLimits,
    ) -> Result<TokenVocab> {
        if let Some(max) = limits.max_vocab {
            if max <= SPECIAL_TOKENS {
                return Err(Error::invalid(
                    "tokens",
                    format!(
                        "a vocabulary of at most {max} ids has no room for tokens: the {SPECIAL_TOKENS} \
                         special ids come first, so expected more than {SPECIAL_TOKENS}"
                    ),
                ));
            }
        }
        let room = limits.max_vocab.map(|max| max - SPECIAL_TOKENS);
        match level {
            TokenLevel::Char | TokenLevel::Word => {
                let mut counts: HashMap<String, usize> = HashMap::new();
                for text in texts {
                    let tokens = match level {
                        TokenLevel::Char => chars_of(text),
                        _ => words_of(text),
                    };
                    for token in tokens {
                        *counts.entry(token).or_default() += 1;
                    }
                }
                let mut tokens: Vec<(String, usize)> = counts.into_iter().collect();
                tokens.sort_by(|(a, m), (b, n)| n.cmp(m).then_with(|| a.cmp(b)));
                let all_fit = room.is_none_or(|room| tokens.len() <= room);
                tokens.truncate(room.unwrap_or(usize::MAX));
                let mut tokens: Vec<String> = tokens.into_iter().map(|(t, _)| t).collect();
                if level == TokenLevel::Char && all_fit {
                    tokens.sort();
                }
                TokenVocab::new(level, tokens, Vec::new())
            }
            TokenLevel::Bpe => {
                let (tokens, merges) = learn_bpe(texts, room, limits.merges);
                TokenVocab::new(level, tokens, merges)
            }
        }
    }

    /// The character vocabulary of `chars` in this order: what checkpoints from before
    /// token levels (one shared character vocabulary) hold.
    pub fn from_chars(chars: &[char]) -> Result<TokenVocab> {
        check_distinct("tokens", "character", chars)?;
        TokenVocab::new(
            TokenLevel::Char,
            chars.iter().map(char::to_string).collect(),
            Vec::new(),
        )
    }

    fn new(
        level: TokenLevel,
        tokens: Vec<String>,
        merges: Vec<(String, String)>,
    ) -> Result<TokenVocab> {
        check_distinct("tokens", "token", &tokens)?;
        if let Some(empty) = tokens.iter().position(String::is_empty) {
            return Err(Error::invalid(
                "tokens",
                format!("token {empty} is empty; expected text"),
            ));
        }
        if level == TokenLevel::Char {
            if let Some(long) = tokens.iter().find(|t| t.chars().count() != 1) {
                return Err(Error::invalid(
                    "tokens",
                    format!("the character vocabulary holds {long:?}, which is not one character"),
                ));
            }
        }
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), (SPECIAL_TOKENS + i) as u32))
            .collect();
        for (left, right) in &merges {
            let joined = format!("{left}{right}");
            if !ids.contains_key(&joined) {
                return Err(Error::invalid(
                    "tokens",
                    format!("the merge of {left:?} and {right:?} makes {joined:?}, which is not a token"),
                ));
            }
        }
        let mut ranks: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for (rank, (left, right)) in merges.iter().enumerate() {
            ranks
                .entry(left.clone())
                .or_default()
                .entry(right.clone())
                .or_insert(rank);
        }
        Ok(TokenVocab {
            level,
            tokens,
            ids,
            merges,
            ranks,
        })
    }

    /// What a token is.
    pub fn level(&self) -> TokenLevel {
        self.level
    }

    /// The tokens, in id order (after the special tokens).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The subword merges, in the order learned (empty for the other levels).
    pub fn merges(&self) -> &[(String, String)] {
        &self.merges
    }

    /// The number of ids: the special tokens and the tokens.
    #[allow(clippy::len_without_is_empty)] // never empty: the special tokens are always there
    pub fn len(&self) -> usize {
        SPECIAL_TOKENS + self.tokens.len()
    }

    /// The tokens of `text` as strings, before they become ids.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        match self.level {
            TokenLevel::Char => chars_of(text),
            TokenLevel::Word => words_of(text),
            TokenLevel::Bpe => text
                .split_whitespace()
                .flat_map(|word| self.pieces(word))
                .collect(),
        }
    }

    /// The units an error rate counts in `text`: characters at the character level, words
    /// and punctuation marks at the word level, and whitespace-separated words for
    /// subwords (pieces are an artefact of the vocabulary, words are what a reader sees).
    pub fn error_rate_units(&self, text: &str) -> Vec<String> {
        match self.level {
            TokenLevel::Char => chars_of(text),
            TokenLevel::Word => words_of(text),
            TokenLevel::Bpe => text.split_whitespace().map(str::to_string).collect(),
        }
    }

    /// The id of each token of `text`, [`UNK`] for those the vocabulary lacks, and those
    /// unknown tokens, each once, in the order they first appear (to warn the user).
    pub fn encode(&self, text: &str) -> (Vec<u32>, Vec<String>) {
        let mut unknown: Vec<String> = Vec::new();
        let ids = self
            .tokenize(text)
            .into_iter()
            .map(|token| match self.ids.get(&token) {
                Some(&id) => id,
                None => {
                    if !unknown.contains(&token) {
                        unknown.push(token);
                    }
                    UNK
                }
            })
            .collect();
        (ids, unknown)
    }

    /// [`TokenVocab::encode`] of every text, with the unknown tokens of them all, each
    /// once. Subword pieces are worked out once per distinct word, which is what makes a
    /// corpus quick to encode (its words repeat).
    pub fn encode_all<'a>(
        &self,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> (Vec<Vec<u32>>, Vec<String>) {
        let mut unknown: Vec<String> = Vec::new();
        let mut seen_unknown: HashSet<String> = HashSet::new();
        let mut note = |tokens: Vec<String>| {
            for token in tokens {
                if seen_unknown.insert(token.clone()) {
                    unknown.push(token);
                }
            }
        };
        let mut words: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut encoded = Vec::new();
        for text in texts {
            if self.level != TokenLevel::Bpe {
                let (ids, missing) = self.encode(text);
                note(missing);
                encoded.push(ids);
                continue;
            }
            let mut ids = Vec::new();
            for word in text.split_whitespace() {
                let word_ids = words.entry(word).or_insert_with(|| {
                    let (ids, missing) = self.encode(word);
                    note(missing);
                    ids
                });
                ids.extend_from_slice(word_ids);
            }
            encoded.push(ids);
        }
        (encoded, unknown)
    }

    /// The text of `ids` up to the first [`EOS`], skipping [`PAD`] and [`BOS`]; [`UNK`], and
    /// any id beyond the vocabulary, becomes U+FFFD, the replacement character.
    pub fn decode(&self, ids: &[u32]) -> String {
        let tokens: Vec<&str> = ids
            .iter()
            .take_while(|&&id| id != EOS)
            .filter(|&&id| id != PAD && id != BOS)
            .map(|&id| {
                (id as usize)
                    .checked_sub(SPECIAL_TOKENS)
                    .and_then(|i| self.tokens.get(i))
                    .map_or("\u{FFFD}", String::as_str)
            })
            .collect();
        match self.level {
            TokenLevel::Char => tokens.concat(),
            TokenLevel::Word => join_words(&tokens),
            TokenLevel::Bpe => {
                let text: String = tokens.concat().replace(WORD_START, " ");
                text.strip_prefix(' ').unwrap_or(&text).to_string()
            }
        }
    }

    /// The subword pieces of one word (no whitespace in it): [`WORD_START`] and its
    /// characters, joined by the merges in the order they were learned.
    fn pieces(&self, word: &str) -> Vec<String> {
        let mut symbols = word_symbols(word);
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(at, pair)| {
                    let rank = self.ranks.get(&pair[0])?.get(&pair[1])?;
                    Some((*rank, at))
                })
                .min();
            let Some((rank, _)) = best else {
                return symbols;
            };
            let (left, right) = &self.merges[rank];
            symbols = merge_pair(&symbols, left, right);
        }
    }

    /// The vocabulary as a checkpoint records it: `{"level", "tokens", "merges"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "level": self.level.name(),
            "tokens": self.tokens,
            "merges": self.merges.iter().map(|(l, r)| [l, r]).collect::<Vec<_>>(),
        })
    }

    /// The vocabulary [`TokenVocab::to_json`] recorded, checked: a known level, distinct
    /// non-empty tokens, merges that make tokens. `what` names it in errors.
    pub fn from_json(value: &Value, what: &str) -> Result<TokenVocab> {
        let bad = |why: String| Error::invalid("tokens", format!("{what}: {why}"));
        let level = value
            .get("level")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no \"level\" string".into()))?;
        let level = TokenLevel::parse(level).map_err(|e| bad(e.to_string()))?;
        let strings = |field: &str| -> Result<Vec<Value>> {
            value
                .get(field)
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| bad(format!("no \"{field}\" list")))
        };
        let tokens = strings("tokens")?
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("token {t} is not a string")))
            })
            .collect::<Result<Vec<String>>>()?;
        let merges = strings("merges")?
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(l), Value::String(r)]) => Ok((l.clone(), r.clone())),
                _ => Err(bad(format!("merge {pair} is not a pair of strings"))),
            })
            .collect::<Result<Vec<_>>>()?;
        if level != TokenLevel::Bpe && !merges.is_empty() {
            return Err(bad(format!("a {} vocabulary has no merges", level.name())));
        }
        TokenVocab::new(level, tokens, merges).map_err(|e| bad(e.to_string()))
    }
}

/// Whether a sequence-to-sequence model's sides share one vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Each side has its own, learned from its own texts.
    #[default]
    Separate,
    /// One vocabulary, learned from both sides' texts (both at one token level), serves
    /// both: for tasks that copy tokens across (spelling, normalisation).
    Shared,
}

/// How [`PairVocab::learn`] makes a model's vocabularies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairVocabSpec {
    /// The sources' token level.
    pub source: TokenLevel,
    /// The targets' token level.
    pub target: TokenLevel,
    /// The limits of each vocabulary.
    pub limits: VocabLimits,
    /// One vocabulary or two.
    pub sharing: Sharing,
}

impl Default for PairVocabSpec {
    /// Characters on both sides, each with its own vocabulary, unlimited.
    fn default() -> Self {
        PairVocabSpec {
            source: TokenLevel::Char,
            target: TokenLevel::Char,
            limits: VocabLimits::default(),
            sharing: Sharing::Separate,
        }
    }
}

/// A sequence-to-sequence model's vocabularies: the sources' and the targets'.
#[derive(Debug, Clone, PartialEq)]
pub struct PairVocab {
    /// What the encoder reads.
    pub source: TokenVocab,
    /// What the decoder writes.
    pub target: TokenVocab,
}

/// Tokens of a set of pairs that their vocabularies lack, each once, per side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unknown {
    /// Unknown source tokens, in the order they first appear.
    pub source: Vec<String>,
    /// Unknown target tokens, in the order they first appear.
    pub target: Vec<String>,
}

impl PairVocab {
    /// Learns the vocabularies from training `pairs` as `spec` says.
    pub fn learn(pairs: &[Pair], spec: PairVocabSpec) -> Result<PairVocab> {
        let sources = pairs.iter().map(|p| p.source.as_str());
        let targets = pairs.iter().map(|p| p.target.as_str());
        match spec.sharing {
            Sharing::Separate => Ok(PairVocab {
                source: TokenVocab::learn(sources, spec.source, spec.limits)?,
                target: TokenVocab::learn(targets, spec.target, spec.limits)?,
            }),
            Sharing::Shared if spec.source != spec.target => Err(Error::invalid(
                "tokens",
                format!(
                    "a shared vocabulary needs one token level for both sides; the sources' is \
                     {} and the targets' {}",
                    spec.source.name(),
                    spec.target.name()
                ),
            )),
            Sharing::Shared => {
                let both = TokenVocab::learn(sources.chain(targets), spec.source, spec.limits)?;
                Ok(PairVocab {
                    source: both.clone(),
                    target: both,
                })
            }
        }
    }

    /// The pairs' ids (unknown tokens as [`UNK`]) and the unknown tokens of each side.
    pub fn encode(&self, pairs: &[Pair]) -> (Vec<EncodedPair>, Unknown) {
        let (sources, source) = self
            .source
            .encode_all(pairs.iter().map(|p| p.source.as_str()));
        let (targets, target) = self
            .target
            .encode_all(pairs.iter().map(|p| p.target.as_str()));
        let encoded = sources
            .into_iter()
            .zip(targets)
            .map(|(source, target)| EncodedPair { source, target })
            .collect();
        (encoded, Unknown { source, target })
    }
}

/// Punctuation that is a token of its own at the word level: ASCII punctuation and the
/// common Unicode marks (quotes, dashes, ellipsis, CJK and Spanish marks).
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '“' | '”'
                | '‘'
                | '’'
                | '«'
                | '»'
                | '…'
                | '–'
                | '—'
                | '¿'
                | '¡'
                | '。'
                | '、'
                | '，'
                | '！'
                | '？'
                | '：'
                | '；'
                | '（'
                | '）'
                | '·'
        )
}

/// The characters of `text`, each a token.
fn chars_of(text: &str) -> Vec<String> {
    text.chars().map(String::from).collect()
}

/// The words and punctuation marks of `text` (see the module's rules).
fn words_of(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let in_word = |i: usize| {
        let c = chars[i];
        if c.is_whitespace() {
            return false;
        }
        if !is_punctuation(c) {
            return true;
        }
        // Joiners between two characters of the right kind stay in the word.
        let (Some(&before), Some(&after)) = (
            i.checked_sub(1).and_then(|j| chars.get(j)),
            chars.get(i + 1),
        ) else {
            return false;
        };
        match c {
            '\'' | '’' => before.is_alphabetic() && after.is_alphabetic(),
            '.' | ',' => before.is_numeric() && after.is_numeric(),
            _ => false,
        }
    };
    let mut tokens = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if in_word(i) {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// Words and punctuation joined back into text: one space between tokens, none before
/// closing punctuation nor after opening punctuation; straight double quotes alternate
/// between opening and closing.
fn join_words(tokens: &[&str]) -> String {
    const CLOSING: &[&str] = &[
        ",", ".", "!", "?", ";", ":", "%", ")", "]", "}", "'", "”", "»", "…", "’", "、", "。",
        "，", "！", "？", "：", "；", "）",
    ];
    const OPENING: &[&str] = &["(", "[", "{", "“", "«", "¿", "¡", "‘", "（"];
    let mut text = String::new();
    let mut open_quote = false;
    let mut glue_next = true;
    for &token in tokens {
        let (opens, closes) = if token == "\"" {
            open_quote = !open_quote;
            (open_quote, !open_quote)
        } else {
            (OPENING.contains(&token), CLOSING.contains(&token))
        };
        if !glue_next && !closes {
            text.push(' ');
        }
        text.push_str(token);
        glue_next = opens;
    }
    text
}

/// A word as initial subword symbols: [`WORD_START`], then its characters. The marker is a
/// symbol of its own (merges join it to what follows), so a word may start with any known
/// character.
fn word_symbols(word: &str) -> Vec<String> {
    std::iter::once(WORD_START.to_string())
        .chain(word.chars().map(String::from))
        .collect()
}

/// `symbols` with every adjacent (`left`, `right`) joined, left to right.
fn merge_pair(symbols: &[String], left: &str, right: &str) -> Vec<String> {
    let mut merged = Vec::with_capacity(symbols.len());
    let mut i = 0;
    while i < symbols.len() {
        if i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right {
            merged.push(format!("{left}{right}"));
            i += 2;
        } else {
            merged.push(symbols[i].clone());
            i += 1;
        }
    }
    merged
}

/// Byte-pair encoding learned from `texts`: up to `merges` merges of the most frequent
/// adjacent pair of symbols within words (ties to the pair that sorts first), stopping
/// when no pair occurs twice or the vocabulary would exceed `room` tokens. Returns the
/// tokens (the initial symbols by frequency, cut to `room`, then the merged pieces in the
/// order learned) and the merges.
///
/// Pair counts are kept up to date as merges change words, with a heap of (count, pair)
/// whose stale entries are skipped, so each merge costs the words it touches rather than
/// the whole corpus.
fn learn_bpe<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    room: Option<usize>,
    max_merges: usize,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut word_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for text in texts {
        for word in text.split_whitespace() {
            *word_counts.entry(word).or_default() += 1;
        }
    }
    let mut words: Vec<(Vec<String>, usize)> = word_counts
        .into_iter()
        .map(|(word, count)| (word_symbols(word), count))
        .collect();

    let mut symbol_counts: HashMap<String, usize> = HashMap::new();
    for (symbols, count) in &words {
        for symbol in symbols {
            *symbol_counts.entry(symbol.clone()).or_default() += count;
        }
    }
    let mut base: Vec<(String, usize)> = symbol_counts.into_iter().collect();
    base.sort_by(|(a, m), (b, n)| n.cmp(m).then_with(|| a.cmp(b)));
    base.truncate(room.unwrap_or(usize::MAX));
    let mut tokens: Vec<String> = base.into_iter().map(|(s, _)| s).collect();
    let known: HashSet<String> = tokens.iter().cloned().collect();

    type Pair = (String, String);
    let mut pair_counts: HashMap<Pair, usize> = HashMap::new();
    let mut pair_words: HashMap<Pair, HashSet<usize>> = HashMap::new();
    let count_pairs = |symbols: &[String]| -> Vec<Pair> {
        symbols
            .windows(2)
            .filter(|pair| known.contains(&pair[0]) && known.contains(&pair[1]))
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect()
    };
    for (index, (symbols, count)) in words.iter().enumerate() {
        for pair in count_pairs(symbols) {
            *pair_counts.entry(pair.clone()).or_default() += count;
            pair_words.entry(pair).or_default().insert(index);
        }
    }
    // Max-heap on count; among equal counts the pair that sorts first.
    let mut heap: BinaryHeap<(usize, Reverse<Pair>)> = pair_counts
        .iter()
        .map(|(pair, &count)| (count, Reverse(pair.clone())))
        .collect();

    let mut merges = Vec::new();
    let mut made: HashSet<String> = known.clone();
    while merges.len() < max_merges && room.is_none_or(|room| tokens.len() < room) {
        let Some((count, Reverse(pair))) = heap.pop() else {
            break;
        };
        if pair_counts.get(&pair) != Some(&count) {
            continue; // stale: the count changed after this entry was pushed
        }
        if count < 2 {
            break;
        }
        let joined = format!("{}{}", pair.0, pair.1);
        let touched: Vec<usize> = pair_words
            .get(&pair)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        let mut changed: HashSet<Pair> = HashSet::new();
        for index in touched {
            let (symbols, word_count) = &words[index];
            let word_count = *word_count;
            for old in symbols.windows(2) {
                let old = (old[0].clone(), old[1].clone());
                if let Some(c) = pair_counts.get_mut(&old) {
                    *c -= word_count;
                    changed.insert(old.clone());
                }
                if let Some(set) = pair_words.get_mut(&old) {
                    set.remove(&index);
                }
            }
            let merged = merge_pair(symbols, &pair.0, &pair.1);
            for new in merged.windows(2) {
                if !(made.contains(&new[0]) || new[0] == joined)
                    || !(made.contains(&new[1]) || new[1] == joined)
                {
                    continue;
                }
                let new = (new[0].clone(), new[1].clone());
                *pair_counts.entry(new.clone()).or_default() += word_count;
                pair_words.entry(new.clone()).or_default().insert(index);
                changed.insert(new);
            }
            words[index].0 = merged;
        }
        pair_counts.remove(&pair);
        pair_words.remove(&pair);
        for pair in changed {
            if let Some(&count) = pair_counts.get(&pair) {
                if count > 0 {
                    heap.push((count, Reverse(pair)));
                }
            }
        }
        if made.insert(joined.clone()) {
            tokens.push(joined);
        }
        merges.push(pair);
    }
    (tokens, merges)
}
