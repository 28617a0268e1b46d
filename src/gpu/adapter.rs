//! Finding adapters, choosing one, and describing them.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The environment variable that overrides the adapter choice of every command and of
/// [`crate::Gpu::new`] with [`AdapterSelector::Default`].
pub const ADAPTER_ENV: &str = "SHADERGRAD_ADAPTER";

/// Which adapter to open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AdapterSelector {
    /// `SHADERGRAD_ADAPTER` if set, otherwise the first discrete GPU, then integrated,
    /// then virtual, then CPU (software) adapter.
    #[default]
    Default,
    /// The adapter at this position of [`enumerate_adapters`].
    Index(usize),
    /// The first adapter of this backend.
    Backend(wgpu::Backend),
    /// The first adapter whose name contains this text (case-insensitive).
    Name(String),
}

impl FromStr for AdapterSelector {
    type Err = Error;

    /// Parses `3`, `vulkan`/`metal`/`dx12`/`gl`, `name:TEXT`, or any other text as a name substring.
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::BadSelector(text.to_string()));
        }
        if let Ok(index) = text.parse::<usize>() {
            return Ok(AdapterSelector::Index(index));
        }
        if let Some(name) = text.strip_prefix("name:") {
            return Ok(AdapterSelector::Name(name.to_string()));
        }
        let backend = match text.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Some(wgpu::Backend::Vulkan),
            "metal" => Some(wgpu::Backend::Metal),
            "dx12" | "d3d12" => Some(wgpu::Backend::Dx12),
            "gl" | "gles" | "opengl" => Some(wgpu::Backend::Gl),
            _ => None,
        };
        Ok(match backend {
            Some(backend) => AdapterSelector::Backend(backend),
            None => AdapterSelector::Name(text.to_string()),
        })
    }
}

impl fmt::Display for AdapterSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterSelector::Default => write!(f, "default"),
            AdapterSelector::Index(i) => write!(f, "{i}"),
            AdapterSelector::Backend(b) => write!(f, "{b}"),
            AdapterSelector::Name(n) => write!(f, "name:{n}"),
        }
    }
}

/// A new wgpu instance over every native backend, honouring `WGPU_BACKEND` and friends.
pub fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter wgpu finds, in a stable order. Errors with [`Error::NoAdapter`] if none.
pub fn enumerate_adapters(instance: &wgpu::Instance) -> Result<Vec<wgpu::Adapter>> {
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    if adapters.is_empty() {
        return Err(Error::NoAdapter);
    }
    Ok(adapters)
}

/// Picks one adapter of `adapters` as `selector` says; `Default` consults `SHADERGRAD_ADAPTER`.
pub fn select_adapter(
    adapters: Vec<wgpu::Adapter>,
    selector: &AdapterSelector,
) -> Result<wgpu::Adapter> {
    if adapters.is_empty() {
        return Err(Error::NoAdapter);
    }
    let selector = match selector {
        AdapterSelector::Default => match std::env::var(ADAPTER_ENV) {
            Ok(text) if !text.trim().is_empty() => text.parse()?,
            _ => AdapterSelector::Default,
        },
        other => other.clone(),
    };
    let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
    let position = match &selector {
        AdapterSelector::Default => (0..infos.len()).min_by_key(|&i| preference(&infos[i])),
        AdapterSelector::Index(index) => (*index < infos.len()).then_some(*index),
        AdapterSelector::Backend(backend) => infos.iter().position(|i| i.backend == *backend),
        AdapterSelector::Name(name) => {
            let needle = name.to_lowercase();
            infos
                .iter()
                .position(|i| i.name.to_lowercase().contains(&needle))
        }
    };
    for (i, info) in infos.iter().enumerate() {
        log::debug!(
            "adapter [{i}] {} ({}, {:?})",
            info.name,
            info.backend,
            info.device_type
        );
    }
    match position {
        Some(i) => {
            log::info!("{selector} picks adapter [{i}] {}", infos[i].name);
            Ok(adapters.into_iter().nth(i).expect("position is in range"))
        }
        None => Err(Error::AdapterNotFound {
            selector: selector.to_string(),
            available: infos
                .iter()
                .enumerate()
                .map(|(i, info)| format!("[{i}] {} ({})", info.name, info.backend))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Lower is better: real GPUs first, software last; Vulkan/Metal/DX12 before GL.
fn preference(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = u8::from(info.backend == wgpu::Backend::Gl);
    (if is_software(info) { 5 } else { kind }, backend)
}

/// Whether the adapter runs on the CPU: lavapipe/llvmpipe, SwiftShader or WARP.
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    software_name(info).is_some()
}

/// The name of the software rasteriser behind the adapter, if it is one.
pub fn software_name(info: &wgpu::AdapterInfo) -> Option<&'static str> {
    let text = format!("{} {} {}", info.name, info.driver, info.driver_info).to_lowercase();
    if text.contains("llvmpipe") || text.contains("lavapipe") {
        // Mesa's CPU rasteriser is called lavapipe behind Vulkan and llvmpipe behind GL.
        Some(if info.backend == wgpu::Backend::Vulkan {
            "lavapipe"
        } else {
            "llvmpipe"
        })
    } else if text.contains("swiftshader") {
        Some("SwiftShader")
    } else if text.contains("warp") || text.contains("microsoft basic render") {
        Some("WARP")
    } else if info.device_type == wgpu::DeviceType::Cpu {
        Some("a CPU adapter")
    } else {
        None
    }
}

/// What `shadergrad adapters` prints about one adapter.
#[derive(Debug, Clone)]
pub struct AdapterReport {
    /// The adapter's position in the enumeration: what an index selector (`0`, `1`, …) names.
    pub index: usize,
    /// The adapter's name as the driver reports it.
    pub name: String,
    /// The graphics API it is reached through (Vulkan, Metal, DX12, GL).
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual or CPU, as the driver reports it.
    pub device_type: wgpu::DeviceType,
    /// The driver's name.
    pub driver: String,
    /// The driver's version string.
    pub driver_info: String,
    /// The name of the software renderer (lavapipe, SwiftShader, WARP) when the adapter runs on
    /// the CPU; `None` for a real GPU.
    pub software: Option<&'static str>,
    /// The largest buffer the adapter can create, in bytes.
    pub max_buffer_size: u64,
    /// The largest storage buffer a shader can bind, in bytes.
    pub max_storage_binding_size: u64,
    /// The workgroup (shared) memory one workgroup may use, in bytes.
    pub max_workgroup_storage: u32,
    /// The most invocations (threads) one workgroup may have.
    pub max_invocations_per_workgroup: u32,
    /// Whether shaders can use subgroup operations (the `SUBGROUP` feature).
    pub subgroups: bool,
    /// Whether shaders can use `f16` (the `SHADER_F16` feature).
    pub shader_f16: bool,
    /// Whether the adapter can write GPU timestamps (the `TIMESTAMP_QUERY` feature).
    pub timestamps: bool,
    /// Cooperative-matrix shapes as `MxNxK ab→cr`, empty when the adapter has none.
    pub cooperative_matrix: Vec<String>,
}

impl AdapterReport {
    /// Reads the report off a wgpu adapter.
    pub fn new(index: usize, adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        let cooperative_matrix =
            if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
                adapter
                    .cooperative_matrix_properties()
                    .iter()
                    .map(|p| {
                        format!(
                            "{}x{}x{} {:?}->{:?}",
                            p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
        AdapterReport {
            index,
            software: software_name(&info),
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver: info.driver,
            driver_info: info.driver_info,
            max_buffer_size: limits.max_buffer_size,
            max_storage_binding_size: limits.max_storage_buffer_binding_size,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            cooperative_matrix,
        }
    }
}

impl fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "[{}] {}", self.index, self.name)?;
        writeln!(f, "    backend:               {}", self.backend)?;
        let kind = match self.software {
            Some(which) => format!("{:?} (software: {which})", self.device_type),
            None => format!("{:?}", self.device_type),
        };
        writeln!(f, "    device type:           {kind}")?;
        writeln!(
            f,
            "    driver:                {} {}",
            self.driver, self.driver_info
        )?;
        writeln!(
            f,
            "    max buffer size:       {} ({} per storage binding)",
            human_bytes(self.max_buffer_size),
            human_bytes(self.max_storage_binding_size)
        )?;
        writeln!(
            f,
            "    max workgroup storage: {} ({} invocations per workgroup)",
            human_bytes(u64::from(self.max_workgroup_storage)),
            self.max_invocations_per_workgroup
        )?;
        writeln!(f, "    subgroups:             {}", yes_no(self.subgroups))?;
        writeln!(f, "    shader-f16:            {}", yes_no(self.shader_f16))?;
        writeln!(f, "    timestamps:            {}", yes_no(self.timestamps))?;
        let coop = if self.cooperative_matrix.is_empty() {
            "no".to_string()
        } else {
            self.cooperative_matrix.join(", ")
        };
        write!(f, "    cooperative matrix:    {coop}")
    }
}

/// `1.5 GiB`, `32 KiB`, `12 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        assert_eq!(
            "2".parse::<AdapterSelector>().unwrap(),
            AdapterSelector::Index(2)
        );
        assert_eq!(
            "Vulkan".parse::<AdapterSelector>().unwrap(),
            AdapterSelector::Backend(wgpu::Backend::Vulkan)
        );
        assert_eq!(
            "llvmpipe".parse::<AdapterSelector>().unwrap(),
            AdapterSelector::Name("llvmpipe".into())
        );
        assert_eq!(
            "name:vulkan".parse::<AdapterSelector>().unwrap(),
            AdapterSelector::Name("vulkan".into())
        );
        assert!("  ".parse::<AdapterSelector>().is_err());
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(32 * 1024), "32.0 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
