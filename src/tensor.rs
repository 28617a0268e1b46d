//! [`Tensor`]: an f32 array on the GPU, contiguous and row-major.
//!
//! Tensors are immutable values: every op returns a new tensor, and clones share the
//! buffer. The ops themselves are written beside their kernels, in `src/kernels/`.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, PooledBuffer};

/// An f32 tensor on the GPU. Cheap to clone (the buffer is shared).
#[derive(Clone)]
pub struct Tensor {
    gpu: Gpu,
    buffer: Arc<PooledBuffer>,
    shape: Vec<usize>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor{:?}", self.shape)
    }
}

/// The number of elements of `shape`, or an error if it overflows.
pub fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::invalid("tensor", format!("shape {shape:?} has too many elements")))
}

/// Bytes of an f32 tensor of `shape`.
fn byte_size(shape: &[usize]) -> Result<u64> {
    let n = numel(shape)? as u64;
    n.checked_mul(4)
        .ok_or_else(|| Error::invalid("tensor", format!("shape {shape:?} has too many elements")))
}

impl Tensor {
    /// Uploads `data` as a tensor of `shape`; `data.len()` must equal the product of `shape`.
    pub fn from_slice(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let n = numel(shape)?;
        if data.len() != n {
            return Err(Error::ShapeMismatch {
                op: "from_slice",
                lhs: vec![data.len()],
                rhs: shape.to_vec(),
                expected: format!("the data has {} values, the shape holds {n}", data.len()),
            });
        }
        let tensor = Tensor::uninit(gpu, shape)?;
        gpu.write(tensor.buffer(), data);
        Ok(tensor)
    }

    /// A scalar (rank-0 tensor).
    pub fn scalar(gpu: &Gpu, value: f32) -> Result<Tensor> {
        Tensor::from_slice(gpu, &[value], &[])
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(gpu: &Gpu, shape: &[usize], value: f32) -> Result<Tensor> {
        let n = numel(shape)?;
        let tensor = Tensor::uninit(gpu, shape)?;
        gpu.write(tensor.buffer(), &vec![value; n]);
        Ok(tensor)
    }

    /// A tensor of `shape` filled with zeros.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        Tensor::full(gpu, shape, 0.0)
    }

    /// A tensor whose contents are whatever its pooled buffer held: for kernel outputs.
    /// Errors if `shape` is larger than the adapter allows in one buffer.
    pub(crate) fn uninit(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let buffer = gpu.storage_buffer(byte_size(shape)?, shape)?;
        Ok(Tensor {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
        })
    }

    /// A tensor of `shape` over a buffer shared with others (a compiled plan's intermediates
    /// take turns in one buffer); the buffer must hold at least the shape's bytes.
    pub(crate) fn from_shared(gpu: &Gpu, buffer: Arc<PooledBuffer>, shape: &[usize]) -> Tensor {
        debug_assert!(buffer.buffer().size() >= shape.iter().product::<usize>() as u64 * 4);
        Tensor {
            gpu: gpu.clone(),
            buffer,
            shape: shape.to_vec(),
        }
    }

    /// Downloads the tensor (waits for the GPU work that produces it).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let bytes = self.gpu.read(self.buffer(), self.byte_len())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The size of each dimension, outermost first: `[N, C]` is N rows of C contiguous values.
    /// A scalar has the empty shape `[]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of dimensions (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of data (the buffer may be larger: it comes from a size class of the pool).
    pub fn byte_len(&self) -> u64 {
        self.numel() as u64 * 4
    }

    /// The device the tensor lives on; ops between tensors need them on the same one.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The buffer holding the data, for launching custom kernels on it: on loan from the
    /// pool (it derefs to the wgpu buffer), and a dispatch that binds it holds it, so it goes
    /// back to the pool only once the dispatch is gone too.
    pub fn buffer(&self) -> &Arc<PooledBuffer> {
        &self.buffer
    }

    /// The same data seen with another shape of as many elements (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape)? != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
                expected: "both shapes must hold the same number of elements".into(),
            });
        }
        Ok(Tensor {
            gpu: self.gpu.clone(),
            buffer: Arc::clone(&self.buffer),
            shape: shape.to_vec(),
        })
    }

    /// Fails unless `other` lives on the same device as `self`.
    pub(crate) fn same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.gpu.same_device(&other.gpu) {
            Ok(())
        } else {
            Err(Error::DeviceMismatch { op })
        }
    }
}

/// Resolves a possibly negative axis (`-1` is the last) against `rank`.
pub fn resolve_axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let resolved = if axis < 0 { axis + rank as isize } else { axis };
    if resolved < 0 || resolved as usize >= rank {
        return Err(Error::invalid(
            op,
            format!("axis {axis} is out of range for a tensor of rank {rank}"),
        ));
    }
    Ok(resolved as usize)
}

/// The target value PyTorch's `cross_entropy` and `nll_loss` ignore by default
/// (`ignore_index=-100`), for [`crate::SoftmaxCrossEntropy::ignore_index`] and
/// [`crate::graph::CrossEntropySpec::ignore`] over targets given as i64.
pub const PYTORCH_IGNORE_INDEX: i64 = -100;

/// The u32 bits that stand on the GPU for an index given as i64, PyTorch's dtype for class
/// indices and token ids: the value itself when it is not negative, its two's complement
/// when it is (which only an ignore index may be). `None` outside i32, so that no negative
/// value shares its bits with an index.
pub(crate) fn index_bits(value: i64) -> Option<u32> {
    i32::try_from(value).ok().map(|v| v as u32)
}

/// The u32 bits of an ignore index: any u32 value (a class value such as the padding id,
/// or a marker past every class) or a negative i32 such as -100, as two's complement. The
/// two ranges share bits (-1 and `u32::MAX`), but one loss has one ignore index, and fed
/// targets are checked against its value, not its bits.
pub(crate) fn ignore_bits(op: &'static str, value: i64) -> Result<u32> {
    if (i64::from(i32::MIN)..=i64::from(u32::MAX)).contains(&value) {
        Ok(value as u32)
    } else {
        Err(Error::invalid(
            op,
            format!(
                "ignore index {value} is outside {}..={}: expected a u32 value (such as the \
                 padding id) or a negative i32 (such as PyTorch's -100)",
                i32::MIN,
                u32::MAX
            ),
        ))
    }
}

/// How an index's u32 bits read in messages: negative when they are an i32's two's
/// complement (an index given as i64, such as -100), else the value.
pub(crate) fn index_in_words(bits: u32) -> i64 {
    if bits > i32::MAX as u32 {
        i64::from(bits as i32)
    } else {
        i64::from(bits)
    }
}

/// A tensor of u32 on the GPU: token ids, class labels, argmax positions, lengths.
/// Kernels that take indices bind its buffer as `array<u32>`.
///
/// Indices uploaded from the host keep their values there too, so that ops can check them
/// (an id or label out of range) before dispatch, and group positions by id, without
/// reading the GPU back.
#[derive(Clone)]
pub struct Indices {
    gpu: Gpu,
    buffer: Arc<PooledBuffer>,
    shape: Vec<usize>,
    /// The values, for indices made by [`Indices::from_slice`]; `None` for kernel outputs.
    host: Option<Arc<[u32]>>,
}

impl std::fmt::Debug for Indices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Indices{:?}", self.shape)
    }
}

impl Indices {
    /// Uploads `data` as indices of `shape`; `data.len()` must equal the product of `shape`.
    pub fn from_slice(gpu: &Gpu, data: &[u32], shape: &[usize]) -> Result<Indices> {
        let n = numel(shape)?;
        if data.len() != n {
            return Err(Error::ShapeMismatch {
                op: "Indices::from_slice",
                lhs: vec![data.len()],
                rhs: shape.to_vec(),
                expected: format!("the data has {} values, the shape holds {n}", data.len()),
            });
        }
        let mut indices = Indices::uninit(gpu, shape)?;
        gpu.write(indices.buffer(), data);
        indices.host = Some(data.into());
        Ok(indices)
    }

    /// Uploads indices given as i64, PyTorch's dtype for class targets and token ids, as
    /// [`Indices::from_slice`] does: each must lie in i32, and a negative one (PyTorch's
    /// ignore index -100, say) can only be matched by an ignore index of the same value
    /// ([`crate::SoftmaxCrossEntropy::ignore_index`]); every other op refuses it as out of
    /// range.
    pub fn from_i64(gpu: &Gpu, data: &[i64], shape: &[usize]) -> Result<Indices> {
        let bits = data
            .iter()
            .enumerate()
            .map(|(position, &value)| {
                index_bits(value).ok_or_else(|| {
                    Error::invalid(
                        "Indices::from_i64",
                        format!(
                            "index {value} at position {position} is outside i32 ({}..={}), \
                             the range of indices given as i64",
                            i32::MIN,
                            i32::MAX
                        ),
                    )
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        Indices::from_slice(gpu, &bits, shape)
    }

    /// Indices whose contents are whatever the pooled buffer held: for kernel outputs.
    pub(crate) fn uninit(gpu: &Gpu, shape: &[usize]) -> Result<Indices> {
        let buffer = gpu.storage_buffer(byte_size(shape)?, shape)?;
        Ok(Indices {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
            host: None,
        })
    }

    /// The values on the host: the copy kept by [`Indices::from_slice`], else downloaded
    /// (which waits for the GPU work that produces them).
    pub fn host_values(&self) -> Result<Arc<[u32]>> {
        match &self.host {
            Some(values) => Ok(Arc::clone(values)),
            None => Ok(self.to_vec()?.into()),
        }
    }

    /// The same indices (the same buffer, no copy) viewed with another shape of as many
    /// elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Indices> {
        if numel(shape)? != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "Indices::reshape",
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
                expected: "both shapes must hold as many elements".into(),
            });
        }
        Ok(Indices {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// Downloads the indices (waits for the GPU work that produces them).
    pub fn to_vec(&self) -> Result<Vec<u32>> {
        let bytes = self.gpu.read(self.buffer(), self.numel() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The size of each dimension, outermost first, as for [`Tensor::shape`].
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of indices.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The device the indices live on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The buffer on loan from the pool (it derefs to the wgpu buffer).
    pub fn buffer(&self) -> &Arc<PooledBuffer> {
        &self.buffer
    }
}
