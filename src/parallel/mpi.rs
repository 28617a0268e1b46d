//! [`MpiWorld`]: the processes of an MPI job (`mpirun -n 4 …`) as a [`Collective`], through
//! rsmpi over the system's MPI (the `mpi` feature).
//!
//! Only the thread that made the world calls MPI (MPI's "funneled" level): the replicas'
//! threads never do. MPI's default error handler ends the whole job on a failed call, and a
//! process that dies ends it too (`mpirun` kills the others and names the one that died), so
//! no process waits forever on a sum another will never join; a process that meets an error
//! of its own ends the job the same way with [`MpiWorld::abort`].

use mpi::collective::SystemOperation;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use super::Collective;
use crate::error::{Error, Result};

/// Every process of the MPI job, once MPI is initialised; MPI is finalised when it is
/// dropped (which every process must then reach: end a failing one with
/// [`MpiWorld::abort`] instead).
pub struct MpiWorld {
    world: SimpleCommunicator,
    /// This process's rank among those on its machine, and how many run there.
    local: (usize, usize),
    /// Held for its `Drop`, which finalises MPI; dropped after `world`.
    _universe: Universe,
}

impl std::fmt::Debug for MpiWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiWorld")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .field("local", &self.local)
            .finish()
    }
}

impl MpiWorld {
    /// Initialises MPI for this process (once: a second call is an error) and finds which
    /// processes share its machine. Started without `mpirun`, the job is this one process.
    pub fn init() -> Result<MpiWorld> {
        let (universe, _) =
            mpi::initialize_with_threading(Threading::Funneled).ok_or_else(|| {
                Error::invalid(
                    "MpiWorld::init",
                    "MPI is already initialised in this process",
                )
            })?;
        let world = universe.world();
        let machine = world.split_shared(world.rank());
        let local = (machine.rank() as usize, machine.size() as usize);
        Ok(MpiWorld {
            world,
            local,
            _universe: universe,
        })
    }

    /// This process's rank among the processes on its machine (from 0), and how many run
    /// there: which of the machine's adapters it takes.
    pub fn local_rank(&self) -> (usize, usize) {
        self.local
    }

    /// Ends every process of the job now with `code` (MPI_Abort): what a process that
    /// fails must do, since the others would wait for it in their next sum.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let sent = values.to_vec();
        self.world
            .all_reduce_into(&sent[..], values, SystemOperation::sum());
        Ok(())
    }

    fn broadcast_from_root(&self, values: &mut [f32]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(values);
        Ok(())
    }
}
