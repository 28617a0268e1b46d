"""PyTorch eager on the same work as `shadergrad bench`, for a side-by-side comparison:
square matmuls in FP32 (TF32 off) and FP16, the MLP 784-256-256-10 training step, and the
default train-seq2seq model's training step (bidirectional GRU 64, dot attention, batch
128, sources of 7, targets of 5) in target tokens/s.

    python3 benches/pytorch_bench.py [--json FILE] [--device cuda|cpu]

Each figure is the median of 7 runs after 2 warm-ups, synchronised around each run. The
JSON rows have the fields of `shadergrad bench --json`.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn


def timed(device, fn, warmup=2, runs=7):
    seconds = []
    for i in range(warmup + runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), max(seconds) - min(seconds)


def row(device, kernel, variant, shape, median, spread, flops=None, items=None):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "adapter": name,
        "backend": "pytorch-" + device.type,
        "kernel": kernel,
        "variant": variant,
        "shape": shape,
        "median_ms": median * 1e3,
        "spread_ms": spread * 1e3,
        "gflops": flops / median / 1e9 if flops else None,
        "gbps": None,
        "items_per_s": items / median if items else None,
        "timing": "wall-clock",
        "picked": True,
    }


def matmuls(device, rows):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sizes = [128, 256, 512, 1024, 2048, 4096] if device.type == "cuda" else [128, 256, 512, 1024]
    dtypes = [("f32", torch.float32)] + ([("f16", torch.float16)] if device.type == "cuda" else [])
    for label, dtype in dtypes:
        for n in sizes:
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            median, spread = timed(device, lambda: a @ b)
            rows.append(row(device, "matmul", label, f"{n}x{n}x{n}", median, spread, 2.0 * n**3))


def mlp_step(device, rows):
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(128, 784, device=device)
    y = torch.arange(128, device=device) % 10

    def step():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()

    median, spread = timed(device, step)
    rows.append(row(device, "train step", "mlp", "784-256-256-10 b128", median, spread, items=128))


class Seq2Seq(nn.Module):
    """train-seq2seq's default model: bidirectional GRU encoder, GRU decoder from a tanh
    bridge, Luong general attention, tanh combination, vocabulary logits."""

    def __init__(self, vocab=15, embed=32, hidden=64):
        super().__init__()
        self.source_embedding = nn.Embedding(vocab, embed)
        self.target_embedding = nn.Embedding(vocab, embed)
        self.encoder = nn.GRU(embed, hidden, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.decoder = nn.GRU(embed, hidden)
        self.key = nn.Linear(2 * hidden, hidden, bias=False)
        self.combine = nn.Linear(3 * hidden, hidden)
        self.output = nn.Linear(hidden, vocab)

    def forward(self, source, decoder_input):
        states, last = self.encoder(self.source_embedding(source))
        h0 = torch.tanh(self.bridge(torch.cat([last[0], last[1]], dim=1))).unsqueeze(0)
        decoded, _ = self.decoder(self.target_embedding(decoder_input), h0)
        keys = self.key(states).transpose(0, 1)            # [B, Ts, H]
        values = states.transpose(0, 1)                    # [B, Ts, 2H]
        queries = decoded.transpose(0, 1)                  # [B, Td, H]
        weights = torch.softmax(queries @ keys.transpose(1, 2) / keys.shape[-1] ** 0.5, dim=-1)
        context = weights @ values
        combined = torch.tanh(self.combine(torch.cat([context, queries], dim=-1)))
        return self.output(combined)                       # [B, Td, V]


def seq2seq_step(device, rows):
    model = Seq2Seq().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    source = torch.randint(4, 15, (7, 128), device=device)
    decoder_input = torch.randint(4, 15, (5, 128), device=device)
    target = torch.randint(4, 15, (128, 5), device=device)

    def step():
        optimizer.zero_grad()
        logits = model(source, decoder_input)
        loss = nn.functional.cross_entropy(logits.reshape(-1, 15), target.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        loss.item()

    median, spread = timed(device, step)
    rows.append(row(device, "train step", "seq2seq", "bi-GRU64 b128 7→5", median, spread,
                    items=128 * 5))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    matmuls(device, rows)
    mlp_step(device, rows)
    seq2seq_step(device, rows)
    for r in rows:
        rate = f"{r['gflops']:.1f} GFLOP/s" if r["gflops"] else f"{r['items_per_s']:.0f}/s"
        print(f"{r['kernel']:<12} {r['variant']:<8} {r['shape']:<22} {r['median_ms']:9.3f} ms  {rate}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
