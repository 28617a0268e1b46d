//! A host program that already drives a wgpu device (a game, a viewer) shares it with
//! shadergrad: `cargo run --release --example host_device`.
//!
//! The host opens its adapter and device as it always does, here with WebGPU's default
//! limits; `Gpu::from_device` wraps the same device and queue, so shadergrad's tensors and
//! the host's buffers live side by side and its kernels run on the host's queue.

use shadergrad::{Gpu, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host's own setup.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("host"),
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    }))?;

    // shadergrad on the same device.
    let gpu = Gpu::from_device(adapter.clone(), device.clone(), queue.clone())?;
    let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    let w = Tensor::from_slice(&gpu, &[0.5, -1.0, 0.25, 1.0, -0.5, 0.75], &[3, 2])?;
    let probabilities = x.matmul(&w)?.softmax(-1)?;
    println!("softmax(x·w) = {:?}", probabilities.to_vec()?);

    // The host goes on using its device: a buffer of its own, written and read back.
    let host_buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host data"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(
        &host_buffer,
        0,
        bytemuck::cast_slice(&[1.0f32, 2.0, 3.0, 4.0]),
    );
    queue.submit([]);
    let slice = host_buffer.slice(..);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let values: Vec<f32> = bytemuck::cast_slice(&slice.get_mapped_range()?).to_vec();
    println!("the host's own buffer still reads {values:?}");
    Ok(())
}
