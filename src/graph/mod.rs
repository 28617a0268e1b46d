//! The static graph: a model is built once as ops over [`Var`] handles, differentiated by
//! [`Graph::backward`] (a graph transformation that appends gradient nodes), and compiled
//! by [`Graph::compile`] into a [`Plan`] whose every step is one GPU submission.
//!
//! ```no_run
//! use shadergrad::graph::{Feed, Graph};
//! use shadergrad::Gpu;
//!
//! let gpu = Gpu::default_adapter()?;
//! let mut g = Graph::new(&gpu);
//! let x = g.input("x", &[4, 2]);
//! let labels = g.input_indices("labels", &[4]);
//! let w = g.parameter("w", &[2, 2], vec![0.1, -0.2, 0.3, 0.4])?;
//! let logits = g.matmul(x, w)?;
//! let loss = g.cross_entropy(logits, labels)?;
//! let grads = g.backward(loss)?;
//! let mut plan = g.compile(&[loss, grads.of(w)?])?;
//! plan.run(&[Feed::f32(x, &[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]), Feed::u32(labels, &[0, 1, 1, 0])], &[])?;
//! println!("loss {:?}", plan.read(loss)?);
//! # Ok::<(), shadergrad::Error>(())
//! ```
//!
//! - `mod.rs` (this file): values and nodes, the leaves ([`Graph::parameter`],
//!   [`Graph::input`], [`Graph::input_indices`], [`Graph::constant`]) and `push`, which
//!   adds an op's node once its shape rule accepts the inputs;
//! - `ops/`: the ops, one file per kernel family; everything about an op sits in its
//!   family's file: its builder call on `Graph` (such as [`Graph::matmul`]) with the option
//!   types it takes, its shape rule, its backward rule and the kernels it records
//!   (`ops/mod.rs` lists the files and says how to add an op);
//! - `autodiff.rs`: [`Graph::backward`];
//! - `plan.rs`: [`Graph::compile`] and [`Plan::run`].

mod autodiff;
mod ops;
mod parameter;
mod plan;

pub use autodiff::Gradients;
pub use ops::{
    AttentionSpec, ConvLayout, CrossEntropySpec, GemmSpec, MatMulFusion, Op, RecurrentOutput,
    RecurrentSpec,
};
pub use parameter::Parameter;
pub(crate) use plan::load_named;
pub use plan::{Feed, HostTensor, MemoryReport, Plan, OPTIMIZER_PREFIX};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::numel;

/// A value of the graph: a leaf (parameter, input, constant) or an op's output. It knows
/// the graph it belongs to: given to another graph, or to another graph's plan, it is an
/// error naming both, never another value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var {
    pub(crate) graph: GraphId,
    pub(crate) index: usize,
}

/// A graph's own number, which its [`Var`]s carry; each [`Graph::new`] takes the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GraphId(u64);

impl std::fmt::Display for GraphId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "graph #{}", self.0)
    }
}

/// The number the next graph takes.
static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

/// The element type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit floats: activations, parameters, gradients, a [`crate::Tensor`] on the GPU.
    F32,
    /// Token ids, class labels: [`crate::Indices`] on the GPU.
    U32,
}

/// Where a value comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Trained; its values and gradient live in the parameter's tensors, which every
    /// plan using it shares.
    Parameter { parameter: Parameter },
    /// Fed at every run.
    Input { name: String },
    /// Fixed values.
    Constant { data: Vec<f32> },
    /// An op's output.
    Computed,
}

/// Which values an index input may hold: below `bound`, or exactly `ignore` (which may be
/// negative, for targets fed as i64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexBound {
    pub bound: u32,
    pub ignore: Option<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Value {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub source: Source,
    /// Whether a gradient can flow from this value back to a parameter.
    pub needs_grad: bool,
    pub index_bound: Option<IndexBound>,
}

/// One op applied to input values, producing output values.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub op: Op,
    pub inputs: Vec<Var>,
    pub outputs: Vec<Var>,
}

/// A model under construction: values and the nodes that compute them, in the order they
/// were added (which is a topological order, since a node only takes existing values).
#[derive(Debug, Clone)]
pub struct Graph {
    gpu: Gpu,
    id: GraphId,
    pub(crate) values: Vec<Value>,
    pub(crate) nodes: Vec<Node>,
    /// The gradient [`Graph::backward`] last computed for each parameter leaf (by value
    /// index): compiled as an output, it is written to the parameter's gradient tensor.
    pub(crate) parameter_gradients: HashMap<usize, Var>,
    /// Values whose storage a [`Graph::write_at`] has overwritten (a cache and its
    /// reshapes): refused as the input of any later node.
    pub(crate) overwritten: HashSet<usize>,
}

impl Graph {
    /// An empty graph whose plans will run on `gpu`.
    pub fn new(gpu: &Gpu) -> Graph {
        Graph {
            gpu: gpu.clone(),
            id: GraphId(NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed)),
            values: Vec::new(),
            nodes: Vec::new(),
            parameter_gradients: HashMap::new(),
            overwritten: HashSet::new(),
        }
    }

    /// The device the graph's plans run on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// This graph's number, which its values carry.
    pub fn id(&self) -> GraphId {
        self.id
    }

    /// Errors unless `var` is a value of this graph; `op` names the call in the message.
    pub fn check(&self, op: &'static str, var: Var) -> Result<()> {
        if var.graph == self.id && var.index < self.values.len() {
            Ok(())
        } else {
            Err(Error::invalid(
                op,
                format!(
                    "value {} of {} was given to {}: a value belongs to the graph that made it",
                    var.index, var.graph, self.id
                ),
            ))
        }
    }

    /// [`Graph::check`] of every value of `vars`.
    pub(crate) fn check_each(&self, op: &'static str, vars: &[Var]) -> Result<()> {
        vars.iter().try_for_each(|&var| self.check(op, var))
    }

    /// The value behind `var`.
    ///
    /// # Panics
    /// If `var` is not a value of this graph (see [`Graph::check`]): the accessors
    /// ([`Graph::shape`], [`Graph::dtype`], [`Graph::name`]) cannot return an error.
    fn value(&self, var: Var) -> &Value {
        match self.check("graph", var) {
            Ok(()) => &self.values[var.index],
            Err(error) => panic!("{error}"),
        }
    }

    /// The shape of a value.
    ///
    /// # Panics
    /// If `var` belongs to another graph.
    pub fn shape(&self, var: Var) -> &[usize] {
        &self.value(var).shape
    }

    /// The element type of a value.
    ///
    /// # Panics
    /// If `var` belongs to another graph.
    pub fn dtype(&self, var: Var) -> DType {
        self.value(var).dtype
    }

    /// The name of a parameter or input, `None` for other values.
    ///
    /// # Panics
    /// If `var` belongs to another graph.
    pub fn name(&self, var: Var) -> Option<&str> {
        match &self.value(var).source {
            Source::Parameter { parameter } => Some(parameter.name()),
            Source::Input { name } => Some(name),
            _ => None,
        }
    }

    /// Every parameter, in the order they were made.
    pub fn parameters(&self) -> Vec<Var> {
        (0..self.values.len())
            .filter(|&i| matches!(self.values[i].source, Source::Parameter { .. }))
            .map(|index| self.var(index))
            .collect()
    }

    /// How many ops the graph holds.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn leaf(&mut self, shape: &[usize], dtype: DType, source: Source, needs_grad: bool) -> Var {
        self.values.push(Value {
            shape: shape.to_vec(),
            dtype,
            source,
            needs_grad,
            index_bound: None,
        });
        self.var(self.values.len() - 1)
    }

    /// The handle of this graph's value number `index`.
    pub(crate) fn var(&self, index: usize) -> Var {
        Var {
            graph: self.id,
            index,
        }
    }

    /// A new trained parameter with its initial values (`init.len()` = the shape's size),
    /// made on this graph's device: [`Graph::param`] of [`Parameter::new`]. Names must be
    /// unique within a graph: they key checkpoints.
    pub fn parameter(&mut self, name: &str, shape: &[usize], init: Vec<f32>) -> Result<Var> {
        let parameter = Parameter::new(&self.gpu, name, shape, &init)?;
        self.param(&parameter)
    }

    /// `parameter` as a value of this graph (the same value each time it is asked for):
    /// plans compiled from the graph read its tensor, and write its gradient, when named
    /// among compile's outputs, to its gradient tensor. An error if another parameter of
    /// the same name is in the graph, or the parameter lives on another device.
    pub fn param(&mut self, parameter: &Parameter) -> Result<Var> {
        for (index, value) in self.values.iter().enumerate() {
            if let Source::Parameter { parameter: known } = &value.source {
                if known.same(parameter) {
                    return Ok(self.var(index));
                }
                if known.name() == parameter.name() {
                    return Err(Error::invalid(
                        "parameter",
                        format!(
                            "the name {:?} is already taken by another parameter",
                            parameter.name()
                        ),
                    ));
                }
            }
        }
        if !parameter.value().gpu().same_device(&self.gpu) {
            return Err(Error::invalid(
                "parameter",
                format!(
                    "parameter {:?} lives on another device than the graph's",
                    parameter.name()
                ),
            ));
        }
        let source = Source::Parameter {
            parameter: parameter.clone(),
        };
        Ok(self.leaf(parameter.shape(), DType::F32, source, true))
    }

    /// The [`Parameter`] behind a parameter value of this graph, `None` for other values.
    pub fn parameter_of(&self, var: Var) -> Option<&Parameter> {
        self.check("parameter_of", var).ok()?;
        match &self.values[var.index].source {
            Source::Parameter { parameter } => Some(parameter),
            _ => None,
        }
    }

    /// An f32 input, fed at every run.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Var {
        let source = Source::Input {
            name: name.to_string(),
        };
        self.leaf(shape, DType::F32, source, false)
    }

    /// An f32 input, fed at every run, whose gradient [`Graph::backward`] computes too (an
    /// input's gradient for a saliency map, an adversarial example, or the gradient a
    /// model embedded in a larger one passes back to it).
    pub fn differentiable_input(&mut self, name: &str, shape: &[usize]) -> Var {
        let source = Source::Input {
            name: name.to_string(),
        };
        self.leaf(shape, DType::F32, source, true)
    }

    /// A u32 input (token ids, class labels), fed at every run.
    pub fn input_indices(&mut self, name: &str, shape: &[usize]) -> Var {
        let source = Source::Input {
            name: name.to_string(),
        };
        self.leaf(shape, DType::U32, source, false)
    }

    /// Fixed f32 values.
    pub fn constant(&mut self, data: Vec<f32>, shape: &[usize]) -> Result<Var> {
        let n = numel(shape)?;
        if data.len() != n {
            return Err(Error::ShapeMismatch {
                op: "constant",
                lhs: vec![data.len()],
                rhs: shape.to_vec(),
                expected: format!("the shape holds {n} values"),
            });
        }
        Ok(self.leaf(shape, DType::F32, Source::Constant { data }, false))
    }

    /// Adds a node after checking its inputs with the op's shape rule; returns its outputs.
    pub(crate) fn push(&mut self, op: Op, inputs: &[Var]) -> Result<Vec<Var>> {
        for &input in inputs {
            self.check(op.name(), input)?;
            if self.overwritten.contains(&input.index) {
                return Err(Error::invalid(
                    op.name(),
                    format!(
                        "value {} was overwritten in place by write_at: use write_at's result",
                        input.index
                    ),
                ));
            }
        }
        let shapes: Vec<(&[usize], DType)> = inputs
            .iter()
            .map(|&v| {
                (
                    self.values[v.index].shape.as_slice(),
                    self.values[v.index].dtype,
                )
            })
            .collect();
        let outputs = op.infer(&shapes)?;
        let differentiable = op.differentiable_outputs();
        let needs_grad = inputs.iter().any(|v| self.values[v.index].needs_grad);
        let mut vars = Vec::with_capacity(outputs.len());
        for (i, (shape, dtype)) in outputs.into_iter().enumerate() {
            self.values.push(Value {
                shape,
                dtype,
                source: Source::Computed,
                needs_grad: needs_grad && differentiable.get(i).copied().unwrap_or(false),
                index_bound: None,
            });
            vars.push(self.var(self.values.len() - 1));
        }
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            outputs: vars.clone(),
        });
        Ok(vars)
    }

    pub(crate) fn push_one(&mut self, op: Op, inputs: &[Var]) -> Result<Var> {
        Ok(self.push(op, inputs)?[0])
    }
}

/// `name: shape mismatch` for ops whose operands disagree.
pub(crate) fn mismatch(op: &'static str, lhs: &[usize], rhs: &[usize], expected: String) -> Error {
    Error::ShapeMismatch {
        op,
        lhs: lhs.to_vec(),
        rhs: rhs.to_vec(),
        expected,
    }
}
