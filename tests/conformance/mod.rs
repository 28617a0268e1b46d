//! The ONNX conformance runner: runs operator test cases of the ONNX project through the
//! [`Tensor`] API and compares the results with ONNX's expected outputs.
//!
//! A case is a folder (`tests/data/onnx-node/<test name>/`) holding `case.json` (the op,
//! its attributes, its input and output files, its opset) and one `.npy` file per tensor;
//! `tests/data/onnx-node/README.md` describes them. Each case ends as one [`Outcome`]:
//!
//! - it passes: every output element is within ONNX's tolerance of the expected one;
//! - it fails: the message names the case and the first element off, or the engine's error;
//! - it is skipped, with the reason: an op unknown to the runner, a mode of a known op the
//!   engine lacks, or an attribute the runner does not understand (never silently ignored,
//!   since it would change the result).
//!
//! An [`Error`] is kept for a case that cannot be read at all: a missing file, or a
//! `case.json` or `.npy` that is malformed.
//!
//! The runner serves only the tests: `tests/onnx_conformance.rs` and `tests/cross_compile.rs`
//! include it with `mod conformance;` (so its unit tests run in both), and it uses only
//! shadergrad's public API.
#![allow(dead_code)] // each test binary uses its own subset

pub mod npy;
mod recurrent;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use shadergrad::error::{Error, Result};
use shadergrad::gpu::Gpu;
use shadergrad::kernels::attention::{
    attention, attention_logits, AttentionMask, AttentionOptions, AttentionSettings, MaskKind,
    QueryAlignment,
};
use shadergrad::kernels::conv::{Conv1d, Conv2d, MaxPool1d};
use shadergrad::kernels::elementwise::{Binary, Unary};
use shadergrad::kernels::recurrent::CellKind;
use shadergrad::kernels::reduce::Reduce;
use shadergrad::kernels::softmax::{LossReduction, SoftmaxKind};
use shadergrad::tensor::{resolve_axis, Indices, Tensor};

/// ONNX's tolerance for node tests (`numpy.testing.assert_allclose(rtol=1e-3, atol=1e-7)`):
/// an element passes if |actual − expected| ≤ ATOL + RTOL·|expected|.
pub const RTOL: f64 = 1e-3;
pub const ATOL: f64 = 1e-7;

/// How one case ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    /// What differs, naming the case.
    Fail(String),
    /// Why the case was not run.
    Skip(String),
}

/// One case's outcome, with the case's name and op.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub op: String,
    pub outcome: Outcome,
}

/// The outcomes of a folder of cases, in folder-name order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub cases: Vec<CaseResult>,
}

/// How many cases of one op passed, failed and were skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
}

impl Counts {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Pass => self.pass += 1,
            Outcome::Fail(_) => self.fail += 1,
            Outcome::Skip(_) => self.skip += 1,
        }
    }
}

impl Report {
    /// The counts of every op, by op name.
    pub fn counts_by_op(&self) -> BTreeMap<&str, Counts> {
        let mut counts = BTreeMap::<&str, Counts>::new();
        for case in &self.cases {
            counts.entry(&case.op).or_default().add(&case.outcome);
        }
        counts
    }

    /// The counts over all cases.
    pub fn totals(&self) -> Counts {
        let mut totals = Counts::default();
        for case in &self.cases {
            totals.add(&case.outcome);
        }
        totals
    }

    /// The message of every failed case.
    pub fn failures(&self) -> Vec<&str> {
        self.cases
            .iter()
            .filter_map(|case| match &case.outcome {
                Outcome::Fail(message) => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A table of pass/fail/skip counts per op, then every skip reason (with how many cases
    /// it covers) and every failure.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        let row = |text: &mut String, op: &str, c: Counts| {
            let _ = writeln!(text, "{op:<26}{:>6}{:>6}{:>6}", c.pass, c.fail, c.skip);
        };
        let _ = writeln!(text, "{:<26}{:>6}{:>6}{:>6}", "op", "pass", "fail", "skip");
        for (op, counts) in self.counts_by_op() {
            row(&mut text, op, counts);
        }
        row(&mut text, "total", self.totals());

        // Every skipped case by name, under its reason.
        let mut skipped = BTreeMap::<&str, Vec<&str>>::new();
        for case in &self.cases {
            if let Outcome::Skip(reason) = &case.outcome {
                skipped.entry(reason).or_default().push(&case.name);
            }
        }
        if !skipped.is_empty() {
            let _ = writeln!(text, "\nskipped:");
            for (reason, names) in skipped {
                let plural = if names.len() == 1 { "" } else { "s" };
                let _ = writeln!(text, "  {reason} ({} case{plural}):", names.len());
                for name in names {
                    let _ = writeln!(text, "    {name}");
                }
            }
        }
        let failures = self.failures();
        if !failures.is_empty() {
            let _ = writeln!(text, "\nfailed:");
            for message in failures {
                let _ = writeln!(text, "  {message}");
            }
        }
        text
    }
}

/// Runs every case folder directly under `dir` (files beside them, such as a README, are
/// not cases). Stops at the first case that cannot be read.
pub fn run_dir(gpu: &Gpu, dir: &Path) -> Result<Report> {
    let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
    let mut case_dirs = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error(dir))?.path();
        if path.is_dir() {
            case_dirs.push(path);
        }
    }
    case_dirs.sort();
    let mut report = Report::default();
    for case_dir in case_dirs {
        let case = Case::load(&case_dir)?;
        let outcome = case.run(gpu)?;
        report.cases.push(CaseResult {
            name: case.name,
            op: case.op,
            outcome,
        });
    }
    Ok(report)
}

/// Runs the case in the folder `case_dir`.
pub fn run_case(gpu: &Gpu, case_dir: &Path) -> Result<Outcome> {
    Case::load(case_dir)?.run(gpu)
}

/// One test case, as its `case.json` describes it.
#[derive(Debug, Clone)]
pub struct Case {
    /// The folder's name: the ONNX test name, e.g. `test_gemm_alpha`.
    pub name: String,
    pub dir: PathBuf,
    pub op: String,
    /// Only the attributes the test sets; every other takes the ONNX default.
    pub attributes: serde_json::Map<String, Value>,
    /// The input files in the op's positional order; `None` for an omitted optional input.
    pub inputs: Vec<Option<String>>,
    /// The expected output files, likewise.
    pub outputs: Vec<Option<String>>,
    /// The default-domain opset: which version of the op's specification the case follows.
    pub opset: i64,
}

impl Case {
    /// Reads `case_dir/case.json`.
    pub fn load(case_dir: &Path) -> Result<Case> {
        let path = case_dir.join("case.json");
        let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(&path, format!("not valid JSON: {e}")))?;
        let field = |key: &str| {
            json.get(key)
                .ok_or_else(|| Error::format(&path, format!("no {key:?} field")))
        };
        let wrong = |key: &str, expected: &str| {
            Error::format(
                &path,
                format!("{key:?} is {}, expected {expected}", json[key]),
            )
        };
        // "" marks an omitted optional tensor.
        let files = |key: &str| -> Result<Vec<Option<String>>> {
            let list = field(key)?
                .as_array()
                .ok_or_else(|| wrong(key, "a list of file names"))?;
            list.iter()
                .map(|file| match file.as_str() {
                    Some("") => Ok(None),
                    Some(file) => Ok(Some(file.to_string())),
                    None => Err(wrong(key, "a list of file names")),
                })
                .collect()
        };
        Ok(Case {
            name: case_dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| case_dir.display().to_string()),
            dir: case_dir.to_path_buf(),
            op: field("op")?
                .as_str()
                .ok_or_else(|| wrong("op", "a string"))?
                .to_string(),
            attributes: field("attributes")?
                .as_object()
                .ok_or_else(|| wrong("attributes", "an object"))?
                .clone(),
            inputs: files("inputs")?,
            outputs: files("outputs")?,
            opset: field("opset")?
                .as_i64()
                .ok_or_else(|| wrong("opset", "an integer"))?,
        })
    }

    /// Runs the case on `gpu` and compares its output with the expected one.
    pub fn run(&self, gpu: &Gpu) -> Result<Outcome> {
        let Some(op) = Op::from_name(&self.op) else {
            return Ok(Outcome::Skip(not_implemented_reason(&self.op)));
        };
        let known = op.known_attributes(self.opset);
        if let Some(name) = self
            .attributes
            .keys()
            .find(|name| !known.contains(&name.as_str()))
        {
            return Ok(Outcome::Skip(format!(
                "{} (opset {}): attribute {name} is not understood by the runner",
                self.op, self.opset
            )));
        }
        let inputs = Inputs::load(self, gpu)?;
        if let Some(reason) = op.unsupported(self, &inputs)? {
            return Ok(Outcome::Skip(reason));
        }
        // Every output the case lists (at its position among the op's outputs; an omitted
        // optional one is None) is compared; the engine may compute more than are listed.
        let mut expected = Vec::new();
        for (position, file) in self.outputs.iter().enumerate() {
            let Some(file) = file else { continue };
            let array = npy::read(&self.dir.join(file))?;
            let npy::Data::F32(values) = array.data else {
                return Ok(Outcome::Fail(format!(
                    "{}: {file} holds {} values; the engine computes float32 only",
                    self.name,
                    array.data.dtype()
                )));
            };
            expected.push((position, file, values, array.shape));
        }
        let actual = op.run(self, &inputs).and_then(|outputs| {
            outputs
                .iter()
                .map(|y| Ok((y.to_vec()?, y.shape().to_vec())))
                .collect::<Result<Vec<_>>>()
        });
        let actual = match actual {
            Ok(actual) => actual,
            Err(e) => {
                return Ok(Outcome::Fail(format!(
                    "{}: running {} failed: {e}",
                    self.name, self.op
                )))
            }
        };
        for (position, file, values, shape) in &expected {
            let Some((actual, actual_shape)) = actual.get(*position) else {
                return Err(Error::format(
                    self.json_path(),
                    format!(
                        "{}: the engine computes {} of its outputs, case.json lists {:?}",
                        self.op,
                        actual.len(),
                        self.outputs
                    ),
                ));
            };
            if let Some(difference) = compare(actual, actual_shape, values, shape) {
                return Ok(Outcome::Fail(format!(
                    "{}: {file}: {difference}",
                    self.name
                )));
            }
        }
        Ok(Outcome::Pass)
    }

    fn json_path(&self) -> PathBuf {
        self.dir.join("case.json")
    }

    fn attribute_error(&self, name: &str, expected: &str) -> Error {
        Error::format(
            self.json_path(),
            format!(
                "attribute {name} is {}, expected {expected}",
                self.attributes[name]
            ),
        )
    }

    /// An integer attribute, or `default` when the case does not set it.
    fn int_attribute(&self, name: &str, default: i64) -> Result<i64> {
        match self.attributes.get(name) {
            None => Ok(default),
            Some(value) => value
                .as_i64()
                .ok_or_else(|| self.attribute_error(name, "an integer")),
        }
    }

    /// A float attribute, or `default` when the case does not set it.
    fn float_attribute(&self, name: &str, default: f32) -> Result<f32> {
        match self.attributes.get(name) {
            None => Ok(default),
            // The JSON holds the shortest decimal that parses back to the same f32.
            Some(value) => value
                .as_f64()
                .map(|v| v as f32)
                .ok_or_else(|| self.attribute_error(name, "a number")),
        }
    }

    /// An integer attribute without a default, or `None` when the case does not set it.
    fn optional_int_attribute(&self, name: &str) -> Result<Option<i64>> {
        match self.attributes.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.attribute_error(name, "an integer")),
        }
    }

    /// A string attribute, or `default` when the case does not set it.
    fn string_attribute<'s>(&'s self, name: &str, default: &'s str) -> Result<&'s str> {
        match self.attributes.get(name) {
            None => Ok(default),
            Some(value) => value
                .as_str()
                .ok_or_else(|| self.attribute_error(name, "a string")),
        }
    }

    /// A list-of-integers attribute, or `None` when the case does not set it.
    fn ints_attribute(&self, name: &str) -> Result<Option<Vec<i64>>> {
        let Some(value) = self.attributes.get(name) else {
            return Ok(None);
        };
        let ints = value
            .as_array()
            .and_then(|list| list.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| self.attribute_error(name, "a list of integers"))?;
        Ok(Some(ints))
    }
}

/// Why an op the runner does not implement is skipped.
fn not_implemented_reason(op: &str) -> String {
    format!("unknown op {op}")
}

/// The ops the runner implements, each mapped onto the Tensor API.
#[derive(Debug, Clone, Copy)]
enum Op {
    MatMul,
    Gemm,
    Unary(Unary),
    Binary(Binary),
    Transpose,
    Reduce(Reduce),
    LayerNormalization,
    Softmax(SoftmaxKind),
    SoftmaxCrossEntropyLoss,
    Gather,
    Conv,
    MaxPool,
    Attention,
    /// RNN, GRU and LSTM, on the fused recurrent kernels.
    Recurrent(CellKind),
}

impl Op {
    fn from_name(name: &str) -> Option<Op> {
        Some(match name {
            "MatMul" => Op::MatMul,
            "Gemm" => Op::Gemm,
            "Tanh" => Op::Unary(Unary::Tanh),
            "Relu" => Op::Unary(Unary::Relu),
            "Sigmoid" => Op::Unary(Unary::Sigmoid),
            // No case of these three in the data yet (onnx-node/README.md); attribute-free
            // unary maps, ready when one is copied in. Gelu's `approximate = "tanh"` is an
            // attribute the runner does not know, so such a case skips.
            "Sqrt" => Op::Unary(Unary::Sqrt),
            "Abs" => Op::Unary(Unary::Abs),
            "Gelu" => Op::Unary(Unary::Gelu),
            "Add" => Op::Binary(Binary::Add),
            "Mul" => Op::Binary(Binary::Mul),
            "Transpose" => Op::Transpose,
            "ReduceSum" => Op::Reduce(Reduce::Sum),
            "ReduceMax" => Op::Reduce(Reduce::Max),
            "LayerNormalization" => Op::LayerNormalization,
            "Softmax" => Op::Softmax(SoftmaxKind::Softmax),
            "LogSoftmax" => Op::Softmax(SoftmaxKind::LogSoftmax),
            "SoftmaxCrossEntropyLoss" => Op::SoftmaxCrossEntropyLoss,
            "Gather" => Op::Gather,
            "Conv" => Op::Conv,
            "MaxPool" => Op::MaxPool,
            "Attention" => Op::Attention,
            "RNN" => Op::Recurrent(CellKind::Rnn),
            "GRU" => Op::Recurrent(CellKind::Gru),
            "LSTM" => Op::Recurrent(CellKind::Lstm),
            _ => return None,
        })
    }

    /// The attributes the runner understands for this op in `opset`. Older versions of
    /// some ops have others (Add's `broadcast`, Relu's `consumed_inputs`): those cases skip.
    fn known_attributes(self, opset: i64) -> &'static [&'static str] {
        match self {
            Op::MatMul | Op::Unary(_) | Op::Binary(_) => &[],
            Op::Gemm => &["alpha", "beta", "transA", "transB"],
            Op::Transpose => &["perm"],
            Op::Reduce(_) if self.axes_are_input(opset) => &["keepdims", "noop_with_empty_axes"],
            Op::Reduce(_) => &["axes", "keepdims"],
            Op::LayerNormalization => &["axis", "epsilon", "stash_type"],
            Op::Softmax(_) => &["axis"],
            Op::SoftmaxCrossEntropyLoss => &["ignore_index", "reduction"],
            Op::Gather => &["axis"],
            Op::Conv => &[
                "auto_pad",
                "dilations",
                "group",
                "kernel_shape",
                "pads",
                "strides",
            ],
            Op::MaxPool => &[
                "auto_pad",
                "ceil_mode",
                "dilations",
                "kernel_shape",
                "pads",
                "storage_order",
                "strides",
            ],
            // Attention-25 adds the sliding window.
            Op::Attention if opset >= 25 => &[
                "is_causal",
                "kv_num_heads",
                "left_window_size",
                "q_num_heads",
                "qk_matmul_output_mode",
                "right_window_size",
                "scale",
                "softcap",
            ],
            Op::Attention => &[
                "is_causal",
                "kv_num_heads",
                "q_num_heads",
                "qk_matmul_output_mode",
                "scale",
                "softcap",
            ],
            Op::Recurrent(kind) => recurrent::known_attributes(kind, opset),
        }
    }

    /// Why the runner skips a case whose attributes it understands but whose mode the
    /// engine lacks, or `None` if it can run it.
    fn unsupported(self, case: &Case, inputs: &Inputs) -> Result<Option<String>> {
        let spatial = inputs
            .array(0)
            .map_or(0, |x| x.shape.len().saturating_sub(2));
        let all_ones = |name: &str| -> Result<bool> {
            Ok(case
                .ints_attribute(name)?
                .is_none_or(|values| values.iter().all(|&v| v == 1)))
        };
        let reason = match self {
            // stash_type is the element type of the mean and variance; 1 is float32.
            Op::LayerNormalization => match case.int_attribute("stash_type", 1)? {
                1 => None,
                other => Some(format!(
                    "{} (opset {}): stash_type {other} is not supported: the engine keeps \
                     the mean and variance in float32 (stash_type 1)",
                    case.op, case.opset
                )),
            },
            Op::Conv if !(1..=2).contains(&spatial) => Some(format!(
                "Conv: {spatial}-D convolution is not implemented (1-D and 2-D are)"
            )),
            Op::Conv if !all_ones("dilations")? => {
                Some("Conv: dilations other than 1 are not implemented".to_string())
            }
            Op::Conv if case.int_attribute("group", 1)? != 1 => {
                Some("Conv: grouped convolution (group > 1) is not implemented".to_string())
            }
            Op::MaxPool if spatial != 1 => Some(format!(
                "MaxPool: {spatial}-D pooling is not implemented (1-D over N×C×L is)"
            )),
            Op::MaxPool if !all_ones("dilations")? => {
                Some("MaxPool: dilations other than 1 are not implemented".to_string())
            }
            Op::MaxPool if case.int_attribute("ceil_mode", 0)? != 0 => {
                Some("MaxPool: ceil_mode 1 is not implemented".to_string())
            }
            Op::MaxPool if case.outputs.len() > 1 => Some(
                "MaxPool: the Indices output (flat int64 positions) is not implemented".to_string(),
            ),
            Op::Recurrent(kind) => recurrent::unsupported(case, kind)?,
            _ => None,
        };
        Ok(reason)
    }

    /// Whether a reduction takes its axes as input 1 rather than as the `axes` attribute:
    /// ReduceSum does from opset 13, the other reductions from opset 18.
    fn axes_are_input(self, opset: i64) -> bool {
        match self {
            Op::Reduce(Reduce::Sum) => opset >= 13,
            _ => opset >= 18,
        }
    }

    /// Computes the op's outputs on the GPU, in ONNX's positional order.
    fn run(self, case: &Case, inputs: &Inputs) -> Result<Vec<Tensor>> {
        let y = match self {
            Op::MatMul => inputs.tensor(0)?.matmul(&inputs.tensor(1)?),
            Op::Gemm => {
                let (a, b) = (inputs.tensor(0)?, inputs.tensor(1)?);
                let gemm = a
                    .gemm(&b)
                    .trans_a(case.int_attribute("transA", 0)? != 0)
                    .trans_b(case.int_attribute("transB", 0)? != 0)
                    .alpha(case.float_attribute("alpha", 1.0)?);
                match inputs.optional_tensor(2)? {
                    Some(c) => gemm.c(&c, case.float_attribute("beta", 1.0)?).run(),
                    None => gemm.run(),
                }
            }
            Op::Unary(unary) => inputs.tensor(0)?.map(unary),
            Op::Binary(binary) => inputs.tensor(0)?.zip(&inputs.tensor(1)?, binary),
            Op::Transpose => {
                let x = inputs.tensor(0)?;
                let perm = match case.ints_attribute("perm")? {
                    Some(perm) => perm
                        .iter()
                        .map(|&axis| {
                            usize::try_from(axis).map_err(|_| {
                                Error::format(
                                    case.json_path(),
                                    format!("perm {perm:?} has the negative entry {axis}"),
                                )
                            })
                        })
                        .collect::<Result<Vec<usize>>>()?,
                    // ONNX's default reverses the axes.
                    None => (0..x.rank()).rev().collect(),
                };
                x.permute(&perm)
            }
            Op::LayerNormalization => {
                let x = inputs.tensor(0)?;
                let scale = inputs.tensor(1)?;
                let bias = inputs.optional_tensor(2)?;
                let axis = case.int_attribute("axis", -1)? as isize;
                let epsilon = case.float_attribute("epsilon", 1e-5)?;
                let out = x.layer_norm(Some(&scale), bias.as_ref(), axis, epsilon)?;
                return Ok(vec![out.y, out.mean, out.rstd]);
            }
            Op::Conv => {
                let (x, w) = (inputs.tensor(0)?, inputs.tensor(1)?);
                let bias = inputs.optional_tensor(2)?;
                let kernel = w.shape().get(2..).unwrap_or_default();
                let window = Window::of(case, x.shape().get(2..).unwrap_or_default(), kernel)?;
                match *window.strides.as_slice() {
                    [stride] => x.conv1d(
                        &w,
                        bias.as_ref(),
                        Conv1d {
                            stride,
                            pad_left: window.begins[0],
                            pad_right: window.ends[0],
                        },
                    ),
                    _ => x.conv2d(
                        &w,
                        bias.as_ref(),
                        Conv2d {
                            stride: [window.strides[0], window.strides[1]],
                            pads: [
                                window.begins[0],
                                window.begins[1],
                                window.ends[0],
                                window.ends[1],
                            ],
                        },
                    ),
                }
            }
            Op::MaxPool => {
                let x = inputs.tensor(0)?;
                let kernel = case
                    .ints_attribute("kernel_shape")?
                    .ok_or_else(|| Error::format(case.json_path(), "MaxPool needs kernel_shape"))?;
                let kernel = non_negative(case, "kernel_shape", &kernel)?;
                let window = Window::of(case, x.shape().get(2..).unwrap_or_default(), &kernel)?;
                let options = MaxPool1d {
                    kernel: kernel[0],
                    stride: window.strides[0],
                    pad_left: window.begins[0],
                    pad_right: window.ends[0],
                };
                Ok(x.max_pool1d(options)?.0)
            }
            Op::Reduce(reduce) => {
                let x = inputs.tensor(0)?;
                let axes = if self.axes_are_input(case.opset) {
                    inputs.optional_ints(1)?
                } else {
                    case.ints_attribute("axes")?
                };
                let noop_with_empty_axes = case.int_attribute("noop_with_empty_axes", 0)? != 0;
                let keepdims = case.int_attribute("keepdims", 1)? != 0;
                let Some(axes) = reduction_axes(axes.as_deref(), x.shape(), noop_with_empty_axes)?
                else {
                    return Ok(vec![x]);
                };
                // One axis after another, keeping each as size 1 so that the other axis
                // numbers stay valid; then drop them all at once if keepdims is off.
                let mut y = x.clone();
                for &axis in &axes {
                    y = y.reduce(reduce, axis as isize, true)?;
                }
                if keepdims {
                    Ok(y)
                } else {
                    let kept: Vec<usize> = (0..x.rank())
                        .filter(|axis| !axes.contains(axis))
                        .map(|axis| x.shape()[axis])
                        .collect();
                    y.reshape(&kept)
                }
            }
            Op::Softmax(kind) => {
                let x = inputs.tensor(0)?;
                let normalize = |x: &Tensor, axis: isize| match kind {
                    SoftmaxKind::Softmax => x.softmax(axis),
                    SoftmaxKind::LogSoftmax => x.log_softmax(axis),
                };
                if case.opset >= 13 {
                    return Ok(vec![normalize(
                        &x,
                        case.int_attribute("axis", -1)? as isize,
                    )?]);
                }
                // Before opset 13 the input is coerced to 2-D at `axis` (default 1), and
                // the softmax runs over everything from `axis` on.
                let axis =
                    resolve_axis("softmax", case.int_attribute("axis", 1)? as isize, x.rank())?;
                let rows: usize = x.shape()[..axis].iter().product();
                let flat = x.reshape(&[rows, x.numel() / rows.max(1)])?;
                normalize(&flat, -1)?.reshape(x.shape())
            }
            Op::SoftmaxCrossEntropyLoss => return softmax_cross_entropy_loss(case, inputs),
            Op::Attention => return run_attention(case, inputs),
            Op::Recurrent(kind) => return recurrent::run(case, inputs, kind),
            Op::Gather => {
                let data = inputs.tensor(0)?;
                let axis = resolve_axis(
                    "Gather",
                    case.int_attribute("axis", 0)? as isize,
                    data.rank(),
                )?;
                let (indices, shape) = inputs.int_array(1)?;
                let ids = gather_ids(&indices, data.shape()[axis])?;
                data.gather(
                    axis as isize,
                    &Indices::from_slice(inputs.gpu, &ids, &shape)?,
                )
            }
        }?;
        Ok(vec![y])
    }
}

/// ONNX Attention (opsets 23 to 25) on [`attention`]. Outputs: Y, present_key,
/// present_value, and qk_matmul_output when the case asks for it.
///
/// - 3-D inputs [B, L, heads·size] are split into heads (`q_num_heads`, `kv_num_heads`)
///   and Y is merged back; 4-D inputs are [B, heads, L, size].
/// - past_key/past_value are concatenated before the new keys and values along the
///   sequence: those are present_key/present_value (K and V themselves without a cache).
/// - Query positions follow ONNX: offset = the cache length with past_key, valid keys − Lq
///   per batch with nonpad_kv_seqlen (which also pads), else 0 (top-left). Causal masking
///   and the window (`left_window_size`, `right_window_size`, −1 unbounded) use them.
/// - attn_mask is additive; one narrower than the keys is padded with −∞ (masked).
/// - qk_matmul_output_mode: 0 the scaled Q·Kᵀ, 1 after the softcap, 2 after the masks
///   too (−∞ where masked), 3 the probabilities.
fn run_attention(case: &Case, inputs: &Inputs) -> Result<Vec<Tensor>> {
    let (q, k, v) = (inputs.tensor(0)?, inputs.tensor(1)?, inputs.tensor(2)?);
    let three_d = q.rank() == 3;
    let (q, k, v) = if three_d {
        let q_heads = case.int_attribute("q_num_heads", 0)?;
        let kv_heads = case.int_attribute("kv_num_heads", 0)?;
        (
            split_heads(case, &q, q_heads)?,
            split_heads(case, &k, kv_heads)?,
            split_heads(case, &v, kv_heads)?,
        )
    } else {
        (q, k, v)
    };
    let (k, v, past_len) = match (inputs.optional_tensor(4)?, inputs.optional_tensor(5)?) {
        (Some(past_key), Some(past_value)) => (
            Tensor::concat(&[&past_key, &k], 2)?,
            Tensor::concat(&[&past_value, &v], 2)?,
            Some(past_key.shape().get(2).copied().unwrap_or(0)),
        ),
        (None, None) => (k, v, None),
        _ => {
            return Err(Error::format(
                case.json_path(),
                "past_key and past_value must be given together",
            ))
        }
    };
    let key_lengths = match inputs.optional_ints(6)? {
        Some(_) if past_len.is_some() => {
            return Err(Error::format(
                case.json_path(),
                "nonpad_kv_seqlen cannot be combined with past_key/past_value",
            ))
        }
        Some(lengths) => {
            let lengths = lengths
                .iter()
                .map(|&n| u32::try_from(n))
                .collect::<std::result::Result<Vec<u32>, _>>()
                .map_err(|_| {
                    Error::format(
                        case.json_path(),
                        format!("nonpad_kv_seqlen {lengths:?} holds a value outside 0..2³²"),
                    )
                })?;
            Some(Indices::from_slice(q.gpu(), &lengths, &[lengths.len()])?)
        }
        None => None,
    };
    let k_len = k.shape().get(2).copied().unwrap_or(0);
    let mask = attention_mask(inputs, 3, k_len)?;

    let window = |name: &str| -> Result<Option<u32>> {
        match case.int_attribute(name, -1)? {
            -1 => Ok(None),
            reach => u32::try_from(reach).map(Some).map_err(|_| {
                Error::format(
                    case.json_path(),
                    format!("{name} is {reach}, expected -1 or a non-negative reach"),
                )
            }),
        }
    };
    let softcap = case.float_attribute("softcap", 0.0)?;
    let settings = AttentionSettings {
        scale: case
            .attributes
            .contains_key("scale")
            .then(|| case.float_attribute("scale", 1.0))
            .transpose()?,
        causal: case.int_attribute("is_causal", 0)? != 0,
        alignment: match (past_len, &key_lengths) {
            (Some(past_len), _) => {
                QueryAlignment::Offset(i32::try_from(past_len).map_err(|_| {
                    Error::invalid("Attention", format!("a cache of {past_len} positions"))
                })?)
            }
            (None, Some(_)) => QueryAlignment::EndOfValidKeys,
            (None, None) => QueryAlignment::Offset(0),
        },
        window_left: window("left_window_size")?,
        window_right: window("right_window_size")?,
        softcap: (softcap > 0.0).then_some(softcap),
    };
    let options = AttentionOptions {
        settings,
        key_lengths: key_lengths.as_ref(),
        mask: mask.as_ref().map(|values| AttentionMask {
            kind: MaskKind::Additive,
            values,
        }),
    };
    let forward = attention(&q, &k, &v, &options)?;
    let y = if three_d {
        merge_heads(&forward.output)?
    } else {
        forward.output
    };
    let mut outputs = vec![y, k.clone(), v];
    if case.outputs.get(3).is_some_and(Option::is_some) {
        let unmasked = |softcap| AttentionOptions {
            settings: AttentionSettings {
                scale: settings.scale,
                softcap,
                ..AttentionSettings::default()
            },
            ..AttentionOptions::default()
        };
        outputs.push(match case.int_attribute("qk_matmul_output_mode", 0)? {
            0 => attention_logits(&q, &k, &unmasked(None))?,
            1 => attention_logits(&q, &k, &unmasked(settings.softcap))?,
            2 => attention_logits(&q, &k, &options)?,
            3 => forward.probs,
            mode => {
                return Err(Error::format(
                    case.json_path(),
                    format!("qk_matmul_output_mode is {mode}, expected 0, 1, 2 or 3"),
                ))
            }
        });
    }
    Ok(outputs)
}

/// [B, L, heads·size] as [B, heads, L, size].
fn split_heads(case: &Case, x: &Tensor, heads: i64) -> Result<Tensor> {
    let split = match (x.shape(), usize::try_from(heads)) {
        (&[batch, len, hidden], Ok(heads)) if heads > 0 && hidden % heads == 0 => {
            [batch, len, heads, hidden / heads]
        }
        _ => {
            return Err(Error::format(
                case.json_path(),
                format!(
                    "input {:?} is not [B, L, heads·size] with {heads} heads",
                    x.shape()
                ),
            ))
        }
    };
    x.reshape(&split)?.permute(&[0, 2, 1, 3])
}

/// [B, heads, L, size] as [B, L, heads·size].
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let [batch, heads, len, size] = x.shape() else {
        return Err(Error::invalid(
            "Attention",
            format!("expected a 4-D output, got {:?}", x.shape()),
        ));
    };
    let merged = [*batch, *len, heads * size];
    x.permute(&[0, 2, 1, 3])?.reshape(&merged)
}

/// The attention mask input `index` as an additive mask over `k_len` keys: a mask with
/// fewer columns is padded with −∞, as ONNX pads a mask shorter than past + new keys.
fn attention_mask(inputs: &Inputs, index: usize, k_len: usize) -> Result<Option<Tensor>> {
    let Some(array) = inputs.array(index) else {
        return Ok(None);
    };
    let npy::Data::F32(values) = &array.data else {
        return Err(inputs.wrong_type(index, "float32 (an additive mask)"));
    };
    let width = array.shape.last().copied().unwrap_or(1);
    if array.shape.is_empty() || width >= k_len || width == 0 {
        return Tensor::from_slice(inputs.gpu, values, &array.shape).map(Some);
    }
    let padded: Vec<f32> = values
        .chunks(width)
        .flat_map(|row| {
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(f32::NEG_INFINITY, k_len - width))
        })
        .collect();
    let mut shape = array.shape.clone();
    if let Some(last) = shape.last_mut() {
        *last = k_len;
    }
    Tensor::from_slice(inputs.gpu, &padded, &shape).map(Some)
}

/// SoftmaxCrossEntropyLoss-13: scores [N, C, d1, …], int64 labels [N, d1, …], optional
/// weights [C]; outputs the loss and, if the case asks for it, log_prob (the log-softmax
/// over the class axis). The int64 labels and ignore index (negative ones included) go to
/// the engine as they are, through `Indices::from_i64` and `ignore_index`.
fn softmax_cross_entropy_loss(case: &Case, inputs: &Inputs) -> Result<Vec<Tensor>> {
    let scores = inputs.tensor(0)?;
    let ignore_index = case.optional_int_attribute("ignore_index")?;
    let reduction = match case.string_attribute("reduction", "mean")? {
        "none" => LossReduction::None,
        "sum" => LossReduction::Sum,
        "mean" => LossReduction::Mean,
        _ => return Err(case.attribute_error("reduction", "none, sum or mean")),
    };
    let (labels, label_shape) = inputs.int_array(1)?;
    let targets = Indices::from_i64(scores.gpu(), &labels, &label_shape)?;
    let weights = inputs.optional_tensor(2)?;
    let mut loss = scores.softmax_cross_entropy(&targets).reduction(reduction);
    if let Some(index) = ignore_index {
        loss = loss.ignore_index(index);
    }
    if let Some(weights) = &weights {
        loss = loss.weights(weights);
    }
    let mut outputs = vec![loss.run()?.loss];
    if case.outputs.len() > 1 {
        outputs.push(scores.log_softmax(1)?);
    }
    Ok(outputs)
}

/// ONNX Gather's indices as ids: a negative index counts from the end of the axis, so the
/// valid range is [−axis_len, axis_len − 1]; anything outside is an error naming it.
pub fn gather_ids(indices: &[i64], axis_len: usize) -> Result<Vec<u32>> {
    let len = axis_len as i64;
    indices
        .iter()
        .enumerate()
        .map(|(position, &index)| {
            let id = if index < 0 { index + len } else { index };
            if (0..len).contains(&id) {
                Ok(id as u32)
            } else {
                Err(Error::invalid(
                    "Gather",
                    format!(
                        "index {index} at flat position {position} is outside [{}, {}] for an axis of size {axis_len}",
                        -len,
                        len - 1
                    ),
                ))
            }
        })
        .collect()
}

/// The strides and the padding at the begin and end of each spatial axis of a Conv or
/// MaxPool case, from its `strides`, `pads` and `auto_pad` attributes.
struct Window {
    strides: Vec<usize>,
    begins: Vec<usize>,
    ends: Vec<usize>,
}

impl Window {
    /// The window of `kernel` over an input of spatial sizes `spatial`. A `kernel_shape`
    /// attribute, where the case sets one, must agree with `kernel`.
    fn of(case: &Case, spatial: &[usize], kernel: &[usize]) -> Result<Window> {
        let axes = spatial.len();
        let fail = |message: String| Error::format(case.json_path(), message);
        if let Some(shape) = case.ints_attribute("kernel_shape")? {
            if non_negative(case, "kernel_shape", &shape)? != kernel {
                return Err(fail(format!(
                    "kernel_shape {shape:?} disagrees with the kernel's sizes {kernel:?}"
                )));
            }
        }
        let list = |name: &str, len: usize, default: usize| -> Result<Vec<usize>> {
            match case.ints_attribute(name)? {
                None => Ok(vec![default; len]),
                Some(values) if values.len() == len => non_negative(case, name, &values),
                Some(values) => Err(fail(format!(
                    "{name} {values:?} should have {len} entries for {axes} spatial axes"
                ))),
            }
        };
        let strides = list("strides", axes, 1)?;
        if kernel.len() != axes {
            return Err(fail(format!(
                "the kernel has {} spatial axes, the input {axes}",
                kernel.len()
            )));
        }
        let (begins, ends) = match case.string_attribute("auto_pad", "NOTSET")? {
            "NOTSET" => {
                let pads = list("pads", 2 * axes, 0)?;
                (pads[..axes].to_vec(), pads[axes..].to_vec())
            }
            "VALID" => (vec![0; axes], vec![0; axes]),
            // The output keeps ceil(size / stride) positions; the odd pad goes at the end
            // (SAME_UPPER) or at the begin (SAME_LOWER).
            mode @ ("SAME_UPPER" | "SAME_LOWER") => (0..axes)
                .map(|i| {
                    let out = spatial[i].div_ceil(strides[i].max(1));
                    let total =
                        ((out.max(1) - 1) * strides[i] + kernel[i]).saturating_sub(spatial[i]);
                    let small = total / 2;
                    if mode == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    }
                })
                .unzip(),
            other => return Err(fail(format!("auto_pad {other:?} is not an ONNX mode"))),
        };
        Ok(Window {
            strides,
            begins,
            ends,
        })
    }
}

/// `values` of the attribute `name` as sizes; an error if one is negative.
fn non_negative(case: &Case, name: &str, values: &[i64]) -> Result<Vec<usize>> {
    values
        .iter()
        .map(|&v| usize::try_from(v))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::format(
                case.json_path(),
                format!("{name} {values:?} has a negative entry"),
            )
        })
}

/// The axes a reduction runs over, sorted and non-negative; `None` when it is the identity.
///
/// No axes (absent, or an empty list) means every axis, unless `noop_with_empty_axes` is
/// set: then the input passes through unchanged. Negative axes count from the end.
pub fn reduction_axes(
    axes: Option<&[i64]>,
    shape: &[usize],
    noop_with_empty_axes: bool,
) -> Result<Option<Vec<usize>>> {
    let rank = shape.len();
    let axes = axes.unwrap_or_default();
    if axes.is_empty() {
        return Ok((!noop_with_empty_axes).then(|| (0..rank).collect()));
    }
    let mut resolved = Vec::with_capacity(axes.len());
    for &axis in axes {
        let index = if axis < 0 { axis + rank as i64 } else { axis };
        if !(0..rank as i64).contains(&index) {
            return Err(Error::invalid(
                "reduce",
                format!("axis {axis} (of axes {axes:?}) is out of range for shape {shape:?}"),
            ));
        }
        resolved.push(index as usize);
    }
    resolved.sort_unstable();
    if resolved.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(Error::invalid(
            "reduce",
            format!("axes {axes:?} name the same axis twice for shape {shape:?}"),
        ));
    }
    Ok(Some(resolved))
}

/// The first difference between the engine's output and ONNX's expected one, in words, or
/// `None` if the shapes match and every element is within tolerance.
pub fn compare(
    actual: &[f32],
    actual_shape: &[usize],
    expected: &[f32],
    expected_shape: &[usize],
) -> Option<String> {
    if actual_shape != expected_shape {
        return Some(format!(
            "the output has shape {actual_shape:?}, ONNX expects {expected_shape:?}"
        ));
    }
    let misses: Vec<usize> = (0..expected.len())
        .filter(|&i| !within_tolerance(actual[i], expected[i]))
        .collect();
    let &first = misses.first()?;
    Some(format!(
        "element {first} (index {:?}) is {}, ONNX expects {} (allowed difference {:.1e}); \
         {} of {} elements differ",
        unravel(first, expected_shape),
        actual[first],
        expected[first],
        ATOL + RTOL * f64::from(expected[first]).abs(),
        misses.len(),
        expected.len()
    ))
}

/// ONNX's element test: NaN matches only NaN, an infinity only the same infinity, and finite
/// values must be within ATOL + RTOL·|expected|.
pub fn within_tolerance(actual: f32, expected: f32) -> bool {
    if actual.is_nan() || expected.is_nan() {
        return actual.is_nan() && expected.is_nan();
    }
    if actual.is_infinite() || expected.is_infinite() {
        return actual == expected;
    }
    let (actual, expected) = (f64::from(actual), f64::from(expected));
    (actual - expected).abs() <= ATOL + RTOL * expected.abs()
}

/// The coordinates of the element at flat (row-major) position `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (coordinate, &dim) in index.iter_mut().zip(shape).rev() {
        *coordinate = flat % dim;
        flat /= dim;
    }
    index
}

/// The arrays of a case's inputs, read from their files, for uploading on demand.
struct Inputs<'a> {
    case: &'a Case,
    gpu: &'a Gpu,
    /// `None` for an omitted optional input.
    arrays: Vec<Option<npy::Array>>,
}

impl<'a> Inputs<'a> {
    fn load(case: &'a Case, gpu: &'a Gpu) -> Result<Inputs<'a>> {
        let arrays = case
            .inputs
            .iter()
            .map(|file| {
                file.as_ref()
                    .map(|file| npy::read(&case.dir.join(file)))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        Ok(Inputs { case, gpu, arrays })
    }

    /// Input `index` uploaded as a tensor; an error if the case omits it.
    fn tensor(&self, index: usize) -> Result<Tensor> {
        self.optional_tensor(index)?.ok_or_else(|| {
            Error::format(
                self.case.json_path(),
                format!("{} needs input {index}, which the case omits", self.case.op),
            )
        })
    }

    /// Input `index` uploaded as a tensor, or `None` if the case omits it.
    fn optional_tensor(&self, index: usize) -> Result<Option<Tensor>> {
        let Some(array) = self.array(index) else {
            return Ok(None);
        };
        let npy::Data::F32(values) = &array.data else {
            return Err(self.wrong_type(index, "float32: the engine computes float32 only"));
        };
        Tensor::from_slice(self.gpu, values, &array.shape).map(Some)
    }

    /// Input `index` as integers (an int32 or int64 tensor of any shape, flattened), or
    /// `None` if the case omits it.
    fn optional_ints(&self, index: usize) -> Result<Option<Vec<i64>>> {
        let Some(array) = self.array(index) else {
            return Ok(None);
        };
        match &array.data {
            npy::Data::I64(values) => Ok(Some(values.clone())),
            npy::Data::I32(values) => Ok(Some(values.iter().map(|&v| i64::from(v)).collect())),
            npy::Data::F32(_) => Err(self.wrong_type(index, "integers")),
        }
    }

    /// Input `index` as integers (int32 or int64) with its shape; an error if omitted.
    fn int_array(&self, index: usize) -> Result<(Vec<i64>, Vec<usize>)> {
        let values = self.optional_ints(index)?.ok_or_else(|| {
            Error::format(
                self.case.json_path(),
                format!("{} needs input {index}, which the case omits", self.case.op),
            )
        })?;
        let shape = self.array(index).map(|array| array.shape.clone());
        Ok((values, shape.unwrap_or_default()))
    }

    fn array(&self, index: usize) -> Option<&npy::Array> {
        self.arrays.get(index).and_then(Option::as_ref)
    }

    fn wrong_type(&self, index: usize, expected: &str) -> Error {
        let file = self.case.inputs[index].as_deref().unwrap_or_default();
        let dtype = self.array(index).map(|array| array.data.dtype());
        Error::format(
            self.case.dir.join(file),
            format!(
                "input {index} of {} holds {} values, expected {expected}",
                self.case.op,
                dtype.unwrap_or_default()
            ),
        )
    }
}

/// Turns an I/O error on `path` into an [`Error::Io`] naming it.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_follows_onnx() {
        assert!(within_tolerance(1.0005, 1.0));
        assert!(!within_tolerance(1.0015, 1.0));
        assert!(within_tolerance(5e-8, 0.0));
        assert!(!within_tolerance(2e-7, 0.0));
        assert!(within_tolerance(f32::NAN, f32::NAN));
        assert!(!within_tolerance(f32::NAN, 1.0));
        assert!(!within_tolerance(1.0, f32::NAN));
        assert!(within_tolerance(f32::NEG_INFINITY, f32::NEG_INFINITY));
        assert!(!within_tolerance(f32::INFINITY, f32::NEG_INFINITY));
        assert!(!within_tolerance(f32::MAX, f32::INFINITY));
        assert!(!within_tolerance(f32::INFINITY, f32::MAX));
    }

    #[test]
    fn compare_names_the_first_element_off() {
        let expected = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(compare(&expected, &[2, 3], &expected, &[2, 3]), None);
        let actual = [1.0, 2.0, 3.0, 4.0, 5.5, 6.5];
        let message = compare(&actual, &[2, 3], &expected, &[2, 3]).unwrap();
        assert!(
            message.contains("element 4 (index [1, 1]) is 5.5, ONNX expects 5")
                && message.contains("2 of 6 elements differ"),
            "{message}"
        );
        let message = compare(&expected, &[3, 2], &expected, &[2, 3]).unwrap();
        assert!(
            message.contains("[3, 2]") && message.contains("[2, 3]"),
            "{message}"
        );
        assert_eq!(compare(&[], &[2, 0], &[], &[2, 0]), None);
    }

    #[test]
    fn reduction_axes_follow_onnx() {
        let shape = [3, 2, 2];
        assert_eq!(
            reduction_axes(Some(&[-1, 0]), &shape, false).unwrap(),
            Some(vec![0, 2])
        );
        assert_eq!(
            reduction_axes(Some(&[]), &shape, false).unwrap(),
            Some(vec![0, 1, 2])
        );
        assert_eq!(
            reduction_axes(None, &shape, false).unwrap(),
            Some(vec![0, 1, 2])
        );
        assert_eq!(reduction_axes(Some(&[]), &shape, true).unwrap(), None);
        assert_eq!(reduction_axes(None, &shape, true).unwrap(), None);
        let err = reduction_axes(Some(&[3]), &shape, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("axis 3") && err.contains("[3, 2, 2]"), "{err}");
        let err = reduction_axes(Some(&[1, -2]), &shape, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("same axis twice"), "{err}");
    }

    #[test]
    fn skip_reasons_name_the_unknown_op() {
        assert_eq!(not_implemented_reason("Einsum"), "unknown op Einsum");
        assert!(Op::from_name("LSTM").is_some());
    }

    #[test]
    fn gather_ids_count_negative_indices_from_the_end() {
        assert_eq!(gather_ids(&[0, -1, 2, -5], 5).unwrap(), vec![0, 4, 2, 0]);
        let err = gather_ids(&[1, -6], 5).unwrap_err().to_string();
        assert!(
            err.contains("index -6 at flat position 1") && err.contains("[-5, 4]"),
            "{err}"
        );
        assert!(gather_ids(&[5], 5).is_err());
    }

    /// A case of `op` with `attributes` (a JSON object) and no files.
    fn case_with(op: &str, attributes: &str) -> Case {
        Case {
            name: "test".into(),
            dir: PathBuf::from("test"),
            op: op.into(),
            attributes: serde_json::from_str(attributes).unwrap(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            opset: 22,
        }
    }

    #[test]
    fn windows_follow_onnx_padding_modes() {
        // 5 positions, kernel 4, stride 2: 3 outputs need 2·2 + 4 − 5 = 3 pads.
        let window = |attributes: &str| {
            let w = Window::of(&case_with("Conv", attributes), &[5], &[4]).unwrap();
            (w.strides, w.begins, w.ends)
        };
        let upper = window(r#"{"auto_pad": "SAME_UPPER", "strides": [2]}"#);
        assert_eq!(upper, (vec![2], vec![1], vec![2]));
        let lower = window(r#"{"auto_pad": "SAME_LOWER", "strides": [2]}"#);
        assert_eq!(lower, (vec![2], vec![2], vec![1]));
        assert_eq!(
            window(r#"{"auto_pad": "VALID", "pads": [3, 3]}"#),
            (vec![1], vec![0], vec![0])
        );
        assert_eq!(window(r#"{"pads": [1, 2]}"#), (vec![1], vec![1], vec![2]));
        assert_eq!(window("{}"), (vec![1], vec![0], vec![0]));

        let error = |attributes: &str, spatial: &[usize], kernel: &[usize]| {
            Window::of(&case_with("Conv", attributes), spatial, kernel)
                .err()
                .unwrap()
                .to_string()
        };
        let e = error(r#"{"pads": [1, 1]}"#, &[5, 5], &[3, 3]);
        assert!(e.contains("4 entries"), "{e}");
        let e = error(r#"{"kernel_shape": [2]}"#, &[5], &[3]);
        assert!(e.contains("disagrees"), "{e}");
        let e = error(r#"{"strides": [-1]}"#, &[5], &[3]);
        assert!(e.contains("negative"), "{e}");
        let e = error(r#"{"auto_pad": "SAME"}"#, &[5], &[3]);
        assert!(e.contains("not an ONNX mode"), "{e}");
    }

    #[test]
    fn reductions_take_axes_as_input_from_their_opset() {
        let sum = Op::from_name("ReduceSum").unwrap();
        let max = Op::from_name("ReduceMax").unwrap();
        assert_eq!(sum.known_attributes(11), ["axes", "keepdims"]);
        assert_eq!(
            sum.known_attributes(13),
            ["keepdims", "noop_with_empty_axes"]
        );
        assert_eq!(max.known_attributes(13), ["axes", "keepdims"]);
        assert_eq!(
            max.known_attributes(18),
            ["keepdims", "noop_with_empty_axes"]
        );
    }
}
