//! The Tensor API as an embedding crate uses it: bad input gives errors that name what
//! was wrong, never panics; the runtime's pool, cache, timing and adapter choice work.

mod common;

use common::gpu;
use shadergrad::gpu::{enumerate_adapters, instance, select_adapter};
use shadergrad::{AdapterSelector, Error, Gpu, Tensor, Unary};

fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu(), data, shape).unwrap()
}

#[test]
fn upload_and_download_round_trip() {
    let data: Vec<f32> = (0..15).map(|i| i as f32 * 0.5 - 3.0).collect();
    let t = upload(&data, &[3, 5]);
    assert_eq!((t.shape(), t.rank(), t.numel()), (&[3, 5][..], 2, 15));
    assert_eq!(t.to_vec().unwrap(), data);
    assert_eq!(
        Tensor::scalar(gpu(), 2.5).unwrap().to_vec().unwrap(),
        vec![2.5]
    );
    assert_eq!(
        Tensor::full(gpu(), &[2, 2], 7.0).unwrap().to_vec().unwrap(),
        vec![7.0; 4]
    );
    assert_eq!(t.reshape(&[5, 3]).unwrap().to_vec().unwrap(), data);
}

#[test]
fn data_of_the_wrong_length_is_an_error() {
    let err = Tensor::from_slice(gpu(), &[1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("3 values") && err.to_string().contains("holds 4"),
        "{err}"
    );
}

#[test]
fn shape_mismatches_name_both_shapes() {
    let a = upload(&[0.0; 6], &[2, 3]);
    let b = upload(&[0.0; 8], &[4, 2]);
    let err = a.matmul(&b).unwrap_err().to_string();
    assert!(
        err.contains("[2, 3]") && err.contains("[4, 2]") && err.contains("inner"),
        "{err}"
    );

    let c = upload(&[0.0; 4], &[4]);
    let err = a.add(&c).unwrap_err().to_string();
    assert!(
        err.contains("[2, 3]") && err.contains("[4]") && err.contains("broadcast"),
        "{err}"
    );

    let err = a.tanh_backward(&c).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[4]"), "{err}");

    let err = a.reshape(&[4, 2]).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[4, 2]"), "{err}");

    let bias = upload(&[0.0; 5], &[5]);
    let w = upload(&[0.0; 12], &[3, 4]);
    let err = a.gemm(&w).bias(&bias).run().unwrap_err().to_string();
    assert!(err.contains("[5]") && err.contains("4 values"), "{err}");

    let c_bad = upload(&[0.0; 3], &[3]);
    let err = a.gemm(&w).c(&c_bad, 1.0).run().unwrap_err().to_string();
    assert!(err.contains("[3]") && err.contains("[2, 4]"), "{err}");
}

#[test]
fn invalid_axes_and_permutations_are_errors() {
    let a = upload(&[0.0; 6], &[2, 3]);
    let err = a.sum(2, false).unwrap_err().to_string();
    assert!(err.contains("axis 2") && err.contains("rank 2"), "{err}");
    assert!(a.max(-3, false).is_err());
    let err = a.permute(&[0, 0]).unwrap_err().to_string();
    assert!(
        err.contains("[0, 0]") && err.contains("permutation"),
        "{err}"
    );
    assert!(a.transpose(0, 5).is_err());
    let five = upload(&[0.0; 32], &[2, 2, 2, 2, 2]);
    let err = five.permute(&[4, 3, 2, 1, 0]).unwrap_err().to_string();
    assert!(err.contains("rank 5") && err.contains("at most 4"), "{err}");
    assert!(Tensor::scalar(gpu(), 1.0).unwrap().matmul(&a).is_err());
}

#[test]
fn zero_sized_tensors_work_where_defined_and_error_where_not() {
    let empty = upload(&[], &[3, 0]);
    assert_eq!(empty.to_vec().unwrap(), Vec::<f32>::new());
    assert_eq!(empty.tanh().unwrap().shape(), &[3, 0]);
    assert_eq!(empty.transpose(0, 1).unwrap().shape(), &[0, 3]);
    assert_eq!(empty.sum(1, false).unwrap().to_vec().unwrap(), vec![0.0; 3]);
    let err = empty.mean(1, false).unwrap_err();
    assert!(matches!(err, Error::ZeroSized { .. }), "{err}");
    assert!(err.to_string().contains("[3, 0]"), "{err}");
}

#[test]
fn tensors_beyond_the_adapter_limit_are_refused_before_allocation() {
    let limit = gpu().max_buffer_bytes();
    let elements = (limit / 4 + 1) as usize;
    let err = Tensor::zeros(gpu(), &[elements]).unwrap_err();
    match &err {
        Error::TooLarge { limit: named, .. } => assert_eq!(*named, limit),
        other => panic!("expected TooLarge, got {other}"),
    }
    assert!(err.to_string().contains(&limit.to_string()), "{err}");
    // An element count that overflows is an error too, not a panic.
    assert!(Tensor::zeros(gpu(), &[usize::MAX, 2]).is_err());
}

#[test]
fn tensors_of_two_devices_do_not_mix() {
    let other = Gpu::default_adapter().unwrap();
    let a = upload(&[1.0], &[1]);
    let b = Tensor::from_slice(&other, &[1.0], &[1]).unwrap();
    let err = a.add(&b).unwrap_err();
    assert!(matches!(err, Error::DeviceMismatch { .. }), "{err}");
}

#[test]
fn the_pool_reuses_freed_buffers_and_kernels_compile_once() {
    let gpu = Gpu::default_adapter().unwrap();
    let x = Tensor::from_slice(&gpu, &[1.0; 1000], &[1000]).unwrap();
    let first = x.relu().unwrap();
    first.to_vec().unwrap(); // the readback staging buffer joins the pool too
    drop(first);
    let compiled = gpu.pipelines_compiled();
    let before = gpu.pool_stats();
    for _ in 0..10 {
        let y = x.relu().unwrap();
        assert_eq!(y.to_vec().unwrap(), vec![1.0; 1000]);
    }
    let after = gpu.pool_stats();
    assert_eq!(gpu.pipelines_compiled(), compiled, "relu compiled again");
    assert_eq!(
        after.allocated, before.allocated,
        "buffers were allocated instead of reused"
    );
    assert!(after.reused >= before.reused + 10);
    gpu.trim_pool();
    assert_eq!(gpu.pool_stats().idle_bytes, 0);
}

#[test]
fn ops_from_many_threads_do_not_disturb_each_other() {
    // Each thread checks its own results while the others share the device and its pool.
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..30 {
                    let value = (t * 100 + i) as f32;
                    let x = upload(&[value; 37], &[37]);
                    let y = x
                        .scale(2.0)
                        .unwrap()
                        .add(&x)
                        .unwrap()
                        .sum(0, false)
                        .unwrap();
                    assert_eq!(
                        y.to_vec().unwrap(),
                        vec![value * 3.0 * 37.0],
                        "thread {t} step {i}"
                    );
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn timed_submissions_report_a_duration() {
    let gpu = gpu();
    let a = upload(&vec![1.0; 64 * 64], &[64, 64]);
    let out = Tensor::zeros(gpu, &[64, 64]).unwrap();
    let shape = shadergrad::kernels::matmul::GemmShape::contiguous(1, (64, 64, 64), false, false);
    let operands = shadergrad::kernels::matmul::GemmOperands {
        a: &a,
        b: &a,
        c: None,
        bias: None,
        out: &out,
        epilogue: shadergrad::kernels::matmul::Epilogue::Plain,
    };
    let dispatch = shadergrad::kernels::matmul::gemm_dispatch(
        &operands,
        &shape,
        1.0,
        0.0,
        shadergrad::MatmulVariant::Blocked,
    )
    .unwrap();
    let timing = gpu.submit_timed(&[dispatch]).unwrap();
    assert!(timing.seconds > 0.0 && timing.seconds < 60.0, "{timing:?}");
    assert_eq!(out.to_vec().unwrap(), vec![64.0; 64 * 64]);
}

#[test]
fn adapters_are_chosen_by_index_name_and_backend() {
    let all = || enumerate_adapters(&instance()).unwrap();
    let first = all()[0].get_info();
    assert_eq!(
        select_adapter(all(), &AdapterSelector::Index(0))
            .unwrap()
            .get_info()
            .name,
        first.name
    );
    let needle = first.name[..first.name.len().min(5)].to_uppercase();
    let by_name = select_adapter(all(), &AdapterSelector::Name(needle)).unwrap();
    assert!(by_name
        .get_info()
        .name
        .to_uppercase()
        .contains(&first.name[..first.name.len().min(5)].to_uppercase()));
    let by_backend = select_adapter(all(), &AdapterSelector::Backend(first.backend)).unwrap();
    assert_eq!(by_backend.get_info().backend, first.backend);
    let err = select_adapter(all(), &AdapterSelector::Index(99))
        .unwrap_err()
        .to_string();
    assert!(err.contains("99") && err.contains(&first.name), "{err}");
    let err = select_adapter(all(), &AdapterSelector::Name("no such adapter".into())).unwrap_err();
    assert!(matches!(err, Error::AdapterNotFound { .. }));
}

#[test]
fn a_shader_error_is_a_result_not_a_panic() {
    use shadergrad::gpu::{Access, KernelSpec, ShaderSource};
    static BROKEN: ShaderSource = ShaderSource::new(
        "broken",
        "@group(0) @binding(0) var<uniform> p: vec4<u32>;\n@compute @workgroup_size(1) fn main() { let x: u32 = p.x + 1.0; }",
    );
    let spec = KernelSpec {
        source: &BROKEN,
        entry: "main",
        bindings: &[Access::Uniform],
        constants: vec![],
    };
    let err = gpu()
        .dispatch(&spec, &[], &[0u32; 4], [1, 1, 1])
        .unwrap_err();
    assert!(matches!(err, Error::Validation { .. }), "{err}");
    assert!(err.to_string().contains("broken::main"), "{err}");
    // The device stays usable afterwards.
    assert_eq!(
        upload(&[-1.0, 2.0], &[2]).relu().unwrap().to_vec().unwrap(),
        vec![0.0, 2.0]
    );
}

#[test]
fn a_lost_device_is_an_error_not_a_panic() {
    let gpu = Gpu::default_adapter().unwrap();
    let x = Tensor::from_slice(&gpu, &[1.0, -1.0], &[2]).unwrap();
    gpu.device().destroy();
    let result = x.relu().and_then(|y| y.to_vec());
    let err = result.unwrap_err();
    assert!(
        matches!(err, Error::DeviceLost(_) | Error::Validation { .. }),
        "expected a lost-device error, got {err}"
    );
}

#[test]
fn indices_round_trip_and_check_their_length() {
    let ids = shadergrad::Indices::from_slice(gpu(), &[3, 0, 7, 1], &[2, 2]).unwrap();
    assert_eq!(
        (ids.shape(), ids.to_vec().unwrap()),
        (&[2, 2][..], vec![3, 0, 7, 1])
    );
    let err = shadergrad::Indices::from_slice(gpu(), &[1, 2, 3], &[2, 2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 values") && err.contains("holds 4"), "{err}");
}

#[test]
fn a_dispatch_keeps_its_buffers_from_the_pool_while_it_lives() {
    // A device of its own, so that the pool hands out exactly the buffers this test frees.
    let gpu = Gpu::default_adapter().unwrap();
    let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0], &[4]).unwrap();
    let y = Tensor::zeros(&gpu, &[4]).unwrap();
    let negate = shadergrad::kernels::elementwise::unary_dispatch(&x, &y, Unary::Neg).unwrap();
    drop((x, y));
    // Were x's and y's buffers back in the pool, these would get them, and the dispatch
    // would then write -x into one of them.
    let others = [
        Tensor::from_slice(&gpu, &[7.0; 4], &[4]).unwrap(),
        Tensor::from_slice(&gpu, &[9.0; 4], &[4]).unwrap(),
    ];
    gpu.submit(&[], &[negate]).unwrap();
    assert_eq!(others[0].to_vec().unwrap(), [7.0; 4]);
    assert_eq!(others[1].to_vec().unwrap(), [9.0; 4]);
}
