//! Data-parallel steps for the trainers: the replicas of a model beyond the first, each
//! computing the gradients of its share of every batch, summed over every replica of every
//! process ([`GradientSum`]) before each replica applies the same update. The trainers keep
//! their first replica (which validates and saves) and hand it to every step.

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::seq2seq::dropout_seed;
use crate::nn::Parameters;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::parallel::{synchronize_parameters, Collective, GradientSum, SumTiming};
use crate::train::resume_optimizer;

/// What one replica's forward and backward pass over its share of a batch gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ShareReport {
    /// The loss: the mean over the share's items.
    pub loss: f32,
    /// What the mean is over: target tokens, characters, examples.
    pub items: usize,
    /// How many of those the model predicted right.
    pub correct: usize,
}

/// A model that data-parallel training replicates.
pub(crate) trait Replica: Send {
    /// What one step trains on; cut into shares, one per replica.
    type Batch: Sync;

    /// `batch` cut into `parts` shares of consecutive rows.
    fn shares(batch: &Self::Batch, parts: usize) -> Result<Vec<Self::Batch>>;

    /// What the loss over `batch` averages over: target tokens, characters, examples.
    fn items(batch: &Self::Batch) -> usize;

    /// The parameters, whose gradients the step leaves and the optimizer reads.
    fn parameters(&self) -> &Parameters;

    /// The forward and backward pass over `share`, leaving the gradients of its mean loss in
    /// the parameters' gradients, without an update. `dropout_seed` is the share's own.
    fn gradients(&mut self, share: &Self::Batch, dropout_seed: u32) -> Result<ShareReport>;
}

/// The replicas beyond the first, with their optimizers, and how the gradients of all of
/// them meet.
pub(crate) struct DataParallel<'c, R: Replica> {
    others: Vec<(R, Optimizer)>,
    sum: GradientSum,
    collective: &'c dyn Collective,
    command: &'static str,
}

impl<'c, R: Replica> DataParallel<'c, R> {
    /// The data-parallel step of `first` (this process's first replica, which its caller
    /// keeps) and of a replica on each of `gpus` that `make` builds (given its number among
    /// this process's replicas, from 1), each with an optimizer of `optimizer` (resumed
    /// from `resumed` when given); all made to hold process 0's first replica's parameters.
    pub fn new(
        command: &'static str,
        first: &R,
        gpus: &[Gpu],
        (optimizer, resumed): (OptimizerConfig, Option<&Checkpoint>),
        collective: &'c dyn Collective,
        make: impl Fn(usize, &Gpu) -> Result<R>,
    ) -> Result<Self> {
        let mut others = Vec::with_capacity(gpus.len());
        for (index, gpu) in gpus.iter().enumerate() {
            let replica = make(index + 1, gpu)?;
            let mut replica_optimizer = replica.parameters().optimizer(optimizer)?;
            if let Some(checkpoint) = resumed {
                resume_optimizer(gpu, &mut replica_optimizer, checkpoint, command)?;
            }
            others.push((replica, replica_optimizer));
        }
        let mut parameters = vec![first.parameters().clone()];
        parameters.extend(
            others
                .iter()
                .map(|(replica, _)| replica.parameters().clone()),
        );
        let sum = GradientSum::new(&parameters)?;
        // Every process must hold the same model, or the sums would mix unlike numbers.
        let numel = sum.numel();
        let ours = [(numel >> 20) as f32, (numel & 0xF_FFFF) as f32];
        let mut first_process = ours;
        collective.broadcast_from_root(&mut first_process)?;
        if first_process != ours {
            return Err(Error::invalid(
                command,
                format!(
                    "process {}'s model has {numel} parameters, process 0's {}: every process \
                     must build the same model (the same data, flags and checkpoint)",
                    collective.rank(),
                    ((first_process[0] as usize) << 20) + first_process[1] as usize
                ),
            ));
        }
        synchronize_parameters(&parameters, collective)?;
        Ok(DataParallel {
            others,
            sum,
            collective,
            command,
        })
    }

    /// Makes every replica hold process 0's first replica's parameters again. Each replica
    /// applies the same update to the same parameters, but adapters of different kinds may
    /// round it differently; the trainers call this after every epoch, so that such drift
    /// never outlasts one.
    pub fn resynchronize(&self, first: &R) -> Result<()> {
        let mut parameters = vec![first.parameters().clone()];
        parameters.extend(
            self.others
                .iter()
                .map(|(replica, _)| replica.parameters().clone()),
        );
        synchronize_parameters(&parameters, self.collective)
    }

    /// Replicas in every process: the shares each batch is cut into.
    pub fn replicas_in_all(&self) -> usize {
        (1 + self.others.len()) * self.collective.size()
    }

    /// One step over `batch`: it is cut into a share per replica of every process, this
    /// process's replicas (`first` first) compute the gradients of theirs, the gradients
    /// are summed over every replica of every process, each weighted by its share of the
    /// batch's items, and every local replica applies the update. Returns the whole batch's
    /// report and whether process 0 asked (`stop_after`) to stop after this step; the sum's
    /// timing is added to `exchange`.
    pub fn step(
        &mut self,
        first: &mut R,
        optimizer: &mut Optimizer,
        batch: &R::Batch,
        (run_seed, step): (u64, u64),
        stop_after: bool,
        exchange: &mut ExchangeTotals,
    ) -> Result<(ShareReport, bool)> {
        let local = 1 + self.others.len();
        let shares = R::shares(batch, self.replicas_in_all())?;
        let items = R::items(batch);
        let start = self.collective.rank() * local;
        let mine = &shares[start..start + local];
        let seeds: Vec<u32> = (start..start + local)
            .map(|share| share_dropout_seed(run_seed, step, share))
            .collect();
        optimizer.prepare_step(step)?;
        for (_, replica_optimizer) in &mut self.others {
            replica_optimizer.prepare_step(step)?;
        }
        let command = self.command;
        // Each replica on its own thread, so that the devices work at once.
        let reports = std::thread::scope(|scope| {
            let others: Vec<_> = self
                .others
                .iter_mut()
                .zip(&mine[1..])
                .zip(&seeds[1..])
                .map(|(((replica, _), share), &seed)| {
                    scope.spawn(move || replica.gradients(share, seed))
                })
                .collect();
            let mut reports = vec![first.gradients(&mine[0], seeds[0])];
            for handle in others {
                reports.push(handle.join().unwrap_or_else(|_| {
                    Err(Error::invalid(command, "a replica's thread panicked"))
                }));
            }
            reports
        })
        .into_iter()
        .collect::<Result<Vec<ShareReport>>>()?;
        // Each replica's loss is the mean over its share: weighing it by the share's items
        // makes the sum the gradient of the whole batch's mean.
        let weights: Vec<f32> = reports
            .iter()
            .map(|r| r.items as f32 / items.max(1) as f32)
            .collect();
        let mut counters = [
            reports.iter().zip(&weights).map(|(r, w)| r.loss * w).sum(),
            reports.iter().map(|r| r.correct as f32).sum(),
            f32::from(u8::from(stop_after)),
        ];
        exchange.add(&self.sum.sum(self.collective, &weights, &mut counters)?);
        optimizer.update()?;
        for (_, replica_optimizer) in &self.others {
            replica_optimizer.update()?;
        }
        let report = ShareReport {
            loss: counters[0],
            items,
            correct: counters[1] as usize,
        };
        Ok((report, counters[2] > 0.0))
    }
}

/// The dropout seed of share `share` of a step: share 0 draws what one device would.
fn share_dropout_seed(run_seed: u64, step: u64, share: usize) -> u32 {
    dropout_seed(
        run_seed ^ (share as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93),
        step,
    )
}

/// Process 0's choice (a small number: a trainer's reason to stop, say), on every process.
pub(crate) fn leaders_choice(collective: &dyn Collective, choice: u8) -> Result<u8> {
    if collective.size() == 1 {
        return Ok(choice);
    }
    let mut shared = [f32::from(choice)];
    collective.broadcast_from_root(&mut shared)?;
    Ok(shared[0] as u8)
}

/// The first of a trainer's devices (the one that validates and saves); an error when there
/// are none.
pub(crate) fn first_device<'g>(command: &'static str, gpus: &'g [Gpu]) -> Result<&'g Gpu> {
    gpus.first()
        .ok_or_else(|| Error::invalid(command, "no devices: expected at least one"))
}

/// The refusal of a batch smaller than the replicas it is shared among.
pub(crate) fn check_batch_fits(
    command: &'static str,
    (batch, unit): (usize, &str),
    replicas_per_process: usize,
    collective: &dyn Collective,
) -> Result<()> {
    let shares = replicas_per_process * collective.size();
    if shares > 1 && batch < shares {
        return Err(Error::invalid(
            command,
            format!(
                "a batch of {batch} {unit} cannot be shared among {shares} replicas ({}): \
                 expected a batch of at least {shares}",
                layout(replicas_per_process, collective)
            ),
        ));
    }
    Ok(())
}

/// The gradient sums of an epoch, for its report.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExchangeTotals {
    steps: u64,
    seconds: f64,
    all_reduce_seconds: f64,
    bytes: u64,
}

impl ExchangeTotals {
    pub fn add(&mut self, timing: &SumTiming) {
        self.steps += 1;
        self.seconds += timing.gather_s + timing.all_reduce_s + timing.scatter_s;
        self.all_reduce_seconds += timing.all_reduce_s;
        self.bytes = timing.bytes;
    }

    pub fn seconds_per_step(&self) -> f64 {
        self.seconds / self.steps.max(1) as f64
    }

    pub fn all_reduce_s_per_step(&self) -> f64 {
        self.all_reduce_seconds / self.steps.max(1) as f64
    }

    pub fn bytes_per_step(&self) -> f64 {
        self.bytes as f64
    }

    /// `gradient sum over 2 replicas: 3.1 ms per step (of which the all-reduce between
    /// processes 0.0 ms), 340.2 KiB summed per step`.
    pub fn describe(&self, replicas: usize) -> String {
        format!(
            "gradient sum over {replicas} replicas: {:.1} ms per step (of which the all-reduce \
             between processes {:.1} ms), {} summed per step",
            1e3 * self.seconds_per_step(),
            1e3 * self.all_reduce_s_per_step(),
            crate::gpu::human_bytes(self.bytes)
        )
    }

    /// The epoch's metrics record with the sums' figures added.
    pub fn recorded(&self, record: super::metrics::EpochMetrics) -> super::metrics::EpochMetrics {
        record
            .with("gradient_sum_s_per_step", self.seconds_per_step())
            .with("all_reduce_s_per_step", self.all_reduce_s_per_step())
            .with("all_reduce_bytes_per_step", self.bytes_per_step())
    }
}

/// `2 per process × 3 processes` (or `× 1 process`).
fn layout(replicas_per_process: usize, collective: &dyn Collective) -> String {
    match collective.size() {
        1 => format!("{replicas_per_process} per process × 1 process"),
        processes => format!("{replicas_per_process} per process × {processes} processes"),
    }
}

/// `; data-parallel over 4 replicas (2 per process × 2 processes), each batch of 64 shared
/// among them`, or nothing for one replica.
pub(crate) fn describe_replicas(
    replicas_per_process: usize,
    collective: &dyn Collective,
    batch: usize,
) -> String {
    let all = replicas_per_process * collective.size();
    if all == 1 {
        return String::new();
    }
    format!(
        "; data-parallel over {all} replicas ({}), each batch of {batch} shared among them",
        layout(replicas_per_process, collective)
    )
}
