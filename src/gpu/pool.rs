//! A buffer pool: freed buffers go back to a free list by size class and are handed out
//! again, so that a training loop stops allocating after its first step.
//!
//! Reusing a buffer that a submitted but unfinished command still reads is safe: every
//! later write to it goes through the same queue, which runs submissions in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a pooled buffer is for; each kind has its own free lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Tensor storage: read and written by shaders, copied to and from.
    Storage,
    /// Small kernel parameters.
    Uniform,
    /// Staging for readback: mappable for reading.
    Readback,
}

impl BufferKind {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            BufferKind::Storage => U::STORAGE | U::COPY_SRC | U::COPY_DST,
            BufferKind::Uniform => U::UNIFORM | U::COPY_DST,
            BufferKind::Readback => U::MAP_READ | U::COPY_DST,
        }
    }
}

/// The size a request of `bytes` is rounded up to: 256 B at least, then four classes per
/// power of two (2ᵏ, 1.25·2ᵏ, 1.5·2ᵏ, 1.75·2ᵏ), so at most a quarter is wasted.
pub fn size_class(bytes: u64) -> u64 {
    const SMALLEST: u64 = 256;
    if bytes <= SMALLEST {
        return SMALLEST;
    }
    let base = 1u64 << (63 - (bytes - 1).leading_zeros());
    let step = base / 4;
    base + (bytes - base).div_ceil(step) * step
}

/// Counters that show the pool at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers created on the device.
    pub allocated: u64,
    /// Requests served from the free lists.
    pub reused: u64,
    /// Bytes held in free lists, waiting for reuse.
    pub idle_bytes: u64,
}

#[derive(Default)]
struct FreeLists {
    lists: HashMap<(BufferKind, u64), Vec<wgpu::Buffer>>,
    idle_bytes: u64,
}

/// The pool itself; shared by every [`PooledBuffer`] it handed out.
pub struct BufferPool {
    device: wgpu::Device,
    /// The largest buffer a size class may round up to (the adapter's binding limit).
    max_bytes: u64,
    free: Mutex<FreeLists>,
    allocated: AtomicU64,
    reused: AtomicU64,
}

impl BufferPool {
    /// An empty pool that creates its buffers on `device`, none larger than `max_bytes` by
    /// rounding up (a request above that gets exactly the bytes it asks for, to a multiple of 16).
    pub fn new(device: wgpu::Device, max_bytes: u64) -> Arc<Self> {
        Arc::new(BufferPool {
            device,
            max_bytes,
            free: Mutex::new(FreeLists::default()),
            allocated: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        })
    }

    /// A buffer of at least `bytes` bytes (the caller has checked the adapter's limit).
    pub fn acquire(self: &Arc<Self>, kind: BufferKind, bytes: u64) -> PooledBuffer {
        // Rounding up must not push a buffer past the adapter's limit. Every buffer is a
        // whole number of vec4s, so that kernels may read any tensor through a vec4 view.
        let class = match size_class(bytes) {
            class if class <= self.max_bytes => class,
            _ => bytes.next_multiple_of(16),
        };
        let reused = {
            let mut free = self.free.lock().expect("buffer pool lock");
            let buffer = free.lists.get_mut(&(kind, class)).and_then(Vec::pop);
            if buffer.is_some() {
                free.idle_bytes -= class;
            }
            buffer
        };
        let buffer = match reused {
            Some(buffer) => {
                self.reused.fetch_add(1, Ordering::Relaxed);
                buffer
            }
            None => {
                self.allocated.fetch_add(1, Ordering::Relaxed);
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("shadergrad pooled buffer"),
                    size: class,
                    usage: kind.usage(),
                    mapped_at_creation: false,
                })
            }
        };
        PooledBuffer {
            buffer: Some(buffer),
            kind,
            class,
            pool: Arc::clone(self),
        }
    }

    fn release(&self, kind: BufferKind, class: u64, buffer: wgpu::Buffer) {
        let mut free = self.free.lock().expect("buffer pool lock");
        free.idle_bytes += class;
        free.lists.entry((kind, class)).or_default().push(buffer);
    }

    /// Destroys every idle buffer, giving its memory back to the device.
    pub fn trim(&self) {
        let mut free = self.free.lock().expect("buffer pool lock");
        for buffer in free.lists.drain().flat_map(|(_, list)| list) {
            buffer.destroy();
        }
        free.idle_bytes = 0;
    }

    /// The pool's counters so far: buffers created, requests reused, bytes idle.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            allocated: self.allocated.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            idle_bytes: self.free.lock().expect("buffer pool lock").idle_bytes,
        }
    }
}

/// A buffer on loan from the pool; it goes back when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    kind: BufferKind,
    class: u64,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    /// The wgpu buffer (its size is the size class, at least what was asked for).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("present until dropped")
    }
}

impl std::ops::Deref for PooledBuffer {
    type Target = wgpu::Buffer;

    fn deref(&self) -> &wgpu::Buffer {
        self.buffer()
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.release(self.kind, self.class, buffer);
        }
    }
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PooledBuffer({:?}, {} B)", self.kind, self.class)
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_waste_at_most_a_quarter() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(1025), 1280);
        for bytes in (1..200_000u64).step_by(97) {
            let class = size_class(bytes);
            assert!(class >= bytes);
            assert!(
                class <= 256 || class as f64 <= bytes as f64 * 1.25 + 1.0,
                "{bytes} -> {class}"
            );
        }
    }
}
