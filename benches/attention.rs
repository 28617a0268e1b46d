//! `cargo bench --bench attention`: multi-head attention forward, and forward + backward,
//! at B = 4, H = 4, D = Dv = 32 for L = 128 and L = 512 (Lq = Lk = L), with and without a
//! causal mask, on the default adapter (or the one `SHADERGRAD_ADAPTER` names); the fused
//! forward and fused forward + backward beside them, and the fused forward alone at
//! L = 1024 (the unfused one's 4·4·1024² scores take 64 MiB and long); and the masked
//! softmax alone.
//!
//! GFLOP/s counts the four (forward) or twelve (forward + backward) multiply-adds per
//! score and head dimension of the products: forward 2·B·H·L²·(D + Dv), backward twice
//! that. The softmax's exponentials are not counted, and a causal mask, which skips no
//! product work, is counted at the full rate. Each figure is the median of several
//! submissions of the whole recording after a warm-up.

mod common;

use common::{print_adapter, print_header, print_row, time_dispatches};
use shadergrad::kernels::attention::{
    attention_backward_dispatches, attention_dispatches, fused_attention_backward_dispatches_into,
    fused_attention_dispatch, masked_softmax_dispatch, AttentionDims, AttentionGradients,
    FusedAttention, Recording,
};
use shadergrad::rng::Rng;
use shadergrad::{AttentionOptions, AttentionSettingsBuilder, Gpu, Tensor};

const BATCH: usize = 4;
const HEADS: usize = 4;
const HEAD_DIM: usize = 32;
const LENGTHS: [usize; 2] = [128, 512];
const FUSED_ONLY_LENGTHS: [usize; 1] = [1024];

/// Times the fused forward, and with `with_backward` the fused forward + backward, of
/// random Q, K, V [B, H, L, D] with and without a causal mask.
fn time_fused(gpu: &Gpu, rng: &mut Rng, len: usize, with_backward: bool) -> shadergrad::Result<()> {
    let shape = [BATCH, HEADS, len, HEAD_DIM];
    let n = shape.iter().product();
    let mut random = || Tensor::from_slice(gpu, &rng.vec(n, -1.0, 1.0), &shape);
    let (q, k, v, grad_output) = (random()?, random()?, random()?, random()?);
    let grads = AttentionGradients {
        query: Tensor::zeros(gpu, &shape)?,
        key: Tensor::zeros(gpu, &shape)?,
        value: Tensor::zeros(gpu, &shape)?,
    };
    let forward = FusedAttention {
        output: Tensor::zeros(gpu, &shape)?,
        log_sum_exp: Tensor::zeros(gpu, &shape[..3])?,
    };
    let flops = 2.0 * (BATCH * HEADS * len * len * 2 * HEAD_DIM) as f64;
    for causal in [false, true] {
        let options = AttentionOptions::default().causal(causal);
        let dispatches: Vec<_> = fused_attention_dispatch((&q, &k, &v), &options, &forward)?
            .into_iter()
            .collect();
        let stats = time_dispatches(gpu, &dispatches)?;
        print_row(
            "attention fused fwd",
            if causal { "causal" } else { "full" },
            &format!("{BATCH}x{HEADS}x{len}x{HEAD_DIM}"),
            &stats,
            Some(flops),
            None,
        );
        if !with_backward {
            continue;
        }
        let mut both = Recording::default();
        both.dispatches.extend(dispatches);
        fused_attention_backward_dispatches_into(
            (&q, &k, &v),
            &forward,
            &grad_output,
            &options,
            &grads,
            &mut both,
        )?;
        let stats = time_dispatches(gpu, &both.dispatches)?;
        print_row(
            "attention fused fwd+bwd",
            if causal { "causal" } else { "full" },
            &format!("{BATCH}x{HEADS}x{len}x{HEAD_DIM}"),
            &stats,
            Some(3.0 * flops),
            None,
        );
    }
    Ok(())
}

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    print_adapter(&gpu);
    print_header();
    let mut rng = Rng::new(1);
    for len in LENGTHS {
        let shape = [BATCH, HEADS, len, HEAD_DIM];
        let n = shape.iter().product();
        let mut random = || Tensor::from_slice(&gpu, &rng.vec(n, -1.0, 1.0), &shape);
        let (q, k, v, grad_output) = (random()?, random()?, random()?, random()?);
        let label = format!("{BATCH}x{HEADS}x{len}x{HEAD_DIM}");
        let forward_flops = 2.0 * (BATCH * HEADS * len * len * 2 * HEAD_DIM) as f64;

        for causal in [false, true] {
            let options = AttentionOptions::default().causal(causal);
            let variant = if causal { "causal" } else { "full" };

            let mut forward = Recording::default();
            attention_dispatches(&q, &k, &v, &options, &mut forward)?;
            let stats = time_dispatches(&gpu, &forward.dispatches)?;
            print_row(
                "attention fwd",
                variant,
                &label,
                &stats,
                Some(forward_flops),
                None,
            );

            let mut both = Recording::default();
            let result = attention_dispatches(&q, &k, &v, &options, &mut both)?;
            attention_backward_dispatches(
                (&q, &k, &v),
                &result.probs,
                &grad_output,
                &options,
                &mut both,
            )?;
            let stats = time_dispatches(&gpu, &both.dispatches)?;
            print_row(
                "attention fwd+bwd",
                variant,
                &label,
                &stats,
                Some(3.0 * forward_flops),
                None,
            );
        }

        time_fused(&gpu, &mut rng, len, true)?;

        // The masked softmax alone: reads S, writes P (8 bytes per score).
        let dims = AttentionDims::from_shapes(&shape, &shape, &shape)?;
        let scores_shape = dims.scores_shape();
        let scores = Tensor::from_slice(
            &gpu,
            &rng.vec(scores_shape.iter().product(), -3.0, 3.0),
            &scores_shape,
        )?;
        let probs = Tensor::zeros(&gpu, &scores_shape)?;
        let dispatch = masked_softmax_dispatch(
            &scores,
            &probs,
            &dims,
            &AttentionOptions::default().causal(true),
            false,
        )?;
        let stats = time_dispatches(&gpu, std::slice::from_ref(&dispatch))?;
        let scores_count = scores.numel() as f64;
        print_row(
            "masked softmax",
            "causal",
            &format!("{BATCH}x{HEADS}x{len}x{len}"),
            &stats,
            None,
            Some(8.0 * scores_count),
        );
    }
    for len in FUSED_ONLY_LENGTHS {
        // The fused backward at this length takes over a minute on lavapipe.
        time_fused(&gpu, &mut rng, len, false)?;
    }
    Ok(())
}
