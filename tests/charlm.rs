//! The character language model end to end: it learns a tiny text far beyond character
//! frequencies, every cell trains, and a checkpoint samples like the model it saved.

mod common;

use common::gpu;
use shadergrad::data::corpus::{lm_batches, split_text, unigram_perplexity, LmBatch};
use shadergrad::data::text::Vocab;
use shadergrad::kernels::recurrent::CellKind;
use shadergrad::models::charlm::{evaluate, CharLmModel};
use shadergrad::nn::charlm::CharLmConfig;
use shadergrad::optim::{OptimizerConfig, Rule};
use shadergrad::rng::Rng;

/// Words drawn at random from a small list, separated by spaces: within a word every next
/// letter is certain, which the unigram model cannot know.
fn word_text(chars: usize, seed: u64) -> String {
    const WORDS: [&str; 8] = ["the", "cat", "sat", "on", "mat", "with", "a", "hat"];
    let mut rng = Rng::new(seed);
    let mut text = String::new();
    while text.len() < chars {
        text.push_str(WORDS[rng.below(WORDS.len())]);
        text.push(' ');
    }
    text
}

struct Data {
    vocab: Vocab,
    train: Vec<u32>,
    valid: Vec<u32>,
}

fn data(text: &str) -> Data {
    let vocab = Vocab::from_text(text);
    let chars: Vec<char> = text.chars().collect();
    let (train, valid) = split_text(&chars, 0.9);
    let encode = |chars: &[char]| vocab.encode(&chars.iter().collect::<String>()).0;
    let (train, valid) = (encode(train), encode(valid));
    Data {
        vocab,
        train,
        valid,
    }
}

fn model(cell: CellKind, layers: usize, vocab: &Vocab) -> CharLmModel {
    let config = CharLmConfig {
        cell,
        vocab_size: vocab.len(),
        embed: 16,
        hidden: 48,
        layers,
    };
    CharLmModel::new(gpu(), config, vocab.clone(), 3).unwrap()
}

/// Trains `epochs` epochs of windows of 16 with Adam; the mean loss of each epoch.
fn train(model: &mut CharLmModel, ids: &[u32], epochs: usize) -> Vec<f64> {
    let config = OptimizerConfig::new(Rule::adam(), 1e-2).with_max_grad_norm(5.0);
    let mut optimizer = model.parameters.optimizer(config).unwrap();
    let mut losses = Vec::new();
    let mut step = 0;
    for epoch in 0..epochs {
        let batches = lm_batches(ids, 16, 16, epoch % 16, Some(epoch as u64)).unwrap();
        let (mut sum, mut tokens) = (0.0, 0);
        for batch in &batches {
            step += 1;
            optimizer.prepare_step(step).unwrap();
            let report = model.train_step(batch, optimizer.dispatches()).unwrap();
            sum += f64::from(report.loss) * report.tokens as f64;
            tokens += report.tokens;
        }
        losses.push(sum / tokens as f64);
    }
    losses
}

fn valid_batches(ids: &[u32]) -> Vec<LmBatch> {
    lm_batches(ids, 16, 16, 0, None).unwrap()
}

#[test]
fn a_gru_beats_the_unigram_perplexity_of_a_tiny_text_by_far() {
    let data = data(&word_text(4000, 1));
    let unigram = unigram_perplexity(&data.train, &data.valid, data.vocab.len());
    let mut model = model(CellKind::Gru, 1, &data.vocab);
    let (before, _) = evaluate(&mut model, &valid_batches(&data.valid)).unwrap();
    let losses = train(&mut model, &data.train, 8);
    let (loss, accuracy) = evaluate(&mut model, &valid_batches(&data.valid)).unwrap();
    let perplexity = loss.exp();
    // Letters within a word are certain; only the word after a space is a guess (one of
    // 8), so a model of the words gets near 8^(1/4) ≈ 1.7; the letters' frequencies ≈ 10.
    assert!(
        perplexity < 0.4 * unigram,
        "validation perplexity {perplexity} (accuracy {accuracy}, untrained {}) vs unigram \
         {unigram}; training losses {losses:?}",
        before.exp()
    );
    assert!(before.exp() > unigram, "an untrained model knows nothing");

    // Greedy sampling completes a word the way the text always does.
    let prompt = data.vocab.encode("the ca").0;
    let drawn = model.sample(&prompt, 2, 0.0, &mut Rng::new(0)).unwrap();
    assert_eq!(data.vocab.decode(&drawn), "t ");
}

#[test]
fn every_cell_and_two_layers_lower_the_loss() {
    let data = data(&word_text(1200, 2));
    for (cell, layers) in [(CellKind::Rnn, 1), (CellKind::Lstm, 1), (CellKind::Gru, 2)] {
        let mut model = model(cell, layers, &data.vocab);
        let losses = train(&mut model, &data.train, 6);
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        assert!(last < 0.6 * first, "{cell:?} × {layers}: {losses:?}");
    }
}

#[test]
fn a_checkpoint_samples_like_the_model_it_saved() {
    let data = data(&word_text(1200, 3));
    let mut model = model(CellKind::Lstm, 2, &data.vocab);
    train(&mut model, &data.train, 2);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("charlm-checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lm.safetensors");
    model.save(&path, None, serde_json::json!({})).unwrap();
    let checkpoint = shadergrad::checkpoint::load(&path).unwrap();
    let mut loaded = CharLmModel::from_checkpoint(gpu(), &checkpoint).unwrap();
    assert_eq!(loaded.config, model.config);
    assert_eq!(loaded.vocab, model.vocab);
    let prompt = data.vocab.encode("the ").0;
    for temperature in [0.0, 1.0] {
        let ours = model
            .sample(&prompt, 40, temperature, &mut Rng::new(9))
            .unwrap();
        let theirs = loaded
            .sample(&prompt, 40, temperature, &mut Rng::new(9))
            .unwrap();
        assert_eq!(ours, theirs, "temperature {temperature}");
        assert!(ours.iter().all(|&id| id >= 4), "a special token was drawn");
        // Each sample starts afresh from a zero state.
        let again = model
            .sample(&prompt, 40, temperature, &mut Rng::new(9))
            .unwrap();
        assert_eq!(again, ours, "temperature {temperature}, sampled again");
    }
    for (prompt, temperature) in [(vec![], 1.0), (prompt.clone(), -1.0), (prompt, f64::NAN)] {
        assert!(model
            .sample(&prompt, 5, temperature, &mut Rng::new(0))
            .is_err());
    }
}

/// The count from the sizes alone (checked before anything is built, and against a
/// checkpoint's tensors) is the count of the model built.
#[test]
fn the_parameter_count_from_the_sizes_is_the_models() {
    let vocab = Vocab::from_text("the cat sat on the mat");
    for cell in [CellKind::Rnn, CellKind::Gru, CellKind::Lstm] {
        for layers in [1, 3] {
            let model = model(cell, layers, &vocab);
            assert_eq!(
                model.config.parameter_count().unwrap(),
                model.parameters.numel() as u64,
                "{:?}",
                model.config
            );
        }
    }
}
