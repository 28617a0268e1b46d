//! shadergrad: a deep-learning engine whose every forward and backward computation runs
//! as a hand-written WGSL compute shader through wgpu (Vulkan, Metal, DX12).
//!
//! The engine, in layers, each built on those before it:
//! - [`gpu`]: adapter choice, device, buffer pool, pipeline cache, errors, readback, timing;
//! - [`kernels`]: one module per WGSL file, each with its launcher and CPU reference;
//! - [`Tensor`] (in [`tensor`]): f32 tensors on the GPU with eager calls of every kernel;
//! - [`optim`]: optimizers (SGD, momentum, Adam, AdamW), clipping and schedules on the GPU;
//! - [`graph`]: the autodiff graph, the training API: a model is built once as ops over
//!   `Var` handles, differentiated by `Graph::backward` and compiled into a `Plan` whose
//!   every step is one GPU submission;
//! - [`nn`]: a model's parameters (`Parameters`, its state dict, shared by the plans of
//!   every batch shape), the layers with PyTorch's names and layouts (`Linear`,
//!   `Embedding`, `LayerNorm`, `Conv1d`, `Recurrent`, `MultiheadAttention`, the Transformer's
//!   encoder and decoder layers, `Mlp`), activations, and the models composed of them (RNN
//!   encoder-decoder with attention, Transformer, character language model, text CNN);
//! - [`models`]: models ready to train and run (`Seq2SeqModel`, `CharLmModel`,
//!   `TextCnnModel`): each owns its parameters on the GPU, compiles a plan per batch shape,
//!   saves and loads checkpoints, and decodes, samples or classifies;
//! - `train` (only with the default `cli` feature): the command line's trainers
//!   (`train-mlp`, `train-cnn`, `train-lm`, `train-seq2seq`), their progress display and the
//!   per-epoch metrics file;
//! - `bench` (only with the default `cli` feature): what `shadergrad bench` measures, every
//!   kernel family and whole training steps, timed on one adapter.
//!
//! Beside them, used by several layers:
//! - [`error`]: the one error type, [`Error`], whose messages name the bad value and what
//!   was expected;
//! - [`checkpoint`]: saves and loads tensors and a JSON config as one safetensors file;
//! - [`data`]: labelled examples (built-in 2-D tasks, CSV), splits, batches, standardisation;
//!   sequence-to-sequence pairs (built-in tasks, TSV), a character vocabulary, bucketed batches;
//!   labelled texts with a word vocabulary; plain text in windows for a language model;
//! - [`limits`]: sizes checked before anything is allocated, against the adapter's largest
//!   buffer and the memory free, so that a wrong size is a prompt error naming it;
//! - [`files`]: reading text files with errors that say where, and writing files atomically,
//!   so that a crash never leaves one half-written;
//! - [`rng`]: a small seeded random generator (SplitMix64), the same numbers on every
//!   machine.
//!
//! ```no_run
//! use shadergrad::{Gpu, Tensor};
//!
//! let gpu = Gpu::default_adapter()?;
//! let x = Tensor::from_slice(&gpu, &[1.0, -2.0, 3.0, -4.0, 5.0, -6.0], &[2, 3])?;
//! let w = Tensor::from_slice(&gpu, &[0.5; 12], &[3, 4])?;
//! let y = x.matmul(&w)?.relu()?;
//! assert_eq!(y.shape(), &[2, 4]);
//! println!("{:?}", y.to_vec()?);
//! # Ok::<(), shadergrad::Error>(())
//! ```

#![warn(missing_docs)]

#[cfg(feature = "cli")]
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod files;
pub mod gpu;
pub mod graph;
mod hash;
pub mod kernels;
pub mod limits;
pub mod models;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod rng;
pub mod scoring;
pub mod tensor;
#[cfg(feature = "cli")]
pub mod train;

pub use error::{Error, Result};
pub use gpu::{AdapterSelector, Gpu};
pub use kernels::attention::{
    attention, attention_backward, attention_logits, attention_output, fused_attention,
    fused_attention_backward, AttentionForward, AttentionGradients, AttentionOptions,
    AttentionSettingsBuilder, AttentionVariant, FusedAttention, MaskKind, QueryAlignment,
};
pub use kernels::conv::{Conv1d, Conv2d, ConvGradients, ConvVariant, MaxPool1d};
pub use kernels::elementwise::{Binary, Unary};
pub use kernels::gather::GroupedPositions;
pub use kernels::layernorm::{LayerNormForward, LayerNormGrads, LayerNormVariant};
pub use kernels::matmul::{Gemm, MatmulVariant};
pub use kernels::recurrent::{
    recurrent_backward, recurrent_forward, CellKind, RecurrentBackwardInputs, RecurrentGrads,
    RecurrentInputs, RecurrentOutputs, RecurrentShape,
};
pub use kernels::reduce::{Reduce, ReduceVariant};
pub use kernels::softmax::{
    CrossEntropy, LossReduction, SoftmaxCrossEntropy, SoftmaxKind, SoftmaxVariant,
};
pub use optim::{Optimizer, OptimizerConfig, Rule, Schedule};
/// The JSON library of checkpoint configs ([`checkpoint::save`] takes a
/// `serde_json::Value`), re-exported so that a program need not depend on it itself.
pub use serde_json;
pub use tensor::{Indices, Tensor, PYTORCH_IGNORE_INDEX};

/// The Rust examples of README.md, compiled by `cargo test --doc` so that they keep up with
/// the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
