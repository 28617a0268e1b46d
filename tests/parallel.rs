//! Data parallelism in one process: the gradient sum and parameter synchronisation across
//! devices, batches cut into shares, and training on two devices (two opened on one adapter)
//! against one device on the whole batch.

mod common;

use common::{gpu, parameter_distance, reverse_pairs};
use serde_json::json;
use shadergrad::data::classify::ClassifyTask;
use shadergrad::data::corpus::lm_batches;
use shadergrad::data::points::BuiltinTask;
use shadergrad::data::text::{bucketed_batches, Bucketing, EncodedPair};
use shadergrad::data::tokens::PairVocabSpec;
use shadergrad::nn::charlm::CharLmConfig;
use shadergrad::nn::seq2seq::{Architecture, AttentionKind, RecurrentConfig, Seq2SeqConfig};
use shadergrad::nn::transformer::TransformerConfig;
use shadergrad::nn::Activation;
use shadergrad::nn::{Init, Parameters};
use shadergrad::optim::{OptimizerConfig, Rule};
use shadergrad::parallel::{synchronize_parameters, GradientSum, SingleProcess};
use shadergrad::train::charlm::{train_lm, train_lm_parallel, LmTraining};
use shadergrad::train::cnn::{train_cnn, train_cnn_parallel, CnnTraining};
use shadergrad::train::mlp::{train_mlp, train_mlp_parallel, MlpTraining};
use shadergrad::train::seq2seq::{
    train_seq2seq, train_seq2seq_parallel, Epochs, Selection, Seq2SeqTraining,
};
use shadergrad::{AdapterSelector, Gpu};

/// A second device on the adapter the tests run on.
fn second_device() -> Gpu {
    let index = shadergrad::gpu::enumerate_adapters(&shadergrad::gpu::instance())
        .unwrap()
        .iter()
        .position(|adapter| adapter.get_info() == *gpu().info())
        .expect("the test device's adapter is listed");
    let second = Gpu::new(&AdapterSelector::Index(index)).unwrap();
    assert!(!second.same_device(gpu()));
    second
}

/// Two replicas of a two-parameter model, one on each of two devices.
fn replicas(devices: &[&Gpu], seeds: &[u64]) -> Vec<Parameters> {
    devices
        .iter()
        .zip(seeds)
        .map(|(device, &seed)| {
            let params = Parameters::new(device, seed);
            params
                .get_or_init("w", &[3, 2], Init::Uniform(1.0))
                .unwrap();
            params.get_or_init("b", &[5], Init::Uniform(1.0)).unwrap();
            params
        })
        .collect()
}

#[test]
fn gradient_sums_weigh_each_replica_and_reach_every_one() {
    let second = second_device();
    let params = replicas(&[gpu(), &second], &[1, 2]);
    let mut sum = GradientSum::new(&params).unwrap();
    assert_eq!(sum.numel(), 11);
    let gradients = [
        (0..11).map(|i| i as f32).collect::<Vec<_>>(),
        (0..11).map(|i| 100.0 - i as f32).collect::<Vec<_>>(),
    ];
    for (replica, values) in params.iter().zip(&gradients) {
        let (w, b) = (replica.get("w").unwrap(), replica.get("b").unwrap());
        replica
            .gpu()
            .write(w.gradient().unwrap().buffer(), &values[..6]);
        replica
            .gpu()
            .write(b.gradient().unwrap().buffer(), &values[6..]);
    }
    let mut counters = [1.5, 7.0];
    let timing = sum
        .sum(&SingleProcess, &[0.25, 0.5], &mut counters)
        .unwrap();
    assert_eq!(
        counters,
        [1.5, 7.0],
        "one process: the counters come back as they were"
    );
    assert_eq!(timing.bytes, 13 * 4);
    let expected: Vec<f32> = (0..11)
        .map(|i| 0.25 * i as f32 + 0.5 * (100.0 - i as f32))
        .collect();
    for replica in &params {
        let mut got = replica
            .get("w")
            .unwrap()
            .gradient()
            .unwrap()
            .to_vec()
            .unwrap();
        got.extend(
            replica
                .get("b")
                .unwrap()
                .gradient()
                .unwrap()
                .to_vec()
                .unwrap(),
        );
        assert_eq!(got, expected, "every replica holds the weighted sum");
    }
    let error = sum.sum(&SingleProcess, &[1.0], &mut []).unwrap_err();
    assert!(
        error.to_string().contains("1 weights for 2 replicas"),
        "{error}"
    );
}

#[test]
fn replicas_start_from_the_first_ones_parameters_and_must_match() {
    let second = second_device();
    let params = replicas(&[gpu(), &second], &[1, 2]);
    let first_w = params[0].get("w").unwrap().value().to_vec().unwrap();
    assert_ne!(
        first_w,
        params[1].get("w").unwrap().value().to_vec().unwrap(),
        "different seeds draw different weights"
    );
    synchronize_parameters(&params, &SingleProcess).unwrap();
    for name in ["w", "b"] {
        assert_eq!(
            params[1].get(name).unwrap().value().to_vec().unwrap(),
            params[0].get(name).unwrap().value().to_vec().unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        params[0].get("w").unwrap().value().to_vec().unwrap(),
        first_w
    );

    let other = Parameters::new(&second, 3);
    other.get_or_init("w", &[2, 3], Init::Zeros).unwrap();
    other.get_or_init("b", &[5], Init::Zeros).unwrap();
    for error in [
        GradientSum::new(&[params[0].clone(), other.clone()]).unwrap_err(),
        synchronize_parameters(&[params[0].clone(), other], &SingleProcess).unwrap_err(),
    ] {
        assert!(
            error
                .to_string()
                .contains("replica 1 has \"w\" [2, 3] where replica 0 has \"w\" [3, 2]"),
            "{error}"
        );
    }
    assert!(GradientSum::new(&[]).is_err());
}

fn encoded(pairs: &[(Vec<u32>, Vec<u32>)]) -> Vec<EncodedPair> {
    pairs
        .iter()
        .map(|(source, target)| EncodedPair {
            source: source.clone(),
            target: target.clone(),
        })
        .collect()
}

#[test]
fn a_batch_cuts_into_shares_that_keep_its_steps_and_rows() {
    let pairs = encoded(&[
        (vec![5, 6, 7], vec![8]),
        (vec![9], vec![10, 11, 12]),
        (vec![13, 14], vec![15, 16]),
    ]);
    let bucketing = Bucketing {
        batch: 5,
        round_to: 1,
        pad_last: true,
    };
    let batch = bucketed_batches(&pairs, &bucketing, None)
        .unwrap()
        .remove(0);
    assert_eq!((batch.batch, batch.real), (5, 3));
    let shards = batch.shards(2).unwrap();
    assert_eq!(
        shards.iter().map(|s| (s.batch, s.real)).collect::<Vec<_>>(),
        [(3, 3), (2, 0)]
    );
    for (shard, rows) in shards.iter().zip([0..3, 3..5]) {
        assert_eq!(
            (shard.source_steps, shard.target_steps),
            (batch.source_steps, batch.target_steps)
        );
        for (row, whole_row) in rows.clone().enumerate() {
            for t in 0..batch.source_steps {
                assert_eq!(
                    shard.source[t * shard.batch + row],
                    batch.source[t * batch.batch + whole_row]
                );
            }
            for t in 0..batch.target_steps {
                assert_eq!(
                    shard.decoder_input[t * shard.batch + row],
                    batch.decoder_input[t * batch.batch + whole_row]
                );
                assert_eq!(
                    shard.target[row * batch.target_steps + t],
                    batch.target[whole_row * batch.target_steps + t]
                );
            }
            assert_eq!(shard.source_lengths[row], batch.source_lengths[whole_row]);
            assert_eq!(shard.target_lengths[row], batch.target_lengths[whole_row]);
        }
    }
    assert_eq!(shards[0].examples, batch.examples);
    assert!(shards[1].examples.is_empty());
    assert_eq!(
        shards.iter().map(|s| s.target_tokens()).sum::<usize>(),
        batch.target_tokens()
    );
    let three = batch.shards(3).unwrap();
    assert_eq!(three.iter().map(|s| s.batch).collect::<Vec<_>>(), [2, 2, 1]);
    for bad in [0, 6] {
        let error = batch.shards(bad).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("{bad} parts of a batch of 5 rows")),
            "{error}"
        );
    }
    assert!(batch.rows(4..4).is_err() && batch.rows(3..6).is_err());
}

/// Ten steps of 16 pairs (one epoch of 150: the last batch holds 6 pairs and 10 rows of
/// padding, so that one replica's share is padding alone), saved to `save`.
fn ten_steps(
    model: Seq2SeqConfig,
    optimizer: OptimizerConfig,
    save: &std::path::Path,
) -> Seq2SeqTraining {
    let pairs = reverse_pairs(180, 5);
    Seq2SeqTraining {
        train: pairs[..150].to_vec(),
        valid: pairs[150..].to_vec(),
        data_description: json!({"test": "parallel"}),
        model,
        tokens: PairVocabSpec::default(),
        optimizer,
        lr_decay: 1.0,
        warmup: 0,
        batch: 16,
        epochs: Epochs::Fixed(1),
        max_minutes: None,
        seed: 11,
        save: Some(save.to_path_buf()),
        resume: None,
        metrics: None,
        samples: 0,
        select: Selection::Loss,
    }
}

/// Ten steps on one device against the same ten steps shared between two devices (opened on
/// the one adapter), each taking half of every batch.
///
/// The two runs differ only in the order of sums: a gradient summed over a batch's 16 rows
/// inside one product becomes two sums of 8 added on the host, each weighted by its share
/// of the tokens. Each such sum differs by a few float32 roundings (relative 2⁻²⁴ ≈ 6e-8
/// per addition, a few hundred additions deep: at most about 1e-6 of the gradient's size).
/// SGD moves each parameter by lr × gradient (lr 0.5, gradients below 1 after clipping to
/// norm 1), so after ten steps the parameters may differ by about 10 × 0.5 × 1e-6 = 5e-6,
/// a little more where one step's change feeds the next: the tolerance is 1e-5 (measured:
/// 4e-8 for the GRU, 1.2e-7 for the Transformer). Adam divides by √v, which can turn the
/// rounding of a gradient near zero into a step of up to lr, so its run gets 1e-4
/// (measured: 1.2e-6). A share weighed wrongly (each half's mean gradient added at weight
/// 1, twice the whole batch's) moves the GRU's parameters 0.12 away.
#[test]
fn two_devices_on_half_batches_take_the_steps_of_one_on_the_whole() {
    let dir = std::env::temp_dir().join(format!("shadergrad-parallel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let second = second_device();
    let gru = Seq2SeqConfig {
        source_vocab_size: 0,
        target_vocab_size: 0,
        layers: 1,
        architecture: Architecture::Recurrent(RecurrentConfig {
            cell: shadergrad::kernels::recurrent::CellKind::Gru,
            attention: AttentionKind::Dot,
            embed: 16,
            hidden: 32,
            bidirectional: true,
        }),
    };
    let transformer = Seq2SeqConfig {
        source_vocab_size: 0,
        target_vocab_size: 0,
        layers: 1,
        architecture: Architecture::Transformer(TransformerConfig {
            width: 32,
            heads: 4,
            ff: 64,
            dropout: 0.0,
        }),
    };
    let sgd = OptimizerConfig::new(Rule::Sgd, 0.5).with_max_grad_norm(1.0);
    let adam = OptimizerConfig::new(Rule::adam(), 0.003).with_max_grad_norm(1.0);
    for (name, model, optimizer, tolerance) in [
        ("gru-sgd", gru.clone(), sgd, 1e-5),
        ("gru-adam", gru, adam, 1e-4),
        ("transformer-sgd", transformer, sgd, 1e-5),
    ] {
        let (one, two) = (
            dir.join(format!("{name}-one.safetensors")),
            dir.join(format!("{name}-two.safetensors")),
        );
        let single = train_seq2seq(gpu(), &ten_steps(model.clone(), optimizer, &one)).unwrap();
        let parallel = train_seq2seq_parallel(
            &[gpu().clone(), second.clone()],
            &SingleProcess,
            &ten_steps(model, optimizer, &two),
        )
        .unwrap();
        assert_eq!((single.steps, parallel.steps), (10, 10), "{name}");
        let (distance, largest) = parameter_distance(&one, &two);
        assert!(
            distance <= tolerance,
            "{name}: the parameters differ by up to {distance:e} (tolerance {tolerance:e})"
        );
        assert!(largest > 0.1, "{name}: parameters of size {largest}");
        let (best_single, best_parallel) = (single.best.1.unwrap(), parallel.best.1.unwrap());
        assert!(
            (best_single - best_parallel).abs() < 1e-3,
            "{name}: validation losses {best_single} and {best_parallel}"
        );
    }
    let error = train_seq2seq_parallel(
        &[gpu().clone(), second],
        &SingleProcess,
        &Seq2SeqTraining {
            batch: 1,
            ..ten_steps(
                Seq2SeqConfig {
                    source_vocab_size: 0,
                    target_vocab_size: 0,
                    layers: 1,
                    architecture: Architecture::Recurrent(RecurrentConfig {
                        cell: shadergrad::kernels::recurrent::CellKind::Gru,
                        attention: AttentionKind::Dot,
                        embed: 8,
                        hidden: 8,
                        bidirectional: false,
                    }),
                },
                sgd,
                &dir.join("never.safetensors"),
            )
        },
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("a batch of 1 pairs cannot be shared among 2 replicas"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_batch_of_windows_cuts_into_shares_of_its_windows() {
    let ids: Vec<u32> = (4..40).collect();
    let batch = lm_batches(&ids, 5, 4, 0, None).unwrap().remove(0);
    let shares = batch.shards(3).unwrap();
    assert_eq!(
        shares.iter().map(|s| s.batch).collect::<Vec<_>>(),
        [2, 1, 1]
    );
    for (share, rows) in shares.iter().zip([0..2, 2..3, 3..4]) {
        assert_eq!(share.steps, batch.steps);
        for (row, whole_row) in rows.enumerate() {
            for t in 0..batch.steps {
                assert_eq!(
                    share.input[t * share.batch + row],
                    batch.input[t * 4 + whole_row]
                );
                assert_eq!(
                    share.target[t * share.batch + row],
                    batch.target[t * 4 + whole_row]
                );
            }
        }
    }
    assert_eq!(shares.iter().map(|s| s.tokens).sum::<usize>(), batch.tokens);
    assert!(batch.shards(5).is_err() && batch.shards(0).is_err());
}

/// The language model's ten-odd steps on two devices against one, as the seq2seq test above
/// (the same bound, for the same reasons).
#[test]
fn the_language_model_on_two_devices_takes_the_steps_of_one() {
    let dir = std::env::temp_dir().join(format!("shadergrad-parallel-lm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let second = second_device();
    let text: String = (0..120)
        .map(|i| format!("line {i}: the quick brown fox {} jumps.\n", i % 7))
        .collect();
    let training = |save: &std::path::Path| LmTraining {
        text: text.clone(),
        text_name: "test text".into(),
        model: CharLmConfig {
            cell: shadergrad::kernels::recurrent::CellKind::Gru,
            vocab_size: 0,
            embed: 16,
            hidden: 32,
            layers: 1,
        },
        optimizer: OptimizerConfig::new(Rule::Sgd, 0.5).with_max_grad_norm(1.0),
        batch: 16,
        steps: 24,
        epochs: 1,
        seed: 3,
        save: Some(save.to_path_buf()),
        resume: None,
        metrics: None,
        sample_length: 0,
        max_minutes: None,
        patience: 3,
    };
    let (one, two) = (dir.join("one.safetensors"), dir.join("two.safetensors"));
    let single = train_lm(gpu(), &training(&one)).unwrap();
    let parallel =
        train_lm_parallel(&[gpu().clone(), second], &SingleProcess, &training(&two)).unwrap();
    assert_eq!(single.steps, parallel.steps);
    assert!(single.steps >= 8, "{} steps", single.steps);
    let (distance, largest) = parameter_distance(&one, &two);
    assert!(
        distance <= 1e-5,
        "the parameters differ by up to {distance:e}"
    );
    assert!(largest > 0.1, "parameters of size {largest}");
    assert!((single.best_val_perplexity - parallel.best_val_perplexity).abs() < 1e-3);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The text CNN and the MLP on two devices against one, each over a last batch that is half
/// padding (so that a share holds no example), with the bound of the seq2seq test above.
#[test]
fn the_text_cnn_and_the_mlp_on_two_devices_take_the_steps_of_one() {
    let dir = std::env::temp_dir().join(format!("shadergrad-parallel-cls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let second = second_device();
    let both = [gpu().clone(), second];
    let sgd = OptimizerConfig::new(Rule::Sgd, 0.5).with_max_grad_norm(1.0);

    let (train, valid) = ClassifyTask::Reviews.generate(200, 40, 5).unwrap();
    let cnn = |save: &std::path::Path| CnnTraining {
        train: train.clone(),
        valid: valid.clone(),
        data_description: json!({"test": "parallel"}),
        embed: 16,
        widths: vec![2, 3],
        filters: 8,
        optimizer: sgd,
        batch: 16, // 200 texts: the last batch holds 8 texts and 8 rows of padding
        epochs: 1,
        seed: 9,
        save: Some(save.to_path_buf()),
        resume: None,
        metrics: None,
    };
    let (one, two) = (
        dir.join("cnn-one.safetensors"),
        dir.join("cnn-two.safetensors"),
    );
    let single = train_cnn(gpu(), &cnn(&one)).unwrap();
    let parallel = train_cnn_parallel(&both, &SingleProcess, &cnn(&two)).unwrap();
    assert_eq!((single.steps, parallel.steps), (13, 13));
    let (distance, largest) = parameter_distance(&one, &two);
    assert!(
        distance <= 1e-5,
        "CNN: the parameters differ by up to {distance:e}"
    );
    assert!(largest > 0.1, "CNN: parameters of size {largest}");
    assert!((single.valid_loss - parallel.valid_loss).abs() < 1e-4);

    let points = BuiltinTask::Spirals.generate(40, 3).unwrap(); // 120 points
    let (train, test) = points.split(0.8, 3).unwrap(); // 96 train: batches of 64 and 32 + 32 padding
    let mlp = |save: &std::path::Path| MlpTraining {
        train: train.clone(),
        test: test.clone(),
        hidden: vec![16, 16],
        activation: Activation::Tanh,
        optimizer: sgd,
        batch: 64,
        epochs: 5,
        seed: 4,
        save: Some(save.to_path_buf()),
        resume: None,
        metrics: None,
        data_description: "test".into(),
        standardizer: None,
    };
    let (one, two) = (
        dir.join("mlp-one.safetensors"),
        dir.join("mlp-two.safetensors"),
    );
    let single = train_mlp(gpu(), &mlp(&one)).unwrap();
    let parallel = train_mlp_parallel(&both, &SingleProcess, &mlp(&two)).unwrap();
    assert_eq!((single.steps, parallel.steps), (10, 10));
    let (distance, largest) = parameter_distance(&one, &two);
    assert!(
        distance <= 1e-5,
        "MLP: the parameters differ by up to {distance:e}"
    );
    assert!(largest > 0.1, "MLP: parameters of size {largest}");
    assert!((single.final_loss - parallel.final_loss).abs() < 1e-4);
    std::fs::remove_dir_all(&dir).unwrap();
}
