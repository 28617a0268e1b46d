//! `cargo bench --bench conv`: the n-gram window of a text CNN (N=32 sentences of L=128
//! words, C=64-wide embeddings, O=100 filters of k=3, 4 and 5 words, no padding) forward
//! with each variant and backward per gradient, in GFLOP/s; a small image convolution
//! forward with each variant; then max-over-time pooling of the k=3 window's output and
//! the pooling's backward, in GB/s.
//!
//! Each figure is the median of several runs after a warm-up, timed by GPU timestamps
//! where the adapter has them (the wall clock otherwise, which includes submission).

mod common;

use common::{print_adapter, print_header, print_row, time_dispatches};
use shadergrad::kernels::conv::{
    conv_bias_grad_dispatch, conv_forward_dispatch, conv_im2col_gemm_dispatches,
    conv_input_grad_dispatch, conv_weight_grad_dispatch, max_pool_backward_dispatch,
    max_pool_dispatch, ConvGeometry,
};
use shadergrad::rng::Rng;
use shadergrad::{Conv1d, Conv2d, ConvVariant, Gpu, Indices, MaxPool1d, Tensor};

const BATCH: usize = 32;
const EMBEDDING: usize = 64;
const LENGTH: usize = 128;
const FILTERS: usize = 100;
const WINDOWS: [usize; 3] = [3, 4, 5];

/// A tensor of `shape` with values uniform in [−1, 1).
fn random(gpu: &Gpu, rng: &mut Rng, shape: &[usize]) -> shadergrad::Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_slice(gpu, &rng.vec(n, -1.0, 1.0), shape)
}

/// Times the forward of x ⊛ weight + bias with each variant; returns the geometry.
fn time_forward(
    gpu: &Gpu,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    options: Conv2d,
    kernel: &str,
    shape: &str,
) -> shadergrad::Result<ConvGeometry> {
    let g = ConvGeometry::new("bench", x.shape(), weight.shape(), options)?;
    let y = Tensor::zeros(gpu, &g.output_shape())?;
    let cols = Tensor::zeros(gpu, &[g.batch, g.weight_row(), g.out_h * g.out_w])?;
    let flops = 2.0 * g.multiply_adds() as f64;
    for variant in ConvVariant::ALL {
        let dispatches = match variant {
            ConvVariant::Direct => vec![conv_forward_dispatch(x, weight, Some(bias), &y, &g)?],
            ConvVariant::Im2colGemm => {
                conv_im2col_gemm_dispatches(x, weight, Some(bias), &cols, &y, &g)?.to_vec()
            }
        };
        let stats = time_dispatches(gpu, &dispatches)?;
        let default = if variant == ConvVariant::default() {
            "*"
        } else {
            ""
        };
        let name = format!("{}{default}", variant.name());
        print_row(kernel, &name, shape, &stats, Some(flops), None);
    }
    Ok(g)
}

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    print_adapter(&gpu);
    print_header();
    let mut rng = Rng::new(1);
    let x = random(&gpu, &mut rng, &[BATCH, EMBEDDING, LENGTH])?;
    for k in WINDOWS {
        let weight = random(&gpu, &mut rng, &[FILTERS, EMBEDDING, k])?;
        let bias = random(&gpu, &mut rng, &[FILTERS])?;
        let shape = format!("{BATCH}x{EMBEDDING}x{LENGTH} k{k}");
        let options = Conv1d::default().into();
        let g = time_forward(&gpu, &x, &weight, &bias, options, "conv1d forward", &shape)?;
        let flops = 2.0 * g.multiply_adds() as f64;

        let dy = random(&gpu, &mut rng, &[BATCH, FILTERS, g.out_w])?;
        let dx = Tensor::zeros(&gpu, x.shape())?;
        let dw = Tensor::zeros(&gpu, weight.shape())?;
        let db = Tensor::zeros(&gpu, &[FILTERS])?;
        let input = conv_input_grad_dispatch(&dy, &weight, &dx, &g)?;
        let weights = conv_weight_grad_dispatch(&x, &dy, &dw, &g)?;
        let biases = conv_bias_grad_dispatch(&dy, &db, &g)?;
        let stats = time_dispatches(&gpu, std::slice::from_ref(&input))?;
        print_row("conv1d backward", "dx", &shape, &stats, Some(flops), None);
        let stats = time_dispatches(&gpu, std::slice::from_ref(&weights))?;
        print_row("conv1d backward", "dw", &shape, &stats, Some(flops), None);
        let stats = time_dispatches(&gpu, std::slice::from_ref(&biases))?;
        let dy_bytes = 4.0 * dy.numel() as f64;
        print_row(
            "conv1d backward",
            "db",
            &shape,
            &stats,
            None,
            Some(dy_bytes),
        );
        let stats = time_dispatches(&gpu, &[input, weights, biases])?;
        let all = Some(2.0 * flops);
        print_row("conv1d backward", "dx+dw+db", &shape, &stats, all, None);
    }

    // An image: 8 of 16 channels of 32×32, 32 filters of 3×3 with "same" padding.
    let image = random(&gpu, &mut rng, &[8, 16, 32, 32])?;
    let filters = random(&gpu, &mut rng, &[32, 16, 3, 3])?;
    let bias = random(&gpu, &mut rng, &[32])?;
    let same = Conv2d {
        stride: [1, 1],
        pads: [1; 4],
    };
    let shape = "8x16x32x32 3x3 O32";
    time_forward(&gpu, &image, &filters, &bias, same, "conv2d forward", shape)?;

    // Max over time of the k=3 window's output: N×O×126 → N×O.
    let out_len = LENGTH - 2;
    let features = random(&gpu, &mut rng, &[BATCH, FILTERS, out_len])?;
    let pooled = Tensor::zeros(&gpu, &[BATCH, FILTERS])?;
    let argmax = Indices::from_slice(&gpu, &vec![0; BATCH * FILTERS], &[BATCH, FILTERS])?;
    let over_time = MaxPool1d::new(out_len);
    let shape = format!("{BATCH}x{FILTERS}x{out_len}");
    let pool = max_pool_dispatch(&features, &pooled, &argmax, out_len, &over_time)?;
    let stats = time_dispatches(&gpu, &[pool])?;
    // Reads the features, writes a value and a position per row (and the reverse).
    let bytes = 4.0 * (features.numel() + 2 * pooled.numel()) as f64;
    print_row(
        "max over time",
        "forward",
        &shape,
        &stats,
        None,
        Some(bytes),
    );
    let dfeatures = Tensor::zeros(&gpu, features.shape())?;
    let unpool = max_pool_backward_dispatch(&pooled, &argmax, &dfeatures, out_len, &over_time)?;
    let stats = time_dispatches(&gpu, &[unpool])?;
    print_row(
        "max over time",
        "backward",
        &shape,
        &stats,
        None,
        Some(bytes),
    );
    println!("(* the default forward variant)");
    Ok(())
}
