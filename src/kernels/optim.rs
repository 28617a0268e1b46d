//! The optimizers' shader (`shaders/optim.wgsl`) and the kernel variants it builds: the
//! update of each rule and the two steps of clipping by global norm. The launchers, which
//! take the rules of [`crate::optim`], are in [`crate::optim::launch`].

use crate::gpu::Access::{self, Read, ReadWrite, Uniform};
use crate::gpu::{KernelSpec, ShaderSource};
use crate::kernels::chosen_spans;

/// The optimizers' module, `shaders/optim.wgsl`: each rule's update and the two steps of
/// clipping by global norm.
pub static SHADER: ShaderSource =
    ShaderSource::new("optim", include_str!("../../shaders/optim.wgsl"));

// The update kernels bind the step's scalars, the clipping factor, the parameter and the
// gradient, then the rule's state, then the uniform.
const SGD_BINDINGS: &[Access] = &[Read, Read, ReadWrite, Read, Uniform];
const MOMENTUM_BINDINGS: &[Access] = &[Read, Read, ReadWrite, Read, ReadWrite, Uniform];
const ADAM_BINDINGS: &[Access] = &[Read, Read, ReadWrite, Read, ReadWrite, ReadWrite, Uniform];

/// The entry points of the update: one per rule (AdamW is Adam with a decay), and Adam's
/// that reads four elements at a time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UpdateKernel {
    Sgd,
    Momentum,
    Adam,
    AdamVec4,
}

impl UpdateKernel {
    const ALL: [UpdateKernel; 4] = [
        UpdateKernel::Sgd,
        UpdateKernel::Momentum,
        UpdateKernel::Adam,
        UpdateKernel::AdamVec4,
    ];
}

pub(crate) fn update_spec(kernel: UpdateKernel, elements_per_invocation: u32) -> KernelSpec {
    let (entry, bindings) = match kernel {
        UpdateKernel::Sgd => ("sgd", SGD_BINDINGS),
        UpdateKernel::Momentum => ("momentum", MOMENTUM_BINDINGS),
        UpdateKernel::Adam => ("adam", ADAM_BINDINGS),
        UpdateKernel::AdamVec4 => ("adam_vec4", ADAM_BINDINGS),
    };
    KernelSpec {
        source: &SHADER,
        entry,
        bindings,
        constants: vec![(
            "ELEMENTS_PER_INVOCATION",
            f64::from(elements_per_invocation),
        )],
    }
}

pub(crate) fn sum_squares_spec() -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: "sum_squares",
        bindings: &[Read, ReadWrite, Uniform],
        constants: Vec::new(),
    }
}

pub(crate) fn global_norm_spec() -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: "global_norm",
        bindings: &[Read, ReadWrite, ReadWrite, Uniform],
        constants: Vec::new(),
    }
}

/// Every kernel variant the optimizer's launchers can build: each update with every
/// count of elements per invocation [`crate::kernels::columns_per_invocation`] picks, the
/// clipping's two.
pub fn kernel_specs() -> Vec<KernelSpec> {
    let mut specs: Vec<KernelSpec> = UpdateKernel::ALL
        .into_iter()
        .flat_map(|kernel| chosen_spans().map(move |count| update_spec(kernel, count)))
        .collect();
    specs.extend([sum_squares_spec(), global_norm_spec()]);
    specs
}
