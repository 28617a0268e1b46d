// Convolution over sequences and images, its gradients, and max pooling over time.
//
// The convolution is 2-D (a sequence is an image of height 1): x is N×C×H×W, the weight
// O×C×KH×KW, the optional bias O, the output N×O×OH×OW with
//     y[n, o, oh, ow] = bias[o] + Σ_{c, kh, kw} w[o, c, kh, kw] · x[n, c, ih, iw],
//     ih = oh·stride_h + kh − pad_top,   iw = ow·stride_w + kw − pad_left,
// where x is zero outside the image (zero padding). All tensors are contiguous.
//
// The direct kernels (forward and both data gradients) give each workgroup one uniform
// choice of batch item and a block of 8 channels, and each of its 64 invocations one
// position. Every weight (or gradient) index is then the same across the workgroup: on a
// CPU adapter such as lavapipe that is one scalar load broadcast to every lane, and each
// position load feeds 8 fused multiply-adds. Workgroups are numbered along one axis folded
// into x and y (`group = wid.y · nwg.x + wid.x`), decoded with uniform arithmetic.
//
// Every gradient element is computed by one invocation that loops over everything that
// contributes to it, in a fixed order: no atomics, the same bits on every run.

const GROUP_POSITIONS: u32 = 64u;   // invocations per workgroup of the direct kernels
const BLOCK: u32 = 8u;              // channels per invocation of the direct kernels
const WORKGROUP: u32 = 256u;        // invocations per workgroup of the elementwise kernels

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

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
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

// ---------------------------------------------------------------- forward, direct
//
// Workgroup: (n, output channels o0..o0+7, 64 consecutive output positions oh·OW + ow).

override HAS_BIAS: bool = false;

@group(0) @binding(0) var<storage, read> forward_x: array<f32>;
@group(0) @binding(1) var<storage, read> forward_weight: array<f32>;
@group(0) @binding(2) var<storage, read> forward_bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> forward_y: array<f32>;
@group(0) @binding(4) var<uniform> forward_params: ConvParams;

fn store_output(n: u32, o: u32, position: u32, acc: f32) {
    let p = forward_params;
    if o >= p.out_channels {
        return;
    }
    var v = acc;
    if HAS_BIAS {
        v += forward_bias[o];
    }
    forward_y[(n * p.out_channels + o) * p.out_h * p.out_w + position] = v;
}

@compute @workgroup_size(64)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let p = forward_params;
    let positions = p.out_h * p.out_w;
    let position_groups = (positions + GROUP_POSITIONS - 1u) / GROUP_POSITIONS;
    let channel_blocks = (p.out_channels + BLOCK - 1u) / BLOCK;
    let group = group_index(wid, nwg);
    if group >= p.batch * channel_blocks * position_groups {
        return;
    }
    let o0 = (group / position_groups) % channel_blocks * BLOCK;
    let n = group / (position_groups * channel_blocks);
    let position = (group % position_groups) * GROUP_POSITIONS + lid;
    // Positions past the end compute a clamped (valid) one and store nothing.
    let at = min(position, positions - 1u);
    let ih0 = i32((at / p.out_w) * p.stride_h) - i32(p.pad_top);
    let iw0 = i32((at % p.out_w) * p.stride_w) - i32(p.pad_left);

    let taps = p.kernel_h * p.kernel_w;
    let row = p.in_channels * taps;   // weights per output channel
    let last = p.out_channels - 1u;
    // Channels past the last read the last one's weights; `store_output` drops them.
    let w0 = min(o0, last) * row;
    let w1 = min(o0 + 1u, last) * row;
    let w2 = min(o0 + 2u, last) * row;
    let w3 = min(o0 + 3u, last) * row;
    let w4 = min(o0 + 4u, last) * row;
    let w5 = min(o0 + 5u, last) * row;
    let w6 = min(o0 + 6u, last) * row;
    let w7 = min(o0 + 7u, last) * row;
    var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
    var a4 = 0.0; var a5 = 0.0; var a6 = 0.0; var a7 = 0.0;
    for (var c = 0u; c < p.in_channels; c++) {
        let plane = (n * p.in_channels + c) * p.in_h * p.in_w;
        for (var kh = 0u; kh < p.kernel_h; kh++) {
            for (var kw = 0u; kw < p.kernel_w; kw++) {
                let ih = ih0 + i32(kh);
                let iw = iw0 + i32(kw);
                let xv = select(0.0, forward_x[plane + clamped_offset(ih, iw, p.in_h, p.in_w)],
                                inside(ih, iw, p.in_h, p.in_w));
                let j = (c * p.kernel_h + kh) * p.kernel_w + kw;
                a0 = fma(forward_weight[w0 + j], xv, a0);
                a1 = fma(forward_weight[w1 + j], xv, a1);
                a2 = fma(forward_weight[w2 + j], xv, a2);
                a3 = fma(forward_weight[w3 + j], xv, a3);
                a4 = fma(forward_weight[w4 + j], xv, a4);
                a5 = fma(forward_weight[w5 + j], xv, a5);
                a6 = fma(forward_weight[w6 + j], xv, a6);
                a7 = fma(forward_weight[w7 + j], xv, a7);
            }
        }
    }
    if position >= positions {
        return;
    }
    store_output(n, o0, position, a0);
    store_output(n, o0 + 1u, position, a1);
    store_output(n, o0 + 2u, position, a2);
    store_output(n, o0 + 3u, position, a3);
    store_output(n, o0 + 4u, position, a4);
    store_output(n, o0 + 5u, position, a5);
    store_output(n, o0 + 6u, position, a6);
    store_output(n, o0 + 7u, position, a7);
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
    let i = group_index(wid, nwg) * WORKGROUP + lid;
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
// over the (kh, kw) whose output position oh = (ih + pad_top − kh) / stride_h (and ow
// likewise) is whole and inside the output. Workgroup: (n, input channels c0..c0+7,
// 64 consecutive input positions ih·W + iw).

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

fn store_input_grad(n: u32, c: u32, position: u32, acc: f32) {
    let p = input_grad_params;
    if c < p.in_channels {
        input_grad_dx[(n * p.in_channels + c) * p.in_h * p.in_w + position] = acc;
    }
}

@compute @workgroup_size(64)
fn conv_input_grad(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let p = input_grad_params;
    let positions = p.in_h * p.in_w;
    let position_groups = (positions + GROUP_POSITIONS - 1u) / GROUP_POSITIONS;
    let channel_blocks = (p.in_channels + BLOCK - 1u) / BLOCK;
    let group = group_index(wid, nwg);
    if group >= p.batch * channel_blocks * position_groups {
        return;
    }
    let c0 = (group / position_groups) % channel_blocks * BLOCK;
    let n = group / (position_groups * channel_blocks);
    let position = (group % position_groups) * GROUP_POSITIONS + lid;
    let at = min(position, positions - 1u);
    let ih = at / p.in_w;
    let iw = at % p.in_w;

    let taps = p.kernel_h * p.kernel_w;
    let row = p.in_channels * taps;
    let out_positions = p.out_h * p.out_w;
    let last = p.in_channels - 1u;
    // Channels past the last read the last one's weights; `store_input_grad` drops them.
    let c0_at = min(c0, last) * taps;
    let c1_at = min(c0 + 1u, last) * taps;
    let c2_at = min(c0 + 2u, last) * taps;
    let c3_at = min(c0 + 3u, last) * taps;
    let c4_at = min(c0 + 4u, last) * taps;
    let c5_at = min(c0 + 5u, last) * taps;
    let c6_at = min(c0 + 6u, last) * taps;
    let c7_at = min(c0 + 7u, last) * taps;
    var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
    var a4 = 0.0; var a5 = 0.0; var a6 = 0.0; var a7 = 0.0;
    for (var kh = 0u; kh < p.kernel_h; kh++) {
        let oh = output_coordinate(ih, p.pad_top, kh, p.stride_h, p.out_h);
        for (var kw = 0u; kw < p.kernel_w; kw++) {
            let ow = output_coordinate(iw, p.pad_left, kw, p.stride_w, p.out_w);
            if oh < 0 || ow < 0 {
                continue;
            }
            let dy_at = n * p.out_channels * out_positions + u32(oh) * p.out_w + u32(ow);
            let tap = kh * p.kernel_w + kw;
            for (var o = 0u; o < p.out_channels; o++) {
                let g = input_grad_dy[dy_at + o * out_positions];
                let w_at = o * row + tap;
                a0 = fma(input_grad_weight[w_at + c0_at], g, a0);
                a1 = fma(input_grad_weight[w_at + c1_at], g, a1);
                a2 = fma(input_grad_weight[w_at + c2_at], g, a2);
                a3 = fma(input_grad_weight[w_at + c3_at], g, a3);
                a4 = fma(input_grad_weight[w_at + c4_at], g, a4);
                a5 = fma(input_grad_weight[w_at + c5_at], g, a5);
                a6 = fma(input_grad_weight[w_at + c6_at], g, a6);
                a7 = fma(input_grad_weight[w_at + c7_at], g, a7);
            }
        }
    }
    if position >= positions {
        return;
    }
    store_input_grad(n, c0, position, a0);
    store_input_grad(n, c0 + 1u, position, a1);
    store_input_grad(n, c0 + 2u, position, a2);
    store_input_grad(n, c0 + 3u, position, a3);
    store_input_grad(n, c0 + 4u, position, a4);
    store_input_grad(n, c0 + 5u, position, a5);
    store_input_grad(n, c0 + 6u, position, a6);
    store_input_grad(n, c0 + 7u, position, a7);
}

// ---------------------------------------------------------------- gradient of the weight
//
//     dw[o, c, kh, kw] = Σ_{n, oh, ow} dy[n, o, oh, ow] · x[n, c, ih, iw]
// Workgroup: (output channels o0..o0+7, 64 consecutive weight columns j = (c·KH + kh)·KW
// + kw); the loop runs over every batch item and output position.

@group(0) @binding(0) var<storage, read> weight_grad_x: array<f32>;
@group(0) @binding(1) var<storage, read> weight_grad_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight_grad_dw: array<f32>;
@group(0) @binding(3) var<uniform> weight_grad_params: ConvParams;

fn store_weight_grad(o: u32, j: u32, acc: f32) {
    let p = weight_grad_params;
    if o < p.out_channels {
        weight_grad_dw[o * p.in_channels * p.kernel_h * p.kernel_w + j] = acc;
    }
}

@compute @workgroup_size(64)
fn conv_weight_grad(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let p = weight_grad_params;
    let taps = p.kernel_h * p.kernel_w;
    let row = p.in_channels * taps;
    let column_groups = (row + GROUP_POSITIONS - 1u) / GROUP_POSITIONS;
    let channel_blocks = (p.out_channels + BLOCK - 1u) / BLOCK;
    let group = group_index(wid, nwg);
    if group >= channel_blocks * column_groups {
        return;
    }
    let o0 = group / column_groups * BLOCK;
    let j = (group % column_groups) * GROUP_POSITIONS + lid;
    let at = min(j, row - 1u);
    let c = at / taps;
    let kh = (at % taps) / p.kernel_w;
    let kw = at % p.kernel_w;

    let out_positions = p.out_h * p.out_w;
    let last = p.out_channels - 1u;
    // Channels past the last read the last one's gradient; `store_weight_grad` drops them.
    let o0_at = min(o0, last) * out_positions;
    let o1_at = min(o0 + 1u, last) * out_positions;
    let o2_at = min(o0 + 2u, last) * out_positions;
    let o3_at = min(o0 + 3u, last) * out_positions;
    let o4_at = min(o0 + 4u, last) * out_positions;
    let o5_at = min(o0 + 5u, last) * out_positions;
    let o6_at = min(o0 + 6u, last) * out_positions;
    let o7_at = min(o0 + 7u, last) * out_positions;
    var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
    var a4 = 0.0; var a5 = 0.0; var a6 = 0.0; var a7 = 0.0;
    for (var n = 0u; n < p.batch; n++) {
        let plane = (n * p.in_channels + c) * p.in_h * p.in_w;
        let dy_n = n * p.out_channels * out_positions;
        for (var oh = 0u; oh < p.out_h; oh++) {
            let ih = i32(oh * p.stride_h + kh) - i32(p.pad_top);
            for (var ow = 0u; ow < p.out_w; ow++) {
                let iw = i32(ow * p.stride_w + kw) - i32(p.pad_left);
                let xv = select(0.0,
                                weight_grad_x[plane + clamped_offset(ih, iw, p.in_h, p.in_w)],
                                inside(ih, iw, p.in_h, p.in_w));
                let dy_at = dy_n + oh * p.out_w + ow;
                a0 = fma(weight_grad_dy[dy_at + o0_at], xv, a0);
                a1 = fma(weight_grad_dy[dy_at + o1_at], xv, a1);
                a2 = fma(weight_grad_dy[dy_at + o2_at], xv, a2);
                a3 = fma(weight_grad_dy[dy_at + o3_at], xv, a3);
                a4 = fma(weight_grad_dy[dy_at + o4_at], xv, a4);
                a5 = fma(weight_grad_dy[dy_at + o5_at], xv, a5);
                a6 = fma(weight_grad_dy[dy_at + o6_at], xv, a6);
                a7 = fma(weight_grad_dy[dy_at + o7_at], xv, a7);
            }
        }
    }
    if j >= row {
        return;
    }
    store_weight_grad(o0, j, a0);
    store_weight_grad(o0 + 1u, j, a1);
    store_weight_grad(o0 + 2u, j, a2);
    store_weight_grad(o0 + 3u, j, a3);
    store_weight_grad(o0 + 4u, j, a4);
    store_weight_grad(o0 + 5u, j, a5);
    store_weight_grad(o0 + 6u, j, a6);
    store_weight_grad(o0 + 7u, j, a7);
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
    let o = group_index(wid, nwg) * GROUP_POSITIONS + lid;
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
    let i = group_index(wid, nwg) * WORKGROUP + lid;
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

// dx[row, l] = Σ dy[row, t] over the windows t that contain l and whose argmax is l:
// one invocation per input position, zero where no window picked it.

@group(0) @binding(0) var<storage, read> unpool_dy: array<f32>;
@group(0) @binding(1) var<storage, read> unpool_argmax: array<u32>;
@group(0) @binding(2) var<storage, read_write> unpool_dx: array<f32>;
@group(0) @binding(3) var<uniform> unpool_params: PoolParams;

@compute @workgroup_size(256)
fn max_pool_backward(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let p = unpool_params;
    let i = group_index(wid, nwg) * WORKGROUP + lid;
    if i >= p.rows * p.in_len {
        return;
    }
    let l = i % p.in_len;
    let row = (i / p.in_len) * p.out_len;
    // Windows t with t·stride − pad_left ≤ l < t·stride − pad_left + kernel.
    let reach = i32(l + p.pad_left) - i32(p.kernel) + 1;
    let first = u32(max(reach + i32(p.stride) - 1, 0)) / p.stride;
    let last = min((l + p.pad_left) / p.stride, p.out_len - 1u);
    var acc = 0.0;
    for (var t = first; t <= last; t++) {
        if unpool_argmax[row + t] == l {
            acc += unpool_dy[row + t];
        }
    }
    unpool_dx[i] = acc;
}
