//! The one error type of the crate. Every message names the bad value and what was expected.

use std::path::PathBuf;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The machine offers no GPU adapter at all.
    #[error(
        "no Vulkan/Metal/DX12 adapter was found. On a headless Linux server install a software \
         Vulkan driver (Mesa's lavapipe): run `scripts/setup-lavapipe.sh` from the shadergrad \
         repository, or `apt-get install mesa-vulkan-drivers libvulkan1` on Debian/Ubuntu"
    )]
    NoAdapter,

    /// An adapter selector matched none of the adapters present.
    #[error("no adapter matches {selector:?}; the adapters present are: {available}")]
    AdapterNotFound { selector: String, available: String },

    /// A selector string that cannot be parsed.
    #[error("invalid adapter selector {0:?}: expected an index (0, 1, …), a backend (vulkan, metal, dx12, gl) or a name substring")]
    BadSelector(String),

    /// The adapter refused to create a device.
    #[error("could not open a device on adapter {adapter:?}: {message}")]
    DeviceRequest { adapter: String, message: String },

    /// Two shapes that an op needs to agree do not.
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}: {expected}")]
    ShapeMismatch {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
        expected: String,
    },

    /// An argument that is out of range or otherwise invalid.
    #[error("{op}: {message}")]
    InvalidArgument { op: &'static str, message: String },

    /// An op that cannot take a tensor with no elements was given one.
    #[error("{op}: cannot take a zero-sized tensor (shape {shape:?}): {why}")]
    ZeroSized {
        op: &'static str,
        shape: Vec<usize>,
        why: &'static str,
    },

    /// A tensor too large for one buffer of this adapter.
    #[error(
        "a tensor of shape {shape:?} needs {bytes} bytes, more than this adapter's maximum buffer size of {limit} bytes"
    )]
    TooLarge {
        shape: Vec<usize>,
        bytes: u64,
        limit: u64,
    },

    /// Tensors from two different devices met in one op.
    #[error("{op}: the tensors live on different devices")]
    DeviceMismatch { op: &'static str },

    /// wgpu reported a validation error: a bug in a launcher or shader, or a limit exceeded.
    #[error("GPU validation error in {context}: {message}")]
    Validation { context: String, message: String },

    /// The GPU ran out of memory.
    #[error("GPU out of memory in {context}: {message}")]
    OutOfMemory { context: String, message: String },

    /// wgpu reported an internal error (often a shader the driver could not compile).
    #[error("GPU internal error in {context}: {message}")]
    Internal { context: String, message: String },

    /// The device was lost (driver reset, GPU removed, or destroyed).
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),

    /// Mapping a buffer for readback failed.
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A data file whose contents are not what was expected.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

impl Error {
    /// An [`Error::InvalidArgument`] for `op`.
    pub fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            message: message.into(),
        }
    }

    /// An [`Error::Format`] for the file at `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
