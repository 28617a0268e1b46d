//! Reading text files with errors that say where, and writing files so that a crash never
//! leaves one half-written.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The whole of a UTF-8 text file, without a leading byte order mark. A file that cannot be
/// read is an I/O error naming it; bytes that are not UTF-8 are an error naming the file and
/// the line they are on.
pub fn read_text_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_text(bytes, path)
}

/// The text of `bytes` read from the file `path`, as [`read_text_file`] gives it: without a
/// leading byte order mark, and an error naming the file and the line where the bytes are not
/// UTF-8.
pub fn decode_text(bytes: Vec<u8>, path: &Path) -> Result<String> {
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = error.utf8_error().valid_up_to();
        let line = 1 + error.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        Error::format(path, format!("line {line}: not UTF-8 text"))
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Writes `bytes` to `path` so that `path` holds either its old contents or all of the
/// new ones, never a mix: the bytes go to a temporary file in the same folder (a rename
/// is only atomic within one file system), which is flushed to disk and then renamed
/// over `path`. On failure the temporary file is removed and `path` is untouched.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let Some(file_name) = path.file_name() else {
        return Err(Error::invalid(
            "write_atomically",
            format!("{} names no file", path.display()),
        ));
    };
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // Unique per process and per call, so concurrent saves never share a temporary file.
    static TEMPORARY_FILES: AtomicU64 = AtomicU64::new(0);
    let temporary = folder.join(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        TEMPORARY_FILES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(source) = written {
        // The temporary file may not exist (creating it failed); there is nothing more to do.
        let _ = fs::remove_file(&temporary);
        return Err(io_error(source));
    }
    sync_folder(folder);
    Ok(())
}

/// Flushes a folder's entries to disk, so that a rename in it survives a power loss.
/// Best effort: the new file is already complete, and some file systems cannot sync a
/// folder, which must not fail the save.
fn sync_folder(folder: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = fs::File::open(folder) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = folder;
}
