//! The rules of `Recurrent`, a recurrent layer over a whole sequence, and of its gradient
//! `RecurrentGrad` (`kernels::recurrent`).

use crate::error::{Error, Result};
use crate::kernels::recurrent::{
    recurrent_backward_dispatches, recurrent_forward_dispatches, CellKind, RecurrentBackwardInputs,
    RecurrentGrads, RecurrentInputs, RecurrentOutputs, RecurrentShape,
};

use super::super::{mismatch, DType, Graph, Var};
use super::{check_inputs, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// A recurrent layer (RNN, GRU or LSTM, `kernels::recurrent`) over a whole sequence in
    /// one direction: gx [T, B, G·H] holds the input projections x·Wx + bx of every step
    /// (one matmul beforehand), r [H, G·H] and r_bias [G·H] the recurrent weight and bias
    /// (gh = h·r + r_bias), h0 [B, H] the initial state. Each step is one recurrent matmul
    /// and one fused cell kernel, forward and backward.
    pub fn recurrent(
        &mut self,
        gx: Var,
        r: Var,
        r_bias: Var,
        h0: Var,
        spec: &RecurrentSpec,
    ) -> Result<RecurrentOutput> {
        let lstm = spec.kind == CellKind::Lstm;
        if lstm != spec.c0.is_some() {
            return Err(Error::invalid(
                "recurrent",
                format!(
                    "an LSTM needs an initial cell c0 and other cells take none; got a {} \
                     with{} c0",
                    spec.kind.name(),
                    if spec.c0.is_some() { "" } else { "out" }
                ),
            ));
        }
        let mut inputs = vec![gx, r, r_bias, h0];
        inputs.extend(spec.c0);
        inputs.extend(spec.lengths);
        let op = Op::Recurrent {
            kind: spec.kind,
            reverse: spec.reverse,
            lengths: spec.lengths.is_some(),
        };
        let outputs = self.push(op, &inputs)?;
        let steps = self.shape(gx)[0] as isize;
        let (sequence, last) = if spec.reverse {
            (0..steps, 0)
        } else {
            (1..steps + 1, steps)
        };
        let batch_hidden = self.shape(h0).to_vec();
        let final_slot = |g: &mut Graph, all: Var| -> Result<Var> {
            let slot = g.slice(all, 0, last, last + 1)?;
            g.reshape(slot, &batch_hidden)
        };
        let last_state = final_slot(self, outputs[0])?;
        let last_cell = if lstm {
            Some(final_slot(self, outputs[1])?)
        } else {
            None
        };
        Ok(RecurrentOutput {
            sequence: self.slice(outputs[0], 0, sequence.start, sequence.end)?,
            last: last_state,
            last_cell,
        })
    }
}

/// What [`Graph::recurrent`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentOutput {
    /// The state after each step, [T, B, H], time t at index t in either direction (a step
    /// past a batch item's length repeats the state before it).
    pub sequence: Var,
    /// The final state [B, H]: after each item's last real step going forward, after step 0
    /// going backward.
    pub last: Var,
    /// An LSTM's final cell [B, H].
    pub last_cell: Option<Var>,
}

/// The options of [`Graph::recurrent`] besides its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentSpec {
    /// RNN, GRU or LSTM.
    pub kind: CellKind,
    /// Runs from the last step to the first (the backward half of a bidirectional layer).
    pub reverse: bool,
    /// u32 \[B\]: the steps at and after an item's length keep its state.
    pub lengths: Option<Var>,
    /// An LSTM's initial cell [B, H] (required for an LSTM, refused otherwise).
    pub c0: Option<Var>,
}

impl RecurrentSpec {
    /// A forward layer over full-length sequences.
    pub fn new(kind: CellKind) -> Self {
        RecurrentSpec {
            kind,
            reverse: false,
            lengths: None,
            c0: None,
        }
    }
}

/// Outputs the states [T+1, B, H], the cells likewise for an LSTM, and the saved gates.
pub(super) fn infer_recurrent(
    op: &'static str,
    kind: CellKind,
    lengths: bool,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    let lstm = kind == CellKind::Lstm;
    let mut types = vec![DType::F32; 4 + usize::from(lstm)];
    if lengths {
        types.push(DType::U32);
    }
    check_inputs(op, inputs, &types)?;
    let (gx, r, r_bias, h0) = (inputs[0].0, inputs[1].0, inputs[2].0, inputs[3].0);
    let &[steps, batch, width] = gx else {
        return Err(Error::invalid(
            op,
            format!("gx must be [T, B, G·H] (rank 3), got {gx:?}"),
        ));
    };
    let &[hidden, _] = r else {
        return Err(mismatch(op, gx, r, "r must be [H, G·H]".into()));
    };
    let gated = kind.gates() * hidden;
    let expected = format!(
        "{} gates of H = {hidden}: gx [T, B, {gated}], r [{hidden}, {gated}], \
         r_bias [{gated}], h0 [B, {hidden}]",
        kind.name()
    );
    if width != gated || r != [hidden, gated] || r_bias != [gated] {
        return Err(mismatch(op, gx, r, expected));
    }
    let mut states = vec![h0];
    if lstm {
        states.push(inputs[4].0);
    }
    for state in states {
        if state != [batch, hidden] {
            return Err(mismatch(op, gx, state, expected.clone()));
        }
    }
    if lengths && inputs[inputs.len() - 1].0 != [batch] {
        return Err(mismatch(
            op,
            gx,
            inputs[inputs.len() - 1].0,
            format!("the lengths must be [{batch}], one per batch item"),
        ));
    }
    if steps == 0 || batch == 0 || hidden == 0 {
        return Err(Error::ZeroSized {
            op,
            shape: gx.to_vec(),
            why: "a recurrent layer needs at least one step, batch item and unit",
        });
    }
    let mut outputs = vec![(vec![steps + 1, batch, hidden], DType::F32)];
    if lstm {
        outputs.push((vec![steps + 1, batch, hidden], DType::F32));
    }
    outputs.push((vec![steps, batch, kind.saved() * hidden], DType::F32));
    Ok(outputs)
}

/// `RecurrentGrad` from the gradients that reached the states and the cells, separately
/// (the states through the sequence and the last state, the cells only through the last);
/// the lengths have no gradient.
pub(super) fn backward_recurrent(
    g: &mut Graph,
    kind: CellKind,
    reverse: bool,
    lengths: bool,
    inputs: &[Var],
    outputs: &[Var],
    grads: &[Option<Var>],
) -> Result<Vec<Option<Var>>> {
    let lstm = kind == CellKind::Lstm;
    let dstates = grads[0];
    let dcells = if lstm { grads[1] } else { None };
    if dstates.is_none() && dcells.is_none() {
        return Ok(vec![None; inputs.len()]);
    }
    let mut grad_inputs: Vec<Var> = dstates.into_iter().chain(dcells).collect();
    grad_inputs.push(outputs[0]);
    if lstm {
        grad_inputs.push(outputs[1]);
    }
    grad_inputs.push(outputs[outputs.len() - 1]);
    grad_inputs.push(inputs[1]);
    if lengths {
        grad_inputs.push(inputs[inputs.len() - 1]);
    }
    let op = Op::RecurrentGrad {
        kind,
        reverse,
        dstates: dstates.is_some(),
        dcells: dcells.is_some(),
        lengths,
    };
    let mut input_grads: Vec<Option<Var>> =
        g.push(op, &grad_inputs)?.into_iter().map(Some).collect();
    if lengths {
        input_grads.push(None);
    }
    Ok(input_grads)
}

pub(super) fn record_recurrent(
    kind: CellKind,
    reverse: bool,
    lengths: bool,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let lstm = kind == CellKind::Lstm;
    let (gx, r) = (inputs[0].f32(), inputs[1].f32());
    let shape = RecurrentShape {
        kind,
        steps: gx.shape()[0],
        batch: gx.shape()[1],
        hidden: r.shape()[0],
        reverse,
    };
    let layer = RecurrentInputs {
        gx,
        r,
        r_bias: inputs[2].f32(),
        h0: inputs[3].f32(),
        c0: lstm.then(|| inputs[4].f32()),
        lengths: lengths.then(|| inputs[inputs.len() - 1].u32()),
        peepholes: None,
    };
    let written = RecurrentOutputs {
        states: outputs[0].f32().clone(),
        cells: lstm.then(|| outputs[1].f32().clone()),
        saved: outputs[outputs.len() - 1].f32().clone(),
    };
    let (dispatches, scratch) = recurrent_forward_dispatches(&layer, &written, &shape)?;
    Ok(Recorded {
        dispatches,
        scratch,
        groupings: Vec::new(),
    })
}

/// Outputs dgx, dr, dr_bias, dh0 and, for an LSTM, dc0.
pub(super) fn infer_recurrent_grad(
    op: &'static str,
    kind: CellKind,
    dstates: bool,
    dcells: bool,
    lengths: bool,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    let lstm = kind == CellKind::Lstm;
    let first = usize::from(dstates) + usize::from(dcells);
    let mut types = vec![DType::F32; first + 3 + usize::from(lstm)];
    if lengths {
        types.push(DType::U32);
    }
    check_inputs(op, inputs, &types)?;
    let states = inputs[first].0;
    let r = inputs[first + 2 + usize::from(lstm)].0;
    let &[slots, batch, hidden] = states else {
        return Err(Error::invalid(
            op,
            format!("the states must be [T+1, B, H], got {states:?}"),
        ));
    };
    let gated = kind.gates() * hidden;
    let mut outputs = vec![
        (vec![slots - 1, batch, gated], DType::F32),
        (r.to_vec(), DType::F32),
        (vec![gated], DType::F32),
        (vec![batch, hidden], DType::F32),
    ];
    if lstm {
        outputs.push((vec![batch, hidden], DType::F32));
    }
    Ok(outputs)
}

pub(super) fn record_recurrent_grad(
    kind: CellKind,
    reverse: bool,
    dstates: bool,
    dcells: bool,
    lengths: bool,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let lstm = kind == CellKind::Lstm;
    let mut next = inputs.iter();
    let mut take = |present: bool| if present { next.next() } else { None };
    let dstates = take(dstates).map(Operand::f32);
    let dcells = take(dcells).map(Operand::f32);
    let states = take(true).map(Operand::f32);
    let cells = take(lstm).map(Operand::f32);
    let saved = take(true).map(Operand::f32);
    let r = take(true).map(Operand::f32);
    let lengths = take(lengths).map(Operand::u32);
    let (Some(states), Some(saved), Some(r)) = (states, saved, r) else {
        return Err(Error::invalid("recurrent_grad", "missing inputs"));
    };
    let [batch, hidden] = [states.shape()[1], states.shape()[2]];
    let shape = RecurrentShape {
        kind,
        steps: states.shape()[0] - 1,
        batch,
        hidden,
        reverse,
    };
    let backward = RecurrentBackwardInputs {
        dstates,
        dcells,
        states,
        cells,
        saved,
        r,
        lengths,
    };
    let grads = RecurrentGrads {
        dgx: outputs[0].f32().clone(),
        dr: outputs[1].f32().clone(),
        dr_bias: outputs[2].f32().clone(),
        dh0: outputs[3].f32().clone(),
        dc0: lstm.then(|| outputs[4].f32().clone()),
    };
    let (dispatches, scratch) = recurrent_backward_dispatches(&backward, &grads, &shape)?;
    Ok(Recorded {
        dispatches,
        scratch,
        groupings: Vec::new(),
    })
}
