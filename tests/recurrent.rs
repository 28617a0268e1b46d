//! The recurrent family (RNN, GRU, LSTM) against its f64 CPU reference: the forward on odd
//! shapes in both directions, with and without lengths (a length of 0 and a full length
//! among them), the LSTM's peepholes, one larger case; the backward against finite
//! differences of the CPU forward; the errors.

mod common;

use common::{assert_gradient, assert_within, gpu, numeric_gradient, weighted_sum};
use shadergrad::kernels::recurrent::{
    recurrent_backward, recurrent_backward_cpu, recurrent_backward_dispatches, recurrent_forward,
    recurrent_forward_cpu, recurrent_forward_dispatches, CellKind, RecurrentBackwardInputs,
    RecurrentCpu, RecurrentGrads, RecurrentInputs, RecurrentOutputs, RecurrentShape,
};
use shadergrad::rng::Rng;
use shadergrad::{Error, Indices, Tensor};

/// f32 epsilon as f64.
const EPS: f64 = f32::EPSILON as f64;

fn upload(data: &[f64], shape: &[usize]) -> Tensor {
    let data: Vec<f32> = data.iter().map(|&v| v as f32).collect();
    Tensor::from_slice(gpu(), &data, shape).unwrap()
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// `n` values uniform in [low, high), rounded to f32 so that the GPU and the CPU reference
/// see the same numbers.
fn values(rng: &mut Rng, n: usize, low: f32, high: f32) -> Vec<f64> {
    to_f64(&rng.vec(n, low, high))
}

fn shape(
    kind: CellKind,
    (steps, batch, hidden): (usize, usize, usize),
    reverse: bool,
) -> RecurrentShape {
    RecurrentShape {
        kind,
        steps,
        batch,
        hidden,
        reverse,
    }
}

/// Random inputs: R scaled by 1/√H so that pre-activations stay O(1) (gates neither
/// saturate nor vanish) at every H.
fn random_inputs(
    seed: u64,
    shape: &RecurrentShape,
    lengths: Option<Vec<u32>>,
    peepholes: bool,
) -> RecurrentCpu {
    let mut rng = Rng::new(seed);
    let (width, hidden) = (shape.gate_width(), shape.hidden);
    let scale = 1.5 / (hidden as f32).sqrt();
    let state = shape.batch * hidden;
    let lstm = shape.kind == CellKind::Lstm;
    RecurrentCpu {
        gx: values(&mut rng, shape.steps * shape.batch * width, -1.0, 1.0),
        r: values(&mut rng, hidden * width, -scale, scale),
        r_bias: values(&mut rng, width, -0.5, 0.5),
        h0: values(&mut rng, state, -1.0, 1.0),
        c0: lstm.then(|| values(&mut rng, state, -1.0, 1.0)),
        lengths,
        peepholes: (lstm && peepholes).then(|| values(&mut rng, 3 * hidden, -0.5, 0.5)),
    }
}

/// A problem's inputs on the GPU; `inputs()` borrows them.
struct Uploaded {
    gx: Tensor,
    r: Tensor,
    r_bias: Tensor,
    h0: Tensor,
    c0: Option<Tensor>,
    lengths: Option<Indices>,
    peepholes: Option<Tensor>,
}

impl Uploaded {
    fn new(cpu: &RecurrentCpu, shape: &RecurrentShape) -> Uploaded {
        let state = [shape.batch, shape.hidden];
        Uploaded {
            gx: upload(&cpu.gx, &shape.gates_shape()),
            r: upload(&cpu.r, &[shape.hidden, shape.gate_width()]),
            r_bias: upload(&cpu.r_bias, &[shape.gate_width()]),
            h0: upload(&cpu.h0, &state),
            c0: cpu.c0.as_ref().map(|c0| upload(c0, &state)),
            lengths: cpu
                .lengths
                .as_ref()
                .map(|l| Indices::from_slice(gpu(), l, &[shape.batch]).unwrap()),
            peepholes: cpu
                .peepholes
                .as_ref()
                .map(|p| upload(p, &[3 * shape.hidden])),
        }
    }

    fn inputs(&self) -> RecurrentInputs<'_> {
        RecurrentInputs {
            gx: &self.gx,
            r: &self.r,
            r_bias: &self.r_bias,
            h0: &self.h0,
            c0: self.c0.as_ref(),
            lengths: self.lengths.as_ref(),
            peepholes: self.peepholes.as_ref(),
        }
    }
}

fn describe(shape: &RecurrentShape, lengths: &Option<Vec<u32>>, peepholes: bool) -> String {
    format!(
        "{:?} T{} B{} H{} reverse {} lengths {lengths:?} peepholes {peepholes}",
        shape.kind, shape.steps, shape.batch, shape.hidden, shape.reverse
    )
}

/// Lengths for B sequences of T steps: a full one, an empty one, then others in between.
fn mixed_lengths(steps: usize, batch: usize) -> Vec<u32> {
    (0..batch)
        .map(|b| match b {
            0 => steps as u32,
            1 => 0,
            _ => ((b * 5 + 1) % (steps + 1)) as u32,
        })
        .collect()
}

/// Runs the forward on the GPU and compares states, cells and saved with the reference.
///
/// Tolerance: each step's pre-activations are f32 sums of H + 2 terms whose magnitudes add
/// up to at most M = 2 + 1.5·√H (|gx|, |r_bias| ≤ 1, |h| ≤ 1, |R| ≤ 1.5/√H), so each step
/// adds at most (H + 4)·ε·M of error (the extra 2 for exp and the cell's few operations);
/// σ and tanh are 1-Lipschitz and the LSTM's cell adds its errors up, so after T steps the
/// error stays below T·(H + 4)·ε·M, doubled for the cell's sum.
fn check_forward(seed: u64, shape: RecurrentShape, lengths: Option<Vec<u32>>, peepholes: bool) {
    let what = describe(&shape, &lengths, peepholes);
    let cpu = random_inputs(seed, &shape, lengths, peepholes);
    let uploaded = Uploaded::new(&cpu, &shape);
    let outputs = recurrent_forward(&uploaded.inputs(), &shape).unwrap();
    let expected = recurrent_forward_cpu(&cpu, &shape);
    let hidden = shape.hidden as f64;
    let tolerance = 2.0 * shape.steps as f64 * (hidden + 4.0) * EPS * (2.0 + 1.5 * hidden.sqrt());
    let compare = |name: &str, got: &Tensor, want: &[f64]| {
        assert_within(
            &format!("{what}: {name}"),
            &got.to_vec().unwrap(),
            &to_f32(want),
            |_| tolerance,
        );
    };
    compare("states", &outputs.states, &expected.states);
    compare("saved", &outputs.saved, &expected.saved);
    match (&outputs.cells, &expected.cells) {
        (Some(got), Some(want)) => compare("cells", got, want),
        (None, None) => {}
        _ => panic!("{what}: cells present on one side only"),
    }
}

#[test]
fn forward_matches_reference_on_odd_shapes_both_directions_with_and_without_lengths() {
    let mut seed = 0;
    for kind in CellKind::ALL {
        for dims in [(1, 1, 1), (3, 2, 5), (7, 3, 17)] {
            for reverse in [false, true] {
                for with_lengths in [false, true] {
                    seed += 1;
                    let lengths = with_lengths.then(|| mixed_lengths(dims.0, dims.1));
                    check_forward(seed, shape(kind, dims, reverse), lengths, false);
                }
            }
        }
    }
}

#[test]
fn lstm_forward_with_peepholes() {
    for (i, dims) in [(1, 1, 1), (3, 2, 5), (7, 3, 17)].into_iter().enumerate() {
        for reverse in [false, true] {
            let lengths = (i > 0).then(|| mixed_lengths(dims.0, dims.1));
            check_forward(
                100 + i as u64,
                shape(CellKind::Lstm, dims, reverse),
                lengths,
                true,
            );
        }
    }
}

#[test]
fn forward_large_case() {
    let dims = (10, 16, 64);
    for (i, kind) in CellKind::ALL.into_iter().enumerate() {
        for reverse in [false, true] {
            check_forward(
                200 + i as u64,
                shape(kind, dims, reverse),
                Some(mixed_lengths(dims.0, dims.1)),
                false,
            );
        }
    }
}

#[test]
fn masked_steps_carry_the_state_and_save_zeros() {
    // Sequence 1 has length 0: every slot holds h0 (and c0), and nothing is saved.
    for kind in CellKind::ALL {
        for reverse in [false, true] {
            let shape = shape(kind, (3, 2, 4), reverse);
            let cpu = random_inputs(300, &shape, Some(vec![2, 0]), false);
            let uploaded = Uploaded::new(&cpu, &shape);
            let outputs = recurrent_forward(&uploaded.inputs(), &shape).unwrap();
            let states = outputs.states.to_vec().unwrap();
            let saved = outputs.saved.to_vec().unwrap();
            let carried = |slots: &[f32], initial: &[f64]| {
                let initial = to_f32(&initial[4..8]);
                (0..4).all(|slot| slots[slot * 8 + 4..slot * 8 + 8] == initial[..])
            };
            assert!(carried(&states, &cpu.h0), "{kind:?} states");
            if let (Some(cells), Some(c0)) = (&outputs.cells, &cpu.c0) {
                assert!(carried(&cells.to_vec().unwrap(), c0), "{kind:?} cells");
            }
            let width = shape.saved_width();
            for t in 0..3 {
                let row = &saved[(t * 2 + 1) * width..(t * 2 + 2) * width];
                assert!(row.iter().all(|&v| v == 0.0), "{kind:?} saved at step {t}");
            }
        }
    }
}

// ------------------------------------------------------------------------------ backward

/// Random gradients for states and cells (every slot), as the loss weights w.
fn random_output_weights(seed: u64, shape: &RecurrentShape) -> (Vec<f64>, Option<Vec<f64>>) {
    let mut rng = Rng::new(seed);
    let n = (shape.steps + 1) * shape.batch * shape.hidden;
    let dstates = values(&mut rng, n, -1.0, 1.0);
    let dcells = (shape.kind == CellKind::Lstm).then(|| values(&mut rng, n, -1.0, 1.0));
    (dstates, dcells)
}

/// L = Σ w_states·states + Σ w_cells·cells of the CPU forward.
fn loss(
    cpu: &RecurrentCpu,
    shape: &RecurrentShape,
    dstates: Option<&[f64]>,
    dcells: Option<&[f64]>,
) -> f64 {
    let outputs = recurrent_forward_cpu(cpu, shape);
    let mut total = dstates.map_or(0.0, |w| weighted_sum(w, &outputs.states));
    if let (Some(w), Some(cells)) = (dcells, &outputs.cells) {
        total += weighted_sum(w, cells);
    }
    total
}

/// Finite differences of the loss with respect to each input the backward differentiates:
/// (name, numeric gradient) for gx, r, r_bias, h0 and (LSTM) c0.
fn numeric_gradients(
    cpu: &RecurrentCpu,
    shape: &RecurrentShape,
    dstates: Option<&[f64]>,
    dcells: Option<&[f64]>,
) -> Vec<(&'static str, Vec<f64>)> {
    // h = 1e-5 in f64: truncation error O(h²) ≈ 1e-10, rounding ≈ 1e-16/h ≈ 1e-11.
    let h = 1e-5;
    type Field = fn(&mut RecurrentCpu) -> &mut Vec<f64>;
    let mut fields: Vec<(&'static str, Field)> = vec![
        ("gx", |c| &mut c.gx),
        ("r", |c| &mut c.r),
        ("r_bias", |c| &mut c.r_bias),
        ("h0", |c| &mut c.h0),
    ];
    if shape.kind == CellKind::Lstm {
        fields.push(("c0", |c| c.c0.as_mut().unwrap()));
    }
    fields
        .into_iter()
        .map(|(name, field)| {
            let x = field(&mut cpu.clone()).clone();
            let numeric = numeric_gradient(&x, h, |x| {
                let mut moved = cpu.clone();
                *field(&mut moved) = x.to_vec();
                loss(&moved, shape, dstates, dcells)
            });
            (name, numeric)
        })
        .collect()
}

/// The GPU backward of a forward run on the GPU: (name, gradient) in the order of
/// `numeric_gradients`.
fn gpu_gradients(
    uploaded: &Uploaded,
    shape: &RecurrentShape,
    dstates: Option<&[f64]>,
    dcells: Option<&[f64]>,
) -> Vec<(&'static str, Vec<f32>)> {
    let outputs = recurrent_forward(&uploaded.inputs(), shape).unwrap();
    let states_shape = shape.states_shape();
    let dstates = dstates.map(|d| upload(d, &states_shape));
    let dcells = dcells.map(|d| upload(d, &states_shape));
    let grads = recurrent_backward(
        &RecurrentBackwardInputs {
            dstates: dstates.as_ref(),
            dcells: dcells.as_ref(),
            states: &outputs.states,
            cells: outputs.cells.as_ref(),
            saved: &outputs.saved,
            r: &uploaded.r,
            lengths: uploaded.lengths.as_ref(),
        },
        shape,
    )
    .unwrap();
    let mut all = vec![
        ("gx", grads.dgx.to_vec().unwrap()),
        ("r", grads.dr.to_vec().unwrap()),
        ("r_bias", grads.dr_bias.to_vec().unwrap()),
        ("h0", grads.dh0.to_vec().unwrap()),
    ];
    if let Some(dc0) = &grads.dc0 {
        all.push(("c0", dc0.to_vec().unwrap()));
    }
    all
}

/// The GPU backward against finite differences of the f64 CPU forward, and the CPU
/// backward against the same differences.
///
/// Tolerances: the GPU works in f32 over a few hundred O(1) values; its largest sums (dR
/// over T·B rows, dh_prev over G·H columns, accumulated over T steps) carry errors of
/// about 50·ε·Σ|terms| ≲ 1e-5, so atol 2e-5 and rtol 1e-3. The CPU backward is f64 like
/// the differences, whose own error is ≈ 1e-10 (see `numeric_gradients`).
fn check_backward(seed: u64, shape: RecurrentShape, lengths: Option<Vec<u32>>, with_dstates: bool) {
    let what = describe(&shape, &lengths, false);
    let cpu = random_inputs(seed, &shape, lengths, false);
    let (dstates, dcells) = random_output_weights(seed + 1000, &shape);
    let dstates = with_dstates.then_some(dstates);
    let (dstates, dcells) = (dstates.as_deref(), dcells.as_deref());
    let numeric = numeric_gradients(&cpu, &shape, dstates, dcells);
    let uploaded = Uploaded::new(&cpu, &shape);
    let analytic = gpu_gradients(&uploaded, &shape, dstates, dcells);
    let reference = recurrent_backward_cpu(&cpu, dstates, dcells, &shape).unwrap();
    let mut cpu_grads = vec![
        reference.dgx,
        reference.dr,
        reference.dr_bias,
        reference.dh0,
    ];
    cpu_grads.extend(reference.dc0);
    assert_eq!(numeric.len(), analytic.len());
    for (((name, numeric), (_, gpu_grad)), cpu_grad) in
        numeric.iter().zip(&analytic).zip(&cpu_grads)
    {
        assert_gradient(&format!("{what}: d{name}"), gpu_grad, numeric, 1e-3, 2e-5);
        for (i, (c, n)) in cpu_grad.iter().zip(numeric).enumerate() {
            assert!(
                (c - n).abs() <= 1e-8 + 1e-6 * n.abs(),
                "{what}: CPU d{name}[{i}] = {c}, finite differences give {n}"
            );
        }
    }
}

#[test]
fn backward_matches_finite_differences_both_directions_with_lengths() {
    let mut seed = 400;
    for kind in CellKind::ALL {
        for reverse in [false, true] {
            seed += 1;
            check_backward(
                seed,
                shape(kind, (4, 3, 3), reverse),
                Some(vec![4, 0, 2]),
                true,
            );
        }
    }
}

#[test]
fn backward_matches_finite_differences_without_lengths_on_odd_shapes() {
    let mut seed = 500;
    for kind in CellKind::ALL {
        for (dims, reverse) in [((1, 1, 1), false), ((3, 2, 5), true)] {
            seed += 1;
            check_backward(seed, shape(kind, dims, reverse), None, true);
        }
    }
}

#[test]
fn lstm_backward_with_only_cell_gradients() {
    // dstates absent (zeros): the loss reaches h only through the cells of later steps.
    check_backward(
        600,
        shape(CellKind::Lstm, (3, 2, 3), false),
        Some(vec![3, 1]),
        false,
    );
}

#[test]
fn backward_large_case_matches_cpu_backward() {
    // (10, 16, 64): too many inputs for finite differences; the CPU backward (checked
    // against them above) is the reference. Tolerance as in `check_backward`, with the
    // sums now over T·B = 160 rows and G·H ≤ 256 columns: rtol 1e-3 and atol 1e-4 of the
    // largest gradient.
    for (i, (kind, reverse)) in CellKind::ALL
        .into_iter()
        .flat_map(|kind| [(kind, false), (kind, true)])
        .enumerate()
    {
        let shape = shape(kind, (10, 16, 64), reverse);
        let lengths = Some(mixed_lengths(10, 16));
        let what = describe(&shape, &lengths, false);
        let cpu = random_inputs(700 + i as u64, &shape, lengths, false);
        let (dstates, dcells) = random_output_weights(800 + i as u64, &shape);
        let uploaded = Uploaded::new(&cpu, &shape);
        let analytic = gpu_gradients(&uploaded, &shape, Some(&dstates), dcells.as_deref());
        let reference =
            recurrent_backward_cpu(&cpu, Some(&dstates), dcells.as_deref(), &shape).unwrap();
        let mut expected = vec![
            reference.dgx,
            reference.dr,
            reference.dr_bias,
            reference.dh0,
        ];
        expected.extend(reference.dc0);
        for ((name, got), want) in analytic.iter().zip(&expected) {
            let largest = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert_within(&format!("{what}: d{name}"), got, &to_f32(want), |i| {
                1e-4 * largest + 1e-3 * want[i].abs()
            });
        }
    }
}

#[test]
fn backward_is_deterministic() {
    let shape = shape(CellKind::Gru, (5, 4, 33), true);
    let cpu = random_inputs(900, &shape, Some(vec![5, 0, 3, 1]), false);
    let (dstates, _) = random_output_weights(901, &shape);
    let uploaded = Uploaded::new(&cpu, &shape);
    let first = gpu_gradients(&uploaded, &shape, Some(&dstates), None);
    let second = gpu_gradients(&uploaded, &shape, Some(&dstates), None);
    for ((name, a), (_, b)) in first.iter().zip(&second) {
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "d{name} differs between two runs");
    }
}

// ------------------------------------------------------------------------------ errors

#[test]
fn forward_names_the_input_of_the_wrong_shape() {
    let shape = shape(CellKind::Lstm, (3, 2, 4), false);
    let cpu = random_inputs(1, &shape, Some(vec![3, 1]), true);
    let uploaded = Uploaded::new(&cpu, &shape);
    let wrong = upload(&[0.0; 7], &[7]);
    for name in ["gx", "r", "r_bias", "h0", "c0", "peepholes"] {
        let mut inputs = uploaded.inputs();
        match name {
            "gx" => inputs.gx = &wrong,
            "r" => inputs.r = &wrong,
            "r_bias" => inputs.r_bias = &wrong,
            "h0" => inputs.h0 = &wrong,
            "c0" => inputs.c0 = Some(&wrong),
            _ => inputs.peepholes = Some(&wrong),
        }
        let err = recurrent_forward(&inputs, &shape).unwrap_err().to_string();
        assert!(
            err.contains(&format!(" {name} must be")) && err.contains("[7]"),
            "{name}: {err}"
        );
    }
    let lengths = Indices::from_slice(gpu(), &[1, 2, 3], &[3]).unwrap();
    let inputs = RecurrentInputs {
        lengths: Some(&lengths),
        ..uploaded.inputs()
    };
    let err = recurrent_forward(&inputs, &shape).unwrap_err().to_string();
    assert!(
        err.contains("lengths must be [B]") && err.contains("[3]"),
        "{err}"
    );

    // Outputs of the wrong shapes, through the recording call.
    let good = RecurrentOutputs::allocate(gpu(), &shape).unwrap();
    let short = RecurrentOutputs {
        states: Tensor::zeros(gpu(), &[3, 2, 4]).unwrap(),
        ..good.clone()
    };
    let err = recurrent_forward_dispatches(&uploaded.inputs(), &short, &shape)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("states must be [T+1, B, H]") && err.contains("[3, 2, 4]"),
        "{err}"
    );
    let no_cells = RecurrentOutputs {
        cells: None,
        ..good.clone()
    };
    let err = recurrent_forward_dispatches(&uploaded.inputs(), &no_cells, &shape)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the LSTM needs cells"), "{err}");
    let bad_saved = RecurrentOutputs {
        saved: Tensor::zeros(gpu(), &[3, 2, 4]).unwrap(),
        ..good
    };
    let err = recurrent_forward_dispatches(&uploaded.inputs(), &bad_saved, &shape)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("saved must be [T, B, S·H]") && err.contains("[3, 2, 16]"),
        "{err}"
    );
}

#[test]
fn leading_axes_of_one_are_accepted() {
    // ONNX hands initial_h as [num_directions = 1, B, H].
    let shape = shape(CellKind::Gru, (2, 3, 4), false);
    let cpu = random_inputs(2, &shape, None, false);
    let uploaded = Uploaded::new(&cpu, &shape);
    let h0 = uploaded.h0.reshape(&[1, 3, 4]).unwrap();
    let inputs = RecurrentInputs {
        h0: &h0,
        ..uploaded.inputs()
    };
    assert!(recurrent_forward(&inputs, &shape).is_ok());
}

#[test]
fn c0_is_required_by_the_lstm_and_refused_by_the_others() {
    let lstm = shape(CellKind::Lstm, (2, 2, 3), false);
    let uploaded = Uploaded::new(&random_inputs(3, &lstm, None, false), &lstm);
    let inputs = RecurrentInputs {
        c0: None,
        ..uploaded.inputs()
    };
    let err = recurrent_forward(&inputs, &lstm).unwrap_err().to_string();
    assert!(err.contains("lstm") && err.contains("needs c0"), "{err}");

    let gru = shape(CellKind::Gru, (2, 2, 3), false);
    let gru_uploaded = Uploaded::new(&random_inputs(4, &gru, None, false), &gru);
    let inputs = RecurrentInputs {
        c0: Some(&uploaded.h0),
        ..gru_uploaded.inputs()
    };
    let err = recurrent_forward(&inputs, &gru).unwrap_err().to_string();
    assert!(err.contains("c0 is for the LSTM only"), "{err}");
    let peepholes = upload(&[0.0; 9], &[9]);
    let inputs = RecurrentInputs {
        peepholes: Some(&peepholes),
        ..gru_uploaded.inputs()
    };
    let err = recurrent_forward(&inputs, &gru).unwrap_err().to_string();
    assert!(err.contains("peepholes are for the LSTM only"), "{err}");
}

#[test]
fn the_backward_refuses_peepholes() {
    let shape = shape(CellKind::Lstm, (2, 2, 3), false);
    let cpu = random_inputs(5, &shape, None, true);
    let uploaded = Uploaded::new(&cpu, &shape);
    // The forward runs with them ...
    assert!(recurrent_forward(&uploaded.inputs(), &shape).is_ok());
    // ... but no backward differentiates them.
    let err = uploaded
        .inputs()
        .check_differentiable(&shape)
        .unwrap_err()
        .to_string();
    assert!(err.contains("peepholes"), "{err}");
    let err = recurrent_backward_cpu(&cpu, None, None, &shape)
        .unwrap_err()
        .to_string();
    assert!(err.contains("peepholes"), "{err}");
    let without = RecurrentInputs {
        peepholes: None,
        ..uploaded.inputs()
    };
    assert!(without.check_differentiable(&shape).is_ok());
}

#[test]
fn backward_names_the_tensor_of_the_wrong_shape() {
    let shape = shape(CellKind::Lstm, (3, 2, 4), true);
    let cpu = random_inputs(6, &shape, None, false);
    let uploaded = Uploaded::new(&cpu, &shape);
    let outputs = recurrent_forward(&uploaded.inputs(), &shape).unwrap();
    let wrong = upload(&[0.0; 7], &[7]);
    let inputs = RecurrentBackwardInputs {
        dstates: None,
        dcells: None,
        states: &outputs.states,
        cells: outputs.cells.as_ref(),
        saved: &outputs.saved,
        r: &uploaded.r,
        lengths: None,
    };
    for name in ["dstates", "dcells", "states", "saved", "r"] {
        let mut bad = inputs;
        match name {
            "dstates" => bad.dstates = Some(&wrong),
            "dcells" => bad.dcells = Some(&wrong),
            "states" => bad.states = &wrong,
            "saved" => bad.saved = &wrong,
            _ => bad.r = &wrong,
        }
        let err = recurrent_backward(&bad, &shape).unwrap_err().to_string();
        assert!(
            err.contains(&format!(" {name} must be")) && err.contains("[7]"),
            "{name}: {err}"
        );
    }
    let no_cells = RecurrentBackwardInputs {
        cells: None,
        ..inputs
    };
    let err = recurrent_backward(&no_cells, &shape)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the LSTM needs cells"), "{err}");

    let good = RecurrentGrads::allocate(gpu(), &shape).unwrap();
    let no_dc0 = RecurrentGrads {
        dc0: None,
        ..good.clone()
    };
    let err = recurrent_backward_dispatches(&inputs, &no_dc0, &shape)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the LSTM needs dc0"), "{err}");
    let bad_dgx = RecurrentGrads {
        dgx: wrong.clone(),
        ..good.clone()
    };
    let err = recurrent_backward_dispatches(&inputs, &bad_dgx, &shape)
        .unwrap_err()
        .to_string();
    assert!(err.contains("dgx must be [T, B, G·H]"), "{err}");
    let bad_dr = RecurrentGrads { dr: wrong, ..good };
    let err = recurrent_backward_dispatches(&inputs, &bad_dr, &shape)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dr must be [H, G·H]") && err.contains("[4, 16]"),
        "{err}"
    );
}

#[test]
fn empty_dimensions_are_refused() {
    for dims in [(0, 2, 3), (2, 0, 3), (2, 2, 0)] {
        let shape = shape(CellKind::Rnn, dims, false);
        let cpu = random_inputs(7, &shape, None, false);
        let uploaded = Uploaded::new(&cpu, &shape);
        let err = recurrent_forward(&uploaded.inputs(), &shape).unwrap_err();
        assert!(matches!(err, Error::ZeroSized { .. }), "{dims:?}: {err}");
    }
}
