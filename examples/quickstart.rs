//! The README's library example: `cargo run --release --example quickstart`.

use shadergrad::{Gpu, Tensor};

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?; // or Gpu::new(&"vulkan".parse()?)
    let x = Tensor::from_slice(&gpu, &[1.0, -2.0, 3.0, -4.0, 5.0, -6.0], &[2, 3])?;
    let w = Tensor::from_slice(&gpu, &[0.5; 12], &[3, 4])?;
    let b = Tensor::from_slice(&gpu, &[0.1, 0.2, 0.3, 0.4], &[4])?;

    // y = relu(x·w + b), then a few more kernels
    let y = x.gemm(&w).bias(&b).run()?.relu()?;
    let column_sums = y.sum(0, false)?;
    let yt = y.transpose(0, 1)?;
    println!(
        "{:?} {:?} {:?}",
        y.to_vec()?,
        column_sums.to_vec()?,
        yt.shape()
    );
    Ok(())
}
