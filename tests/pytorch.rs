//! PyTorch interop, against the reference data `scripts/pytorch-reference.py` wrote into
//! `tests/data/pytorch` with torch 2.15: each model's `state_dict` (a plain safetensors
//! file, no sidecar) loads into the matching shadergrad model, which then computes PyTorch's
//! outputs (≤ 1e-5 relative) and, under the same Adam, the losses of its first steps
//! (≤ 1e-4 relative). shadergrad's saves carry PyTorch's names and shapes, so that
//! `load_state_dict(strict=True)` takes them (the script's `check` loads this test's saves).

mod common;

use std::path::{Path, PathBuf};

use common::{assert_close, gpu};
use shadergrad::checkpoint::{self, Checkpoint, NamedTensor, TensorData};
use shadergrad::graph::{CrossEntropySpec, Feed, Graph, Plan, Var};
use shadergrad::kernels::recurrent::CellKind;
use shadergrad::nn::{Activation, Directions, Mlp, Parameters, Recurrent, RecurrentConfig, State};
use shadergrad::optim::{OptimizerConfig, Rule};

fn reference(name: &str) -> Checkpoint {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/pytorch/{name}"));
    checkpoint::load_weights(&path).unwrap()
}

fn floats(io: &Checkpoint, name: &str) -> Vec<f32> {
    io.get(name).unwrap().as_f32().unwrap().to_vec()
}

fn longs(io: &Checkpoint, name: &str) -> Vec<u32> {
    match &io.get(name).unwrap().data {
        TensorData::I64(values) => values.iter().map(|&v| v as u32).collect(),
        other => panic!("{name} is {:?}, expected I64", other.dtype()),
    }
}

/// The losses of the steps taken, each within 1e-4 of PyTorch's (relative).
fn assert_losses(what: &str, ours: &[f32], io: &Checkpoint) {
    assert_close(what, ours, &floats(io, "losses"), 1e-4, 1e-6);
}

/// The loss before each of three Adam steps (lr 0.01, PyTorch's defaults otherwise) over
/// `params`, each step and its update one run of `plan`.
fn adam_losses(plan: &mut Plan, feeds: &[Feed], loss: Var, params: &Parameters) -> Vec<f32> {
    let mut optimizer = params
        .optimizer(OptimizerConfig::new(Rule::adam(), 0.01))
        .unwrap();
    (1..=3)
        .map(|step| {
            optimizer.prepare_step(step).unwrap();
            plan.run(feeds, optimizer.dispatches()).unwrap();
            plan.read(loss).unwrap()[0]
        })
        .collect()
}

/// Where this test leaves its saves for `scripts/pytorch-reference.py check`.
fn save_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pytorch");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_mlp_loads_pytorchs_state_dict_computes_its_logits_and_trains_like_it() {
    let state = reference("mlp.state.safetensors");
    let io = reference("mlp.io.safetensors");
    let params = Parameters::new(gpu(), 0);
    let sizes = [3, 7, 5, 4];
    let mlp = Mlp::new(&params, &sizes, Activation::Tanh).unwrap();
    params.load(&state).unwrap();

    let rows = 6;
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[rows, 3]);
    let labels = g.input_indices("labels", &[rows]);
    let logits = mlp.forward(&mut g, x).unwrap();
    let loss = g.cross_entropy(logits, labels).unwrap();
    let grads = g.backward(loss).unwrap();
    let mut outputs = vec![loss, logits];
    outputs.extend(grads.parameter_gradients());
    let mut plan = g.compile(&outputs).unwrap();
    let (features, classes) = (floats(&io, "x"), longs(&io, "labels"));
    let feeds = [Feed::f32(x, &features), Feed::u32(labels, &classes)];
    plan.run(&feeds, &[]).unwrap();
    let expected = floats(&io, "logits");
    assert_close("logits", &plan.read(logits).unwrap(), &expected, 1e-5, 1e-6);

    // shadergrad's save has PyTorch's names and shapes, all of them and nothing else: what
    // load_state_dict(strict=True) asks.
    let dir = save_dir();
    let saved = dir.join("mlp.safetensors");
    checkpoint::save(
        &saved,
        &params.named_tensors().unwrap(),
        &serde_json::json!({}),
    )
    .unwrap();
    let logits_file = dir.join("mlp.logits.safetensors");
    let ours = NamedTensor::new("logits", &[rows, 4], plan.read(logits).unwrap());
    checkpoint::save(&logits_file, &[ours], &serde_json::json!({})).unwrap();
    let layout = |c: &Checkpoint| -> Vec<(String, Vec<usize>)> {
        c.tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    };
    assert_eq!(
        layout(&checkpoint::load_weights(&saved).unwrap()),
        layout(&state)
    );
    println!("saved for `pytorch-reference.py check {}`", dir.display());

    let losses = adam_losses(&mut plan, &feeds, loss, &params);
    assert_losses("mlp losses under Adam", &losses, &io);
}

/// PyTorch's `nn.Conv1d(4, 5, 3)`: its output, and three Adam steps on mean(tanh(y)²).
#[test]
fn a_conv1d_matches_pytorchs() {
    use shadergrad::nn::Conv1d;
    let state = reference("conv1d.state.safetensors");
    let io = reference("conv1d.io.safetensors");
    let params = Parameters::new(gpu(), 0);
    let conv = Conv1d::new(&params, 4, 5, 3).unwrap();
    params.load(&state).unwrap();
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[2, 4, 7]);
    let y = conv.forward(&mut g, x).unwrap();
    assert_eq!(g.shape(y), &[2, 5, 5]);
    let squashed = g.tanh(y).unwrap();
    let squares = g.mul(squashed, squashed).unwrap();
    let loss = g.mean_all(squares).unwrap();
    let grads = g.backward(loss).unwrap();
    let mut outputs = vec![loss, y];
    outputs.extend(grads.parameter_gradients());
    let mut plan = g.compile(&outputs).unwrap();
    let x_values = floats(&io, "x");
    plan.run(&[Feed::f32(x, &x_values)], &[]).unwrap();
    assert_close(
        "conv1d",
        &plan.read(y).unwrap(),
        &floats(&io, "y"),
        1e-5,
        1e-6,
    );
    let losses = adam_losses(&mut plan, &[Feed::f32(x, &x_values)], loss, &params);
    assert_losses("conv1d losses under Adam", &losses, &io);
}

/// A bfloat16 state dict under other names loads once renamed, converted exactly to f32.
#[test]
fn a_bfloat16_state_dict_under_other_names_loads_after_renaming() {
    let mut weights = reference("mlp.bf16.safetensors");
    let io = reference("mlp.io.safetensors");
    let params = Parameters::new(gpu(), 0);
    let mlp = Mlp::new(&params, &[3, 7, 5, 4], Activation::Tanh).unwrap();
    let err = params.load(&weights).unwrap_err().to_string();
    assert!(
        err.contains("\"layers.0.weight\"") && err.contains("missing"),
        "{err}"
    );
    weights
        .rename_tensors(|name| name.strip_prefix("model.").map(str::to_string))
        .unwrap();
    params.load(&weights).unwrap();
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[6, 3]);
    let logits = mlp.forward(&mut g, x).unwrap();
    let mut plan = g.compile(&[logits]).unwrap();
    plan.run(&[Feed::f32(x, &floats(&io, "x"))], &[]).unwrap();
    let expected = floats(&io, "logits_bf16");
    assert_close(
        "bf16 logits",
        &plan.read(logits).unwrap(),
        &expected,
        1e-5,
        1e-6,
    );
}

/// The recurrent stack of `case`, loaded from PyTorch's state dict, run over its padded
/// sequence: the outputs at the real steps, the final states, and three Adam steps' losses.
fn recurrent_matches_pytorch(case: &str, cell: CellKind, layers: usize, directions: Directions) {
    let state = reference(&format!("{case}.state.safetensors"));
    let io = reference(&format!("{case}.io.safetensors"));
    let (steps, batch, inputs, hidden) = (5, 3, 4, 6);
    let config = RecurrentConfig {
        cell,
        input_size: inputs,
        hidden_size: hidden,
        num_layers: layers,
        directions,
    };
    let params = Parameters::new(gpu(), 0);
    let rnn = Recurrent::new(&params, config).unwrap();
    params.load(&state).unwrap();
    let states = layers * directions.count();
    let width = directions.count() * hidden;

    let mut g = Graph::new(gpu());
    let x = g.input("x", &[steps, batch, inputs]);
    let lengths = g.input_indices("lengths", &[batch]);
    let initial: Vec<State> = (0..states)
        .map(|i| State {
            h: g.input(&format!("h0_{i}"), &[batch, hidden]),
            c: (cell == CellKind::Lstm).then(|| g.input(&format!("c0_{i}"), &[batch, hidden])),
        })
        .collect();
    let out = rnn
        .forward(&mut g, x, Some(&initial), Some(lengths))
        .unwrap();
    let finals_h: Vec<Var> = out.finals.iter().map(|s| s.h).collect();
    let h_n = g.concat(&finals_h, 0).unwrap();
    let c_n = match cell {
        CellKind::Lstm => {
            let cells: Vec<Var> = out.finals.iter().map(|s| s.c.unwrap()).collect();
            Some(g.concat(&cells, 0).unwrap())
        }
        _ => None,
    };
    // The loss of the reference: Σ (output·mask)² / Σ mask + mean(h_n²).
    let real = longs(&io, "lengths");
    let mask_values: Vec<f32> = (0..steps)
        .flat_map(|t| {
            real.iter()
                .map(move |&len| f32::from(u8::from(t < len as usize)))
        })
        .collect();
    let mask_sum: f32 = mask_values.iter().sum();
    let mask = g.constant(mask_values.clone(), &[steps, batch, 1]).unwrap();
    let masked = g.mul(out.output, mask).unwrap();
    let squares = g.mul(masked, masked).unwrap();
    let total = g.sum_all(squares).unwrap();
    let output_term = g.scale(total, 1.0 / mask_sum).unwrap();
    let h_squares = g.mul(h_n, h_n).unwrap();
    let h_term = g.mean_all(h_squares).unwrap();
    let loss = g.add(output_term, h_term).unwrap();
    let grads = g.backward(loss).unwrap();
    let mut outputs = vec![loss, out.output, h_n];
    outputs.extend(c_n);
    outputs.extend(grads.parameter_gradients());
    let mut plan = g.compile(&outputs).unwrap();

    let (x_values, h0, c0) = (
        floats(&io, "x"),
        floats(&io, "h0"),
        (cell == CellKind::Lstm).then(|| floats(&io, "c0")),
    );
    let slab = batch * hidden;
    let mut feeds = vec![Feed::f32(x, &x_values), Feed::u32(lengths, &real)];
    for (i, start) in initial.iter().enumerate() {
        feeds.push(Feed::f32(start.h, &h0[i * slab..(i + 1) * slab]));
        if let (Some(c), Some(c0)) = (start.c, &c0) {
            feeds.push(Feed::f32(c, &c0[i * slab..(i + 1) * slab]));
        }
    }
    plan.run(&feeds, &[]).unwrap();
    // PyTorch pads zeros past a length where shadergrad repeats the state: compare the
    // real steps.
    let ours: Vec<f32> = plan.read(out.output).unwrap();
    let masked_ours: Vec<f32> = ours
        .chunks(width)
        .zip(&mask_values)
        .flat_map(|(row, &m)| row.iter().map(move |v| v * m))
        .collect();
    assert_close(
        &format!("{case} output"),
        &masked_ours,
        &floats(&io, "output"),
        1e-5,
        1e-6,
    );
    assert_close(
        &format!("{case} h_n"),
        &plan.read(h_n).unwrap(),
        &floats(&io, "h_n"),
        1e-5,
        1e-6,
    );
    if let Some(c_n) = c_n {
        assert_close(
            &format!("{case} c_n"),
            &plan.read(c_n).unwrap(),
            &floats(&io, "c_n"),
            1e-5,
            1e-6,
        );
    }

    let losses = adam_losses(&mut plan, &feeds, loss, &params);
    assert_losses(&format!("{case} losses under Adam"), &losses, &io);
}

#[test]
fn an_rnn_matches_pytorchs() {
    recurrent_matches_pytorch("rnn", CellKind::Rnn, 1, Directions::Forward);
}

#[test]
fn a_two_layer_bidirectional_gru_over_padded_sequences_matches_pytorchs() {
    recurrent_matches_pytorch("gru", CellKind::Gru, 2, Directions::Bidirectional);
}

#[test]
fn a_two_layer_lstm_over_padded_sequences_matches_pytorchs() {
    recurrent_matches_pytorch("lstm", CellKind::Lstm, 2, Directions::Forward);
}

/// A sequence-to-sequence model over `case`'s reference batch (3 sources of 5 steps,
/// time-major, with their lengths; 4 decoder steps), its weights already loaded into
/// `params`: `logits_of` builds its logits `[B·Td, V]` from the source, lengths and decoder
/// input values; the teacher-forced logits and the cross-entropy (ignoring PAD) of three
/// Adam steps must be PyTorch's.
fn teacher_forced_against_pytorch(
    case: &str,
    params: &Parameters,
    logits_of: impl Fn(&mut Graph, [Var; 3]) -> Var,
) {
    use shadergrad::data::text::PAD;
    let io = reference(&format!("{case}.io.safetensors"));
    let (batch, source_steps, target_steps) = (3, 5, 4);
    let mut g = Graph::new(gpu());
    let source = g.input_indices("source", &[source_steps, batch]);
    let lengths = g.input_indices("lengths", &[batch]);
    let decoder_input = g.input_indices("decoder_input", &[target_steps, batch]);
    let target = g.input_indices("target", &[batch * target_steps]);
    let logits = logits_of(&mut g, [source, lengths, decoder_input]);
    let loss = g
        .cross_entropy_with(logits, target, CrossEntropySpec::mean().ignore(PAD.into()))
        .unwrap();
    let grads = g.backward(loss).unwrap();
    let mut outputs = vec![loss, logits];
    outputs.extend(grads.parameter_gradients());
    let mut plan = g.compile(&outputs).unwrap();
    let ids = ["source", "lengths", "decoder_input", "target"].map(|name| longs(&io, name));
    let feeds = [
        Feed::u32(source, &ids[0]),
        Feed::u32(lengths, &ids[1]),
        Feed::u32(decoder_input, &ids[2]),
        Feed::u32(target, &ids[3]),
    ];
    plan.run(&feeds, &[]).unwrap();
    let expected = floats(&io, "logits");
    assert_close(
        &format!("{case} logits"),
        &plan.read(logits).unwrap(),
        &expected,
        1e-5,
        1e-5,
    );
    let losses = adam_losses(&mut plan, &feeds, loss, params);
    assert_losses(&format!("{case} losses under Adam"), &losses, &io);
}

/// The RNN encoder-decoder with dot attention (a two-layer bidirectional GRU encoder, its
/// bridges, the attention's key projection and combination, a two-layer GRU decoder) loads
/// a PyTorch module's `state_dict` of the same structure: the teacher-forced logits over
/// padded sources, and the losses of three Adam steps, match.
#[test]
fn the_gru_encoder_decoder_with_attention_matches_pytorchs() {
    use shadergrad::nn::seq2seq::{
        Architecture, AttentionKind, RecurrentConfig as Seq2SeqRecurrent, Seq2Seq, Seq2SeqConfig,
    };
    let state = reference("seq2seq_gru.state.safetensors");
    let vocab = 11;
    let config = Seq2SeqConfig {
        source_vocab_size: vocab,
        target_vocab_size: vocab,
        layers: 2,
        architecture: Architecture::Recurrent(Seq2SeqRecurrent {
            cell: CellKind::Gru,
            attention: AttentionKind::Dot,
            embed: 6,
            hidden: 8,
            bidirectional: true,
        }),
    };
    let params = Parameters::new(gpu(), 0);
    let model = Seq2Seq::new(&config, &params).unwrap();
    params.load(&state).unwrap();
    teacher_forced_against_pytorch("seq2seq_gru", &params, |g, [source, lengths, input]| {
        let encoded = model.encode(g, source, lengths).unwrap();
        let (states, _) = model.decode(g, input, &encoded.initial).unwrap();
        model.logits(g, states, &encoded, lengths, None).unwrap()
    });
}

/// PyTorch's pre-norm `nn.TransformerEncoderLayer` and `nn.TransformerDecoderLayer`
/// (batch-first, every parameter moved off its start): the encoder's output over padded
/// sources, the decoder's under its causal mask and the memory's padding, and three Adam
/// steps on mean(out²).
#[test]
fn transformer_layers_match_pytorchs() {
    use shadergrad::nn::{
        Mode, TransformerDecoderLayer, TransformerEncoderLayer, TransformerLayerConfig,
    };
    let state = reference("transformer_layers.state.safetensors");
    let io = reference("transformer_layers.io.safetensors");
    let config = TransformerLayerConfig {
        d_model: 8,
        heads: 2,
        dim_feedforward: 16,
        dropout: 0.0,
    };
    let params = Parameters::new(gpu(), 0);
    let encoder = TransformerEncoderLayer::new(&params.at("encoder_layer"), config).unwrap();
    let decoder = TransformerDecoderLayer::new(&params.at("decoder_layer"), config).unwrap();
    params.load(&state).unwrap();

    let mut g = Graph::new(gpu());
    let source = g.input("source", &[3, 5, 8]);
    let target = g.input("target", &[3, 4, 8]);
    let lengths = g.input_indices("lengths", &[3]);
    let memory = encoder
        .forward(&mut g, source, Some(lengths), Mode::Eval)
        .unwrap();
    let out = decoder
        .forward(&mut g, target, memory, Some(lengths), Mode::Eval)
        .unwrap();
    let squares = g.mul(out, out).unwrap();
    let loss = g.mean_all(squares).unwrap();
    let grads = g.backward(loss).unwrap();
    let mut outputs = vec![loss, memory, out];
    outputs.extend(grads.parameter_gradients());
    let mut plan = g.compile(&outputs).unwrap();
    let (sources, targets, lengths_values) = (
        floats(&io, "source"),
        floats(&io, "target"),
        longs(&io, "lengths"),
    );
    let feeds = [
        Feed::f32(source, &sources),
        Feed::f32(target, &targets),
        Feed::u32(lengths, &lengths_values),
    ];
    plan.run(&feeds, &[]).unwrap();
    assert_close(
        "encoder layer",
        &plan.read(memory).unwrap(),
        &floats(&io, "memory"),
        1e-5,
        1e-5,
    );
    assert_close(
        "decoder layer",
        &plan.read(out).unwrap(),
        &floats(&io, "out"),
        1e-5,
        1e-5,
    );

    let losses = adam_losses(&mut plan, &feeds, loss, &params);
    assert_losses("transformer layer losses under Adam", &losses, &io);
}

/// train-seq2seq's Transformer (embeddings·√d plus sinusoidal positions, a pre-norm
/// `nn.Transformer` of two layers a side, the output layer; every parameter moved off its
/// start) loads a PyTorch module's `state_dict` of the same structure: the teacher-forced
/// logits over padded sources, and the losses of three Adam steps, match.
#[test]
fn the_transformer_encoder_decoder_matches_pytorchs() {
    use shadergrad::nn::seq2seq::{Architecture, Seq2SeqConfig};
    use shadergrad::nn::transformer::{Transformer, TransformerConfig};
    use shadergrad::nn::Mode;
    let state = reference("seq2seq_transformer.state.safetensors");
    let vocab = 11;
    let config = Seq2SeqConfig {
        source_vocab_size: vocab,
        target_vocab_size: vocab,
        layers: 2,
        architecture: Architecture::Transformer(TransformerConfig {
            width: 8,
            heads: 2,
            ff: 16,
            dropout: 0.0,
        }),
    };
    let params = Parameters::new(gpu(), 0);
    let model = Transformer::new(&config, &params).unwrap();
    params.load(&state).unwrap();
    teacher_forced_against_pytorch(
        "seq2seq_transformer",
        &params,
        |g, [source, lengths, input]| {
            let memory = model.encode(g, source, lengths, Mode::Eval).unwrap();
            model.logits(g, input, memory, lengths, Mode::Eval).unwrap()
        },
    );
}
