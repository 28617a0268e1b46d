//! Training speed of `train-seq2seq`'s RNN encoder-decoder at the sizes a real corpus
//! needs, in target tokens per second: the same step and sizes as
//! `benches/seq2seq_pytorch.py`, which times PyTorch eager on the same work, so that the two
//! compare. A bidirectional GRU encoder with dot attention, embeddings of H/2, batch 64,
//! sources of 20 tokens and targets of 19 plus EOS (random ids, the same batch every step),
//! Adam with clipping; for each (V, H) of the sweep the median of 5 steps after 1 warm-up,
//! then each kernel's share of the last size's step (every dispatch timed alone).
//!
//! `cargo bench --bench seq2seq_sizes` (`SIZES=5000x256,30000x512` for other sizes)

mod common;

use std::time::Instant;

use shadergrad::data::text::{bucketed_batches, Bucketing, EncodedPair};
use shadergrad::data::tokens::{PairVocab, TokenLevel, TokenVocab, VocabLimits};
use shadergrad::kernels::recurrent::CellKind;
use shadergrad::models::seq2seq::Seq2SeqModel;
use shadergrad::nn::seq2seq::{Architecture, AttentionKind, RecurrentConfig, Seq2SeqConfig};
use shadergrad::optim::{OptimizerConfig, Rule};
use shadergrad::rng::Rng;
use shadergrad::Gpu;

const BATCH: usize = 64;
const SOURCE_LEN: usize = 20;
const TARGET_LEN: usize = 20;
const WARMUP: usize = 1;
const RUNS: usize = 5;

/// `V×H` pairs from `SIZES`, or the sweep of `benches/seq2seq_pytorch.py`.
fn sizes() -> Vec<(usize, usize)> {
    let parse = |pair: &str| {
        let (v, h) = pair.split_once('x')?;
        Some((v.trim().parse().ok()?, h.trim().parse().ok()?))
    };
    match std::env::var("SIZES") {
        Ok(list) => list.split(',').filter_map(parse).collect(),
        Err(_) => vec![(11, 64), (5000, 256), (30000, 256), (30000, 512)],
    }
}

/// A vocabulary of `words` words (plus the special tokens) on both sides.
fn vocab(words: usize) -> shadergrad::Result<PairVocab> {
    let text: String = (0..words).map(|i| format!("w{i} ")).collect();
    let side = TokenVocab::learn([text.as_str()], TokenLevel::Word, VocabLimits::default())?;
    Ok(PairVocab {
        source: side.clone(),
        target: side,
    })
}

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    common::print_adapter(&gpu);
    println!(
        "{:>6} {:>6} {:>6} {:>12} {:>10} {:>10}",
        "vocab", "hidden", "embed", "parameters", "ms/step", "tokens/s"
    );
    let mut profile = None;
    for (words, hidden) in sizes() {
        let vocab = vocab(words)?;
        let v = vocab.target.len();
        let config = Seq2SeqConfig {
            source_vocab_size: v,
            target_vocab_size: v,
            layers: 1,
            architecture: Architecture::Recurrent(RecurrentConfig {
                cell: CellKind::Gru,
                attention: AttentionKind::Dot,
                embed: hidden / 2,
                hidden,
                bidirectional: true,
            }),
        };
        let parameters = config.parameter_count()?;
        let mut rng = Rng::new(1);
        let mut ids =
            |len: usize| -> Vec<u32> { (0..len).map(|_| 4 + rng.below(v - 4) as u32).collect() };
        let pairs: Vec<EncodedPair> = (0..BATCH)
            .map(|_| EncodedPair {
                source: ids(SOURCE_LEN),
                target: ids(TARGET_LEN - 1),
            })
            .collect();
        let mut model = Seq2SeqModel::new(&gpu, config, vocab, (SOURCE_LEN, TARGET_LEN), 0)?;
        let optimizer_config = OptimizerConfig::new(Rule::adam(), 1e-2).with_max_grad_norm(5.0);
        let mut optimizer = model.parameters.optimizer(optimizer_config)?;
        let bucketing = Bucketing {
            batch: BATCH,
            round_to: 1,
            pad_last: true,
        };
        let batch = bucketed_batches(&pairs, &bucketing, None)?.remove(0);
        let mut seconds = Vec::new();
        let mut tokens = 0;
        for step in 1..=WARMUP + RUNS {
            optimizer.prepare_step(step as u64)?;
            let start = Instant::now();
            let report = model.train_step(&batch, 0, optimizer.dispatches())?;
            if step > WARMUP {
                seconds.push(start.elapsed().as_secs_f64());
            }
            tokens = report.tokens;
        }
        seconds.sort_by(f64::total_cmp);
        let median = seconds[seconds.len() / 2];
        println!(
            "{:>6} {hidden:>6} {:>6} {parameters:>12} {:>10.1} {:>10.0}",
            v,
            hidden / 2,
            median * 1e3,
            tokens as f64 / median
        );
        let step = model.training_dispatches(&batch)?.to_vec();
        profile = Some((words, hidden, step, optimizer.dispatches().to_vec()));
    }
    if let Some((words, hidden, step, update)) = profile {
        println!("the step at vocabulary {words}, hidden {hidden}:");
        common::print_profile(&gpu, &[&step, &update])?;
    }
    Ok(())
}
