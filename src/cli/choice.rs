//! The fixed sets of values the choice flags take: clap lists them in `--help` and answers
//! a value outside them with the nearest one. Each maps to the library's own type.

use clap::ValueEnum;
use shadergrad::data::classify::ClassifyTask;
use shadergrad::data::points::BuiltinTask;
use shadergrad::data::text::Task;
use shadergrad::data::tokens::TokenLevel;
use shadergrad::kernels::recurrent::CellKind;
use shadergrad::nn::seq2seq::AttentionKind;
use shadergrad::optim::Rule;
use shadergrad::train::seq2seq::Selection;

/// `--optimizer`: the update rule, with the command line's fixed hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Optimizer {
    /// Plain stochastic gradient descent.
    Sgd,
    /// SGD with heavy-ball momentum 0.9.
    Momentum,
    /// Adam with PyTorch's defaults: β1 0.9, β2 0.999, ε 1e-8.
    Adam,
    /// Adam with decoupled weight decay 0.01.
    Adamw,
}

impl Optimizer {
    pub fn rule(self) -> Rule {
        match self {
            Optimizer::Sgd => Rule::Sgd,
            Optimizer::Momentum => Rule::Momentum {
                momentum: 0.9,
                nesterov: false,
            },
            Optimizer::Adam => Rule::adam(),
            Optimizer::Adamw => Rule::adamw(0.01),
        }
    }
}

/// `train-lm --arch`: the recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cell {
    Rnn,
    Gru,
    Lstm,
}

impl From<Cell> for CellKind {
    fn from(cell: Cell) -> CellKind {
        match cell {
            Cell::Rnn => CellKind::Rnn,
            Cell::Gru => CellKind::Gru,
            Cell::Lstm => CellKind::Lstm,
        }
    }
}

/// `train-seq2seq --source-tokens`, `--target-tokens`: what a token of that side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tokens {
    /// One character.
    Char,
    /// A word, split at whitespace, with each punctuation mark a token of its own.
    Word,
    /// A subword piece of byte-pair encoding learned from that side's training texts.
    Bpe,
}

impl From<Tokens> for TokenLevel {
    fn from(tokens: Tokens) -> TokenLevel {
        match tokens {
            Tokens::Char => TokenLevel::Char,
            Tokens::Word => TokenLevel::Word,
            Tokens::Bpe => TokenLevel::Bpe,
        }
    }
}

/// `train-seq2seq --select`: what "validation improved" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Select {
    /// Exact match (higher is better).
    Exact,
    /// The teacher-forced loss (lower is better).
    Loss,
    /// The token error rate (lower is better).
    Ter,
    /// BLEU (higher is better).
    Bleu,
    /// chrF (higher is better).
    Chrf,
}

impl From<Select> for Selection {
    fn from(select: Select) -> Selection {
        match select {
            Select::Exact => Selection::ExactMatch,
            Select::Loss => Selection::Loss,
            Select::Ter => Selection::TokenErrorRate,
            Select::Bleu => Selection::Bleu,
            Select::Chrf => Selection::Chrf,
        }
    }
}

/// `train-seq2seq --arch`: a recurrent encoder-decoder of one cell, or a transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Seq2SeqArch {
    Rnn,
    Gru,
    Lstm,
    Transformer,
}

impl Seq2SeqArch {
    /// The recurrent cell, or `None` for the transformer.
    pub fn cell(self) -> Option<CellKind> {
        match self {
            Seq2SeqArch::Rnn => Some(CellKind::Rnn),
            Seq2SeqArch::Gru => Some(CellKind::Gru),
            Seq2SeqArch::Lstm => Some(CellKind::Lstm),
            Seq2SeqArch::Transformer => None,
        }
    }
}

/// `--attention`: how the decoder looks at the encoder states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Attention {
    /// Luong's multiplicative scores.
    Dot,
    /// Bahdanau's additive scores.
    Additive,
    /// The encoder's final state only.
    None,
}

impl From<Attention> for AttentionKind {
    fn from(attention: Attention) -> AttentionKind {
        match attention {
            Attention::Dot => AttentionKind::Dot,
            Attention::Additive => AttentionKind::Additive,
            Attention::None => AttentionKind::None,
        }
    }
}

/// `--activation`: the hidden layers' nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Activation {
    Tanh,
    Relu,
    Sigmoid,
    Gelu,
    Silu,
}

impl From<Activation> for shadergrad::nn::Activation {
    fn from(activation: Activation) -> shadergrad::nn::Activation {
        match activation {
            Activation::Tanh => shadergrad::nn::Activation::Tanh,
            Activation::Relu => shadergrad::nn::Activation::Relu,
            Activation::Sigmoid => shadergrad::nn::Activation::Sigmoid,
            Activation::Gelu => shadergrad::nn::Activation::Gelu,
            Activation::Silu => shadergrad::nn::Activation::Silu,
        }
    }
}

/// `train-mlp --schedule`: the learning rate over training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Schedule {
    /// --lr throughout.
    Constant,
    /// From --lr down to 1% of it, along half a cosine.
    Cosine,
}

/// `train-mlp --dataset`: a built-in task of 2-D points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Points {
    Spirals,
    Xor,
    Circles,
}

impl From<Points> for BuiltinTask {
    fn from(points: Points) -> BuiltinTask {
        match points {
            Points::Spirals => BuiltinTask::Spirals,
            Points::Xor => BuiltinTask::Xor,
            Points::Circles => BuiltinTask::Circles,
        }
    }
}

/// `train-seq2seq --task`: a built-in task of sequence pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SequenceTask {
    Addition,
    Reverse,
    Sort,
    Dates,
}

impl SequenceTask {
    /// The task; `digits` and `reverse_input` only shape addition (and are checked
    /// there).
    pub fn task(self, digits: usize, reverse_input: bool) -> shadergrad::Result<Task> {
        match self {
            SequenceTask::Addition => Task::addition(digits, reverse_input),
            SequenceTask::Reverse => Ok(Task::Reverse),
            SequenceTask::Sort => Ok(Task::Sort),
            SequenceTask::Dates => Ok(Task::Dates),
        }
    }
}

/// `train-cnn --task`: a built-in task of labelled texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextTask {
    Reviews,
}

impl From<TextTask> for ClassifyTask {
    fn from(task: TextTask) -> ClassifyTask {
        match task {
            TextTask::Reviews => ClassifyTask::Reviews,
        }
    }
}

/// The name a choice is typed as on the command line (`transformer`, `cross-entropy`).
pub(crate) fn typed_name(choice: impl ValueEnum) -> String {
    choice
        .to_possible_value()
        .expect("every choice can be typed")
        .get_name()
        .to_string()
}
