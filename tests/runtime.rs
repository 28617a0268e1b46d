//! The plan's checked runtime and the graph's gradients: every input the plan reads is fed
//! each run, a pruned input may be fed, values of another graph are refused naming both
//! graphs, feeds and reads name inputs by name, reads come with their shapes; gradients
//! reach differentiable inputs, and `backward_from` takes a seed for any output.

mod common;

use common::gpu;
use shadergrad::graph::{CrossEntropySpec, Feed, Graph, HostTensor, Var};
use shadergrad::PYTORCH_IGNORE_INDEX;

/// y = x·w + b over `[2, 3]` inputs, with an unused input `"extra"` that compile prunes.
fn model() -> (Graph, [shadergrad::graph::Var; 5]) {
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[2, 3]);
    let extra = g.input("extra", &[4]);
    let labels = g.input_indices("labels", &[2]);
    let w = g
        .parameter("w", &[3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
        .unwrap();
    let y = g.matmul(x, w).unwrap();
    let loss = g.cross_entropy(y, labels).unwrap();
    (g, [x, extra, labels, y, loss])
}

#[test]
fn an_input_the_plan_reads_but_a_run_does_not_feed_is_an_error_naming_it() {
    let (g, [x, _, labels, y, loss]) = model();
    let mut plan = g.compile(&[y, loss]).unwrap();
    let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let message = plan.run(&[Feed::f32(x, &xs)], &[]).unwrap_err().to_string();
    assert!(
        message.contains("\"labels\"") && message.contains("does not feed it"),
        "{message}"
    );
    // The next run feeds both; a second run must feed them again, not reuse the last feed.
    plan.run(&[Feed::f32(x, &xs), Feed::u32(labels, &[0, 1])], &[])
        .unwrap();
    assert!(plan.run(&[Feed::u32(labels, &[0, 1])], &[]).is_err());
}

#[test]
fn a_pruned_input_may_be_fed_and_is_ignored() {
    let (g, [x, extra, labels, y, _]) = model();
    // Only y is asked for: labels and extra are pruned, x is read.
    let mut plan = g.compile(&[y]).unwrap();
    plan.run(
        &[
            Feed::f32(x, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            Feed::f32(extra, &[0.0; 4]),
            Feed::u32(labels, &[0, 1]),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        plan.fetch(y).unwrap(),
        HostTensor {
            shape: vec![2, 2],
            data: vec![4.0, 5.0, 10.0, 11.0]
        }
    );
}

#[test]
fn values_of_another_graph_are_refused_naming_both_graphs() {
    let (mut g, [x, _, _, y, _]) = model();
    let (other, [other_x, ..]) = model();
    // A value of another graph given to a builder, to compile, to a run and to a read.
    let message = g.relu(other_x).unwrap_err().to_string();
    assert!(
        message.contains(&other.id().to_string()) && message.contains(&g.id().to_string()),
        "{message}"
    );
    assert!(g.compile(&[other_x]).is_err());
    let mut plan = g.compile(&[y]).unwrap();
    let xs = [0.0; 6];
    let message = plan
        .run(&[Feed::f32(other_x, &xs)], &[])
        .unwrap_err()
        .to_string();
    assert!(message.contains("a plan of"), "{message}");
    assert!(plan.read(other_x).is_err());
    // Its own value still works.
    plan.run(&[Feed::f32(x, &xs)], &[]).unwrap();
}

#[test]
fn feeds_and_reads_name_the_input_and_reads_by_name_find_it() {
    let (g, [x, extra, labels, y, loss]) = model();
    let mut plan = g.compile(&[y, loss]).unwrap();
    assert_eq!(plan.value("x").unwrap(), x);
    assert_eq!(plan.value("extra").unwrap(), extra);
    let message = plan.value("z").unwrap_err().to_string();
    assert!(
        message.contains("\"z\"") && message.contains("labels"),
        "{message}"
    );

    let message = plan
        .run(&[Feed::f32(x, &[1.0; 5]), Feed::u32(labels, &[0, 1])], &[])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("\"x\"") && message.contains("[2, 3]") && message.contains("5"),
        "{message}"
    );
    let message = plan
        .run(&[Feed::f32(x, &[1.0; 6]), Feed::u32(labels, &[0, 7])], &[])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("\"labels\"") && message.contains("7"),
        "{message}"
    );
    let message = plan
        .run(
            &[
                Feed::f32(x, &[1.0; 6]),
                Feed::f32(x, &[1.0; 6]),
                Feed::u32(labels, &[0, 1]),
            ],
            &[],
        )
        .unwrap_err()
        .to_string();
    assert!(message.contains("fed twice"), "{message}");
    // A value that is no input cannot be fed; one that was not kept cannot be read.
    assert!(plan.run(&[Feed::f32(y, &[0.0; 4])], &[]).is_err());
    plan.run(&[Feed::f32(x, &[1.0; 6]), Feed::u32(labels, &[0, 1])], &[])
        .unwrap();
    assert_eq!(plan.fetch_indices(labels).unwrap().shape, vec![2]);
    assert_eq!(plan.fetch(loss).unwrap().shape, Vec::<usize>::new());
}

/// y = x·w with x a differentiable input, seeded with dy from outside the graph: the
/// vector-Jacobian products dx = dy·wᵀ and dw = xᵀ·dy, fed a new seed each run.
#[test]
fn backward_from_a_seed_gives_the_gradients_of_inputs_and_parameters() {
    let mut g = Graph::new(gpu());
    let x = g.differentiable_input("x", &[2, 3]);
    let w_init = vec![1.0, -2.0, 0.5, 3.0, -1.0, 0.25];
    let w = g.parameter("w", &[3, 2], w_init.clone()).unwrap();
    let y = g.matmul(x, w).unwrap();
    let dy = g.input("dy", &[2, 2]);
    let grads = g.backward_from(y, dy).unwrap();
    let (dx, dw) = (grads.of(x).unwrap(), grads.of(w).unwrap());
    let mut plan = g.compile(&[y, dx, dw]).unwrap();
    let xs = [1.0f32, 2.0, 3.0, -1.0, 0.5, 2.0];
    for seed in [[1.0f32, 0.0, 0.0, 0.0], [0.5, -1.0, 2.0, 0.25]] {
        plan.run(&[Feed::f32(x, &xs), Feed::f32(dy, &seed)], &[])
            .unwrap();
        let mut want_dx = [0.0f32; 6];
        let mut want_dw = [0.0f32; 6];
        for i in 0..2 {
            for j in 0..2 {
                for k in 0..3 {
                    want_dx[i * 3 + k] += seed[i * 2 + j] * w_init[k * 2 + j];
                    want_dw[k * 2 + j] += xs[i * 3 + k] * seed[i * 2 + j];
                }
            }
        }
        let close = |got: &[f32], want: &[f32]| {
            got.iter()
                .zip(want)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()))
        };
        let (got_dx, got_dw) = (plan.read(dx).unwrap(), plan.read(dw).unwrap());
        assert!(close(&got_dx, &want_dx), "{got_dx:?} vs {want_dx:?}");
        assert!(close(&got_dw, &want_dw), "{got_dw:?} vs {want_dw:?}");
    }
    // A seed of another shape, or a plain (non-differentiable) input, is an error.
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[2, 3]);
    let doubled = g.scale(x, 2.0).unwrap();
    let wrong = g.input("dy", &[3, 2]);
    let message = g.backward_from(doubled, wrong).unwrap_err().to_string();
    assert!(
        message.contains("[2, 3]") && message.contains("[3, 2]"),
        "{message}"
    );
    let seed = g.input("seed", &[2, 3]);
    assert!(g.backward_from(doubled, seed).is_err());
}

#[test]
fn sum_all_and_mean_all_reduce_every_axis_to_one_value() {
    let mut g = Graph::new(gpu());
    let x = g.differentiable_input("x", &[2, 3, 2]);
    let total = g.sum_all(x).unwrap();
    let mean = g.mean_all(x).unwrap();
    assert_eq!(g.shape(total), &[] as &[usize]);
    let grads = g.backward(mean).unwrap();
    let dx = grads.of(x).unwrap();
    let mut plan = g.compile(&[total, mean, dx]).unwrap();
    let xs: Vec<f32> = (1..=12).map(|v| v as f32).collect();
    plan.run(&[Feed::f32(x, &xs)], &[]).unwrap();
    assert_eq!(plan.read(total).unwrap(), [78.0]);
    assert_eq!(plan.read(mean).unwrap(), [6.5]);
    assert_eq!(plan.fetch(dx).unwrap().shape, vec![2, 3, 2]);
    assert!(plan
        .read(dx)
        .unwrap()
        .iter()
        .all(|&d| (d - 1.0 / 12.0).abs() < 1e-7));
}

/// A graph's own parameters ([`Graph::parameter`]) are [`Parameter`]s like any other: a
/// serving graph at batch 1 that takes the training graph's (`Graph::param`) reads the
/// weights the training plan (batch 4) updates, at once and without copies; the optimizer
/// connects to the plan in one call; and parameters cannot be rebound to other tensors.
#[test]
fn a_plan_at_another_batch_size_shares_the_trained_weights() {
    use shadergrad::graph::{GemmSpec, Parameter};
    use shadergrad::optim::{Optimizer, OptimizerConfig, Rule};

    let mut train = Graph::new(gpu());
    let x = train.input("x", &[4, 2]);
    let w = train.parameter("w", &[2, 3], vec![0.1; 6]).unwrap();
    let b = train.parameter("b", &[3], vec![0.0; 3]).unwrap();
    let logits = train.gemm(x, w, GemmSpec::new().bias(b)).unwrap();
    let labels = train.input_indices("labels", &[4]);
    let loss = train.cross_entropy(logits, labels).unwrap();
    let grads = train.backward(loss).unwrap();
    let mut outputs = vec![loss, logits];
    outputs.extend(grads.parameter_gradients());
    let mut trainer = train.compile(&outputs).unwrap();
    let pairs = trainer.parameter_pairs(&grads).unwrap();
    // Without the gradients among the outputs there is nothing to update: named.
    let message = train
        .compile(&[loss])
        .unwrap()
        .parameter_pairs(&grads)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("\"w\"") && message.contains("parameter_gradients"),
        "{message}"
    );
    let mut optimizer =
        Optimizer::new(gpu(), OptimizerConfig::new(Rule::Sgd, 0.5), &pairs).unwrap();

    let weights: Vec<Parameter> = [w, b]
        .iter()
        .map(|&v| train.parameter_of(v).unwrap().clone())
        .collect();
    assert!(train.parameter_of(x).is_none());
    let mut serve = Graph::new(gpu());
    let one = serve.input("x", &[1, 2]);
    let (w1, b1) = (
        serve.param(&weights[0]).unwrap(),
        serve.param(&weights[1]).unwrap(),
    );
    assert_eq!(
        serve.param(&weights[0]).unwrap(),
        w1,
        "asked twice, one value"
    );
    let served = serve.gemm(one, w1, GemmSpec::new().bias(b1)).unwrap();
    let mut server = serve.compile(&[served]).unwrap();

    let xs = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.5];
    for _ in 0..3 {
        optimizer.prepare_step(1).unwrap();
        trainer
            .run(
                &[Feed::f32(x, &xs), Feed::u32(labels, &[0, 1, 2, 0])],
                optimizer.dispatches(),
            )
            .unwrap();
        // The training run's logits came before its update: run again to see the new weights.
        trainer
            .run(&[Feed::f32(x, &xs), Feed::u32(labels, &[0, 1, 2, 0])], &[])
            .unwrap();
        let batch = trainer.read(logits).unwrap();
        for row in 0..4 {
            server
                .run(&[Feed::f32(one, &xs[row * 2..row * 2 + 2])], &[])
                .unwrap();
            let single = server.read(served).unwrap();
            for (a, b) in single.iter().zip(&batch[row * 3..row * 3 + 3]) {
                assert!((a - b).abs() < 1e-6, "row {row}: {single:?} vs {batch:?}");
            }
        }
    }
    assert_ne!(
        weights[0].to_vec().unwrap(),
        vec![0.1; 6],
        "trained in place"
    );

    // A parameter keeps its tensor: binding it to another is refused, naming it.
    let other = shadergrad::Tensor::zeros(gpu(), &[2, 3]).unwrap();
    let message = serve
        .compile_with(&[served], &[(w1, &other)])
        .err()
        .expect("a parameter cannot be rebound")
        .to_string();
    assert!(
        message.contains("\"w\"") && message.contains("Parameter"),
        "{message}"
    );
}

/// Each parameter's gradient is written to its own gradient tensor, even where autodiff
/// gives two parameters one value (a sum of both), or a parameter the seed itself.
#[test]
fn parameters_sharing_one_gradient_value_each_get_their_own() {
    let mut g = Graph::new(gpu());
    let a = g.parameter("a", &[3], vec![1.0, 2.0, 3.0]).unwrap();
    let b = g.parameter("b", &[3], vec![0.5; 3]).unwrap();
    let c = g.parameter("c", &[], vec![2.0]).unwrap();
    let both = g.add(a, b).unwrap();
    let total = g.sum_all(both).unwrap();
    let loss = g.add(total, c).unwrap();
    let grads = g.backward(loss).unwrap();
    let mut outputs = vec![loss];
    outputs.extend(grads.parameter_gradients());
    let mut plan = g.compile(&outputs).unwrap();
    plan.run(&[], &[]).unwrap();
    assert_eq!(plan.read(loss).unwrap(), [9.5]);
    for (var, expected) in [(a, vec![1.0; 3]), (b, vec![1.0; 3]), (c, vec![1.0])] {
        let parameter = g.parameter_of(var).unwrap();
        assert_eq!(
            parameter.gradient().unwrap().to_vec().unwrap(),
            expected,
            "{}",
            parameter.name()
        );
    }
}

/// argmax along every axis (the first of equal values), and u32 values reshaped: ids fed
/// as `[2, 3]` and read by an embedding as `[6]`.
#[test]
fn argmax_along_any_axis_and_reshaped_ids() {
    let mut g = Graph::new(gpu());
    let shape = [2usize, 3, 4];
    let x = g.input("x", &shape);
    let positions: Vec<_> = (0..3).map(|axis| g.argmax(x, axis).unwrap()).collect();
    let last = g.argmax(x, -1).unwrap();
    let mut plan = g
        .compile(&[positions[0], positions[1], positions[2], last])
        .unwrap();
    // Values with ties: 7.0 at two places of some rows.
    let xs: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32).collect();
    plan.run(&[Feed::f32(x, &xs)], &[]).unwrap();
    let at = |i: usize, j: usize, k: usize| xs[i * 12 + j * 4 + k];
    for axis in 0..3 {
        let got = plan.fetch_indices(positions[axis]).unwrap();
        let kept: Vec<usize> = (0..3).filter(|&a| a != axis).map(|a| shape[a]).collect();
        assert_eq!(got.shape, kept);
        let mut want = Vec::new();
        for p in 0..kept[0] {
            for q in 0..kept[1] {
                let value = |l: usize| match axis {
                    0 => at(l, p, q),
                    1 => at(p, l, q),
                    _ => at(p, q, l),
                };
                let best = (0..shape[axis]).fold(0, |b, l| if value(l) > value(b) { l } else { b });
                want.push(best as u32);
            }
        }
        assert_eq!(got.data, want, "axis {axis}");
    }
    assert_eq!(
        plan.read_indices(last).unwrap(),
        plan.read_indices(positions[2]).unwrap()
    );

    let mut g = Graph::new(gpu());
    let table = g
        .parameter("table", &[5, 2], (0..10).map(|v| v as f32).collect())
        .unwrap();
    let ids = g.input_indices("ids", &[2, 3]);
    let flat = g.reshape(ids, &[6]).unwrap();
    let rows = g.embedding(table, flat).unwrap();
    let mut plan = g.compile(&[rows, flat]).unwrap();
    plan.run(&[Feed::u32(ids, &[4, 0, 1, 1, 3, 2])], &[])
        .unwrap();
    assert_eq!(
        plan.read(rows).unwrap(),
        [8.0, 9.0, 0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 6.0, 7.0, 4.0, 5.0]
    );
    assert_eq!(plan.fetch_indices(flat).unwrap().shape, vec![6]);
}

/// PyTorch keeps class targets as i64 with -100 for an ignored row: fed as they are, with
/// the ignore index set to -100, they give the loss of the same targets in u32 with a class
/// value as the ignore index. Values that are neither a class nor the ignore index are
/// refused naming the value and its position.
#[test]
fn i64_targets_with_pytorch_ignore_index() {
    let loss_of = |spec: CrossEntropySpec, feed: &dyn Fn(Var) -> Feed<'static>| {
        let mut g = Graph::new(gpu());
        let logits = g.input("logits", &[4, 3]);
        let targets = g.input_indices("targets", &[4]);
        let loss = g.cross_entropy_with(logits, targets, spec).unwrap();
        let mut plan = g.compile(&[loss]).unwrap();
        const LOGITS: [f32; 12] = [
            0.1, 0.7, -0.3, 1.2, 0.0, -1.0, 0.5, 0.5, 2.0, -0.4, 0.9, 0.3,
        ];
        plan.run(&[Feed::f32(logits, &LOGITS), feed(targets)], &[])
            .map(|_| plan.fetch(loss).unwrap().data)
    };
    let spec = CrossEntropySpec::mean();
    let torch = loss_of(spec.ignore(PYTORCH_IGNORE_INDEX), &|t| {
        Feed::i64(t, &[2, -100, 1, -100])
    })
    .unwrap();
    let classes = loss_of(spec.ignore(0), &|t| Feed::u32(t, &[2, 0, 1, 0])).unwrap();
    assert_eq!(torch, classes);

    let message = loss_of(spec.ignore(PYTORCH_IGNORE_INDEX), &|t| {
        Feed::i64(t, &[2, -1, 1, 0])
    })
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("\"targets\"")
            && message.contains("index -1 at position 1")
            && message.contains("ignore value -100"),
        "{message}"
    );
    // Without an ignore index, -100 is out of range too.
    let message = loss_of(spec, &|t| Feed::i64(t, &[2, -100, 1, 0]))
        .unwrap_err()
        .to_string();
    assert!(message.contains("index -100 at position 1"), "{message}");
    // An ignore index that is neither a u32 nor a negative i32 is refused when the op is
    // added.
    let mut g = Graph::new(gpu());
    let logits = g.input("logits", &[4, 3]);
    let targets = g.input_indices("targets", &[4]);
    let message = g
        .cross_entropy_with(logits, targets, spec.ignore(i64::MIN))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("ignore index -9223372036854775808 is outside"),
        "{message}"
    );
}

/// i64 feeds of ids are checked as u32 ones are: against the table they index, or, for
/// an input that no op bounds, against the u32 range.
#[test]
fn i64_feeds_of_ids_are_checked() {
    let mut g = Graph::new(gpu());
    let ids = g.input_indices("ids", &[3]);
    let lengths = g.input_indices("lengths", &[2]);
    let table = g.parameter("table", &[5, 2], vec![0.0; 10]).unwrap();
    let rows = g.gather(table, 0, ids).unwrap();
    let mut plan = g.compile(&[rows, lengths]).unwrap();
    let feed = |ids_data: &'static [i64], lengths_data: &'static [i64]| {
        [Feed::i64(ids, ids_data), Feed::i64(lengths, lengths_data)]
    };
    plan.run(&feed(&[4, 0, 2], &[7, 4_000_000_000]), &[])
        .unwrap();
    assert_eq!(
        plan.fetch_indices(lengths).unwrap().data,
        [7, 4_000_000_000]
    );
    let message = plan
        .run(&feed(&[4, 5, 2], &[7, 1]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("\"ids\"") && message.contains("index 5 at position 1"),
        "{message}"
    );
    let message = plan
        .run(&feed(&[4, 0, 2], &[7, -1]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("\"lengths\"") && message.contains("value -1 at position 1"),
        "{message}"
    );
}
