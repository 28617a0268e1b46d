//! The pipeline cache: each kernel variant (a WGSL file, an entry point, a set of
//! `override` constants) is compiled once per device and reused by every launch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One WGSL file of `shaders/`, embedded in the binary.
#[derive(Debug)]
pub struct ShaderSource {
    /// The kernel family, also the file's stem: `matmul` for `shaders/matmul.wgsl`.
    pub family: &'static str,
    pub wgsl: &'static str,
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
    pub source: &'static ShaderSource,
    pub entry: &'static str,
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
}

/// A compiled kernel variant with its bind group layout.
#[derive(Debug)]
pub struct Kernel {
    pub name: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
struct Caches {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    layouts: HashMap<&'static [Access], wgpu::BindGroupLayout>,
    kernels: HashMap<String, Arc<Kernel>>,
}

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
        let kernel = Arc::new(Kernel {
            name: name.clone(),
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
        static SOURCE: ShaderSource = ShaderSource {
            family: "test",
            wgsl: "",
        };
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
