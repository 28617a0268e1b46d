//! `cargo bench --bench gather`: the embedding lookup (gather along axis 0 of a
//! [vocab, dim] table) and its backward (the deterministic scatter-add), in GB/s of the
//! bytes each kernel must move, on the default adapter (or the one `SHADERGRAD_ADAPTER`
//! names).
//!
//! Then the copies of the family (slice, its backward, concat, transpose), with one
//! element per invocation (span 1, the GPU layout) and with the span picked for the
//! adapter.
//!
//! The variant column says the kernel's columns per invocation (`forward/256`).
//! The backward's host work, grouping the positions by id (a counting sort) and queueing
//! its upload, is timed separately on the wall clock: it runs once per batch of ids, not
//! per gradient.

mod common;

use std::time::Instant;

use common::{print_adapter, print_header, print_row, time_dispatches};
use shadergrad::kernels::columns_per_invocation;
use shadergrad::kernels::copy::{region_copy_dispatch, slice_backward_dispatch, CopyRegion};
use shadergrad::kernels::gather::{gather_backward_dispatch, gather_dispatch};
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
        let forward = gather_dispatch(&table, &gids, &rows, 0, Some(span))?;
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
        let backward = gather_backward_dispatch(&dy, &groups, &dtable, 0, Some(span))?;
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
            std::hint::black_box(GroupedPositions::new(
                &gpu,
                std::hint::black_box(&ids),
                vocab,
            )?);
        }
        grouping.push((shape, start.elapsed().as_secs_f64() / f64::from(runs)));
    }
    copies(&gpu, &mut rng)?;
    for (shape, seconds) in grouping {
        println!(
            "grouping the ids by row on the host (counting sort and upload), {shape}: {:.1} µs",
            seconds * 1e6
        );
    }
    Ok(())
}

/// The copies of the family: slice, its backward, concat and transpose of activations of
/// 4096 rows, each with span 1 (the GPU layout) and with the span picked for the adapter
/// (for the copy's simplified region, see `CopyRegion::simplified`).
fn copies(gpu: &Gpu, rng: &mut Rng) -> shadergrad::Result<()> {
    let (rows, width) = (4096, 768);
    let part = width / 3;
    let x = Tensor::from_slice(gpu, &rng.vec(rows * width, -1.0, 1.0), &[rows, width])?;
    let sliced = Tensor::zeros(gpu, &[rows, part])?;
    let square = Tensor::zeros(gpu, &[1024, 1024])?;
    let transposed = Tensor::zeros(gpu, &[1024, 1024])?;
    for span in [Some(1), None] {
        let variant = match span {
            Some(span) => format!("span {span}"),
            None => "adapter's span".to_string(),
        };
        let slice = CopyRegion::slice(&[rows, width], 1, part, 2 * part);
        let dispatch = region_copy_dispatch(&x, &sliced, &slice, span)?;
        let stats = time_dispatches(gpu, std::slice::from_ref(&dispatch))?;
        let bytes = (2 * rows * part * 4) as f64;
        let shape = format!("{rows}x{width}[:,{part}..{}]", 2 * part);
        print_row("slice", &variant, &shape, &stats, None, Some(bytes));

        let dispatch = slice_backward_dispatch(&sliced, &x, 1, part, span)?;
        let stats = time_dispatches(gpu, std::slice::from_ref(&dispatch))?;
        let bytes = ((rows * part + rows * width) * 4) as f64;
        print_row(
            "slice backward",
            &variant,
            &shape,
            &stats,
            None,
            Some(bytes),
        );

        let dispatches = (0..3)
            .map(|i| {
                let region = CopyRegion::into_axis(&[rows, part], 1, i * part, width);
                region_copy_dispatch(&sliced, &x, &region, span)
            })
            .collect::<shadergrad::Result<Vec<_>>>()?;
        let stats = time_dispatches(gpu, &dispatches)?;
        let bytes = (2 * rows * width * 4) as f64;
        let shape = format!("3x {rows}x{part}, axis 1");
        print_row("concat", &variant, &shape, &stats, None, Some(bytes));

        let transpose = CopyRegion {
            shape: [1, 1, 1024, 1024],
            in_offset: 0,
            in_strides: [0, 0, 1, 1024],
            out_offset: 0,
            out_strides: [0, 0, 1024, 1],
        };
        let dispatch = region_copy_dispatch(&square, &transposed, &transpose, span)?;
        let stats = time_dispatches(gpu, std::slice::from_ref(&dispatch))?;
        let bytes = (2 * 1024 * 1024 * 4) as f64;
        print_row(
            "transpose",
            &variant,
            "1024x1024",
            &stats,
            None,
            Some(bytes),
        );
    }
    Ok(())
}
