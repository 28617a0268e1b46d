//! Data parallelism: one model replicated on several devices, each replica computing the
//! gradients of its share of every batch. The gradients are summed across all replicas, then
//! every replica applies the same optimizer update to the same parameters, so the replicas
//! stay equal and together take the step one device would take on the whole batch.
//!
//! [`GradientSum`] does the summing. It reads each local replica's gradients back in one
//! round trip per device ([`Gpu::read_many`]), adds them on the host, hands the one fused
//! buffer to a [`Collective`] that sums it across processes ([`SingleProcess`] when there is
//! one; `MpiWorld` across the processes of an MPI job, with the `mpi` feature), and writes
//! the result into every replica's gradients, where each replica's optimizer reads it.
//! [`synchronize_parameters`] makes every replica start from the first one's parameters.
//!
//! ```no_run
//! use shadergrad::graph::{Feed, Graph};
//! use shadergrad::nn::{Linear, Parameters};
//! use shadergrad::optim::{OptimizerConfig, Rule};
//! use shadergrad::parallel::{synchronize_parameters, GradientSum, SingleProcess};
//! use shadergrad::{AdapterSelector, Gpu};
//!
//! // Two devices (here both on adapter 0), a replica of the layer on each.
//! let gpus = [Gpu::new(&AdapterSelector::Index(0))?, Gpu::new(&AdapterSelector::Index(0))?];
//! let replicas: Vec<Parameters> = gpus.iter().map(|gpu| Parameters::new(gpu, 7)).collect();
//! let layers = replicas
//!     .iter()
//!     .map(|params| Linear::new(&params.at("fc"), 3, 1))
//!     .collect::<shadergrad::Result<Vec<_>>>()?;
//! synchronize_parameters(&replicas, &SingleProcess)?;
//! let mut optimizers = replicas
//!     .iter()
//!     .map(|params| params.optimizer(OptimizerConfig::new(Rule::Sgd, 0.1)))
//!     .collect::<shadergrad::Result<Vec<_>>>()?;
//! let mut sum = GradientSum::new(&replicas)?;
//! let mut plans = Vec::new();
//! for (gpu, layer) in gpus.iter().zip(&layers) {
//!     let mut g = Graph::new(gpu);
//!     let x = g.input("x", &[2, 3]);
//!     let y = layer.forward(&mut g, x)?;
//!     let loss = g.sum_all(y)?;
//!     let grads = g.backward(loss)?;
//!     let mut outputs = vec![loss];
//!     outputs.extend(grads.parameter_gradients()); // written into the parameters' gradients
//!     plans.push((g.compile(&outputs)?, x));
//! }
//! // One step: each replica its half of a batch of 4, then the summed gradients.
//! let batch = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
//! for ((plan, x), half) in plans.iter_mut().zip(batch.chunks(6)) {
//!     plan.run(&[Feed::f32(*x, half)], &[])?;
//! }
//! sum.sum(&SingleProcess, &[1.0, 1.0], &mut [])?; // the losses are sums: weights of 1
//! for optimizer in &mut optimizers {
//!     optimizer.prepare_step(1)?;
//!     optimizer.update()?;
//! }
//! # Ok::<(), shadergrad::Error>(())
//! ```

use std::time::Instant;

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "mpi")]
pub use self::mpi::MpiWorld;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::Parameters;
use crate::tensor::Tensor;

/// How processes that train together exchange numbers: the one operation data parallelism
/// needs, a sum that every process receives, and a broadcast to start from the same values.
pub trait Collective {
    /// This process's place among those training together, from 0. Process 0 alone
    /// reports, validates and saves.
    fn rank(&self) -> usize;

    /// How many processes train together.
    fn size(&self) -> usize;

    /// Replaces `values`, on every process, by their elementwise sum over all processes.
    /// Every process must call it with as many values.
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()>;

    /// Replaces `values`, on every process, by process 0's. Every process must call it with
    /// as many values.
    fn broadcast_from_root(&self, values: &mut [f32]) -> Result<()>;
}

/// A process training alone: the sum over processes is its own values.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn broadcast_from_root(&self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }
}

/// Where one [`GradientSum::sum`] spent its time, and what it moved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SumTiming {
    /// Reading every local replica's gradients back and adding them on the host.
    pub gather_s: f64,
    /// The sum across processes ([`Collective::all_reduce_sum`]).
    pub all_reduce_s: f64,
    /// Queueing the sum for every replica's gradients (the copy itself runs with the next
    /// submission).
    pub scatter_s: f64,
    /// Bytes in the buffer summed across processes: the gradients and the caller's
    /// counters.
    pub bytes: u64,
}

/// Sums the gradients of several replicas of one model (and of the replicas of other
/// processes) into every replica's gradients.
pub struct GradientSum {
    /// Per local replica: its device and its gradients, in the parameters' order.
    replicas: Vec<(Gpu, Vec<Tensor>)>,
    /// How many numbers the gradients hold in all.
    numel: usize,
    /// The sum on the host, with the caller's counters after the gradients.
    total: Vec<f32>,
}

impl std::fmt::Debug for GradientSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradientSum")
            .field("replicas", &self.replicas.len())
            .field("numel", &self.numel)
            .finish()
    }
}

impl GradientSum {
    /// A sum over these replicas' gradients (made now, zeros, where a parameter has none
    /// yet). Every replica must hold the same parameter names and shapes, in the same order
    /// (the error names the first that differs); they may live on any devices.
    pub fn new(replicas: &[Parameters]) -> Result<GradientSum> {
        const OP: &str = "GradientSum::new";
        let Some(first) = replicas.first() else {
            return Err(Error::invalid(OP, "no replicas: expected at least one"));
        };
        let reference = first.list();
        let mut gradients = Vec::with_capacity(replicas.len());
        for (index, replica) in replicas.iter().enumerate() {
            let parameters = replica.list();
            check_same_parameters(OP, &reference, &parameters, index)?;
            let grads = parameters
                .iter()
                .map(|p| p.gradient().cloned())
                .collect::<Result<Vec<_>>>()?;
            gradients.push((replica.gpu().clone(), grads));
        }
        let numel = reference.iter().map(|p| p.numel()).sum();
        Ok(GradientSum {
            replicas: gradients,
            numel,
            total: Vec::new(),
        })
    }

    /// How many numbers one replica's gradients hold.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Sums every local replica's gradients, each multiplied by its weight, and across
    /// processes through `collective`, then queues the sum into every replica's gradients:
    /// the replicas' next submissions (their optimizers' updates) read it. A replica whose
    /// loss is a mean over its share of the batch weighs that share (its tokens over the
    /// batch's), so that the sum is the gradient of the whole batch's mean; a summed loss
    /// weighs 1. `counters` (a step's loss and token counts, say) travel in the same
    /// buffer and come back summed over processes: one collective call per step. Each
    /// replica's gradients are read after its device finishes what was submitted to it.
    pub fn sum(
        &mut self,
        collective: &dyn Collective,
        weights: &[f32],
        counters: &mut [f32],
    ) -> Result<SumTiming> {
        if weights.len() != self.replicas.len() {
            return Err(Error::invalid(
                "GradientSum::sum",
                format!(
                    "{} weights for {} replicas: expected one per replica",
                    weights.len(),
                    self.replicas.len()
                ),
            ));
        }
        let started = Instant::now();
        let numel = self.numel;
        self.total.clear();
        self.total.resize(numel, 0.0);
        for ((gpu, grads), &weight) in self.replicas.iter().zip(weights) {
            let buffers: Vec<(&wgpu::Buffer, u64)> = grads
                .iter()
                .map(|grad| (grad.buffer().buffer(), grad.byte_len()))
                .collect();
            // Added straight from the mapped staging memory, group by group.
            let mut offset = 0;
            gpu.read_many_with(&buffers, |bytes| {
                let sums = &mut self.total[offset..offset + bytes.len() / 4];
                add_scaled(sums, weight, bytes);
                offset += bytes.len() / 4;
            })?;
        }
        self.total.extend_from_slice(counters);
        let gathered = Instant::now();
        collective.all_reduce_sum(&mut self.total)?;
        counters.copy_from_slice(&self.total[numel..]);
        let reduced = Instant::now();
        for (gpu, grads) in &self.replicas {
            let mut offset = 0;
            for grad in grads {
                let length = grad.numel();
                gpu.write(grad.buffer(), &self.total[offset..offset + length]);
                offset += length;
            }
        }
        Ok(SumTiming {
            gather_s: (gathered - started).as_secs_f64(),
            all_reduce_s: (reduced - gathered).as_secs_f64(),
            scatter_s: reduced.elapsed().as_secs_f64(),
            bytes: (self.total.len() * 4) as u64,
        })
    }
}

/// `sums[i] += weight × value i of bytes` (little-endian f32), spread over the host's cores
/// for large buffers: a 40-million-parameter model's sum is 160 MB.
fn add_scaled(sums: &mut [f32], weight: f32, bytes: &[u8]) {
    const PER_THREAD: usize = 1 << 20;
    let add = |sums: &mut [f32], bytes: &[u8]| match bytemuck::try_cast_slice::<u8, f32>(bytes) {
        Ok(values) => {
            for (sum, value) in sums.iter_mut().zip(values) {
                *sum += weight * value;
            }
        }
        // Mapped memory is aligned in practice; unaligned bytes are read one by one.
        Err(_) => {
            for (sum, value) in sums.iter_mut().zip(bytes.chunks_exact(4)) {
                *sum += weight * f32::from_le_bytes([value[0], value[1], value[2], value[3]]);
            }
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || sums.len() < 2 * PER_THREAD {
        add(sums, bytes);
        return;
    }
    let chunk = sums.len().div_ceil(threads).max(PER_THREAD);
    std::thread::scope(|scope| {
        for (sums, bytes) in sums.chunks_mut(chunk).zip(bytes.chunks(4 * chunk)) {
            scope.spawn(move || add(sums, bytes));
        }
    });
}

/// Makes every replica's parameters, in this process and in every other, equal to those of
/// the first replica of process 0. The replicas must hold the same names and shapes.
pub fn synchronize_parameters(replicas: &[Parameters], collective: &dyn Collective) -> Result<()> {
    const OP: &str = "synchronize_parameters";
    let Some(first) = replicas.first() else {
        return Err(Error::invalid(OP, "no replicas: expected at least one"));
    };
    let reference = first.list();
    for (index, replica) in replicas.iter().enumerate() {
        check_same_parameters(OP, &reference, &replica.list(), index)?;
    }
    let buffers: Vec<(&wgpu::Buffer, u64)> = reference
        .iter()
        .map(|p| (p.value().buffer().buffer(), p.value().byte_len()))
        .collect();
    let bytes = first.gpu().read_many(&buffers)?;
    let mut values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|v| f32::from_le_bytes([v[0], v[1], v[2], v[3]]))
        .collect();
    collective.broadcast_from_root(&mut values)?;
    let writes_first = collective.rank() != 0;
    for replica in replicas.iter().skip(usize::from(!writes_first)) {
        let mut offset = 0;
        for parameter in replica.list() {
            let length = parameter.numel();
            replica
                .gpu()
                .write(parameter.value().buffer(), &values[offset..offset + length]);
            offset += length;
        }
    }
    Ok(())
}

/// Checks that `replica` (number `index`) holds the names and shapes of `reference`.
fn check_same_parameters(
    op: &'static str,
    reference: &[crate::graph::Parameter],
    replica: &[crate::graph::Parameter],
    index: usize,
) -> Result<()> {
    if replica.len() != reference.len() {
        return Err(Error::invalid(
            op,
            format!(
                "replica {index} has {} parameters where replica 0 has {}: expected replicas \
                 of one model",
                replica.len(),
                reference.len()
            ),
        ));
    }
    for (ours, theirs) in reference.iter().zip(replica) {
        if ours.name() != theirs.name() || ours.shape() != theirs.shape() {
            return Err(Error::invalid(
                op,
                format!(
                    "replica {index} has {:?} {:?} where replica 0 has {:?} {:?}: expected \
                     replicas of one model",
                    theirs.name(),
                    theirs.shape(),
                    ours.name(),
                    ours.shape()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::add_scaled;

    fn bytes_of(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn large_sums_split_over_threads_add_every_value_once() {
        let n = (5 << 20) + 3; // past the threaded size, not a multiple of the chunks
        let values: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
        let mut sums = vec![1.0f32; n];
        add_scaled(&mut sums, 0.5, &bytes_of(&values));
        for (i, sum) in sums.iter().enumerate() {
            assert_eq!(*sum, 1.0 + 0.5 * (i % 1000) as f32, "element {i}");
        }
    }

    #[test]
    fn unaligned_bytes_are_read_one_value_at_a_time() {
        let values = [1.5f32, -2.0, 3.25];
        let mut padded = vec![0u8];
        padded.extend(bytes_of(&values));
        let mut sums = vec![0.0f32; 3];
        add_scaled(&mut sums, 2.0, &padded[1..]);
        assert_eq!(sums, [3.0, -4.0, 6.5]);
    }
}
