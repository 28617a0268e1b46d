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
    AdapterNotFound {
        /// The selector as the user wrote it (an index, a backend or a name substring).
        selector: String,
        /// A human-readable list of the adapters that are present, to choose from.
        available: String,
    },

    /// A selector string that cannot be parsed.
    #[error("invalid adapter selector {0:?}: expected an index (0, 1, …), a backend (vulkan, metal, dx12, gl) or a name substring")]
    BadSelector(String),

    /// The adapter refused to create a device.
    #[error("could not open a device on adapter {adapter:?}: {message}")]
    DeviceRequest {
        /// The name of the adapter that refused.
        adapter: String,
        /// wgpu's own explanation of the refusal.
        message: String,
    },

    /// Two shapes that an op needs to agree do not.
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}: {expected}")]
    ShapeMismatch {
        /// The name of the op that checked the shapes, e.g. `"matmul"`.
        op: &'static str,
        /// The shape of the first operand (or the one the op treats as the reference).
        lhs: Vec<usize>,
        /// The shape of the second operand, the one that does not fit `lhs`.
        rhs: Vec<usize>,
        /// In words, the relation the op needs between the two shapes.
        expected: String,
    },

    /// An argument that is out of range or otherwise invalid.
    #[error("{op}: {message}")]
    InvalidArgument {
        /// The name of the op (or function) that rejected the argument.
        op: &'static str,
        /// What is wrong with the argument and what would be accepted.
        message: String,
    },

    /// An op that cannot take a tensor with no elements was given one.
    #[error("{op}: cannot take a zero-sized tensor (shape {shape:?}): {why}")]
    ZeroSized {
        /// The name of the op that was given the empty tensor.
        op: &'static str,
        /// The shape of the empty tensor: at least one dimension is 0.
        shape: Vec<usize>,
        /// Why the op has no meaningful result for an empty tensor (e.g. a mean over nothing).
        why: &'static str,
    },

    /// A tensor too large for one buffer of this adapter.
    #[error(
        "a tensor of shape {shape:?} needs {bytes} bytes, more than this adapter's maximum buffer size of {limit} bytes"
    )]
    TooLarge {
        /// The shape of the tensor that was asked for.
        shape: Vec<usize>,
        /// The bytes that tensor would need.
        bytes: u64,
        /// The largest buffer this adapter allows, in bytes.
        limit: u64,
    },

    /// Tensors from two different devices met in one op.
    #[error("{op}: the tensors live on different devices")]
    DeviceMismatch {
        /// The name of the op whose operands came from different [`Gpu`](crate::Gpu)s.
        op: &'static str,
    },

    /// wgpu reported a validation error: a bug in a launcher or shader, or a limit exceeded.
    #[error("GPU validation error in {context}: {message}")]
    Validation {
        /// What the engine was doing when wgpu reported it (the label of the launch or upload).
        context: String,
        /// wgpu's message.
        message: String,
    },

    /// The GPU ran out of memory.
    #[error("GPU out of memory in {context}: {message}")]
    OutOfMemory {
        /// What the engine was doing when the allocation failed.
        context: String,
        /// wgpu's message.
        message: String,
    },

    /// wgpu reported an internal error (often a shader the driver could not compile).
    #[error("GPU internal error in {context}: {message}")]
    Internal {
        /// What the engine was doing when wgpu reported it.
        context: String,
        /// wgpu's message (for a shader, usually the driver's compiler output).
        message: String,
    },

    /// The device was lost (driver reset, GPU removed, or destroyed).
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),

    /// Mapping a buffer for readback failed.
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file (or directory) that could not be read or written.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A data file whose contents are not what was expected.
    #[error("{path}: {message}")]
    Format {
        /// The file whose contents are wrong.
        path: PathBuf,
        /// What is wrong, usually with the line or field where it was found.
        message: String,
    },
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
