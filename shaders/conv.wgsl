// Convolution over sequences and images, its gradients, and max pooling over time.
//
// The convolution is 2-D (a sequence is an image of height 1): x is N×C×H×W, the weight
// O×C×KH×KW, the optional bias O, the output N×O×OH×OW with
//     y[n, o, oh, ow] = bias[o] + Σ_{c, kh, kw} w[o, c, kh, kw] · x[n, c, ih, iw],
//     ih = oh·stride_h + kh − pad_top,   iw = ow·stride_w + kw − pad_left,
// where x is zero outside the image (zero padding). All tensors are contiguous.
//
// The direct kernels (forward and the input and weight gradients) are register-blocked:
// each invocation computes a tile of 16 channels × 8 consecutive columns, so that every
// step of its loop loads 16 + 8 values and does 128 fused multiply-adds. On lavapipe every
// storage load is a scalar load per invocation (with a branch for its bounds), while a
// multiply-add is one SIMD instruction for 8 invocations: the loads are the cost, and the
// tile amortises them (8 channels × 1 column per invocation ran 3–4× slower). The tiles
// live in private arrays indexed by constant-trip loops, which the drivers unroll into
// registers.
//
// Every gradient element is computed by one invocation that loops over everything that
// contributes to it, in a fixed order: no atomics, the same bits on every run.

const GROUP: u32 = 64u;       // invocations per workgroup of the direct kernels
const CHANNELS: u32 = 16u;    // channels per invocation of the direct kernels
const COLUMNS: u32 = 8u;      // consecutive columns per invocation, as two vec4
const WORKGROUP: u32 = 256u;  // invocations per workgroup of the one-element kernels

struct ConvParams {
    batch: u32,
    in_channels: u32,
    in_h: u32,
    in_w: u32,
    out_channels: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_top: u32,
    pad_left: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, size: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * size + lid;
}

// Whether (ih, iw) lies inside an h×w plane rather than in its zero padding.
fn inside(ih: i32, iw: i32, h: u32, w: u32) -> bool {
    return ih >= 0 && ih < i32(h) && iw >= 0 && iw < i32(w);
}

// The offset of (ih, iw) in an h×w plane, clamped into the plane so that a load of a
// padding position stays in bounds (its value is then discarded).
fn clamped_offset(ih: i32, iw: i32, h: u32, w: u32) -> u32 {
    return u32(clamp(ih, 0, i32(h) - 1)) * w + u32(clamp(iw, 0, i32(w) - 1));
}

// Whether each of four columns lies in 0..size.
fn columns_inside(cols: vec4<i32>, size: u32) -> vec4<bool> {
    return (cols >= vec4<i32>(0)) & (cols < vec4<i32>(i32(size)));
}

// Four columns clamped into 0..size, as offsets.
fn clamp_columns(cols: vec4<i32>, size: u32) -> vec4<u32> {
    return vec4<u32>(clamp(cols, vec4<i32>(0), vec4<i32>(i32(size) - 1)));
}

// ---------------------------------------------------------------- forward, direct
//
// Invocation: batch item n, output row oh, output channels o0..o0+15, output columns
// ow0..ow0+7. Channels and columns past the end compute clamped (valid) ones and store
// nothing.

override HAS_BIAS: bool = false;

@group(0) @binding(0) var<storage, read> forward_x: array<f32>;
@group(0) @binding(1) var<storage, read> forward_weight: array<f32>;
@group(0) @binding(2) var<storage, read> forward_bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> forward_y: array<f32>;
@group(0) @binding(4) var<uniform> forward_params: ConvParams;

// x at four columns of the row starting at `row`, 0 in the padding.
fn forward_load(row: u32, row_inside: bool, cols: vec4<i32>) -> vec4<f32> {
    let w = forward_params.in_w;
    let at = vec4<u32>(row) + clamp_columns(cols, w);
    let v = vec4<f32>(forward_x[at.x], forward_x[at.y], forward_x[at.z], forward_x[at.w]);
    return select(vec4<f32>(0.0), v, columns_inside(cols, w) & vec4<bool>(row_inside));
}

// Stores four outputs of channel o from column ow on, those inside the output.
fn forward_store(n: u32, o: u32, oh: u32, ow: u32, acc: vec4<f32>) {
    let p = forward_params;
    if o >= p.out_channels {
        return;
    }
    var v = acc;
    if HAS_BIAS {
        v += vec4<f32>(forward_bias[o]);
    }
    let at = ((n * p.out_channels + o) * p.out_h + oh) * p.out_w + ow;
    for (var k = 0u; k < 4u; k++) {
        if ow + k < p.out_w {
            forward_y[at + k] = v[k];
        }
    }
}

@compute @workgroup_size(64)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let p = forward_params;
    let spans = (p.out_w + COLUMNS - 1u) / COLUMNS;
    let blocks = (p.out_channels + CHANNELS - 1u) / CHANNELS;
    let i = flat_index(wid, nwg, lid, GROUP);
    if i >= p.batch * blocks * p.out_h * spans {
        return;
    }
    let ow0 = (i % spans) * COLUMNS;
    let oh = (i / spans) % p.out_h;
    let o0 = (i / (spans * p.out_h)) % blocks * CHANNELS;
    let n = i / (spans * p.out_h * blocks);
    let ih0 = i32(oh * p.stride_h) - i32(p.pad_top);
    let sw = i32(p.stride_w);
    let lo_cols = vec4<i32>(i32(ow0 * p.stride_w) - i32(p.pad_left)) + vec4<i32>(0, 1, 2, 3) * sw;
    let hi_cols = lo_cols + vec4<i32>(4 * sw);

    let row_len = p.in_channels * p.kernel_h * p.kernel_w;   // weights per output channel
    var weight_at: array<u32, CHANNELS>;
    var lo: array<vec4<f32>, CHANNELS>;   // columns 0..3 of each channel
    var hi: array<vec4<f32>, CHANNELS>;   // columns 4..7
    for (var q = 0u; q < CHANNELS; q++) {
        weight_at[q] = min(o0 + q, p.out_channels - 1u) * row_len;
        lo[q] = vec4<f32>(0.0);
        hi[q] = vec4<f32>(0.0);
    }
    for (var c = 0u; c < p.in_channels; c++) {
        for (var kh = 0u; kh < p.kernel_h; kh++) {
            let ih = ih0 + i32(kh);
            let row_inside = ih >= 0 && ih < i32(p.in_h);
            let row = ((n * p.in_channels + c) * p.in_h + u32(clamp(ih, 0, i32(p.in_h) - 1))) * p.in_w;
            for (var kw = 0u; kw < p.kernel_w; kw++) {
                let x_lo = forward_load(row, row_inside, lo_cols + vec4<i32>(i32(kw)));
                let x_hi = forward_load(row, row_inside, hi_cols + vec4<i32>(i32(kw)));
                let j = (c * p.kernel_h + kh) * p.kernel_w + kw;
                for (var q = 0u; q < CHANNELS; q++) {
                    let wv = vec4<f32>(forward_weight[weight_at[q] + j]);
                    lo[q] = fma(wv, x_lo, lo[q]);
                    hi[q] = fma(wv, x_hi, hi[q]);
                }
            }
        }
    }
    for (var q = 0u; q < CHANNELS; q++) {
        forward_store(n, o0 + q, oh, ow0, lo[q]);
        forward_store(n, o0 + q, oh, ow0 + 4u, hi[q]);
    }
}

// ---------------------------------------------------------------- forward, im2col
//
// The other way to the forward: unfold x into columns
//     cols[n, (c·KH + kh)·KW + kw, oh·OW + ow] = x[n, c, ih, iw]   (0 in the padding),
// after which y[n] = W (O × C·KH·KW) · cols[n] is one batched matrix product.

@group(0) @binding(0) var<storage, read> im2col_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> im2col_cols: array<f32>;
@group(0) @binding(2) var<uniform> im2col_params: ConvParams;

@compute @workgroup_size(256)
fn conv_im2col(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let p = im2col_params;
    let positions = p.out_h * p.out_w;
    let taps = p.kernel_h * p.kernel_w;
    let rows = p.in_channels * taps;
    let i = flat_index(wid, nwg, lid, WORKGROUP);
    if i >= p.batch * rows * positions {
        return;
    }
    let position = i % positions;
    let j = (i / positions) % rows;
    let n = i / (positions * rows);
    let c = j / taps;
    let kh = (j % taps) / p.kernel_w;
    let kw = j % p.kernel_w;
    let ih = i32((position / p.out_w) * p.stride_h + kh) - i32(p.pad_top);
    let iw = i32((position % p.out_w) * p.stride_w + kw) - i32(p.pad_left);
    let plane = (n * p.in_channels + c) * p.in_h * p.in_w;
    im2col_cols[i] = select(0.0, im2col_x[plane + clamped_offset(ih, iw, p.in_h, p.in_w)],
                            inside(ih, iw, p.in_h, p.in_w));
}

// ---------------------------------------------------------------- gradient of the input
//
//     dx[n, c, ih, iw] = Σ_{kh, kw, o} dy[n, o, oh, ow] · w[o, c, kh, kw]
// over the taps (kh, kw) whose output position oh = (ih + pad_top − kh) / stride_h (and
// ow likewise) is whole and inside the output. Invocation: batch item n, input row ih,
// input channels c0..c0+15, input columns iw0..iw0+7.

@group(0) @binding(0) var<storage, read> input_grad_dy: array<f32>;
@group(0) @binding(1) var<storage, read> input_grad_weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> input_grad_dx: array<f32>;
@group(0) @binding(3) var<uniform> input_grad_params: ConvParams;

// The output coordinate that input coordinate `i` meets through kernel tap `k`, or -1.
fn output_coordinate(i: u32, pad: u32, k: u32, stride: u32, size: u32) -> i32 {
    let shifted = i32(i + pad) - i32(k);
    let o = shifted / i32(stride);
    if shifted < 0 || shifted % i32(stride) != 0 || o >= i32(size) {
        return -1;
    }
    return o;
}

// The same for four columns at once: whether each meets an output column, and which.
struct OutputColumns {
    inside: vec4<bool>,
    at: vec4<u32>,
}

fn output_columns(shifted: vec4<i32>, stride: u32, size: u32) -> OutputColumns {
    let s = vec4<i32>(i32(stride));
    let o = shifted / s;
    let whole = (shifted >= vec4<i32>(0)) & (shifted % s == vec4<i32>(0));
    return OutputColumns(whole & (o < vec4<i32>(i32(size))), clamp_columns(o, size));
}

// dy at four columns of the row starting at `row`, 0 where no output column is met.
fn input_grad_load(row: u32, cols: OutputColumns) -> vec4<f32> {
    let at = vec4<u32>(row) + cols.at;
    let v = vec4<f32>(input_grad_dy[at.x], input_grad_dy[at.y], input_grad_dy[at.z],
                      input_grad_dy[at.w]);
    return select(vec4<f32>(0.0), v, cols.inside);
}

fn input_grad_store(n: u32, c: u32, ih: u32, iw: u32, acc: vec4<f32>) {
    let p = input_grad_params;
    if c >= p.in_channels {
        return;
    }
    let at = ((n * p.in_channels + c) * p.in_h + ih) * p.in_w + iw;
    for (var k = 0u; k < 4u; k++) {
        if iw + k < p.in_w {
            input_grad_dx[at + k] = acc[k];
        }
    }
}

@compute @workgroup_size(64)
fn conv_input_grad(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let p = input_grad_params;
    let spans = (p.in_w + COLUMNS - 1u) / COLUMNS;
    let blocks = (p.in_channels + CHANNELS - 1u) / CHANNELS;
    let i = flat_index(wid, nwg, lid, GROUP);
    if i >= p.batch * blocks * p.in_h * spans {
        return;
    }
    let iw0 = (i % spans) * COLUMNS;
    let ih = (i / spans) % p.in_h;
    let c0 = (i / (spans * p.in_h)) % blocks * CHANNELS;
    let n = i / (spans * p.in_h * blocks);
    // Input columns shifted by the left padding: minus the tap, they are stride · ow.
    let lo_cols = vec4<i32>(i32(iw0 + p.pad_left)) + vec4<i32>(0, 1, 2, 3);
    let hi_cols = lo_cols + vec4<i32>(4);

    let taps = p.kernel_h * p.kernel_w;
    let row_len = p.in_channels * taps;   // weights per output channel
    var weight_at: array<u32, CHANNELS>;
    var lo: array<vec4<f32>, CHANNELS>;
    var hi: array<vec4<f32>, CHANNELS>;
    for (var q = 0u; q < CHANNELS; q++) {
        weight_at[q] = min(c0 + q, p.in_channels - 1u) * taps;
        lo[q] = vec4<f32>(0.0);
        hi[q] = vec4<f32>(0.0);
    }
    for (var kh = 0u; kh < p.kernel_h; kh++) {
        let oh = output_coordinate(ih, p.pad_top, kh, p.stride_h, p.out_h);
        if oh < 0 {
            continue;
        }
        for (var kw = 0u; kw < p.kernel_w; kw++) {
            let lo_out = output_columns(lo_cols - vec4<i32>(i32(kw)), p.stride_w, p.out_w);
            let hi_out = output_columns(hi_cols - vec4<i32>(i32(kw)), p.stride_w, p.out_w);
            if !any(lo_out.inside | hi_out.inside) {
                continue;
            }
            let tap = kh * p.kernel_w + kw;
            for (var o = 0u; o < p.out_channels; o++) {
                let row = ((n * p.out_channels + o) * p.out_h + u32(oh)) * p.out_w;
                let g_lo = input_grad_load(row, lo_out);
                let g_hi = input_grad_load(row, hi_out);
                let w_o = o * row_len + tap;
                for (var q = 0u; q < CHANNELS; q++) {
                    let wv = vec4<f32>(input_grad_weight[w_o + weight_at[q]]);
                    lo[q] = fma(wv, g_lo, lo[q]);
                    hi[q] = fma(wv, g_hi, hi[q]);
                }
            }
        }
    }
    for (var q = 0u; q < CHANNELS; q++) {
        input_grad_store(n, c0 + q, ih, iw0, lo[q]);
        input_grad_store(n, c0 + q, ih, iw0 + 4u, hi[q]);
    }
}

// ---------------------------------------------------------------- gradient of the weight
//
//     dw[o, c, kh, kw] = Σ_{n, oh, ow} dy[n, o, oh, ow] · x[n, c, ih, iw]
// The weight of one output channel is a row of C·KH·KW columns j = (c·KH + kh)·KW + kw.
// Invocation: output channels o0..o0+15, weight columns j0..j0+7; its loop runs over
// every batch item and output position.

@group(0) @binding(0) var<storage, read> weight_grad_x: array<f32>;
@group(0) @binding(1) var<storage, read> weight_grad_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight_grad_dw: array<f32>;
@group(0) @binding(3) var<uniform> weight_grad_params: ConvParams;

// Where four weight columns read x: their planes (c) and kernel offsets (kh, kw).
struct Taps {
    c: vec4<u32>,
    kh: vec4<u32>,
    kw: vec4<u32>,
}

fn taps_of(j: vec4<u32>) -> Taps {
    let p = weight_grad_params;
    let taps = p.kernel_h * p.kernel_w;
    return Taps(j / taps, (j % taps) / p.kernel_w, j % p.kernel_w);
}

// x[n, c, oh·stride_h + kh − pad_top, ow·stride_w + kw − pad_left] for four taps.
fn weight_grad_load(n: u32, oh: u32, ow: u32, t: Taps) -> vec4<f32> {
    let p = weight_grad_params;
    let ih = vec4<i32>(t.kh + oh * p.stride_h) - vec4<i32>(i32(p.pad_top));
    let iw = vec4<i32>(t.kw + ow * p.stride_w) - vec4<i32>(i32(p.pad_left));
    let plane = (vec4<u32>(n * p.in_channels) + t.c) * p.in_h;
    let at = (plane + clamp_columns(ih, p.in_h)) * p.in_w + clamp_columns(iw, p.in_w);
    let v = vec4<f32>(weight_grad_x[at.x], weight_grad_x[at.y], weight_grad_x[at.z],
                      weight_grad_x[at.w]);
    return select(vec4<f32>(0.0), v, columns_inside(ih, p.in_h) & columns_inside(iw, p.in_w));
}

fn weight_grad_store(o: u32, j: u32, acc: vec4<f32>) {
    let p = weight_grad_params;
    let row_len = p.in_channels * p.kernel_h * p.kernel_w;
    if o >= p.out_channels {
        return;
    }
    for (var k = 0u; k < 4u; k++) {
        if j + k < row_len {
            weight_grad_dw[o * row_len + j + k] = acc[k];
        }
    }
}

@compute @workgroup_size(64)
fn conv_weight_grad(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let p = weight_grad_params;
    let row_len = p.in_channels * p.kernel_h * p.kernel_w;
    let spans = (row_len + COLUMNS - 1u) / COLUMNS;
    let blocks = (p.out_channels + CHANNELS - 1u) / CHANNELS;
    let i = flat_index(wid, nwg, lid, GROUP);
    if i >= blocks * spans {
        return;
    }
    let j0 = (i % spans) * COLUMNS;
    let o0 = i / spans * CHANNELS;
    // Columns past the last read the last one's taps; `weight_grad_store` drops them.
    let last = vec4<u32>(row_len - 1u);
    let lo_taps = taps_of(min(vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u), last));
    let hi_taps = taps_of(min(vec4<u32>(j0) + vec4<u32>(4u, 5u, 6u, 7u), last));

    let positions = p.out_h * p.out_w;
    var dy_at: array<u32, CHANNELS>;
    var lo: array<vec4<f32>, CHANNELS>;
    var hi: array<vec4<f32>, CHANNELS>;
    for (var q = 0u; q < CHANNELS; q++) {
        dy_at[q] = min(o0 + q, p.out_channels - 1u) * positions;
        lo[q] = vec4<f32>(0.0);
        hi[q] = vec4<f32>(0.0);
    }
    for (var n = 0u; n < p.batch; n++) {
        let dy_n = n * p.out_channels * positions;
        for (var oh = 0u; oh < p.out_h; oh++) {
            for (var ow = 0u; ow < p.out_w; ow++) {
                let x_lo = weight_grad_load(n, oh, ow, lo_taps);
                let x_hi = weight_grad_load(n, oh, ow, hi_taps);
                let position = dy_n + oh * p.out_w + ow;
                for (var q = 0u; q < CHANNELS; q++) {
                    let g = vec4<f32>(weight_grad_dy[position + dy_at[q]]);
                    lo[q] = fma(g, x_lo, lo[q]);
                    hi[q] = fma(g, x_hi, hi[q]);
                }
            }
        }
    }
    for (var q = 0u; q < CHANNELS; q++) {
        weight_grad_store(o0 + q, j0, lo[q]);
        weight_grad_store(o0 + q, j0 + 4u, hi[q]);
    }
}

// ---------------------------------------------------------------- gradient of the bias
//
//     db[o] = Σ_{n, oh, ow} dy[n, o, oh, ow]
// One invocation per output channel.

@group(0) @binding(0) var<storage, read> bias_grad_dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> bias_grad_db: array<f32>;
@group(0) @binding(2) var<uniform> bias_grad_params: ConvParams;

@compute @workgroup_size(64)
fn conv_bias_grad(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let p = bias_grad_params;
    let o = flat_index(wid, nwg, lid, GROUP);
    if o >= p.out_channels {
        return;
    }
    let positions = p.out_h * p.out_w;
    var acc = 0.0;
    for (var n = 0u; n < p.batch; n++) {
        let base = (n * p.out_channels + o) * positions;
        for (var i = 0u; i < positions; i++) {
            acc += bias_grad_dy[base + i];
        }
    }
    bias_grad_db[o] = acc;
}

// ---------------------------------------------------------------- max pooling over time
//
// x is viewed as rows of `in_len` values (N·C rows of a N×C×L tensor). Output t of a row
// is the maximum over the window of `kernel` positions starting at t·stride − pad_left,
// padding excluded (the host keeps pads below the kernel, so every window holds at least
// one real value); `argmax` is its position in the row. Max-over-time is the window that
// covers the whole row.
//
// The first maximum wins a tie. A NaN counts as the maximum (it propagates, and the first
// NaN wins), so a NaN in the input shows up in the output.

struct PoolParams {
    rows: u32,
    in_len: u32,
    out_len: u32,
    kernel: u32,
    stride: u32,
    pad_left: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> pool_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> pool_y: array<f32>;
@group(0) @binding(2) var<storage, read_write> pool_argmax: array<u32>;
@group(0) @binding(3) var<uniform> pool_params: PoolParams;

// By the bits: a compiler may assume `v != v` is false (lavapipe does).
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

@compute @workgroup_size(256)
fn max_pool(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let p = pool_params;
    let i = flat_index(wid, nwg, lid, WORKGROUP);
    if i >= p.rows * p.out_len {
        return;
    }
    let row = (i / p.out_len) * p.in_len;
    let start = i32((i % p.out_len) * p.stride) - i32(p.pad_left);
    let first = u32(max(start, 0));
    let end = u32(min(start + i32(p.kernel), i32(p.in_len)));
    var best = pool_x[row + first];
    var best_at = first;
    for (var l = first + 1u; l < end; l++) {
        let v = pool_x[row + l];
        if !is_nan(best) && (v > best || is_nan(v)) {
            best = v;
            best_at = l;
        }
    }
    pool_y[i] = best;
    pool_argmax[i] = best_at;
}

// dx[row, l] = Σ dy[row, t] over the windows t whose argmax is l, 0 where no window
// picked l. One invocation per row: it zeroes the row, then adds each window's dy at its
// argmax in window order, so every sum has one fixed order (no atomics). Positions outside
// the row are ignored.

@group(0) @binding(0) var<storage, read> unpool_dy: array<f32>;
@group(0) @binding(1) var<storage, read> unpool_argmax: array<u32>;
@group(0) @binding(2) var<storage, read_write> unpool_dx: array<f32>;
@group(0) @binding(3) var<uniform> unpool_params: PoolParams;

@compute @workgroup_size(64)
fn max_pool_backward(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let p = unpool_params;
    let row = flat_index(wid, nwg, lid, GROUP);
    if row >= p.rows {
        return;
    }
    let dx_row = row * p.in_len;
    for (var l = 0u; l < p.in_len; l++) {
        unpool_dx[dx_row + l] = 0.0;
    }
    let dy_row = row * p.out_len;
    for (var t = 0u; t < p.out_len; t++) {
        let l = unpool_argmax[dy_row + t];
        if l < p.in_len {
            unpool_dx[dx_row + l] += unpool_dy[dy_row + t];
        }
    }
}
