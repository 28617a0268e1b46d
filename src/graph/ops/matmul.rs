//! The matmul's rules: `MatMul`, whose backward is two more matmuls (`kernels::matmul`).

use crate::error::Result;
use crate::kernels::elementwise::Binary;
use crate::kernels::matmul::{gemm_dispatch, Epilogue, GemmOperands, GemmShape, MatmulVariant};
use crate::tensor::Tensor;

use super::super::{mismatch, DType, Graph, Var};
use super::{check_inputs, f32_output, NodeGradient, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// a·b for a [batch…, M, K] and b [batch…, K, N]: the same batch axes, or a matrix
    /// (rank 2) on either side shared by every batch of the other.
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.gemm(a, b, GemmSpec::new())
    }

    /// op(a)·op(b) + bias, batched as [`Graph::matmul`], with op a transpose of the last two
    /// axes where `spec` asks and bias a row vector of N:
    /// `g.gemm(x, w, GemmSpec::new().transpose_b().bias(b))` is x·wᵀ + b.
    pub fn gemm(&mut self, a: Var, b: Var, spec: GemmSpec) -> Result<Var> {
        let mut inputs = vec![a, b];
        inputs.extend(spec.bias);
        self.push_one(
            Op::MatMul {
                trans_a: spec.transpose_a,
                trans_b: spec.transpose_b,
                bias: spec.bias.is_some(),
                fused: MatMulFusion::Plain,
            },
            &inputs,
        )
    }
}

/// How [`Graph::gemm`] reads its operands and what it adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GemmSpec {
    /// Read a with its last two axes swapped.
    pub transpose_a: bool,
    /// Read b with its last two axes swapped.
    pub transpose_b: bool,
    /// A row vector of N added to every row of the product.
    pub bias: Option<Var>,
}

impl GemmSpec {
    /// a·b as given, no bias.
    pub fn new() -> Self {
        GemmSpec::default()
    }

    /// Reads a transposed (its last two axes swapped).
    pub fn transpose_a(self) -> Self {
        GemmSpec {
            transpose_a: true,
            ..self
        }
    }

    /// Reads b transposed (its last two axes swapped).
    pub fn transpose_b(self) -> Self {
        GemmSpec {
            transpose_b: true,
            ..self
        }
    }

    /// Adds `bias`, a row vector of N, to every row.
    pub fn bias(self, bias: Var) -> Self {
        GemmSpec {
            bias: Some(bias),
            ..self
        }
    }
}

/// The spec of a product whose transposes the backward rule computes.
fn transposes(transpose_a: bool, transpose_b: bool) -> GemmSpec {
    GemmSpec {
        transpose_a,
        transpose_b,
        bias: None,
    }
}

/// What `compile` fused into a matmul (`fuse_relus` in plan.rs), saving a pass over its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatMulFusion {
    /// Nothing fused: the product is stored as it is.
    Plain,
    /// relu(product): the ReLU that alone read the product.
    Relu,
    /// relu'(h) ⊙ product, h the ReLU output fed as the last input: the gradient through
    /// a ReLU, computed from the product (dy) that it alone read.
    ReluGrad,
}

pub(super) fn infer_matmul(
    op: &'static str,
    trans_a: bool,
    trans_b: bool,
    bias: bool,
    fused: MatMulFusion,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    let operands = 2 + usize::from(bias) + usize::from(fused == MatMulFusion::ReluGrad);
    check_inputs(op, inputs, &vec![DType::F32; operands])?;
    let (a, b) = (inputs[0].0, inputs[1].0);
    if a.len() < 2 || b.len() < 2 {
        return Err(mismatch(
            op,
            a,
            b,
            "both operands need at least 2 axes: [batch…, rows, columns]".into(),
        ));
    }
    let (a_batch, a_matrix) = a.split_at(a.len() - 2);
    let (b_batch, b_matrix) = b.split_at(b.len() - 2);
    let batch = if b_batch.is_empty() || a_batch == b_batch {
        a_batch
    } else if a_batch.is_empty() {
        b_batch
    } else {
        return Err(mismatch(
            op,
            a,
            b,
            "the batch axes must be equal, or one operand a matrix shared by every batch".into(),
        ));
    };
    let (m, k) = if trans_a {
        (a_matrix[1], a_matrix[0])
    } else {
        (a_matrix[0], a_matrix[1])
    };
    let (k_b, n) = if trans_b {
        (b_matrix[1], b_matrix[0])
    } else {
        (b_matrix[0], b_matrix[1])
    };
    if k != k_b {
        return Err(mismatch(
            op,
            a,
            b,
            format!("the inner dimensions differ: {k} and {k_b}"),
        ));
    }
    let mut out = batch.to_vec();
    out.extend([m, n]);
    if bias && inputs[2].0 != [n] {
        return Err(mismatch(
            op,
            inputs[2].0,
            &out,
            format!("the bias must be [{n}], one value per output column"),
        ));
    }
    f32_output(out)
}

/// With Ā = op(A), B̄ = op(B): dĀ = dC·B̄ᵀ and dB̄ = Āᵀ·dC, transposed back where A or B
/// was, batch by batch. An operand shared by every batch gets the sum of its per-batch
/// gradients. A fused ReLU first masks dy where its output is positive (no gradient reaches
/// a fused gradient's mask, which is constant but at 0).
pub(super) fn backward_matmul(
    g: &mut Graph,
    node: NodeGradient,
    trans_a: bool,
    trans_b: bool,
    bias: bool,
    fused: MatMulFusion,
) -> Result<Vec<Option<Var>>> {
    let NodeGradient {
        inputs,
        outputs,
        dy,
    } = node;
    let y = outputs[0];
    let dy = match fused {
        MatMulFusion::Plain => dy,
        MatMulFusion::Relu => g.zip(y, dy, Binary::ReluGrad)?,
        MatMulFusion::ReluGrad => g.zip(inputs[inputs.len() - 1], dy, Binary::ReluGrad)?,
    };
    let (a, b) = (inputs[0], inputs[1]);
    let a_shape = g.shape(a).to_vec();
    let y_shape = g.shape(y).to_vec();
    let n = y_shape[y_shape.len() - 1];
    let rows = y_shape[..y_shape.len() - 1].iter().product();
    let batched = y_shape.len() > 2;
    let a_shared = batched && a_shape.len() == 2;
    let b_shared = batched && g.shape(b).len() == 2;
    // Σ_b A_bᵀ·dC_b is one product of A and dC seen as [batches·M, K] and
    // [batches·M, N] (free reshapes) when A is not transposed.
    let (a_rows, dy_rows) = if b_shared && !trans_a {
        let k = a_shape[a_shape.len() - 1];
        (g.reshape(a, &[rows, k])?, g.reshape(dy, &[rows, n])?)
    } else {
        (a, dy)
    };
    let da = if trans_a {
        g.gemm(b, dy, transposes(trans_b, true))?
    } else if !trans_b && g.gpu().is_cpu_like() && !multiplies_by_transposed_in_place(g, dy, b) {
        // dy·Bᵀ with B transposed once by a copy: the blocked kernels of a CPU adapter
        // multiply by a row-major B several times faster than by a transposed one (strided
        // loads across lanes), far more than the copy costs. The subgroup kernel reads a
        // transposed B as fast.
        let b_t = g.transpose(b)?;
        g.gemm(dy, b_t, GemmSpec::new())?
    } else {
        g.gemm(dy, b, transposes(false, !trans_b))?
    };
    let db = if trans_b {
        g.gemm(dy_rows, a_rows, transposes(true, trans_a))?
    } else {
        g.gemm(a_rows, dy_rows, transposes(!trans_a, false))?
    };
    let da = if a_shared { sum_batches(g, da)? } else { da };
    let db = if b_shared && trans_a {
        sum_batches(g, db)?
    } else {
        db
    };
    let mut grads = vec![Some(da), Some(db)];
    if bias {
        let dy_rows = g.reshape(dy, &[rows, n])?;
        grads.push(Some(g.sum(dy_rows, 0, false)?));
    }
    if fused == MatMulFusion::ReluGrad {
        grads.push(None);
    }
    Ok(grads)
}

pub(super) fn record_matmul(
    trans_a: bool,
    trans_b: bool,
    bias: bool,
    fused: MatMulFusion,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (a, b, y) = (inputs[0].f32(), inputs[1].f32(), outputs[0].f32());
    let rank = y.rank();
    let (m, n) = (y.shape()[rank - 2], y.shape()[rank - 1]);
    let k = a.shape()[a.rank() - if trans_a { 2 } else { 1 }];
    // A rank-2 operand is shared by every batch: it does not move between them.
    let batch_stride = |t: &Tensor, size| if t.rank() > 2 { size } else { 0 };
    let batch = y.shape()[..rank - 2].iter().product();
    let shape = GemmShape {
        a_batch_stride: batch_stride(a, m * k),
        b_batch_stride: batch_stride(b, k * n),
        ..GemmShape::contiguous(batch, (m, n, k), trans_a, trans_b)
    };
    let operands = GemmOperands {
        a,
        b,
        c: None,
        bias: bias.then(|| inputs[2].f32()),
        out: y,
        epilogue: match fused {
            MatMulFusion::Plain => Epilogue::Plain,
            MatMulFusion::Relu => Epilogue::Relu,
            MatMulFusion::ReluGrad => Epilogue::ReluGrad {
                relu_output: inputs[inputs.len() - 1].f32(),
            },
        },
    };
    let variant = MatmulVariant::choose(y.gpu(), &shape);
    Ok(gemm_dispatch(&operands, &shape, 1.0, 0.0, variant)?.into())
}

/// Whether the rule runs dy·Bᵀ (dy [batch…, M, N], B [batch…, K, N] or [K, N]) with the
/// subgroup kernel, which reads B transposed in place.
fn multiplies_by_transposed_in_place(g: &Graph, dy: Var, b: Var) -> bool {
    let (dy_shape, b_shape) = (g.shape(dy), g.shape(b));
    let (m, k) = (dy_shape[dy_shape.len() - 2], dy_shape[dy_shape.len() - 1]);
    let n = b_shape[b_shape.len() - 2];
    let batch = dy_shape[..dy_shape.len() - 2].iter().product();
    let shape = GemmShape {
        b_batch_stride: if b_shape.len() == 2 { 0 } else { n * k },
        ..GemmShape::contiguous(batch, (m, n, k), false, true)
    };
    MatmulVariant::rule(g.gpu(), &shape) == MatmulVariant::Subgroup
}

/// Sums a gradient [batch…, R, C] over its batch axes: [R, C].
fn sum_batches(g: &mut Graph, grad: Var) -> Result<Var> {
    let shape = g.shape(grad).to_vec();
    let matrix = &shape[shape.len() - 2..];
    let batches = shape[..shape.len() - 2].iter().product();
    let stacked = g.reshape(grad, &[batches, matrix[0], matrix[1]])?;
    g.sum(stacked, 0, false)
}
