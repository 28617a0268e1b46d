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
use super::{DType, Gradients, Graph, GraphId, IndexBound, Node, Source, Var};

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
    /// Values for a u32 input given as i64, PyTorch's dtype for class targets and token
    /// ids: each must be a valid u32 value, except that the targets of a cross-entropy may
    /// also hold its ignore index, negative ones such as -100 included.
    I64(Var, &'a [i64]),
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

    /// Feeds `data`, i64 as PyTorch keeps class targets (with -100 for an ignored one), to
    /// the u32 input `var`.
    pub fn i64(var: Var, data: &'a [i64]) -> Self {
        Feed::I64(var, data)
    }
}

impl Feed<'_> {
    /// The input this feed writes.
    pub fn var(&self) -> Var {
        match self {
            Feed::F32(var, _) | Feed::U32(var, _) | Feed::I64(var, _) => *var,
        }
    }
}

/// A value downloaded from a plan: its shape and its elements, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor<T> {
    /// The value's shape.
    pub shape: Vec<usize>,
    /// Its elements in row-major order, as many as the shape holds.
    pub data: Vec<T>,
}

/// Memory of a plan's computed values: with buffers shared by liveness, and without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    /// Bytes of the buffers the plan holds for computed values.
    pub peak_bytes: u64,
    /// Bytes if every computed value had its own buffer.
    pub naive_bytes: u64,
}

impl Slot {
    /// The value in messages: its name and number (`"x" (value 3)`), or its number.
    fn describe(&self, var: Var) -> String {
        match &self.role {
            Role::Input { name, .. } | Role::Parameter { name } => {
                format!("{name:?} (value {})", var.index)
            }
            Role::Computed => format!("value {}", var.index),
        }
    }
}

/// What a kept value is to the plan's caller.
enum Role {
    /// Fed by each run; `bound` when compile bound it to a tensor, which its owner writes
    /// instead.
    Input { name: String, bound: bool },
    /// Trained; its name keys checkpoints.
    Parameter { name: String },
    /// Computed by the plan, or a constant.
    Computed,
}

/// What compile knows of each value it keeps.
struct Slot {
    shape: Vec<usize>,
    dtype: DType,
    role: Role,
    index_bound: Option<IndexBound>,
    /// The storage of a persistent value (leaf or requested output); `None` otherwise.
    storage: Option<Operand>,
}

/// A compiled graph: every step is one submission of the same recorded dispatches.
pub struct Plan {
    gpu: Gpu,
    /// The graph compiled: only its values can be fed or read.
    graph: GraphId,
    dispatches: Vec<Dispatch>,
    values: HashMap<Var, Slot>,
    /// The graph's inputs that no output needs, by name.
    pruned_inputs: HashMap<Var, String>,
    /// The inputs every run must feed: those the plan reads that hold elements and are not
    /// bound to a tensor. Found once here, checked each run.
    required_inputs: Vec<Var>,
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

    /// [`Graph::compile`] with some inputs or computed values stored in given tensors
    /// instead of buffers of the plan's own: an input bound to a tensor is read from it (its
    /// owner writes it; runs do not feed it), a computed value bound to a tensor is computed
    /// and written there (a reshape writes the value it reshapes). A decoding plan keeps its
    /// recurrent states this way, each step's output state bound to the next step's input.
    /// Parameters cannot be bound: they keep their own tensors ([`Graph::param`]).
    pub fn compile_with(&self, outputs: &[Var], bound: &[(Var, &Tensor)]) -> Result<Plan> {
        let gpu = self.gpu().clone();
        let mut bound_tensors: HashMap<usize, Tensor> = HashMap::new();
        self.check_each("compile", outputs)?;
        for &(var, tensor) in bound {
            self.check("compile", var)?;
            let value = &self.values[var.index];
            if let Some(parameter) = self.parameter_of(var) {
                return Err(Error::invalid(
                    "compile",
                    format!(
                        "value {} is parameter {:?}, which keeps its own tensor: use the same \
                         Parameter in both graphs (Graph::param) to share it",
                        var.index,
                        parameter.name()
                    ),
                ));
            }
            if value.dtype != DType::F32 || tensor.shape() != value.shape.as_slice() {
                return Err(Error::invalid(
                    "compile",
                    format!(
                        "value {} ({:?} {:?}) cannot be bound to a tensor of shape {:?}: \
                         only f32 values of the same shape can",
                        var.index,
                        value.dtype,
                        value.shape,
                        tensor.shape()
                    ),
                ));
            }
            if !tensor.gpu().same_device(&gpu) {
                return Err(Error::invalid(
                    "compile",
                    format!("value {} is bound to a tensor of another device", var.index),
                ));
            }
            bound_tensors.insert(var.index, tensor.clone());
        }
        // A parameter's gradient among the outputs is written to the parameter's gradient
        // tensor, where an optimizer finds it.
        for &output in outputs {
            let parameter = self
                .parameter_gradients
                .iter()
                .find(|&(_, &grad)| grad == output)
                .and_then(|(&index, _)| self.parameter_of(self.var(index)));
            if let Some(parameter) = parameter {
                bound_tensors.insert(output.index, parameter.gradient()?.clone());
            }
        }
        // The values asked for: the outputs, and the values bound to a tensor (binding says
        // where to write them). They must be written, so no fusion may skip them.
        let mut kept_apart = vec![false; self.values.len()];
        for v in outputs
            .iter()
            .map(|v| v.index)
            .chain(bound_tensors.keys().copied())
        {
            kept_apart[v] = true;
        }
        // Which nodes the outputs need, walking back from them.
        let mut needed = kept_apart.clone();
        let mut live = vec![false; self.nodes.len()];
        for (index, node) in self.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|v| needed[v.index]) {
                live[index] = true;
                // Every output of a live node is written, even one nobody reads (an argmax
                // without a backward), so it needs storage too.
                for v in node.inputs.iter().chain(&node.outputs) {
                    needed[v.index] = true;
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
                root[node.outputs[0].index] = root[node.inputs[0].index];
            }
        }
        // A bound reshape binds the value it reshapes, to the tensor seen with that shape.
        let mut bound_roots: HashMap<usize, Tensor> = HashMap::new();
        for (&v, tensor) in &bound_tensors {
            let r = root[v];
            let tensor = tensor.reshape(&self.values[r].shape)?;
            // A write in place and its cache share their storage: both may be bound to it.
            let same = |earlier: &Tensor| Arc::ptr_eq(earlier.buffer(), tensor.buffer());
            if bound_roots
                .insert(r, tensor.clone())
                .is_some_and(|earlier| !same(&earlier))
            {
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
            persistent[root[v.index]] = true;
        }
        for &v in bound_tensors.keys() {
            persistent[v] = true;
        }
        // The position (among live nodes) of the last node reading each root.
        let mut last_use = vec![None; self.values.len()];
        for (position, node) in live_nodes.iter().enumerate() {
            for v in &node.inputs {
                last_use[root[v.index]] = Some(position);
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
                    Source::Parameter { parameter } => parameter.value().clone(),
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
                let value = &self.values[out.index];
                let bytes = numel(&value.shape)? as u64 * 4;
                let r = root[out.index];
                if r != out.index {
                    output_tensors.push(match value.dtype {
                        DType::U32 => indices(&storage, r, &value.shape)?,
                        DType::F32 => Operand::F32(view(&gpu, &storage, &shared, r, &value.shape)?),
                    });
                    continue;
                }
                memory.naive_bytes += bytes;
                if value.dtype == DType::U32 {
                    memory.peak_bytes += bytes;
                    output_tensors.push(indices(&storage, r, &value.shape)?);
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
                .map(|v| match self.values[v.index].dtype {
                    DType::U32 => indices(&storage, root[v.index], &self.values[v.index].shape),
                    DType::F32 => Ok(Operand::F32(view(
                        &gpu,
                        &storage,
                        &shared,
                        root[v.index],
                        &self.values[v.index].shape,
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
                .map(|v| root[v.index])
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
                Some(Operand::U32(i)) => Some(Operand::U32(i.reshape(&value.shape)?)),
                _ => None,
            };
            values.insert(
                self.var(v),
                Slot {
                    shape: value.shape.clone(),
                    dtype: value.dtype,
                    role: match &value.source {
                        Source::Input { name } => Role::Input {
                            name: name.clone(),
                            bound: bound_tensors.contains_key(&v),
                        },
                        Source::Parameter { parameter } => Role::Parameter {
                            name: parameter.name().to_string(),
                        },
                        Source::Constant { .. } | Source::Computed => Role::Computed,
                    },
                    index_bound: value.index_bound,
                    storage: kept,
                },
            );
        }
        // Inputs compile pruned (no output needs them) may still be fed: a run ignores them.
        let pruned_inputs = (0..self.values.len())
            .filter(|&v| !needed[v])
            .filter_map(|v| match &self.values[v].source {
                Source::Input { name } => Some((self.var(v), name.clone())),
                _ => None,
            })
            .collect();
        let mut required_inputs: Vec<Var> = values
            .iter()
            .filter(|(_, slot)| {
                matches!(slot.role, Role::Input { bound: false, .. })
                    && slot.shape.iter().product::<usize>() > 0
            })
            .map(|(&var, _)| var)
            .collect();
        required_inputs.sort();
        Ok(Plan {
            gpu,
            graph: self.id(),
            required_inputs,
            dispatches,
            values,
            pruned_inputs,
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
            readers[v.index] += 1;
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
            let at = *products.get(&product.index)?;
            // The matmul runs earlier than this node: the mask must exist by then.
            let mask_ready = mask.is_none_or(|h| computed_at.get(&h.index).is_none_or(|&p| p < at));
            (readers[product.index] == 1 && !kept_apart[product.index] && mask_ready)
                .then_some((at, fusion, mask))
        });
        let Some((at, fusion, mask)) = target else {
            let position = fused.len();
            for v in &node.outputs {
                computed_at.insert(v.index, position);
            }
            if let Op::MatMul {
                fused: MatMulFusion::Plain,
                ..
            } = node.op
            {
                products.insert(node.outputs[0].index, position);
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
            computed_at.insert(v.index, at);
        }
        matmul.outputs = node.outputs;
        fused.push(None);
    }
    fused.into_iter().flatten().collect()
}

/// The u32 value `r`, which has its own buffer.
/// The u32 value of root `r`, viewed with `shape` (a reshape of it shares its buffer).
fn indices(storage: &HashMap<usize, Operand>, r: usize, shape: &[usize]) -> Result<Operand> {
    match storage.get(&r) {
        Some(Operand::U32(indices)) => Ok(Operand::U32(indices.reshape(shape)?)),
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
    ///
    /// Every input the plan reads must be fed, each run (an input bound to a tensor at
    /// compile is written by the tensor's owner instead, and one of no elements has nothing
    /// to feed); an input that compile pruned may be fed, and is ignored. Every feed is checked before any is written: a value of
    /// another graph, a value that is not an input, an input fed twice, a wrong element
    /// type or count, or an index out of its range is an error naming the input, and the
    /// plan's buffers are left as they were.
    pub fn run(&mut self, feeds: &[Feed], extra: &[Dispatch]) -> Result<()> {
        let mut written: Vec<(&Feed, &Slot)> = Vec::with_capacity(feeds.len());
        for feed in feeds {
            if let Some(slot) = self.checked_feed(feed)? {
                if written.iter().any(|(other, _)| other.var() == feed.var()) {
                    return Err(Error::invalid(
                        "run",
                        format!("input {} is fed twice", slot.describe(feed.var())),
                    ));
                }
                written.push((feed, slot));
            }
        }
        let unfed: Vec<String> = self
            .required_inputs
            .iter()
            .filter(|&&var| !written.iter().any(|(feed, _)| feed.var() == var))
            .map(|&var| self.describe(var))
            .collect();
        if !unfed.is_empty() {
            return Err(Error::invalid(
                "run",
                format!(
                    "the plan reads {} but this run does not feed {}: every run feeds each \
                     input the plan reads",
                    unfed.join(", "),
                    if unfed.len() == 1 { "it" } else { "them" }
                ),
            ));
        }
        for (feed, slot) in &written {
            self.write(feed, slot)?;
        }
        self.gpu.submit_lists(&[&self.dispatches, extra])
    }

    /// The plan's dispatches in submission order, for profiling (time each alone with
    /// [`Gpu::submit_timed`](crate::Gpu::submit_timed)).
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Errors unless `var` is a value of the graph this plan was compiled from.
    fn check(&self, op: &'static str, var: Var) -> Result<()> {
        if var.graph == self.graph {
            Ok(())
        } else {
            Err(Error::invalid(
                op,
                format!(
                    "value {} of {} was given to a plan of {}: a plan knows only the values \
                     of the graph it was compiled from",
                    var.index, var.graph, self.graph
                ),
            ))
        }
    }

    /// The input a feed writes, after checking the feed against it; `None` for an input
    /// compile pruned (the feed is ignored).
    fn checked_feed(&self, feed: &Feed) -> Result<Option<&Slot>> {
        let (var, len, dtype) = match feed {
            Feed::F32(var, data) => (*var, data.len(), DType::F32),
            Feed::U32(var, data) => (*var, data.len(), DType::U32),
            Feed::I64(var, data) => (*var, data.len(), DType::U32),
        };
        self.check("run", var)?;
        if self.pruned_inputs.contains_key(&var) {
            return Ok(None);
        }
        let slot = self
            .values
            .get(&var)
            .filter(|slot| matches!(slot.role, Role::Input { .. }))
            .ok_or_else(|| {
                Error::invalid(
                    "run",
                    format!(
                        "value {} is not an input of this plan: only inputs are fed",
                        var.index
                    ),
                )
            })?;
        if let Role::Input { bound: true, .. } = slot.role {
            return Err(Error::invalid(
                "run",
                format!(
                    "input {} was bound to a tensor at compile: write that tensor instead",
                    slot.describe(var)
                ),
            ));
        }
        let expected = numel(&slot.shape)?;
        if slot.dtype != dtype || len != expected {
            return Err(Error::invalid(
                "run",
                format!(
                    "input {} is {:?} of shape {:?} ({expected} values), the feed has {len} \
                     {dtype:?} values",
                    slot.describe(var),
                    slot.dtype,
                    slot.shape
                ),
            ));
        }
        let input = slot.describe(var);
        match (feed, slot.index_bound) {
            (Feed::U32(_, data), Some(bound)) => {
                check_indices(data.iter().map(|&v| i64::from(v)), bound, &input)?
            }
            (Feed::I64(_, data), Some(bound)) => {
                check_indices(data.iter().copied(), bound, &input)?
            }
            (Feed::I64(_, data), None) => check_u32_range(data, &input)?,
            _ => {}
        }
        Ok(Some(slot))
    }

    /// Writes a checked feed into its input's buffer.
    fn write(&self, feed: &Feed, slot: &Slot) -> Result<()> {
        match (feed, &slot.storage) {
            (Feed::F32(_, data), Some(Operand::F32(t))) => self.gpu.write(t.buffer(), data),
            (Feed::U32(var, data), Some(Operand::U32(i))) => self.write_indices(*var, data, i)?,
            (Feed::I64(var, data), Some(Operand::U32(i))) => {
                // Checked: each value is a u32, a class, or the ignore index (in i32).
                let bits: Vec<u32> = data.iter().map(|&v| v as u32).collect();
                self.write_indices(*var, &bits, i)?
            }
            _ => unreachable!("storage matches the checked dtype"),
        }
        Ok(())
    }

    /// Writes fed indices, and regroups the gathers that read them.
    fn write_indices(&self, var: Var, data: &[u32], indices: &Indices) -> Result<()> {
        for (_, grouping) in self.groupings.iter().filter(|(v, _)| *v == var) {
            grouping.update(data)?;
        }
        self.gpu.write(indices.buffer(), data);
        Ok(())
    }

    /// The input or parameter called `name`, to feed or read by name.
    pub fn value(&self, name: &str) -> Result<Var> {
        let named = self
            .values
            .iter()
            .filter_map(|(&var, slot)| match &slot.role {
                Role::Input { name, .. } | Role::Parameter { name } => Some((var, name)),
                Role::Computed => None,
            })
            .chain(self.pruned_inputs.iter().map(|(&var, name)| (var, name)));
        let mut known = Vec::new();
        for (var, candidate) in named {
            if candidate == name {
                return Ok(var);
            }
            known.push(candidate.as_str());
        }
        known.sort_unstable();
        Err(Error::invalid(
            "plan",
            format!(
                "no input or parameter is called {name:?}; the plan has {}",
                known.join(", ")
            ),
        ))
    }

    /// Downloads a persistent value: a leaf or one of the outputs given to compile.
    pub fn read(&self, var: Var) -> Result<Vec<f32>> {
        self.tensor(var)?.to_vec()
    }

    /// [`Plan::read`] with the value's shape.
    pub fn fetch(&self, var: Var) -> Result<HostTensor<f32>> {
        let tensor = self.tensor(var)?;
        Ok(HostTensor {
            shape: tensor.shape().to_vec(),
            data: tensor.to_vec()?,
        })
    }

    /// Downloads a u32 value: an input, or a computed one such as argmax positions (every
    /// u32 value keeps its own buffer, so any the plan computes can be read).
    pub fn read_indices(&self, var: Var) -> Result<Vec<u32>> {
        Ok(self.fetch_indices(var)?.data)
    }

    /// [`Plan::read_indices`] with the value's shape.
    pub fn fetch_indices(&self, var: Var) -> Result<HostTensor<u32>> {
        self.check("read", var)?;
        match self.values.get(&var).map(|slot| (slot, &slot.storage)) {
            Some((slot, Some(Operand::U32(indices)))) => Ok(HostTensor {
                shape: slot.shape.clone(),
                data: indices.to_vec()?,
            }),
            _ => Err(Error::invalid(
                "read",
                format!("{} is not a u32 value of this plan", self.describe(var)),
            )),
        }
    }

    /// The GPU tensor of a persistent f32 value (a parameter, a requested output).
    pub fn tensor(&self, var: Var) -> Result<&Tensor> {
        self.check("read", var)?;
        match self.values.get(&var).and_then(|slot| slot.storage.as_ref()) {
            Some(Operand::F32(t)) => Ok(t),
            _ => Err(Error::invalid(
                "read",
                format!(
                    "{} has no buffer of its own: only leaves and the outputs given to \
                     compile can be read (name it among compile's outputs)",
                    self.describe(var)
                ),
            )),
        }
    }

    /// A value of this plan's graph in messages, named where it has a name.
    fn describe(&self, var: Var) -> String {
        match (self.values.get(&var), self.pruned_inputs.get(&var)) {
            (Some(slot), _) => slot.describe(var),
            (None, Some(name)) => format!("{name:?} (value {}, pruned by compile)", var.index),
            (None, None) => format!("value {}", var.index),
        }
    }

    /// (parameter tensor, gradient tensor) for every parameter `grads` holds a gradient of,
    /// in parameter order: what [`crate::optim::Optimizer::new`] updates, so that an
    /// optimizer connects to a plan in one call. The gradients must be among compile's
    /// outputs ([`Gradients::parameter_gradients`]); an error names a parameter whose
    /// gradient is not.
    pub fn parameter_pairs(&self, grads: &Gradients) -> Result<Vec<(Tensor, Tensor)>> {
        grads
            .parameters()
            .into_iter()
            .map(|(parameter, grad)| {
                let gradient = self.tensor(grad).map_err(|_| {
                    Error::invalid(
                        "optimizer",
                        format!(
                            "the gradient of parameter {} was not among compile's outputs: \
                             add grads.parameter_gradients() to them",
                            self.describe(parameter)
                        ),
                    )
                })?;
                Ok((self.tensor(parameter)?.clone(), gradient.clone()))
            })
            .collect()
    }

    /// Every parameter the plan uses, (name, tensor), in the order they were made.
    pub fn parameters(&self) -> Vec<(&str, &Tensor)> {
        let mut parameters: Vec<(Var, &str, &Tensor)> = self
            .values
            .iter()
            .filter_map(|(&var, slot)| match (&slot.role, &slot.storage) {
                (Role::Parameter { name }, Some(Operand::F32(t))) => Some((var, name.as_str(), t)),
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
        load_named(checkpoint, &self.parameters())
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

/// Overwrites each `(name, tensor)` with the checkpoint's tensor of that name, after
/// checking that the checkpoint holds exactly these names and shapes besides an optimizer's
/// state (under [`OPTIMIZER_PREFIX`]): the error names the first tensor that differs, and
/// nothing is written unless everything matches.
pub(crate) fn load_named(checkpoint: &Checkpoint, parameters: &[(&str, &Tensor)]) -> Result<()> {
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
        tensor
            .gpu()
            .write(tensor.buffer(), checkpoint.get(name)?.as_f32()?);
    }
    Ok(())
}

/// Every index below `bound.bound` or equal to the ignore value; else an error naming the
/// first that is not.
fn check_indices(data: impl Iterator<Item = i64>, bound: IndexBound, input: &str) -> Result<()> {
    let outside = |v: i64| !(0..i64::from(bound.bound)).contains(&v) && Some(v) != bound.ignore;
    match data.enumerate().find(|&(_, v)| outside(v)) {
        None => Ok(()),
        Some((position, value)) => Err(Error::invalid(
            "run",
            format!(
                "input {input}: index {value} at position {position} is out of range: expected \
                 0..{}{}",
                bound.bound,
                bound
                    .ignore
                    .map(|i| format!(" or the ignore value {i}"))
                    .unwrap_or_default()
            ),
        )),
    }
}

/// Every value of an i64 feed to a u32 input that no op bounds fits in a u32.
fn check_u32_range(data: &[i64], input: &str) -> Result<()> {
    match data.iter().position(|&v| u32::try_from(v).is_err()) {
        None => Ok(()),
        Some(position) => Err(Error::invalid(
            "run",
            format!(
                "input {input}: value {} at position {position} does not fit the input's u32 \
                 (0..={})",
                data[position],
                u32::MAX
            ),
        )),
    }
}
