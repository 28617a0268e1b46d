//! What the generators of built-in tasks share: a check, before anything is drawn, that the
//! examples asked for fit in memory, and [`GenerationProgress`] handed to a callback while a
//! long generation runs (the library never prints; the command line shows it on stderr).

use std::fmt;
use std::time::{Duration, Instant};

use crate::limits::{available_host_memory, Bytes};
use crate::{Error, Result};

/// Fails at once when `count` examples (`unit`: "pairs", "points") of about
/// `bytes_per_example` bytes each would take more than half the memory this machine has free
/// ([`available_host_memory`]), leaving the other half to the model and the GPU driver; where
/// the free memory is unknown, more than the largest allocation there can be (`isize::MAX`
/// bytes), so that a generator's sizes never overflow. `asked` names the sizes that asked for
/// them, such as the command line's `--train-size 100000000 + --valid-size 1000`.
pub(crate) fn check_fits_in_memory(
    asked: &str,
    count: u128,
    unit: &str,
    bytes_per_example: u64,
) -> Result<()> {
    check_fits_in(
        asked,
        count,
        unit,
        bytes_per_example,
        available_host_memory(),
    )
}

/// [`check_fits_in_memory`] against `free` bytes of free memory.
fn check_fits_in(
    asked: &str,
    count: u128,
    unit: &str,
    bytes_per_example: u64,
    free: Option<u64>,
) -> Result<()> {
    let (budget, limit) = match free {
        Some(free) => (
            free / 2,
            format!("half of the {} free on this machine", Bytes(free)),
        ),
        None => (
            isize::MAX as u64,
            "the largest allocation there can be".to_string(),
        ),
    };
    let needed = count.saturating_mul(u128::from(bytes_per_example));
    if needed <= u128::from(budget) {
        return Ok(());
    }
    Err(Error::invalid(
        "generated data",
        format!(
            "{asked}: {count} {unit} of about {} each need {}, more than {limit}; at most {} \
             {unit} fit",
            Bytes(bytes_per_example),
            Bytes(u64::try_from(needed).unwrap_or(u64::MAX)),
            budget / bytes_per_example.max(1)
        ),
    ))
}

/// How far a generator has come, as handed to a progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationProgress {
    /// Examples drawn so far, of `total`.
    pub done: u64,
    /// The number of examples to draw in all.
    pub total: u64,
    /// The time since generation started.
    pub elapsed: Duration,
}

impl fmt::Display for GenerationProgress {
    /// `generating examples: 1200000 of 10000000 (12%), 3 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = (self.done.saturating_mul(100))
            .checked_div(self.total)
            .unwrap_or(100);
        write!(
            f,
            "generating examples: {} of {} ({percent}%), {} s",
            self.done,
            self.total,
            self.elapsed.as_secs()
        )
    }
}

/// How long a generation runs before its progress is first reported: one that takes less
/// shows nothing.
const REPORT_AFTER: Duration = Duration::from_secs(2);
/// How often progress is reported after the first time.
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// Examples drawn between two looks at the clock (a look costs about as much as drawing a
/// short example).
const EXAMPLES_PER_CLOCK_READ: u64 = 1024;

/// Hands a generator's [`GenerationProgress`] to a callback: first once generation has taken
/// [`REPORT_AFTER`], then every [`REPORT_EVERY`], and at the end when it reported before.
pub(crate) struct ProgressReporter<'a> {
    report: &'a mut dyn FnMut(&GenerationProgress),
    total: u64,
    started: Instant,
    next_report: Duration,
    every: Duration,
    reported: bool,
}

impl<'a> ProgressReporter<'a> {
    /// A reporter of a generation of `total` examples, starting now.
    pub(crate) fn new(total: u64, report: &'a mut dyn FnMut(&GenerationProgress)) -> Self {
        Self::with_timing(total, REPORT_AFTER, REPORT_EVERY, report)
    }

    /// A reporter that reports first after `first`, then every `every`.
    pub(crate) fn with_timing(
        total: u64,
        first: Duration,
        every: Duration,
        report: &'a mut dyn FnMut(&GenerationProgress),
    ) -> Self {
        ProgressReporter {
            report,
            total,
            started: Instant::now(),
            next_report: first,
            every,
            reported: false,
        }
    }

    /// Call with the number of examples drawn, after each one.
    pub(crate) fn advance(&mut self, done: u64) {
        if !done.is_multiple_of(EXAMPLES_PER_CLOCK_READ) {
            return;
        }
        let elapsed = self.started.elapsed();
        if elapsed >= self.next_report {
            self.send(done, elapsed);
            self.next_report = elapsed + self.every;
        }
    }

    /// Call once every example is drawn.
    pub(crate) fn finish(&mut self) {
        if self.reported {
            self.send(self.total, self.started.elapsed());
        }
    }

    fn send(&mut self, done: u64, elapsed: Duration) {
        (self.report)(&GenerationProgress {
            done,
            total: self.total,
            elapsed,
        });
        self.reported = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_beyond_half_the_free_memory_names_its_sizes_and_the_limit() {
        check_fits_in("--points 1000", 1000, "points", 64, Some(128_000)).unwrap();
        check_fits_in("--points 1000", 1000, "points", 64, None).unwrap();
        let unknown = check_fits_in("--points", 1 << 60, "points", 64, None)
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("the largest allocation"), "{unknown}");
        let message = check_fits_in("--points 1001", 1001, "points", 64, Some(128_000))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("--points 1001: 1001 points of about 64 B each need 62.6 KiB")
                && message.contains("125.0 KiB free")
                && message.contains("at most 1000 points fit"),
            "{message}"
        );
        let huge = check_fits_in("--size", u128::from(u64::MAX), "pairs", 600, Some(1 << 30))
            .unwrap_err()
            .to_string();
        assert!(huge.contains("need 16.0 EiB"), "{huge}");
    }

    #[test]
    fn progress_is_reported_only_once_its_time_has_come_and_then_at_the_end() {
        let mut seen = Vec::new();
        let mut record = |progress: &GenerationProgress| seen.push(progress.done);
        let mut quick = ProgressReporter::new(3000, &mut record);
        for done in 1..=3000 {
            quick.advance(done);
        }
        quick.finish();
        assert!(
            seen.is_empty(),
            "a quick generation shows nothing: {seen:?}"
        );

        let mut record = |progress: &GenerationProgress| seen.push(progress.done);
        let mut slow =
            ProgressReporter::with_timing(3000, Duration::ZERO, Duration::ZERO, &mut record);
        for done in 1..=3000 {
            slow.advance(done);
        }
        slow.finish();
        assert_eq!(seen, [1024, 2048, 3000]);
    }

    #[test]
    fn progress_reads_as_a_count_a_percentage_and_seconds() {
        let progress = GenerationProgress {
            done: 1_200_000,
            total: 10_000_000,
            elapsed: Duration::from_millis(3_400),
        };
        assert_eq!(
            progress.to_string(),
            "generating examples: 1200000 of 10000000 (12%), 3 s"
        );
    }
}
