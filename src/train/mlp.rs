//! `shadergrad train-mlp`: the textbook's first network, a multi-layer perceptron trained
//! with backprop on 2-D points (or the user's CSV), every step one GPU submission.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::checkpoint::{self, Checkpoint};
use crate::data::{share_rows, Batch};
use crate::data::{Dataset, LastBatch, Standardizer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::{CrossEntropySpec, Feed, Graph, Plan, Var};
use crate::models::{argmax, upgrade_legacy_checkpoint, LegacyName, WEIGHT_LAYOUT};
use crate::nn::{Activation, Mlp, Parameters};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::parallel::{Collective, SingleProcess};
use crate::train::metrics::{EpochMetrics, MetricsFile};
use crate::train::parallel::{
    check_batch_fits, describe_replicas, first_device, DataParallel, ExchangeTotals, Replica,
    ShareReport,
};
use crate::train::progress::Progress;
use crate::train::{first_resumed_epoch, resume_optimizer};

/// The label padding rows carry; the loss ignores it.
const PADDING: u32 = u32::MAX;
/// How often (in steps) the loss is read back for the progress display: a read waits for
/// the GPU, so reading every step would serialise it with the CPU.
const LOSS_EVERY: u64 = 10;

/// Everything `train-mlp` needs to know.
#[derive(Debug, Clone)]
pub struct MlpTraining {
    /// The training examples (the data is already split into these and `test`).
    pub train: Dataset,
    /// The held-out examples, measured after each epoch and at the end.
    pub test: Dataset,
    /// Hidden layer sizes.
    pub hidden: Vec<usize>,
    /// The nonlinearity after each hidden layer.
    pub activation: Activation,
    /// The update rule, learning rate, clipping and schedule.
    pub optimizer: OptimizerConfig,
    /// Examples per optimizer step; the last batch of an epoch is padded to this size.
    pub batch: usize,
    /// The last epoch to train, counted from the start of training: a run resumed after
    /// epoch 3 with `epochs` 5 trains epochs 4 and 5.
    pub epochs: usize,
    /// Seeds the initial weights and each epoch's shuffling.
    pub seed: u64,
    /// Saved after every epoch: the parameters, the optimizer's state and the epoch reached.
    pub save: Option<PathBuf>,
    /// A checkpoint of `save` to continue from: its parameters, optimizer state and epoch
    /// (the architecture must be the one above).
    pub resume: Option<Checkpoint>,
    /// A file to append one JSON line of [`EpochMetrics`] to after each epoch (the test
    /// split's loss and accuracy as `val_loss` and `val_accuracy`).
    pub metrics: Option<PathBuf>,
    /// Describes the data in the checkpoint's config (the task, or the CSV's path).
    pub data_description: String,
    /// The feature scaling fitted on the training split, saved with the model.
    pub standardizer: Option<Standardizer>,
}

/// What training reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlpResult {
    /// The fraction of training examples classified right by the final model.
    pub train_accuracy: f64,
    /// The fraction of test examples classified right by the final model.
    pub test_accuracy: f64,
    /// The final model's mean cross-entropy (nats) on the test examples.
    pub final_loss: f64,
    /// Optimizer steps taken in all, those of a resumed checkpoint included.
    pub steps: u64,
    /// Wall-clock seconds this run took, evaluation included.
    pub seconds: f64,
}

/// The compiled model: the plan computes the loss, the logits and every gradient.
struct Model {
    plan: Plan,
    x: Var,
    labels: Var,
    loss: Var,
    logits: Var,
    parameters: Parameters,
}

/// The model for layer sizes `sizes` (inputs first, classes last).
/// The MLP of `sizes` over `parameters`, compiled for batches of `rows` rows.
fn build(
    config: &MlpTraining,
    sizes: &[usize],
    rows: usize,
    parameters: &Parameters,
) -> Result<Model> {
    let mut g = Graph::new(parameters.gpu());
    let x = g.input("x", &[rows, sizes[0]]);
    let labels = g.input_indices("labels", &[rows]);
    let parameters = parameters.clone();
    let mlp = Mlp::new(&parameters, sizes, config.activation)?;
    let logits = mlp.forward(&mut g, x)?;
    let loss = g.cross_entropy_with(
        logits,
        labels,
        CrossEntropySpec::mean().ignore(PADDING.into()),
    )?;
    let grads = g.backward(loss)?;
    let mut outputs = vec![loss, logits];
    outputs.extend(grads.parameter_gradients());
    let plan = g.compile(&outputs)?;
    Ok(Model {
        plan,
        x,
        labels,
        loss,
        logits,
        parameters,
    })
}

/// Loss and accuracy of the model on `data`, in batches (padding rows ignored).
fn evaluate(model: &mut Model, data: &Dataset, batch: usize) -> Result<(f64, f64)> {
    let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
    for chunk in data.batches_in_order(batch, LastBatch::Pad { label: PADDING })? {
        model.plan.run(
            &[
                Feed::f32(model.x, &chunk.features),
                Feed::u32(model.labels, &chunk.labels),
            ],
            &[],
        )?;
        let real = chunk.real();
        loss_sum += f64::from(model.plan.read(model.loss)?[0]) * real as f64;
        let logits = model.plan.read(model.logits)?;
        let classes = logits.len() / chunk.rows();
        correct += logits
            .chunks(classes)
            .zip(&chunk.labels)
            .take(real)
            .filter(|(row, &label)| argmax(row) == label as usize)
            .count();
        seen += real;
    }
    let seen = seen.max(1) as f64;
    Ok((loss_sum / seen, correct as f64 / seen))
}

/// Trains the MLP, reporting progress on stderr, and returns the accuracies reached.
pub fn train_mlp(gpu: &Gpu, config: &MlpTraining) -> Result<MlpResult> {
    train_mlp_parallel(std::slice::from_ref(gpu), &SingleProcess, config)
}

/// Trains an MLP as `config` says, data-parallel: a replica on each of `gpus`, and on those
/// of every other process of `collective`. Each batch is cut into one share per replica of
/// every process (so `config.batch` must be at least their number), the replicas'
/// gradients are summed and every replica applies the same update: the step one device
/// takes on the whole batch, up to the order of the sums. Process 0 alone prints progress,
/// evaluates (on its first device) and saves; the others' results are their own models'
/// (the same parameters).
pub fn train_mlp_parallel(
    gpus: &[Gpu],
    collective: &dyn Collective,
    config: &MlpTraining,
) -> Result<MlpResult> {
    let gpu = first_device("train-mlp", gpus)?;
    let leader = collective.rank() == 0;
    check_batch_fits(
        "train-mlp",
        (config.batch, "examples"),
        gpus.len(),
        collective,
    )?;
    if config.batch == 0 || config.epochs == 0 {
        return Err(Error::invalid(
            "train-mlp",
            format!(
                "batch {} and epochs {} must both be at least 1",
                config.batch, config.epochs
            ),
        ));
    }
    config.optimizer.validate()?;
    let classes = config.train.classes.max(config.test.classes);
    let sizes: Vec<usize> = std::iter::once(config.train.dim)
        .chain(config.hidden.iter().copied())
        .chain(std::iter::once(classes))
        .collect();
    Mlp::training_memory(&sizes, config.batch)?.check("train-mlp", gpu.max_buffer_bytes())?;
    let mut model = build(
        config,
        &sizes,
        config.batch,
        &Parameters::new(gpu, config.seed),
    )?;
    let mut optimizer = model.parameters.optimizer(config.optimizer)?;
    let architecture = json!({
        "kind": "mlp",
        "inputs": config.train.dim,
        "hidden": config.hidden,
        "classes": classes,
        "activation": config.activation.name(),
    });
    let mut first_epoch = 1;
    let mut resumed = None;
    if let Some(checkpoint) = &config.resume {
        if checkpoint.config.get("architecture") != Some(&architecture) {
            return Err(Error::format(
                &checkpoint.path,
                format!(
                    "holds the model {}, not the one asked for ({architecture}): resume with \
                     the data and --layers it was trained with",
                    checkpoint
                        .config
                        .get("architecture")
                        .map_or("(none)".to_string(), |a| a.to_string())
                ),
            ));
        }
        // Checkpoints from before PyTorch's layout: `layer{i}.weight` [in, out].
        let legacy: Vec<LegacyName> = (0..sizes.len() - 1)
            .flat_map(|i| {
                [
                    LegacyName::new(
                        format!("layer{i}.weight"),
                        format!("layers.{i}.weight"),
                        true,
                    ),
                    LegacyName::new(format!("layer{i}.bias"), format!("layers.{i}.bias"), false),
                ]
            })
            .collect();
        let checkpoint = resumed.insert(upgrade_legacy_checkpoint(
            checkpoint,
            &legacy,
            &model.parameters,
        )?);
        model.parameters.load(checkpoint)?;
        resume_optimizer(gpu, &mut optimizer, checkpoint, "train-mlp")?;
        first_epoch = first_resumed_epoch(checkpoint, Some(config.epochs), "train-mlp")?;
        if leader {
            note!(
                "resuming from {} after epoch {}",
                checkpoint.path.display(),
                first_epoch - 1
            );
        }
    }
    let mut metrics = match &config.metrics {
        Some(path) if leader => Some(MetricsFile::open(path)?),
        _ => None,
    };
    // Data-parallel: this process's first replica trains through a plan of its share's
    // rows over the model's parameters (the whole-batch plan evaluates); each other replica
    // is a model of its own share's rows.
    let mut parallel = match gpus.len() * collective.size() {
        1 => None,
        replicas => {
            let rows = share_rows(config.batch, replicas)?;
            let first = collective.rank() * gpus.len();
            let share_model = build(config, &sizes, rows[first].len(), &model.parameters)?;
            let step = DataParallel::new(
                "train-mlp",
                &share_model,
                &gpus[1..],
                (config.optimizer, resumed.as_ref()),
                collective,
                |index, gpu| {
                    let rows = rows[first + index].len();
                    build(config, &sizes, rows, &Parameters::new(gpu, config.seed))
                },
            )?;
            Some((share_model, step))
        }
    };
    if leader && parallel.is_some() {
        note!(
            "MLP {sizes:?}: {} parameters{}",
            model.parameters.numel(),
            describe_replicas(gpus.len(), collective, config.batch)
        );
    }

    let padding = LastBatch::Pad { label: PADDING };
    let steps_per_epoch = config.train.batch_count(config.batch, padding) as u64;
    let epochs_left = (config.epochs + 1).saturating_sub(first_epoch);
    // Only process 0 draws progress; the others train silently beside it.
    let mut progress =
        leader.then(|| Progress::stderr(steps_per_epoch * epochs_left as u64, config.epochs, "ex"));
    let start = Instant::now();
    let mut step = optimizer.current_step();
    // The display keeps the last test accuracy beside the running loss.
    let mut shown_accuracy = Vec::new();
    // Reported once, after the last epoch: an MLP's epochs are many and short.
    let mut exchange = ExchangeTotals::default();
    for epoch in first_epoch..=config.epochs {
        if let Some(progress) = progress.as_mut() {
            progress.start_epoch(epoch);
        }
        let (mut epoch_loss, mut loss_reads) = (0.0, 0usize);
        for batch in config
            .train
            .batches(config.batch, padding, config.seed, epoch as u64)?
        {
            step += 1;
            let summed_loss = match parallel.as_mut() {
                Some((share_model, parallel)) => {
                    let (report, _) = parallel.step(
                        share_model,
                        &mut optimizer,
                        &batch,
                        (config.seed, step),
                        false,
                        &mut exchange,
                    )?;
                    Some(report.loss)
                }
                None => {
                    optimizer.prepare_step(step)?;
                    model.plan.run(
                        &[
                            Feed::f32(model.x, &batch.features),
                            Feed::u32(model.labels, &batch.labels),
                        ],
                        optimizer.dispatches(),
                    )?;
                    None
                }
            };
            let mut shown = shown_accuracy.clone();
            if step.is_multiple_of(LOSS_EVERY) || step.is_multiple_of(steps_per_epoch) {
                let loss = match summed_loss {
                    Some(loss) => f64::from(loss),
                    None => f64::from(model.plan.read(model.loss)?[0]),
                };
                if !loss.is_finite() {
                    return Err(Error::invalid(
                        "train-mlp",
                        format!("the loss became {loss} at step {step}; try a lower --lr"),
                    ));
                }
                epoch_loss += loss;
                loss_reads += 1;
                shown.push(("loss", loss));
            }
            if let Some(progress) = progress.as_mut() {
                progress.advance(batch.real() as u64, &shown);
            }
        }
        if let Some((share_model, parallel)) = &parallel {
            parallel.resynchronize(share_model)?;
        }
        if !leader {
            continue;
        }
        let (test_loss, epoch_accuracy) = evaluate(&mut model, &config.test, config.batch)?;
        shown_accuracy = vec![("test_acc", epoch_accuracy)];
        if let Some(file) = metrics.as_mut() {
            let record = EpochMetrics {
                epoch,
                step,
                elapsed_s: start.elapsed().as_secs_f64(),
                train_loss: epoch_loss / loss_reads.max(1) as f64,
                val_loss: Some(test_loss),
                val_accuracy: Some(epoch_accuracy),
                extra: Vec::new(),
            }
            .with("lr", f64::from(optimizer.learning_rate(step)));
            let record = match &parallel {
                Some(_) => exchange.recorded(record),
                None => record,
            };
            file.append(&record)?;
        }
        if let Some(path) = &config.save {
            let training = json!({
                "epoch": epoch,
                "epochs": config.epochs,
                "steps": step,
                "seed": config.seed,
                "batch": config.batch,
                "optimizer": format!("{:?}", config.optimizer.rule),
                "optimizer_step": optimizer.current_step(),
                "lr": config.optimizer.lr,
                "test_accuracy": epoch_accuracy,
            });
            save(&model, &optimizer, path, config, &architecture, training)?;
        }
    }
    if let Some(progress) = progress.as_mut() {
        progress.finish();
    }
    if let (true, Some((_, parallel))) = (leader, &parallel) {
        note!("{}", exchange.describe(parallel.replicas_in_all()));
    }
    let (_, train_accuracy) = evaluate(&mut model, &config.train, config.batch)?;
    let (final_loss, test_accuracy) = evaluate(&mut model, &config.test, config.batch)?;
    Ok(MlpResult {
        train_accuracy,
        test_accuracy,
        final_loss,
        steps: step,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Saves the parameters and the optimizer's state, with the architecture, the data's
/// description and scaling, and the `training` record a resumed run starts from.
fn save(
    model: &Model,
    optimizer: &Optimizer,
    path: &Path,
    config: &MlpTraining,
    architecture: &Value,
    training: Value,
) -> Result<()> {
    let tensors = model.parameters.checkpoint_tensors(Some(optimizer))?;
    let checkpoint_config = json!({
        "architecture": architecture,
        "weight_layout": WEIGHT_LAYOUT,
        "data": config.data_description,
        "standardizer": config.standardizer.as_ref().map(|s| json!({"mean": s.mean, "std": s.std})),
        "training": training,
    });
    checkpoint::save(path, &tensors, &checkpoint_config)
}

impl Replica for Model {
    type Batch = Batch;

    fn shares(batch: &Batch, parts: usize) -> Result<Vec<Batch>> {
        batch.shards(parts)
    }

    fn items(batch: &Batch) -> usize {
        batch.real()
    }

    fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    fn gradients(&mut self, share: &Batch, _dropout_seed: u32) -> Result<ShareReport> {
        self.plan.run(
            &[
                Feed::f32(self.x, &share.features),
                Feed::u32(self.labels, &share.labels),
            ],
            &[],
        )?;
        let logits = self.plan.read(self.logits)?;
        let classes = logits.len() / share.rows();
        let correct = logits
            .chunks(classes)
            .zip(&share.labels)
            .take(share.real())
            .filter(|(row, &label)| argmax(row) == label as usize)
            .count();
        Ok(ShareReport {
            loss: self.plan.read(self.loss)?[0],
            items: share.real(),
            correct,
        })
    }
}
