//! Compiling a graph into a [`Plan`] and running it.
//!
//! `compile` keeps only the nodes the requested outputs need, orders them (the graph's
//! order is already topological), gives every intermediate value a buffer by liveness (a
//! buffer goes back to a free list after the last node that reads it, and the next value
//! that fits takes it over), and records every dispatch once: bind groups and uniform
//! buffers are made here and never again. Only f32 values share buffers: every u32 value
//! (a fed id, a computed argmax) keeps one of its own, which needs no second free list and
//! costs little, u32 values being few and small next to activations. `run` writes the
//! inputs, submits all the dispatches of a step in one command buffer, and reads back
//! nothing unless asked.

use std::collections::HashMap;
use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, PooledBuffer};
use crate::kernels::elementwise::{Binary, Unary};
use crate::kernels::gather::GroupedPositions;
use crate::tensor::{numel, Indices, Tensor};

use super::ops::{MatMulFusion, Op, Operand, Recorded};
use super::{DType, Graph, IndexBound, Node, Source, Var};

/// The prefix of the optimizer-state tensors a training checkpoint holds beside the
/// parameters (`optimizer.0.exp_avg`, …).
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Data for one input of a run.
#[derive(Debug, Clone, Copy)]
pub enum Feed<'a> {
    /// Values for an f32 input, row-major, as many as its shape holds.
    F32(Var, &'a [f32]),
    /// Values for a u32 input (ids, labels, lengths, a seed), as many as its shape holds.
    U32(Var, &'a [u32]),
}

impl<'a> Feed<'a> {
    /// Feeds `data` to the f32 input `var`.
    pub fn f32(var: Var, data: &'a [f32]) -> Self {
        Feed::F32(var, data)
    }

    /// Feeds `data` to the u32 input `var`.
    pub fn u32(var: Var, data: &'a [u32]) -> Self {
        Feed::U32(var, data)
    }
}

/// Memory of a plan's computed values: with buffers shared by liveness, and without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    /// Bytes of the buffers the plan holds for computed values.
    pub peak_bytes: u64,
    /// Bytes if every computed value had its own buffer.
    pub naive_bytes: u64,
}

/// What compile knows of each value it keeps.
struct Slot {
    shape: Vec<usize>,
    dtype: DType,
    is_input: bool,
    /// The parameter's name, for checkpoints; `None` for other values.
    parameter: Option<String>,
    index_bound: Option<IndexBound>,
    /// The storage of a persistent value (leaf or requested output); `None` otherwise.
    storage: Option<Operand>,
}

/// A compiled graph: every step is one submission of the same recorded dispatches.
pub struct Plan {
    gpu: Gpu,
    dispatches: Vec<Dispatch>,
    values: HashMap<Var, Slot>,
    memory: MemoryReport,
    /// Groupings by id to rebuild from each feed of these u32 inputs (gather backward).
    groupings: Vec<(Var, GroupedPositions)>,
    /// Scratch tensors and shared buffers that the dispatches bind.
    _scratch: Vec<Tensor>,
    _buffers: Vec<Arc<PooledBuffer>>,
}

impl Graph {
    /// Compiles the nodes that `outputs` need into a plan. The outputs (a loss, gradients for
    /// an optimizer) keep buffers of their own and can be read after each run.
    pub fn compile(&self, outputs: &[Var]) -> Result<Plan> {
        self.compile_with(outputs, &[])
    }

    /// [`Graph::compile`] with some values stored in given tensors instead of buffers of the
    /// plan's own: a parameter bound to a tensor starts from (and trains) that tensor's
    /// values, a computed value bound to a tensor is computed and written there (a reshape
    /// writes the value it reshapes). Plans compiled from
    /// several graphs over the same bound parameters and gradients train one set of weights
    /// with one optimizer: a plan per shape of batch (sequence lengths), for instance.
    pub fn compile_with(&self, outputs: &[Var], bound: &[(Var, &Tensor)]) -> Result<Plan> {
        let gpu = self.gpu().clone();
        let mut bound_tensors: HashMap<usize, Tensor> = HashMap::new();
        for &(var, tensor) in bound {
            let value = self.values.get(var.0).ok_or_else(|| {
                Error::invalid("compile", format!("value {} is not in this graph", var.0))
            })?;
            if value.dtype != DType::F32 || tensor.shape() != value.shape.as_slice() {
                return Err(Error::invalid(
                    "compile",
                    format!(
                        "value {} ({:?} {:?}) cannot be bound to a tensor of shape {:?}: \
                         only f32 values of the same shape can",
                        var.0,
                        value.dtype,
                        value.shape,
                        tensor.shape()
                    ),
                ));
            }
            if !tensor.gpu().same_device(&gpu) {
                return Err(Error::invalid(
                    "compile",
                    format!("value {} is bound to a tensor of another device", var.0),
                ));
            }
            bound_tensors.insert(var.0, tensor.clone());
        }
        // The values asked for: the outputs, and the values bound to a tensor (binding says
        // where to write them). They must be written, so no fusion may skip them.
        let mut kept_apart = vec![false; self.values.len()];
        for v in outputs
            .iter()
            .map(|v| v.0)
            .chain(bound_tensors.keys().copied())
        {
            kept_apart[v] = true;
        }
        // Which nodes the outputs need, walking back from them.
        let mut needed = kept_apart.clone();
        let mut live = vec![false; self.nodes.len()];
        for (index, node) in self.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|v| needed[v.0]) {
                live[index] = true;
                // Every output of a live node is written, even one nobody reads (an argmax
                // without a backward), so it needs storage too.
                for v in node.inputs.iter().chain(&node.outputs) {
                    needed[v.0] = true;
                }
            }
        }
        let live_nodes = fuse_relus(
            self.nodes
                .iter()
                .enumerate()
                .filter(|&(i, _)| live[i])
                .map(|(_, node)| node.clone())
                .collect(),
            &kept_apart,
        );

        // Storage roots: an alias (reshape) shares the buffer of its input.
        let mut root: Vec<usize> = (0..self.values.len()).collect();
        for node in &live_nodes {
            if node.op.is_alias() {
                root[node.outputs[0].0] = root[node.inputs[0].0];
            }
        }
        // A bound reshape binds the value it reshapes, to the tensor seen with that shape.
        let mut bound_roots: HashMap<usize, Tensor> = HashMap::new();
        for (&v, tensor) in &bound_tensors {
            let r = root[v];
            let tensor = tensor.reshape(&self.values[r].shape)?;
            if bound_roots.insert(r, tensor).is_some() {
                return Err(Error::invalid(
                    "compile",
                    format!("value {v} shares its storage with another bound value"),
                ));
            }
        }
        let bound_tensors = bound_roots;
        let is_leaf = |v: usize| !matches!(self.values[v].source, Source::Computed);
        let mut persistent = vec![false; self.values.len()];
        for v in 0..self.values.len() {
            if needed[v] && is_leaf(v) {
                persistent[root[v]] = true;
            }
        }
        for &v in outputs {
            persistent[root[v.0]] = true;
        }
        for &v in bound_tensors.keys() {
            persistent[v] = true;
        }
        // The position (among live nodes) of the last node reading each root.
        let mut last_use = vec![None; self.values.len()];
        for (position, node) in live_nodes.iter().enumerate() {
            for v in &node.inputs {
                last_use[root[v.0]] = Some(position);
            }
        }

        let mut storage: HashMap<usize, Operand> = HashMap::new();
        let mut values = HashMap::new();
        // Persistent values and u32 values own their buffers; leaves get their initial data
        // now.
        for v in 0..self.values.len() {
            let own =
                is_leaf(v) || persistent[v] && root[v] == v || self.values[v].dtype == DType::U32;
            if !(needed[v] && own) {
                continue;
            }
            let value = &self.values[v];
            let operand = match value.dtype {
                _ if bound_tensors.contains_key(&v) => Operand::F32(bound_tensors[&v].clone()),
                DType::U32 => Operand::U32(Indices::uninit(&gpu, &value.shape)?),
                DType::F32 => Operand::F32(match &value.source {
                    Source::Parameter { init, .. } => Tensor::from_slice(&gpu, init, &value.shape)?,
                    Source::Constant { data } => Tensor::from_slice(&gpu, data, &value.shape)?,
                    _ => Tensor::uninit(&gpu, &value.shape)?,
                }),
            };
            storage.insert(v, operand);
        }

        // Intermediates share buffers: a free list of (capacity, buffer), smallest fit first.
        let mut free: Vec<(u64, Arc<PooledBuffer>)> = Vec::new();
        let mut buffers: Vec<Arc<PooledBuffer>> = Vec::new();
        let mut shared: HashMap<usize, Arc<PooledBuffer>> = HashMap::new();
        let mut memory = MemoryReport {
            peak_bytes: 0,
            naive_bytes: 0,
        };
        let mut dispatches = Vec::new();
        let mut scratch = Vec::new();
        let mut groupings = Vec::new();
        for (position, node) in live_nodes.iter().enumerate() {
            let mut output_tensors = Vec::with_capacity(node.outputs.len());
            for &out in &node.outputs {
                let value = &self.values[out.0];
                let bytes = numel(&value.shape)? as u64 * 4;
                let r = root[out.0];
                if r != out.0 {
                    output_tensors.push(Operand::F32(view(
                        &gpu,
                        &storage,
                        &shared,
                        r,
                        &value.shape,
                    )?));
                    continue;
                }
                memory.naive_bytes += bytes;
                if value.dtype == DType::U32 {
                    memory.peak_bytes += bytes;
                    output_tensors.push(indices(&storage, r)?);
                    continue;
                }
                if persistent[r] {
                    memory.peak_bytes += bytes;
                } else {
                    let best = free
                        .iter()
                        .enumerate()
                        .filter(|(_, (capacity, _))| *capacity >= bytes)
                        .min_by_key(|(_, (capacity, _))| *capacity)
                        .map(|(i, _)| i);
                    let buffer = match best {
                        Some(i) => free.swap_remove(i).1,
                        None => {
                            let buffer = Arc::new(gpu.storage_buffer(bytes.max(4), &value.shape)?);
                            memory.peak_bytes += bytes.max(4);
                            buffers.push(Arc::clone(&buffer));
                            buffer
                        }
                    };
                    shared.insert(r, buffer);
                }
                output_tensors.push(Operand::F32(view(
                    &gpu,
                    &storage,
                    &shared,
                    r,
                    &value.shape,
                )?));
            }
            let inputs = node
                .inputs
                .iter()
                .map(|v| match self.values[v.0].dtype {
                    DType::U32 => indices(&storage, root[v.0]),
                    DType::F32 => Ok(Operand::F32(view(
                        &gpu,
                        &storage,
                        &shared,
                        root[v.0],
                        &self.values[v.0].shape,
                    )?)),
                })
                .collect::<Result<Vec<_>>>()?;
            let Recorded {
                dispatches: node_dispatches,
                scratch: node_scratch,
                groupings: node_groupings,
            } = node.op.record(&inputs, &output_tensors)?;
            dispatches.extend(node_dispatches);
            scratch.extend(node_scratch);
            groupings.extend(
                node_groupings
                    .into_iter()
                    .map(|(input, grouping)| (node.inputs[input], grouping)),
            );
            // Buffers whose last reader this was (or that nobody reads) become free.
            let mut released: Vec<usize> = node
                .inputs
                .iter()
                .chain(&node.outputs)
                .map(|v| root[v.0])
                .filter(|&r| !persistent[r] && last_use[r].is_none_or(|last| last <= position))
                .collect();
            released.sort_unstable();
            released.dedup();
            for r in released {
                if let Some(buffer) = shared.remove(&r) {
                    free.push((buffer.buffer().size(), buffer));
                }
            }
        }

        for v in 0..self.values.len() {
            if !needed[v] {
                continue;
            }
            let value = &self.values[v];
            let kept = match storage.get(&root[v]) {
                Some(Operand::F32(t)) if persistent[root[v]] => {
                    Some(Operand::F32(t.reshape(&value.shape)?))
                }
                Some(Operand::U32(i)) => Some(Operand::U32(i.clone())),
                _ => None,
            };
            values.insert(
                Var(v),
                Slot {
                    shape: value.shape.clone(),
                    dtype: value.dtype,
                    is_input: matches!(value.source, Source::Input { .. }),
                    parameter: match &value.source {
                        Source::Parameter { name, .. } => Some(name.clone()),
                        _ => None,
                    },
                    index_bound: value.index_bound,
                    storage: kept,
                },
            );
        }
        Ok(Plan {
            gpu,
            dispatches,
            values,
            memory,
            groupings,
            _scratch: scratch,
            _buffers: buffers,
        })
    }
}

/// Fuses each ReLU, and each ReLU's gradient, into the matmul whose product it alone
/// reads: the matmul applies it as it stores and writes the ReLU's (or the gradient's)
/// output, and the product is never stored, saving a dispatch and a pass over it. In a
/// network of ReLU layers (an MLP, a Transformer's feed-forward) that is every hidden
/// layer's activation and, in the backward, every gradient through one (dh = dz·Wᵀ is
/// read only by relu'). `nodes` are the live nodes in order; a product that is an output
/// or bound to a tensor (`kept_apart`) stays apart, since it must be written. No backward
/// rule needs the product itself: a ReLU's gradient reads the ReLU's output.
fn fuse_relus(nodes: Vec<Node>, kept_apart: &[bool]) -> Vec<Node> {
    let mut readers = vec![0usize; kept_apart.len()];
    for node in &nodes {
        for v in &node.inputs {
            readers[v.0] += 1;
        }
    }
    // Where (in `fused`) each value is computed, and which values are unfused products.
    let mut computed_at: HashMap<usize, usize> = HashMap::new();
    let mut products: HashMap<usize, usize> = HashMap::new();
    let mut fused: Vec<Option<Node>> = Vec::with_capacity(nodes.len());
    for node in nodes {
        // The fusion, the product read, and the ReLU output a gradient is masked by.
        let candidate = match node.op {
            Op::Unary(Unary::Relu) => Some((MatMulFusion::Relu, node.inputs[0], None)),
            Op::Binary(Binary::ReluGrad) => {
                Some((MatMulFusion::ReluGrad, node.inputs[1], Some(node.inputs[0])))
            }
            _ => None,
        };
        let target = candidate.and_then(|(fusion, product, mask)| {
            let at = *products.get(&product.0)?;
            // The matmul runs earlier than this node: the mask must exist by then.
            let mask_ready = mask.is_none_or(|h| computed_at.get(&h.0).is_none_or(|&p| p < at));
            (readers[product.0] == 1 && !kept_apart[product.0] && mask_ready)
                .then_some((at, fusion, mask))
        });
        let Some((at, fusion, mask)) = target else {
            let position = fused.len();
            for v in &node.outputs {
                computed_at.insert(v.0, position);
            }
            if let Op::MatMul {
                fused: MatMulFusion::Plain,
                ..
            } = node.op
            {
                products.insert(node.outputs[0].0, position);
            }
            fused.push(Some(node));
            continue;
        };
        let matmul = fused[at]
            .as_mut()
            .expect("`products` names matmuls, which are never dropped");
        if let Op::MatMul { fused, .. } = &mut matmul.op {
            *fused = fusion;
        }
        matmul.inputs.extend(mask);
        for v in &node.outputs {
            computed_at.insert(v.0, at);
        }
        matmul.outputs = node.outputs;
        fused.push(None);
    }
    fused.into_iter().flatten().collect()
}

/// The u32 value `r`, which has its own buffer.
fn indices(storage: &HashMap<usize, Operand>, r: usize) -> Result<Operand> {
    match storage.get(&r) {
        Some(Operand::U32(indices)) => Ok(Operand::U32(indices.clone())),
        _ => Err(Error::invalid(
            "compile",
            format!("u32 value {r} has no buffer"),
        )),
    }
}

/// A tensor of `shape` over the storage of root `r`: its own buffer if persistent, else
/// the shared buffer assigned to it.
fn view(
    gpu: &Gpu,
    storage: &HashMap<usize, Operand>,
    shared: &HashMap<usize, Arc<PooledBuffer>>,
    r: usize,
    shape: &[usize],
) -> Result<Tensor> {
    match (storage.get(&r), shared.get(&r)) {
        (Some(Operand::F32(t)), _) => t.reshape(shape),
        (_, Some(buffer)) => Ok(Tensor::from_shared(gpu, Arc::clone(buffer), shape)),
        _ => Err(Error::invalid(
            "compile",
            format!("value {r} is read before any node writes it"),
        )),
    }
}

impl Plan {
    /// One step: writes `feeds` into their inputs, then submits every dispatch of the plan
    /// followed by `extra` (an optimizer's update, say) as one command buffer.
    pub fn run(&mut self, feeds: &[Feed], extra: &[Dispatch]) -> Result<()> {
        for feed in feeds {
            self.write(feed)?;
        }
        self.gpu.submit_lists(&[&self.dispatches, extra])
    }

    /// The plan's dispatches in submission order, for profiling (time each alone with
    /// [`Gpu::submit_timed`](crate::Gpu::submit_timed)).
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    fn write(&self, feed: &Feed) -> Result<()> {
        let (var, len, dtype) = match feed {
            Feed::F32(var, data) => (*var, data.len(), DType::F32),
            Feed::U32(var, data) => (*var, data.len(), DType::U32),
        };
        let slot = self
            .values
            .get(&var)
            .filter(|slot| slot.is_input)
            .ok_or_else(|| {
                Error::invalid(
                    "run",
                    format!("value {} is not an input of this plan", var.0),
                )
            })?;
        let expected = numel(&slot.shape)?;
        if slot.dtype != dtype || len != expected {
            return Err(Error::invalid(
                "run",
                format!(
                    "input {} is {:?} of shape {:?} ({expected} values), the feed has {len} {dtype:?} values",
                    var.0, slot.dtype, slot.shape
                ),
            ));
        }
        match (feed, &slot.storage) {
            (Feed::F32(_, data), Some(Operand::F32(t))) => self.gpu.write(t.buffer(), data),
            (Feed::U32(_, data), Some(Operand::U32(i))) => {
                if let Some(bound) = slot.index_bound {
                    check_indices(data, bound)?;
                }
                for (_, grouping) in self.groupings.iter().filter(|(v, _)| *v == var) {
                    grouping.update(data)?;
                }
                self.gpu.write(i.buffer(), data)
            }
            _ => unreachable!("storage matches the checked dtype"),
        }
        Ok(())
    }

    /// Downloads a persistent value: a leaf or one of the outputs given to compile.
    pub fn read(&self, var: Var) -> Result<Vec<f32>> {
        self.tensor(var)?.to_vec()
    }

    /// Downloads a u32 value: an input, or a computed one such as argmax positions (every
    /// u32 value keeps its own buffer, so any the plan computes can be read).
    pub fn read_indices(&self, var: Var) -> Result<Vec<u32>> {
        match self.values.get(&var).and_then(|slot| slot.storage.as_ref()) {
            Some(Operand::U32(indices)) => indices.to_vec(),
            _ => Err(Error::invalid(
                "plan",
                format!("value {} is not a u32 value of this plan", var.0),
            )),
        }
    }

    /// The GPU tensor of a persistent f32 value (a parameter, a requested output).
    pub fn tensor(&self, var: Var) -> Result<&Tensor> {
        match self.values.get(&var).and_then(|slot| slot.storage.as_ref()) {
            Some(Operand::F32(t)) => Ok(t),
            _ => Err(Error::invalid(
                "plan",
                format!(
                    "value {} has no buffer of its own: only leaves and the outputs given \
                     to compile can be read",
                    var.0
                ),
            )),
        }
    }

    /// Every parameter the plan uses, (name, tensor), in the order they were made.
    pub fn parameters(&self) -> Vec<(&str, &Tensor)> {
        let mut parameters: Vec<(Var, &str, &Tensor)> = self
            .values
            .iter()
            .filter_map(|(&var, slot)| match (&slot.parameter, &slot.storage) {
                (Some(name), Some(Operand::F32(t))) => Some((var, name.as_str(), t)),
                _ => None,
            })
            .collect();
        parameters.sort_by_key(|&(var, _, _)| var);
        parameters
            .into_iter()
            .map(|(_, name, t)| (name, t))
            .collect()
    }

    /// Overwrites every parameter with the tensor of the same name in `checkpoint`, after
    /// checking that the checkpoint holds exactly these names and shapes (the error names
    /// the first tensor that differs: a checkpoint of another architecture). Tensors under
    /// [`OPTIMIZER_PREFIX`] are the optimizer's state, saved beside the parameters for
    /// resuming; they are left to the optimizer.
    pub fn load_parameters(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let parameters = self.parameters();
        let optimizer_state = checkpoint
            .tensors
            .iter()
            .filter(|t| t.name.starts_with(OPTIMIZER_PREFIX))
            .map(|t| (t.name.as_str(), t.shape.as_slice()));
        let expected: Vec<(&str, &[usize])> = parameters
            .iter()
            .map(|(name, t)| (*name, t.shape()))
            .chain(optimizer_state)
            .collect();
        checkpoint.check_against(&expected)?;
        for (name, tensor) in parameters {
            self.gpu
                .write(tensor.buffer(), checkpoint.get(name)?.as_f32()?);
        }
        Ok(())
    }

    /// The dispatches of one step (without the extra ones given to `run`).
    pub fn dispatch_count(&self) -> usize {
        self.dispatches.len()
    }

    /// Bytes held for computed values, against one buffer per value.
    pub fn memory(&self) -> MemoryReport {
        self.memory
    }
}

/// Every index below `bound.bound` or equal to the ignore value; else an error naming the
/// first that is not.
fn check_indices(data: &[u32], bound: IndexBound) -> Result<()> {
    match data
        .iter()
        .position(|&v| v >= bound.bound && Some(v) != bound.ignore)
    {
        None => Ok(()),
        Some(position) => Err(Error::invalid(
            "run",
            format!(
                "index {} at position {position} is out of range: expected below {}{}",
                data[position],
                bound.bound,
                bound
                    .ignore
                    .map(|i| format!(" or the ignore value {i}"))
                    .unwrap_or_default()
            ),
        )),
    }
}
