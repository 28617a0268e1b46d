//! Labelled points: the built-in 2-D classification tasks, and the user's own examples from a
//! CSV file.
//!
//! Each task is a small struct of its parameters whose `Default` is a good demonstration and
//! whose `generate(seed)` draws the examples from [`crate::rng::Rng`], so one seed always
//! gives the same dataset. None of the three can be solved by a linear classifier; a network
//! with one hidden layer learns each of them to well above 95% accuracy.
//!
//! | task        | classes | what it is                                                  |
//! |-------------|---------|-------------------------------------------------------------|
//! | [`Spirals`] | 3       | arms of Archimedean spirals winding out of the origin       |
//! | [`Xor`]     | 2       | four Gaussian blobs at (±1, ±1), labelled by XOR of signs   |
//! | [`Circles`] | 2       | a ring of radius 1 around a ring of radius 0.5              |
//!
//! The examples come class by class; [`Dataset::split`] and [`Dataset::batches`] shuffle.

use std::f32::consts::TAU;
use std::path::Path;
use std::str::FromStr;

use super::generating::{check_fits_in_memory, ProgressReporter};
use super::reading::{check_line_ends, text_warnings};
use super::{Dataset, GenerationProgress, Parsed};
use crate::rng::Rng;
use crate::{Error, Result};

/// What a generated point takes in memory on its way through training, by the estimate that
/// the generators' memory check weighs: measured at 56 B from the peak memory of generating
/// and splitting nine million points (the dataset, its train and test copies, the split's
/// index lists), rounded up.
const BYTES_PER_POINT: u64 = 64;

/// Fails at once when `points_per_class` points of each of `classes` classes would take
/// more than half the memory this machine has free, naming the size by `name`.
fn check_points_memory(name: &str, points_per_class: usize, classes: usize) -> Result<()> {
    check_fits_in_memory(
        &format!("{name} {points_per_class} × {classes} classes"),
        points_per_class as u128 * classes as u128,
        "points",
        BYTES_PER_POINT,
    )
}

/// Interleaved Archimedean spirals, one arm per class, as in Stanford's CS231n: arm `k` of `K`
/// starts at angle 2πk/K and winds out from the origin to radius 1 while its angle grows
/// by `sweep`; each point's angle is blurred by Gaussian noise of standard deviation `noise`.
///
/// The default has 3 classes (CS231n's setting): unlike the two binary tasks it exercises a
/// softmax over more than two classes, a linear classifier gets only about half of it right,
/// and a small MLP gets nearly all of it, so the gain from a hidden layer is plain to see.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spirals {
    /// The number of arms, one per class (at least 2).
    pub classes: usize,
    /// The points drawn on each arm.
    pub points_per_class: usize,
    /// Radians each arm turns from the origin to the rim (CS231n: 4, about 2/3 of a turn).
    /// Two arms need a whole turn (2π) or more: over 4 rad a straight line separates about
    /// 80% of their points.
    pub sweep: f32,
    /// Standard deviation of the angle's noise, in radians.
    pub noise: f32,
}

impl Default for Spirals {
    fn default() -> Self {
        Spirals {
            classes: 3,
            points_per_class: 100,
            sweep: 4.0,
            noise: 0.2,
        }
    }
}

impl Spirals {
    /// The `classes × points_per_class` points, class by class, each arm from the centre out;
    /// an error when they would take more than half the memory free.
    pub fn generate(&self, seed: u64) -> Result<Dataset> {
        self.generate_with_progress(seed, &mut |_| {})
    }

    /// [`Spirals::generate`], handing `report` its progress every two seconds when it takes
    /// more than two.
    pub fn generate_with_progress(
        &self,
        seed: u64,
        report: &mut dyn FnMut(&GenerationProgress),
    ) -> Result<Dataset> {
        check_count("spirals", "classes", self.classes, 2)?;
        check_count("spirals", "points_per_class", self.points_per_class, 1)?;
        check_finite("spirals", "sweep", self.sweep)?;
        check_noise("spirals", "noise", self.noise)?;
        check_points_memory("points_per_class", self.points_per_class, self.classes)?;
        let total = self.classes * self.points_per_class;
        self.draw(seed, &mut ProgressReporter::new(total as u64, report))
    }

    /// The points of [`Spirals::generate`], once the parameters are checked.
    fn draw(&self, seed: u64, progress: &mut ProgressReporter) -> Result<Dataset> {
        let mut rng = Rng::new(seed);
        let mut features = Vec::with_capacity(2 * self.classes * self.points_per_class);
        let mut labels = Vec::with_capacity(self.classes * self.points_per_class);
        for class in 0..self.classes {
            let start = TAU * class as f32 / self.classes as f32;
            for i in 0..self.points_per_class {
                // Radii (0, 1]: a point at radius 0 would sit on every arm at once.
                let radius = (i + 1) as f32 / self.points_per_class as f32;
                let angle = start + self.sweep * radius + self.noise * rng.normal();
                features.extend_from_slice(&[radius * angle.cos(), radius * angle.sin()]);
                labels.push(class as u32);
                progress.advance(labels.len() as u64);
            }
        }
        progress.finish();
        Dataset::new(features, labels, 2, self.classes)
    }
}

/// The XOR task: four Gaussian blobs of standard deviation `spread` centred at (±1, ±1);
/// class 1 for the blobs where x and y have opposite signs, class 0 where they agree. Each
/// class takes half its points from each of its two blobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Xor {
    /// The points of each class (half from each of its two blobs).
    pub points_per_class: usize,
    /// The standard deviation of each blob around its centre.
    pub spread: f32,
}

impl Default for Xor {
    fn default() -> Self {
        Xor {
            points_per_class: 100,
            spread: 0.3,
        }
    }
}

impl Xor {
    /// The `2 × points_per_class` points, class 0 then class 1; an error when they would
    /// take more than half the memory free.
    pub fn generate(&self, seed: u64) -> Result<Dataset> {
        self.generate_with_progress(seed, &mut |_| {})
    }

    /// [`Xor::generate`], handing `report` its progress every two seconds when it takes
    /// more than two.
    pub fn generate_with_progress(
        &self,
        seed: u64,
        report: &mut dyn FnMut(&GenerationProgress),
    ) -> Result<Dataset> {
        check_count("xor", "points_per_class", self.points_per_class, 1)?;
        check_noise("xor", "spread", self.spread)?;
        check_points_memory("points_per_class", self.points_per_class, 2)?;
        let total = 2 * self.points_per_class;
        self.draw(seed, &mut ProgressReporter::new(total as u64, report))
    }

    /// The points of [`Xor::generate`], once the parameters are checked.
    fn draw(&self, seed: u64, progress: &mut ProgressReporter) -> Result<Dataset> {
        let mut rng = Rng::new(seed);
        let mut features = Vec::with_capacity(4 * self.points_per_class);
        let mut labels = Vec::with_capacity(2 * self.points_per_class);
        for class in 0..2u32 {
            for i in 0..self.points_per_class {
                // Alternate between the class's two blobs: (s, s) for class 0, (s, −s) for 1.
                let x_sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                let y_sign = if class == 0 { x_sign } else { -x_sign };
                let x = x_sign + self.spread * rng.normal();
                let y = y_sign + self.spread * rng.normal();
                features.extend_from_slice(&[x, y]);
                labels.push(class);
                progress.advance(labels.len() as u64);
            }
        }
        progress.finish();
        Dataset::new(features, labels, 2, 2)
    }
}

/// Two concentric rings: class 0 on the circle of radius 1, class 1 on the circle of radius
/// `inner_radius` (scikit-learn's `make_circles` convention), each point at a uniform angle
/// with Gaussian noise of standard deviation `noise` added to its radius.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circles {
    /// The points on each ring.
    pub points_per_class: usize,
    /// The radius of class 1's ring, strictly between 0 and 1 (the outer ring has radius 1).
    pub inner_radius: f32,
    /// The standard deviation of the Gaussian noise added to each point's radius.
    pub noise: f32,
}

impl Default for Circles {
    fn default() -> Self {
        Circles {
            points_per_class: 100,
            inner_radius: 0.5,
            noise: 0.1,
        }
    }
}

impl Circles {
    /// The `2 × points_per_class` points, the outer ring (class 0) then the inner ring; an
    /// error when they would take more than half the memory free.
    pub fn generate(&self, seed: u64) -> Result<Dataset> {
        self.generate_with_progress(seed, &mut |_| {})
    }

    /// [`Circles::generate`], handing `report` its progress every two seconds when it takes
    /// more than two.
    pub fn generate_with_progress(
        &self,
        seed: u64,
        report: &mut dyn FnMut(&GenerationProgress),
    ) -> Result<Dataset> {
        check_count("circles", "points_per_class", self.points_per_class, 1)?;
        check_noise("circles", "noise", self.noise)?;
        if !(self.inner_radius > 0.0 && self.inner_radius < 1.0) {
            return Err(Error::invalid(
                "circles",
                format!(
                    "inner_radius must lie strictly between 0 and the outer radius 1, got {}",
                    self.inner_radius
                ),
            ));
        }
        check_points_memory("points_per_class", self.points_per_class, 2)?;
        let total = 2 * self.points_per_class;
        self.draw(seed, &mut ProgressReporter::new(total as u64, report))
    }

    /// The points of [`Circles::generate`], once the parameters are checked.
    fn draw(&self, seed: u64, progress: &mut ProgressReporter) -> Result<Dataset> {
        let mut rng = Rng::new(seed);
        let mut features = Vec::with_capacity(4 * self.points_per_class);
        let mut labels = Vec::with_capacity(2 * self.points_per_class);
        for (class, ring) in [1.0, self.inner_radius].into_iter().enumerate() {
            for _ in 0..self.points_per_class {
                let angle = rng.uniform(0.0, TAU);
                let radius = ring + self.noise * rng.normal();
                features.extend_from_slice(&[radius * angle.cos(), radius * angle.sin()]);
                labels.push(class as u32);
                progress.advance(labels.len() as u64);
            }
        }
        progress.finish();
        Dataset::new(features, labels, 2, 2)
    }
}

/// A built-in task by name, with its default parameters, for the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinTask {
    /// Interleaved spirals, [`Spirals`]: 3 classes by default.
    Spirals,
    /// The XOR of four blobs, [`Xor`]: 2 classes.
    Xor,
    /// Two concentric rings, [`Circles`]: 2 classes.
    Circles,
}

impl BuiltinTask {
    /// The names [`BuiltinTask::from_str`] accepts.
    pub const NAMES: [&'static str; 3] = ["spirals", "xor", "circles"];

    /// How many classes the task's default dataset has.
    pub fn classes(self) -> usize {
        match self {
            BuiltinTask::Spirals => Spirals::default().classes,
            BuiltinTask::Xor | BuiltinTask::Circles => 2,
        }
    }

    /// Fails at once, before anything is drawn, when `points_per_class` points of each class
    /// would take more than half the memory this machine has free, naming the size by
    /// `name` (the command line passes `"--points"`) and the most points that fit.
    pub fn check_memory(self, points_per_class: usize, name: &str) -> Result<()> {
        check_points_memory(name, points_per_class, self.classes())
    }

    /// The task's default dataset with `points_per_class` points of each class.
    pub fn generate(self, points_per_class: usize, seed: u64) -> Result<Dataset> {
        self.generate_with_progress(points_per_class, seed, &mut |_| {})
    }

    /// [`BuiltinTask::generate`], handing `report` its progress every two seconds when it
    /// takes more than two.
    pub fn generate_with_progress(
        self,
        points_per_class: usize,
        seed: u64,
        report: &mut dyn FnMut(&GenerationProgress),
    ) -> Result<Dataset> {
        match self {
            BuiltinTask::Spirals => Spirals {
                points_per_class,
                ..Spirals::default()
            }
            .generate_with_progress(seed, report),
            BuiltinTask::Xor => Xor {
                points_per_class,
                ..Xor::default()
            }
            .generate_with_progress(seed, report),
            BuiltinTask::Circles => Circles {
                points_per_class,
                ..Circles::default()
            }
            .generate_with_progress(seed, report),
        }
    }
}

impl FromStr for BuiltinTask {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "spirals" => Ok(BuiltinTask::Spirals),
            "xor" => Ok(BuiltinTask::Xor),
            "circles" => Ok(BuiltinTask::Circles),
            _ => Err(Error::invalid(
                "built-in task",
                format!(
                    "unknown task {name:?}; expected one of {}",
                    BuiltinTask::NAMES.join(", ")
                ),
            )),
        }
    }
}

/// Labels above this are refused: a classifier has one output per class, so a label in the
/// hundreds of thousands is almost surely a column that is not a label.
pub const MAX_LABEL: u32 = 65_535;

/// Features above this many per example are refused: a multi-layer perceptron's first layer
/// holds features × hidden weights, and a row of more is more likely a file whose line breaks
/// were lost than an example (28×28 digits have 784 values, a 128×128 colour image 49,152).
pub const MAX_FEATURES: usize = 100_000;

/// Reads a CSV file of examples; see [`parse_csv`] for the format and the errors.
pub fn read_csv(path: &Path) -> Result<Parsed<Dataset>> {
    parse_csv(&crate::files::read_text_file(path)?, path)
}

/// Parses CSV text of examples; `path` only names the file in errors and warnings.
///
/// Each line holds the features, then an integer class label, separated by commas with
/// optional spaces or tabs around them (no quoting). The first non-blank line is a header,
/// and skipped, when none of its fields is a number. Blank lines are skipped; lines end in
/// "\n" or "\r\n"; a UTF-8 byte order mark is allowed. Every data line must have as many
/// fields as the first one, and at most [`MAX_FEATURES`] features; features must be finite
/// numbers, labels whole numbers from 0 to [`MAX_LABEL`] (`2` or `2.0`), and at least two
/// different labels must occur (one class leaves a classifier nothing to tell apart). The
/// dataset has `max label + 1` classes. NUL bytes in a header are kept, with a
/// [`Warning`](super::Warning).
///
/// Errors are [`Error::Format`] naming the file, and the 1-based line number where there is
/// one.
pub fn parse_csv(text: &str, path: &Path) -> Result<Parsed<Dataset>> {
    let at_line =
        |line: usize, message: String| Error::format(path, format!("line {line}: {message}"));
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_line_ends(text, path)?;
    if text.trim().is_empty() {
        return Err(Error::format(
            path,
            "the file is empty; expected lines of features then an integer label, such as `0.5, -1.2, 1`",
        ));
    }
    let mut header: Option<(usize, usize)> = None; // (line, fields)
    let mut first_row: Option<(usize, usize)> = None; // (line, fields)
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if header.is_none()
            && first_row.is_none()
            && fields.iter().all(|f| f.parse::<f64>().is_err())
        {
            header = Some((line_number, fields.len()));
            continue;
        }
        match first_row {
            None => {
                if fields.len() < 2 {
                    return Err(at_line(
                        line_number,
                        "1 field; expected the features then the label, at least 2 fields \
                         separated by commas"
                            .into(),
                    ));
                }
                if fields.len() - 1 > MAX_FEATURES {
                    return Err(at_line(
                        line_number,
                        format!(
                            "{} features, more than the {MAX_FEATURES} an example may have",
                            fields.len() - 1
                        ),
                    ));
                }
                if let Some((header_line, header_fields)) = header {
                    if header_fields != fields.len() {
                        return Err(at_line(
                            header_line,
                            format!(
                                "the header has {header_fields} fields but the first data row (line {line_number}) has {}",
                                fields.len()
                            ),
                        ));
                    }
                }
                first_row = Some((line_number, fields.len()));
            }
            Some((first_line, expected)) if fields.len() != expected => {
                return Err(at_line(
                    line_number,
                    format!(
                        "{} fields, expected {expected} as on line {first_line} (the first data row)",
                        fields.len()
                    ),
                ));
            }
            Some(_) => {}
        }
        let (label_field, feature_fields) = fields
            .split_last()
            .expect("a data row has at least 2 fields, checked above");
        for (column, field) in feature_fields.iter().enumerate() {
            let value = parse_feature(field).map_err(|why| {
                at_line(
                    line_number,
                    format!("field {} ({field:?}) {why}", column + 1),
                )
            })?;
            features.push(value);
        }
        let label = parse_label(label_field).map_err(|why| {
            at_line(
                line_number,
                format!("the label {label_field:?} (field {}) {why}", fields.len()),
            )
        })?;
        labels.push(label);
    }
    let (Some((_, fields)), Some(&max_label)) = (first_row, labels.iter().max()) else {
        return Err(Error::format(path, "has a header but no data rows"));
    };
    if labels.iter().all(|&label| label == max_label) {
        return Err(Error::format(
            path,
            format!(
                "the examples have 1 class (every label is {max_label}); a classifier needs at \
                 least 2"
            ),
        ));
    }
    Ok(Parsed {
        contents: Dataset::new(features, labels, fields - 1, max_label as usize + 1)?,
        warnings: text_warnings(text, path),
    })
}

/// A feature field's value, or why it is not a valid one.
fn parse_feature(field: &str) -> std::result::Result<f32, &'static str> {
    if field.is_empty() {
        return Err("is empty");
    }
    let value: f32 = field.parse().map_err(|_| "is not a number")?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err("is not a finite f32 (it is NaN, infinite, or beyond ±3.4e38); features must be finite")
    }
}

/// A label field's class number, or why it is not a valid one.
fn parse_label(field: &str) -> std::result::Result<u32, String> {
    const EXPECTED: &str = "labels are class numbers 0, 1, 2, …";
    if field.is_empty() {
        return Err(format!("is empty; {EXPECTED}"));
    }
    let Ok(value) = field.parse::<f64>() else {
        return Err(format!(
            "is not a number; the last field is the label, and {EXPECTED}"
        ));
    };
    if !value.is_finite() {
        Err(format!("is not finite; {EXPECTED}"))
    } else if value < 0.0 {
        Err(format!("is negative; {EXPECTED}"))
    } else if value.fract() != 0.0 {
        Err(format!("is not a whole number; {EXPECTED}"))
    } else if value > f64::from(MAX_LABEL) {
        Err(format!("is above the largest label allowed, {MAX_LABEL}"))
    } else {
        Ok(value as u32)
    }
}

fn check_count(task: &'static str, name: &str, value: usize, least: usize) -> Result<()> {
    if value < least {
        return Err(Error::invalid(
            task,
            format!("{name} must be at least {least}, got {value}"),
        ));
    }
    Ok(())
}

fn check_finite(task: &'static str, name: &str, value: f32) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::invalid(
            task,
            format!("{name} must be finite, got {value}"),
        ));
    }
    Ok(())
}

fn check_noise(task: &'static str, name: &str, value: f32) -> Result<()> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(Error::invalid(
            task,
            format!("{name} must be a finite standard deviation of 0 or more, got {value}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The counts a generation of 3,000 points reports when every look at the clock reports.
    fn reported(draw: impl FnOnce(&mut ProgressReporter) -> Result<Dataset>) -> Vec<u64> {
        let mut seen = Vec::new();
        let mut record = |progress: &GenerationProgress| seen.push(progress.done);
        let mut progress =
            ProgressReporter::with_timing(3000, Duration::ZERO, Duration::ZERO, &mut record);
        assert_eq!(draw(&mut progress).unwrap().n, 3000);
        seen
    }

    #[test]
    fn each_task_reports_its_progress_up_to_the_last_point() {
        let spirals = Spirals {
            points_per_class: 1000,
            ..Spirals::default()
        };
        let xor = Xor {
            points_per_class: 1500,
            ..Xor::default()
        };
        let circles = Circles {
            points_per_class: 1500,
            ..Circles::default()
        };
        for seen in [
            reported(|progress| spirals.draw(7, progress)),
            reported(|progress| xor.draw(7, progress)),
            reported(|progress| circles.draw(7, progress)),
        ] {
            assert_eq!(seen, [1024, 2048, 3000]);
        }
    }
}
