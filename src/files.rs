//! Reading text files with errors that say where, and writing files so that a crash never
//! leaves one half-written.
//!
//! Testing hook: when the environment variable `SHADERGRAD_FAULT` names one of the fault
//! points of [`write_atomically`] (`before-rename`, `after-rename`), the process aborts
//! there, as a kill at that instant would stop it. Tests run a save in a child process
//! with it set, to check what a crash leaves behind without depending on timing.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The environment variable that names the fault point at which to abort (for tests).
pub const FAULT_VARIABLE: &str = "SHADERGRAD_FAULT";

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
///
/// The temporary file is named `.NAME.PID-N.tmp` (NAME the target's file name, PID this
/// process, N a counter). A process killed mid-write leaves its temporary behind; before
/// writing, this removes those of the same target whose process is gone.
///
/// Fault points for tests (see the module documentation): `before-rename`, once the
/// temporary is complete and on disk; `after-rename`, once it has replaced `path`.
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
    remove_leftover_temporaries(folder, file_name);
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
        .and_then(|()| {
            fault_point("before-rename");
            fs::rename(&temporary, path)
        });
    if let Err(source) = written {
        // The temporary file may not exist (creating it failed); there is nothing more to do.
        let _ = fs::remove_file(&temporary);
        return Err(io_error(source));
    }
    fault_point("after-rename");
    sync_folder(folder);
    Ok(())
}

/// Removes from `folder` the temporary files that [`write_atomically`] left for the target
/// `file_name` in processes that no longer run: names exactly `.{file_name}.{pid}-{n}.tmp`
/// whose `pid` is not this process and, on Linux, has no `/proc/{pid}`. Elsewhere there is
/// no cheap way to tell, and they are left. Best effort: a file that cannot be listed or
/// removed is left too, since the write itself does not depend on it.
///
/// A process id seen again (reused) only makes a leftover stay; a live process of another
/// PID namespace sharing the folder (another container) would look gone, so its save in
/// progress could lose its temporary and fail with an error, never leave a mix.
fn remove_leftover_temporaries(folder: &Path, file_name: &OsStr) {
    let Some(name) = file_name.to_str() else {
        return;
    };
    let Ok(entries) = fs::read_dir(folder) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let entry_name = entry.file_name();
        let Some(pid) = entry_name
            .to_str()
            .and_then(|entry_name| entry_name.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(temporary_owner)
        else {
            continue;
        };
        if pid != std::process::id() && process_is_gone(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The process id in the `{pid}-{n}` part of a temporary file's name, both decimal.
fn temporary_owner(pid_and_counter: &str) -> Option<u32> {
    let (pid, counter) = pid_and_counter.split_once('-')?;
    let decimal = |digits: &str| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if !decimal(pid) || !decimal(counter) {
        return None;
    }
    pid.parse().ok()
}

/// Whether no process `pid` runs. On Linux, every running process has a folder in
/// `/proc`; if `/proc` itself is missing (not mounted), nothing can be told.
#[cfg(target_os = "linux")]
fn process_is_gone(pid: u32) -> bool {
    let proc = Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

/// Elsewhere there is no cheap way to tell, so every owner is taken to be running.
#[cfg(not(target_os = "linux"))]
fn process_is_gone(_pid: u32) -> bool {
    false
}

/// Aborts the process, as a kill would stop it, if the environment variable
/// [`FAULT_VARIABLE`] names this point; otherwise does nothing (one environment lookup).
fn fault_point(name: &str) {
    if std::env::var_os(FAULT_VARIABLE).is_some_and(|wanted| wanted == name) {
        eprintln!("shadergrad: aborting at fault point {name} ({FAULT_VARIABLE} is set)");
        std::process::abort();
    }
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A process id that no process has: a child's, once it has exited and been waited for.
    fn exited_process_id() -> u32 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--list")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_write_removes_the_temporaries_that_exited_processes_left_for_its_target() {
        let folder =
            std::env::temp_dir().join(format!("shadergrad-files-leftovers-{}", std::process::id()));
        let _ = fs::remove_dir_all(&folder);
        fs::create_dir_all(&folder).unwrap();
        let gone = exited_process_id();
        let own = std::process::id();
        let removed = [
            format!(".model.safetensors.{gone}-0.tmp"),
            format!(".model.safetensors.{gone}-17.tmp"),
        ];
        let kept = [
            // This process's own, and one of a running process (init).
            format!(".model.safetensors.{own}-999.tmp"),
            ".model.safetensors.1-0.tmp".to_string(),
            // Names that are not exactly the pattern of this target.
            format!(".other.safetensors.{gone}-0.tmp"),
            format!(".model.safetensors.{gone}-0.tmp.bak"),
            format!(".model.safetensors.{gone}-x.tmp"),
            format!(".model.safetensors.{gone}.tmp"),
            format!(".model.safetensors.-{gone}-0.tmp"),
            format!("model.safetensors.{gone}-0.tmp"),
        ];
        for name in removed.iter().chain(&kept) {
            fs::write(folder.join(name), b"left over").unwrap();
        }

        write_atomically(&folder.join("model.safetensors"), b"new").unwrap();
        let mut listing: Vec<String> = fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        listing.sort();
        let mut expected = kept.to_vec();
        expected.push("model.safetensors".to_string());
        expected.sort();
        assert_eq!(listing, expected);
        assert_eq!(fs::read(folder.join("model.safetensors")).unwrap(), b"new");
        fs::remove_dir_all(&folder).unwrap();
    }
}
