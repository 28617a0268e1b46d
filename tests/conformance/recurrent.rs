//! ONNX RNN, GRU and LSTM (opset 14 on, and the older versions whose attributes match) on
//! the fused recurrent kernels of [`shadergrad::kernels::recurrent`].
//!
//! - X is [T, B, In] ([B, T, In] with `layout` 1, permuted on the GPU to time-major).
//! - W [dirs, G·H, In], R [dirs, G·H, H] and B [dirs, 2·G·H] = (Wb, Rb) come in ONNX's gate
//!   order (RNN: one gate; GRU: z, r, h; LSTM: i, o, f, c). The host reorders the gate
//!   blocks into the kernels' order (GRU: r, z, n; LSTM: i, f, g, o) and transposes R to
//!   [H, G·H]; gx = X·Wᵀ + Wb is one gemm per direction.
//! - initial_h / initial_c are [dirs, B, H] ([B, dirs, H] with layout 1), zeros if absent;
//!   P [dirs, 3·H] holds p_i, p_o, p_f, the order the LSTM kernel takes.
//! - `direction`: forward, reverse, or bidirectional (the second direction runs reversed).
//! - Outputs: Y [T, dirs, B, H] ([B, T, dirs, H] with layout 1), zero at the steps past a
//!   sequence's length (the kernels carry the last state there); Y_h and Y_c [dirs, B, H]
//!   ([B, dirs, H] with layout 1): the final slot of each direction's states.
//!
//! The fused cells apply the default activations only (Sigmoid for the gates, Tanh
//! otherwise), without `clip` or the LSTM's `input_forget`: cases asking for anything else
//! are skipped with the reason. The fused GRU cell is ONNX's `linear_before_reset` 1; the
//! ONNX default 0 is composed from the eager kernels step by step (see
//! [`gru_reset_before_product`]).

use super::{npy, Case, Inputs};
use shadergrad::error::{Error, Result};
use shadergrad::kernels::recurrent::{
    recurrent_forward, CellKind, RecurrentInputs, RecurrentShape,
};
use shadergrad::tensor::{Indices, Tensor};

/// The attributes the runner understands for a recurrent op in `opset`. `layout` came with
/// opset 14: an older case that sets it is skipped as not understood.
pub(super) fn known_attributes(kind: CellKind, opset: i64) -> &'static [&'static str] {
    const COMMON: usize = 6;
    const RNN: [&str; 7] = [
        "activation_alpha",
        "activation_beta",
        "activations",
        "clip",
        "direction",
        "hidden_size",
        "layout",
    ];
    const GRU: [&str; 8] = [
        "activation_alpha",
        "activation_beta",
        "activations",
        "clip",
        "direction",
        "hidden_size",
        "linear_before_reset",
        "layout",
    ];
    const LSTM: [&str; 8] = [
        "activation_alpha",
        "activation_beta",
        "activations",
        "clip",
        "direction",
        "hidden_size",
        "input_forget",
        "layout",
    ];
    // layout is the last entry of each list.
    let (all, own) = match kind {
        CellKind::Rnn => (&RNN[..], COMMON),
        CellKind::Gru => (&GRU[..], COMMON + 1),
        CellKind::Lstm => (&LSTM[..], COMMON + 1),
    };
    if opset >= 14 {
        all
    } else {
        &all[..own]
    }
}

/// The activations the fused cells apply, per direction, as ONNX names them.
fn default_activations(kind: CellKind) -> &'static [&'static str] {
    match kind {
        CellKind::Rnn => &["Tanh"],
        CellKind::Gru => &["Sigmoid", "Tanh"],
        CellKind::Lstm => &["Sigmoid", "Tanh", "Tanh"],
    }
}

/// Why a case whose attributes the runner understands cannot run on the fused cells, or
/// `None` if it can.
pub(super) fn unsupported(case: &Case, kind: CellKind) -> Result<Option<String>> {
    let op = &case.op;
    if let Some(value) = case.attributes.get("activations") {
        let names: Option<Vec<&str>> = value
            .as_array()
            .and_then(|list| list.iter().map(|v| v.as_str()).collect());
        let names =
            names.ok_or_else(|| case.attribute_error("activations", "a list of strings"))?;
        let defaults = default_activations(kind);
        let per_direction = names.chunks(defaults.len());
        let all_default = !names.is_empty()
            && names.len() % defaults.len() == 0
            && per_direction.into_iter().all(|chunk| chunk == defaults);
        if !all_default {
            return Ok(Some(format!(
                "{op}: activations {names:?} are not supported: the fused cells apply \
                 only the defaults {defaults:?} per direction"
            )));
        }
    }
    for name in ["activation_alpha", "activation_beta"] {
        if case.attributes.contains_key(name) {
            return Ok(Some(format!(
                "{op}: {name} is not supported: it parametrizes activations other than \
                 the defaults, which the fused cells lack"
            )));
        }
    }
    if case.attributes.contains_key("clip") {
        return Ok(Some(format!(
            "{op}: clip is not supported: the fused cells do not clip the gate inputs"
        )));
    }
    if kind == CellKind::Lstm && case.int_attribute("input_forget", 0)? != 0 {
        return Ok(Some(
            "LSTM: input_forget 1 (input and forget gates coupled) is not supported by the \
             fused cell"
                .to_string(),
        ));
    }
    Ok(None)
}

/// The sizes and options of one case, checked against its tensors.
struct Setup {
    kind: CellKind,
    steps: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    /// Whether direction 0 runs reversed (`direction` = reverse).
    reverse: bool,
    /// GRU only: ONNX's linear_before_reset.
    linear_before_reset: bool,
}

impl Setup {
    fn gate_width(&self) -> usize {
        self.kind.gates() * self.hidden
    }

    /// Whether direction `d` runs from the last step to the first.
    fn reversed(&self, d: usize) -> bool {
        self.reverse || d == 1
    }

    fn shape(&self, d: usize) -> RecurrentShape {
        RecurrentShape {
            kind: self.kind,
            steps: self.steps,
            batch: self.batch,
            hidden: self.hidden,
            reverse: self.reversed(d),
        }
    }
}

/// The kernels' gate blocks as positions of ONNX's: block k of ours is block order[k] of
/// ONNX's (GRU: ONNX z, r, h → r, z, n; LSTM: ONNX i, o, f, c → i, f, g, o).
fn gate_order(kind: CellKind) -> &'static [usize] {
    match kind {
        CellKind::Rnn => &[0],
        CellKind::Gru => &[1, 0, 2],
        CellKind::Lstm => &[0, 2, 3, 1],
    }
}

/// The blocks `order` of `data` (consecutive blocks of `block` values each), concatenated.
fn blocks(data: &[f32], block: usize, order: &[usize]) -> Vec<f32> {
    order
        .iter()
        .flat_map(|&k| data[k * block..(k + 1) * block].iter().copied())
        .collect()
}

/// A [rows, cols] row-major matrix transposed.
fn transposed(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = data[i * cols + j];
        }
    }
    out
}

/// Input `index` as float32 values with its shape, or `None` if the case omits it.
fn floats<'i>(inputs: &'i Inputs, index: usize) -> Result<Option<(&'i [f32], &'i [usize])>> {
    let Some(array) = inputs.array(index) else {
        return Ok(None);
    };
    match &array.data {
        npy::Data::F32(values) => Ok(Some((values, &array.shape))),
        _ => Err(inputs.wrong_type(index, "float32: the engine computes float32 only")),
    }
}

/// Runs a recurrent case: the outputs Y, Y_h and (LSTM) Y_c.
pub(super) fn run(case: &Case, inputs: &Inputs, kind: CellKind) -> Result<Vec<Tensor>> {
    let gpu = inputs.gpu;
    let fail = |message: String| Error::format(case.json_path(), message);
    let batch_major = match case.int_attribute("layout", 0)? {
        0 => false,
        1 => true,
        other => return Err(fail(format!("layout is {other}, expected 0 or 1"))),
    };
    let (dirs, reverse) = match case.string_attribute("direction", "forward")? {
        "forward" => (1, false),
        "reverse" => (1, true),
        "bidirectional" => (2, false),
        other => {
            return Err(fail(format!(
                "direction is {other:?}, expected forward, reverse or bidirectional"
            )))
        }
    };
    let x = inputs.tensor(0)?;
    let &[outer, inner, input] = x.shape() else {
        return Err(fail(format!("X is {:?}, expected 3 axes", x.shape())));
    };
    let (steps, batch) = if batch_major {
        (inner, outer)
    } else {
        (outer, inner)
    };
    if steps == 0 || batch == 0 {
        return Err(fail(format!(
            "X is {:?}: a recurrence needs at least one step and one sequence",
            x.shape()
        )));
    }
    let (w, w_shape) = floats(inputs, 1)?.ok_or_else(|| fail(format!("{} needs W", case.op)))?;
    let (r, r_shape) = floats(inputs, 2)?.ok_or_else(|| fail(format!("{} needs R", case.op)))?;
    let hidden = r_shape.get(2).copied().unwrap_or(0);
    if let Some(size) = case.optional_int_attribute("hidden_size")? {
        if usize::try_from(size).ok() != Some(hidden) {
            return Err(fail(format!(
                "hidden_size is {size}, but R {r_shape:?} has {hidden} hidden units"
            )));
        }
    }
    let setup = Setup {
        kind,
        steps,
        batch,
        input,
        hidden,
        reverse,
        linear_before_reset: case.int_attribute("linear_before_reset", 0)? != 0,
    };
    let width = setup.gate_width();
    let check = |name: &str, actual: &[usize], expected: &[usize]| {
        if actual == expected {
            Ok(())
        } else {
            Err(fail(format!(
                "{name} is {actual:?}, expected {expected:?} (dirs={dirs}, G·H={width}, \
                 In={input}, H={hidden}, B={batch})"
            )))
        }
    };
    check("W", w_shape, &[dirs, width, input])?;
    check("R", r_shape, &[dirs, width, hidden])?;
    let bias = floats(inputs, 3)?;
    if let Some((_, shape)) = bias {
        check("B", shape, &[dirs, 2 * width])?;
    }
    let state_shape = if batch_major {
        [batch, dirs, hidden]
    } else {
        [dirs, batch, hidden]
    };
    let initial_h = floats(inputs, 5)?;
    if let Some((_, shape)) = initial_h {
        check("initial_h", shape, &state_shape)?;
    }
    let (initial_c, peepholes) = match kind {
        CellKind::Lstm => (floats(inputs, 6)?, floats(inputs, 7)?),
        _ => (None, None),
    };
    if let Some((_, shape)) = initial_c {
        check("initial_c", shape, &state_shape)?;
    }
    if let Some((_, shape)) = peepholes {
        check("P", shape, &[dirs, 3 * hidden])?;
    }
    let lengths = match inputs.optional_ints(4)? {
        None => None,
        Some(lengths) => {
            if lengths.len() != batch {
                return Err(fail(format!(
                    "sequence_lens has {} entries, expected B = {batch}",
                    lengths.len()
                )));
            }
            let lengths = lengths
                .iter()
                .map(|&n| u32::try_from(n).ok().filter(|&n| n as usize <= steps))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| {
                    fail(format!(
                        "sequence_lens {lengths:?} holds a value outside 0..={steps}"
                    ))
                })?;
            Some(lengths)
        }
    };

    // Time-major X as [T·B, In] rows for the input projections.
    let x = if batch_major {
        x.permute(&[1, 0, 2])?
    } else {
        x
    };
    let x_rows = x.reshape(&[steps * batch, input])?;
    let lengths_gpu = lengths
        .as_ref()
        .map(|lengths| Indices::from_slice(gpu, lengths, &[batch]))
        .transpose()?;
    // [T, B, 1]: 1 where step t of sequence b is real, 0 past its length.
    let real = lengths
        .as_ref()
        .map(|lengths| {
            let mask: Vec<f32> = (0..steps)
                .flat_map(|t| {
                    lengths
                        .iter()
                        .map(move |&n| f32::from(u8::from(t < n as usize)))
                })
                .collect();
            Tensor::from_slice(gpu, &mask, &[steps, batch, 1])
        })
        .transpose()?;

    let mut y_parts = Vec::with_capacity(dirs);
    let mut y_h_parts = Vec::with_capacity(dirs);
    let mut y_c_parts = Vec::with_capacity(dirs);
    for d in 0..dirs {
        let weights = Direction {
            w: &w[d * width * input..(d + 1) * width * input],
            r: &r[d * width * hidden..(d + 1) * width * hidden],
            wb: bias.map(|(b, _)| &b[2 * d * width..(2 * d + 1) * width]),
            rb: bias.map(|(b, _)| &b[(2 * d + 1) * width..(2 * d + 2) * width]),
        };
        let state = |initial: Option<(&[f32], &[usize])>| -> Result<Tensor> {
            let values = match initial {
                None => vec![0.0; batch * hidden],
                Some((values, _)) if batch_major => (0..batch)
                    .flat_map(|b| values[(b * dirs + d) * hidden..][..hidden].iter().copied())
                    .collect(),
                Some((values, _)) => values[d * batch * hidden..(d + 1) * batch * hidden].to_vec(),
            };
            Tensor::from_slice(gpu, &values, &[batch, hidden])
        };
        let h0 = state(initial_h)?;
        let shape = setup.shape(d);
        let (states, cells) = if kind == CellKind::Gru && !setup.linear_before_reset {
            let states =
                gru_reset_before_product(&setup, &x_rows, &weights, &h0, real.as_ref(), &shape)?;
            (states, None)
        } else {
            let order = gate_order(kind);
            let w_d = Tensor::from_slice(
                gpu,
                &blocks(weights.w, hidden * input, order),
                &[width, input],
            )?;
            let r_d = Tensor::from_slice(
                gpu,
                &transposed(&blocks(weights.r, hidden * hidden, order), width, hidden),
                &[hidden, width],
            )?;
            let bias_of = |part: Option<&[f32]>| match part {
                Some(values) => Tensor::from_slice(gpu, &blocks(values, hidden, order), &[width]),
                None => Tensor::zeros(gpu, &[width]),
            };
            let (wb, rb) = (bias_of(weights.wb)?, bias_of(weights.rb)?);
            let gx = x_rows
                .gemm(&w_d)
                .trans_b(true)
                .bias(&wb)
                .run()?
                .reshape(&shape.gates_shape())?;
            let c0 = match kind {
                CellKind::Lstm => Some(state(initial_c)?),
                _ => None,
            };
            let p = peepholes
                .map(|(p, _)| {
                    Tensor::from_slice(gpu, &p[d * 3 * hidden..(d + 1) * 3 * hidden], &[3 * hidden])
                })
                .transpose()?;
            let outputs = recurrent_forward(
                &RecurrentInputs {
                    gx: &gx,
                    r: &r_d,
                    r_bias: &rb,
                    h0: &h0,
                    c0: c0.as_ref(),
                    lengths: lengths_gpu.as_ref(),
                    peepholes: p.as_ref(),
                },
                &shape,
            )?;
            (outputs.states, outputs.cells)
        };
        // Step t's output is slot t+1 forward, slot t reversed: T slots in a row.
        let first = shape.output_slot(0).min(shape.output_slot(steps - 1));
        let mut y = states.slice(0, first as isize, (first + steps) as isize)?;
        if let Some(real) = &real {
            y = y.mul(real)?;
        }
        y_parts.push(y.reshape(&[steps, 1, batch, hidden])?);
        let last = shape.final_slot() as isize;
        y_h_parts.push(states.slice(0, last, last + 1)?);
        if let Some(cells) = cells {
            y_c_parts.push(cells.slice(0, last, last + 1)?);
        }
    }
    let join = |parts: &[Tensor], axis: isize| -> Result<Tensor> {
        match parts {
            [one] => Ok(one.clone()),
            _ => Tensor::concat(&parts.iter().collect::<Vec<_>>(), axis),
        }
    };
    // [T, dirs, B, H] → [B, T, dirs, H]; [dirs, B, H] → [B, dirs, H].
    let y = join(&y_parts, 1)?;
    let y = if batch_major {
        y.permute(&[2, 0, 1, 3])?
    } else {
        y
    };
    let finals = |parts: &[Tensor]| -> Result<Tensor> {
        let joined = join(parts, 0)?;
        if batch_major {
            joined.permute(&[1, 0, 2])
        } else {
            Ok(joined)
        }
    };
    let mut outputs = vec![y, finals(&y_h_parts)?];
    if kind == CellKind::Lstm {
        outputs.push(finals(&y_c_parts)?);
    }
    Ok(outputs)
}

/// One direction's slices of W, R and B, in ONNX's gate order.
struct Direction<'a> {
    /// [G·H, In]
    w: &'a [f32],
    /// [G·H, H]
    r: &'a [f32],
    /// [G·H] each, `None` when the case has no B.
    wb: Option<&'a [f32]>,
    rb: Option<&'a [f32]>,
}

/// The GRU with ONNX's default linear_before_reset = 0, on the GPU, returning the states
/// [T+1, B, H] in the slots of [`RecurrentShape`].
///
/// Here n = tanh(gx_n + (r⊙h_prev)·R_nᵀ + Rb_n): the reset gate multiplies h_prev before
/// the recurrent product, so r must be known before that product can start. The fused GRU
/// cell takes one product gh = h_prev·R for all three gates up front and applies r after it
/// (n = tanh(gx_n + r⊙(h_prev·R_nᵀ + Rb_n)), linear_before_reset = 1), which is a different
/// function. So this mode is composed from the eager kernels, step by step: a gemm for z
/// and r, a sigmoid, r⊙h_prev, a second gemm with R_n, a tanh and the blend. Slower (about
/// ten dispatches per step instead of two) but exact. `real` ([T, B, 1], 1 where a step is
/// within its sequence) keeps the state unchanged past a sequence's length, as the fused
/// cells do.
fn gru_reset_before_product(
    setup: &Setup,
    x_rows: &Tensor,
    weights: &Direction,
    h0: &Tensor,
    real: Option<&Tensor>,
    shape: &RecurrentShape,
) -> Result<Tensor> {
    let gpu = x_rows.gpu();
    let (steps, batch, input, hidden) = (setup.steps, setup.batch, setup.input, setup.hidden);
    let upload = |values: Vec<f32>, shape: &[usize]| Tensor::from_slice(gpu, &values, shape);
    // ONNX's blocks z, r (together) and h, kept in that order.
    let zr = [0, 1];
    let w_zr = upload(blocks(weights.w, hidden * input, &zr), &[2 * hidden, input])?;
    let w_n = upload(blocks(weights.w, hidden * input, &[2]), &[hidden, input])?;
    let r_zr = upload(
        blocks(weights.r, hidden * hidden, &zr),
        &[2 * hidden, hidden],
    )?;
    let r_n = upload(blocks(weights.r, hidden * hidden, &[2]), &[hidden, hidden])?;
    let bias = |part: Option<&[f32]>, order: &[usize]| match part {
        Some(values) => upload(blocks(values, hidden, order), &[order.len() * hidden]),
        None => Tensor::zeros(gpu, &[order.len() * hidden]),
    };
    let (wb_zr, wb_n) = (bias(weights.wb, &zr)?, bias(weights.wb, &[2])?);
    let (rb_zr, rb_n) = (bias(weights.rb, &zr)?, bias(weights.rb, &[2])?);
    let gx_zr = x_rows.gemm(&w_zr).trans_b(true).bias(&wb_zr).run()?;
    let gx_n = x_rows.gemm(&w_n).trans_b(true).bias(&wb_n).run()?;
    let gx_zr = gx_zr.reshape(&[steps, batch, 2 * hidden])?;
    let gx_n = gx_n.reshape(&[steps, batch, hidden])?;
    let step = |t: usize, x: &Tensor, columns: usize| -> Result<Tensor> {
        x.slice(0, t as isize, t as isize + 1)?
            .reshape(&[batch, columns])
    };

    let mut slots: Vec<Option<Tensor>> = vec![None; steps + 1];
    slots[shape.initial_slot()] = Some(h0.clone());
    let mut h = h0.clone();
    for t in shape.forward_order() {
        let (gx_zr_t, gx_n_t) = (step(t, &gx_zr, 2 * hidden)?, step(t, &gx_n, hidden)?);
        // [z | r] = σ(gx_zr + h·R_zrᵀ + Rb_zr)
        let gates = h
            .gemm(&r_zr)
            .trans_b(true)
            .bias(&rb_zr)
            .c(&gx_zr_t, 1.0)
            .run()?
            .sigmoid()?;
        let z = gates.slice(1, 0, hidden as isize)?;
        let r = gates.slice(1, hidden as isize, 2 * hidden as isize)?;
        // n = tanh(gx_n + (r⊙h)·R_nᵀ + Rb_n)
        let n = r
            .mul(&h)?
            .gemm(&r_n)
            .trans_b(true)
            .bias(&rb_n)
            .c(&gx_n_t, 1.0)
            .run()?
            .tanh()?;
        // h' = (1 − z)⊙n + z⊙h = n + z⊙(h − n)
        let mut next = n.add(&z.mul(&h.sub(&n)?)?)?;
        if let Some(real) = real {
            // h + real·(h' − h): h' within the sequence, h carried past its end.
            let real_t = step(t, real, 1)?;
            next = h.add(&real_t.mul(&next.sub(&h)?)?)?;
        }
        slots[shape.output_slot(t)] = Some(next.clone());
        h = next;
    }
    let slots = slots
        .into_iter()
        .map(|slot| {
            slot.expect("every slot written")
                .reshape(&[1, batch, hidden])
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::concat(&slots.iter().collect::<Vec<_>>(), 0)
}
