//! A host program's own wgpu device, shared with shadergrad (`Gpu::from_device`): the
//! kernels and a training step run on it, the host's handlers stay its own, and a device
//! opened below the limits the kernels need is refused naming the limit.

mod conformance;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use shadergrad::gpu::{enumerate_adapters, instance, select_adapter};
use shadergrad::graph::{Feed, GemmSpec, Graph};
use shadergrad::optim::{Optimizer, OptimizerConfig, Rule};
use shadergrad::{AdapterSelector, Gpu, Tensor};

/// The adapter the tests use, opened as a host program would open it, with `limits`.
fn host_device(limits: wgpu::Limits) -> (wgpu::Adapter, wgpu::Device, wgpu::Queue) {
    let adapters = enumerate_adapters(&instance()).expect("an adapter");
    let adapter = select_adapter(adapters, &AdapterSelector::Default).expect("an adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("host"),
        required_limits: limits,
        ..Default::default()
    }))
    .expect("the host's device");
    (adapter, device, queue)
}

#[test]
fn kernels_and_a_training_step_run_on_the_hosts_device_and_its_handlers_stay_its_own() {
    let (adapter, device, queue) = host_device(wgpu::Limits::default());
    let host_errors = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&host_errors);
    device.on_uncaptured_error(Arc::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let gpu = Gpu::from_device(adapter, device.clone(), queue.clone()).unwrap();
    // A device the host opened without optional features: the portable kernels serve.
    assert!(gpu.features().is_empty(), "{:?}", gpu.features());

    let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let w = Tensor::from_slice(&gpu, &[0.5, -1.0, 0.25, 1.0, -0.5, 0.75], &[3, 2]).unwrap();
    assert_eq!(
        x.matmul(&w).unwrap().to_vec().unwrap(),
        [-0.5, 3.25, 0.25, 5.5]
    );
    // shadergrad's own errors come back as values, not through the host's handler.
    assert!(x.matmul(&x).is_err());

    // A least-squares fit of y = 2x − 1 by a graph, trained with SGD on the host's device.
    let mut g = Graph::new(&gpu);
    let input = g.input("x", &[4, 1]);
    let target = g.input("y", &[4, 1]);
    let weight = g.parameter("w", &[1, 1], vec![0.0]).unwrap();
    let bias = g.parameter("b", &[1], vec![0.0]).unwrap();
    let prediction = g.gemm(input, weight, GemmSpec::new().bias(bias)).unwrap();
    let error = g.sub(prediction, target).unwrap();
    let squared = g.mul(error, error).unwrap();
    let loss = g.mean(squared, 0, false).unwrap();
    let loss = g.sum(loss, 0, false).unwrap();
    let grads = g.backward(loss).unwrap();
    let mut outputs = vec![loss];
    outputs.extend(grads.parameter_gradients());
    let mut plan = g.compile(&outputs).unwrap();
    let pairs = plan.parameter_pairs(&grads).unwrap();
    let mut optimizer = Optimizer::new(&gpu, OptimizerConfig::new(Rule::Sgd, 0.1), &pairs).unwrap();
    let (xs, ys) = ([0.0f32, 1.0, 2.0, 3.0], [-1.0f32, 1.0, 3.0, 5.0]);
    let mut losses = Vec::new();
    for _ in 0..200 {
        optimizer.prepare_step(1).unwrap();
        plan.run(
            &[Feed::f32(input, &xs), Feed::f32(target, &ys)],
            optimizer.dispatches(),
        )
        .unwrap();
        losses.push(plan.read(loss).unwrap()[0]);
    }
    assert!(losses[199] < 1e-3 * losses[0], "{losses:?}");

    // The host's device and handler are still its own: its error reaches its handler.
    let before = host_errors.load(Ordering::SeqCst);
    let _invalid = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("a buffer no device allows"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::MAP_WRITE,
        mapped_at_creation: false,
    });
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    assert_eq!(host_errors.load(Ordering::SeqCst), before + 1);
}

/// Every kernel family, forward and backward, on a device opened with WebGPU's default
/// limits alone: the ONNX cases (every op's forward) and a quick benchmark of every family
/// (forwards and backwards, the fused attention backward falling back below its 10
/// storage buffers).
#[test]
fn every_kernel_family_runs_within_webgpus_default_limits() {
    let (adapter, device, queue) = host_device(wgpu::Limits::default());
    let gpu = Gpu::from_device(adapter, device, queue).unwrap();
    let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx-node");
    let report = conformance::run_dir(&gpu, &cases).expect("the ONNX cases run");
    assert!(report.totals().pass > 0, "{}", report.summary());
    assert!(report.failures().is_empty(), "{:?}", report.failures());
    #[cfg(feature = "cli")]
    {
        use shadergrad::bench::{self, BenchOptions};
        let options = BenchOptions {
            warmup: 0,
            runs: 1,
            ..BenchOptions::new(true)
        };
        bench::run(&gpu, &options, &mut |_| Ok(())).expect("every family runs");
    }
}

#[test]
fn a_device_below_the_kernels_limits_is_refused_naming_the_limit() {
    let (adapter, device, queue) = host_device(wgpu::Limits::downlevel_defaults());
    let message = Gpu::from_device(adapter, device, queue)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("max_storage_buffers_per_shader_stage = 4")
            && message.contains("need at least 8"),
        "{message}"
    );
}
