//! Attention against its f64 CPU reference: the forward on odd shapes (1, primes, head
//! sizes that are not multiples of 4, grouped key/value heads, one larger case), every mask
//! (causal with each alignment, key padding, additive and boolean mask tensors, windows,
//! softcap), fully masked rows, and the backward against finite differences.

mod common;

use common::{assert_close, assert_gradient, assert_within, gpu, numeric_gradient, weighted_sum};
use shadergrad::kernels::attention::{
    attention_cpu, masked_softmax_backward_dispatch, masked_softmax_dispatch, AttentionCpuInputs,
    AttentionCpuOutput, AttentionDims, AttentionMask, AttentionSettings, CpuMask, MAX_REACH,
};
use shadergrad::rng::Rng;
use shadergrad::AttentionSettingsBuilder;
use shadergrad::{
    attention, attention_backward, attention_logits, attention_output, fused_attention,
    fused_attention_backward, AttentionOptions, AttentionVariant, Indices, MaskKind,
    QueryAlignment, Tensor,
};

/// f32 epsilon as f64.
const EPS: f64 = f32::EPSILON as f64;

fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu(), data, shape).unwrap()
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// One attention problem: sizes, settings and masks.
#[derive(Clone)]
struct Scenario {
    dims: AttentionDims,
    settings: AttentionSettings,
    key_lengths: Option<Vec<u32>>,
    /// Kind, values, shape.
    mask: Option<(MaskKind, Vec<f32>, Vec<usize>)>,
}

/// Q, K and V of a scenario, uniform in [-1, 1].
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// A scenario's tensors on the GPU; the options borrow the mask and lengths from here.
struct Uploaded {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Option<Tensor>,
    lengths: Option<Indices>,
}

impl Scenario {
    /// (B, H, Hkv, Lq, Lk, D, Dv) with no masks.
    fn new(
        (batch, heads, kv_heads): (usize, usize, usize),
        (q_len, k_len): (usize, usize),
        (head_dim, value_dim): (usize, usize),
    ) -> Scenario {
        Scenario {
            dims: AttentionDims {
                batch,
                heads,
                kv_heads,
                q_len,
                k_len,
                head_dim,
                value_dim,
            },
            settings: AttentionSettings::default(),
            key_lengths: None,
            mask: None,
        }
    }

    fn q_shape(&self) -> Vec<usize> {
        let d = &self.dims;
        vec![d.batch, d.heads, d.q_len, d.head_dim]
    }

    fn k_shape(&self) -> Vec<usize> {
        let d = &self.dims;
        vec![d.batch, d.kv_heads, d.k_len, d.head_dim]
    }

    fn v_shape(&self) -> Vec<usize> {
        let d = &self.dims;
        vec![d.batch, d.kv_heads, d.k_len, d.value_dim]
    }

    fn inputs(&self, seed: u64) -> Inputs {
        let mut rng = Rng::new(seed);
        let n = |s: Vec<usize>| s.iter().product();
        Inputs {
            q: rng.vec(n(self.q_shape()), -1.0, 1.0),
            k: rng.vec(n(self.k_shape()), -1.0, 1.0),
            v: rng.vec(n(self.v_shape()), -1.0, 1.0),
        }
    }

    fn cpu(&self, q: &[f64], k: &[f64], v: &[f64]) -> AttentionCpuOutput {
        let mask_values = self.mask.as_ref().map(|(_, values, _)| to_f64(values));
        let inputs = AttentionCpuInputs {
            dims: self.dims,
            q,
            k,
            v,
            key_lengths: self.key_lengths.as_deref(),
            mask: self.mask.as_ref().zip(mask_values.as_deref()).map(
                |((kind, _, shape), values)| CpuMask {
                    kind: *kind,
                    values,
                    shape,
                },
            ),
        };
        attention_cpu(&inputs, &self.settings)
    }

    fn cpu_of(&self, inputs: &Inputs) -> AttentionCpuOutput {
        self.cpu(&to_f64(&inputs.q), &to_f64(&inputs.k), &to_f64(&inputs.v))
    }

    fn upload(&self, inputs: &Inputs) -> Uploaded {
        Uploaded {
            q: upload(&inputs.q, &self.q_shape()),
            k: upload(&inputs.k, &self.k_shape()),
            v: upload(&inputs.v, &self.v_shape()),
            mask: self
                .mask
                .as_ref()
                .map(|(_, values, shape)| upload(values, shape)),
            lengths: self
                .key_lengths
                .as_ref()
                .map(|lengths| Indices::from_slice(gpu(), lengths, &[self.dims.batch]).unwrap()),
        }
    }

    fn options<'a>(&self, uploaded: &'a Uploaded) -> AttentionOptions<'a> {
        AttentionOptions {
            settings: self.settings,
            key_lengths: uploaded.lengths.as_ref(),
            mask: self
                .mask
                .as_ref()
                .zip(uploaded.mask.as_ref())
                .map(|((kind, _, _), values)| AttentionMask {
                    kind: *kind,
                    values,
                }),
        }
    }

    /// The largest |value| of a finite additive mask (it widens the logits' range).
    fn mask_magnitude(&self) -> f64 {
        match &self.mask {
            Some((MaskKind::Additive, values, _)) => values
                .iter()
                .filter(|v| v.is_finite())
                .fold(0.0f64, |m, &v| m.max(f64::from(v).abs())),
            _ => 0.0,
        }
    }

    /// Worst-case f32 error bounds for inputs in [-1, 1], as (relative error of P,
    /// absolute error of O):
    /// - a logit is a D-term dot product of values ≤ 1, times the scale: off by at most
    ///   δ = (D+2)·ε·D·scale (the softcap is a contraction; the mask adds ε·|mask|);
    /// - P = exp(z − max)/Σ: relative error ≤ 2δ from the logits, plus exp's own error
    ///   (Vulkan allows 3 + 2|x| ulp, |x| at most the logits' range) and (Lk+4)·ε for the sum;
    /// - O = Σ P·v with |v| ≤ 1 and Σ P ≤ 1: off by at most rel_P + (Lk+2)·ε.
    ///
    /// Any indexing or masking mistake is off by orders of magnitude more.
    fn tolerances(&self) -> (f64, f64) {
        let d = &self.dims;
        let scale = f64::from(self.settings.scale_for(d.head_dim));
        let mask = self.mask_magnitude();
        let reach = d.head_dim as f64 * scale + mask;
        let delta = (d.head_dim as f64 + 2.0) * EPS * d.head_dim as f64 * scale + EPS * mask;
        let p_rel = 2.0 * delta + (3.0 + 4.0 * reach + d.k_len as f64 + 4.0) * EPS;
        (p_rel, p_rel + (d.k_len as f64 + 2.0) * EPS)
    }

    fn label(&self) -> String {
        format!(
            "{:?} {:?} lengths {:?} mask {:?}",
            self.dims,
            self.settings,
            self.key_lengths,
            self.mask.as_ref().map(|(kind, _, shape)| (kind, shape))
        )
    }
}

/// Runs the forward on the GPU and checks O and P against the reference: within the bounds
/// of `Scenario::tolerances`, P exactly 0 at every masked key, and no NaN anywhere.
fn check_forward(scenario: &Scenario, seed: u64) {
    let inputs = scenario.inputs(seed);
    let expected = scenario.cpu_of(&inputs);
    let uploaded = scenario.upload(&inputs);
    let forward = attention(
        &uploaded.q,
        &uploaded.k,
        &uploaded.v,
        &scenario.options(&uploaded),
    )
    .unwrap();
    let d = &scenario.dims;
    assert_eq!(
        forward.output.shape(),
        &[d.batch, d.heads, d.q_len, d.value_dim]
    );
    assert_eq!(forward.probs.shape(), &[d.batch, d.heads, d.q_len, d.k_len]);
    let output = forward.output.to_vec().unwrap();
    let probs = forward.probs.to_vec().unwrap();
    let label = scenario.label();
    assert!(
        output.iter().chain(&probs).all(|v| v.is_finite()),
        "{label}: NaN or infinity in the output"
    );
    for (j, &logit) in expected.logits.iter().enumerate() {
        if logit == f64::NEG_INFINITY {
            assert_eq!(probs[j], 0.0, "{label}: masked element {j} of P");
        }
    }
    let (p_rel, o_abs) = scenario.tolerances();
    let expected_probs: Vec<f32> = expected.probs.iter().map(|&p| p as f32).collect();
    // 1e-37: a probability below the smallest normal f32 may be flushed to zero.
    assert_within(&format!("P of {label}"), &probs, &expected_probs, |i| {
        p_rel * expected.probs[i] + 1e-37
    });
    let expected_output: Vec<f32> = expected.output.iter().map(|&o| o as f32).collect();
    assert_close(
        &format!("O of {label}"),
        &output,
        &expected_output,
        0.0,
        o_abs,
    );
}

/// Runs the fused forward and checks it against the reference and the unfused forward: O
/// within `Scenario::tolerances` of each, the log-sum-exp within the logits' error plus the
/// sum's relative error, −∞ exactly for rows without keys, no NaN anywhere.
fn check_fused(scenario: &Scenario, seed: u64) {
    let inputs = scenario.inputs(seed);
    let expected = scenario.cpu_of(&inputs);
    let uploaded = scenario.upload(&inputs);
    let options = scenario.options(&uploaded);
    let fused = fused_attention(&uploaded.q, &uploaded.k, &uploaded.v, &options).unwrap();
    let unfused = attention(&uploaded.q, &uploaded.k, &uploaded.v, &options).unwrap();
    let d = &scenario.dims;
    assert_eq!(fused.output.shape(), unfused.output.shape());
    assert_eq!(fused.log_sum_exp.shape(), &[d.batch, d.heads, d.q_len]);
    let output = fused.output.to_vec().unwrap();
    let log_sum_exp = fused.log_sum_exp.to_vec().unwrap();
    let label = format!("fused {}", scenario.label());
    assert!(
        output.iter().all(|v| v.is_finite()),
        "{label}: NaN or infinity in the output"
    );
    let (p_rel, o_abs) = scenario.tolerances();
    let expected_output: Vec<f32> = expected.output.iter().map(|&o| o as f32).collect();
    assert_close(
        &format!("O of {label}"),
        &output,
        &expected_output,
        0.0,
        o_abs,
    );
    let unfused_output = unfused.output.to_vec().unwrap();
    assert_close(
        &format!("O of {label} against the unfused forward"),
        &output,
        &unfused_output,
        0.0,
        2.0 * o_abs,
    );
    // lse = top + ln Σ exp(z − top): the logits' error (inside p_rel) plus the sum's.
    let expected_lse: Vec<f32> = (0..d.batch * d.heads * d.q_len)
        .map(|row| {
            let logits = &expected.logits[row * d.k_len..(row + 1) * d.k_len];
            let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if top == f64::NEG_INFINITY {
                f32::NEG_INFINITY
            } else {
                (top + logits.iter().map(|&z| (z - top).exp()).sum::<f64>().ln()) as f32
            }
        })
        .collect();
    assert_close(
        &format!("log-sum-exp of {label}"),
        &log_sum_exp,
        &expected_lse,
        EPS,
        p_rel,
    );
}

/// The scenarios of the fused forward: every (Lq, Lk) of 1, 7, 33, 130, head sizes 1, 17
/// and 64, one, four and grouped heads, causal and key lengths (0 among them) in turn.
#[test]
fn fused_forward_matches_reference_and_unfused_on_odd_shapes() {
    let lens = [1, 7, 33, 130];
    let heads = [(1, 1, 1), (2, 4, 2), (1, 4, 1), (2, 4, 4)];
    let sizes = [(1, 1), (17, 17), (64, 64), (17, 3)];
    let mut seed = 200;
    for (a, &q_len) in lens.iter().enumerate() {
        for (c, &k_len) in lens.iter().enumerate() {
            let case = a * lens.len() + c;
            let mut scenario =
                Scenario::new(heads[case % 4], (q_len, k_len), sizes[(case / 2) % 4]);
            scenario.settings.causal = case % 3 != 0;
            let batch = scenario.dims.batch;
            if case % 2 == 1 {
                scenario.key_lengths = Some(vec![0, k_len as u32 / 2 + 1][2 - batch..].to_vec());
            }
            seed += 1;
            check_fused(&scenario, seed);
        }
    }
}

#[test]
fn fused_forward_with_every_option() {
    // Each alignment with causal masking and key lengths.
    for (seed, alignment) in [
        QueryAlignment::Offset(-2),
        QueryAlignment::Offset(3),
        QueryAlignment::EndOfValidKeys,
    ]
    .into_iter()
    .enumerate()
    {
        let mut scenario = Scenario::new((2, 3, 1), (5, 40), (4, 3));
        scenario.settings.causal = true;
        scenario.settings.alignment = alignment;
        scenario.key_lengths = Some(vec![40, 19]);
        check_fused(&scenario, 300 + seed as u64);
    }
    // Windows, softcap with a large scale, additive and boolean masks that broadcast, with
    // fully masked rows (row 1 of the additive mask) and tiles without a kept key.
    let (lq, lk) = (9, 37);
    let mut additive = vec![0.0f32; lq * lk];
    let mut rng = Rng::new(310);
    for (n, value) in additive.iter_mut().enumerate() {
        *value = if n / lk == 1 || (n % lk) / 16 == 1 || rng.below(4) == 0 {
            f32::NEG_INFINITY
        } else {
            rng.uniform(-2.0, 2.0)
        };
    }
    let boolean: Vec<f32> = (0..2 * lk)
        .map(|n| ((n / 7) % 3 != 0) as u32 as f32)
        .collect();
    let masks = [
        (MaskKind::Additive, additive, vec![lq, lk]),
        (MaskKind::Boolean, boolean, vec![2, 1, 1, lk]),
    ];
    for (seed, (kind, values, shape)) in masks.into_iter().enumerate() {
        let mut scenario = Scenario::new((2, 4, 2), (lq, lk), (8, 5));
        scenario.settings.scale = Some(2.0);
        scenario.settings.softcap = Some(0.5);
        scenario.settings.window_left = Some(20);
        scenario.settings.window_right = Some(3);
        scenario.settings.alignment = QueryAlignment::Offset(4);
        scenario.mask = Some((kind, values, shape));
        check_fused(&scenario, 320 + seed as u64);
    }
    // Values wider than one chunk of 64 columns, and a zero-sized value axis.
    check_fused(&Scenario::new((1, 2, 1), (33, 70), (5, 130)), 330);
    check_fused(&Scenario::new((1, 2, 2), (7, 7), (3, 0)), 331);
}

#[test]
fn fused_forward_zero_sized_axes_and_the_variant_rule() {
    // No keys: O = 0, log-sum-exp −∞; no queries: empty results.
    check_fused(&Scenario::new((2, 2, 2), (3, 0), (4, 5)), 340);
    check_fused(&Scenario::new((2, 2, 2), (0, 3), (4, 5)), 341);
    let small = Scenario::new((1, 1, 1), (8, 8), (4, 4)).dims;
    let large = Scenario::new((1, 1, 1), (1024, 1024), (4, 4)).dims;
    assert_eq!(AttentionVariant::choose(&small), AttentionVariant::Unfused);
    assert_eq!(AttentionVariant::choose(&large), AttentionVariant::Fused);
    // The inference entry point gives the same output on either side of the rule.
    for (seed, lens) in [(342, (8, 8)), (343, (1030, 1020))] {
        let mut scenario = Scenario::new((1, 2, 1), lens, (6, 4));
        scenario.settings.causal = true;
        let inputs = scenario.inputs(seed);
        let uploaded = scenario.upload(&inputs);
        let options = scenario.options(&uploaded);
        let output = attention_output(&uploaded.q, &uploaded.k, &uploaded.v, &options)
            .unwrap()
            .to_vec()
            .unwrap();
        let expected = attention(&uploaded.q, &uploaded.k, &uploaded.v, &options)
            .unwrap()
            .output
            .to_vec()
            .unwrap();
        let (_, o_abs) = scenario.tolerances();
        assert_close("attention_output", &output, &expected, 0.0, 2.0 * o_abs);
    }
}

#[test]
fn forward_matches_reference_on_odd_shapes() {
    let shapes = [
        ((1, 1, 1), (1, 1), (1, 1)),
        ((2, 3, 3), (1, 7), (5, 3)),
        ((1, 2, 2), (5, 1), (3, 4)),
        ((2, 4, 2), (13, 11), (7, 9)),
        ((3, 3, 1), (17, 19), (6, 5)),
        ((1, 2, 2), (31, 29), (13, 1)),
        ((1, 1, 1), (257, 3), (2, 2)),
    ];
    for (seed, &(heads, lens, sizes)) in shapes.iter().enumerate() {
        check_forward(&Scenario::new(heads, lens, sizes), seed as u64);
    }
}

#[test]
fn forward_matches_reference_on_a_larger_case() {
    let mut scenario = Scenario::new((2, 4, 4), (128, 160), (32, 32));
    check_forward(&scenario, 100);
    scenario.settings.causal = true;
    check_forward(&scenario, 101);
}

#[test]
fn causal_masks_follow_each_alignment() {
    // Lq = 5 queries over Lk = 8 keys. Offset(-2) leaves the first two rows without keys.
    let alignments = [
        QueryAlignment::Offset(0),
        QueryAlignment::End,
        QueryAlignment::Offset(-2),
        QueryAlignment::Offset(3),
        QueryAlignment::EndOfValidKeys,
    ];
    for (seed, alignment) in alignments.into_iter().enumerate() {
        let mut scenario = Scenario::new((2, 3, 1), (5, 8), (4, 3));
        scenario.settings.causal = true;
        scenario.settings.alignment = alignment;
        check_forward(&scenario, 10 + seed as u64);
        // The same with key lengths: EndOfValidKeys then aligns per batch.
        scenario.key_lengths = Some(vec![8, 3]);
        check_forward(&scenario, 20 + seed as u64);
    }
}

#[test]
fn causal_end_alignment_lets_query_i_see_keys_up_to_i_plus_lk_minus_lq() {
    let mut scenario = Scenario::new((1, 1, 1), (3, 5), (2, 2));
    scenario.settings.causal = true;
    let inputs = scenario.inputs(7);
    let uploaded = scenario.upload(&inputs);
    let forward = attention(
        &uploaded.q,
        &uploaded.k,
        &uploaded.v,
        &scenario.options(&uploaded),
    )
    .unwrap();
    let probs = forward.probs.to_vec().unwrap();
    for i in 0..3 {
        for j in 0..5 {
            let visible = j <= i + 2;
            assert_eq!(
                probs[i * 5 + j] > 0.0,
                visible,
                "query {i}, key {j}: {probs:?}"
            );
        }
    }
}

#[test]
fn key_padding_masks_keys_past_each_length() {
    // Length 0 masks every row of batch 0; 100 > Lk keeps every key.
    let mut scenario = Scenario::new((3, 2, 2), (4, 6), (3, 5));
    scenario.key_lengths = Some(vec![0, 3, 100]);
    check_forward(&scenario, 30);
    scenario.settings.causal = true;
    scenario.settings.alignment = QueryAlignment::EndOfValidKeys;
    check_forward(&scenario, 31);
}

#[test]
fn fully_masked_rows_give_zero_probabilities_and_output() {
    // Row 1 of the additive mask is all −∞; batch 1 has no valid key.
    let (lq, lk) = (3, 4);
    let mut mask = vec![0.5f32; lq * lk];
    for value in &mut mask[lk..2 * lk] {
        *value = f32::NEG_INFINITY;
    }
    let mut scenario = Scenario::new((2, 2, 2), (lq, lk), (5, 3));
    scenario.mask = Some((MaskKind::Additive, mask, vec![lq, lk]));
    scenario.key_lengths = Some(vec![4, 0]);
    let inputs = scenario.inputs(40);
    let uploaded = scenario.upload(&inputs);
    let forward = attention(
        &uploaded.q,
        &uploaded.k,
        &uploaded.v,
        &scenario.options(&uploaded),
    )
    .unwrap();
    let output = forward.output.to_vec().unwrap();
    let probs = forward.probs.to_vec().unwrap();
    for b in 0..2 {
        for h in 0..2 {
            for i in 0..lq {
                let row = (b * 2 + h) * lq + i;
                let empty = b == 1 || i == 1;
                let p = &probs[row * lk..(row + 1) * lk];
                let o = &output[row * 3..(row + 1) * 3];
                if empty {
                    assert!(
                        p.iter().chain(o).all(|&x| x == 0.0),
                        "row {row}: {p:?} {o:?}"
                    );
                } else {
                    let sum: f32 = p.iter().sum();
                    assert!((sum - 1.0).abs() < 1e-5, "row {row} sums to {sum}");
                }
            }
        }
    }
    check_forward(&scenario, 40);
}

#[test]
fn mask_tensors_broadcast_to_the_scores() {
    let mut rng = Rng::new(50);
    let (b, h, lq, lk) = (2, 3, 4, 5);
    let additive = |rng: &mut Rng, n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                if rng.below(4) == 0 {
                    f32::NEG_INFINITY
                } else {
                    rng.uniform(-2.0, 2.0)
                }
            })
            .collect()
    };
    let boolean = |rng: &mut Rng, n: usize| -> Vec<f32> {
        (0..n).map(|_| (rng.below(3) != 0) as u32 as f32).collect()
    };
    let shapes: [Vec<usize>; 5] = [
        vec![lq, lk],
        vec![lk],
        vec![b, 1, 1, lk],
        vec![h, lq, lk],
        vec![b, h, lq, lk],
    ];
    let mut seed = 50;
    for shape in shapes {
        let n = shape.iter().product();
        for (kind, values) in [
            (MaskKind::Additive, additive(&mut rng, n)),
            (MaskKind::Boolean, boolean(&mut rng, n)),
        ] {
            let mut scenario = Scenario::new((b, h, h), (lq, lk), (3, 2));
            scenario.mask = Some((kind, values, shape.clone()));
            seed += 1;
            check_forward(&scenario, seed);
            // Combined with causal masking and key padding.
            scenario.settings.causal = true;
            scenario.key_lengths = Some(vec![3, 5]);
            seed += 1;
            check_forward(&scenario, seed);
        }
    }
}

#[test]
fn windows_and_softcap() {
    let cases = [
        (Some(2), Some(1), QueryAlignment::Offset(0), false),
        (Some(0), None, QueryAlignment::End, true),
        (None, Some(0), QueryAlignment::Offset(1), false),
        (Some(1), Some(2), QueryAlignment::Offset(-3), false),
    ];
    for (seed, (left, right, alignment, causal)) in cases.into_iter().enumerate() {
        let mut scenario = Scenario::new((2, 2, 1), (6, 7), (4, 3));
        scenario.settings.window_left = left;
        scenario.settings.window_right = right;
        scenario.settings.alignment = alignment;
        scenario.settings.causal = causal;
        check_forward(&scenario, 60 + seed as u64);
    }
    // Softcap with a large scale, so that the cap bites, and an additive mask.
    let mut scenario = Scenario::new((1, 2, 2), (5, 6), (8, 4));
    scenario.settings.scale = Some(2.0);
    scenario.settings.softcap = Some(0.5);
    let mut mask = vec![0.0f32; 30];
    mask[3] = f32::NEG_INFINITY;
    mask[17] = -1.5;
    scenario.mask = Some((MaskKind::Additive, mask, vec![5, 6]));
    check_forward(&scenario, 70);
}

#[test]
fn logits_match_reference_with_minus_infinity_where_masked() {
    let mut scenario = Scenario::new((2, 4, 2), (5, 7), (3, 3));
    scenario.settings.causal = true;
    scenario.settings.softcap = Some(1.5);
    scenario.settings.window_left = Some(3);
    scenario.key_lengths = Some(vec![7, 4]);
    let mut mask = vec![0.25f32; 35];
    mask[9] = f32::NEG_INFINITY;
    scenario.mask = Some((MaskKind::Additive, mask, vec![5, 7]));
    let inputs = scenario.inputs(80);
    let expected = scenario.cpu_of(&inputs);
    let uploaded = scenario.upload(&inputs);
    let logits = attention_logits(&uploaded.q, &uploaded.k, &scenario.options(&uploaded))
        .unwrap()
        .to_vec()
        .unwrap();
    let expected: Vec<f32> = expected.logits.iter().map(|&z| z as f32).collect();
    assert!(expected.contains(&f32::NEG_INFINITY) && expected.iter().any(|z| z.is_finite()));
    // A D-term dot product (D = 3, scale 1/√3) then the cap and +0.25: a few ulp of the
    // logits' magnitude (≤ 2); −∞ must match exactly.
    assert_close("logits", &logits, &expected, 0.0, 2e-6);
}

/// Checks the GPU backward of `scenario` against central differences of the f64 reference:
/// L = Σ w·O for random w, so dL/dO = w.
fn check_backward(scenario: &Scenario, seed: u64) {
    let inputs = scenario.inputs(seed);
    let mut rng = Rng::new(seed + 1000);
    let d = &scenario.dims;
    let weights = rng.vec(d.batch * d.heads * d.q_len * d.value_dim, -1.0, 1.0);
    let w = to_f64(&weights);
    let uploaded = scenario.upload(&inputs);
    let options = scenario.options(&uploaded);
    let forward = attention(&uploaded.q, &uploaded.k, &uploaded.v, &options).unwrap();
    let grad_output = upload(&weights, forward.output.shape());
    let grads = attention_backward(
        &uploaded.q,
        &uploaded.k,
        &uploaded.v,
        &forward.probs,
        &grad_output,
        &options,
    )
    .unwrap();
    assert_eq!(grads.query.shape(), uploaded.q.shape());
    assert_eq!(grads.key.shape(), uploaded.k.shape());
    assert_eq!(grads.value.shape(), uploaded.v.shape());

    let (q, k, v) = (to_f64(&inputs.q), to_f64(&inputs.k), to_f64(&inputs.v));
    // h = 1e-4: the f64 reference is smooth (masks do not depend on Q, K, V), so the
    // central difference is off by O(h²) ≈ 1e-9, and rounding by 1e-16/h ≈ 1e-12.
    let h = 1e-4;
    let numeric_q = numeric_gradient(&q, h, |x| weighted_sum(&w, &scenario.cpu(x, &k, &v).output));
    let numeric_k = numeric_gradient(&k, h, |x| weighted_sum(&w, &scenario.cpu(&q, x, &v).output));
    let numeric_v = numeric_gradient(&v, h, |x| weighted_sum(&w, &scenario.cpu(&q, &k, x).output));
    // The GPU chain is three f32 products of at most max(Lq, Lk, D) ≤ 8 terms each around
    // the softmax backward, each off by a few ε of the magnitudes (≤ 10): 1e-5 absolute
    // covers it with margin, 1e-4 relative the larger elements.
    let label = scenario.label();
    let (rtol, atol) = (1e-4, 1e-5);
    assert_gradient(
        &format!("dQ of {label}"),
        &grads.query.to_vec().unwrap(),
        &numeric_q,
        rtol,
        atol,
    );
    assert_gradient(
        &format!("dK of {label}"),
        &grads.key.to_vec().unwrap(),
        &numeric_k,
        rtol,
        atol,
    );
    assert_gradient(
        &format!("dV of {label}"),
        &grads.value.to_vec().unwrap(),
        &numeric_v,
        rtol,
        atol,
    );
}

#[test]
fn backward_matches_finite_differences_with_masks() {
    // Grouped heads, causal (bottom-right), key padding, an additive mask with a −∞.
    let mut scenario = Scenario::new((2, 2, 1), (3, 4), (3, 2));
    scenario.settings.causal = true;
    scenario.key_lengths = Some(vec![4, 3]);
    let mut mask = vec![
        0.3f32, -0.7, 0.0, 1.1, -0.2, 0.4, 0.9, -1.0, 0.0, 0.5, -0.5, 0.2,
    ];
    mask[4] = f32::NEG_INFINITY;
    scenario.mask = Some((MaskKind::Additive, mask, vec![3, 4]));
    check_backward(&scenario, 90);

    // Softcap, a boolean mask per batch, a window, an explicit scale, and a first row with
    // no keys (Offset(-1) with a causal mask).
    let mut scenario = Scenario::new((2, 3, 3), (4, 3), (2, 3));
    scenario.settings.scale = Some(0.9);
    scenario.settings.softcap = Some(0.8);
    scenario.settings.causal = true;
    scenario.settings.alignment = QueryAlignment::Offset(-1);
    scenario.settings.window_left = Some(1);
    scenario.mask = Some((
        MaskKind::Boolean,
        vec![1.0, 1.0, 0.0, 1.0, 0.0, 1.0],
        vec![2, 1, 1, 3],
    ));
    check_backward(&scenario, 91);

    // No masks, Lq = 1 (a decoder step), D not a multiple of 4.
    check_backward(&Scenario::new((1, 2, 2), (1, 5), (3, 3)), 92);
}

/// Checks the fused backward of `scenario` against the unfused backward and central
/// differences of the f64 reference (L = Σ w·O, as `check_backward`), and that a row or key
/// without kept pairs gets exactly zero gradients, with no NaN anywhere.
///
/// Tolerance: every gradient element is a sum of at most n = max(H/Hkv·Lq, Lk) pair terms,
/// each the product of P (≤ 1) with D- or Dv-term dot products of values ≤ 1; recomputing P
/// from the log-sum-exp is off by the forward's relative error (`Scenario::tolerances`), and
/// f32 sums and products by (n + D + Dv)·ε of the magnitudes, scaled by the scale and by at
/// most 1 + |mask| through dS: 4·(those) + 1e-6 absolute, with 1e-4 relative for the
/// larger elements (the f64 differences are off by ~1e-9). An indexing or masking bug is
/// off by orders of magnitude more.
fn check_fused_backward(scenario: &Scenario, seed: u64) {
    let inputs = scenario.inputs(seed);
    let mut rng = Rng::new(seed + 1000);
    let d = &scenario.dims;
    let weights = rng.vec(d.batch * d.heads * d.q_len * d.value_dim, -1.0, 1.0);
    let w = to_f64(&weights);
    let uploaded = scenario.upload(&inputs);
    let options = scenario.options(&uploaded);
    let operands = (&uploaded.q, &uploaded.k, &uploaded.v);
    let grad_output = upload(&weights, &[d.batch, d.heads, d.q_len, d.value_dim]);
    let fused = fused_attention(operands.0, operands.1, operands.2, &options).unwrap();
    let grads = fused_attention_backward(operands, &fused, &grad_output, &options).unwrap();
    let unfused = attention(operands.0, operands.1, operands.2, &options).unwrap();
    let reference = attention_backward(
        operands.0,
        operands.1,
        operands.2,
        &unfused.probs,
        &grad_output,
        &options,
    )
    .unwrap();

    let (q, k, v) = (to_f64(&inputs.q), to_f64(&inputs.k), to_f64(&inputs.v));
    let h = 1e-4;
    let numeric = [
        numeric_gradient(&q, h, |x| weighted_sum(&w, &scenario.cpu(x, &k, &v).output)),
        numeric_gradient(&k, h, |x| weighted_sum(&w, &scenario.cpu(&q, x, &v).output)),
        numeric_gradient(&v, h, |x| weighted_sum(&w, &scenario.cpu(&q, &k, x).output)),
    ];
    let n = (d.group() * d.q_len).max(d.k_len) as f64;
    let scale = f64::from(scenario.settings.scale_for(d.head_dim)).max(1.0);
    let (p_rel, _) = scenario.tolerances();
    let magnitude = n * scale * (1.0 + scenario.mask_magnitude());
    let atol = 4.0 * magnitude * (p_rel + (n + (d.head_dim + d.value_dim) as f64) * EPS) + 1e-6;
    let label = format!("fused backward {}", scenario.label());
    let without_pairs = elements_without_pairs(scenario, &scenario.cpu_of(&inputs).logits);
    let name_index = |name: &str| ["dQ", "dK", "dV"].iter().position(|&n| n == name).unwrap();
    let pairs = [
        ("dQ", &grads.query, &reference.query),
        ("dK", &grads.key, &reference.key),
        ("dV", &grads.value, &reference.value),
    ];
    for ((name, got, unfused), numeric) in pairs.into_iter().zip(&numeric) {
        let got = got.to_vec().unwrap();
        assert!(
            got.iter().all(|g| g.is_finite()),
            "{name} of {label}: NaN or infinity"
        );
        let numeric: Vec<f32> = numeric.iter().map(|&g| g as f32).collect();
        assert_close(&format!("{name} of {label}"), &got, &numeric, 1e-4, atol);
        assert_close(
            &format!("{name} of {label} against the unfused backward"),
            &got,
            &unfused.to_vec().unwrap(),
            1e-4,
            atol,
        );
        for (i, &unkept) in without_pairs[name_index(name)].iter().enumerate() {
            if unkept {
                assert_eq!(
                    got[i], 0.0,
                    "{name} of {label}: element {i} has no kept pair"
                );
            }
        }
    }
}

/// For dQ, dK and dV, whether each element belongs to a query row or key row that no kept
/// (query, key) pair reaches (logit −∞ everywhere): those gradients must be exactly 0.
fn elements_without_pairs(scenario: &Scenario, logits: &[f64]) -> [Vec<bool>; 3] {
    let d = &scenario.dims;
    let group = d.group();
    let kept = |b: usize, h: usize, i: usize, j: usize| {
        logits[((b * d.heads + h) * d.q_len + i) * d.k_len + j] != f64::NEG_INFINITY
    };
    let mut query = Vec::new();
    for b in 0..d.batch {
        for h in 0..d.heads {
            for i in 0..d.q_len {
                let none = !(0..d.k_len).any(|j| kept(b, h, i, j));
                query.extend(std::iter::repeat_n(none, d.head_dim));
            }
        }
    }
    let (mut key, mut value) = (Vec::new(), Vec::new());
    for b in 0..d.batch {
        for kv in 0..d.kv_heads {
            for j in 0..d.k_len {
                let heads = kv * group..(kv + 1) * group;
                let none = !heads
                    .flat_map(|h| (0..d.q_len).map(move |i| (h, i)))
                    .any(|(h, i)| kept(b, h, i, j));
                key.extend(std::iter::repeat_n(none, d.head_dim));
                value.extend(std::iter::repeat_n(none, d.value_dim));
            }
        }
    }
    [query, key, value]
}

/// The fused backward on odd shapes: every (Lq, Lk) of 1, 7, 33 with head sizes 1 and 17,
/// one, four and grouped heads, causal masking and key lengths (0 among them) in turn.
#[test]
fn fused_backward_matches_unfused_and_finite_differences_on_odd_shapes() {
    let lens = [1, 7, 33];
    let heads = [(1, 1, 1), (2, 4, 2), (1, 4, 1), (2, 4, 4)];
    let sizes = [(1, 1), (17, 17), (17, 3), (1, 17)];
    let mut seed = 400;
    for (a, &q_len) in lens.iter().enumerate() {
        for (c, &k_len) in lens.iter().enumerate() {
            let case = a * lens.len() + c;
            let mut scenario =
                Scenario::new(heads[case % 4], (q_len, k_len), sizes[(case / 2) % 4]);
            scenario.settings.causal = case % 3 != 0;
            let batch = scenario.dims.batch;
            if case % 2 == 1 {
                scenario.key_lengths = Some(vec![0, k_len as u32 / 2 + 1][2 - batch..].to_vec());
            }
            seed += 1;
            check_fused_backward(&scenario, seed);
        }
    }
}

#[test]
fn fused_backward_with_every_option() {
    for (seed, alignment) in [
        QueryAlignment::Offset(-2),
        QueryAlignment::Offset(3),
        QueryAlignment::EndOfValidKeys,
    ]
    .into_iter()
    .enumerate()
    {
        let mut scenario = Scenario::new((2, 3, 1), (5, 40), (4, 3));
        scenario.settings.causal = true;
        scenario.settings.alignment = alignment;
        scenario.key_lengths = Some(vec![40, 19]);
        check_fused_backward(&scenario, 420 + seed as u64);
    }
    // Windows, softcap with a large scale, additive and boolean masks that broadcast, with
    // a fully masked row (row 1 of the additive mask).
    let (lq, lk) = (9, 37);
    let mut additive = vec![0.0f32; lq * lk];
    let mut rng = Rng::new(430);
    for (n, value) in additive.iter_mut().enumerate() {
        *value = if n / lk == 1 || (n % lk) / 16 == 1 || rng.below(4) == 0 {
            f32::NEG_INFINITY
        } else {
            rng.uniform(-2.0, 2.0)
        };
    }
    let boolean: Vec<f32> = (0..2 * lk)
        .map(|n| ((n / 7) % 3 != 0) as u32 as f32)
        .collect();
    let masks = [
        (MaskKind::Additive, additive, vec![lq, lk]),
        (MaskKind::Boolean, boolean, vec![2, 1, 1, lk]),
    ];
    for (seed, (kind, values, shape)) in masks.into_iter().enumerate() {
        let mut scenario = Scenario::new((2, 4, 2), (lq, lk), (8, 5));
        scenario.settings.scale = Some(2.0);
        scenario.settings.softcap = Some(0.5);
        scenario.settings.window_left = Some(20);
        scenario.settings.window_right = Some(3);
        scenario.settings.alignment = QueryAlignment::Offset(4);
        scenario.mask = Some((kind, values, shape));
        check_fused_backward(&scenario, 440 + seed as u64);
    }
    // Heads and values wider than one chunk of 64 columns; zero-sized axes.
    check_fused_backward(&Scenario::new((1, 2, 1), (3, 66), (65, 66)), 450);
    check_fused_backward(&Scenario::new((1, 2, 1), (5, 6), (130, 3)), 451);
    check_fused_backward(&Scenario::new((1, 2, 2), (7, 7), (3, 0)), 452);
    check_fused_backward(&Scenario::new((1, 2, 2), (7, 7), (0, 3)), 453);
    check_fused_backward(&Scenario::new((2, 2, 2), (3, 0), (4, 5)), 454);
    check_fused_backward(&Scenario::new((2, 2, 2), (0, 3), (4, 5)), 455);
}

#[test]
fn results_are_deterministic() {
    let mut scenario = Scenario::new((2, 4, 2), (33, 31), (7, 5));
    scenario.settings.causal = true;
    let inputs = scenario.inputs(95);
    let uploaded = scenario.upload(&inputs);
    let options = scenario.options(&uploaded);
    let run = || {
        let forward = attention(&uploaded.q, &uploaded.k, &uploaded.v, &options).unwrap();
        let grads = attention_backward(
            &uploaded.q,
            &uploaded.k,
            &uploaded.v,
            &forward.probs,
            &forward.output,
            &options,
        )
        .unwrap();
        let fused = fused_attention(&uploaded.q, &uploaded.k, &uploaded.v, &options).unwrap();
        let fused_grads = fused_attention_backward(
            (&uploaded.q, &uploaded.k, &uploaded.v),
            &fused,
            &forward.output,
            &options,
        )
        .unwrap();
        [
            forward.output,
            grads.query,
            grads.key,
            grads.value,
            fused_grads.query,
            fused_grads.key,
            fused_grads.value,
        ]
        .map(|t| {
            t.to_vec()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<u32>>()
        })
    };
    assert_eq!(run(), run());
}

#[test]
fn zero_sized_axes() {
    // No keys: every row is fully masked, so O = 0.
    let scenario = Scenario::new((2, 2, 2), (3, 0), (4, 5));
    let inputs = scenario.inputs(1);
    let uploaded = scenario.upload(&inputs);
    let forward = attention(
        &uploaded.q,
        &uploaded.k,
        &uploaded.v,
        &AttentionOptions::default(),
    )
    .unwrap();
    assert_eq!(forward.probs.shape(), &[2, 2, 3, 0]);
    assert_eq!(forward.output.to_vec().unwrap(), vec![0.0; 60]);
    // No queries: empty results.
    let scenario = Scenario::new((2, 2, 2), (0, 3), (4, 5));
    let uploaded = scenario.upload(&scenario.inputs(2));
    let forward = attention(
        &uploaded.q,
        &uploaded.k,
        &uploaded.v,
        &AttentionOptions::default(),
    )
    .unwrap();
    assert_eq!(forward.output.shape(), &[2, 2, 0, 5]);
    // D = 0: every score is 0, so P is uniform.
    check_forward(&Scenario::new((1, 2, 2), (3, 4), (0, 2)), 3);
}

#[test]
fn bad_arguments_are_errors_naming_the_values() {
    let scenario = Scenario::new((2, 4, 2), (3, 5), (4, 6));
    let inputs = scenario.inputs(1);
    let up = scenario.upload(&inputs);
    let none = AttentionOptions::default();
    let err = |result: shadergrad::Result<shadergrad::AttentionForward>| {
        result.map(|_| ()).unwrap_err().to_string()
    };

    let flat = up.q.reshape(&[2, 4, 12]).unwrap();
    let message = err(attention(&flat, &up.k, &up.v, &none));
    assert!(
        message.contains("[2, 4, 12]") && message.contains("4 axes"),
        "{message}"
    );

    let other_batch = upload(&vec![0.0; 60], &[1, 2, 5, 6]);
    let message = err(attention(&up.q, &up.k, &other_batch, &none));
    assert!(
        message.contains("batch size") && message.contains("2, 2 and 1"),
        "{message}"
    );

    let other_dim = upload(&vec![0.0; 60], &[2, 2, 5, 3]);
    let message = err(attention(&up.q, &other_dim, &up.v, &none));
    assert!(message.contains("head size D, got 4 and 3"), "{message}");

    let short_v = upload(&[0.0; 48], &[2, 2, 2, 6]);
    let message = err(attention(&up.q, &up.k, &short_v, &none));
    assert!(message.contains("sequence length"), "{message}");

    let three_heads = upload(&vec![0.0; 120], &[2, 3, 5, 4]);
    let three_heads_v = upload(&vec![0.0; 180], &[2, 3, 5, 6]);
    let message = err(attention(&up.q, &three_heads, &three_heads_v, &none));
    assert!(
        message.contains("3 key/value heads must divide the 4"),
        "{message}"
    );

    let bad_mask = upload(&[0.0; 4], &[4]);
    let message = err(attention(
        &up.q,
        &up.k,
        &up.v,
        &none.mask(MaskKind::Additive, &bad_mask),
    ));
    assert!(
        message.contains("[4]") && message.contains("[2, 4, 3, 5]"),
        "{message}"
    );

    let bad_lengths = Indices::from_slice(gpu(), &[1, 2, 3], &[3]).unwrap();
    let message = err(attention(
        &up.q,
        &up.k,
        &up.v,
        &none.key_lengths(&bad_lengths),
    ));
    assert!(
        message.contains("[3]") && message.contains("one length per batch: [2]"),
        "{message}"
    );

    let message = err(attention(&up.q, &up.k, &up.v, &none.scale(f32::NAN)));
    assert!(
        message.contains("scale must be finite, got NaN"),
        "{message}"
    );
    let message = err(attention(&up.q, &up.k, &up.v, &none.softcap(0.0)));
    assert!(
        message.contains("softcap must be positive and finite, got 0"),
        "{message}"
    );
    let message = err(attention(
        &up.q,
        &up.k,
        &up.v,
        &none.window(Some(MAX_REACH + 1), None),
    ));
    assert!(
        message.contains(&format!("left window {}", MAX_REACH + 1)),
        "{message}"
    );
    let far = none.alignment(QueryAlignment::Offset(-(MAX_REACH as i32) - 1));
    let message = err(attention(&up.q, &up.k, &up.v, &far));
    assert!(message.contains("query offset"), "{message}");

    let forward = attention(&up.q, &up.k, &up.v, &none).unwrap();
    let message = attention_backward(&up.q, &up.k, &up.v, &forward.probs, &up.q, &none)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("output gradient must have shape [2, 4, 3, 6]"),
        "{message}"
    );
    let message = attention_backward(&up.q, &up.k, &up.v, &forward.output, &forward.output, &none)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("probs must have shape [2, 4, 3, 5]"),
        "{message}"
    );
}

#[test]
fn launchers_and_devices_are_checked() {
    let scenario = Scenario::new((1, 2, 2), (3, 4), (2, 2));
    let up = scenario.upload(&scenario.inputs(3));
    let none = AttentionOptions::default();
    let dims = scenario.dims;
    let scores = upload(&[0.0; 24], &[1, 2, 3, 4]);
    let wrong = upload(&[0.0; 24], &[1, 2, 4, 3]);
    let message = masked_softmax_dispatch(&scores, &wrong, &dims, &none, false)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("[1, 2, 4, 3]") && message.contains("must be [B, H, Lq, Lk]"),
        "{message}"
    );
    let message = masked_softmax_backward_dispatch(&scores, &wrong, None, &scores, 4)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(message.contains("must share one shape"), "{message}");
    let message = masked_softmax_backward_dispatch(&scores, &scores, None, &scores, 3)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(message.contains("the 3 keys"), "{message}");

    // Tensors of another device (a second device on the same adapter).
    let other = shadergrad::Gpu::default_adapter().unwrap();
    let foreign_k = Tensor::from_slice(&other, &[0.0; 16], &[1, 2, 4, 2]).unwrap();
    let message = attention(&up.q, &foreign_k, &up.v, &none)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(message.contains("different devices"), "{message}");
    let foreign_lengths = Indices::from_slice(&other, &[1], &[1]).unwrap();
    let message = attention(&up.q, &up.k, &up.v, &none.key_lengths(&foreign_lengths))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(message.contains("attention key lengths"), "{message}");
}
