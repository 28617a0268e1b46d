//! The text CNN end to end (it learns the built-in reviews task; its predictions do not
//! depend on the batch's padding), and its data: the tokeniser, the vocabulary, labels, the
//! reviews grammar, batches and TSV errors.

mod common;

use std::path::{Path, PathBuf};

use common::gpu;
use shadergrad::data::classify::{
    encode_texts, read_labelled_tsv, split_examples, text_batches, tokenize, ClassifyTask,
    EncodedText, LabelledText, Labels, WordVocab, NO_LABEL, PAD, UNK,
};
use shadergrad::models::textcnn::{evaluate, TextCnnModel};
use shadergrad::nn::textcnn::{window_mask, TextCnnConfig};
use shadergrad::optim::{OptimizerConfig, Rule};

fn example(label: &str, text: &str) -> LabelledText {
    LabelledText {
        label: label.into(),
        text: text.into(),
    }
}

fn scratch_file(name: &str, contents: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn small_model(train: &[LabelledText], widths: Vec<usize>) -> TextCnnModel {
    let labels = Labels::from_examples(train).unwrap();
    let vocab = WordVocab::from_examples(train);
    let config = TextCnnConfig {
        vocab_size: vocab.len(),
        embed: 16,
        widths,
        filters: 16,
        classes: labels.len(),
    };
    TextCnnModel::new(gpu(), config, vocab, labels, 3).unwrap()
}

/// 1,200 reviews, three epochs of batch 32 with Adam at 0.01: the held-out reviews (whose
/// texts never occur in training) reach 95%.
#[test]
fn learns_the_reviews_task() {
    let (train, valid) = ClassifyTask::Reviews.generate(1200, 200, 5).unwrap();
    let mut model = small_model(&train, vec![2, 3, 4]);
    let train_ids = encode_texts(&model.vocab, &model.labels, &train, "training").unwrap();
    let valid_ids = encode_texts(&model.vocab, &model.labels, &valid, "validation").unwrap();
    let config = OptimizerConfig::new(Rule::adam(), 0.01);
    let mut optimizer = model.parameters.optimizer(config).unwrap();
    let (start_loss, start_accuracy) = evaluate(&mut model, &valid_ids, 32).unwrap();
    let mut step = 0;
    for epoch in 0..3 {
        for batch in text_batches(&train_ids, 32, 4, Some(epoch)).unwrap() {
            step += 1;
            optimizer.prepare_step(step).unwrap();
            let report = model.train_step(&batch, optimizer.dispatches()).unwrap();
            assert!(report.loss.is_finite(), "step {step}: loss {}", report.loss);
        }
    }
    let (loss, accuracy) = evaluate(&mut model, &valid_ids, 32).unwrap();
    assert!(
        accuracy >= 0.95 && loss < start_loss,
        "validation accuracy {start_accuracy:.3} → {accuracy:.3}, loss {start_loss:.3} → {loss:.3}"
    );

    // The window masks make a text's logits independent of its batch's padding: the same
    // texts in batches of 7 (other lengths, other plans) score the same.
    let (loss_7, accuracy_7) = evaluate(&mut model, &valid_ids, 7).unwrap();
    assert_eq!(accuracy, accuracy_7);
    assert!((loss - loss_7).abs() < 1e-4, "{loss} vs {loss_7}");

    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("textcnn-reviews.safetensors");
    model
        .save(&path, Some(&optimizer), serde_json::json!({}))
        .unwrap();
    let checkpoint = shadergrad::checkpoint::load(&path).unwrap();
    let names: Vec<&str> = checkpoint.tensors.iter().map(|t| t.name.as_str()).collect();
    for name in [
        "embedding.weight",
        "conv3.weight",
        "conv4.bias",
        "output.weight",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("optimizer.")),
        "{names:?}"
    );
    let config = &checkpoint.config;
    assert_eq!(
        config["labels"],
        serde_json::json!(["negative", "neutral", "positive"])
    );
    assert_eq!(
        config["vocabulary"].as_array().unwrap().len() + 2,
        model.vocab.len()
    );
}

#[test]
fn a_batch_narrower_than_the_widest_filter_is_refused() {
    let train = vec![example("a", "x y z w"), example("b", "y z")];
    let mut model = small_model(&train, vec![2, 5]);
    let texts = encode_texts(&model.vocab, &model.labels, &train, "training").unwrap();
    let mut batch = text_batches(&texts, 2, 1, None).unwrap().remove(0);
    assert_eq!(batch.steps, 4);
    let error = model.train_step(&batch, &[]).unwrap_err().to_string();
    assert!(error.contains("widest filter (5)"), "{error}");
    batch = text_batches(&texts, 2, 5, None).unwrap().remove(0);
    model.train_step(&batch, &[]).unwrap();
}

#[test]
fn bad_model_sizes_name_the_value() {
    let train = vec![example("a", "x"), example("b", "y")];
    let labels = Labels::from_examples(&train).unwrap();
    let vocab = WordVocab::from_examples(&train);
    for (widths, filters, embed, expected) in [
        (vec![2, 0], 8, 8, "--widths 2,0"),
        (vec![], 8, 8, "--widths (none)"),
        (vec![3, 3], 8, 8, "each width once"),
        (vec![2], 0, 8, "--filters 0"),
        (vec![2], 8, 0, "--embed 0"),
    ] {
        let config = TextCnnConfig {
            vocab_size: vocab.len(),
            embed,
            widths,
            filters,
            classes: 2,
        };
        let error = TextCnnModel::new(gpu(), config, vocab.clone(), labels.clone(), 0)
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn tokenize_lowercases_and_splits_punctuation() {
    assert_eq!(
        tokenize("Not GOOD, honestly!  It wasn't\tfun..."),
        ["not", "good", ",", "honestly", "!", "it", "wasn't", "fun", ".", ".", "."]
    );
    assert_eq!(
        tokenize("'quoted' rock'n'roll"),
        ["'", "quoted", "'", "rock'n'roll"]
    );
    assert!(tokenize(" \t ").is_empty());
    assert_eq!(tokenize("Éclair ÜBER"), ["éclair", "über"]);
}

#[test]
fn vocabulary_has_pad_and_unk_and_sorted_words() {
    let train = vec![example("pos", "very good"), example("neg", "Not good")];
    let vocab = WordVocab::from_examples(&train);
    assert_eq!(vocab.words(), ["good", "not", "very"]);
    assert_eq!(vocab.len(), 5);
    assert_eq!(vocab.encode("NOT very bad"), [3, 4, UNK]);
    assert_ne!(vocab.encode("good")[0], PAD);
    let error = WordVocab::from_words(&["a".into(), "b".into(), "a".into()])
        .unwrap_err()
        .to_string();
    assert!(error.contains("\"a\" appears twice"), "{error}");
}

#[test]
fn labels_are_sorted_and_unknown_validation_labels_are_named() {
    let train = vec![
        example("spam", "buy now"),
        example("ham", "see you"),
        example("spam", "win"),
    ];
    let labels = Labels::from_examples(&train).unwrap();
    assert_eq!(labels.names(), ["ham", "spam"]);
    let vocab = WordVocab::from_examples(&train);
    let encoded = encode_texts(&vocab, &labels, &train, "training").unwrap();
    assert_eq!(
        encoded.iter().map(|e| e.label).collect::<Vec<_>>(),
        [1, 0, 1]
    );
    let valid = vec![
        example("eggs", "x"),
        example("ham", "y"),
        example("bacon", "z"),
    ];
    let error = encode_texts(&vocab, &labels, &valid, "validation")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("validation") && error.contains("\"bacon\", \"eggs\""),
        "{error}"
    );
    let error = Labels::from_examples(&train[..1]).unwrap_err().to_string();
    assert!(
        error.contains("1 class") && error.contains("spam"),
        "{error}"
    );
}

#[test]
fn reviews_follow_the_grammar_and_hold_out_validation_texts() {
    let (train, valid) = ClassifyTask::Reviews.generate(3000, 300, 11).unwrap();
    assert_eq!((train.len(), valid.len()), (3000, 300));
    let train_texts: std::collections::HashSet<_> = train.iter().map(|e| &e.text).collect();
    assert_eq!(train_texts.len(), 3000, "a training text repeats");
    assert!(valid.iter().all(|e| !train_texts.contains(&e.text)));
    let mut counts = std::collections::BTreeMap::new();
    for e in &train {
        *counts.entry(e.label.as_str()).or_insert(0) += 1;
    }
    // Neutral is a quarter of the reviews, positive and negative three eighths each.
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!((600..900).contains(&counts["neutral"]), "{counts:?}");
    assert!((1000..1250).contains(&counts["positive"]), "{counts:?}");
    // The n-grams decide: every judgement form of the grammar, spot-checked.
    for e in &train {
        let words = tokenize(&e.text);
        let has = |phrase: &[&str]| words.windows(phrase.len()).any(|w| w == phrase);
        let negated_intensifier = words.windows(2).any(|pair| {
            ["not", "never"].contains(&pair[0].as_str())
                && ["very", "really", "so", "quite", "too"].contains(&pair[1].as_str())
        });
        let expected = if negated_intensifier {
            Some("neutral")
        } else if has(&["not", "good"]) || has(&["never", "great"]) {
            Some("negative")
        } else if has(&["not", "bad"]) || has(&["very", "good"]) {
            Some("positive")
        } else {
            None
        };
        if let Some(expected) = expected {
            assert_eq!(e.label, expected, "{:?}", e.text);
        }
    }
    // Deterministic from the seed; the validation texts depend only on their count.
    assert_eq!(
        ClassifyTask::Reviews.generate(10, 300, 11).unwrap().1,
        valid
    );
    assert!(ClassifyTask::parse("tweets")
        .unwrap_err()
        .to_string()
        .contains("reviews"));
    let error = ClassifyTask::Reviews
        .generate(usize::MAX / 2, 10, 0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("different texts"), "{error}");
}

#[test]
fn batches_pad_to_the_longest_text_and_the_widest_filter() {
    let texts = vec![
        EncodedText {
            ids: vec![5, 6, 7],
            label: 1,
        },
        EncodedText {
            ids: vec![8],
            label: 0,
        },
        EncodedText {
            ids: vec![9, 10],
            label: 1,
        },
    ];
    let batches = text_batches(&texts, 2, 4, None).unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].steps, 4);
    assert_eq!(batches[0].ids, [5, 6, 7, PAD, 8, PAD, PAD, PAD]);
    assert_eq!(batches[0].lengths, [3, 1]);
    assert_eq!(batches[1].real, 1);
    assert_eq!(batches[1].labels, [1, NO_LABEL]);
    assert_eq!(batches[1].ids, [9, 10, PAD, PAD, PAD, PAD, PAD, PAD]);
    let wide = text_batches(&texts, 3, 1, None).unwrap();
    assert_eq!(wide[0].steps, 3);
    let shuffled = text_batches(&texts, 3, 1, Some(4)).unwrap();
    let mut seen = shuffled[0].examples.clone();
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2]);
    assert!(text_batches(&texts, 0, 1, None).is_err());
    assert!(text_batches(&[], 2, 1, None).is_err());
    // Windows a text fills: 3 words, width 2 → starts 0 and 1 of the 3 in 4 steps; a text
    // shorter than the width keeps its first window.
    assert_eq!(
        window_mask(&[3, 1, 0], 4, 2),
        [1., 1., 0., 1., 0., 0., 1., 0., 0.]
    );
}

#[test]
fn tsv_errors_name_the_file_and_line() {
    let good = scratch_file(
        "classify-good.tsv",
        "\u{feff}pos\tGreat fun!\r\n\nneg\tdull\tslow\n",
    );
    let examples = read_labelled_tsv(&good).unwrap().contents;
    assert_eq!(
        examples,
        [example("pos", "Great fun!"), example("neg", "dull\tslow")]
    );
    for (name, contents, expected) in [
        (
            "classify-no-tab.tsv",
            "pos\tok\nneg no tab\n",
            "line 2: no tab",
        ),
        ("classify-empty-text.tsv", "pos\t  \n", "line 1: the text"),
        (
            "classify-punct-only.tsv",
            "pos\tfine\nneg\t\n",
            "line 2: the text",
        ),
        (
            "classify-empty-label.tsv",
            "pos\tok\n\tok\n",
            "line 2: the label",
        ),
        ("classify-empty.tsv", "\n\n", "holds no examples"),
    ] {
        let path = scratch_file(name, contents);
        let error = read_labelled_tsv(&path).unwrap_err().to_string();
        assert!(
            error.contains(name) && error.contains(expected),
            "{name}: {error}"
        );
    }
    let missing = read_labelled_tsv("/nonexistent/reviews.tsv")
        .unwrap_err()
        .to_string();
    assert!(missing.contains("/nonexistent/reviews.tsv"), "{missing}");
}

#[test]
fn split_holds_out_the_fraction() {
    let examples: Vec<_> = (0..20)
        .map(|i| example(if i % 2 == 0 { "a" } else { "b" }, &format!("text {i}")))
        .collect();
    let (train, valid) = split_examples(&examples, 0.25, 1).unwrap();
    assert_eq!((train.len(), valid.len()), (15, 5));
    assert!(valid.iter().all(|v| !train.contains(v)));
    for fraction in [0.0, 1.0, f64::NAN, 0.01] {
        let error = split_examples(&examples, fraction, 1)
            .unwrap_err()
            .to_string();
        assert!(error.contains("fraction"), "{fraction}: {error}");
    }
}

/// The count from the sizes alone (checked before anything is built, and against a
/// checkpoint's tensors) is the count of the model built.
#[test]
fn the_parameter_count_from_the_sizes_is_the_models() {
    let train = [
        example("pos", "good film"),
        example("neg", "bad plot, bad acting"),
    ];
    for widths in [vec![1], vec![2, 3, 5]] {
        let model = small_model(&train, widths);
        assert_eq!(
            model.config.parameter_count().unwrap(),
            model.parameters.numel() as u64
        );
    }
}
