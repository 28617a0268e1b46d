//! Training speed of the encoder-decoder of `train-seq2seq` on 3-digit addition: wall time
//! per step (the step's submission and its loss read back) and target tokens per second, for
//! the default model (bidirectional GRU, hidden 64) and variants.
//!
//! `cargo bench --bench seq2seq`

mod common;

use std::time::Instant;

use shadergrad::data::text::{bucketed_batches, longest, Bucketing, Task};
use shadergrad::data::tokens::{PairVocab, PairVocabSpec};
use shadergrad::kernels::recurrent::CellKind;
use shadergrad::models::seq2seq::Seq2SeqModel;
use shadergrad::nn::seq2seq::{Architecture, AttentionKind, RecurrentConfig, Seq2SeqConfig};
use shadergrad::optim::{OptimizerConfig, Rule};
use shadergrad::Gpu;

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    common::print_adapter(&gpu);
    let task = Task::Addition {
        digits: 3,
        reverse_input: false,
    };
    let (train, _) = task.generate(2_000, 10, 0)?;
    let vocab = PairVocab::learn(&train, PairVocabSpec::default())?;
    let pairs = vocab.encode(&train).0;
    println!(
        "{:<6} {:>6} {:>6} {:>6} {:>6} {:>12} {:>12} {:>10}",
        "cell", "bidir", "hidden", "embed", "batch", "median ms", "spread ms", "tokens/s"
    );
    let mut profile = None;
    for (cell, bidirectional, hidden, batch) in [
        (CellKind::Gru, true, 64, 128),
        (CellKind::Gru, false, 64, 128),
        (CellKind::Gru, false, 128, 128),
        (CellKind::Lstm, true, 64, 128),
        (CellKind::Rnn, true, 64, 128),
    ] {
        let config = Seq2SeqConfig {
            source_vocab_size: vocab.source.len(),
            target_vocab_size: vocab.target.len(),
            layers: 1,
            architecture: Architecture::Recurrent(RecurrentConfig {
                cell,
                attention: AttentionKind::Dot,
                embed: 32,
                hidden,
                bidirectional,
            }),
        };
        let mut model = Seq2SeqModel::new(&gpu, config, vocab.clone(), longest(&pairs), 0)?;
        let optimizer_config = OptimizerConfig::new(Rule::adam(), 3e-3).with_max_grad_norm(5.0);
        let mut optimizer = model.parameters.optimizer(optimizer_config)?;
        let bucketing = Bucketing {
            batch,
            round_to: 1,
            pad_last: true,
        };
        // The longest batches, as most batches of addition are.
        let mut batches = bucketed_batches(&pairs, &bucketing, Some(1))?;
        batches.sort_by_key(|b| std::cmp::Reverse((b.source_steps, b.target_steps)));
        let batch_data = &batches[0];
        let mut seconds = Vec::new();
        let mut tokens = 0;
        for step in 1..=common::WARMUP + common::RUNS {
            optimizer.prepare_step(step as u64)?;
            let start = Instant::now();
            let report = model.train_step(batch_data, 0, optimizer.dispatches())?;
            if step > common::WARMUP {
                seconds.push(start.elapsed().as_secs_f64());
            }
            tokens = report.tokens;
        }
        if (cell, bidirectional, hidden) == (CellKind::Gru, true, 64) {
            let step = model.training_dispatches(batch_data)?.to_vec();
            profile = Some((step, optimizer.dispatches().to_vec()));
        }
        seconds.sort_by(f64::total_cmp);
        let median = seconds[seconds.len() / 2];
        println!(
            "{:<6} {:>6} {:>6} {:>6} {:>6} {:>12.2} {:>12.2} {:>10.0}",
            cell.name(),
            bidirectional,
            hidden,
            32,
            batch,
            median * 1e3,
            (seconds[seconds.len() - 1] - seconds[0]) * 1e3,
            tokens as f64 / median
        );
    }
    if let Some((step, update)) = profile {
        println!("the default model's step (GRU 64, bidirectional):");
        common::print_profile(&gpu, &[&step, &update])?;
    }
    Ok(())
}
