//! The rules of `Attention` (`kernels::attention`) and of its two backward ops:
//! `AttentionGrad` from the probabilities the unfused forward kept, `FusedAttentionGrad`
//! from the log-sum-exp the fused forward kept.

use crate::error::{Error, Result};
use crate::kernels::attention::{
    attention_backward_dispatches_into, attention_dispatches_into,
    fused_attention_backward_dispatches_into, fused_attention_dispatch, AttentionDims,
    AttentionForward, AttentionGradients, AttentionMask, AttentionOptions, AttentionSettings,
    AttentionSettingsBuilder, AttentionVariant, FusedAttention, MaskKind, Recording,
};
use crate::kernels::broadcast_shapes;

use super::super::{mismatch, DType, Graph, Var};
use super::{check_inputs, NodeGradient, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// Scaled dot-product attention, softmax(q·kᵀ·scale + masks)·v: q [B, H, Lq, D],
    /// k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv] with Hkv dividing H (each key/value head serves
    /// a group of query heads: grouped-query attention), result [B, H, Lq, Dv]. `scale`
    /// defaults to 1/√D. The masks: `key_lengths` (u32 \[B\], fed) masks each batch's keys past
    /// its length (lengths above Lk mean Lk), `causal` the keys after each query's position,
    /// the queries being the last Lq of the Lk positions (query i sees keys up to i when
    /// Lq = Lk). A query whose keys are all masked gets 0. [`Graph::attention_with`] takes
    /// the other options: a mask tensor, a sliding window, a softcap.
    pub fn attention(
        &mut self,
        q: Var,
        k: Var,
        v: Var,
        key_lengths: Option<Var>,
        causal: bool,
        scale: Option<f32>,
    ) -> Result<Var> {
        let mut spec = AttentionSpec::default().causal(causal);
        spec.settings.scale = scale;
        spec.key_lengths = key_lengths;
        self.attention_with(q, k, v, &spec)
    }

    /// [`Graph::attention`] with every option of the attention kernels (see
    /// [`AttentionSpec`]). The mask has no gradient: it must not depend on a parameter.
    pub fn attention_with(&mut self, q: Var, k: Var, v: Var, spec: &AttentionSpec) -> Result<Var> {
        let mut given = vec![q, k, v];
        given.extend(spec.key_lengths);
        given.extend(spec.mask.map(|(_, mask)| mask));
        self.check_each("attention", &given)?;
        let mut inputs = vec![q, k, v];
        inputs.extend(spec.key_lengths);
        if let Some((_, mask)) = spec.mask {
            if self.values[mask.index].needs_grad {
                return Err(Error::invalid(
                    "attention",
                    format!(
                        "the mask (shape {:?}) depends on a parameter, but attention gives \
                         its mask no gradient: build a learned score bias from matmul, add \
                         and softmax instead",
                        self.shape(mask)
                    ),
                ));
            }
            inputs.push(mask);
        }
        let dims = AttentionDims::from_shapes(self.shape(q), self.shape(k), self.shape(v))?;
        let variant = spec
            .variant
            .unwrap_or_else(|| AttentionVariant::choose_for_training(&self.gpu, &dims));
        let op = Op::Attention {
            settings: spec.settings,
            key_lengths: spec.key_lengths.is_some(),
            mask: spec.mask.map(|(kind, _)| kind),
            variant,
        };
        Ok(self.push(op, &inputs)?[0])
    }
}

/// The options of [`Graph::attention_with`], none set by default; chain the setters:
/// `AttentionSpec::default().causal(true).softcap(30.0).mask(MaskKind::Additive, bias)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AttentionSpec {
    /// The scale, causal masking, where the queries sit among the keys (by default the last
    /// Lq of the Lk positions), the sliding window and the softcap.
    pub settings: AttentionSettings,
    /// u32 \[B\], fed: each batch's keys past its length are masked.
    pub key_lengths: Option<Var>,
    /// An f32 value broadcastable to the scores [B, H, Lq, Lk]: added to the (softcapped)
    /// scores, −∞ masking, or boolean as 0/1 (0 masks). Not differentiable.
    pub mask: Option<(MaskKind, Var)>,
    /// Forces the unfused kernels (which keep P for the backward) or the fused ones (which
    /// keep each row's log-sum-exp and recompute P); `None`:
    /// [`AttentionVariant::choose_for_training`].
    pub variant: Option<AttentionVariant>,
}

impl AttentionSettingsBuilder for AttentionSpec {
    fn settings_mut(&mut self) -> &mut AttentionSettings {
        &mut self.settings
    }
}

impl AttentionSpec {
    /// Masks each batch's keys past its length: `lengths` is a u32 value `[B]`, fed.
    pub fn key_lengths(mut self, lengths: Var) -> Self {
        self.key_lengths = Some(lengths);
        self
    }

    /// Adds a mask value of `kind`, broadcastable to the scores `[B, H, Lq, Lk]`.
    pub fn mask(mut self, kind: MaskKind, values: Var) -> Self {
        self.mask = Some((kind, values));
        self
    }

    /// Forces the fused or the unfused kernels, forward and backward.
    pub fn variant(mut self, variant: AttentionVariant) -> Self {
        self.variant = Some(variant);
        self
    }
}

/// Outputs O and what the backward needs: P (`Unfused`) or each row's log-sum-exp
/// (`Fused`).
pub(super) fn infer_attention(
    op: &'static str,
    settings: &AttentionSettings,
    key_lengths: bool,
    mask: Option<MaskKind>,
    variant: AttentionVariant,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(
        op,
        inputs,
        &mask_types(vec![DType::F32; 3], key_lengths, mask),
    )?;
    let dims = AttentionDims::from_shapes(inputs[0].0, inputs[1].0, inputs[2].0)?;
    check_attention_masks(op, &dims, settings, key_lengths, mask, &inputs[3..])?;
    let saved = match variant {
        AttentionVariant::Unfused => dims.scores_shape().to_vec(),
        AttentionVariant::Fused => vec![dims.batch, dims.heads, dims.q_len],
    };
    Ok(vec![
        (dims.output_shape().to_vec(), DType::F32),
        (saved, DType::F32),
    ])
}

/// dq, dk and dv by the backward op of the forward's variant; the key lengths and the mask,
/// if any, have no gradient.
pub(super) fn backward_attention(
    g: &mut Graph,
    node: NodeGradient,
    settings: &AttentionSettings,
    key_lengths: bool,
    mask: Option<MaskKind>,
    variant: AttentionVariant,
) -> Result<Vec<Option<Var>>> {
    let NodeGradient {
        inputs,
        outputs,
        dy,
    } = node;
    let (q, k, v, saved) = (inputs[0], inputs[1], inputs[2], outputs[1]);
    let grads = match variant {
        AttentionVariant::Unfused => {
            let grad = Op::AttentionGrad {
                scale: settings.scale,
                softcap: settings.softcap,
            };
            g.push(grad, &[q, k, v, saved, dy])?
        }
        AttentionVariant::Fused => {
            let grad = Op::FusedAttentionGrad {
                settings: *settings,
                key_lengths,
                mask,
            };
            let mut operands = vec![q, k, v, outputs[0], saved, dy];
            operands.extend_from_slice(&inputs[3..]);
            g.push(grad, &operands)?
        }
    };
    let mut grads: Vec<Option<Var>> = grads.into_iter().map(Some).collect();
    grads.resize(inputs.len(), None);
    Ok(grads)
}

pub(super) fn record_attention(
    settings: &AttentionSettings,
    key_lengths: bool,
    mask: Option<MaskKind>,
    variant: AttentionVariant,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let options = attention_options(settings, key_lengths, mask, &inputs[3..]);
    let [q, k, v] = [0, 1, 2].map(|i| inputs[i].f32());
    let mut recording = Recording::default();
    match variant {
        AttentionVariant::Unfused => {
            let forward = AttentionForward {
                output: outputs[0].f32().clone(),
                probs: outputs[1].f32().clone(),
            };
            attention_dispatches_into((q, k, v), &options, &forward, &mut recording)?;
        }
        AttentionVariant::Fused => {
            let forward = FusedAttention {
                output: outputs[0].f32().clone(),
                log_sum_exp: outputs[1].f32().clone(),
            };
            recording
                .dispatches
                .extend(fused_attention_dispatch((q, k, v), &options, &forward)?);
        }
    }
    Ok(recording.into())
}

/// Outputs dq, dk and dv from q, k, v, P and dO.
pub(super) fn infer_attention_grad(
    op: &'static str,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32; 5])?;
    let (q, k, v) = (inputs[0].0, inputs[1].0, inputs[2].0);
    let dims = AttentionDims::from_shapes(q, k, v)?;
    let (probs, dy) = (inputs[3].0, inputs[4].0);
    if probs != dims.scores_shape() || dy != dims.output_shape() {
        return Err(mismatch(
            op,
            probs,
            dy,
            format!(
                "P and dO must be {:?} and {:?}",
                dims.scores_shape(),
                dims.output_shape()
            ),
        ));
    }
    Ok([q, k, v]
        .into_iter()
        .map(|shape| (shape.to_vec(), DType::F32))
        .collect())
}

/// The masks acted through P (0 at masked keys): only the scale and the softcap act again.
pub(super) fn record_attention_grad(
    scale: Option<f32>,
    softcap: Option<f32>,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let options = AttentionOptions {
        settings: AttentionSettings {
            scale,
            softcap,
            ..AttentionSettings::default()
        },
        ..AttentionOptions::default()
    };
    let grads = attention_gradients(outputs);
    let [q, k, v, probs, dy] = [0, 1, 2, 3, 4].map(|i| inputs[i].f32());
    let mut recording = Recording::default();
    attention_backward_dispatches_into((q, k, v), probs, dy, &options, &grads, &mut recording)?;
    Ok(recording.into())
}

/// Outputs dq, dk and dv from q, k, v, O, the log-sum-exp, dO and the forward's masks.
pub(super) fn infer_fused_attention_grad(
    op: &'static str,
    settings: &AttentionSettings,
    key_lengths: bool,
    mask: Option<MaskKind>,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(
        op,
        inputs,
        &mask_types(vec![DType::F32; 6], key_lengths, mask),
    )?;
    let (q, k, v) = (inputs[0].0, inputs[1].0, inputs[2].0);
    let dims = AttentionDims::from_shapes(q, k, v)?;
    check_attention_masks(op, &dims, settings, key_lengths, mask, &inputs[6..])?;
    let (output, log_sum_exp, dy) = (inputs[3].0, inputs[4].0, inputs[5].0);
    let rows = [dims.batch, dims.heads, dims.q_len];
    if output != dims.output_shape() || dy != output || log_sum_exp != rows {
        return Err(mismatch(
            op,
            output,
            log_sum_exp,
            format!(
                "O and dO must be {:?} and the log-sum-exp {rows:?}",
                dims.output_shape()
            ),
        ));
    }
    Ok([q, k, v]
        .into_iter()
        .map(|shape| (shape.to_vec(), DType::F32))
        .collect())
}

/// P is recomputed, so every mask acts again.
pub(super) fn record_fused_attention_grad(
    settings: &AttentionSettings,
    key_lengths: bool,
    mask: Option<MaskKind>,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let options = attention_options(settings, key_lengths, mask, &inputs[6..]);
    let forward = FusedAttention {
        output: inputs[3].f32().clone(),
        log_sum_exp: inputs[4].f32().clone(),
    };
    let grads = attention_gradients(outputs);
    let [q, k, v, dy] = [0, 1, 2, 5].map(|i| inputs[i].f32());
    let mut recording = Recording::default();
    fused_attention_backward_dispatches_into(
        (q, k, v),
        &forward,
        dy,
        &options,
        &grads,
        &mut recording,
    )?;
    Ok(recording.into())
}

/// The types of attention's operands: `fixed`, then the u32 key lengths and the f32 mask
/// where the op has them.
fn mask_types(mut fixed: Vec<DType>, key_lengths: bool, mask: Option<MaskKind>) -> Vec<DType> {
    if key_lengths {
        fixed.push(DType::U32);
    }
    if mask.is_some() {
        fixed.push(DType::F32);
    }
    fixed
}

/// Checks attention's settings and its optional operands after Q, K and V (and, for the
/// fused backward, O, the log-sum-exp and dO): the key lengths [B], then a mask that
/// broadcasts to the scores [B, H, Lq, Lk].
fn check_attention_masks(
    op: &'static str,
    dims: &AttentionDims,
    settings: &AttentionSettings,
    key_lengths: bool,
    mask: Option<MaskKind>,
    operands: &[(&[usize], DType)],
) -> Result<()> {
    settings.check()?;
    if key_lengths && operands[0].0 != [dims.batch] {
        return Err(mismatch(
            op,
            operands[0].0,
            &[dims.batch],
            format!("the key lengths must be [{}], one per batch", dims.batch),
        ));
    }
    if mask.is_some() {
        let (mask, scores) = (operands[operands.len() - 1].0, dims.scores_shape());
        if broadcast_shapes(op, mask, &scores).ok().as_deref() != Some(&scores[..]) {
            return Err(mismatch(
                op,
                mask,
                &scores,
                "the mask must broadcast to the scores' shape [B, H, Lq, Lk]".into(),
            ));
        }
    }
    Ok(())
}

/// Attention's options over a plan's operands: the key lengths and the mask follow the
/// fixed operands in `operands`, in that order, where the op has them.
fn attention_options<'a>(
    settings: &AttentionSettings,
    key_lengths: bool,
    mask: Option<MaskKind>,
    operands: &'a [Operand],
) -> AttentionOptions<'a> {
    AttentionOptions {
        settings: *settings,
        key_lengths: key_lengths.then(|| operands[0].u32()),
        mask: mask.map(|kind| AttentionMask {
            kind,
            values: operands[operands.len() - 1].f32(),
        }),
    }
}

/// The backward ops' outputs dq, dk and dv.
fn attention_gradients(outputs: &[Operand]) -> AttentionGradients {
    AttentionGradients {
        query: outputs[0].f32().clone(),
        key: outputs[1].f32().clone(),
        value: outputs[2].f32().clone(),
    }
}

impl From<Recording> for Recorded {
    /// An eager call's recording: its intermediates live as long as the plan.
    fn from(recording: Recording) -> Recorded {
        Recorded {
            dispatches: recording.dispatches,
            scratch: recording.temporaries,
            groupings: Vec::new(),
        }
    }
}
