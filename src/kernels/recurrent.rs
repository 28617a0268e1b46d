//! Recurrent layers (`shaders/recurrent.wgsl`): a whole sequence of one RNN, GRU or LSTM
//! layer in one direction, recorded as dispatches, forward and backward.
//!
//! The caller computes the input projections gx = x·W + W_bias of every step beforehand
//! (one large matmul). Each time step is then two dispatches: the recurrent product
//! gh = h_prev·R + R_bias (the matmul kernel, reading h_prev in place from `states`) and
//! one fused cell kernel for the gates, the new state and what the backward needs. The
//! backward runs the steps in reverse with one cell-backward kernel and one matmul each,
//! then forms dR and dR_bias over all steps at once. No atomics: results are deterministic.
//!
//! `states` and `cells` are indexed by time in both directions: forward, slot 0 holds h0
//! and step t writes slot t+1; reverse, slot T holds h0 and step t (from T−1 down to 0)
//! writes slot t. See [`RecurrentShape::input_slot`] and [`RecurrentShape::output_slot`].

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, PooledBuffer, ShaderSource};
use crate::kernels::copy::strided_copy_dispatch;
use crate::kernels::matmul::{
    gemm_dispatch, CLayout, Epilogue, GemmOperands, GemmShape, MatmulVariant,
};
use crate::kernels::reduce::{reduce_dispatch, Reduce, ReduceVariant};
use crate::kernels::{pad_to_rank4, WORKGROUP_1D};
use crate::tensor::{Indices, Tensor};

/// The recurrent module, `shaders/recurrent.wgsl`: each cell's forward and backward step.
pub static SHADER: ShaderSource =
    ShaderSource::new("recurrent", include_str!("../../shaders/recurrent.wgsl"));

/// The cell of a recurrent layer; in checkpoint configs `"rnn"`, `"gru"` or `"lstm"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// h = tanh(gx + gh).
    Rnn,
    /// Gates r, z, n with the reset gate applied after the recurrent product (PyTorch;
    /// ONNX `linear_before_reset = 1`).
    Gru,
    /// Gates i, f, g, o, with a cell state beside the hidden state.
    Lstm,
}

impl CellKind {
    /// Every cell kind: those the kernel list compiles, and tests try.
    pub const ALL: [CellKind; 3] = [CellKind::Rnn, CellKind::Gru, CellKind::Lstm];

    /// G: gate blocks of H columns in gx, R and R_bias.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn => 1,
            CellKind::Gru => 3,
            CellKind::Lstm => 4,
        }
    }

    /// S: blocks of H columns the forward saves per step for the backward
    /// (RNN: h; GRU: r, z, n, gh_n; LSTM: i, f, g, o).
    pub fn saved(self) -> usize {
        match self {
            CellKind::Rnn => 1,
            CellKind::Gru | CellKind::Lstm => 4,
        }
    }

    /// The cell's name in lower case (`rnn`, `gru`, `lstm`), as errors and kernel labels say it.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Rnn => "rnn",
            CellKind::Gru => "gru",
            CellKind::Lstm => "lstm",
        }
    }

    fn has_cells(self) -> bool {
        self == CellKind::Lstm
    }

    fn forward_entry(self) -> &'static str {
        match self {
            CellKind::Rnn => "rnn_forward",
            CellKind::Gru => "gru_forward",
            CellKind::Lstm => "lstm_forward",
        }
    }

    fn backward_entry(self) -> &'static str {
        match self {
            CellKind::Rnn => "rnn_backward",
            CellKind::Gru => "gru_backward",
            CellKind::Lstm => "lstm_backward",
        }
    }
}

/// The sizes of one recurrent layer's sequence in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecurrentShape {
    /// Which cell the layer uses.
    pub kind: CellKind,
    /// T
    pub steps: usize,
    /// B
    pub batch: usize,
    /// H
    pub hidden: usize,
    /// Whether the steps run from the last to the first.
    pub reverse: bool,
}

impl RecurrentShape {
    /// G·H: the columns of gx, R and R_bias.
    pub fn gate_width(&self) -> usize {
        self.kind.gates() * self.hidden
    }

    /// S·H: the columns of `saved`.
    pub fn saved_width(&self) -> usize {
        self.kind.saved() * self.hidden
    }

    /// [T, B, G·H]: gx and dgx.
    pub fn gates_shape(&self) -> [usize; 3] {
        [self.steps, self.batch, self.gate_width()]
    }

    /// [T+1, B, H]: states and cells.
    pub fn states_shape(&self) -> [usize; 3] {
        [self.steps + 1, self.batch, self.hidden]
    }

    /// [T, B, S·H]: saved.
    pub fn saved_shape(&self) -> [usize; 3] {
        [self.steps, self.batch, self.saved_width()]
    }

    /// The slot of `states` (and `cells`) holding h0 (c0): 0 forward, T reverse.
    pub fn initial_slot(&self) -> usize {
        if self.reverse {
            self.steps
        } else {
            0
        }
    }

    /// The slot holding the last state: T forward, 0 reverse.
    pub fn final_slot(&self) -> usize {
        if self.reverse {
            0
        } else {
            self.steps
        }
    }

    /// The slot holding h_prev of time step t: t forward, t+1 reverse.
    pub fn input_slot(&self, t: usize) -> usize {
        if self.reverse {
            t + 1
        } else {
            t
        }
    }

    /// The slot step t writes, which holds the output at time t: t+1 forward, t reverse.
    pub fn output_slot(&self, t: usize) -> usize {
        if self.reverse {
            t
        } else {
            t + 1
        }
    }

    /// The time steps in the order the forward processes them.
    pub fn forward_order(&self) -> Vec<usize> {
        if self.reverse {
            (0..self.steps).rev().collect()
        } else {
            (0..self.steps).collect()
        }
    }

    /// Fails on an empty dimension: a recurrence needs a step, a sequence and a unit.
    fn check_nonempty(&self) -> Result<()> {
        if self.steps == 0 || self.batch == 0 || self.hidden == 0 {
            return Err(Error::ZeroSized {
                op: self.kind.name(),
                shape: vec![self.steps, self.batch, self.hidden],
                why: "a recurrence needs at least one step, one sequence and one hidden unit \
                      ([T, B, H] shown)",
            });
        }
        Ok(())
    }
}

/// What the forward reads. All tensors f32, contiguous, time-major.
#[derive(Debug, Clone, Copy)]
pub struct RecurrentInputs<'a> {
    /// [T, B, G·H]: the input projections x·W + W_bias, gate blocks of H columns.
    pub gx: &'a Tensor,
    /// [H, G·H]: the recurrent weight, gh = h_prev·r + r_bias.
    pub r: &'a Tensor,
    /// [G·H]
    pub r_bias: &'a Tensor,
    /// [B, H]
    pub h0: &'a Tensor,
    /// [B, H]: the initial cell state, for (and required by) the LSTM.
    pub c0: Option<&'a Tensor>,
    /// \[B\]: step t of sequence b is real iff t < lengths\[b\]; later steps carry the state
    /// unchanged. Lengths above T act as T.
    pub lengths: Option<&'a Indices>,
    /// [3·H]: the LSTM's peepholes p_i, p_o, p_f (ONNX's order). Forward only.
    pub peepholes: Option<&'a Tensor>,
}

impl RecurrentInputs<'_> {
    /// Fails if [`recurrent_backward_dispatches`] cannot differentiate a forward run with
    /// these inputs: its cell kernel has no peephole terms.
    pub fn check_differentiable(&self, shape: &RecurrentShape) -> Result<()> {
        if self.peepholes.is_some() {
            return Err(peephole_backward_error(shape));
        }
        Ok(())
    }
}

fn peephole_backward_error(shape: &RecurrentShape) -> Error {
    Error::invalid(
        shape.kind.name(),
        "the recurrent backward does not support peepholes: they are forward only",
    )
}

/// What the forward writes and the backward reads.
#[derive(Debug, Clone)]
pub struct RecurrentOutputs {
    /// [T+1, B, H]: h0 in its slot and the output of every step (see [`RecurrentShape`]).
    pub states: Tensor,
    /// [T+1, B, H]: the same for the LSTM's cell state.
    pub cells: Option<Tensor>,
    /// [T, B, S·H]: per step what the backward needs.
    pub saved: Tensor,
}

impl RecurrentOutputs {
    /// Outputs of the right shapes for `shape`, contents undefined until the forward runs.
    pub fn allocate(gpu: &Gpu, shape: &RecurrentShape) -> Result<RecurrentOutputs> {
        Ok(RecurrentOutputs {
            states: Tensor::uninit(gpu, &shape.states_shape())?,
            cells: match shape.kind.has_cells() {
                true => Some(Tensor::uninit(gpu, &shape.states_shape())?),
                false => None,
            },
            saved: Tensor::uninit(gpu, &shape.saved_shape())?,
        })
    }
}

/// What the backward reads: the gradients of the loss with respect to the forward's
/// `states` and `cells`, and the forward's outputs.
#[derive(Debug, Clone, Copy)]
pub struct RecurrentBackwardInputs<'a> {
    /// [T+1, B, H]: dLoss/dstates, every slot (the final state's and h0's included);
    /// `None` for zeros.
    pub dstates: Option<&'a Tensor>,
    /// [T+1, B, H]: dLoss/dcells, LSTM only; `None` for zeros.
    pub dcells: Option<&'a Tensor>,
    /// The forward's outputs.
    pub states: &'a Tensor,
    /// `[T+1, B, H]`: the LSTM's cell states; `None` for the RNN and GRU.
    pub cells: Option<&'a Tensor>,
    /// `[T, B, S·H]`: what the forward saved per step for the backward.
    pub saved: &'a Tensor,
    /// [H, G·H]: the forward's recurrent weight.
    pub r: &'a Tensor,
    /// The forward's lengths.
    pub lengths: Option<&'a Indices>,
}

/// The gradients the backward writes.
#[derive(Debug, Clone)]
pub struct RecurrentGrads {
    /// [T, B, G·H]: the pre-activation gate gradients, which are also dLoss/dgx.
    pub dgx: Tensor,
    /// [H, G·H]
    pub dr: Tensor,
    /// [G·H]
    pub dr_bias: Tensor,
    /// [B, H]
    pub dh0: Tensor,
    /// [B, H], LSTM only.
    pub dc0: Option<Tensor>,
}

impl RecurrentGrads {
    /// Gradients of the right shapes for `shape`, contents undefined until the backward runs.
    pub fn allocate(gpu: &Gpu, shape: &RecurrentShape) -> Result<RecurrentGrads> {
        let state = [shape.batch, shape.hidden];
        Ok(RecurrentGrads {
            dgx: Tensor::uninit(gpu, &shape.gates_shape())?,
            dr: Tensor::uninit(gpu, &[shape.hidden, shape.gate_width()])?,
            dr_bias: Tensor::uninit(gpu, &[shape.gate_width()])?,
            dh0: Tensor::uninit(gpu, &state)?,
            dc0: match shape.kind.has_cells() {
                true => Some(Tensor::uninit(gpu, &state)?),
                false => None,
            },
        })
    }
}

// ------------------------------------------------------------------------------ checks

/// `dims` without its leading 1s: shapes that differ only there hold the same data in the
/// same order ([1, B, H] from ONNX is a fine [B, H]).
fn without_leading_ones(dims: &[usize]) -> &[usize] {
    let start = dims.iter().position(|&d| d != 1).unwrap_or(dims.len());
    &dims[start..]
}

/// Checks one tensor against the shape its role needs; the error names the role.
fn expect(
    shape: &RecurrentShape,
    what: &str,
    layout: &str,
    actual: &[usize],
    expected: &[usize],
) -> Result<()> {
    if without_leading_ones(actual) == without_leading_ones(expected) {
        return Ok(());
    }
    Err(Error::ShapeMismatch {
        op: shape.kind.name(),
        lhs: actual.to_vec(),
        rhs: expected.to_vec(),
        expected: format!(
            "{what} must be {layout} with T={}, B={}, H={}, G={} (leading axes of 1 allowed)",
            shape.steps,
            shape.batch,
            shape.hidden,
            shape.kind.gates()
        ),
    })
}

/// Checks that an optional tensor is present exactly for the LSTM.
fn expect_for_lstm_only(shape: &RecurrentShape, what: &str, present: bool) -> Result<()> {
    match (shape.kind.has_cells(), present) {
        (true, false) => Err(Error::invalid(
            shape.kind.name(),
            format!("the LSTM needs {what}"),
        )),
        (false, true) => Err(Error::invalid(
            shape.kind.name(),
            format!(
                "{what} is for the LSTM only, this layer is {:?}",
                shape.kind
            ),
        )),
        _ => Ok(()),
    }
}

fn expect_same_device(first: &Tensor, others: &[Option<&Tensor>], op: &'static str) -> Result<()> {
    for other in others.iter().flatten() {
        first.same_device(op, other)?;
    }
    Ok(())
}

fn expect_lengths(shape: &RecurrentShape, lengths: Option<&Indices>, gpu: &Gpu) -> Result<()> {
    if let Some(lengths) = lengths {
        if !lengths.gpu().same_device(gpu) {
            return Err(Error::DeviceMismatch {
                op: shape.kind.name(),
            });
        }
        expect(shape, "lengths", "[B]", lengths.shape(), &[shape.batch])?;
    }
    Ok(())
}

fn check_forward(
    inputs: &RecurrentInputs,
    outputs: &RecurrentOutputs,
    shape: &RecurrentShape,
) -> Result<()> {
    shape.check_nonempty()?;
    let state = [shape.batch, shape.hidden];
    expect(
        shape,
        "gx",
        "[T, B, G·H]",
        inputs.gx.shape(),
        &shape.gates_shape(),
    )?;
    expect(
        shape,
        "r",
        "[H, G·H]",
        inputs.r.shape(),
        &[shape.hidden, shape.gate_width()],
    )?;
    expect(
        shape,
        "r_bias",
        "[G·H]",
        inputs.r_bias.shape(),
        &[shape.gate_width()],
    )?;
    expect(shape, "h0", "[B, H]", inputs.h0.shape(), &state)?;
    expect_for_lstm_only(shape, "c0", inputs.c0.is_some())?;
    if let Some(c0) = inputs.c0 {
        expect(shape, "c0", "[B, H]", c0.shape(), &state)?;
    }
    if let Some(peepholes) = inputs.peepholes {
        if !shape.kind.has_cells() {
            return Err(Error::invalid(
                shape.kind.name(),
                format!(
                    "peepholes are for the LSTM only, this layer is {:?}",
                    shape.kind
                ),
            ));
        }
        expect(
            shape,
            "peepholes",
            "[3·H]",
            peepholes.shape(),
            &[3 * shape.hidden],
        )?;
    }
    expect(
        shape,
        "states",
        "[T+1, B, H]",
        outputs.states.shape(),
        &shape.states_shape(),
    )?;
    expect_for_lstm_only(shape, "cells (an output)", outputs.cells.is_some())?;
    if let Some(cells) = &outputs.cells {
        expect(
            shape,
            "cells",
            "[T+1, B, H]",
            cells.shape(),
            &shape.states_shape(),
        )?;
    }
    expect(
        shape,
        "saved",
        "[T, B, S·H]",
        outputs.saved.shape(),
        &shape.saved_shape(),
    )?;
    expect_same_device(
        inputs.gx,
        &[
            Some(inputs.r),
            Some(inputs.r_bias),
            Some(inputs.h0),
            inputs.c0,
            inputs.peepholes,
            Some(&outputs.states),
            outputs.cells.as_ref(),
            Some(&outputs.saved),
        ],
        shape.kind.name(),
    )?;
    expect_lengths(shape, inputs.lengths, inputs.gx.gpu())
}

fn check_backward(
    inputs: &RecurrentBackwardInputs,
    grads: &RecurrentGrads,
    shape: &RecurrentShape,
) -> Result<()> {
    shape.check_nonempty()?;
    let state = [shape.batch, shape.hidden];
    if let Some(dstates) = inputs.dstates {
        expect(
            shape,
            "dstates",
            "[T+1, B, H]",
            dstates.shape(),
            &shape.states_shape(),
        )?;
    }
    if let Some(dcells) = inputs.dcells {
        if !shape.kind.has_cells() {
            return Err(Error::invalid(
                shape.kind.name(),
                format!(
                    "dcells is for the LSTM only, this layer is {:?}",
                    shape.kind
                ),
            ));
        }
        expect(
            shape,
            "dcells",
            "[T+1, B, H]",
            dcells.shape(),
            &shape.states_shape(),
        )?;
    }
    expect(
        shape,
        "states",
        "[T+1, B, H]",
        inputs.states.shape(),
        &shape.states_shape(),
    )?;
    expect_for_lstm_only(shape, "cells (from the forward)", inputs.cells.is_some())?;
    if let Some(cells) = inputs.cells {
        expect(
            shape,
            "cells",
            "[T+1, B, H]",
            cells.shape(),
            &shape.states_shape(),
        )?;
    }
    expect(
        shape,
        "saved",
        "[T, B, S·H]",
        inputs.saved.shape(),
        &shape.saved_shape(),
    )?;
    expect(
        shape,
        "r",
        "[H, G·H]",
        inputs.r.shape(),
        &[shape.hidden, shape.gate_width()],
    )?;
    expect(
        shape,
        "dgx",
        "[T, B, G·H]",
        grads.dgx.shape(),
        &shape.gates_shape(),
    )?;
    expect(
        shape,
        "dr",
        "[H, G·H]",
        grads.dr.shape(),
        &[shape.hidden, shape.gate_width()],
    )?;
    expect(
        shape,
        "dr_bias",
        "[G·H]",
        grads.dr_bias.shape(),
        &[shape.gate_width()],
    )?;
    expect(shape, "dh0", "[B, H]", grads.dh0.shape(), &state)?;
    expect_for_lstm_only(shape, "dc0 (a gradient)", grads.dc0.is_some())?;
    if let Some(dc0) = &grads.dc0 {
        expect(shape, "dc0", "[B, H]", dc0.shape(), &state)?;
    }
    expect_same_device(
        inputs.states,
        &[
            inputs.dstates,
            inputs.dcells,
            inputs.cells,
            Some(inputs.saved),
            Some(inputs.r),
            Some(&grads.dgx),
            Some(&grads.dr),
            Some(&grads.dr_bias),
            Some(&grads.dh0),
            grads.dc0.as_ref(),
        ],
        shape.kind.name(),
    )?;
    expect_lengths(shape, inputs.lengths, inputs.states.gpu())
}

// ------------------------------------------------------------------------------ launchers

/// The uniform parameters every entry point of the shader reads.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    hidden: u32,
    step: u32,
    prev_slot: u32,
    out_slot: u32,
    first: u32,
    pad: [u32; 2],
}

impl Params {
    fn new(shape: &RecurrentShape, t: usize, first: bool) -> Params {
        Params {
            batch: shape.batch as u32,
            hidden: shape.hidden as u32,
            step: t as u32,
            prev_slot: shape.input_slot(t) as u32,
            out_slot: shape.output_slot(t) as u32,
            first: u32::from(first),
            pad: [0; 2],
        }
    }
}

use Access::{Read as R, ReadWrite as RW, Uniform as U};

// Binding lists, numbered as in the shader. A slot an entry point does not use is declared
// read-only and bound to the placeholder buffer.
// init: h0, c0, states, cells.
const INIT_STATE_BINDINGS: &[Access] = &[R, R, RW, R, U];
const INIT_STATE_AND_CELL_BINDINGS: &[Access] = &[R, R, RW, RW, U];
// forward: gx, gh, lengths, states, saved, cells, peepholes.
const FORWARD_BINDINGS: &[Access] = &[R, R, R, RW, RW, R, R, U];
const LSTM_FORWARD_BINDINGS: &[Access] = &[R, R, R, RW, RW, RW, R, U];
// backward: dstates, saved, lengths, carry, dgx, then GRU: states, dgh;
// LSTM: dcells, cells, dc carry.
const RNN_BACKWARD_BINDINGS: &[Access] = &[R, R, R, RW, RW, R, R, R, U];
const GRU_BACKWARD_BINDINGS: &[Access] = &[R, R, R, RW, RW, R, RW, R, U];
const LSTM_BACKWARD_BINDINGS: &[Access] = &[R, R, R, RW, RW, R, R, RW, U];

fn flag(yes: bool) -> f64 {
    f64::from(u8::from(yes))
}

/// The kernel that writes the initial state (and cell) of a sequence.
fn init_spec(kind: CellKind) -> KernelSpec {
    let (entry, bindings) = match kind.has_cells() {
        true => ("init_state_and_cell", INIT_STATE_AND_CELL_BINDINGS),
        false => ("init_state", INIT_STATE_BINDINGS),
    };
    KernelSpec {
        source: &SHADER,
        entry,
        bindings,
        constants: vec![],
    }
}

fn forward_spec(kind: CellKind, has_lengths: bool, has_peepholes: bool) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: kind.forward_entry(),
        bindings: match kind.has_cells() {
            true => LSTM_FORWARD_BINDINGS,
            false => FORWARD_BINDINGS,
        },
        constants: vec![
            ("HAS_LENGTHS", flag(has_lengths)),
            ("HAS_PEEPHOLES", flag(has_peepholes)),
        ],
    }
}

fn backward_spec(
    kind: CellKind,
    has_lengths: bool,
    has_dstates: bool,
    has_dcells: bool,
) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: kind.backward_entry(),
        bindings: match kind {
            CellKind::Rnn => RNN_BACKWARD_BINDINGS,
            CellKind::Gru => GRU_BACKWARD_BINDINGS,
            CellKind::Lstm => LSTM_BACKWARD_BINDINGS,
        },
        constants: vec![
            ("HAS_LENGTHS", flag(has_lengths)),
            ("HAS_DSTATES", flag(has_dstates)),
            ("HAS_DCELLS", flag(has_dcells)),
        ],
    }
}

/// Every kernel variant the recurrent launchers can build: peepholes and dcells for the
/// LSTM only, as their checks require.
pub fn kernel_specs() -> Vec<KernelSpec> {
    let mut specs = Vec::new();
    for kind in CellKind::ALL {
        let lstm_only: &[bool] = if kind.has_cells() {
            &[false, true]
        } else {
            &[false]
        };
        specs.push(init_spec(kind));
        for has_lengths in [false, true] {
            for &has_peepholes in lstm_only {
                specs.push(forward_spec(kind, has_lengths, has_peepholes));
            }
            for has_dstates in [false, true] {
                for &has_dcells in lstm_only {
                    specs.push(backward_spec(kind, has_lengths, has_dstates, has_dcells));
                }
            }
        }
    }
    specs
}

/// Workgroups for one invocation per hidden unit of the batch.
fn unit_grid(gpu: &Gpu, shape: &RecurrentShape) -> [u32; 3] {
    gpu.grid(((shape.batch * shape.hidden) as u32).div_ceil(WORKGROUP_1D))
}

/// Records states[initial slot] = h0 (and cells[initial slot] = c0).
fn init_dispatch(
    inputs: &RecurrentInputs,
    outputs: &RecurrentOutputs,
    shape: &RecurrentShape,
) -> Result<Dispatch> {
    let gpu = inputs.gx.gpu();
    let placeholder = gpu.placeholder();
    let spec = init_spec(shape.kind);
    let slot = shape.initial_slot() as u32;
    let params = Params {
        prev_slot: slot,
        out_slot: slot,
        ..Params::new(shape, 0, false)
    };
    gpu.dispatch(
        &spec,
        &[
            inputs.h0.buffer(),
            inputs.c0.map_or(placeholder, Tensor::buffer),
            outputs.states.buffer(),
            outputs.cells.as_ref().map_or(placeholder, Tensor::buffer),
        ],
        &params,
        unit_grid(gpu, shape),
    )
}

/// Records the forward cell of step t, reading gh from `gh`.
fn cell_forward_dispatch(
    inputs: &RecurrentInputs,
    outputs: &RecurrentOutputs,
    gh: &Tensor,
    shape: &RecurrentShape,
    t: usize,
) -> Result<Dispatch> {
    let gpu = inputs.gx.gpu();
    let placeholder = gpu.placeholder();
    let spec = forward_spec(
        shape.kind,
        inputs.lengths.is_some(),
        inputs.peepholes.is_some(),
    );
    gpu.dispatch(
        &spec,
        &[
            inputs.gx.buffer(),
            gh.buffer(),
            inputs.lengths.map_or(placeholder, Indices::buffer),
            outputs.states.buffer(),
            outputs.saved.buffer(),
            outputs.cells.as_ref().map_or(placeholder, Tensor::buffer),
            inputs.peepholes.map_or(placeholder, Tensor::buffer),
        ],
        &Params::new(shape, t, false),
        unit_grid(gpu, shape),
    )
}

/// out = op(a)·op(b) (+ c) (+ bias) for one [m, k]·[k, n] product, op(a) read from element
/// `a_offset` of `a` on, with the variant the matmul rule picks.
fn product(
    (a, a_offset, trans_a): (&Tensor, usize, bool),
    (b, trans_b): (&Tensor, bool),
    c: Option<&Tensor>,
    bias: Option<&Tensor>,
    out: &Tensor,
    (m, n, k): (usize, usize, usize),
) -> Result<Dispatch> {
    let shape = GemmShape {
        a_offset,
        ..GemmShape::contiguous(1, (m, n, k), trans_a, trans_b)
    };
    let c_layout = CLayout {
        batch_stride: 0,
        row_stride: n,
        col_stride: 1,
    };
    let operands = GemmOperands {
        a,
        b,
        c: c.map(|c| (c, c_layout)),
        bias,
        out,
        epilogue: Epilogue::Plain,
    };
    let variant = MatmulVariant::choose(a.gpu(), &shape);
    gemm_dispatch(&operands, &shape, 1.0, 1.0, variant)
}

/// Records the forward of a whole sequence: the copy of h0 (and c0) into its slot, then
/// per step in processing order the recurrent product and the cell. Returns the
/// dispatches in order and the scratch tensors they bind, which the caller keeps alive
/// until they have been submitted.
pub fn recurrent_forward_dispatches(
    inputs: &RecurrentInputs,
    outputs: &RecurrentOutputs,
    shape: &RecurrentShape,
) -> Result<(Vec<Dispatch>, Vec<Tensor>)> {
    check_forward(inputs, outputs, shape)?;
    let gpu = inputs.gx.gpu();
    let (batch, hidden, width) = (shape.batch, shape.hidden, shape.gate_width());
    let gh = Tensor::uninit(gpu, &[batch, width])?;
    let mut dispatches = Vec::with_capacity(1 + 2 * shape.steps);
    dispatches.push(init_dispatch(inputs, outputs, shape)?);
    for t in shape.forward_order() {
        let h_prev = shape.input_slot(t) * batch * hidden;
        dispatches.push(product(
            (&outputs.states, h_prev, false),
            (inputs.r, false),
            None,
            Some(inputs.r_bias),
            &gh,
            (batch, width, hidden),
        )?);
        dispatches.push(cell_forward_dispatch(inputs, outputs, &gh, shape, t)?);
    }
    Ok((dispatches, vec![gh]))
}

/// Records the backward cell of step t: it reads the gradient of the step's output slot
/// from `carry` (or dstates, on the first step processed) and overwrites `carry` with the
/// direct part of the gradient of the step's input slot.
fn cell_backward_dispatch(
    inputs: &RecurrentBackwardInputs,
    grads: &RecurrentGrads,
    (carry, dgh): (&Tensor, Option<&Tensor>),
    shape: &RecurrentShape,
    t: usize,
    first: bool,
) -> Result<Dispatch> {
    let gpu = inputs.states.gpu();
    let placeholder = gpu.placeholder();
    let extra: [&Arc<PooledBuffer>; 3] = match shape.kind {
        CellKind::Rnn => [placeholder; 3],
        CellKind::Gru => [
            inputs.states.buffer(),
            dgh.map_or(placeholder, Tensor::buffer),
            placeholder,
        ],
        CellKind::Lstm => [
            inputs.dcells.map_or(placeholder, Tensor::buffer),
            inputs.cells.map_or(placeholder, Tensor::buffer),
            grads.dc0.as_ref().map_or(placeholder, Tensor::buffer),
        ],
    };
    let spec = backward_spec(
        shape.kind,
        inputs.lengths.is_some(),
        inputs.dstates.is_some(),
        inputs.dcells.is_some(),
    );
    gpu.dispatch(
        &spec,
        &[
            inputs.dstates.map_or(placeholder, Tensor::buffer),
            inputs.saved.buffer(),
            inputs.lengths.map_or(placeholder, Indices::buffer),
            carry.buffer(),
            grads.dgx.buffer(),
            extra[0],
            extra[1],
            extra[2],
        ],
        &Params::new(shape, t, first),
        unit_grid(gpu, shape),
    )
}

/// Records the backward of a whole sequence into `grads`: a copy of rᵀ, then per step in
/// reverse processing order the cell backward and dh_prev = dgh·rᵀ + direct, then
/// dr = Σ_t h_prev(t)ᵀ·dgh_t as one product over all T·B rows and dr_bias as one column
/// sum. Returns the dispatches and the scratch tensors they bind.
///
/// The gradient carried from step to step alternates between `grads.dh0` and a scratch
/// tensor (the matmul cannot read and write one buffer), arranged so that the last step
/// writes `grads.dh0`. The LSTM's cell gradient is carried in `grads.dc0` itself.
pub fn recurrent_backward_dispatches(
    inputs: &RecurrentBackwardInputs,
    grads: &RecurrentGrads,
    shape: &RecurrentShape,
) -> Result<(Vec<Dispatch>, Vec<Tensor>)> {
    check_backward(inputs, grads, shape)?;
    let gpu = inputs.states.gpu();
    let (steps, batch, hidden, width) =
        (shape.steps, shape.batch, shape.hidden, shape.gate_width());
    let spare_carry = Tensor::uninit(gpu, &[batch, hidden])?;
    let carries = if steps % 2 == 0 {
        [&grads.dh0, &spare_carry]
    } else {
        [&spare_carry, &grads.dh0]
    };
    // dgh differs from dgx only in the GRU's n gate (dgh_n = dn_pre·r).
    let dgh_all = match shape.kind {
        CellKind::Gru => Some(Tensor::uninit(gpu, &shape.gates_shape())?),
        CellKind::Rnn | CellKind::Lstm => None,
    };
    let dgh = dgh_all.as_ref().unwrap_or(&grads.dgx);
    let mut dispatches = Vec::with_capacity(2 * steps + 3);
    // Rᵀ once, so that every step's dh_prev = dgh·Rᵀ reads a non-transposed B: the layout
    // the fastest matmul variants take (on lavapipe the vec4 kernel, ~2× the scalar one).
    let r_t = Tensor::uninit(gpu, &[width, hidden])?;
    dispatches.push(strided_copy_dispatch(
        inputs.r,
        &r_t,
        pad_to_rank4(&[1, width], 0),
    )?);
    for (s, t) in shape.forward_order().into_iter().rev().enumerate() {
        let (carry, next_carry) = (carries[s % 2], carries[(s + 1) % 2]);
        dispatches.push(cell_backward_dispatch(
            inputs,
            grads,
            (carry, dgh_all.as_ref()),
            shape,
            t,
            s == 0,
        )?);
        dispatches.push(product(
            (dgh, t * batch * width, false),
            (&r_t, false),
            Some(carry),
            None,
            next_carry,
            (batch, hidden, width),
        )?);
    }
    // h_prev of steps 0..T are slots 0..T (forward) or 1..T+1 (reverse): T·B rows of
    // `states` in a row, aligned with the T·B rows of dgh.
    let first_h_prev = shape.input_slot(0).min(shape.input_slot(steps - 1)) * batch * hidden;
    dispatches.push(product(
        (inputs.states, first_h_prev, true),
        (dgh, false),
        None,
        None,
        &grads.dr,
        (hidden, width, steps * batch),
    )?);
    let dgh_rows = dgh.reshape(&[steps * batch, width])?;
    dispatches.push(reduce_dispatch(
        &dgh_rows,
        &grads.dr_bias,
        0,
        Reduce::Sum,
        ReduceVariant::choose(width, steps * batch),
    )?);
    let mut scratch = vec![spare_carry, r_t];
    scratch.extend(dgh_all);
    Ok((dispatches, scratch))
}

/// Runs the forward of a whole sequence: allocates the outputs, records, submits.
pub fn recurrent_forward(
    inputs: &RecurrentInputs,
    shape: &RecurrentShape,
) -> Result<RecurrentOutputs> {
    let gpu = inputs.gx.gpu();
    let outputs = RecurrentOutputs::allocate(gpu, shape)?;
    let (dispatches, _scratch) = recurrent_forward_dispatches(inputs, &outputs, shape)?;
    gpu.submit(&[], &dispatches)?;
    Ok(outputs)
}

/// Runs the backward of a whole sequence: allocates the gradients, records, submits.
pub fn recurrent_backward(
    inputs: &RecurrentBackwardInputs,
    shape: &RecurrentShape,
) -> Result<RecurrentGrads> {
    let gpu = inputs.states.gpu();
    let grads = RecurrentGrads::allocate(gpu, shape)?;
    let (dispatches, _scratch) = recurrent_backward_dispatches(inputs, &grads, shape)?;
    gpu.submit(&[], &dispatches)?;
    Ok(grads)
}

// ------------------------------------------------------------------------------ CPU reference

/// The forward's inputs on the host, in f64, laid out as in [`RecurrentInputs`].
#[derive(Debug, Clone, Default)]
pub struct RecurrentCpu {
    /// `[T, B, G·H]`, row-major.
    pub gx: Vec<f64>,
    /// `[H, G·H]`.
    pub r: Vec<f64>,
    /// `[G·H]`.
    pub r_bias: Vec<f64>,
    /// `[B, H]`.
    pub h0: Vec<f64>,
    /// `[B, H]`, LSTM only.
    pub c0: Option<Vec<f64>>,
    /// `[B]`: each sequence's length, `None` when all run T steps.
    pub lengths: Option<Vec<u32>>,
    /// `[3·H]`: the LSTM's peepholes, ONNX's order p_i, p_o, p_f.
    pub peepholes: Option<Vec<f64>>,
}

/// The forward's outputs on the host, laid out as in [`RecurrentOutputs`].
#[derive(Debug, Clone)]
pub struct RecurrentCpuOutputs {
    /// `[T+1, B, H]`, slots as in [`RecurrentShape`].
    pub states: Vec<f64>,
    /// `[T+1, B, H]`, LSTM only.
    pub cells: Option<Vec<f64>>,
    /// `[T, B, S·H]`.
    pub saved: Vec<f64>,
}

/// The backward's gradients on the host, laid out as in [`RecurrentGrads`].
#[derive(Debug, Clone)]
pub struct RecurrentCpuGrads {
    /// `[T, B, G·H]`.
    pub dgx: Vec<f64>,
    /// `[H, G·H]`.
    pub dr: Vec<f64>,
    /// `[G·H]`.
    pub dr_bias: Vec<f64>,
    /// `[B, H]`.
    pub dh0: Vec<f64>,
    /// `[B, H]`, LSTM only.
    pub dc0: Option<Vec<f64>>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl RecurrentCpu {
    fn is_real(&self, t: usize, b: usize) -> bool {
        self.lengths
            .as_ref()
            .is_none_or(|lengths| t < lengths[b] as usize)
    }

    /// gh = h_prev·r + r_bias for sequence b, from the slot starting at `h_prev`.
    fn recurrent_projection(&self, h_prev: &[f64], shape: &RecurrentShape) -> Vec<f64> {
        let width = shape.gate_width();
        let mut gh = self.r_bias.clone();
        for (k, &h) in h_prev.iter().enumerate() {
            for (col, g) in gh.iter_mut().enumerate() {
                *g += h * self.r[k * width + col];
            }
        }
        debug_assert_eq!(gh.len(), width);
        gh
    }
}

/// CPU reference of the forward, in f64. Panics if the host vectors do not fit `shape`.
pub fn recurrent_forward_cpu(inputs: &RecurrentCpu, shape: &RecurrentShape) -> RecurrentCpuOutputs {
    let RecurrentShape {
        kind,
        batch,
        hidden,
        ..
    } = *shape;
    let (width, saved_width) = (shape.gate_width(), shape.saved_width());
    let units = batch * hidden;
    let mut states = vec![0.0; (shape.steps + 1) * units];
    let mut cells = kind.has_cells().then(|| vec![0.0; states.len()]);
    let mut saved = vec![0.0; shape.steps * batch * saved_width];
    let initial = shape.initial_slot() * units;
    states[initial..initial + units].copy_from_slice(&inputs.h0);
    if let Some(cells) = &mut cells {
        let c0 = inputs.c0.as_ref().expect("the LSTM needs c0");
        cells[initial..initial + units].copy_from_slice(c0);
    }
    for t in shape.forward_order() {
        let (prev, out) = (shape.input_slot(t) * units, shape.output_slot(t) * units);
        for b in 0..batch {
            let state = b * hidden;
            if !inputs.is_real(t, b) {
                states.copy_within(prev + state..prev + state + hidden, out + state);
                if let Some(cells) = &mut cells {
                    cells.copy_within(prev + state..prev + state + hidden, out + state);
                }
                continue;
            }
            let gh =
                inputs.recurrent_projection(&states[prev + state..prev + state + hidden], shape);
            let gx = &inputs.gx[(t * batch + b) * width..][..width];
            let save = &mut saved[(t * batch + b) * saved_width..][..saved_width];
            for j in 0..hidden {
                let pre = |g: usize| gx[g * hidden + j] + gh[g * hidden + j];
                let h_prev = states[prev + state + j];
                let h = match kind {
                    CellKind::Rnn => {
                        let h = pre(0).tanh();
                        save[j] = h;
                        h
                    }
                    CellKind::Gru => {
                        let r = sigmoid(pre(0));
                        let z = sigmoid(pre(1));
                        let gh_n = gh[2 * hidden + j];
                        let n = (gx[2 * hidden + j] + r * gh_n).tanh();
                        for (s, v) in [r, z, n, gh_n].into_iter().enumerate() {
                            save[s * hidden + j] = v;
                        }
                        (1.0 - z) * n + z * h_prev
                    }
                    CellKind::Lstm => {
                        let cells = cells.as_mut().expect("LSTM cells");
                        let c_prev = cells[prev + state + j];
                        let peephole =
                            |k: usize| inputs.peepholes.as_ref().map_or(0.0, |p| p[k * hidden + j]);
                        let i = sigmoid(pre(0) + peephole(0) * c_prev);
                        let f = sigmoid(pre(1) + peephole(2) * c_prev);
                        let g = pre(2).tanh();
                        let c = f * c_prev + i * g;
                        let o = sigmoid(pre(3) + peephole(1) * c);
                        cells[out + state + j] = c;
                        for (s, v) in [i, f, g, o].into_iter().enumerate() {
                            save[s * hidden + j] = v;
                        }
                        o * c.tanh()
                    }
                };
                states[out + state + j] = h;
            }
        }
    }
    RecurrentCpuOutputs {
        states,
        cells,
        saved,
    }
}

/// CPU reference of the backward, in f64, by plain reverse-mode differentiation of
/// [`recurrent_forward_cpu`] (which it reruns): the gradient of every slot is complete
/// (dstates of that slot plus what later steps send back) when the step writing it is
/// reached. `dstates` and `dcells` are [T+1, B, H] (`None` for zeros). Errors with
/// peepholes, like the GPU backward.
pub fn recurrent_backward_cpu(
    inputs: &RecurrentCpu,
    dstates: Option<&[f64]>,
    dcells: Option<&[f64]>,
    shape: &RecurrentShape,
) -> Result<RecurrentCpuGrads> {
    if inputs.peepholes.is_some() {
        return Err(peephole_backward_error(shape));
    }
    let forward = recurrent_forward_cpu(inputs, shape);
    let RecurrentShape {
        kind,
        batch,
        hidden,
        ..
    } = *shape;
    let (width, saved_width) = (shape.gate_width(), shape.saved_width());
    let units = batch * hidden;
    let slots = (shape.steps + 1) * units;
    let mut dh_all = dstates.map_or_else(|| vec![0.0; slots], <[f64]>::to_vec);
    let mut dc_all = dcells.map_or_else(|| vec![0.0; slots], <[f64]>::to_vec);
    let mut dgx = vec![0.0; shape.steps * batch * width];
    let mut dr = vec![0.0; hidden * width];
    let mut dr_bias = vec![0.0; width];
    for t in shape.forward_order().into_iter().rev() {
        let (prev, out) = (shape.input_slot(t) * units, shape.output_slot(t) * units);
        for b in 0..batch {
            let state = b * hidden;
            if !inputs.is_real(t, b) {
                for j in 0..hidden {
                    dh_all[prev + state + j] += dh_all[out + state + j];
                    dc_all[prev + state + j] += dc_all[out + state + j];
                }
                continue;
            }
            let save = &forward.saved[(t * batch + b) * saved_width..][..saved_width];
            let mut dgh = vec![0.0; width];
            let dgx_row = &mut dgx[(t * batch + b) * width..][..width];
            for j in 0..hidden {
                let dh = dh_all[out + state + j];
                let saved = |s: usize| save[s * hidden + j];
                match kind {
                    CellKind::Rnn => {
                        let h = saved(0);
                        dgx_row[j] = dh * (1.0 - h * h);
                        dgh[j] = dgx_row[j];
                    }
                    CellKind::Gru => {
                        let (r, z, n, gh_n) = (saved(0), saved(1), saved(2), saved(3));
                        let h_prev = forward.states[prev + state + j];
                        let dn_pre = dh * (1.0 - z) * (1.0 - n * n);
                        let dz_pre = dh * (h_prev - n) * z * (1.0 - z);
                        let dr_pre = dn_pre * gh_n * r * (1.0 - r);
                        dgx_row[j] = dr_pre;
                        dgx_row[hidden + j] = dz_pre;
                        dgx_row[2 * hidden + j] = dn_pre;
                        dgh[j] = dr_pre;
                        dgh[hidden + j] = dz_pre;
                        dgh[2 * hidden + j] = dn_pre * r;
                        dh_all[prev + state + j] += dh * z;
                    }
                    CellKind::Lstm => {
                        let cells = forward.cells.as_ref().expect("LSTM cells");
                        let (i, f, g, o) = (saved(0), saved(1), saved(2), saved(3));
                        let c_prev = cells[prev + state + j];
                        let tanh_c = cells[out + state + j].tanh();
                        let dc = dc_all[out + state + j] + dh * o * (1.0 - tanh_c * tanh_c);
                        let gates = [
                            dc * g * i * (1.0 - i),
                            dc * c_prev * f * (1.0 - f),
                            dc * i * (1.0 - g * g),
                            dh * tanh_c * o * (1.0 - o),
                        ];
                        for (k, v) in gates.into_iter().enumerate() {
                            dgx_row[k * hidden + j] = v;
                            dgh[k * hidden + j] = v;
                        }
                        dc_all[prev + state + j] += dc * f;
                    }
                }
            }
            // Through gh = h_prev·r + r_bias.
            for k in 0..hidden {
                let h_prev = forward.states[prev + state + k];
                let mut dh_prev = 0.0;
                for (col, &d) in dgh.iter().enumerate() {
                    dh_prev += d * inputs.r[k * width + col];
                    dr[k * width + col] += h_prev * d;
                }
                dh_all[prev + state + k] += dh_prev;
            }
            for (total, d) in dr_bias.iter_mut().zip(&dgh) {
                *total += d;
            }
        }
    }
    let initial = shape.initial_slot() * units;
    Ok(RecurrentCpuGrads {
        dgx,
        dr,
        dr_bias,
        dh0: dh_all[initial..initial + units].to_vec(),
        dc0: kind
            .has_cells()
            .then(|| dc_all[initial..initial + units].to_vec()),
    })
}
