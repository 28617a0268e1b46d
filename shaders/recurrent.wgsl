// Recurrent cells (RNN, GRU, LSTM), one time step per dispatch, forward and backward.
//
// A layer runs over T steps of a batch of B sequences with H hidden units and G gate
// blocks of H columns (RNN 1: a; GRU 3: r, z, n; LSTM 4: i, f, g, o). The host records,
// per step, the recurrent product gh = h_prev·R + R_bias (the matmul kernel) and then one
// of the cell kernels below, which does everything elementwise for that step: one
// invocation per hidden unit (b, j), all of its gates at once.
//
// Layouts (f32, contiguous, time-major):
//   gx     [T, B, G·H]    input projections x·W + W_bias of every step, gate blocks of H
//   gh     [B, G·H]       this step's recurrent projection
//   states [T+1, B, H]    slot `prev_slot` holds h_prev, the step writes slot `out_slot`
//   cells  [T+1, B, H]    the same for the LSTM's cell state c
//   saved  [T, B, S·H]    per step what the backward needs: S blocks of H columns
//                         (RNN: h; GRU: r, z, n, gh_n; LSTM: i, f, g, o)
//   lengths [B] (u32)     step t of sequence b is real iff t < lengths[b]
// A step past a sequence's length is masked: it carries h (and c) unchanged into its
// output slot and saves zeros; the backward passes the gradients through it unchanged.
//
// Backward, per step in reverse processing order: the cell kernel turns the gradient
// dh of the step's output into the pre-activation gate gradients (dgx, and dgh where it
// differs: the GRU's n gate) and the part of dh_prev that does not go through R (the
// "direct" part), which it writes over `carry`; the host's matmul then forms
// dh_prev = dgh·Rᵀ + direct into the other carry buffer. The carry therefore always holds
// the whole gradient of one slot of `states`, dstates of that slot included.

override HAS_LENGTHS: bool = false;
override HAS_PEEPHOLES: bool = false;   // LSTM forward: p_i, p_o, p_f (ONNX's order)
override HAS_DSTATES: bool = false;     // backward: dstates given (else zeros)
override HAS_DCELLS: bool = false;      // LSTM backward: dcells given (else zeros)

const WORKGROUP: u32 = 256u;

struct Params {
    batch: u32,
    hidden: u32,
    step: u32,        // t: the time index of gx, saved, dgx
    prev_slot: u32,   // the slot of states/cells holding h_prev (c_prev)
    out_slot: u32,    // the slot the step writes (forward) or whose gradient it takes (backward)
    first: u32,       // backward: 1 for the first step processed, whose carry is not yet written
    _pad0: u32,
    _pad1: u32,
}

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
}

// tanh without overflow: exp(-2|x|) stays in (0, 1].
fn stable_tanh(x: f32) -> f32 {
    let t = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - t) / (1.0 + t);
}

// Logistic sigmoid, exp never overflows: it only sees -|x|.
fn stable_sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

// Where one unit's values sit, for the step being processed.
struct Unit {
    b: u32,
    j: u32,
    prev: u32,       // its element of slot prev_slot in states/cells
    out: u32,        // its element of slot out_slot
    gates: u32,      // element (t, b, gate 0, j) of gx/dgx; gate g is + g·H
    row: u32,        // element (b, gate 0, j) of gh
    saved: u32,      // element (t, b, block 0, j) of saved; block s is + s·H
    real: bool,      // t < lengths[b]
}

@group(0) @binding(2) var<storage, read> lengths: array<u32>;

// The unit of flat index u (= b·H + j) for the step `p` describes.
fn unit_at(p: Params, u: u32, gate_count: u32, saved_count: u32) -> Unit {
    let units = p.batch * p.hidden;
    var unit: Unit;
    unit.b = u / p.hidden;
    unit.j = u % p.hidden;
    unit.prev = p.prev_slot * units + u;
    unit.out = p.out_slot * units + u;
    unit.row = unit.b * gate_count * p.hidden + unit.j;
    unit.gates = p.step * p.batch * gate_count * p.hidden + unit.row;
    unit.saved = (p.step * p.batch + unit.b) * saved_count * p.hidden + unit.j;
    unit.real = !HAS_LENGTHS || p.step < lengths[unit.b];
    return unit;
}

// ---------------------------------------------------------------- initial state

@group(0) @binding(0) var<storage, read> h0: array<f32>;
@group(0) @binding(1) var<storage, read> c0: array<f32>;
@group(0) @binding(2) var<storage, read_write> init_states: array<f32>;
@group(0) @binding(3) var<storage, read_write> init_cells: array<f32>;
@group(0) @binding(4) var<uniform> init_params: Params;

// states[prev_slot] = h0 (and cells[prev_slot] = c0): the first step's h_prev.
@compute @workgroup_size(256)
fn init_state(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let p = init_params;
    let u = flat_index(wid, nwg, lid);
    if u >= p.batch * p.hidden {
        return;
    }
    init_states[p.prev_slot * p.batch * p.hidden + u] = h0[u];
}

@compute @workgroup_size(256)
fn init_state_and_cell(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let p = init_params;
    let u = flat_index(wid, nwg, lid);
    if u >= p.batch * p.hidden {
        return;
    }
    let at = p.prev_slot * p.batch * p.hidden + u;
    init_states[at] = h0[u];
    init_cells[at] = c0[u];
}

// ---------------------------------------------------------------- forward
// Bindings: 0 gx, 1 gh, 2 lengths, 3 states, 4 saved, 5 cells (LSTM), 6 peepholes (LSTM),
// 7 params.

@group(0) @binding(0) var<storage, read> gx: array<f32>;
@group(0) @binding(1) var<storage, read> gh: array<f32>;
@group(0) @binding(3) var<storage, read_write> states: array<f32>;
@group(0) @binding(4) var<storage, read_write> saved: array<f32>;
@group(0) @binding(5) var<storage, read_write> cells: array<f32>;
@group(0) @binding(6) var<storage, read> peepholes: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

// Pre-activation of gate `g`: gx + gh.
fn pre(unit: Unit, g: u32) -> f32 {
    let offset = g * params.hidden;
    return gx[unit.gates + offset] + gh[unit.row + offset];
}

// h = tanh(gx + gh); saved: h.
@compute @workgroup_size(256)
fn rnn_forward(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let u = flat_index(wid, nwg, lid);
    if u >= params.batch * params.hidden {
        return;
    }
    let unit = unit_at(params, u, 1u, 1u);
    if !unit.real {
        states[unit.out] = states[unit.prev];
        saved[unit.saved] = 0.0;
        return;
    }
    let h = stable_tanh(pre(unit, 0u));
    states[unit.out] = h;
    saved[unit.saved] = h;
}

// GRU with the reset gate applied after the recurrent product (PyTorch; ONNX
// linear_before_reset = 1):
//   r = σ(gx_r + gh_r), z = σ(gx_z + gh_z), n = tanh(gx_n + r·gh_n),
//   h = (1 − z)·n + z·h_prev.   saved: r, z, n, gh_n.
@compute @workgroup_size(256)
fn gru_forward(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let u = flat_index(wid, nwg, lid);
    let hidden = params.hidden;
    if u >= params.batch * hidden {
        return;
    }
    let unit = unit_at(params, u, 3u, 4u);
    if !unit.real {
        states[unit.out] = states[unit.prev];
        for (var s = 0u; s < 4u; s++) {
            saved[unit.saved + s * hidden] = 0.0;
        }
        return;
    }
    let h_prev = states[unit.prev];
    let r = stable_sigmoid(pre(unit, 0u));
    let z = stable_sigmoid(pre(unit, 1u));
    let gh_n = gh[unit.row + 2u * hidden];
    let n = stable_tanh(gx[unit.gates + 2u * hidden] + r * gh_n);
    states[unit.out] = (1.0 - z) * n + z * h_prev;
    saved[unit.saved] = r;
    saved[unit.saved + hidden] = z;
    saved[unit.saved + 2u * hidden] = n;
    saved[unit.saved + 3u * hidden] = gh_n;
}

// LSTM, gate order i, f, g, o, with optional peepholes p_i, p_f on c_prev and p_o on c:
//   i = σ(gx_i + gh_i + p_i·c_prev), f = σ(gx_f + gh_f + p_f·c_prev), g = tanh(gx_g + gh_g),
//   c = f·c_prev + i·g, o = σ(gx_o + gh_o + p_o·c), h = o·tanh(c).   saved: i, f, g, o.
@compute @workgroup_size(256)
fn lstm_forward(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let u = flat_index(wid, nwg, lid);
    let hidden = params.hidden;
    if u >= params.batch * hidden {
        return;
    }
    let unit = unit_at(params, u, 4u, 4u);
    if !unit.real {
        states[unit.out] = states[unit.prev];
        cells[unit.out] = cells[unit.prev];
        for (var s = 0u; s < 4u; s++) {
            saved[unit.saved + s * hidden] = 0.0;
        }
        return;
    }
    let c_prev = cells[unit.prev];
    var pre_i = pre(unit, 0u);
    var pre_f = pre(unit, 1u);
    var pre_o = pre(unit, 3u);
    var p_o = 0.0;
    if HAS_PEEPHOLES {
        pre_i += peepholes[unit.j] * c_prev;
        p_o = peepholes[hidden + unit.j];
        pre_f += peepholes[2u * hidden + unit.j] * c_prev;
    }
    let i = stable_sigmoid(pre_i);
    let f = stable_sigmoid(pre_f);
    let g = stable_tanh(pre(unit, 2u));
    let c = f * c_prev + i * g;
    let o = stable_sigmoid(pre_o + p_o * c);
    cells[unit.out] = c;
    states[unit.out] = o * stable_tanh(c);
    saved[unit.saved] = i;
    saved[unit.saved + hidden] = f;
    saved[unit.saved + 2u * hidden] = g;
    saved[unit.saved + 3u * hidden] = o;
}

// ---------------------------------------------------------------- backward
// Bindings: 0 dstates, 1 saved, 2 lengths, 3 carry, 4 dgx, then per kind
// (GRU: 5 states, 6 dgh; LSTM: 5 dcells, 6 cells, 7 dc carry), 8 params.
//
// `carry` holds, on entry, the whole gradient of slot out_slot (written by the previous
// step's matmul; on the first step dstates of that slot stands in for it). Each unit
// reads its own element and overwrites it with the direct part of the gradient of slot
// prev_slot: dstates[prev_slot] + the part of dh that skips R (z·dh for the GRU, all of
// dh on a masked step).

@group(0) @binding(0) var<storage, read> dstates: array<f32>;
@group(0) @binding(1) var<storage, read> saved_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> carry: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgx: array<f32>;
@group(0) @binding(5) var<storage, read> states_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgh: array<f32>;
@group(0) @binding(5) var<storage, read> dcells: array<f32>;
@group(0) @binding(6) var<storage, read> cells_in: array<f32>;
@group(0) @binding(7) var<storage, read_write> dc_carry: array<f32>;
@group(0) @binding(8) var<uniform> bwd_params: Params;

fn dstate(at: u32) -> f32 {
    if HAS_DSTATES {
        return dstates[at];
    }
    return 0.0;
}

fn dcell(at: u32) -> f32 {
    if HAS_DCELLS {
        return dcells[at];
    }
    return 0.0;
}

// The whole gradient of the step's output slot for unit u.
fn incoming_dh(unit: Unit, u: u32) -> f32 {
    if bwd_params.first == 1u {
        return dstate(unit.out);
    }
    return carry[u];
}

fn zero_gates(unit: Unit, gate_count: u32) {
    for (var g = 0u; g < gate_count; g++) {
        dgx[unit.gates + g * bwd_params.hidden] = 0.0;
    }
}

@compute @workgroup_size(256)
fn rnn_backward(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let u = flat_index(wid, nwg, lid);
    if u >= bwd_params.batch * bwd_params.hidden {
        return;
    }
    let unit = unit_at(bwd_params, u, 1u, 1u);
    let dh = incoming_dh(unit, u);
    let direct = dstate(unit.prev);
    if !unit.real {
        zero_gates(unit, 1u);
        carry[u] = direct + dh;
        return;
    }
    let h = saved_in[unit.saved];
    dgx[unit.gates] = dh * (1.0 - h * h);
    carry[u] = direct;
}

@compute @workgroup_size(256)
fn gru_backward(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let u = flat_index(wid, nwg, lid);
    let hidden = bwd_params.hidden;
    if u >= bwd_params.batch * hidden {
        return;
    }
    let unit = unit_at(bwd_params, u, 3u, 4u);
    let dh = incoming_dh(unit, u);
    let direct = dstate(unit.prev);
    if !unit.real {
        zero_gates(unit, 3u);
        for (var g = 0u; g < 3u; g++) {
            dgh[unit.gates + g * hidden] = 0.0;
        }
        carry[u] = direct + dh;
        return;
    }
    let r = saved_in[unit.saved];
    let z = saved_in[unit.saved + hidden];
    let n = saved_in[unit.saved + 2u * hidden];
    let gh_n = saved_in[unit.saved + 3u * hidden];
    let h_prev = states_in[unit.prev];
    // h = (1 − z)·n + z·h_prev
    let dn_pre = dh * (1.0 - z) * (1.0 - n * n);
    let dz_pre = dh * (h_prev - n) * z * (1.0 - z);
    // n = tanh(gx_n + r·gh_n)
    let dr_pre = dn_pre * gh_n * r * (1.0 - r);
    dgx[unit.gates] = dr_pre;
    dgx[unit.gates + hidden] = dz_pre;
    dgx[unit.gates + 2u * hidden] = dn_pre;
    dgh[unit.gates] = dr_pre;
    dgh[unit.gates + hidden] = dz_pre;
    dgh[unit.gates + 2u * hidden] = dn_pre * r;
    carry[u] = direct + dh * z;
}

@compute @workgroup_size(256)
fn lstm_backward(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let u = flat_index(wid, nwg, lid);
    let hidden = bwd_params.hidden;
    if u >= bwd_params.batch * hidden {
        return;
    }
    let unit = unit_at(bwd_params, u, 4u, 4u);
    let dh = incoming_dh(unit, u);
    // The whole gradient of the output slot's cell, like `carry` for h.
    var dc = dc_carry[u];
    if bwd_params.first == 1u {
        dc = dcell(unit.out);
    }
    let direct = dstate(unit.prev);
    if !unit.real {
        zero_gates(unit, 4u);
        carry[u] = direct + dh;
        dc_carry[u] = dcell(unit.prev) + dc;
        return;
    }
    let i = saved_in[unit.saved];
    let f = saved_in[unit.saved + hidden];
    let g = saved_in[unit.saved + 2u * hidden];
    let o = saved_in[unit.saved + 3u * hidden];
    let c_prev = cells_in[unit.prev];
    let tanh_c = stable_tanh(cells_in[unit.out]);
    // h = o·tanh(c), c = f·c_prev + i·g
    dc += dh * o * (1.0 - tanh_c * tanh_c);
    dgx[unit.gates] = dc * g * i * (1.0 - i);
    dgx[unit.gates + hidden] = dc * c_prev * f * (1.0 - f);
    dgx[unit.gates + 2u * hidden] = dc * i * (1.0 - g * g);
    dgx[unit.gates + 3u * hidden] = dh * tanh_c * o * (1.0 - o);
    carry[u] = direct;
    dc_carry[u] = dcell(unit.prev) + dc * f;
}
