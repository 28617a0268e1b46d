//! Sizes checked before anything is allocated: a size a user typed (or a checkpoint's config
//! holds) is multiplied out with overflow checks and weighed against the adapter's largest
//! buffer and the memory this machine has free, so that a wrong size is an error within a
//! second that names it, never an allocation failure, an abort or minutes of swapping.

use std::fmt;

use crate::error::{Error, Result};

/// Overrides the free host memory [`available_host_memory`] reads from the system, in bytes:
/// for tests, and for a user who wants a run to stay within less than the machine has.
pub const HOST_MEMORY_ENV: &str = "SHADERGRAD_HOST_MEMORY";

/// The bytes of memory this machine has free for a new allocation: `$SHADERGRAD_HOST_MEMORY`
/// if set, else Linux's `MemAvailable`; `None` where neither says (then only the buffer
/// limits and overflow are checked).
pub fn available_host_memory() -> Option<u64> {
    if let Some(bytes) = std::env::var(HOST_MEMORY_ENV)
        .ok()
        .and_then(|text| text.trim().parse().ok())
    {
        return Some(bytes);
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_available(&meminfo)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The product of named sizes, or an error naming them when it overflows 64 bits:
/// `product("--batch × --length", &[batch, length])`.
pub fn product(what: &str, factors: &[usize]) -> Result<u64> {
    factors
        .iter()
        .try_fold(1u64, |acc, &factor| acc.checked_mul(factor as u64))
        .ok_or_else(|| {
            Error::invalid(
                "sizes",
                format!(
                    "{what} = {} overflows a 64-bit count",
                    factors
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(" × ")
                ),
            )
        })
}

/// The product of sizes, saturating at `u64::MAX` (which is past every limit): for
/// estimates, where an overflow only needs to fail the check that follows.
pub fn saturating_product(factors: &[usize]) -> u64 {
    factors
        .iter()
        .fold(1u64, |acc, &factor| acc.saturating_mul(factor as u64))
}

/// A sum of products of sizes, exact or an error: a parameter count from sizes that came
/// from a user or a file, which may overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// `None` once a product or the sum overflowed.
    total: Option<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally { total: Some(0) }
    }
}

impl Tally {
    /// An empty tally: a total of 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the product of `factors`.
    pub fn add(&mut self, factors: &[usize]) -> &mut Self {
        self.total = self.total.and_then(|total| {
            factors
                .iter()
                .try_fold(1u64, |acc, &factor| acc.checked_mul(factor as u64))
                .and_then(|product| total.checked_add(product))
        });
        self
    }

    /// The sum, or an error saying that `what` overflows.
    pub fn total(&self, what: &str) -> Result<u64> {
        self.total.ok_or_else(|| {
            Error::invalid(
                "sizes",
                format!("{what} overflows a 64-bit count: the sizes are far too large"),
            )
        })
    }
}

/// What a run will allocate, part by part, in bytes: built from the sizes asked for, then
/// checked as a whole with [`MemoryEstimate::check`].
#[derive(Debug, Clone, Default)]
pub struct MemoryEstimate {
    /// What each part is (named by the flags or fields that size it) and its bytes.
    parts: Vec<(String, u64)>,
    /// The largest single buffer: it must fit the adapter's buffer limit.
    largest_buffer: Option<(String, u64)>,
}

impl MemoryEstimate {
    /// An empty estimate: no parts, 0 bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// An estimate for training a model of `parameters` numbers: each with its gradient and
    /// the optimizer's two moments (Adam's; the most any rule keeps), spread over many
    /// buffers. The activations are added to it.
    pub fn for_training(parameters: u64) -> Self {
        let mut memory = Self::new();
        memory.spread(
            format!("the {parameters} parameters with their gradients and optimizer state"),
            parameters.saturating_mul(4),
        );
        memory
    }

    /// Adds `count` f32 (or u32) elements that live in one buffer, described by `what`.
    pub fn buffer(&mut self, what: impl Into<String>, count: u64) -> &mut Self {
        self.buffers(what, 1, count)
    }

    /// Adds `buffers` buffers of `count` 4-byte elements each, described by `what`.
    pub fn buffers(&mut self, what: impl Into<String>, buffers: u64, count: u64) -> &mut Self {
        let what = what.into();
        let one = count.saturating_mul(4);
        if self
            .largest_buffer
            .as_ref()
            .is_none_or(|(_, largest)| one > *largest)
        {
            self.largest_buffer = Some((what.clone(), one));
        }
        self.parts.push((what, one.saturating_mul(buffers)));
        self
    }

    /// Adds `count` 4-byte elements spread over many buffers (a model's parameters), which
    /// count towards the total only.
    pub fn spread(&mut self, what: impl Into<String>, count: u64) -> &mut Self {
        self.parts.push((what.into(), count.saturating_mul(4)));
        self
    }

    /// The bytes of every part together (saturating: an overflow is past any limit anyway).
    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |sum, (_, bytes)| sum.saturating_add(*bytes))
    }

    /// Errors, naming `context` and the largest part, when the largest buffer exceeds
    /// `max_buffer_bytes` (the adapter's limit) or the total exceeds `host_bytes` (the
    /// memory free: on a CPU adapter the device's memory is the host's, and every
    /// parameter is first built on the host).
    pub fn check_against(
        &self,
        context: &'static str,
        max_buffer_bytes: u64,
        host_bytes: Option<u64>,
    ) -> Result<()> {
        if let Some((what, bytes)) = &self.largest_buffer {
            if *bytes > max_buffer_bytes {
                return Err(Error::invalid(
                    context,
                    format!(
                        "{what} needs one buffer of {}, more than this adapter's largest \
                         buffer of {}",
                        Bytes(*bytes),
                        Bytes(max_buffer_bytes)
                    ),
                ));
            }
        }
        if let Some(host) = host_bytes {
            let total = self.total();
            if total > host {
                let (what, bytes) = self
                    .parts
                    .iter()
                    .max_by_key(|(_, bytes)| *bytes)
                    .cloned()
                    .unwrap_or_default();
                return Err(Error::invalid(
                    context,
                    format!(
                        "these sizes need about {} of memory, more than the {} free on this \
                         machine (the largest part: {what}, {})",
                        Bytes(total),
                        Bytes(host),
                        Bytes(bytes)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// [`MemoryEstimate::check_against`] this machine's free memory.
    pub fn check(&self, context: &'static str, max_buffer_bytes: u64) -> Result<()> {
        self.check_against(context, max_buffer_bytes, available_host_memory())
    }
}

/// A byte count for people: 512 B, 3.2 MiB, 11.0 TiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_gives_the_available_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_available(text), Some(2048 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn a_product_that_overflows_names_its_factors() {
        assert_eq!(product("a × b", &[3, 5]).unwrap(), 15);
        let message = product("--batch × --length", &[usize::MAX, 3])
            .unwrap_err()
            .to_string();
        assert!(message.contains("--batch × --length"), "{message}");
        assert!(message.contains("overflows"), "{message}");
    }

    #[test]
    fn an_estimate_checks_its_largest_buffer_and_its_total() {
        let mut estimate = MemoryEstimate::new();
        estimate
            .buffer("the embedding (--embed × vocabulary)", 1000)
            .buffers("the activations (--batch × --hidden)", 3, 500);
        assert_eq!(estimate.total(), 4000 + 6000);
        estimate.check_against("test", 4000, Some(10_000)).unwrap();
        let message = estimate
            .check_against("test", 3999, None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("the embedding"), "{message}");
        assert!(message.contains("3.9 KiB"), "{message}");
        let message = estimate
            .check_against("test", 4000, Some(9_999))
            .unwrap_err()
            .to_string();
        assert!(message.contains("9.8 KiB"), "{message}");
        assert!(message.contains("the activations"), "{message}");
    }

    #[test]
    fn a_tally_sums_products_and_says_when_it_overflows() {
        let mut tally = Tally::new();
        tally.add(&[3, 4]).add(&[5]);
        assert_eq!(tally.total("count").unwrap(), 17);
        tally.add(&[usize::MAX, 2]);
        let message = tally.total("the parameter count").unwrap_err().to_string();
        assert!(
            message.contains("the parameter count overflows"),
            "{message}"
        );
        assert_eq!(saturating_product(&[usize::MAX, 3]), u64::MAX);
        assert_eq!(saturating_product(&[7, 3]), 21);
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(3 * 1024 * 1024 + 200 * 1024).to_string(), "3.2 MiB");
        assert_eq!(Bytes(12_000_000_000_000).to_string(), "10.9 TiB");
    }
}
