//! What the readers of the user's data files share: the [`Parsed`] result that carries
//! [`Warning`]s back to the caller (the library never prints), and the checks every text
//! file gets before it is split into lines.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// What a reader made of a file, and what the caller should tell the user about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T> {
    /// What the file held, parsed.
    pub contents: T,
    /// Oddities that did not stop the file from being read, in the order found; the
    /// command line prints them on stderr.
    pub warnings: Vec<Warning>,
}

/// Something odd about a data file that was read anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The file holds `count` NUL bytes, the first on line `first_line`. A text file seldom
    /// does: the file may be UTF-16 (whose ASCII letters each come with a NUL byte) or not
    /// text at all. They were read as characters like any other.
    NulBytes {
        /// The file.
        path: PathBuf,
        /// The line of the first NUL byte, counted from 1.
        first_line: usize,
        /// How many NUL bytes the file holds.
        count: usize,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::NulBytes {
                path,
                first_line,
                count,
            } => write!(
                f,
                "{}: line {first_line}: a NUL byte ({count} in the file); text files seldom \
                 hold any: is it UTF-16, or not text? They are read as characters",
                path.display()
            ),
        }
    }
}

/// The warnings `text`, read from `path`, deserves: NUL bytes.
pub(crate) fn text_warnings(text: &str, path: &Path) -> Vec<Warning> {
    let Some(first) = text.find('\0') else {
        return Vec::new();
    };
    vec![Warning::NulBytes {
        path: path.to_path_buf(),
        first_line: line_of(text, first),
        count: text.bytes().filter(|&byte| byte == 0).count(),
    }]
}

/// Errors, naming the file and the line, at the first carriage return not followed by a line
/// feed. Lines end in "\n" or "\r\n"; a lone "\r" (the line ends of classic Mac OS, or a
/// stray byte) would otherwise be kept inside a line, so that a whole file could read as one
/// line, or a target end in an invisible character.
pub(crate) fn check_line_ends(text: &str, path: &Path) -> Result<()> {
    let lone = text
        .match_indices('\r')
        .map(|(at, _)| at)
        .find(|&at| text.as_bytes().get(at + 1) != Some(&b'\n'));
    match lone {
        Some(at) => Err(Error::format(
            path,
            format!(
                "line {}: a carriage return (\\r) not followed by a line feed; lines must end \
                 in \\n or \\r\\n (convert a file with classic Mac OS line ends first)",
                line_of(text, at)
            ),
        )),
        None => Ok(()),
    }
}

/// The 1-based line of `text` that byte `at` is on.
fn line_of(text: &str, at: usize) -> usize {
    1 + text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_are_counted_and_located() {
        let path = Path::new("data.tsv");
        assert!(text_warnings("a\tb\n", path).is_empty());
        assert_eq!(
            text_warnings("a\tb\nc\0\td\n\0", path),
            [Warning::NulBytes {
                path: path.to_path_buf(),
                first_line: 2,
                count: 2
            }]
        );
    }

    #[test]
    fn only_a_lone_carriage_return_is_an_error() {
        let path = Path::new("data.tsv");
        check_line_ends("a\r\nb\r\n\r\n", path).unwrap();
        for (text, line) in [("a\rb", 1), ("a\r\nb\r", 2), ("\n\n\r", 3)] {
            let message = check_line_ends(text, path).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("data.tsv: line {line}: a carriage return")),
                "{text:?}: {message}"
            );
        }
    }
}
