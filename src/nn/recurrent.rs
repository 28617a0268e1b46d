//! [`Recurrent`]: PyTorch's `nn.RNN`, `nn.GRU` and `nn.LSTM` over a time-major sequence x
//! `[T, B, input]`, with their parameter names, layouts and gate orders, so that a
//! `state_dict` of one loads into the other:
//!
//! | name | shape |
//! |---|---|
//! | `weight_ih_l{k}` | `[G·H, input]` (layer 0) or `[G·H, D·H]` |
//! | `weight_hh_l{k}` | `[G·H, H]` |
//! | `bias_ih_l{k}`, `bias_hh_l{k}` | `[G·H]` |
//!
//! with G = 1 (RNN, tanh), 3 (GRU: r, z, n) or 4 (LSTM: i, f, g, o), D = 2 directions when
//! bidirectional (the reverse direction's parameters end in `_reverse`). Every weight and
//! bias starts uniform in ±1/√H, as PyTorch's do.
//!
//! Each layer and direction is one [`Graph::recurrent`] op: the input projection of every
//! step in one matmul (x·W_ihᵀ + b_ih), then per step one recurrent product and one fused
//! cell kernel.

use crate::error::{Error, Result};
use crate::graph::{GemmSpec, Graph, Parameter, RecurrentSpec, Var};
use crate::kernels::recurrent::CellKind;
use crate::nn::{Init, Parameters};

/// A recurrent state: h, and c for an LSTM.
#[derive(Debug, Clone, Copy)]
pub struct State {
    /// The hidden state, shape `[B, H]`: what the next layer and the attention read.
    pub h: Var,
    /// The LSTM's cell state, shape `[B, H]`; `None` for the RNN and GRU cells, which
    /// have only `h`.
    pub c: Option<Var>,
}

/// Which way a recurrent layer reads its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directions {
    /// First step to last.
    Forward,
    /// Both ways, the two directions' states concatenated (PyTorch's `bidirectional=True`).
    Bidirectional,
}

impl Directions {
    /// How many directions: D.
    pub fn count(self) -> usize {
        match self {
            Directions::Forward => 1,
            Directions::Bidirectional => 2,
        }
    }
}

/// The sizes of a [`Recurrent`] stack: PyTorch's constructor arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentConfig {
    /// RNN, GRU or LSTM.
    pub cell: CellKind,
    /// Features of each step of x.
    pub input_size: usize,
    /// H: units of each layer (of each direction).
    pub hidden_size: usize,
    /// Layers stacked, each reading the states of the one below.
    pub num_layers: usize,
    /// One direction or both.
    pub directions: Directions,
}

/// One layer's parameters in one direction.
#[derive(Debug, Clone)]
pub struct RecurrentWeights {
    /// `weight_ih_l{k}`: `[G·H, input]`.
    pub weight_ih: Parameter,
    /// `weight_hh_l{k}`: `[G·H, H]`.
    pub weight_hh: Parameter,
    /// `bias_ih_l{k}`: `[G·H]`.
    pub bias_ih: Parameter,
    /// `bias_hh_l{k}`: `[G·H]`.
    pub bias_hh: Parameter,
}

/// What [`Recurrent::forward`] gives.
#[derive(Debug, Clone)]
pub struct RecurrentOutput {
    /// The top layer's states `[T, B, D·H]` (both directions' side by side).
    pub output: Var,
    /// Each layer's final state per direction, in PyTorch's `h_n` order: layer 0 forward,
    /// layer 0 reverse, layer 1 forward, …
    pub finals: Vec<State>,
}

/// PyTorch's `nn.RNN` / `nn.GRU` / `nn.LSTM` (time-major, `batch_first=False`).
#[derive(Debug, Clone)]
pub struct Recurrent {
    /// The sizes.
    pub config: RecurrentConfig,
    /// Per layer, per direction (forward first), its parameters.
    pub layers: Vec<Vec<RecurrentWeights>>,
}

impl Recurrent {
    /// The stack's parameters in `params`, in PyTorch's state-dict order.
    pub fn new(params: &Parameters, config: RecurrentConfig) -> Result<Recurrent> {
        let (hidden, input) = (config.hidden_size, config.input_size);
        if hidden == 0 || input == 0 || config.num_layers == 0 {
            return Err(Error::invalid(
                "recurrent",
                format!(
                    "{}: input size {input}, hidden size {hidden} and {} layers must all be \
                     at least 1",
                    params.path("weight_ih_l0"),
                    config.num_layers
                ),
            ));
        }
        let gated = config.cell.gates().saturating_mul(hidden);
        let init = Init::Uniform(1.0 / (hidden as f32).sqrt());
        let directions = config.directions.count();
        let layers = (0..config.num_layers)
            .map(|layer| {
                let layer_input = if layer == 0 {
                    input
                } else {
                    directions * hidden
                };
                (0..directions)
                    .map(|direction| {
                        let suffix = match direction {
                            0 => format!("l{layer}"),
                            _ => format!("l{layer}_reverse"),
                        };
                        let get = |what: &str, shape: &[usize]| {
                            params.get_or_init(&format!("{what}_{suffix}"), shape, init)
                        };
                        Ok(RecurrentWeights {
                            weight_ih: get("weight_ih", &[gated, layer_input])?,
                            weight_hh: get("weight_hh", &[gated, hidden])?,
                            bias_ih: get("bias_ih", &[gated])?,
                            bias_hh: get("bias_hh", &[gated])?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Recurrent { config, layers })
    }

    /// Zero states `[B, H]` for every layer and direction (and zero cells for an LSTM).
    pub fn zero_states(&self, g: &mut Graph, batch: usize) -> Result<Vec<State>> {
        let hidden = self.config.hidden_size;
        let count = self.config.num_layers * self.config.directions.count();
        (0..count)
            .map(|_| {
                let h = g.constant(vec![0.0; batch * hidden], &[batch, hidden])?;
                let c = match self.config.cell {
                    CellKind::Lstm => {
                        Some(g.constant(vec![0.0; batch * hidden], &[batch, hidden])?)
                    }
                    CellKind::Rnn | CellKind::Gru => None,
                };
                Ok(State { h, c })
            })
            .collect()
    }

    /// The stack over x `[T, B, input]` from `initial` states (one per layer and direction,
    /// in [`RecurrentOutput::finals`]' order; zeros when `None`). With `lengths` (u32
    /// `[B]`), an item's steps at and after its length keep its state, as a packed
    /// sequence would in PyTorch: its final state is the one after its last real step
    /// (forward) or after step 0 (reverse, which starts from its last real step).
    pub fn forward(
        &self,
        g: &mut Graph,
        x: Var,
        initial: Option<&[State]>,
        lengths: Option<Var>,
    ) -> Result<RecurrentOutput> {
        let config = &self.config;
        let (steps, batch) = match *g.shape(x) {
            [steps, batch, features] if features == config.input_size => (steps, batch),
            ref other => {
                return Err(Error::invalid(
                    "recurrent",
                    format!(
                        "{}: expected x of [T, B, {}], got {other:?}",
                        self.layers[0][0].weight_ih.name(),
                        config.input_size
                    ),
                ))
            }
        };
        let expected_states = config.num_layers * config.directions.count();
        let zeros;
        let initial = match initial {
            Some(states) if states.len() == expected_states => states,
            Some(states) => {
                return Err(Error::invalid(
                    "recurrent",
                    format!(
                        "{} layers of {} direction(s) take {expected_states} initial states, \
                         got {}",
                        config.num_layers,
                        config.directions.count(),
                        states.len()
                    ),
                ))
            }
            None => {
                zeros = self.zero_states(g, batch)?;
                &zeros
            }
        };
        let mut x = x;
        let mut finals = Vec::with_capacity(expected_states);
        let mut starts = initial.iter();
        for layer in &self.layers {
            let mut outputs = Vec::with_capacity(layer.len());
            for (direction, weights) in layer.iter().enumerate() {
                let start = *starts
                    .next()
                    .expect("one initial state per layer and direction");
                let (sequence, last) =
                    self.direction(g, weights, x, start, lengths, direction == 1, steps, batch)?;
                outputs.push(sequence);
                finals.push(last);
            }
            x = match outputs[..] {
                [single] => single,
                _ => g.concat(&outputs, 2)?,
            };
        }
        Ok(RecurrentOutput { output: x, finals })
    }

    /// One layer in one direction: its states `[T, B, H]` and its final state.
    #[allow(clippy::too_many_arguments)]
    fn direction(
        &self,
        g: &mut Graph,
        weights: &RecurrentWeights,
        x: Var,
        start: State,
        lengths: Option<Var>,
        reverse: bool,
        steps: usize,
        batch: usize,
    ) -> Result<(Var, State)> {
        let input = g.shape(x)[2];
        let gated = weights.weight_ih.shape()[0];
        let weight_ih = g.param(&weights.weight_ih)?;
        let bias_ih = g.param(&weights.bias_ih)?;
        let rows = g.reshape(x, &[steps * batch, input])?;
        let gx = g.gemm(rows, weight_ih, GemmSpec::new().transpose_b().bias(bias_ih))?;
        let gx = g.reshape(gx, &[steps, batch, gated])?;
        // The recurrent op multiplies h·R with R [H, G·H]: W_hhᵀ.
        let weight_hh = g.param(&weights.weight_hh)?;
        let r = g.transpose(weight_hh)?;
        let bias_hh = g.param(&weights.bias_hh)?;
        let spec = RecurrentSpec {
            kind: self.config.cell,
            reverse,
            lengths,
            c0: start.c,
        };
        let out = g.recurrent(gx, r, bias_hh, start.h, &spec)?;
        Ok((
            out.sequence,
            State {
                h: out.last,
                c: out.last_cell,
            },
        ))
    }
}
