//! The flags every `train-*` command shares for data-parallel training (`--adapters`,
//! `--distributed`), the devices they open, and the MPI job a `--distributed` run joins.

use clap::Args;
use shadergrad::parallel::{Collective, SingleProcess};
use shadergrad::{AdapterSelector, Error, Gpu};

use super::{command_line_autotune, open_gpu};

/// Data-parallel training: on several adapters of this machine, and across the processes
/// of an MPI job.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ParallelArgs {
    /// Train data-parallel on several adapters: indices of `shadergrad adapters`,
    /// comma-separated (an index given twice opens that adapter twice), or `all` (every
    /// adapter but OpenGL ones, the same devices again, and software ones when there is a
    /// GPU). Each batch is shared among them and their gradients summed before every
    /// update. Instead of --adapter (and $SHADERGRAD_ADAPTER).
    #[arg(long, value_name = "LIST")]
    pub adapters: Option<String>,
    /// Train as one process of an MPI job: `mpirun -n N shadergrad <command> --distributed
    /// …` (a build with the `mpi` feature). Each process takes its share of every batch on
    /// its adapters (--adapters, else its machine's GPUs in turn), the gradients are summed
    /// across all of them, and process 0 alone reports, validates and saves.
    #[arg(long)]
    pub distributed: bool,
}

/// Where a training command runs: the processes it trains among, this one's rank among
/// those of its machine (in an MPI job), and how to pick its devices.
pub(crate) struct Placement<'c> {
    pub collective: &'c dyn Collective,
    local: Option<(usize, usize)>,
    selector: &'c AdapterSelector,
    parallel: &'c ParallelArgs,
}

impl Placement<'_> {
    /// Whether this process reports, validates and saves: process 0.
    pub fn leads(&self) -> bool {
        self.collective.rank() == 0
    }

    /// Opens the devices `command` trains on (once the inputs are checked: no GPU work is
    /// wasted on a bad file) and says on stderr which: `train-lm on llvmpipe + llvmpipe`,
    /// or `train-lm process 1 of 2 on …` in an MPI job.
    pub fn devices(&self, command: &'static str) -> shadergrad::Result<Vec<Gpu>> {
        let gpus = training_devices(command, self.selector, self.parallel, self.local)?;
        let names: Vec<String> = gpus.iter().map(|gpu| gpu.info().name.clone()).collect();
        if self.local.is_some() {
            say!(
                "{command} process {} of {} on {}",
                self.collective.rank(),
                self.collective.size(),
                names.join(" + ")
            );
        } else {
            say!("{command} on {}", names.join(" + "));
        }
        Ok(gpus)
    }
}

/// Runs `train` where `parallel` says: in this process alone, or (`--distributed`) as one
/// process of an MPI job, which an error in any process ends for all (the others would
/// wait for it in their next sum).
pub(crate) fn run_training(
    command: &'static str,
    selector: &AdapterSelector,
    parallel: &ParallelArgs,
    train: impl FnOnce(Placement) -> shadergrad::Result<()>,
) -> shadergrad::Result<()> {
    if !parallel.distributed {
        return train(Placement {
            collective: &SingleProcess,
            local: None,
            selector,
            parallel,
        });
    }
    #[cfg(feature = "mpi")]
    {
        let world = shadergrad::parallel::MpiWorld::init()?;
        let result = train(Placement {
            collective: &world,
            local: Some(world.local_rank()),
            selector,
            parallel,
        });
        if let Err(error) = result {
            say!(
                "error in {command} (process {} of {}): {error}",
                world.rank(),
                world.size()
            );
            world.abort(1);
        }
        Ok(())
    }
    #[cfg(not(feature = "mpi"))]
    Err(Error::invalid(
        command,
        "--distributed needs a build with the mpi feature: `cargo build --release --features \
         mpi` (scripts/setup-mpi.sh installs Open MPI and libclang first), then `mpirun -n N \
         target/release/shadergrad <command> --distributed …`",
    ))
}

/// The devices to train on: `--adapters`' list; else, in an MPI job left to choose, the
/// machine's GPUs in turn by the process's rank on it; else the one `selector` picks.
fn training_devices(
    command: &'static str,
    selector: &AdapterSelector,
    parallel: &ParallelArgs,
    local: Option<(usize, usize)>,
) -> shadergrad::Result<Vec<Gpu>> {
    if let Some(list) = &parallel.adapters {
        if *selector != AdapterSelector::Default {
            return Err(Error::invalid(
                command,
                format!(
                    "--adapter {selector} and --adapters {list}: give one of them (--adapters \
                     names every adapter to train on)"
                ),
            ));
        }
        return open_adapter_list(command, list);
    }
    match local {
        Some((local_rank, _))
            if *selector == AdapterSelector::Default
                && std::env::var_os(shadergrad::gpu::ADAPTER_ENV).is_none() =>
        {
            let mut adapters = usable_adapters()?;
            let adapter = adapters.swap_remove(local_rank % adapters.len());
            let gpu = Gpu::from_adapter(adapter)?;
            gpu.set_autotune(command_line_autotune());
            Ok(vec![gpu])
        }
        _ => Ok(vec![open_gpu(selector)?]),
    }
}

/// What `--adapters all` takes: every adapter but OpenGL ones (the same devices again) and,
/// when there is a GPU, software ones; in `shadergrad adapters`'s order.
fn usable_adapters() -> shadergrad::Result<Vec<wgpu::Adapter>> {
    let adapters = shadergrad::gpu::enumerate_adapters(&shadergrad::gpu::instance())?;
    let has_gpu = adapters
        .iter()
        .any(|adapter| !shadergrad::gpu::is_software(&adapter.get_info()));
    let usable: Vec<wgpu::Adapter> = adapters
        .into_iter()
        .filter(|adapter| {
            let info = adapter.get_info();
            info.backend != wgpu::Backend::Gl && !(has_gpu && shadergrad::gpu::is_software(&info))
        })
        .collect();
    if usable.is_empty() {
        return Err(Error::NoAdapter);
    }
    Ok(usable)
}

/// Opens a device on each adapter `--adapters` names: `all`, or indices separated by
/// commas (one given twice opens its adapter twice), tuned as the command line tunes.
fn open_adapter_list(command: &'static str, list: &str) -> shadergrad::Result<Vec<Gpu>> {
    let bad = || {
        Error::invalid(
            command,
            format!(
                "--adapters {list:?}: expected indices of `shadergrad adapters` separated by \
                 commas (0,1), or all"
            ),
        )
    };
    let gpus = if list.trim() == "all" {
        usable_adapters()?
            .into_iter()
            .map(Gpu::from_adapter)
            .collect::<shadergrad::Result<Vec<_>>>()?
    } else {
        let indices = list
            .split(',')
            .map(|index| index.trim().parse::<usize>().map_err(|_| bad()))
            .collect::<shadergrad::Result<Vec<_>>>()?;
        indices
            .into_iter()
            .map(|index| Gpu::new(&AdapterSelector::Index(index)))
            .collect::<shadergrad::Result<Vec<_>>>()?
    };
    if gpus.is_empty() {
        return Err(bad());
    }
    for gpu in &gpus {
        gpu.set_autotune(command_line_autotune());
    }
    Ok(gpus)
}
