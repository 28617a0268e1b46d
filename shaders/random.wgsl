// Dropout from a counter-based generator: each element's random bits are a hash of
// (seed, stream, element index), so no generator state exists, the backward recomputes the
// forward's mask from the same seed instead of storing it, and the CPU reference
// (`kernels::random`) gives the same bits.
//
// The seed is a one-element u32 buffer written before each run (a new value every training
// step); the stream tells apart the dropouts of one graph, which share the seed.
// One invocation per element; the flat index spans the 2-D grid (x + y·num_workgroups.x).

const WORKGROUP: u32 = 256u;

// Chris Wellons's lowbias32: a bijective integer mixer with near-ideal avalanche.
fn mix(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn stream_key(seed: u32, stream: u32) -> u32 {
    return mix(seed ^ mix(stream ^ 0x9e3779b9u));
}

// Mixing the index before the key keeps the masks of two keys from being shifts of each
// other, as mix(index ^ key) would make them.
fn random_bits(key: u32, index: u32) -> u32 {
    return mix(mix(index) ^ key);
}

struct DropoutParams {
    len: u32,
    // Elements whose bits fall below it are dropped: round(p·2³²).
    threshold: u32,
    // 1 / (1 − p), applied to the kept elements.
    scale: f32,
    stream: u32,
}

@group(0) @binding(0) var<storage, read> dropout_x: array<f32>;
@group(0) @binding(1) var<storage, read> dropout_seed: array<u32>;
@group(0) @binding(2) var<storage, read_write> dropout_y: array<f32>;
@group(0) @binding(3) var<uniform> dropout_params: DropoutParams;

@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    let p = dropout_params;
    if i >= p.len {
        return;
    }
    let keep = random_bits(stream_key(dropout_seed[0], p.stream), i) >= p.threshold;
    // select, not a multiplication by 0, so that a dropped inf or NaN gives 0.
    dropout_y[i] = select(0.0, dropout_x[i] * p.scale, keep);
}
