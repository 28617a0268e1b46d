//! `cargo bench --bench gather`: the embedding lookup (gather along axis 0 of a
//! [vocab, dim] table) and its backward (the deterministic scatter-add), in GB/s of the
//! bytes each kernel must move, on the default adapter (or the one `SHADERGRAD_ADAPTER`
//! names).
//!
//! The variant column says the kernel's columns per invocation (`forward/256`).
//! The backward's host work, grouping the positions by id (a counting sort), is timed
//! separately on the wall clock: it runs once per batch of ids, not per gradient.

mod common;

use std::time::Instant;

use common::{print_adapter, print_header, print_row, time_dispatches};
use shadergrad::kernels::gather::{
    columns_per_invocation, gather_backward_dispatch, gather_dispatch, group_positions_by_id,
};
use shadergrad::rng::Rng;
use shadergrad::{Gpu, GroupedPositions, Indices, Tensor};

/// (tokens, dim, vocab)
const SIZES: [(usize, usize, usize); 2] = [(4096, 256, 10_000), (512, 64, 50_000)];

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    print_adapter(&gpu);
    print_header();
    let mut rng = Rng::new(1);
    let mut grouping = Vec::new();
    for (tokens, dim, vocab) in SIZES {
        let ids: Vec<u32> = (0..tokens).map(|_| rng.below(vocab) as u32).collect();
        let table = Tensor::from_slice(&gpu, &rng.vec(vocab * dim, -1.0, 1.0), &[vocab, dim])?;
        let gids = Indices::from_slice(&gpu, &ids, &[tokens])?;
        let rows = Tensor::zeros(&gpu, &[tokens, dim])?;
        let shape = format!("{tokens}x{dim} of {vocab}");

        let span = columns_per_invocation(&gpu, tokens, dim);
        let forward = gather_dispatch(&table, &gids, &rows, 0, span)?;
        let stats = time_dispatches(&gpu, std::slice::from_ref(&forward))?;
        // Read the picked rows and the ids, write the output.
        let bytes = (2 * tokens * dim + tokens) as f64 * 4.0;
        print_row(
            "embedding",
            &format!("forward/{span}"),
            &shape,
            &stats,
            None,
            Some(bytes),
        );

        let dy = Tensor::from_slice(&gpu, &rng.vec(tokens * dim, -1.0, 1.0), &[tokens, dim])?;
        let dtable = Tensor::zeros(&gpu, &[vocab, dim])?;
        let groups = GroupedPositions::new(&gpu, &ids, vocab)?;
        let span = columns_per_invocation(&gpu, vocab, dim);
        let backward = gather_backward_dispatch(&dy, &groups, &dtable, 0, span)?;
        let stats = time_dispatches(&gpu, std::slice::from_ref(&backward))?;
        // Read dy and the grouped positions, write the whole table gradient.
        let bytes = (tokens * dim + vocab + 1 + tokens + vocab * dim) as f64 * 4.0;
        print_row(
            "embedding",
            &format!("backward/{span}"),
            &shape,
            &stats,
            None,
            Some(bytes),
        );

        let start = Instant::now();
        let runs = 100;
        for _ in 0..runs {
            std::hint::black_box(group_positions_by_id(std::hint::black_box(&ids), vocab));
        }
        grouping.push((shape, start.elapsed().as_secs_f64() / f64::from(runs)));
    }
    for (shape, seconds) in grouping {
        println!(
            "host grouping of the ids by row (counting sort), {shape}: {:.1} µs",
            seconds * 1e6
        );
    }
    Ok(())
}
