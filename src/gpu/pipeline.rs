//! The pipeline cache: each kernel variant (a WGSL file, an entry point, a set of
//! `override` constants) is compiled once per device and reused by every launch.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

/// One WGSL module of `shaders/`, embedded in the binary.
#[derive(Debug)]
pub struct ShaderSource {
    /// The kernel family, also the file's stem: `matmul` for `shaders/matmul.wgsl`.
    pub family: &'static str,
    /// The module as naga, and so wgpu, compiles it.
    pub wgsl: &'static str,
    /// Extensions the WGSL specification requires the module to `enable` but naga 30
    /// refuses to see enabled (`subgroups`: naga takes them from the device's features).
    /// `wgsl` leaves their directives out; [`ShaderSource::standard_wgsl`] puts them first.
    pub extensions_naga_refuses: &'static [&'static str],
    /// The `override` constants that carry a size taken from the operands (a loop bound),
    /// not a choice between code paths.
    pub size_constants: &'static [SizeConstant],
}

impl ShaderSource {
    /// A module without size constants that naga compiles as the specification has it.
    pub const fn new(family: &'static str, wgsl: &'static str) -> Self {
        ShaderSource {
            family,
            wgsl,
            extensions_naga_refuses: &[],
            size_constants: &[],
        }
    }

    /// The module as the WGSL specification has it, for compilers other than naga (Tint):
    /// the `enable` directives naga refuses, then `wgsl`.
    pub fn standard_wgsl(&self) -> String {
        let directives: String = self
            .extensions_naga_refuses
            .iter()
            .map(|extension| format!("enable {extension};\n"))
            .collect();
        directives + self.wgsl
    }
}

/// An `override` constant that carries a size: the launchers give it any value of
/// `values` (one per shape), too many to compile each, so their lists of every variant
/// (`kernel_specs`) take a few samples of it.
#[derive(Debug)]
pub struct SizeConstant {
    /// The constant's name in the WGSL module.
    pub name: &'static str,
    /// The sizes the constant may take.
    pub values: RangeInclusive<u32>,
}

impl SizeConstant {
    /// Whether `value` is one of the sizes the constant takes.
    pub fn admits(&self, value: f64) -> bool {
        value.fract() == 0.0
            && f64::from(*self.values.start()) <= value
            && value <= f64::from(*self.values.end())
    }
}

/// How a kernel uses each binding of its bind group 0, in binding order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
    /// `var<uniform>`
    Uniform,
}

/// A kernel variant: what the cache compiles once.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// The WGSL module the entry point lives in.
    pub source: &'static ShaderSource,
    /// The name of the `@compute` entry point.
    pub entry: &'static str,
    /// How the entry point uses each binding of bind group 0, in binding order.
    pub bindings: &'static [Access],
    /// Values of the shader's `override` constants.
    pub constants: Vec<(&'static str, f64)>,
}

impl KernelSpec {
    /// `family::entry[NAME=value,…]`: the cache key and the label in error messages.
    pub fn name(&self) -> String {
        let mut name = format!("{}::{}", self.source.family, self.entry);
        if !self.constants.is_empty() {
            let constants: Vec<String> = self
                .constants
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            name.push_str(&format!("[{}]", constants.join(",")));
        }
        name
    }

    /// Checks that the kernel's storage buffers fit the adapter's
    /// `max_storage_buffers_per_shader_stage` (WebGPU guarantees 8; the recurrent backward
    /// binds 8, fused attention 10): a clear error naming the kernel instead of a
    /// validation failure deep in pipeline creation.
    pub fn check_storage_limit(&self, limit: u32) -> crate::Result<()> {
        let storage = self
            .bindings
            .iter()
            .filter(|access| **access != Access::Uniform)
            .count();
        if storage as u64 > u64::from(limit) {
            return Err(crate::Error::invalid(
                "dispatch",
                format!(
                    "kernel {} binds {storage} storage buffers; this adapter allows {limit} \
                     per shader stage",
                    self.name()
                ),
            ));
        }
        Ok(())
    }

    /// Whether `self` is `other` but for the values of size constants: the same module,
    /// entry point, bindings and constants in the same order, where a size constant of the
    /// module may take any value of its range. A variant a launcher builds is, in this
    /// sense, one of the variants its `kernel_specs` lists.
    pub fn differs_only_in_sizes(&self, other: &KernelSpec) -> bool {
        let sizes_alike = |name: &str, values: [f64; 2]| {
            self.source
                .size_constants
                .iter()
                .any(|size| size.name == name && values.iter().all(|&v| size.admits(v)))
        };
        self.source.family == other.source.family
            && self.entry == other.entry
            && self.bindings == other.bindings
            && self.constants.len() == other.constants.len()
            && self.constants.iter().zip(&other.constants).all(
                |(&(name, value), &(other_name, other_value))| {
                    name == other_name
                        && (value == other_value || sizes_alike(name, [value, other_value]))
                },
            )
    }
}

/// A compiled kernel variant with its bind group layout.
#[derive(Debug)]
pub struct Kernel {
    /// The variant's name, [`KernelSpec::name`]: its cache key and its label in errors.
    pub name: String,
    /// The variant it was compiled from.
    pub spec: KernelSpec,
    /// The compiled compute pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// The layout its bind groups must follow (shared by kernels with the same bindings).
    pub layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
struct Caches {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    layouts: HashMap<&'static [Access], wgpu::BindGroupLayout>,
    kernels: HashMap<String, Arc<Kernel>>,
}

/// A pipeline compile at least this long is logged at info level (the rest at debug): the
/// driver's compile is most of a first step's time on a new machine.
const SLOW_COMPILE: std::time::Duration = std::time::Duration::from_millis(500);

/// Shader modules, bind group layouts and pipelines, each made once.
#[derive(Default)]
pub struct PipelineCache {
    caches: Mutex<Caches>,
}

impl PipelineCache {
    /// The compiled variant, compiling it on first use. The caller wraps this in an error
    /// scope: a shader that fails to compile shows up as a validation error there.
    pub fn get(&self, device: &wgpu::Device, spec: &KernelSpec) -> Arc<Kernel> {
        let name = spec.name();
        let mut caches = self.caches.lock().expect("pipeline cache lock");
        if let Some(kernel) = caches.kernels.get(&name) {
            return Arc::clone(kernel);
        }
        let module = caches
            .modules
            .entry(spec.source.family)
            .or_insert_with(|| {
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(spec.source.family),
                    source: wgpu::ShaderSource::Wgsl(spec.source.wgsl.into()),
                })
            })
            .clone();
        let layout = caches
            .layouts
            .entry(spec.bindings)
            .or_insert_with(|| bind_group_layout(device, spec.bindings))
            .clone();
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let started = std::time::Instant::now();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &spec.constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let took = started.elapsed();
        if took >= SLOW_COMPILE {
            log::info!("compiling {name} took {:.2} s", took.as_secs_f64());
        } else {
            log::debug!("compiled {name} in {:.1} ms", took.as_secs_f64() * 1e3);
        }
        let kernel = Arc::new(Kernel {
            name: name.clone(),
            spec: spec.clone(),
            pipeline,
            layout,
        });
        caches.kernels.insert(name, Arc::clone(&kernel));
        kernel
    }

    /// How many variants have been compiled so far.
    pub fn compiled(&self) -> usize {
        self.caches
            .lock()
            .expect("pipeline cache lock")
            .kernels
            .len()
    }

    /// The variants compiled so far, by name.
    pub fn compiled_specs(&self) -> Vec<KernelSpec> {
        let caches = self.caches.lock().expect("pipeline cache lock");
        let mut kernels: Vec<&Arc<Kernel>> = caches.kernels.values().collect();
        kernels.sort_by(|a, b| a.name.cmp(&b.name));
        kernels.iter().map(|kernel| kernel.spec.clone()).collect()
    }
}

fn bind_group_layout(device: &wgpu::Device, bindings: &[Access]) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .enumerate()
        .map(|(i, access)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match access {
                    Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    Access::Uniform => wgpu::BufferBindingType::Uniform,
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_with_more_storage_buffers_than_the_adapter_allows_is_refused_by_name() {
        static SOURCE: ShaderSource = ShaderSource::new("test", "");
        let spec = KernelSpec {
            source: &SOURCE,
            entry: "wide",
            bindings: &[
                Access::Read,
                Access::Read,
                Access::ReadWrite,
                Access::Uniform,
            ],
            constants: Vec::new(),
        };
        spec.check_storage_limit(3).unwrap();
        let message = spec.check_storage_limit(2).unwrap_err().to_string();
        assert!(
            message.contains("test::wide binds 3 storage buffers"),
            "{message}"
        );
        assert!(message.contains("allows 2 per shader stage"), "{message}");
    }
}
