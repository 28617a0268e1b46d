//! The autotuner's memory: which kernel variant won for each shape class on this adapter.
//! It lives in memory and in one JSON file per adapter and driver version, so an adapter is
//! tuned once per class, not once per process:
//! `$SHADERGRAD_CACHE_DIR`, else `$XDG_CACHE_HOME/shadergrad`, else `~/.cache/shadergrad`,
//! file `autotune-<hash of adapter, backend, driver and the tuned kernels' source>.json`
//! (a new version of the kernels is tuned anew, not held to choices made for the old ones).
//! `SHADERGRAD_NO_AUTOTUNE=1` (or `Gpu::set_autotune(false)`) turns tuning off: the fixed
//! rules decide.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::checkpoint::fnv1a64;
use crate::error::Result;
use crate::files::write_atomically;

/// Turns autotuning off when set to anything but "" or "0".
pub const NO_AUTOTUNE_ENV: &str = "SHADERGRAD_NO_AUTOTUNE";
/// The folder of the tuning files.
pub const CACHE_DIR_ENV: &str = "SHADERGRAD_CACHE_DIR";

pub(crate) struct TuningCache {
    state: Mutex<TuningState>,
}

struct TuningState {
    enabled: bool,
    /// Where choices are saved; `None` keeps them in memory only.
    path: Option<PathBuf>,
    /// What identifies the adapter in the file.
    adapter: Value,
    choices: BTreeMap<String, String>,
}

impl TuningCache {
    /// The cache of this adapter, loaded from its file if there is one (a file that cannot
    /// be read or parsed counts as empty: it is only a cache).
    pub fn open(info: &wgpu::AdapterInfo) -> TuningCache {
        let enabled = std::env::var(NO_AUTOTUNE_ENV).map_or(true, |v| v.is_empty() || v == "0");
        let kernels = fnv1a64(crate::kernels::matmul::SUBGROUP_SHADER.wgsl.as_bytes());
        let identity = format!(
            "{}|{}|{}|{}|{kernels:016x}",
            info.name, info.backend, info.driver, info.driver_info
        );
        let path = cache_dir().map(|dir| {
            dir.join(format!(
                "autotune-{:016x}.json",
                fnv1a64(identity.as_bytes())
            ))
        });
        let adapter = json!({
            "name": info.name,
            "backend": info.backend.to_string(),
            "driver": info.driver,
            "driver_info": info.driver_info,
            "kernels": format!("{kernels:016x}"),
        });
        let choices = path.as_deref().map(read_choices).unwrap_or_default();
        TuningCache {
            state: Mutex::new(TuningState {
                enabled,
                path,
                adapter,
                choices,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TuningState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn enabled(&self) -> bool {
        self.state().enabled
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.state().enabled = enabled;
    }

    pub fn path(&self) -> Option<PathBuf> {
        self.state().path.clone()
    }

    /// Uses `path` (or nothing) from now on, with the choices it holds.
    pub fn set_path(&self, path: Option<PathBuf>) {
        let mut state = self.state();
        state.choices = path.as_deref().map(read_choices).unwrap_or_default();
        state.path = path;
    }

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
        let record = json!({ "adapter": state.adapter, "choices": state.choices });
        let text = serde_json::to_string_pretty(&record).unwrap_or_default();
        write_atomically(&path, text.as_bytes())
    }
}

fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var(CACHE_DIR_ENV)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("shadergrad")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("shadergrad")))
}

fn read_choices(path: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    let Ok(record) = serde_json::from_str::<Value>(&text) else {
        return BTreeMap::new();
    };
    record
        .get("choices")
        .and_then(Value::as_object)
        .map(|choices| {
            choices
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
