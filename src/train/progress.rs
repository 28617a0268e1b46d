//! The training progress display on stderr:
//!
//! ```text
//! epoch 3/10 [=========>                    ] 1234/5000  24% loss 0.4132 acc 0.9120 | 5.32k ex/s | ETA 0:38
//! ```
//!
//! On a terminal the line is redrawn in place (`\r`) at most ten times a second; into a file
//! or a CI log it is printed as a new line each time another tenth of the steps is done, so
//! the log stays short and readable. The pace (items per second, time left) leaves the
//! first step out: it includes the driver compiling every kernel on first use, up to a
//! minute on lavapipe with a cold cache. While that first step of a process takes more than
//! a few seconds, [`Progress::stderr`] says why nothing moves. [`format_progress`] makes the line from a
//! [`ProgressState`] and the elapsed time alone, so its tests fix both; [`Progress`] decides
//! when to draw and where.
//!
//! ```no_run
//! use shadergrad::train::progress::Progress;
//!
//! let (epochs, steps_per_epoch, batch) = (10, 50, 32);
//! let mut progress = Progress::stderr(epochs * steps_per_epoch, epochs as usize, "ex");
//! for epoch in 1..=epochs as usize {
//!     progress.start_epoch(epoch);
//!     for _ in 0..steps_per_epoch {
//!         let loss = 0.5; // from the training step
//!         progress.advance(batch, &[("loss", loss)]);
//!     }
//!     progress.message(&format!("epoch {epoch}: val_accuracy 0.93"));
//! }
//! progress.finish();
//! ```

use std::io::{IsTerminal, Stderr, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Everything the progress line shows, but the time.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressState {
    /// The current epoch, 1-based; 0 before the first.
    pub epoch: usize,
    /// The run's last epoch, shown as `epoch 3/10`; 0 when unknown (no epoch shown then).
    pub epochs: usize,
    /// Steps done since the start.
    pub step: u64,
    /// Steps of the whole run; 0 when unknown (no bar, percentage or ETA then).
    pub total_steps: u64,
    /// Items (examples, tokens) processed since the start, for the rate.
    pub items: u64,
    /// What an item is, as shown in the rate: "ex" gives "… ex/s".
    pub unit: &'static str,
    /// Named figures shown after the counts (loss, accuracy, …), in this order.
    pub values: Vec<(String, f64)>,
    /// Items and elapsed time at the end of the first step, which the pace leaves out.
    pub first_step: Option<(u64, Duration)>,
}

/// The widest bar drawn; narrower when the line would not fit.
const BAR_WIDTH: usize = 30;
/// No bar at all rather than one narrower than this.
const MIN_BAR_WIDTH: usize = 10;

/// The progress line for `state` after `elapsed`, at most `width - 1` characters long (the
/// last column is left free, as writing into it makes some terminals wrap, and a wrapped line
/// cannot be redrawn with `\r`). Items per second are averaged since the end of the first
/// step (since the start where `first_step` is unknown), so neither they nor the time left
/// show before a second step is done; the time left assumes the remaining steps go at that
/// pace; once every step is done the total time is shown instead.
pub fn format_progress(state: &ProgressState, elapsed: Duration, width: usize) -> String {
    let epoch = if state.epochs > 0 {
        format!("epoch {}/{}", state.epoch, state.epochs)
    } else {
        format!("epoch {}", state.epoch)
    };
    let done = state.step.min(state.total_steps);
    let mut counts = match (done * 100).checked_div(state.total_steps) {
        Some(percent) => format!("{}/{} {percent:>3}%", state.step, state.total_steps),
        None => format!("step {}", state.step),
    };
    for (name, value) in &state.values {
        counts.push_str(&format!(" {name} {}", format_value(*value)));
    }
    // The pace: items, steps and seconds since the first step ended (none until a second
    // step is done).
    let (items, steps, seconds) = match state.first_step {
        Some((first_items, first_elapsed)) => (
            state.items - first_items,
            state.step - 1,
            elapsed.saturating_sub(first_elapsed).as_secs_f64(),
        ),
        None => (state.items, state.step, elapsed.as_secs_f64()),
    };
    if items > 0 && seconds > 0.0 {
        counts.push_str(&format!(
            " | {} {}/s",
            format_rate(items as f64 / seconds),
            state.unit
        ));
    }
    if state.total_steps > 0 && state.step >= state.total_steps {
        counts.push_str(&format!(" | done in {}", format_duration(elapsed)));
    } else if state.total_steps > 0 && steps > 0 {
        let left = seconds * (state.total_steps - state.step) as f64 / steps as f64;
        counts.push_str(&format!(
            " | ETA {}",
            format_duration(Duration::from_secs_f64(left))
        ));
    }

    let room = width.saturating_sub(1);
    let without_bar = epoch.chars().count() + 1 + counts.chars().count();
    let bar_width = room.saturating_sub(without_bar + 3).min(BAR_WIDTH);
    let line = if state.total_steps > 0 && bar_width >= MIN_BAR_WIDTH {
        let fraction = done as f64 / state.total_steps as f64;
        format!("{epoch} {} {counts}", bar(fraction, bar_width))
    } else {
        format!("{epoch} {counts}")
    };
    line.chars().take(room).collect()
}

/// `[=====>    ]` with `width` cells between the brackets, `fraction` of them filled.
fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction * width as f64).floor() as usize).min(width);
    let mut cells = "=".repeat(filled);
    if filled < width {
        cells.push('>');
        cells.push_str(&" ".repeat(width - filled - 1));
    }
    format!("[{cells}]")
}

/// About four significant digits: 0.4132, 12.35, 1235, then 1.235e5 or 1.235e-4 outside.
fn format_value(value: f64) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    if value == 0.0 {
        return "0".into();
    }
    let magnitude = value.abs().log10().floor();
    if (-3.0..5.0).contains(&magnitude) {
        let decimals = (3.0 - magnitude).max(0.0) as usize;
        format!("{value:.decimals$}")
    } else {
        format!("{value:.3e}")
    }
}

/// A rate with a k/M/G suffix: 950.0, 5.32k, 1.25M.
fn format_rate(rate: f64) -> String {
    match rate {
        r if r < 1e3 => format!("{r:.1}"),
        r if r < 1e6 => format!("{:.2}k", r / 1e3),
        r if r < 1e9 => format!("{:.2}M", r / 1e6),
        r => format!("{:.2}G", r / 1e9),
    }
}

/// m:ss, or h:mm:ss from an hour on.
fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{minutes}:{seconds:02}")
    }
}

/// How the progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drawing {
    /// One line redrawn in place, for a terminal.
    Terminal,
    /// A new line each time another `every_percent` of the steps is done, and at the end.
    Log {
        /// The share of the run, in percent, between two lines.
        every_percent: u32,
    },
    /// Nothing at all, messages included.
    Hidden,
}

impl Drawing {
    /// [`Drawing::Terminal`] when stderr is a terminal, else a line every 10%.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Drawing::Terminal
        } else {
            Drawing::Log { every_percent: 10 }
        }
    }
}

/// The least time between two redraws on a terminal: ten a second look smooth and cost
/// nothing next to a training step.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

/// The terminal width assumed when `$COLUMNS` does not say (std cannot ask the terminal).
pub const DEFAULT_WIDTH: usize = 80;

/// A progress display over a whole training run. Write errors are ignored: losing the
/// display must not stop the training.
#[derive(Debug)]
pub struct Progress<W: Write = Stderr> {
    out: W,
    drawing: Drawing,
    width: usize,
    state: ProgressState,
    start: Instant,
    /// When the terminal line was last drawn; `None` when no line is on screen.
    drawn_at: Option<Instant>,
    /// Characters of the line on screen, to blank out what a shorter line leaves over.
    drawn_length: usize,
    /// Tenths (or whatever share [`Drawing::Log`] sets) of the run already logged.
    logged_share: u64,
    /// The step of the last logged line.
    logged_step: Option<u64>,
    finished: bool,
    /// Says why the display has not moved yet, if the first step is slow.
    waiting: Option<SlowStartNotice>,
}

/// Whether any display of this process has counted a step: only the first step of a
/// process compiles the kernels.
static A_STEP_WAS_DONE: AtomicBool = AtomicBool::new(false);

/// How long the first step may take before the display says why nothing moves.
pub const SLOW_START: Duration = Duration::from_secs(3);

/// What the display says when the first step is slow.
pub const SLOW_START_TEXT: &str = "waiting for the first step: the driver compiles each kernel \
    on first use (on lavapipe up to a minute the first time; later runs reuse its cache)";

/// Writes a line if it is still held after a delay: for a wait of a length nobody can know
/// in advance. Dropping it before then writes nothing; dropping it after waits for the line
/// to be out, so nothing is written into it.
#[derive(Debug)]
pub struct SlowStartNotice {
    /// Whether the wait is over, and the thread's wake-up.
    over: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl SlowStartNotice {
    /// Starts a thread that writes `text` and a newline to `out` once `delay` has passed,
    /// unless the notice is dropped first.
    pub fn after(
        delay: Duration,
        text: &'static str,
        mut out: impl Write + Send + 'static,
    ) -> Self {
        let over = Arc::new((Mutex::new(false), Condvar::new()));
        let watched = Arc::clone(&over);
        let thread = std::thread::spawn(move || {
            let (lock, wake) = &*watched;
            let Ok(guard) = lock.lock() else { return };
            let Ok((over, _)) = wake.wait_timeout_while(guard, delay, |over| !*over) else {
                return;
            };
            if !*over {
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        });
        SlowStartNotice {
            over,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowStartNotice {
    fn drop(&mut self) {
        let (lock, wake) = &*self.over;
        if let Ok(mut over) = lock.lock() {
            *over = true;
        }
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Progress<Stderr> {
    /// A display on stderr over `total_steps` steps of `epochs` epochs, drawn as
    /// [`Drawing::for_stderr`] says, as wide as `$COLUMNS` or else [`DEFAULT_WIDTH`]. Until
    /// the process's first step is done, [`SLOW_START_TEXT`] is printed if it takes more
    /// than [`SLOW_START`].
    pub fn stderr(total_steps: u64, epochs: usize, unit: &'static str) -> Self {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|columns| columns.trim().parse().ok())
            .unwrap_or(DEFAULT_WIDTH);
        let mut progress = Progress::new(
            std::io::stderr(),
            Drawing::for_stderr(),
            width,
            total_steps,
            epochs,
            unit,
        );
        if !A_STEP_WAS_DONE.load(Ordering::Relaxed) {
            progress.waiting = Some(SlowStartNotice::after(
                SLOW_START,
                SLOW_START_TEXT,
                std::io::stderr(),
            ));
        }
        progress
    }
}

impl<W: Write> Progress<W> {
    /// A display writing to `out`; the clock starts now.
    pub fn new(
        out: W,
        drawing: Drawing,
        width: usize,
        total_steps: u64,
        epochs: usize,
        unit: &'static str,
    ) -> Self {
        Progress {
            out,
            drawing,
            width,
            state: ProgressState {
                epoch: 0,
                epochs,
                step: 0,
                total_steps,
                items: 0,
                unit,
                values: Vec::new(),
                first_step: None,
            },
            start: Instant::now(),
            drawn_at: None,
            drawn_length: 0,
            logged_share: 0,
            logged_step: None,
            finished: false,
            waiting: None,
        }
    }

    /// What the line shows now.
    pub fn state(&self) -> &ProgressState {
        &self.state
    }

    /// The time since the display was made.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Sets the epoch shown (1-based).
    pub fn start_epoch(&mut self, epoch: usize) {
        self.state.epoch = epoch;
    }

    /// Counts one step that processed `items` items, sets the named `values` (others keep
    /// their last value, so a loss read back every N steps stays shown between reads) and
    /// draws if it is time to.
    pub fn advance(&mut self, items: u64, values: &[(&str, f64)]) {
        self.advance_at(Instant::now(), items, values);
    }

    fn advance_at(&mut self, now: Instant, items: u64, values: &[(&str, f64)]) {
        self.waiting = None;
        A_STEP_WAS_DONE.store(true, Ordering::Relaxed);
        self.state.step += 1;
        self.state.items += items;
        if self.state.step == 1 {
            self.state.first_step = Some((items, now.duration_since(self.start)));
        }
        for &(name, value) in values {
            match self
                .state
                .values
                .iter_mut()
                .find(|(known, _)| known == name)
            {
                Some((_, slot)) => *slot = value,
                None => self.state.values.push((name.to_string(), value)),
            }
        }
        match self.drawing {
            Drawing::Terminal => {
                let due = self
                    .drawn_at
                    .is_none_or(|drawn| now.duration_since(drawn) >= REDRAW_INTERVAL);
                if due {
                    self.redraw(now);
                }
            }
            Drawing::Log { every_percent } => {
                if self.state.total_steps > 0 && every_percent > 0 {
                    let share = self.state.step.min(self.state.total_steps) * 100
                        / (self.state.total_steps * u64::from(every_percent));
                    if share > self.logged_share {
                        self.logged_share = share;
                        self.log_line(now);
                    }
                }
            }
            Drawing::Hidden => {}
        }
    }

    /// Prints `text` on a line of its own (e.g. an epoch's validation results) without
    /// breaking the progress line, which is drawn again below it at the next step.
    pub fn message(&mut self, text: &str) {
        self.waiting = None;
        match self.drawing {
            Drawing::Terminal => {
                let blank = self.drawn_length.saturating_sub(text.chars().count());
                let _ = write!(self.out, "\r{text}{}\n", " ".repeat(blank));
                let _ = self.out.flush();
                self.drawn_at = None;
                self.drawn_length = 0;
            }
            Drawing::Log { .. } => {
                let _ = writeln!(self.out, "{text}");
                let _ = self.out.flush();
            }
            Drawing::Hidden => {}
        }
    }

    /// Draws the final state and ends the line. Dropping the display does the same, so an
    /// error that stops the training prints below the progress line, not into it.
    pub fn finish(&mut self) {
        self.finish_at(Instant::now());
    }

    fn finish_at(&mut self, now: Instant) {
        self.waiting = None;
        if self.finished {
            return;
        }
        self.finished = true;
        match self.drawing {
            Drawing::Terminal => {
                self.redraw(now);
                let _ = self.out.write_all(b"\n");
                let _ = self.out.flush();
            }
            Drawing::Log { .. } => {
                if self.logged_step != Some(self.state.step) {
                    self.log_line(now);
                }
            }
            Drawing::Hidden => {}
        }
    }

    fn redraw(&mut self, now: Instant) {
        let line = format_progress(&self.state, now.duration_since(self.start), self.width);
        let length = line.chars().count();
        let blank = self.drawn_length.saturating_sub(length);
        let _ = write!(self.out, "\r{line}{}", " ".repeat(blank));
        let _ = self.out.flush();
        self.drawn_at = Some(now);
        self.drawn_length = length;
    }

    fn log_line(&mut self, now: Instant) {
        // Log lines are not redrawn, so they may be as long as they need.
        let line = format_progress(&self.state, now.duration_since(self.start), usize::MAX);
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
        self.logged_step = Some(self.state.step);
    }
}

impl<W: Write> Drop for Progress<W> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64, items: u64) -> ProgressState {
        ProgressState {
            epoch: 3,
            epochs: 10,
            step,
            total_steps: 5000,
            items,
            unit: "ex",
            values: vec![("loss".into(), 0.41321), ("acc".into(), 0.912)],
            first_step: None,
        }
    }

    #[test]
    fn the_pace_leaves_the_first_step_out() {
        // The first step took 40 s (compiling) for 32 examples; 10 more took 1 s for 320:
        // 320 ex/s, and 4989 steps left at 10 a second.
        let mut warm = state(11, 352);
        warm.first_step = Some((32, Duration::from_secs(40)));
        let line = format_progress(&warm, Duration::from_secs(41), 200);
        assert!(line.ends_with("| 320.0 ex/s | ETA 8:18"), "{line}");
        // With the first step alone there is no pace to go by yet.
        let mut first = state(1, 32);
        first.first_step = Some((32, Duration::from_secs(40)));
        let line = format_progress(&first, Duration::from_secs(40), 200);
        assert!(
            line.ends_with("1/5000   0% loss 0.4132 acc 0.9120"),
            "{line}"
        );
    }

    /// A writer into a buffer the test keeps.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(data)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_start_notice_speaks_only_once_its_delay_is_over() {
        let quiet = Shared::default();
        drop(SlowStartNotice::after(
            Duration::from_secs(3600),
            "slow",
            quiet.clone(),
        ));
        assert!(quiet.0.lock().unwrap().is_empty());
        let spoken = Shared::default();
        let notice = SlowStartNotice::after(Duration::from_millis(1), "slow", spoken.clone());
        while spoken.0.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(notice);
        assert_eq!(spoken.0.lock().unwrap().as_slice(), b"slow\n");
    }

    #[test]
    fn the_line_shows_every_part() {
        // 1234 of 5000 steps in 12.34 s: 39488 examples → 3200 ex/s; 3766 steps left at
        // 100 steps/s → 37.66 s.
        let line = format_progress(&state(1234, 39_488), Duration::from_millis(12_340), 200);
        assert_eq!(
            line,
            "epoch 3/10 [=======>                      ] 1234/5000  24% loss 0.4132 acc 0.9120 \
             | 3.20k ex/s | ETA 0:37"
        );
    }

    #[test]
    fn the_last_line_gives_the_total_time() {
        let line = format_progress(&state(5000, 160_000), Duration::from_secs(3725), 200);
        assert_eq!(
            line,
            "epoch 3/10 [==============================] 5000/5000 100% loss 0.4132 acc 0.9120 \
             | 43.0 ex/s | done in 1:02:05"
        );
    }

    #[test]
    fn the_bar_narrows_then_goes_to_fit_the_width() {
        let full = format_progress(&state(2500, 0), Duration::from_secs(10), 200);
        assert!(
            full.contains(&format!("[{}>{}]", "=".repeat(15), " ".repeat(14))),
            "{full}"
        );
        let narrow = format_progress(&state(2500, 0), Duration::from_secs(10), 80);
        assert_eq!(narrow.len(), 79, "{narrow}");
        assert!(
            narrow.contains(&format!("[{}>{}]", "=".repeat(8), " ".repeat(8))),
            "{narrow}"
        );
        let no_bar = format_progress(&state(2500, 0), Duration::from_secs(10), 60);
        assert!(!no_bar.contains('['), "{no_bar}");
        assert_eq!(no_bar.len(), 59, "{no_bar}");
        assert!(
            no_bar.starts_with("epoch 3/10 2500/5000  50% loss 0.4132"),
            "{no_bar}"
        );
    }

    #[test]
    fn an_unknown_total_shows_the_count_only() {
        let mut open_ended = state(7, 70);
        open_ended.total_steps = 0;
        open_ended.epochs = 0;
        open_ended.values.clear();
        let line = format_progress(&open_ended, Duration::from_secs(7), 200);
        assert_eq!(line, "epoch 3 step 7 | 10.0 ex/s");
    }

    #[test]
    fn values_keep_about_four_significant_digits() {
        assert_eq!(format_value(0.41321), "0.4132");
        assert_eq!(format_value(12.3456), "12.35");
        assert_eq!(format_value(-1234.56), "-1235");
        assert_eq!(format_value(0.0012345), "0.001234");
        assert_eq!(format_value(0.000012345), "1.234e-5");
        assert_eq!(format_value(123456.0), "1.235e5");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "inf");
        assert_eq!(format_rate(950.0), "950.0");
        assert_eq!(format_rate(1_250_000.0), "1.25M");
        assert_eq!(format_duration(Duration::from_secs(59)), "0:59");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1:00:00");
    }

    fn written(progress: &Progress<Vec<u8>>) -> String {
        String::from_utf8(progress.out.clone()).unwrap()
    }

    #[test]
    fn the_terminal_redraws_at_most_ten_times_a_second() {
        let mut progress = Progress::new(Vec::new(), Drawing::Terminal, 100, 1000, 1, "ex");
        let start = progress.start;
        // A step every 5 ms for 5 s: draws at 5 ms, 105 ms, …, 4905 ms (50), then the final one.
        for step in 1..=1000u64 {
            progress.advance_at(start + Duration::from_millis(5 * step), 1, &[("loss", 1.0)]);
        }
        progress.finish_at(start + Duration::from_secs(6));
        let text = written(&progress);
        assert_eq!(text.matches('\r').count(), 51, "{text:?}");
        assert!(text.ends_with("done in 0:06\n"), "{text:?}");
        assert_eq!(text.matches('\n').count(), 1);
    }

    #[test]
    fn a_message_clears_the_line_and_the_bar_comes_back() {
        let mut progress = Progress::new(Vec::new(), Drawing::Terminal, 100, 4, 2, "ex");
        let start = progress.start;
        progress.start_epoch(1);
        progress.advance_at(start + Duration::from_millis(10), 8, &[("loss", 2.0)]);
        let drawn = progress.drawn_length;
        progress.message("epoch 1: ok");
        progress.advance_at(start + Duration::from_millis(20), 8, &[]);
        let text = written(&progress);
        let message = format!("\repoch 1: ok{}\n", " ".repeat(drawn - 11));
        assert!(text.contains(&message), "{text:?}");
        assert!(
            text.ends_with("loss 2.000 | 800.0 ex/s | ETA 0:00"),
            "{text:?}"
        );
    }

    #[test]
    fn a_log_gets_a_line_per_tenth_and_one_at_the_end() {
        let mut progress = Progress::new(
            Vec::new(),
            Drawing::Log { every_percent: 10 },
            80,
            95,
            1,
            "ex",
        );
        let start = progress.start;
        for step in 1..=95u64 {
            progress.advance_at(start + Duration::from_secs(step), 1, &[]);
        }
        progress.finish_at(start + Duration::from_secs(96));
        let text = written(&progress);
        let lines: Vec<&str> = text.lines().collect();
        // 10% of 95 steps is 9.5: lines after steps 10, 19, 29, 38, 48, 57, 67, 76, 86, 95.
        assert_eq!(lines.len(), 10, "{text}");
        assert!(!text.contains('\r'));
        assert!(lines[0].contains(" 10/95  10%"), "{}", lines[0]);
        assert!(lines[1].contains(" 19/95  20%"), "{}", lines[1]);
        assert!(lines[9].contains(" 95/95 100%"), "{}", lines[9]);
    }

    #[test]
    fn dropping_an_unfinished_display_ends_its_line() {
        let mut out = Vec::new();
        {
            let mut progress = Progress::new(&mut out, Drawing::Terminal, 80, 10, 1, "ex");
            progress.advance(1, &[]);
        }
        assert!(out.ends_with(b"\n"));
        let mut hidden = Progress::new(Vec::new(), Drawing::Hidden, 80, 10, 1, "ex");
        hidden.advance(1, &[]);
        hidden.message("quiet");
        hidden.finish();
        assert!(written(&hidden).is_empty());
    }
}
