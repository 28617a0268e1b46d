//! [`Parameter`]: a trained tensor that lives outside any one graph. Every graph that uses
//! it ([`Graph::param`]) reads the same values, and every plan that computes its gradient
//! writes it to the same gradient tensor, so a model trained by the plan of one batch shape
//! is served by the plan of another, and one optimizer trains them all.

use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{numel, Tensor};

/// A named trained tensor and its gradient. Cheap to clone: clones are the same parameter.
#[derive(Clone)]
pub struct Parameter(Arc<Inner>);

struct Inner {
    name: String,
    value: Tensor,
    /// Made (zeros) the first time a plan or an optimizer asks for it, so that a parameter
    /// only ever served costs no gradient memory.
    gradient: OnceLock<Tensor>,
}

impl std::fmt::Debug for Parameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Parameter({:?}, {:?})", self.name(), self.shape())
    }
}

impl Parameter {
    /// A parameter `name` of `shape` holding `values` (the shape's size of them).
    pub fn new(gpu: &Gpu, name: &str, shape: &[usize], values: &[f32]) -> Result<Parameter> {
        let n = numel(shape)?;
        if values.len() != n {
            return Err(Error::ShapeMismatch {
                op: "parameter",
                lhs: vec![values.len()],
                rhs: shape.to_vec(),
                expected: format!("parameter {name:?} of shape {shape:?} needs {n} values"),
            });
        }
        Ok(Parameter(Arc::new(Inner {
            name: name.to_string(),
            value: Tensor::from_slice(gpu, values, shape)?,
            gradient: OnceLock::new(),
        })))
    }

    /// The name checkpoints key on, e.g. `"encoder.weight_ih_l0"`.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The shape of the values.
    pub fn shape(&self) -> &[usize] {
        self.0.value.shape()
    }

    /// How many numbers the parameter holds.
    pub fn numel(&self) -> usize {
        self.0.value.numel()
    }

    /// The current values on the GPU, which an optimizer updates in place.
    pub fn value(&self) -> &Tensor {
        &self.0.value
    }

    /// The gradient tensor (the values' shape) that training plans write and an optimizer
    /// reads; zeros until a plan first writes it.
    pub fn gradient(&self) -> Result<&Tensor> {
        if let Some(gradient) = self.0.gradient.get() {
            return Ok(gradient);
        }
        let zeros = Tensor::zeros(self.0.value.gpu(), self.shape())?;
        Ok(self.0.gradient.get_or_init(|| zeros))
    }

    /// Downloads the values.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.0.value.to_vec()
    }

    /// Overwrites the values with `values` (the shape's size of them).
    pub fn set(&self, values: &[f32]) -> Result<()> {
        if values.len() != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "parameter",
                lhs: vec![values.len()],
                rhs: self.shape().to_vec(),
                expected: format!(
                    "parameter {:?} of shape {:?} holds {} values",
                    self.name(),
                    self.shape(),
                    self.numel()
                ),
            });
        }
        self.0.value.gpu().write(self.0.value.buffer(), values);
        Ok(())
    }

    /// Whether `self` and `other` are the same parameter (clones of one another).
    pub fn same(&self, other: &Parameter) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
