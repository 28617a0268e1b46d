//! The autotuner's memory: which kernel variant won for each shape class on this adapter.
//! It lives in memory and in one JSON file per adapter and driver version, so an adapter is
//! tuned once per class, not once per process:
//! `$SHADERGRAD_CACHE_DIR`, else the platform's per-user cache folder (`%LOCALAPPDATA%` on
//! Windows, `~/Library/Caches` on macOS, `$XDG_CACHE_HOME` or `~/.cache` elsewhere),
//! file `autotune-<hash of adapter, backend and driver>.json`. A tuning class's key is the
//! tuner's to make: the matmul's holds a hash of the matmul shaders, so a new version of
//! the kernels is tuned anew, not held to choices made for the old ones.
//!
//! A library user opts in: a [`crate::Gpu`] opens with [`Autotune::Off`] (the fixed rules
//! decide, nothing is timed, nothing written), and `gpu.set_autotune(…)` asks for tuning in
//! memory, in a file of the caller's, or in the per-user cache folder. The command line
//! asks for the last unless `--no-autotune` or `SHADERGRAD_NO_AUTOTUNE=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::files::write_atomically;
use crate::hash::fnv1a64;

/// The command line's switch: set to anything but "" or "0", it opens every device with
/// [`Autotune::Off`] (the library never reads it).
pub const NO_AUTOTUNE_ENV: &str = "SHADERGRAD_NO_AUTOTUNE";

/// How kernels with several variants (the matmul's tilings) pick one on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Autotune {
    /// Fixed rules by shape and adapter: nothing is timed and nothing written. The
    /// library's default.
    Off,
    /// Each shape class's variants are timed once, on first use; the choices last as long
    /// as the device.
    InMemory,
    /// As [`Autotune::InMemory`], and the choices are kept in this file: read now if it
    /// exists, rewritten (atomically) after each new choice.
    File(PathBuf),
    /// As [`Autotune::File`], in the per-user cache folder, one file per adapter and driver
    /// (see the module docs); in memory only where the platform has no such folder. The
    /// command line's default.
    UserCache,
}
/// The folder of the tuning files.
pub const CACHE_DIR_ENV: &str = "SHADERGRAD_CACHE_DIR";

pub(crate) struct TuningCache {
    state: Mutex<TuningState>,
}

struct TuningState {
    mode: Autotune,
    /// Where choices are saved; `None` keeps them in memory only.
    path: Option<PathBuf>,
    /// What identifies the adapter in the file.
    adapter: AdapterIdentity,
    choices: BTreeMap<String, String>,
}

/// The adapter a tuning file belongs to, as its driver names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AdapterIdentity {
    name: String,
    backend: String,
    driver: String,
    driver_info: String,
}

/// A tuning file: whose adapter it is, and the variant chosen for each shape class.
#[derive(Debug, Serialize, Deserialize)]
struct TuningFile {
    adapter: AdapterIdentity,
    choices: BTreeMap<String, String>,
}

impl TuningCache {
    /// The cache of this adapter, off until [`TuningCache::set_mode`] says otherwise.
    pub fn open(info: &wgpu::AdapterInfo) -> TuningCache {
        let adapter = AdapterIdentity {
            name: info.name.clone(),
            backend: info.backend.to_string(),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
        };
        TuningCache {
            state: Mutex::new(TuningState {
                mode: Autotune::Off,
                path: None,
                adapter,
                choices: BTreeMap::new(),
            }),
        }
    }

    /// The file of this adapter in the per-user cache folder, if the platform has one.
    fn user_cache_file(adapter: &AdapterIdentity) -> Option<PathBuf> {
        let identity = format!(
            "{}|{}|{}|{}",
            adapter.name, adapter.backend, adapter.driver, adapter.driver_info
        );
        cache_dir().map(|dir| {
            dir.join(format!(
                "autotune-{:016x}.json",
                fnv1a64(identity.as_bytes())
            ))
        })
    }

    /// Tunes as `mode` says from now on, with the choices its file holds (a file that
    /// cannot be read or parsed counts as empty: it is only a cache).
    pub fn set_mode(&self, mode: Autotune) {
        let mut state = self.state();
        let path = match &mode {
            Autotune::Off | Autotune::InMemory => None,
            Autotune::File(path) => Some(path.clone()),
            Autotune::UserCache => TuningCache::user_cache_file(&state.adapter),
        };
        state.choices = path.as_deref().map(read_choices).unwrap_or_default();
        state.path = path;
        state.mode = mode;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TuningState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether kernels are timed to choose their variant.
    pub fn enabled(&self) -> bool {
        self.state().mode != Autotune::Off
    }

    /// The file the choices are kept in, if any.
    pub fn path(&self) -> Option<PathBuf> {
        self.state().path.clone()
    }

    /// The choice remembered for the class `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.state().choices.get(key).cloned()
    }

    /// Remembers a choice, and saves the file (atomically) if there is one.
    pub fn insert(&self, key: &str, choice: &str) -> Result<()> {
        let mut state = self.state();
        state.choices.insert(key.to_string(), choice.to_string());
        let Some(path) = state.path.clone() else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| crate::Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let record = TuningFile {
            adapter: state.adapter.clone(),
            choices: state.choices.clone(),
        };
        let text = serde_json::to_string_pretty(&record).unwrap_or_default();
        write_atomically(&path, text.as_bytes())
    }
}

fn cache_dir() -> Option<PathBuf> {
    cache_dir_for(Platform::current(), |name| std::env::var_os(name))
}

/// The operating systems whose conventions for a per-user cache folder differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Windows,
    MacOs,
    /// Linux and the other Unix systems: the XDG base directories.
    Unix,
}

impl Platform {
    fn current() -> Self {
        if cfg!(windows) {
            Platform::Windows
        } else if cfg!(target_os = "macos") {
            Platform::MacOs
        } else {
            Platform::Unix
        }
    }
}

/// The tuning files' folder on `platform`, from the environment `var` reads:
/// `$SHADERGRAD_CACHE_DIR` anywhere, else the platform's per-user cache folder —
/// `%LOCALAPPDATA%\shadergrad\cache` on Windows, `~/Library/Caches/shadergrad` on macOS,
/// `$XDG_CACHE_HOME/shadergrad` or `~/.cache/shadergrad` elsewhere. `None` (tuning kept in
/// memory only) when the environment names no such folder.
fn cache_dir_for(
    platform: Platform,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var(CACHE_DIR_ENV) {
        return Some(dir);
    }
    match platform {
        Platform::Windows => var("LOCALAPPDATA").map(|d| d.join("shadergrad").join("cache")),
        Platform::MacOs => var("HOME").map(|d| d.join("Library").join("Caches").join("shadergrad")),
        Platform::Unix => var("XDG_CACHE_HOME")
            .map(|d| d.join("shadergrad"))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("shadergrad"))),
    }
}

/// The choices of the tuning file at `path`; none when it is missing or unreadable (it is
/// only a cache: the autotuner measures again).
fn read_choices(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<TuningFile>(&text).ok())
        .map(|file| file.choices)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    /// An environment holding just `pairs`.
    fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn each_platform_keeps_the_tuning_files_in_its_own_cache_folder() {
        let home = [("HOME", "/home/ada")];
        assert_eq!(
            cache_dir_for(Platform::Unix, environment(&home)),
            Some(PathBuf::from("/home/ada/.cache/shadergrad"))
        );
        assert_eq!(
            cache_dir_for(
                Platform::Unix,
                environment(&[("HOME", "/home/ada"), ("XDG_CACHE_HOME", "/var/cache/ada")])
            ),
            Some(PathBuf::from("/var/cache/ada/shadergrad"))
        );
        assert_eq!(
            cache_dir_for(Platform::MacOs, environment(&home)),
            Some(PathBuf::from("/home/ada/Library/Caches/shadergrad"))
        );
        // Windows has no HOME as a rule: the folder comes from LOCALAPPDATA.
        let windows = [("LOCALAPPDATA", r"C:\Users\ada\AppData\Local")];
        assert_eq!(
            cache_dir_for(Platform::Windows, environment(&windows)),
            Some(
                PathBuf::from(r"C:\Users\ada\AppData\Local")
                    .join("shadergrad")
                    .join("cache")
            )
        );
        assert_eq!(cache_dir_for(Platform::Windows, environment(&home)), None);
        for platform in [Platform::Unix, Platform::MacOs, Platform::Windows] {
            assert_eq!(
                cache_dir_for(
                    platform,
                    environment(&[(CACHE_DIR_ENV, "/tmp/tuning"), ("HOME", "/home/ada")])
                ),
                Some(PathBuf::from("/tmp/tuning")),
                "{platform:?}"
            );
            assert_eq!(cache_dir_for(platform, environment(&[("HOME", "")])), None);
        }
    }
}
