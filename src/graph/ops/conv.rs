//! The rules of the convolutions and the poolings (`kernels::conv`): `Conv` and its three
//! gradients `ConvInputGrad`, `ConvWeightGrad` and `ConvBiasGrad` (one op each, so that
//! compile drops those nobody needs), `MaxPool1d` and `MaxOverTime` and their gradients.

use crate::error::{Error, Result};
use crate::kernels::conv::{
    conv_bias_grad_dispatch, conv_forward_dispatch, conv_input_grad_dispatch,
    conv_weight_grad_dispatch, max_pool_backward_dispatch, max_pool_dispatch,
    output_shape as conv_output_shape, Conv1d, Conv2d, ConvGeometry, MaxPool1d,
};

use super::super::{mismatch, DType, Graph, Var};
use super::{check_inputs, f32_output, NodeGradient, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// The n-gram window of a text CNN: x [N, C, L] (C the embedding width) convolved with
    /// `weight` [O, C, k], plus `bias` \[O\] if given: [N, O, L_out] with
    /// L_out = (L + pad_left + pad_right − k) / stride + 1.
    pub fn conv1d(
        &mut self,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        options: Conv1d,
    ) -> Result<Var> {
        self.convolve(ConvLayout::Sequence, x, weight, bias, options.into())
    }

    /// The convolution of images x [N, C, H, W] with `weight` [O, C, kh, kw], plus `bias`
    /// (O values) if given: [N, O, OH, OW] with
    /// OH = (H + pad_top + pad_bottom − kh) / stride_h + 1 and OW likewise.
    pub fn conv2d(
        &mut self,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        options: Conv2d,
    ) -> Result<Var> {
        self.convolve(ConvLayout::Image, x, weight, bias, options)
    }

    fn convolve(
        &mut self,
        layout: ConvLayout,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        options: Conv2d,
    ) -> Result<Var> {
        let mut inputs = vec![x, weight];
        inputs.extend(bias);
        let op = Op::Conv {
            layout,
            options,
            bias: bias.is_some(),
        };
        self.push_one(op, &inputs)
    }

    /// The maximum of each channel over time, x [N, C, L] → [N, C]: the pooling of a text
    /// CNN (the first maximum wins a tie, a NaN propagates).
    pub fn max_over_time(&mut self, x: Var) -> Result<Var> {
        Ok(self.max_over_time_with_positions(x)?.0)
    }

    /// [`Graph::max_over_time`] and the position in 0..L of each maximum (u32 [N, C], which
    /// [`Plan::read_indices`] reads when compiled as an output).
    ///
    /// [`Plan::read_indices`]: crate::graph::Plan::read_indices
    pub fn max_over_time_with_positions(&mut self, x: Var) -> Result<(Var, Var)> {
        let outputs = self.push(Op::MaxOverTime, &[x])?;
        Ok((outputs[0], outputs[1]))
    }

    /// Max pooling along the last axis, x [N, C, L] → [N, C, L_out] with
    /// L_out = (L + pad_left + pad_right − kernel) / stride + 1; padding never wins (the
    /// first maximum wins a tie, a NaN propagates). Where windows overlap, an input that is
    /// the maximum of several gets the sum of their gradients.
    pub fn max_pool1d(&mut self, x: Var, options: MaxPool1d) -> Result<Var> {
        Ok(self.max_pool1d_with_positions(x, options)?.0)
    }

    /// [`Graph::max_pool1d`] and the position in 0..L of each maximum (u32 [N, C, L_out],
    /// which [`Plan::read_indices`] reads when compiled as an output).
    ///
    /// [`Plan::read_indices`]: crate::graph::Plan::read_indices
    pub fn max_pool1d_with_positions(&mut self, x: Var, options: MaxPool1d) -> Result<(Var, Var)> {
        let outputs = self.push(Op::MaxPool1d { options }, &[x])?;
        Ok((outputs[0], outputs[1]))
    }
}

/// What a convolution slides over; a sequence is an image of height 1 to the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvLayout {
    /// x [N, C, L] (`conv1d`).
    Sequence,
    /// x [N, C, H, W] (`conv2d`).
    Image,
}

impl ConvLayout {
    pub(super) fn name(self) -> &'static str {
        match self {
            ConvLayout::Sequence => "conv1d",
            ConvLayout::Image => "conv2d",
        }
    }

    fn rank(self) -> usize {
        match self {
            ConvLayout::Sequence => 3,
            ConvLayout::Image => 4,
        }
    }
}

pub(super) fn infer_conv(
    op: &'static str,
    layout: ConvLayout,
    options: Conv2d,
    bias: bool,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &vec![DType::F32; 2 + usize::from(bias)])?;
    let (x, weight) = (inputs[0].0, inputs[1].0);
    let geometry = conv_geometry(op, layout, x, weight, options)?;
    let out_channels = geometry.out_channels;
    if bias && inputs[2].0 != [out_channels] {
        return Err(mismatch(
            op,
            inputs[2].0,
            weight,
            format!("the bias must be [{out_channels}], one value per output channel"),
        ));
    }
    f32_output(conv_output_shape(x.len(), &geometry))
}

pub(super) fn backward_conv(
    g: &mut Graph,
    node: NodeGradient,
    options: Conv2d,
    bias: bool,
) -> Result<Vec<Option<Var>>> {
    let (x, weight, dy) = (node.inputs[0], node.inputs[1], node.dy);
    let size = g.shape(x)[2..].to_vec();
    let kernel = g.shape(weight)[2..].to_vec();
    let mut grads = vec![
        Some(g.push(Op::ConvInputGrad { options, size }, &[dy, weight])?[0]),
        Some(g.push(Op::ConvWeightGrad { options, kernel }, &[x, dy])?[0]),
    ];
    if bias {
        grads.push(Some(g.push(Op::ConvBiasGrad, &[dy])?[0]));
    }
    Ok(grads)
}

/// The direct kernel: the eager call's default (see `ConvVariant`).
pub(super) fn record_conv(
    op: &'static str,
    options: Conv2d,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (x, weight, y) = (inputs[0].f32(), inputs[1].f32(), outputs[0].f32());
    let geometry = ConvGeometry::new(op, x.shape(), weight.shape(), options)?;
    let bias = inputs.get(2).map(Operand::f32);
    Ok(conv_forward_dispatch(x, weight, bias, y, &geometry)?.into())
}

/// Outputs dx [N, C, size…] from dy and the weight.
pub(super) fn infer_conv_input_grad(
    op: &'static str,
    options: Conv2d,
    size: &[usize],
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::F32])?;
    let (dy, weight) = (inputs[0].0, inputs[1].0);
    let mut x_shape = vec![
        dy.first().copied().unwrap_or(0),
        weight.get(1).copied().unwrap_or(0),
    ];
    x_shape.extend(size);
    let geometry = ConvGeometry::new(op, &x_shape, weight, options)?;
    check_conv_dy(op, &geometry, dy)?;
    f32_output(x_shape)
}

pub(super) fn record_conv_input_grad(
    op: &'static str,
    options: Conv2d,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (dy, weight, dx) = (inputs[0].f32(), inputs[1].f32(), outputs[0].f32());
    let geometry = ConvGeometry::new(op, dx.shape(), weight.shape(), options)?;
    Ok(conv_input_grad_dispatch(dy, weight, dx, &geometry)?.into())
}

/// Outputs dw [O, C, kernel…] from x and dy.
pub(super) fn infer_conv_weight_grad(
    op: &'static str,
    options: Conv2d,
    kernel: &[usize],
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::F32])?;
    let (x, dy) = (inputs[0].0, inputs[1].0);
    let mut weight = vec![
        dy.get(1).copied().unwrap_or(0),
        x.get(1).copied().unwrap_or(0),
    ];
    weight.extend(kernel);
    let geometry = ConvGeometry::new(op, x, &weight, options)?;
    check_conv_dy(op, &geometry, dy)?;
    f32_output(weight)
}

pub(super) fn record_conv_weight_grad(
    op: &'static str,
    options: Conv2d,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (x, dy, dw) = (inputs[0].f32(), inputs[1].f32(), outputs[0].f32());
    let geometry = ConvGeometry::new(op, x.shape(), dw.shape(), options)?;
    Ok(conv_weight_grad_dispatch(x, dy, dw, &geometry)?.into())
}

/// Outputs \[O\] from dy [N, O, positions…].
pub(super) fn infer_conv_bias_grad(
    op: &'static str,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let geometry = bias_grad_geometry(op, inputs[0].0)?;
    f32_output(vec![geometry.out_channels])
}

pub(super) fn record_conv_bias_grad(
    op: &'static str,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (dy, dbias) = (inputs[0].f32(), outputs[0].f32());
    let geometry = bias_grad_geometry(op, dy.shape())?;
    Ok(conv_bias_grad_dispatch(dy, dbias, &geometry)?.into())
}

/// Outputs the maxima and their positions (u32, kept for the backward).
pub(super) fn infer_max_pool1d(
    op: &'static str,
    options: &MaxPool1d,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let x = inputs[0].0;
    let &[n, c, len] = x else {
        return Err(Error::invalid(
            op,
            format!("the input must be [N, C, L] (rank 3), got {x:?}"),
        ));
    };
    let pooled = vec![n, c, options.out_len(op, len)?];
    Ok(vec![(pooled.clone(), DType::F32), (pooled, DType::U32)])
}

/// `MaxPool1dGrad` of dy by the saved positions.
pub(super) fn backward_max_pool1d(
    g: &mut Graph,
    node: NodeGradient,
    options: MaxPool1d,
) -> Result<Vec<Option<Var>>> {
    let positions = node.outputs[1];
    let grad = Op::MaxPool1dGrad {
        options,
        len: g.shape(node.inputs[0])[2],
    };
    Ok(vec![Some(g.push(grad, &[node.dy, positions])?[0])])
}

pub(super) fn record_max_pool1d(
    options: &MaxPool1d,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (x, y, positions) = (inputs[0].f32(), outputs[0].f32(), outputs[1].u32());
    Ok(max_pool_dispatch(x, y, positions, x.shape()[2], options)?.into())
}

pub(super) fn infer_max_pool1d_grad(
    op: &'static str,
    options: &MaxPool1d,
    len: usize,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::U32])?;
    let (dy, positions) = (inputs[0].0, inputs[1].0);
    let out_len = options.out_len(op, len)?;
    if dy.len() != 3 || positions != dy || dy[2] != out_len {
        return Err(mismatch(
            op,
            dy,
            positions,
            format!(
                "dy and the positions must be one [N, C, {out_len}] shape: {len} steps pool \
                 to {out_len} with {options:?}"
            ),
        ));
    }
    f32_output(vec![dy[0], dy[1], len])
}

pub(super) fn record_max_pool1d_grad(
    options: &MaxPool1d,
    len: usize,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (dy, positions, dx) = (inputs[0].f32(), inputs[1].u32(), outputs[0].f32());
    Ok(max_pool_backward_dispatch(dy, positions, dx, len, options)?.into())
}

/// Outputs the maxima [N, C] and their positions (u32 [N, C], kept for the backward).
pub(super) fn infer_max_over_time(
    op: &'static str,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let x = inputs[0].0;
    let &[n, c, len] = x else {
        return Err(Error::invalid(
            op,
            format!("the input must be [N, C, L] (rank 3), got {x:?}"),
        ));
    };
    if len == 0 {
        return Err(Error::ZeroSized {
            op,
            shape: x.to_vec(),
            why: "the maximum over no time steps has no value and no position",
        });
    }
    Ok(vec![(vec![n, c], DType::F32), (vec![n, c], DType::U32)])
}

/// `MaxOverTimeGrad` of dy by the saved positions.
pub(super) fn backward_max_over_time(
    g: &mut Graph,
    node: NodeGradient,
) -> Result<Vec<Option<Var>>> {
    let positions = node.outputs[1];
    let len = g.shape(node.inputs[0])[2];
    Ok(vec![Some(
        g.push(Op::MaxOverTimeGrad { len }, &[node.dy, positions])?[0],
    )])
}

/// The max pooling whose one window spans the sequence.
pub(super) fn record_max_over_time(inputs: &[Operand], outputs: &[Operand]) -> Result<Recorded> {
    let (x, y, positions) = (inputs[0].f32(), outputs[0].f32(), outputs[1].u32());
    let len = x.shape()[2];
    Ok(max_pool_dispatch(x, y, positions, len, &MaxPool1d::new(len))?.into())
}

pub(super) fn infer_max_over_time_grad(
    op: &'static str,
    len: usize,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::U32])?;
    let (dy, positions) = (inputs[0].0, inputs[1].0);
    if dy.len() != 2 || positions != dy || len == 0 {
        return Err(mismatch(
            op,
            dy,
            positions,
            format!("dy and the positions must be one [N, C] shape, over {len} > 0 steps"),
        ));
    }
    f32_output(vec![dy[0], dy[1], len])
}

pub(super) fn record_max_over_time_grad(
    len: usize,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (dy, positions, dx) = (inputs[0].f32(), inputs[1].u32(), outputs[0].f32());
    let window = MaxPool1d::new(len);
    Ok(max_pool_backward_dispatch(dy, positions, dx, len, &window)?.into())
}

/// The checked geometry of a convolution of x by a weight of `layout`.
fn conv_geometry(
    op: &'static str,
    layout: ConvLayout,
    x: &[usize],
    weight: &[usize],
    options: Conv2d,
) -> Result<ConvGeometry> {
    if x.len() != layout.rank() || weight.len() != layout.rank() {
        let expected = match layout {
            ConvLayout::Sequence => "the input must be [N, C, L] and the weight [O, C, k]",
            ConvLayout::Image => "the input must be [N, C, H, W] and the weight [O, C, kh, kw]",
        };
        return Err(mismatch(op, x, weight, expected.into()));
    }
    ConvGeometry::new(op, x, weight, options)
}

/// Checks that dy has the shape of the convolution's output (of dy's rank).
fn check_conv_dy(op: &'static str, geometry: &ConvGeometry, dy: &[usize]) -> Result<()> {
    let expected = conv_output_shape(dy.len(), geometry);
    if dy != expected {
        return Err(mismatch(
            op,
            dy,
            &expected,
            "dy must have the shape of the convolution's output".into(),
        ));
    }
    Ok(())
}

/// The bias gradient sums dy [N, O, positions…] over N and the positions, and its kernel
/// reads only the batch, output channels and output positions of a geometry: here those of
/// a one-tap convolution over one channel, which keeps the positions.
fn bias_grad_geometry(op: &'static str, dy: &[usize]) -> Result<ConvGeometry> {
    let Some((&[n, o], positions)) = dy.split_first_chunk() else {
        return Err(Error::invalid(
            op,
            format!("dy must be [N, O, L_out] or [N, O, OH, OW], got {dy:?}"),
        ));
    };
    let mut one_channel = vec![n, 1];
    one_channel.extend(positions);
    let mut one_tap = vec![o, 1];
    one_tap.extend(positions.iter().map(|_| 1));
    ConvGeometry::new(op, &one_channel, &one_tap, Conv2d::default())
}
