"""PyTorch eager (CPU) on the training step of `shadergrad train-seq2seq`'s RNN
encoder-decoder, at the sizes a real corpus needs, in target tokens per second.

The model is `scripts/pytorch-reference.py`'s twin of `nn::seq2seq::Seq2Seq`, under the
same parameter names, parameterised by sizes: a source embedding and a bidirectional GRU
encoder, per layer a tanh bridge from both directions' final states to the decoder's
initial state, a target embedding and a GRU decoder fed BOS and the target (teacher
forcing), Luong's attention with the encoder states projected to keys (scores scaled by
1/sqrt(H), padded keys masked), tanh(combine([context; state])), and the output layer over
the target vocabulary. `--cell`, `--attention` and `--bidirectional` take the other
choices `train-seq2seq` offers (lstm/rnn, additive/none, false).

One step is what `train-seq2seq` does per batch: forward, softmax cross-entropy over the
target vocabulary (PAD ignored, mean over the real tokens), the argmax predictions (for the
token accuracy), backward, clipping to global norm 5, Adam (lr 0.01, PyTorch's betas and
eps), and reading the loss and the correct count back. The batch is random ids in [3, V)
(PAD 0, BOS 1, EOS 2 as in shadergrad's vocabularies; UNK 3 is an ordinary id), every
source of Ts tokens, every target of Td - 1 tokens then EOS (Td decoder steps), the same
batch every step. Target tokens/s = batch x Td / the median step.

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch
        # (add --index-url https://download.pytorch.org/whl/cpu for the CPU-only wheel)
    /tmp/torch-venv/bin/python benches/seq2seq_pytorch.py --threads 2
    /tmp/torch-venv/bin/python benches/seq2seq_pytorch.py --threads 2 --sweep --steps 5
    python3 benches/seq2seq_pytorch.py [--vocab V] [--hidden H] [--embed E] [--layers L]
        [--batch B] [--source-len Ts] [--target-len Td] [--steps N] [--threads T]
        [--json FILE] [--sweep]

Defaults: V 30000, H 512, E = H/2 (train-seq2seq's own default is H 64, E 32), 1 layer,
batch 64, Ts 20, Td 20, threads as torch.get_num_threads(). `--sweep` runs (V, H) =
(11, 64) (train-seq2seq's default size), (5000, 256), (30000, 256), (30000, 512) in turn,
each with E = H/2 unless --embed is given and the other sizes as given. Each figure is the
median of N steps (`--steps`, default 7) after 2 warm-ups. The JSON rows have the fields of
`shadergrad bench --json` (as `benches/pytorch_bench.py` writes them) plus the sizes.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn

PAD, BOS, EOS = 0, 1, 2
FIRST_TOKEN = 3
SWEEP = [(11, 64), (5000, 256), (30000, 256), (30000, 512)]
CELLS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}


def timed(fn, warmup=2, runs=7):
    """The median and spread of `runs` calls of `fn` after `warmup` untimed ones."""
    seconds = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        fn()
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), max(seconds) - min(seconds)


class Seq2Seq(nn.Module):
    """shadergrad's nn::seq2seq::Seq2Seq (the recurrent architecture), under the same
    parameter names: `scripts/pytorch-reference.py`'s Seq2Seq with the cell, the attention
    and the bidirectional encoder as train-seq2seq's options choose them."""

    def __init__(self, vocab, embed, hidden, layers, cell="gru", attention="dot",
                 bidirectional=True):
        super().__init__()
        rnn = CELLS[cell]
        self.hidden, self.layers, self.cell = hidden, layers, cell
        self.kind, self.bidirectional = attention, bidirectional
        width = 2 * hidden if bidirectional else hidden
        self.encoder = nn.Module()
        self.encoder.embedding = nn.Embedding(vocab, embed)
        self.encoder.rnn = rnn(embed, hidden, num_layers=layers, bidirectional=bidirectional)
        if bidirectional:
            self.bridge_h = nn.ModuleList(nn.Linear(2 * hidden, hidden) for _ in range(layers))
            if cell == "lstm":
                self.bridge_c = nn.ModuleList(
                    nn.Linear(2 * hidden, hidden) for _ in range(layers)
                )
        if attention != "none":
            self.attention = nn.Module()
            self.attention.key = nn.Linear(width, hidden, bias=False)
            if attention == "additive":
                self.attention.query = nn.Linear(hidden, hidden, bias=False)
                self.attention.score = nn.Linear(hidden, 1, bias=False)
            self.attention.combine = nn.Linear(width + hidden, hidden)
        self.decoder = nn.Module()
        self.decoder.embedding = nn.Embedding(vocab, embed)
        self.decoder.rnn = rnn(embed, hidden, num_layers=layers)
        self.output = nn.Linear(hidden, vocab)

    def bridge(self, finals, bridges, activation):
        """Per layer, both directions' final states [2k], [2k + 1] as one decoder state."""
        return torch.stack([
            activation(bridges[k](torch.cat([finals[2 * k], finals[2 * k + 1]], 1)))
            for k in range(self.layers)
        ])

    def forward(self, source, lengths, decoder_input, packed=False):
        """Logits [B·Td, V] (batch-major rows b·Td + t) for time-major ids source [Ts, B]
        with `lengths` [B] and decoder_input [Td, B] (BOS, then the target)."""
        steps = source.shape[0]
        x = self.encoder.embedding(source)
        if packed:
            x = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        encoded, finals = self.encoder.rnn(x)
        if packed:
            encoded, _ = nn.utils.rnn.pad_packed_sequence(encoded, total_length=steps)
        h_n, c_n = finals if self.cell == "lstm" else (finals, None)
        if self.bidirectional:
            h_n = self.bridge(h_n, self.bridge_h, torch.tanh)
            if c_n is not None:
                c_n = self.bridge(c_n, self.bridge_c, lambda c: c)
        initial = (h_n, c_n) if self.cell == "lstm" else h_n
        decoded, _ = self.decoder.rnn(self.decoder.embedding(decoder_input), initial)
        queries = decoded.permute(1, 0, 2)  # [B, Td, H]
        if self.kind == "none":
            features = queries
        else:
            values = encoded.permute(1, 0, 2)  # [B, Ts, He]
            keys = self.attention.key(values)  # [B, Ts, H]
            padded = torch.arange(steps)[None, None, :] >= lengths[:, None, None]
            if self.kind == "dot":
                scores = queries @ keys.transpose(1, 2) / self.hidden**0.5
                scores = scores.masked_fill(padded, float("-inf"))
            else:
                # [B, Td, 1, H] + [B, 1, Ts, H]: every query against every key.
                both = self.attention.query(queries)[:, :, None, :] + keys[:, None, :, :]
                scores = self.attention.score(torch.tanh(both)).squeeze(-1)
                scores = scores.masked_fill(padded, -1e9)
            context = torch.softmax(scores, -1) @ values
            features = torch.tanh(self.attention.combine(torch.cat([context, queries], -1)))
        return self.output(features).reshape(-1, self.output.out_features)


def measure(args, vocab, hidden, embed):
    """One configuration's row: the median training step and target tokens/s."""
    torch.manual_seed(0)
    batch, ts, td = args.batch, args.source_len, args.target_len
    model = Seq2Seq(vocab, embed, hidden, args.layers, args.cell, args.attention,
                    args.bidirectional)
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    source = torch.randint(FIRST_TOKEN, vocab, (ts, batch))
    lengths = torch.full((batch,), ts, dtype=torch.long)
    targets = torch.randint(FIRST_TOKEN, vocab, (batch, td))  # batch-major
    targets[:, -1] = EOS
    decoder_input = torch.cat([torch.full((1, batch), BOS), targets.T[:-1]], 0)
    target = targets.reshape(-1)

    def step():
        optimizer.zero_grad()
        logits = model(source, lengths, decoder_input, args.packed)
        loss = nn.functional.cross_entropy(logits, target, ignore_index=PAD)
        correct = ((logits.detach().argmax(-1) == target) & (target != PAD)).sum()
        loss.backward()
        if args.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        return loss.item(), correct.item()

    median, spread = timed(step, warmup=args.warmup, runs=args.steps)
    tokens = batch * td
    direction = "bi-" if args.bidirectional else ""
    shape = (f"V{vocab} {direction}{args.cell.upper()}{hidden} E{embed} L{args.layers} "
             f"{args.attention} b{batch} {ts}→{td}")
    return {
        "adapter": "cpu",
        "backend": "pytorch-cpu",
        "kernel": "train step",
        "variant": "seq2seq",
        "shape": shape,
        "median_ms": median * 1e3,
        "spread_ms": spread * 1e3,
        "gflops": None,
        "gbps": None,
        "items_per_s": tokens / median,
        "timing": "wall-clock",
        "picked": True,
        "vocab": vocab,
        "hidden": hidden,
        "embed": embed,
        "layers": args.layers,
        "cell": args.cell,
        "attention": args.attention,
        "bidirectional": args.bidirectional,
        "batch": batch,
        "source_len": ts,
        "target_len": td,
        "threads": torch.get_num_threads(),
        "parameters": parameters,
        "packed": args.packed,
        "steps": args.steps,
        "torch": torch.__version__,
    }


def boolean(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=30000,
                        help="source and target vocabulary, special ids included")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--embed", type=int, help="default: hidden / 2")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--cell", choices=sorted(CELLS), default="gru")
    parser.add_argument("--attention", choices=["dot", "additive", "none"], default="dot")
    parser.add_argument("--bidirectional", type=boolean, default=True, metavar="true|false")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--source-len", type=int, default=20)
    parser.add_argument("--target-len", type=int, default=20,
                        help="decoder steps: the target's tokens and its EOS")
    parser.add_argument("--steps", type=int, default=7, help="timed steps (the median is kept)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--threads", type=int, help="default: torch.get_num_threads()")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--clip", type=float, default=5.0, help="global norm; 0: none")
    parser.add_argument("--packed", action="store_true",
                        help="run the encoder over a PackedSequence, as a corpus of unequal "
                             "lengths would need")
    parser.add_argument("--sweep", action="store_true",
                        help="(V, H) = " + ", ".join(map(str, SWEEP)))
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.vocab <= FIRST_TOKEN or args.target_len < 1 or args.source_len < 1:
        parser.error("--vocab must exceed 3 and the lengths be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = SWEEP if args.sweep else [(args.vocab, args.hidden)]
    rows = []
    for vocab, hidden in configs:
        embed = args.embed or max(1, hidden // 2)
        r = measure(args, vocab, hidden, embed)
        rows.append(r)
        print(f"V {vocab:>6} H {hidden:>4} E {embed:>4} L {r['layers']} "
              f"B {r['batch']} Ts {r['source_len']} Td {r['target_len']} "
              f"threads {r['threads']} ({r['parameters'] / 1e6:.2f}M params): "
              f"{r['median_ms']:9.1f} ms/step (spread {r['spread_ms']:.1f})  "
              f"{r['items_per_s']:9.0f} target tokens/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
