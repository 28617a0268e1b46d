//! `shadergrad bench`: every kernel family at the sizes that matter, and whole training
//! steps, on one adapter; the command runs it on every adapter asked for.
//!
//! A case is either a list of recorded dispatches, timed by [`Gpu::submit_timed`] (GPU
//! timestamps where the adapter has them, the wall clock otherwise), or a whole training
//! step timed by the wall clock from submission to its loss read back. Each figure is the
//! median and spread (max − min) of `runs` runs after `warmup` runs.

use std::str::FromStr;
use std::time::Instant;

use crate::data::text::{bucketed_batches, longest, Bucketing, Task};
use crate::data::tokens::{PairVocab, PairVocabSpec};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, TimingSource};
use crate::graph::{Feed, Graph, Var};
use crate::kernels::attention::{
    attention_backward_dispatches, attention_dispatches, fused_attention_backward_dispatches_into,
    fused_attention_dispatch, fused_backward_fits, AttentionDims, AttentionGradients,
    AttentionOptions, AttentionVariant, FusedAttention, Recording, FUSED_MIN_SCORES,
};
use crate::kernels::conv::{conv_forward_dispatch, Conv2d, ConvGeometry};
use crate::kernels::elementwise::{binary_dispatch, unary_dispatch, Binary, Unary};
use crate::kernels::matmul::{gemm_dispatch, Epilogue, GemmOperands, GemmShape, MatmulVariant};
use crate::kernels::recurrent::{
    recurrent_backward_dispatches, recurrent_forward, recurrent_forward_dispatches, CellKind,
    RecurrentBackwardInputs, RecurrentGrads, RecurrentInputs, RecurrentOutputs, RecurrentShape,
};
use crate::kernels::softmax::{softmax_dispatch, SoftmaxKind, SoftmaxVariant};
use crate::models::seq2seq::Seq2SeqModel;
use crate::nn::seq2seq::{Architecture, AttentionKind, RecurrentConfig, Seq2SeqConfig};
use crate::nn::{Activation, Mlp, Parameters};
use crate::optim::{Optimizer, OptimizerConfig, Rule};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// The groups of cases `bench` measures, in the order it runs them (named on the command
/// line as [`Family::name`] gives them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Family {
    /// Square products, the default seq2seq model's, batched and transposed.
    Matmul,
    /// ReLU and addition over a few million numbers: bandwidth-bound.
    Elementwise,
    /// Row softmax of a `[rows, 1024]` matrix, every variant.
    Softmax,
    /// The fused softmax cross-entropy's loss and gradient, called eagerly.
    CrossEntropy,
    /// The text CNN's 1-D convolution, forward.
    Conv,
    /// Unfused and fused, forward and backward.
    Attention,
    /// The fused RNN, GRU and LSTM cells, forward and backward.
    Recurrent,
    /// One Adam update over the parameters of an MLP 784-256-256-10.
    Optimizer,
    /// Whole training steps: the MLP and the default seq2seq model.
    TrainStep,
}

impl Family {
    /// Every family, in the order `bench` runs them.
    pub const ALL: [Family; 9] = [
        Family::Matmul,
        Family::Elementwise,
        Family::Softmax,
        Family::CrossEntropy,
        Family::Conv,
        Family::Attention,
        Family::Recurrent,
        Family::Optimizer,
        Family::TrainStep,
    ];

    /// The family's name on the command line and in messages (`"matmul"`,
    /// `"cross-entropy"`, `"train-step"`, …); [`FromStr`] parses it back.
    pub fn name(self) -> &'static str {
        match self {
            Family::Matmul => "matmul",
            Family::Elementwise => "elementwise",
            Family::Softmax => "softmax",
            Family::CrossEntropy => "cross-entropy",
            Family::Conv => "conv",
            Family::Attention => "attention",
            Family::Recurrent => "recurrent",
            Family::Optimizer => "optimizer",
            Family::TrainStep => "train-step",
        }
    }
}

impl FromStr for Family {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Family::ALL
            .into_iter()
            .find(|family| family.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                Error::invalid(
                    "bench",
                    format!(
                        "no kernel family {name:?}: expected one of {}",
                        names.join(", ")
                    ),
                )
            })
    }
}

/// How long and how much to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The smaller sizes only, fewer runs: under a minute on lavapipe.
    pub quick: bool,
    /// Unmeasured runs of each case first (compiling pipelines, warming caches).
    pub warmup: usize,
    /// Measured runs of each case: their median and spread are reported.
    pub runs: usize,
    /// The families to measure (all by default).
    pub families: Vec<Family>,
}

impl BenchOptions {
    /// Every family, with 1 warm-up and 3 measured runs when `quick`, else 2 and 7.
    pub fn new(quick: bool) -> Self {
        let (warmup, runs) = if quick { (1, 3) } else { (2, 7) };
        BenchOptions {
            quick,
            warmup,
            runs,
            families: Family::ALL.to_vec(),
        }
    }
}

/// One measured case: a record of `bench --json`'s file, its fields by name in this order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Measurement {
    /// The adapter's name, as its driver reports it.
    pub adapter: String,
    /// The graphics API it ran through (Vulkan, Metal, DX12, …).
    pub backend: String,
    /// What was measured: a kernel (`"matmul"`, `"softmax"`, `"attention"`, …) or
    /// `"train step"`.
    pub kernel: String,
    /// The kernel's variant (e.g. a matmul tiling) or the case's name within the kernel.
    pub variant: String,
    /// The sizes measured, as shown in the table (e.g. `"1024x1024"`).
    pub shape: String,
    /// The median time of the measured runs, in milliseconds.
    pub median_ms: f64,
    /// The slowest measured run minus the fastest, in milliseconds.
    pub spread_ms: f64,
    /// Billions of floating-point operations per second: the case's nominal operation count
    /// (e.g. `2·m·n·k` for a product) over the median time; `None` where no count means
    /// anything for the case.
    pub gflops: Option<f64>,
    /// Gigabytes per second: the bytes the case must at least read and write, over the
    /// median time; `None` where that means nothing for the case.
    pub gbps: Option<f64>,
    /// Items (tokens, examples) per second, for training steps.
    pub items_per_s: Option<f64>,
    /// Whether the times come from GPU timestamps or the wall clock.
    pub timing: TimingSource,
    /// Whether the engine's rule picks this variant for this shape on this adapter.
    pub picked: bool,
}

impl Measurement {
    /// One row of the terminal table (see [`table_header`]).
    pub fn table_row(&self) -> String {
        let rate = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let variant = format!("{}{}", self.variant, if self.picked { "*" } else { "" });
        let items = self
            .items_per_s
            .map_or(String::new(), |v| format!("  {v:.0}/s"));
        format!(
            "{:<18} {:<18} {:<24} {:>10.3} {:>9.3} {:>8} {:>7}  {}{items}",
            self.kernel,
            variant,
            self.shape,
            self.median_ms,
            self.spread_ms,
            rate(self.gflops),
            rate(self.gbps),
            self.timing
        )
    }
}

/// The header of [`Measurement::table_row`].
pub fn table_header() -> String {
    format!(
        "{:<18} {:<18} {:<24} {:>10} {:>9} {:>8} {:>7}  timing",
        "kernel", "variant", "shape", "median ms", "spread", "GFLOP/s", "GB/s"
    )
}

/// Measures every case on `gpu`, handing each result to `report` as it comes; an error
/// from `report` (its output closed) ends the run with that error.
pub fn run(
    gpu: &Gpu,
    options: &BenchOptions,
    report: &mut dyn FnMut(&Measurement) -> Result<()>,
) -> Result<Vec<Measurement>> {
    let mut bench = Bench {
        gpu,
        options,
        rng: Rng::new(1),
        results: Vec::new(),
        report,
    };
    for &family in &options.families {
        match family {
            Family::Matmul => {
                bench.matmul_square()?;
                bench.matmul_model_shapes()?;
            }
            Family::Elementwise => bench.elementwise()?,
            Family::Softmax => bench.softmax()?,
            Family::CrossEntropy => bench.cross_entropy()?,
            Family::Conv => bench.conv()?,
            Family::Attention => bench.attention()?,
            Family::Recurrent => bench.recurrent()?,
            Family::Optimizer => bench.optimizer()?,
            Family::TrainStep => {
                bench.mlp_step()?;
                bench.seq2seq_step()?;
            }
        }
    }
    Ok(bench.results)
}

struct Bench<'a> {
    gpu: &'a Gpu,
    options: &'a BenchOptions,
    rng: Rng,
    results: Vec<Measurement>,
    report: &'a mut dyn FnMut(&Measurement) -> Result<()>,
}

/// What one case is: its name and what it moves and computes.
struct Case<'c> {
    kernel: &'c str,
    variant: &'c str,
    shape: String,
    flops: Option<f64>,
    bytes: Option<f64>,
    picked: bool,
}

impl Bench<'_> {
    fn random(&mut self, shape: &[usize]) -> Result<Tensor> {
        let n = shape.iter().product();
        Tensor::from_slice(self.gpu, &self.rng.vec(n, -1.0, 1.0), shape)
    }

    fn record(
        &mut self,
        case: Case,
        seconds: &mut [f64],
        timing: TimingSource,
        items: Option<f64>,
    ) -> Result<()> {
        seconds.sort_by(f64::total_cmp);
        let median = seconds[seconds.len() / 2];
        let info = self.gpu.info();
        let measurement = Measurement {
            adapter: info.name.clone(),
            backend: info.backend.to_string(),
            kernel: case.kernel.to_string(),
            variant: case.variant.to_string(),
            shape: case.shape,
            median_ms: median * 1e3,
            spread_ms: (seconds[seconds.len() - 1] - seconds[0]) * 1e3,
            gflops: case.flops.map(|f| f / median / 1e9),
            gbps: case.bytes.map(|b| b / median / 1e9),
            items_per_s: items.map(|i| i / median),
            timing,
            picked: case.picked,
        };
        // A report that fails (its output closed) ends the benchmark.
        (self.report)(&measurement)?;
        self.results.push(measurement);
        Ok(())
    }

    /// Times one submission of `dispatches`.
    fn time(&mut self, case: Case, dispatches: &[Dispatch]) -> Result<()> {
        let mut seconds = Vec::with_capacity(self.options.runs);
        let mut timing = TimingSource::WallClock;
        for run in 0..self.options.warmup + self.options.runs {
            let measured = self.gpu.submit_timed(dispatches)?;
            if run >= self.options.warmup {
                seconds.push(measured.seconds);
                timing = measured.source;
            }
        }
        self.record(case, &mut seconds, timing, None)
    }

    fn gemm(&mut self, shape: GemmShape, label: String, kernel: &str) -> Result<()> {
        let a = self.random(&[shape.batch * shape.m * shape.k])?;
        let b = self.random(&[shape.batch * shape.k * shape.n])?;
        let out = Tensor::zeros(self.gpu, &[shape.batch * shape.m * shape.n])?;
        let picked = MatmulVariant::choose(self.gpu, &shape);
        for variant in MatmulVariant::ALL {
            if !variant.supports(self.gpu, &shape) {
                continue;
            }
            let operands = GemmOperands {
                a: &a,
                b: &b,
                c: None,
                bias: None,
                out: &out,
                epilogue: Epilogue::Plain,
            };
            let dispatch = gemm_dispatch(&operands, &shape, 1.0, 0.0, variant)?;
            let (m, n, k, batch) = (
                shape.m as f64,
                shape.n as f64,
                shape.k as f64,
                shape.batch as f64,
            );
            let case = Case {
                kernel,
                variant: variant.name(),
                shape: label.clone(),
                flops: Some(2.0 * batch * m * n * k),
                bytes: Some(4.0 * batch * (m * k + k * n + m * n)),
                picked: variant == picked,
            };
            self.time(case, std::slice::from_ref(&dispatch))?;
        }
        Ok(())
    }

    fn matmul_square(&mut self) -> Result<()> {
        // 2048² and 4096² take minutes per variant on a CPU adapter.
        let sizes: &[usize] = if self.options.quick {
            &[128, 256, 512]
        } else if self.gpu.is_cpu_like() {
            &[128, 256, 512, 1024]
        } else {
            &[128, 256, 512, 1024, 2048, 4096]
        };
        for &size in sizes {
            let shape = GemmShape::contiguous(1, (size, size, size), false, false);
            self.gemm(shape, format!("{size}x{size}x{size}"), "matmul")?;
        }
        Ok(())
    }

    /// The products of the default seq2seq model (batch 128, hidden 64, embedding 32,
    /// sources of 7): the recurrent step, the input projection, attention scores.
    fn matmul_model_shapes(&mut self) -> Result<()> {
        self.gemm(
            GemmShape::contiguous(1, (128, 192, 64), false, false),
            "128x192x64 (h·R)".into(),
            "matmul seq2seq",
        )?;
        self.gemm(
            GemmShape::contiguous(1, (896, 192, 32), false, false),
            "896x192x32 (x·Wx)".into(),
            "matmul seq2seq",
        )?;
        self.gemm(
            GemmShape::contiguous(1, (128, 64, 192), false, true),
            "128x64x192 (dG·Rᵀ)".into(),
            "matmul seq2seq",
        )?;
        self.gemm(
            GemmShape::contiguous(128, (5, 7, 64), false, true),
            "128 x 5x7x64 (Q·Kᵀ)".into(),
            "matmul seq2seq",
        )?;
        let batched = GemmShape::contiguous(16, (256, 256, 64), true, false);
        self.gemm(batched, "16 x 256x256x64, Aᵀ".into(), "matmul batched")
    }

    fn elementwise(&mut self) -> Result<()> {
        let n = if self.options.quick { 1 << 20 } else { 1 << 22 };
        let (x, y) = (self.random(&[n])?, self.random(&[n])?);
        let out = Tensor::zeros(self.gpu, &[n])?;
        let relu = unary_dispatch(&x, &out, Unary::Relu)?;
        let case = Case {
            kernel: "elementwise",
            variant: "relu",
            shape: format!("{n}"),
            flops: None,
            bytes: Some(8.0 * n as f64),
            picked: true,
        };
        self.time(case, &[relu])?;
        let add = binary_dispatch(&x, &y, &out, Binary::Add)?;
        let case = Case {
            kernel: "elementwise",
            variant: "add",
            shape: format!("{n}"),
            flops: None,
            bytes: Some(12.0 * n as f64),
            picked: true,
        };
        self.time(case, &[add])
    }

    fn softmax(&mut self) -> Result<()> {
        let (rows, cols) = if self.options.quick {
            (256, 1024)
        } else {
            (1024, 1024)
        };
        let x = self.random(&[rows, cols])?;
        let y = Tensor::zeros(self.gpu, &[rows, cols])?;
        let picked = SoftmaxVariant::choose(self.gpu, 1, cols);
        for variant in SoftmaxVariant::ALL {
            let dispatch = softmax_dispatch(&x, &y, 1, SoftmaxKind::Softmax, variant)?;
            let case = Case {
                kernel: "softmax",
                variant: variant.name(),
                shape: format!("{rows}x{cols}"),
                flops: None,
                bytes: Some(8.0 * (rows * cols) as f64),
                picked: variant == picked,
            };
            self.time(case, &[dispatch])?;
        }
        Ok(())
    }

    /// The fused loss and gradient, eager (timed by the wall clock around the call).
    fn cross_entropy(&mut self) -> Result<()> {
        let (rows, classes) = if self.options.quick {
            (256, 1024)
        } else {
            (1024, 1024)
        };
        let logits = self.random(&[rows, classes])?;
        let ids: Vec<u32> = (0..rows).map(|i| (i * 7 % classes) as u32).collect();
        let targets = crate::tensor::Indices::from_slice(self.gpu, &ids, &[rows])?;
        let mut seconds = Vec::new();
        for run in 0..self.options.warmup + self.options.runs {
            let start = Instant::now();
            let result = logits.softmax_cross_entropy(&targets).run()?;
            result.loss.to_vec()?;
            if run >= self.options.warmup {
                seconds.push(start.elapsed().as_secs_f64());
            }
        }
        let case = Case {
            kernel: "cross-entropy",
            variant: "loss+gradient",
            shape: format!("{rows}x{classes}"),
            flops: None,
            bytes: Some(8.0 * (rows * classes) as f64),
            picked: true,
        };
        self.record(case, &mut seconds, TimingSource::WallClock, None)
    }

    /// The text CNN's convolution: 32 texts of 128 positions, 64 → 100 channels, width 3.
    fn conv(&mut self) -> Result<()> {
        let (n, c, l, o, k) = (32, 64, 128, 100, 3);
        let x = self.random(&[n, c, l])?;
        let w = self.random(&[o, c, k])?;
        let y = Tensor::zeros(self.gpu, &[n, o, l - k + 1])?;
        let geometry =
            ConvGeometry::new("conv1d", &[n, c, 1, l], &[o, c, 1, k], Conv2d::default())?;
        let dispatch = conv_forward_dispatch(&x, &w, None, &y, &geometry)?;
        let case = Case {
            kernel: "conv1d",
            variant: "forward",
            shape: format!("{n}x{c}x{l} k{k} →{o}"),
            flops: Some(2.0 * (n * o * (l - k + 1) * c * k) as f64),
            bytes: None,
            picked: true,
        };
        self.time(case, &[dispatch])
    }

    fn attention(&mut self) -> Result<()> {
        let (b, h, d) = (4, 4, 32);
        let lengths: &[usize] = if self.options.quick {
            &[128]
        } else {
            &[128, 512]
        };
        for &len in lengths {
            let shape = [b, h, len, d];
            let (q, k, v, dy) = (
                self.random(&shape)?,
                self.random(&shape)?,
                self.random(&shape)?,
                self.random(&shape)?,
            );
            let options = AttentionOptions::default();
            let label = format!("{b}x{h}x{len}x{d}");
            let flops = 4.0 * (b * h * len * len * d) as f64;
            let mut forward = Recording::default();
            attention_dispatches(&q, &k, &v, &options, &mut forward)?;
            let case = Case {
                kernel: "attention",
                variant: "forward",
                shape: label.clone(),
                flops: Some(flops),
                bytes: None,
                picked: true,
            };
            self.time(case, &forward.dispatches)?;
            let mut both = Recording::default();
            let result = attention_dispatches(&q, &k, &v, &options, &mut both)?;
            attention_backward_dispatches((&q, &k, &v), &result.probs, &dy, &options, &mut both)?;
            let dims = AttentionDims::from_shapes(&shape, &shape, &shape)?;
            let fused_for_training =
                AttentionVariant::choose_for_training(self.gpu, &dims) == AttentionVariant::Fused;
            let case = Case {
                kernel: "attention",
                variant: "forward+backward",
                shape: label,
                flops: Some(3.0 * flops),
                bytes: None,
                picked: !fused_for_training,
            };
            self.time(case, &both.dispatches)?;
            self.fused_attention(&shape, true)?;
        }
        // The unfused forward's 4·4·1024² scores take 64 MiB and long: the fused forward
        // alone (its backward takes over a minute on lavapipe).
        if !self.options.quick {
            self.fused_attention(&[b, h, 1024, d], false)?;
        }
        Ok(())
    }

    /// The fused attention forward on random Q, K, V of `shape` `[B, H, L, D]`, and with
    /// `with_backward` the fused forward + backward.
    fn fused_attention(&mut self, shape: &[usize; 4], with_backward: bool) -> Result<()> {
        let (q, k, v) = (
            self.random(shape)?,
            self.random(shape)?,
            self.random(shape)?,
        );
        let forward = FusedAttention {
            output: Tensor::uninit(self.gpu, shape)?,
            log_sum_exp: Tensor::uninit(self.gpu, &shape[..3])?,
        };
        let options = AttentionOptions::default();
        let mut recording = Recording::default();
        recording
            .dispatches
            .extend(fused_attention_dispatch((&q, &k, &v), &options, &forward)?);
        let [b, h, len, d] = *shape;
        let flops = 4.0 * (b * h * len * len * d) as f64;
        let case = Case {
            kernel: "attention",
            variant: "fused forward",
            shape: format!("{b}x{h}x{len}x{d}"),
            flops: Some(flops),
            bytes: None,
            picked: len * len >= FUSED_MIN_SCORES,
        };
        self.time(case, &recording.dispatches)?;
        // Where the adapter binds too few storage buffers, training runs the unfused
        // backward, which the unfused case measures.
        if !with_backward || !fused_backward_fits(self.gpu) {
            return Ok(());
        }
        let dy = self.random(shape)?;
        let grads = AttentionGradients {
            query: Tensor::uninit(self.gpu, shape)?,
            key: Tensor::uninit(self.gpu, shape)?,
            value: Tensor::uninit(self.gpu, shape)?,
        };
        fused_attention_backward_dispatches_into(
            (&q, &k, &v),
            &forward,
            &dy,
            &options,
            &grads,
            &mut recording,
        )?;
        let dims = AttentionDims::from_shapes(shape, shape, shape)?;
        let case = Case {
            kernel: "attention",
            variant: "fused fwd+bwd",
            shape: format!("{b}x{h}x{len}x{d}"),
            flops: Some(3.0 * flops),
            bytes: None,
            picked: AttentionVariant::choose_for_training(self.gpu, &dims)
                == AttentionVariant::Fused,
        };
        self.time(case, &recording.dispatches)
    }

    /// The fused cells over 8 steps of 128 sequences of 128 units.
    fn recurrent(&mut self) -> Result<()> {
        for kind in CellKind::ALL {
            let shape = RecurrentShape {
                kind,
                steps: 8,
                batch: 128,
                hidden: 128,
                reverse: false,
            };
            let gated = kind.gates() * shape.hidden;
            let gx = self.random(&[shape.steps, shape.batch, gated])?;
            let r = self.random(&[shape.hidden, gated])?;
            let r_bias = self.random(&[gated])?;
            let h0 = self.random(&[shape.batch, shape.hidden])?;
            let c0 = self.random(&[shape.batch, shape.hidden])?;
            let inputs = RecurrentInputs {
                gx: &gx,
                r: &r,
                r_bias: &r_bias,
                h0: &h0,
                c0: (kind == CellKind::Lstm).then_some(&c0),
                lengths: None,
                peepholes: None,
            };
            let outputs = RecurrentOutputs::allocate(self.gpu, &shape)?;
            let (forward, _scratch) = recurrent_forward_dispatches(&inputs, &outputs, &shape)?;
            let flops = 2.0 * (shape.steps * shape.batch * shape.hidden * gated) as f64;
            let label = "T8 B128 H128".to_string();
            let case = Case {
                kernel: "recurrent",
                variant: kind.name(),
                shape: label.clone(),
                flops: Some(flops),
                bytes: None,
                picked: true,
            };
            self.time(case, &forward)?;
            let computed = recurrent_forward(&inputs, &shape)?;
            let dstates = self.random(&[shape.steps + 1, shape.batch, shape.hidden])?;
            let backward_inputs = RecurrentBackwardInputs {
                dstates: Some(&dstates),
                dcells: None,
                states: &computed.states,
                cells: computed.cells.as_ref(),
                saved: &computed.saved,
                r: &r,
                lengths: None,
            };
            let grads = RecurrentGrads::allocate(self.gpu, &shape)?;
            let (backward, _scratch) =
                recurrent_backward_dispatches(&backward_inputs, &grads, &shape)?;
            let case = Case {
                kernel: "recurrent backward",
                variant: kind.name(),
                shape: label,
                flops: Some(2.0 * flops),
                bytes: None,
                picked: true,
            };
            self.time(case, &backward)?;
        }
        Ok(())
    }

    /// Adam over the parameters of an MLP 784-256-256-10 (269,322 numbers).
    fn optimizer(&mut self) -> Result<()> {
        let sizes = [784 * 256, 256, 256 * 256, 256, 256 * 10, 10];
        let pairs = sizes
            .iter()
            .map(|&n| Ok((self.random(&[n])?, self.random(&[n])?)))
            .collect::<Result<Vec<_>>>()?;
        let count: usize = sizes.iter().sum();
        let adam = Optimizer::new(self.gpu, OptimizerConfig::new(Rule::adam(), 1e-3), &pairs)?;
        let case = Case {
            kernel: "optimizer",
            variant: "adam",
            shape: format!("{count} parameters"),
            flops: None,
            bytes: Some(4.0 * 5.0 * count as f64),
            picked: true,
        };
        self.time(case, adam.dispatches())
    }

    /// A training step of an MLP 784-256-256-10 (batch 128, ReLU, cross-entropy, Adam): the
    /// plan's dispatches and the update in one submission.
    fn mlp_step(&mut self) -> Result<()> {
        const BATCH: usize = 128;
        let mut g = Graph::new(self.gpu);
        let x = g.input("x", &[BATCH, 784]);
        let labels = g.input_indices("labels", &[BATCH]);
        let parameters = Parameters::new(self.gpu, 0);
        let mlp = Mlp::new(&parameters, &[784, 256, 256, 10], Activation::Relu)?;
        let logits = mlp.forward(&mut g, x)?;
        let loss = g.cross_entropy(logits, labels)?;
        let grads = g.backward(loss)?;
        let outputs: Vec<Var> = std::iter::once(loss)
            .chain(grads.parameter_gradients())
            .collect();
        let mut plan = g.compile(&outputs)?;
        let mut adam = parameters.optimizer(OptimizerConfig::new(Rule::adam(), 1e-3))?;
        let features = self.rng.vec(BATCH * 784, 0.0, 1.0);
        let targets: Vec<u32> = (0..BATCH).map(|i| (i % 10) as u32).collect();
        let mut seconds = Vec::new();
        for step in 0..self.options.warmup + self.options.runs {
            let start = Instant::now();
            adam.prepare_step(step as u64 + 1)?;
            plan.run(
                &[Feed::f32(x, &features), Feed::u32(labels, &targets)],
                adam.dispatches(),
            )?;
            plan.read(loss)?;
            if step >= self.options.warmup {
                seconds.push(start.elapsed().as_secs_f64());
            }
        }
        let flops = 6.0 * BATCH as f64 * (784.0 * 256.0 + 256.0 * 256.0 + 256.0 * 10.0);
        let case = Case {
            kernel: "train step",
            variant: "mlp",
            shape: "784-256-256-10 b128".into(),
            flops: Some(flops),
            bytes: None,
            picked: true,
        };
        self.record(
            case,
            &mut seconds,
            TimingSource::WallClock,
            Some(BATCH as f64),
        )
    }

    /// A training step of train-seq2seq's default model on a batch of the longest 3-digit
    /// additions, in target tokens per second.
    fn seq2seq_step(&mut self) -> Result<()> {
        let task = Task::Addition {
            digits: 3,
            reverse_input: false,
        };
        let (train, _) = task.generate(1_000, 10, 0)?;
        let vocab = PairVocab::learn(&train, PairVocabSpec::default())?;
        let pairs = vocab.encode(&train).0;
        let config = Seq2SeqConfig {
            source_vocab_size: vocab.source.len(),
            target_vocab_size: vocab.target.len(),
            layers: 1,
            architecture: Architecture::Recurrent(RecurrentConfig {
                cell: CellKind::Gru,
                attention: AttentionKind::Dot,
                embed: 32,
                hidden: 64,
                bidirectional: true,
            }),
        };
        let mut model = Seq2SeqModel::new(self.gpu, config, vocab, longest(&pairs), 0)?;
        let optimizer_config = OptimizerConfig::new(Rule::adam(), 1e-2).with_max_grad_norm(5.0);
        let mut optimizer = model.parameters.optimizer(optimizer_config)?;
        let bucketing = Bucketing {
            batch: 128,
            round_to: 1,
            pad_last: true,
        };
        let mut batches = bucketed_batches(&pairs, &bucketing, Some(1))?;
        batches.sort_by_key(|b| std::cmp::Reverse((b.source_steps, b.target_steps)));
        let batch = &batches[0];
        let mut seconds = Vec::new();
        let mut tokens = 0;
        for step in 0..self.options.warmup + self.options.runs {
            optimizer.prepare_step(step as u64 + 1)?;
            let start = Instant::now();
            tokens = model.train_step(batch, 0, optimizer.dispatches())?.tokens;
            if step >= self.options.warmup {
                seconds.push(start.elapsed().as_secs_f64());
            }
        }
        let case = Case {
            kernel: "train step",
            variant: "seq2seq",
            shape: format!(
                "bi-GRU64 b128 {}→{}",
                batch.source_steps, batch.target_steps
            ),
            flops: None,
            bytes: None,
            picked: true,
        };
        self.record(
            case,
            &mut seconds,
            TimingSource::WallClock,
            Some(tokens as f64),
        )
    }
}
