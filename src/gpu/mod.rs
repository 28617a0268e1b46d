//! The GPU runtime: one opened adapter with its device and queue, a buffer pool, a
//! pipeline cache, error capture, readback and timing.
//!
//! Everything above this module (kernels, tensors, the graph) reaches wgpu only through
//! [`Gpu`]: it records [`Dispatch`]es and hands them to [`Gpu::submit`].

mod adapter;
mod pipeline;
mod pool;
pub mod tuning;

pub use tuning::Autotune;
use tuning::TuningCache;

pub use adapter::{
    enumerate_adapters, human_bytes, instance, is_software, select_adapter, software_name,
    AdapterReport, AdapterSelector, ADAPTER_ENV,
};
pub use pipeline::{Access, Kernel, KernelSpec, PipelineCache, ShaderSource, SizeConstant};
pub use pool::{size_class, BufferKind, BufferPool, PoolStats, PooledBuffer};

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Lists every adapter of the machine; [`Error::NoAdapter`] when there is none.
pub fn adapter_reports() -> Result<Vec<AdapterReport>> {
    let adapters = enumerate_adapters(&instance())?;
    Ok(adapters
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterReport::new(i, a))
        .collect())
}

/// One kernel launch, ready to encode: a compiled variant, its bindings, its grid.
///
/// It owns its uniform parameters: the pooled uniform buffer must not go back to the pool
/// (where another launch would overwrite it) before the dispatch has been submitted.
/// The storage buffers it binds belong to tensors, which the caller keeps alive until then.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// The compiled pipeline (one specialised variant of a WGSL kernel) to run.
    pub kernel: Arc<Kernel>,
    /// The buffers bound to the kernel's bindings, in the order its [`KernelSpec`] declares.
    pub bind_group: wgpu::BindGroup,
    /// How many workgroups to launch along x, y and z (not invocations: each workgroup runs
    /// as many invocations as the kernel's `@workgroup_size`).
    pub workgroups: [u32; 3],
    /// The uniform buffer holding this launch's parameters (sizes, strides, scalars).
    pub params: Arc<PooledBuffer>,
    /// The storage buffers the bind group binds, held so that the pool cannot hand them to
    /// other tensors (nor destroy them) while this dispatch, or a clone, may still run.
    pub bound: Vec<Arc<PooledBuffer>>,
}

/// A buffer-to-buffer copy to run before the dispatches of a submission.
#[derive(Debug, Clone)]
pub struct Copy {
    /// The buffer copied from.
    pub source: Arc<PooledBuffer>,
    /// The buffer copied into.
    pub destination: Arc<PooledBuffer>,
    /// How many bytes to copy, from offset 0 of both buffers.
    pub bytes: u64,
}

/// How long a submission took, and how it was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// The measured duration in seconds.
    pub seconds: f64,
    /// GPU timestamp queries around the compute pass, or wall time around submit-and-wait.
    pub source: TimingSource,
}

/// Where a [`Timing`] came from: timestamps are precise GPU time; the wall clock also
/// counts submission, driver overhead and the wait for the result. In JSON records
/// `"gpu-timestamps"` or `"wall-clock"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimingSource {
    /// GPU timestamp queries written before and after the compute pass.
    GpuTimestamps,
    /// The CPU's clock around submit-and-wait, used where the adapter has no timestamp queries.
    WallClock,
}

impl std::fmt::Display for TimingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimingSource::GpuTimestamps => "GPU timestamps",
            TimingSource::WallClock => "wall clock",
        })
    }
}

/// A device limit the kernels rely on: its name in [`wgpu::Limits`], how to read it, and
/// the least value they need.
struct NeededLimit {
    name: &'static str,
    read: fn(&wgpu::Limits) -> u64,
    least: u64,
}

/// The compute limits every kernel family fits in: WebGPU's defaults.
const NEEDED_COMPUTE_LIMITS: [NeededLimit; 5] = [
    NeededLimit {
        name: "max_storage_buffers_per_shader_stage",
        read: |l| l.max_storage_buffers_per_shader_stage.into(),
        least: 8,
    },
    NeededLimit {
        name: "max_compute_invocations_per_workgroup",
        read: |l| l.max_compute_invocations_per_workgroup.into(),
        least: 256,
    },
    NeededLimit {
        name: "max_compute_workgroup_size_x",
        read: |l| l.max_compute_workgroup_size_x.into(),
        least: 256,
    },
    NeededLimit {
        name: "max_compute_workgroup_size_y",
        read: |l| l.max_compute_workgroup_size_y.into(),
        least: 16,
    },
    NeededLimit {
        name: "max_compute_workgroup_storage_size",
        read: |l| l.max_compute_workgroup_storage_size.into(),
        least: 16384,
    },
];

/// Errors, naming the first limit short of it, unless `limits` hold what the kernels need.
fn check_compute_limits(limits: &wgpu::Limits, device: &str) -> Result<()> {
    for NeededLimit { name, read, least } in NEEDED_COMPUTE_LIMITS {
        let have = read(limits);
        if have < least {
            return Err(Error::invalid(
                "device",
                format!(
                    "{device} was opened with {name} = {have}; shadergrad's kernels need at \
                     least {least} (WebGPU's default: request wgpu::Limits::default() or the \
                     adapter's own limits)"
                ),
            ));
        }
    }
    Ok(())
}

/// Where the device's errors outside shadergrad's error scopes go.
struct ErrorHandlers {
    /// Set by the device-lost callback; every later call fails with it.
    lost: Arc<Mutex<Option<String>>>,
    /// Errors raised outside any error scope, reported by the next checked call.
    uncaptured: Arc<Mutex<Vec<String>>>,
}

impl ErrorHandlers {
    /// Installs shadergrad's own handlers on a device it opened: wgpu's default handler
    /// panics, so an error outside a scope is kept for the next checked call instead, and
    /// a lost device fails every later call.
    fn install(device: &wgpu::Device) -> ErrorHandlers {
        let lost = Arc::new(Mutex::new(None));
        let lost_slot = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            *lost_slot.lock().expect("lost lock") = Some(format!("{reason:?}: {message}"));
        });
        // The default handler panics; keep the error for the next checked call instead.
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let uncaptured_slot = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            uncaptured_slot
                .lock()
                .expect("uncaptured lock")
                .push(error.to_string());
        }));
        ErrorHandlers { lost, uncaptured }
    }

    /// None on a host's device: its own handlers stay in place.
    fn host() -> ErrorHandlers {
        ErrorHandlers {
            lost: Arc::new(Mutex::new(None)),
            uncaptured: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// A handle to an opened adapter. Cheap to clone; all clones share one device.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<GpuInner>,
}

struct GpuInner {
    adapter: wgpu::Adapter,
    info: wgpu::AdapterInfo,
    device: wgpu::Device,
    queue: wgpu::Queue,
    limits: wgpu::Limits,
    features: wgpu::Features,
    pool: Arc<BufferPool>,
    pipelines: PipelineCache,
    /// Set by the device-lost callback; every later call fails with it.
    lost: Arc<Mutex<Option<String>>>,
    /// Errors raised outside any error scope, reported by the next checked call.
    uncaptured: Arc<Mutex<Vec<String>>>,
    /// A tiny buffer bound where a kernel's optional input is absent.
    placeholder: Arc<PooledBuffer>,
    /// Query set and buffers for timestamp queries, made on first use.
    timer: Mutex<Option<TimestampQueries>>,
    /// The autotuner's choices for this adapter.
    tuning: TuningCache,
}

struct TimestampQueries {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gpu({} on {})",
            self.inner.info.name, self.inner.info.backend
        )
    }
}

/// Whether the adapter offers what the cooperative-matrix matmul needs: 16×16×16 products
/// of f16 matrices accumulated in f32, f16 in shaders, and subgroups.
fn has_f16_matrix_units(adapter: &wgpu::Adapter) -> bool {
    let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
        | wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP;
    adapter.features().contains(needed)
        && adapter.cooperative_matrix_properties().iter().any(|shape| {
            (shape.m_size, shape.n_size, shape.k_size) == (16, 16, 16)
                && shape.ab_type == wgpu::CooperativeScalarType::F16
                && shape.cr_type == wgpu::CooperativeScalarType::F32
        })
}

impl Gpu {
    /// Opens the adapter `selector` picks, with the adapter's own limits and the optional
    /// features it has (subgroups, shader-f16, timestamps).
    pub fn new(selector: &AdapterSelector) -> Result<Gpu> {
        let adapter = select_adapter(enumerate_adapters(&instance())?, selector)?;
        Gpu::from_adapter(adapter)
    }

    /// Opens the default adapter (or the one `SHADERGRAD_ADAPTER` names).
    pub fn default_adapter() -> Result<Gpu> {
        Gpu::new(&AdapterSelector::Default)
    }

    /// Opens a device on an adapter the caller already chose.
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let wanted = wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_F16
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        // Cooperative matrices are an experimental wgpu feature: asked for only where the
        // adapter has the shape the cooperative-matrix kernel uses.
        let matrix_units = has_f16_matrix_units(&adapter);
        let wanted = if matrix_units {
            wanted | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
        } else {
            wanted
        };
        let experimental_features = if matrix_units {
            // SAFETY: wgpu's experimental features may still have bugs in wgpu itself; only
            // the cooperative-matrix matmul uses this one, and neither the rule nor the
            // autotuner picks that kernel: a caller names it.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let features = adapter.features() & wanted;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("shadergrad"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::DeviceRequest {
            adapter: info.name.clone(),
            message: e.to_string(),
        })?;

        let handlers = ErrorHandlers::install(&device);
        Gpu::assemble(adapter, device, queue, handlers)
    }

    /// Shares a device the host program already opened, such as a game's or a viewer's:
    /// shadergrad's buffers, pipelines and submissions then live beside the host's, on the
    /// same queue.
    ///
    /// What shadergrad uses of the device:
    /// - **limits**: its kernels fit WebGPU's defaults ([`wgpu::Limits::default`]):
    ///   workgroups of up to 256 invocations and 16 KiB of workgroup memory, and at most 8
    ///   storage buffers per kernel, except the fused attention backward (10), which falls
    ///   back to an unfused one below that. A tensor can be no larger than the device's
    ///   `max_storage_buffer_binding_size` and `max_buffer_size` (WebGPU's defaults are
    ///   128 and 256 MiB): request the adapter's own limits for larger ones.
    /// - **optional features**, each used where the device has it: `SUBGROUP` (the
    ///   subgroup matmul, the fastest on most GPUs), `TIMESTAMP_QUERY` and
    ///   `TIMESTAMP_QUERY_INSIDE_ENCODERS` (GPU timing in benchmarks, else the wall clock),
    ///   `SHADER_F16` with `EXPERIMENTAL_COOPERATIVE_MATRIX` (the f16 matrix-unit matmul,
    ///   only when named). Without them every op still runs, on the portable kernels.
    /// - **error handling**: the host keeps its own uncaptured-error handler and
    ///   device-lost callback (this call installs none); each shadergrad call checks the
    ///   error scopes it pushes around its own work, so its errors come back as `Err` and
    ///   never reach the host's handler.
    ///
    /// `adapter` must be the one `device` was requested from: it names the device in
    /// messages and keys the autotuner's choices.
    pub fn from_device(
        adapter: wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Result<Gpu> {
        check_compute_limits(&device.limits(), &adapter.get_info().name)?;
        Gpu::assemble(adapter, device, queue, ErrorHandlers::host())
    }

    /// The handle over an opened device, with the handlers its errors reach.
    fn assemble(
        adapter: wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        handlers: ErrorHandlers,
    ) -> Result<Gpu> {
        let info = adapter.get_info();
        let info_for_tuning = info.clone();
        let features = device.features();
        let limits = device.limits();
        let max_bytes = limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size);
        log::info!(
            "opened {} ({:?}, {:?}, driver {} {}) with {features:?}, buffers up to {max_bytes} bytes",
            info.name,
            info.device_type,
            info.backend,
            info.driver,
            info.driver_info
        );
        let pool = BufferPool::new(device.clone(), max_bytes);
        // Bound where a kernel's optional input is absent; never read.
        let placeholder = Arc::new(pool.acquire(BufferKind::Storage, 16));
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                adapter,
                info,
                device,
                queue,
                features,
                limits,
                pool,
                pipelines: PipelineCache::default(),
                lost: handlers.lost,
                uncaptured: handlers.uncaptured,
                placeholder,
                timer: Mutex::new(None),
                tuning: TuningCache::open(&info_for_tuning),
            }),
        })
    }

    /// Whether kernels pick their variant by timing them on this adapter (once per shape
    /// class) rather than by fixed rules: see [`Gpu::set_autotune`].
    pub fn autotune(&self) -> bool {
        self.inner.tuning.enabled()
    }

    /// How kernels with several variants pick one from now on. A device opens with
    /// [`Autotune::Off`]: the fixed rules decide, and nothing is timed or written.
    pub fn set_autotune(&self, mode: Autotune) {
        self.inner.tuning.set_mode(mode);
    }

    /// The file the autotuner's choices are kept in, if any.
    pub fn tuning_file(&self) -> Option<std::path::PathBuf> {
        self.inner.tuning.path()
    }

    /// The variant tuned for a shape class `key`, if one was.
    pub fn tuned(&self, key: &str) -> Option<String> {
        self.inner.tuning.get(key)
    }

    /// Remembers the variant tuned for a shape class, saving the file.
    pub fn remember_tuned(&self, key: &str, variant: &str) -> Result<()> {
        self.inner.tuning.insert(key, variant)
    }

    /// Whether `other` is a handle to the same device.
    pub fn same_device(&self, other: &Gpu) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The adapter's description: name, vendor, backend, driver and device type.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The wgpu adapter the device was opened on.
    pub fn adapter(&self) -> &wgpu::Adapter {
        &self.inner.adapter
    }

    /// The wgpu device, for creating buffers, pipelines and bind groups.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue the device's work is submitted to.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The limits the device was opened with: the adapter's own, not WebGPU's defaults.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The optional features the device was opened with.
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }

    /// Whether this device multiplies 16×16×16 f16 matrices into f32 ones in matrix units
    /// (wgpu's experimental cooperative matrices), for `MatmulVariant::CoopF16`.
    pub fn has_f16_matrix_units(&self) -> bool {
        self.inner
            .features
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    }

    /// Whether this adapter runs on the CPU (lavapipe, SwiftShader, WARP).
    pub fn is_software(&self) -> bool {
        is_software(&self.inner.info)
    }

    /// Whether the device executes like a CPU: many cheap invocations in SIMD lanes, where
    /// workgroup barriers are expensive and shared memory gains nothing.
    pub fn is_cpu_like(&self) -> bool {
        self.is_software() || self.inner.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether the device can write GPU timestamps (the `TIMESTAMP_QUERY` feature), so that
    /// [`Timing`]s come from [`TimingSource::GpuTimestamps`] rather than the wall clock.
    pub fn has_timestamps(&self) -> bool {
        self.inner
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// The largest buffer a tensor may occupy: the smaller of the buffer and binding limits,
    /// and at most 4 GiB, since the kernels index elements with u32.
    pub fn max_buffer_bytes(&self) -> u64 {
        let limits = &self.inner.limits;
        limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size)
            .min(u64::from(u32::MAX) + 1 - 4)
    }

    /// Buffer-pool counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Frees the buffers idle in the pool.
    pub fn trim_pool(&self) {
        self.inner.pool.trim();
    }

    /// How many kernel variants have been compiled.
    pub fn pipelines_compiled(&self) -> usize {
        self.inner.pipelines.compiled()
    }

    /// The kernel variants compiled so far, by name.
    pub fn compiled_kernel_specs(&self) -> Vec<KernelSpec> {
        self.inner.pipelines.compiled_specs()
    }

    /// A storage buffer of at least `bytes` bytes from the pool; errors above the limit.
    pub fn storage_buffer(&self, bytes: u64, shape: &[usize]) -> Result<PooledBuffer> {
        let limit = self.max_buffer_bytes();
        if bytes > limit {
            return Err(Error::TooLarge {
                shape: shape.to_vec(),
                bytes,
                limit,
            });
        }
        Ok(self.inner.pool.acquire(BufferKind::Storage, bytes.max(4)))
    }

    /// A small storage buffer to bind in place of an absent optional input.
    pub fn placeholder(&self) -> &Arc<PooledBuffer> {
        &self.inner.placeholder
    }

    /// A uniform buffer holding `value`, from the pool.
    fn uniform<T: bytemuck::Pod>(&self, value: &T) -> PooledBuffer {
        let bytes = bytemuck::bytes_of(value);
        let buffer = self
            .inner
            .pool
            .acquire(BufferKind::Uniform, bytes.len() as u64);
        self.inner.queue.write_buffer(buffer.buffer(), 0, bytes);
        buffer
    }

    /// Writes `data` to the start of `buffer` (queued; runs before the next submission).
    pub fn write<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, data: &[T]) {
        if !data.is_empty() {
            self.inner
                .queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(data));
        }
    }

    /// Runs `f` inside error scopes, so that validation errors, out-of-memory and internal
    /// errors raised by it come back as `Err` naming `context`, not as a panic.
    pub fn checked<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_alive()?;
        let device = &self.inner.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let validation = pollster::block_on(validation.pop());
        let internal = pollster::block_on(internal.pop());
        let oom = pollster::block_on(oom.pop());
        let context = context.to_string();
        if let Some(error) = oom {
            return Err(Error::OutOfMemory {
                context,
                message: error.to_string(),
            });
        }
        if let Some(error) = validation {
            return Err(Error::Validation {
                context,
                message: error.to_string(),
            });
        }
        if let Some(error) = internal {
            return Err(Error::Internal {
                context,
                message: error.to_string(),
            });
        }
        self.check_alive()?;
        Ok(value)
    }

    /// Fails if the device was lost or an error escaped every error scope.
    fn check_alive(&self) -> Result<()> {
        if let Some(reason) = self.inner.lost.lock().expect("lost lock").clone() {
            return Err(Error::DeviceLost(reason));
        }
        let mut uncaptured = self.inner.uncaptured.lock().expect("uncaptured lock");
        if !uncaptured.is_empty() {
            let message = uncaptured.join("; ");
            uncaptured.clear();
            return Err(Error::Validation {
                context: "an earlier GPU call".into(),
                message,
            });
        }
        Ok(())
    }

    /// A dispatch of the kernel variant `spec` over `workgroups`, binding `buffers` in order
    /// and then `params` as the uniform in the last binding. The dispatch holds the buffers:
    /// none goes back to the pool (to be handed to another tensor) while it could still run.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        spec: &KernelSpec,
        buffers: &[&Arc<PooledBuffer>],
        params: &P,
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        debug_assert_eq!(spec.bindings.len(), buffers.len() + 1, "{}", spec.name());
        spec.check_storage_limit(self.inner.limits.max_storage_buffers_per_shader_stage)?;
        let params = self.uniform(params);
        self.checked(&spec.name(), || {
            let kernel = self.inner.pipelines.get(&self.inner.device, spec);
            let entries: Vec<wgpu::BindGroupEntry> = buffers
                .iter()
                .map(|buffer| buffer.buffer())
                .chain([params.buffer()])
                .enumerate()
                .map(|(i, buffer)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: buffer.as_entire_binding(),
                })
                .collect();
            let bind_group = self
                .inner
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&kernel.name),
                    layout: &kernel.layout,
                    entries: &entries,
                });
            Dispatch {
                kernel,
                bind_group,
                workgroups,
                params: Arc::new(params),
                bound: buffers.iter().map(|&buffer| Arc::clone(buffer)).collect(),
            }
        })
    }

    /// Workgroup counts for `workgroups` groups along one axis, folded into y when x would
    /// pass the per-dimension limit. Kernels recover the flat index as `x + y·num_workgroups.x`.
    pub fn grid(&self, workgroups: u32) -> [u32; 3] {
        let max = self
            .inner
            .limits
            .max_compute_workgroups_per_dimension
            .max(1);
        if workgroups <= max {
            [workgroups, 1, 1]
        } else {
            let y = workgroups.div_ceil(max);
            [workgroups.div_ceil(y), y, 1]
        }
    }

    /// Encodes `copies`, then `dispatches` in one compute pass, and submits once.
    pub fn submit(&self, copies: &[Copy], dispatches: &[Dispatch]) -> Result<()> {
        self.checked("submit", || {
            self.encode_and_submit(copies, &[dispatches], None)
        })?;
        Ok(())
    }

    /// Encodes several lists of dispatches, one after the other, in one compute pass, and
    /// submits once (a plan's step followed by an optimizer's update, say).
    pub fn submit_lists(&self, lists: &[&[Dispatch]]) -> Result<()> {
        self.checked("submit", || self.encode_and_submit(&[], lists, None))?;
        Ok(())
    }

    /// Submits like [`Gpu::submit`], waits, and says how long the compute pass took:
    /// by GPU timestamps where the adapter has them, else by the wall clock.
    pub fn submit_timed(&self, dispatches: &[Dispatch]) -> Result<Timing> {
        if !self.has_timestamps() {
            let start = Instant::now();
            self.submit(&[], dispatches)?;
            self.wait()?;
            return Ok(Timing {
                seconds: start.elapsed().as_secs_f64(),
                source: TimingSource::WallClock,
            });
        }
        let mut timer = self.inner.timer.lock().expect("timer lock");
        let queries = timer.get_or_insert_with(|| self.timestamp_queries());
        self.checked("timed submit", || {
            let mut encoder = self.encoder();
            encode_pass(&mut encoder, &[dispatches], Some(&queries.set));
            encoder.resolve_query_set(&queries.set, 0..2, &queries.resolve, 0);
            encoder.copy_buffer_to_buffer(&queries.resolve, 0, &queries.readback, 0, 16);
            self.inner.queue.submit([encoder.finish()]);
        })?;
        let bytes = self.map_and_read(&queries.readback, 16)?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let nanoseconds = ticks[1].saturating_sub(ticks[0]) as f64
            * f64::from(self.inner.queue.get_timestamp_period());
        Ok(Timing {
            seconds: nanoseconds * 1e-9,
            source: TimingSource::GpuTimestamps,
        })
    }

    fn timestamp_queries(&self) -> TimestampQueries {
        let device = &self.inner.device;
        TimestampQueries {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("shadergrad timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamp resolve"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamp readback"),
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("shadergrad"),
            })
    }

    fn encode_and_submit(
        &self,
        copies: &[Copy],
        lists: &[&[Dispatch]],
        timestamps: Option<&wgpu::QuerySet>,
    ) {
        let mut encoder = self.encoder();
        for copy in copies {
            encoder.copy_buffer_to_buffer(&copy.source, 0, &copy.destination, 0, copy.bytes);
        }
        encode_pass(&mut encoder, lists, timestamps);
        self.inner.queue.submit([encoder.finish()]);
    }

    /// Blocks until every submitted command has finished.
    pub fn wait(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.poll_error(e))?;
        self.check_alive()
    }

    fn poll_error(&self, error: wgpu::PollError) -> Error {
        match self.inner.lost.lock().expect("lost lock").clone() {
            Some(reason) => Error::DeviceLost(reason),
            None => Error::DeviceLost(error.to_string()),
        }
    }

    /// Copies the first `bytes` bytes of `buffer` back to the host (waits for the GPU).
    pub fn read(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        self.read_many(&[(buffer, bytes)])
    }

    /// Copies the first bytes of several buffers back to the host, one after the other in
    /// the result: each run of them that fits in 256 MiB goes through one staging buffer,
    /// one submission and one map (a model's gradients, say, in one round trip instead of
    /// one per tensor). Each length must be a multiple of 4.
    pub fn read_many(&self, buffers: &[(&wgpu::Buffer, u64)]) -> Result<Vec<u8>> {
        let total: u64 = buffers.iter().map(|(_, bytes)| bytes).sum();
        let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        self.read_many_with(buffers, |bytes| out.extend_from_slice(bytes))?;
        Ok(out)
    }

    /// [`Gpu::read_many`] without the copy into a vector: `consume` sees the mapped bytes
    /// of each group in turn (in order, together the buffers' bytes one after the other).
    pub fn read_many_with(
        &self,
        buffers: &[(&wgpu::Buffer, u64)],
        mut consume: impl FnMut(&[u8]),
    ) -> Result<()> {
        // Staging buffers of at most 256 MiB (WebGPU's default buffer limit): the pool
        // rounds a request up by as much as a quarter, which must stay within the device's
        // limit, and a smaller staging buffer keeps less memory idle in the pool.
        let limit = self.inner.limits.max_buffer_size.min(256 << 20);
        let mut rest = buffers;
        while !rest.is_empty() {
            // The longest run that fits one staging buffer (at least one buffer).
            let mut bytes = rest[0].1;
            let mut count = 1;
            while count < rest.len() && bytes + rest[count].1 <= limit {
                bytes += rest[count].1;
                count += 1;
            }
            let (group, after) = rest.split_at(count);
            rest = after;
            if bytes == 0 {
                continue;
            }
            let staging = self.inner.pool.acquire(BufferKind::Readback, bytes);
            self.checked("readback copy", || {
                let mut encoder = self.encoder();
                let mut offset = 0;
                for (buffer, length) in group {
                    if *length > 0 {
                        encoder.copy_buffer_to_buffer(buffer, 0, staging.buffer(), offset, *length);
                    }
                    offset += length;
                }
                self.inner.queue.submit([encoder.finish()]);
            })?;
            self.map_with(staging.buffer(), bytes, &mut consume)?;
        }
        Ok(())
    }

    fn map_and_read(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.map_with(buffer, bytes, &mut |mapped: &[u8]| data = mapped.to_vec())?;
        Ok(data)
    }

    /// Maps the first `bytes` of `buffer` for reading (waiting for the GPU), hands them to
    /// `consume`, and unmaps.
    fn map_with(
        &self,
        buffer: &wgpu::Buffer,
        bytes: u64,
        consume: &mut impl FnMut(&[u8]),
    ) -> Result<()> {
        let slice = buffer.slice(0..bytes);
        let (sender, receiver) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        self.wait()?;
        receiver
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| Error::Readback("the GPU never finished mapping the buffer".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        {
            let mapped = slice
                .get_mapped_range()
                .map_err(|e| Error::Readback(e.to_string()))?;
            consume(&mapped);
        }
        buffer.unmap();
        Ok(())
    }
}

/// Records the dispatch lists into one compute pass, bracketed by timestamps if a query set
/// is given.
fn encode_pass(
    encoder: &mut wgpu::CommandEncoder,
    lists: &[&[Dispatch]],
    timestamps: Option<&wgpu::QuerySet>,
) {
    if lists.iter().all(|list| list.is_empty()) && timestamps.is_none() {
        return;
    }
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("shadergrad"),
        timestamp_writes: timestamps.map(|set| wgpu::ComputePassTimestampWrites {
            query_set: set,
            beginning_of_pass_write_index: Some(0),
            end_of_pass_write_index: Some(1),
        }),
    });
    for dispatch in lists.iter().flat_map(|list| list.iter()) {
        pass.set_pipeline(&dispatch.kernel.pipeline);
        pass.set_bind_group(0, &dispatch.bind_group, &[]);
        let [x, y, z] = dispatch.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}
