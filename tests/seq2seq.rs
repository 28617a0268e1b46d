//! The encoder-decoder end to end: it learns, every cell and option trains, beam search and
//! checkpoints agree with the model.

mod common;

use common::{gpu, reverse_pairs};
use serde_json::json;
use shadergrad::data::text::{bucketed_batches, Bucketing, EncodedPair, Pair};
use shadergrad::data::tokens::{PairVocab, PairVocabSpec};
use shadergrad::kernels::recurrent::CellKind;
use shadergrad::models::seq2seq::{dropout_seed, evaluate, Seq2SeqModel};
use shadergrad::nn::seq2seq::{
    logit_rows_per_chunk, Architecture, AttentionKind, RecurrentConfig, Seq2SeqConfig,
};
use shadergrad::nn::transformer::TransformerConfig;
use shadergrad::optim::{OptimizerConfig, Rule};
use shadergrad::rng::Rng;

fn config(
    cell: CellKind,
    attention: AttentionKind,
    layers: usize,
    bidirectional: bool,
) -> Seq2SeqConfig {
    Seq2SeqConfig {
        source_vocab_size: 0,
        target_vocab_size: 0,
        layers,
        architecture: Architecture::Recurrent(RecurrentConfig {
            cell,
            attention,
            embed: 16,
            hidden: 48,
            bidirectional,
        }),
    }
}

fn model(config: Seq2SeqConfig, pairs: &[Pair]) -> (Seq2SeqModel, Vec<EncodedPair>) {
    let vocab = PairVocab::learn(pairs, PairVocabSpec::default()).unwrap();
    let encoded = vocab.encode(pairs).0;
    let config = Seq2SeqConfig {
        source_vocab_size: vocab.source.len(),
        target_vocab_size: vocab.target.len(),
        ..config
    };
    let model = Seq2SeqModel::new(gpu(), config, vocab, (5, 5), 7).unwrap();
    (model, encoded)
}

/// Trains `epochs` epochs with Adam; the mean loss of each epoch.
fn train(model: &mut Seq2SeqModel, pairs: &[EncodedPair], epochs: usize, lr: f32) -> Vec<f32> {
    let config = OptimizerConfig::new(Rule::adam(), lr).with_max_grad_norm(5.0);
    let mut optimizer = model.parameters.optimizer(config).unwrap();
    let bucketing = Bucketing {
        batch: 50,
        round_to: 1,
        pad_last: true,
    };
    let mut losses = Vec::new();
    let mut step = 0;
    for epoch in 0..epochs {
        let (mut sum, mut count) = (0.0, 0);
        for batch in bucketed_batches(pairs, &bucketing, Some(epoch as u64)).unwrap() {
            step += 1;
            optimizer.prepare_step(step).unwrap();
            let report = model
                .train_step(&batch, dropout_seed(7, step), optimizer.dispatches())
                .unwrap();
            sum += report.loss;
            count += 1;
        }
        losses.push(sum / count as f32);
    }
    losses
}

#[test]
fn a_gru_with_attention_learns_to_reverse_short_strings() {
    let pairs = reverse_pairs(1600, 1);
    let (train_pairs, valid_pairs) = pairs.split_at(1500);
    let (mut model, train_set) = model(
        config(CellKind::Gru, AttentionKind::Dot, 1, false),
        train_pairs,
    );
    let valid = model.vocab.encode(valid_pairs).0;
    let losses = train(&mut model, &train_set, 12, 1e-2);
    let (exact, loss, outputs) = evaluate(&mut model, &valid, 50).unwrap();
    assert!(
        exact >= 0.9,
        "exact-match {exact} (validation loss {loss}) after training losses {losses:?}"
    );
    // Beam search finds outputs at least as right as greedy decoding here.
    let sources: Vec<Vec<u32>> = valid.iter().map(|p| p.source.clone()).collect();
    let beamed = model.decode(&sources, 4, 50).unwrap();
    let right = |outputs: &[Vec<u32>]| {
        outputs
            .iter()
            .zip(&valid)
            .filter(|(o, p)| **o == p.target)
            .count()
    };
    assert!(
        right(&beamed) + 3 >= right(&outputs),
        "beam {} vs greedy {}",
        right(&beamed),
        right(&outputs)
    );
    // Decoding in other group sizes gives the same outputs, one sentence at a time too.
    assert_eq!(model.decode(&sources, 1, 7).unwrap(), outputs);
    assert_eq!(one_at_a_time(&mut model, &sources[..20]), outputs[..20]);
}

/// Greedy decoding of each source alone, a group of one.
fn one_at_a_time(model: &mut Seq2SeqModel, sources: &[Vec<u32>]) -> Vec<Vec<u32>> {
    sources
        .iter()
        .map(|source| {
            model
                .decode(std::slice::from_ref(source), 1, 1)
                .unwrap()
                .remove(0)
        })
        .collect()
}

#[test]
fn every_cell_layers_and_a_bidirectional_encoder_lower_the_loss() {
    let pairs = reverse_pairs(100, 2);
    for (cell, attention, layers, bidirectional) in [
        (CellKind::Rnn, AttentionKind::Dot, 1, false),
        (CellKind::Lstm, AttentionKind::Dot, 2, true),
        (CellKind::Gru, AttentionKind::None, 2, false),
        (CellKind::Gru, AttentionKind::Additive, 1, true),
        (CellKind::Lstm, AttentionKind::None, 1, false),
    ] {
        let (mut model, set) = model(config(cell, attention, layers, bidirectional), &pairs);
        let losses = train(&mut model, &set, 15, 1e-2);
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        assert!(
            last < 0.6 * first,
            "{cell:?} attention {attention:?} layers {layers} bidirectional {bidirectional}: {losses:?}"
        );
    }
}

#[test]
fn a_checkpoint_decodes_like_the_model_it_saved() {
    let pairs = reverse_pairs(100, 3);
    let (mut model, set) = model(
        config(CellKind::Lstm, AttentionKind::Additive, 1, true),
        &pairs,
    );
    train(&mut model, &set, 2, 1e-2);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("seq2seq-checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    model.save(&path, None, serde_json::json!({})).unwrap();
    let checkpoint = shadergrad::checkpoint::load(&path).unwrap();
    let mut loaded = Seq2SeqModel::from_checkpoint(gpu(), &checkpoint).unwrap();
    assert_eq!(loaded.config, model.config);
    assert_eq!(loaded.vocab, model.vocab);
    let sources: Vec<Vec<u32>> = set.iter().take(20).map(|p| p.source.clone()).collect();
    assert_eq!(
        loaded.decode(&sources, 2, 8).unwrap(),
        model.decode(&sources, 2, 8).unwrap()
    );
    // Too long a source is an error naming the limit.
    let err = model.decode(&[vec![4; 6]], 1, 1).err().unwrap().to_string();
    assert!(err.contains("maximum of 5"), "{err}");
}

/// A small Transformer: d_model 32, 4 heads, feed-forward 64.
fn transformer(layers: usize, dropout: f32) -> Seq2SeqConfig {
    Seq2SeqConfig {
        source_vocab_size: 0,
        target_vocab_size: 0,
        layers,
        architecture: Architecture::Transformer(TransformerConfig {
            width: 32,
            heads: 4,
            ff: 64,
            dropout,
        }),
    }
}

#[test]
fn a_transformer_with_dropout_learns_to_reverse_short_strings() {
    let pairs = reverse_pairs(1600, 1);
    let (train_pairs, valid_pairs) = pairs.split_at(1500);
    let (mut model, train_set) = model(transformer(2, 0.1), train_pairs);
    let valid = model.vocab.encode(valid_pairs).0;
    let losses = train(&mut model, &train_set, 16, 1e-3);
    let (exact, loss, outputs) = evaluate(&mut model, &valid, 50).unwrap();
    assert!(
        exact >= 0.9,
        "exact-match {exact} (validation loss {loss}) after training losses {losses:?}"
    );
    let sources: Vec<Vec<u32>> = valid.iter().map(|p| p.source.clone()).collect();
    let beamed = model.decode(&sources, 3, 50).unwrap();
    let right = |outputs: &[Vec<u32>]| {
        outputs
            .iter()
            .zip(&valid)
            .filter(|(o, p)| **o == p.target)
            .count()
    };
    assert!(
        right(&beamed) + 3 >= right(&outputs),
        "beam {} vs greedy {}",
        right(&beamed),
        right(&outputs)
    );
    assert_eq!(model.decode(&sources, 1, 7).unwrap(), outputs);
    assert_eq!(one_at_a_time(&mut model, &sources[..20]), outputs[..20]);
}

#[test]
fn a_transformer_checkpoint_decodes_like_the_model_it_saved() {
    let pairs = reverse_pairs(100, 3);
    let (mut model, set) = model(transformer(1, 0.2), &pairs);
    train(&mut model, &set, 2, 3e-3);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("transformer-checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    model.save(&path, None, serde_json::json!({})).unwrap();
    let checkpoint = shadergrad::checkpoint::load(&path).unwrap();
    let mut loaded = Seq2SeqModel::from_checkpoint(gpu(), &checkpoint).unwrap();
    assert_eq!(loaded.config, model.config);
    let sources: Vec<Vec<u32>> = set.iter().take(20).map(|p| p.source.clone()).collect();
    assert_eq!(
        loaded.decode(&sources, 2, 8).unwrap(),
        model.decode(&sources, 2, 8).unwrap()
    );
    // Checkpoints from before dropout load as trained without it.
    let mut old = model.config.to_json();
    old.as_object_mut().unwrap().remove("dropout");
    let old = Seq2SeqConfig::from_json(&old).unwrap();
    let Architecture::Transformer(old) = old.architecture else {
        panic!("a Transformer's config reads back as recurrent: {old:?}");
    };
    assert_eq!(old.dropout, 0.0);
    // Those from before the architecture was an enum also hold the recurrent fields a
    // Transformer ignored: they load as the same model.
    let mut union = model.config.to_json();
    let fields = union.as_object_mut().unwrap();
    for (key, value) in [
        ("cell", json!("gru")),
        ("attention", json!("dot")),
        ("embed", json!(16)),
        ("bidirectional", json!(false)),
    ] {
        fields.insert(key.into(), value);
    }
    assert_eq!(Seq2SeqConfig::from_json(&union).unwrap(), model.config);
    // A missing or ill-typed field is named.
    let mut broken = model.config.to_json();
    broken.as_object_mut().unwrap().remove("heads");
    let message = Seq2SeqConfig::from_json(&broken).unwrap_err().to_string();
    assert!(message.contains("missing field `heads`"), "{message}");
    broken["heads"] = json!("four");
    let message = Seq2SeqConfig::from_json(&broken).unwrap_err().to_string();
    assert!(
        message.contains("invalid type: string \"four\""),
        "{message}"
    );
}

#[test]
fn transformer_dropout_draws_a_mask_per_seed_and_evaluation_has_none() {
    let pairs = reverse_pairs(60, 4);
    let (mut model, set) = model(transformer(1, 0.3), &pairs);
    let bucketing = Bucketing {
        batch: 20,
        round_to: 1,
        pad_last: true,
    };
    let batch = &bucketed_batches(&set, &bucketing, None).unwrap()[0];
    let loss = |model: &mut Seq2SeqModel, seed: Option<u32>| match seed {
        Some(seed) => model.train_step(batch, seed, &[]).unwrap().loss,
        None => model.evaluation_step(batch).unwrap().loss,
    };
    let (seeded, reseeded, other) = (
        loss(&mut model, Some(1)),
        loss(&mut model, Some(1)),
        loss(&mut model, Some(2)),
    );
    assert_eq!(seeded.to_bits(), reseeded.to_bits());
    assert_ne!(seeded, other, "two dropout seeds gave one loss");
    let evaluated = loss(&mut model, None);
    assert_eq!(evaluated.to_bits(), loss(&mut model, None).to_bits());
    assert_ne!(
        evaluated, seeded,
        "evaluation dropped what training dropped"
    );
    // Without dropout, evaluation and training compute the same loss.
    let (mut plain, _) = self::model(transformer(1, 0.0), &pairs);
    assert_eq!(
        loss(&mut plain, Some(1)).to_bits(),
        loss(&mut plain, None).to_bits()
    );
}

#[test]
fn the_dropout_seed_changes_every_step_and_with_the_run() {
    let seeds: std::collections::HashSet<u32> =
        (1..=1000).map(|step| dropout_seed(0, step)).collect();
    assert_eq!(seeds.len(), 1000);
    assert_ne!(dropout_seed(0, 5), dropout_seed(1, 5));
    assert_eq!(dropout_seed(3, 5), dropout_seed(3, 5));
}

#[test]
fn a_transformer_dropout_outside_zero_to_one_is_an_error_naming_it() {
    for p in [-0.1f32, 1.0, 1.5] {
        let config = Seq2SeqConfig {
            source_vocab_size: 8,
            target_vocab_size: 8,
            ..transformer(1, p)
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains(&format!("p = {p}")), "{message}");
    }
}

/// The count from the sizes alone (used to check sizes before anything is built, and a
/// checkpoint's config against its tensors) is the count of the model built.
#[test]
fn the_parameter_count_from_the_sizes_is_the_models() {
    let pairs = reverse_pairs(20, 3);
    let mut configs = Vec::new();
    for cell in [CellKind::Rnn, CellKind::Gru, CellKind::Lstm] {
        for attention in [
            AttentionKind::None,
            AttentionKind::Dot,
            AttentionKind::Additive,
        ] {
            for (layers, bidirectional) in [(1, false), (2, true)] {
                configs.push(config(cell, attention, layers, bidirectional));
            }
        }
    }
    configs.extend([transformer(1, 0.0), transformer(3, 0.0)]);
    for config in configs {
        let (model, _) = model(config, &pairs);
        assert_eq!(
            model.config.parameter_count().unwrap(),
            model.parameters.numel() as u64,
            "{:?}",
            model.config
        );
    }
}

#[test]
fn sizes_that_overflow_or_outgrow_memory_are_refused_before_anything_is_built() {
    let with_hidden = |hidden: usize| Seq2SeqConfig {
        source_vocab_size: 20,
        target_vocab_size: 20,
        layers: 1,
        architecture: Architecture::Recurrent(RecurrentConfig {
            cell: CellKind::Gru,
            attention: AttentionKind::Dot,
            embed: 16,
            hidden,
            bidirectional: true,
        }),
    };
    let huge = with_hidden(usize::MAX / 2);
    let message = huge.parameter_count().unwrap_err().to_string();
    assert!(message.contains("overflows"), "{message}");
    let wide = with_hidden(1_000_000);
    let message = wide
        .training_memory(128, 10, 10)
        .unwrap()
        .check_against("train-seq2seq", 1 << 30, Some(24 << 30))
        .unwrap_err()
        .to_string();
    assert!(message.contains("hidden 1000000"), "{message}");
    let deep = Seq2SeqConfig {
        source_vocab_size: 20,
        target_vocab_size: 20,
        layers: 1_000_000,
        ..config(CellKind::Gru, AttentionKind::Dot, 1, true)
    };
    let message = deep.parameter_count().unwrap_err().to_string();
    assert!(message.contains("1000000 layers"), "{message}");
    // At a vocabulary of 30,004 words, decoding (one position per hypothesis) fits a 128 MiB
    // buffer limit at 64 rows, and so does training: a step's logits of 64 × 21 rows (154
    // MiB) go through the output layer in chunks that fit. What must fit is one row.
    let words = Seq2SeqConfig {
        source_vocab_size: 15,
        target_vocab_size: 30_004,
        ..transformer(2, 0.0)
    };
    let limit = 128 << 20;
    words
        .decoding_memory(64, 8, 21)
        .unwrap()
        .check_against("decode", limit, Some(24 << 30))
        .unwrap();
    words
        .training_memory(64, 8, 21)
        .unwrap()
        .check_against("train-seq2seq", limit, Some(24 << 30))
        .unwrap();
    assert_eq!(logit_rows_per_chunk(64 * 21, 30_004, limit), 1088);
    assert_eq!(logit_rows_per_chunk(64 * 21, 30_004, 40 * 30_004 * 4), 40);
    assert_eq!(logit_rows_per_chunk(64 * 21, 15, limit), 64 * 21);
    assert_eq!(logit_rows_per_chunk(64 * 21, 30_004, 1000), 1);
    let message = words
        .training_memory(64, 8, 21)
        .unwrap()
        .check_against("train-seq2seq", 100_000, Some(24 << 30))
        .unwrap_err()
        .to_string();
    assert!(message.contains("vocabulary 30004"), "{message}");
}

/// Scores of decoded outputs: exact match on tokens, the error rate in the target's units,
/// and sacreBLEU's BLEU and chrF on the texts.
#[test]
fn scores_count_in_the_targets_units() {
    use shadergrad::data::tokens::{TokenLevel, TokenVocab, VocabLimits};
    use shadergrad::models::seq2seq::Scores;
    let references = ["the cat sat on the mat .", "a dog ran home"];
    let words = TokenVocab::learn(references, TokenLevel::Word, VocabLimits::default()).unwrap();
    let ids = |text: &str| words.encode(text).0;
    let perfect = Scores::of(
        &words,
        &[ids(references[0]), ids(references[1])],
        &references,
    )
    .unwrap();
    assert_eq!(perfect.exact_match, 1.0);
    assert_eq!(perfect.token_error_rate, 0.0);
    assert!((perfect.bleu - 100.0).abs() < 1e-9 && (perfect.chrf - 100.0).abs() < 1e-9);
    // One word of eleven substituted: a word error rate of 1/11.
    let one_off = Scores::of(
        &words,
        &[ids("the cat sat on the dog ."), ids(references[1])],
        &references,
    )
    .unwrap();
    assert_eq!(one_off.exact_match, 0.5);
    assert!((one_off.token_error_rate - 1.0 / 11.0).abs() < 1e-12);
    assert!(one_off.bleu < 100.0 && one_off.chrf < 100.0);
    // Characters count characters.
    let chars = TokenVocab::learn(["abcd"], TokenLevel::Char, VocabLimits::default()).unwrap();
    let char_ids = chars.encode("abdd").0;
    let scores = Scores::of(&chars, &[char_ids], &["abcd"]).unwrap();
    assert_eq!(scores.token_error_rate, 0.25);
    let message = Scores::of(&chars, &[], &["abcd"]).unwrap_err().to_string();
    assert!(message.contains("0 outputs for 1 references"), "{message}");
}

#[test]
fn the_cached_transformer_decoder_step_gives_the_whole_prefix_decoders_states() {
    use shadergrad::graph::{Feed, Graph};
    use shadergrad::nn::transformer::Transformer;
    use shadergrad::nn::{DecodingStep, KeyValues, Mode, Parameters};
    use shadergrad::Tensor;
    let gpu = gpu();
    let mut config = transformer(2, 0.0);
    config.source_vocab_size = 13;
    config.target_vocab_size = 11;
    let params = Parameters::new(gpu, 7);
    let model = Transformer::new(&config, &params).unwrap();
    let (rows, source_steps, steps, width) = (3, 5, 6, 32);
    let mut rng = Rng::new(5);
    let source: Vec<u32> = (0..source_steps * rows)
        .map(|_| 4 + rng.below(9) as u32)
        .collect();
    let lengths = [5u32, 2, 4];
    let prefix: Vec<u32> = (0..steps * rows)
        .map(|_| 1 + rng.below(10) as u32)
        .collect();

    // The reference: the decoder over the whole prefix at once, causally masked.
    let mut g = Graph::new(gpu);
    let source_var = g.input_indices("source", &[source_steps, rows]);
    let lengths_var = g.input_indices("lengths", &[rows]);
    let prefix_var = g.input_indices("prefix", &[steps, rows]);
    let memory = model
        .encode(&mut g, source_var, lengths_var, Mode::Eval)
        .unwrap();
    let states = model
        .decoder_states(&mut g, prefix_var, memory, lengths_var, Mode::Eval)
        .unwrap();
    let mut plan = g.compile(&[states]).unwrap();
    plan.run(
        &[
            Feed::u32(source_var, &source),
            Feed::u32(lengths_var, &lengths),
            Feed::u32(prefix_var, &prefix),
        ],
        &[],
    )
    .unwrap();
    let whole = plan.read(states).unwrap(); // [rows, steps, width]

    // One position at a time, each layer's keys and values cached in tensors.
    let mut g = Graph::new(gpu);
    let source_var = g.input_indices("source", &[source_steps, rows]);
    let lengths_var = g.input_indices("lengths", &[rows]);
    let tokens = g.input_indices("tokens", &[1, rows]);
    let position = g.input_indices("position", &[1]);
    let cache_lengths = g.input_indices("cache_lengths", &[rows]);
    let memory = model
        .encode(&mut g, source_var, lengths_var, Mode::Eval)
        .unwrap();
    let memory = model.memory_keys_values(&mut g, memory).unwrap();
    let cache_shape = [rows, 4, steps, width / 4];
    let mut caches = Vec::new();
    let mut tensors = Vec::new();
    for layer in 0..2 {
        let keys = g.input(&format!("keys{layer}"), &cache_shape);
        let values = g.input(&format!("values{layer}"), &cache_shape);
        caches.push(KeyValues { keys, values });
        for var in [keys, values] {
            tensors.push((var, Tensor::zeros(gpu, &cache_shape).unwrap()));
        }
    }
    let step = DecodingStep {
        position,
        cache_lengths,
        memory_lengths: Some(lengths_var),
    };
    let stepped = model
        .decoder_step(&mut g, tokens, &caches, &memory, &step)
        .unwrap();
    let bound: Vec<_> = tensors.iter().map(|(var, t)| (*var, t)).collect();
    let mut plan = g.compile_with(&[stepped], &bound).unwrap();
    for t in 0..steps {
        plan.run(
            &[
                Feed::u32(source_var, &source),
                Feed::u32(lengths_var, &lengths),
                Feed::u32(tokens, &prefix[t * rows..(t + 1) * rows]),
                Feed::u32(position, &[t as u32]),
                Feed::u32(cache_lengths, &[t as u32 + 1; 3]),
            ],
            &[],
        )
        .unwrap();
        let got = plan.read(stepped).unwrap();
        let expected: Vec<f32> = (0..rows)
            .flat_map(|r| whole[(r * steps + t) * width..(r * steps + t + 1) * width].to_vec())
            .collect();
        common::assert_close(&format!("position {t}"), &got, &expected, 1e-4, 1e-5);
    }
}

#[test]
fn training_in_chunks_of_logit_rows_gives_the_whole_batchs_loss_and_gradients() {
    let pairs = reverse_pairs(120, 3);
    let bucketing = Bucketing {
        batch: 50,
        round_to: 1,
        pad_last: true,
    };
    for config in [
        config(CellKind::Gru, AttentionKind::Dot, 1, true),
        transformer(1, 0.0),
    ] {
        let (mut whole, train_set) = model(config.clone(), &pairs);
        let (mut chunked, _) = model(config, &pairs);
        // 50 rows × up to 6 target steps in chunks of 40 rows: the last chunk is shorter.
        chunked.limit_logit_rows(40);
        for batch in bucketed_batches(&train_set, &bucketing, None).unwrap() {
            let expected = whole.train_step(&batch, 0, &[]).unwrap();
            let got = chunked.train_step(&batch, 0, &[]).unwrap();
            common::assert_close("loss", &[got.loss], &[expected.loss], 1e-5, 1e-6);
            assert_eq!(
                (got.tokens, got.correct),
                (expected.tokens, expected.correct)
            );
            for parameter in whole.parameters.list() {
                let other = chunked.parameters.get(parameter.name()).unwrap();
                common::assert_close(
                    parameter.name(),
                    &other.gradient().unwrap().to_vec().unwrap(),
                    &parameter.gradient().unwrap().to_vec().unwrap(),
                    1e-4,
                    1e-6,
                );
            }
        }
    }
}
