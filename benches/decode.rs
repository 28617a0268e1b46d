//! Decoding speed of `translate` and `evaluate` at a real corpus's vocabulary: sentences per
//! second, greedy and beam 4, for a bidirectional GRU (hidden 128) and a 2-layer Transformer
//! (d_model 128) whose target vocabulary is `V` words (30,000 by default). The weights are
//! random, so no output ends early: every sentence runs its 21 steps.
//!
//! `cargo bench --bench decode` (`V=5000 cargo bench --bench decode` for another size)

mod common;

use std::time::Instant;

use shadergrad::data::tokens::{PairVocab, TokenLevel, TokenVocab, VocabLimits};
use shadergrad::kernels::recurrent::CellKind;
use shadergrad::models::seq2seq::Seq2SeqModel;
use shadergrad::nn::seq2seq::{Architecture, AttentionKind, RecurrentConfig, Seq2SeqConfig};
use shadergrad::nn::transformer::TransformerConfig;
use shadergrad::rng::Rng;
use shadergrad::Gpu;

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    common::print_adapter(&gpu);
    let words: usize = std::env::var("V")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let text: String = (0..words).map(|i| format!("w{i} ")).collect();
    let vocab = PairVocab {
        source: TokenVocab::learn(["0123456789+"], TokenLevel::Char, VocabLimits::default())?,
        target: TokenVocab::learn([text.as_str()], TokenLevel::Word, VocabLimits::default())?,
    };
    let mut rng = Rng::new(1);
    let sources: Vec<Vec<u32>> = (0..128)
        .map(|_| (0..7).map(|_| 4 + rng.below(11) as u32).collect())
        .collect();
    let models = [
        (
            "gru",
            1,
            Architecture::Recurrent(RecurrentConfig {
                cell: CellKind::Gru,
                attention: AttentionKind::Dot,
                embed: 64,
                hidden: 128,
                bidirectional: true,
            }),
        ),
        (
            "transformer",
            2,
            Architecture::Transformer(TransformerConfig {
                width: 128,
                heads: 4,
                ff: 256,
                dropout: 0.0,
            }),
        ),
    ];
    println!(
        "{:<12} {:>8} {:>5} {:>12} {:>8}",
        "model", "vocab", "beam", "sentences/s", "seconds"
    );
    for (name, layers, architecture) in models {
        let config = Seq2SeqConfig {
            source_vocab_size: vocab.source.len(),
            target_vocab_size: vocab.target.len(),
            layers,
            architecture,
        };
        let mut model = Seq2SeqModel::new(&gpu, config, vocab.clone(), (8, 20), 0)?;
        for beam in [1, 4] {
            let chunk = 64 / beam;
            model.decode(&sources[..chunk], beam, chunk)?; // compiles the plans
            let started = Instant::now();
            model.decode(&sources, beam, chunk)?;
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{name:<12} {:>8} {beam:>5} {:>12.1} {seconds:>8.2}",
                vocab.target.len(),
                sources.len() as f64 / seconds
            );
        }
    }
    Ok(())
}
