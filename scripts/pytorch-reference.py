#!/usr/bin/env python3
"""Reference data from PyTorch for shadergrad's interop tests (tests/pytorch.rs).

Run by a developer, not by CI (the Rust tests read what it writes, and need no Python):

    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch safetensors numpy
    /tmp/torch/bin/python scripts/pytorch-reference.py            # writes tests/data/pytorch
    /tmp/torch/bin/python scripts/pytorch-reference.py check DIR  # loads shadergrad's saves

For each case it writes two plain safetensors files (no shadergrad metadata):
  <case>.state.safetensors  the model's state_dict, exactly as PyTorch saves it;
  <case>.io.safetensors     its inputs, outputs and the losses of a few optimizer steps;
and mlp.bf16.safetensors, the MLP's weights in bfloat16 under "model."-prefixed names.

`check DIR` loads the files shadergrad's tests saved in DIR (`cargo test --test pytorch`
prints where) into the same PyTorch modules with load_state_dict(strict=True) and checks
that they compute what shadergrad computed.
"""

import math
import pathlib
import sys

import torch
from safetensors.torch import load_file, save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "pytorch"
STEPS = 3


class Mlp(torch.nn.Module):
    """shadergrad's nn::Mlp: Linear layers in a list called `layers`, tanh between."""

    def __init__(self, sizes):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])
        )

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = torch.tanh(x)
        return x


def adam_losses(model, loss_fn):
    """The loss before each of STEPS Adam steps (lr 0.01)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = loss_fn()
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    return torch.tensor(losses, dtype=torch.float32)


def state(model):
    return {name: t.detach().contiguous().clone() for name, t in model.state_dict().items()}


def mlp_case():
    torch.manual_seed(0)
    model = Mlp([3, 7, 5, 4])
    x = torch.randn(6, 3)
    labels = torch.tensor([0, 3, 1, 2, 3, 0])
    saved = state(model)
    with torch.no_grad():
        logits = model(x)
    losses = adam_losses(
        model, lambda: torch.nn.functional.cross_entropy(model(x), labels)
    )
    # The same weights as a half-precision checkpoint under other names ("model." before
    # each, as a wrapper module would save them), and the logits those rounded weights give.
    halved = Mlp([3, 7, 5, 4])
    halved.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in saved.items()})
    with torch.no_grad():
        logits_bf16 = halved(x)
    save_file(
        {f"model.{k}": v.to(torch.bfloat16) for k, v in saved.items()},
        OUT / "mlp.bf16.safetensors",
    )
    io = {
        "x": x,
        "labels": labels,
        "logits": logits,
        "logits_bf16": logits_bf16,
        "losses": losses,
    }
    return saved, io


def recurrent_case(kind, layers, bidirectional, with_lengths):
    torch.manual_seed({"RNN": 1, "GRU": 2, "LSTM": 3}[kind] * 10 + layers)
    cls = getattr(torch.nn, kind)
    (steps, batch, inputs, hidden) = (5, 3, 4, 6)
    model = cls(inputs, hidden, num_layers=layers, bidirectional=bidirectional)
    directions = 2 if bidirectional else 1
    x = torch.randn(steps, batch, inputs)
    h0 = torch.randn(layers * directions, batch, hidden)
    c0 = torch.randn(layers * directions, batch, hidden)
    lengths = torch.tensor([5, 3, 1]) if with_lengths else torch.tensor([5, 5, 5])
    saved = state(model)

    def run():
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        start = (h0, c0) if kind == "LSTM" else h0
        out, finals = model(packed, start)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=steps)
        return out, finals

    with torch.no_grad():
        output, finals = run()
    h_n = finals[0] if kind == "LSTM" else finals
    # The loss reads the real steps only (shadergrad repeats the state past a length,
    # PyTorch pads zeros there) and the final states.
    mask = (torch.arange(steps)[:, None] < lengths[None, :]).float()[:, :, None]

    def loss():
        out, fin = run()
        h = fin[0] if kind == "LSTM" else fin
        return (out * mask).pow(2).sum() / mask.sum() + h.pow(2).mean()

    losses = adam_losses(model, loss)
    io = {
        "x": x,
        "h0": h0,
        "lengths": lengths.to(torch.int64),
        "output": output,
        "h_n": h_n,
        "losses": losses,
    }
    if kind == "LSTM":
        io["c0"] = c0
        io["c_n"] = finals[1]
    return saved, io


class Seq2Seq(torch.nn.Module):
    """shadergrad's nn::seq2seq::Seq2Seq: a bidirectional GRU encoder-decoder with Luong's
    dot attention (keys projected, scaled by 1/sqrt(H)), under the same names."""

    def __init__(self, vocab, embed, hidden, layers):
        super().__init__()
        nn = torch.nn
        self.hidden, self.layers = hidden, layers
        self.encoder = nn.Module()
        self.encoder.embedding = nn.Embedding(vocab, embed)
        self.encoder.rnn = nn.GRU(embed, hidden, num_layers=layers, bidirectional=True)
        self.bridge_h = nn.ModuleList(nn.Linear(2 * hidden, hidden) for _ in range(layers))
        self.attention = nn.Module()
        self.attention.key = nn.Linear(2 * hidden, hidden, bias=False)
        self.attention.combine = nn.Linear(3 * hidden, hidden)
        self.decoder = nn.Module()
        self.decoder.embedding = nn.Embedding(vocab, embed)
        self.decoder.rnn = nn.GRU(embed, hidden, num_layers=layers)
        self.output = nn.Linear(hidden, vocab)

    def forward(self, source, lengths, decoder_input):
        steps, batch = source.shape
        x = self.encoder.embedding(source)
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        encoded, h_n = self.encoder.rnn(packed)
        encoded, _ = torch.nn.utils.rnn.pad_packed_sequence(encoded, total_length=steps)
        initial = torch.stack(
            [
                torch.tanh(self.bridge_h[k](torch.cat([h_n[2 * k], h_n[2 * k + 1]], 1)))
                for k in range(self.layers)
            ]
        )
        values = encoded.permute(1, 0, 2)
        keys = self.attention.key(values)
        decoded, _ = self.decoder.rnn(self.decoder.embedding(decoder_input), initial)
        queries = decoded.permute(1, 0, 2)
        scores = queries @ keys.transpose(1, 2) / self.hidden**0.5
        padded = torch.arange(steps)[None, None, :] >= lengths[:, None, None]
        weights = torch.softmax(scores.masked_fill(padded, float("-inf")), -1)
        context = weights @ values
        features = torch.tanh(self.attention.combine(torch.cat([context, queries], -1)))
        return self.output(features).reshape(-1, self.output.out_features)


def seq2seq_case():
    torch.manual_seed(4)
    (vocab, embed, hidden, layers) = (11, 6, 8, 2)
    model = Seq2Seq(vocab, embed, hidden, layers)
    # Time-major ids; PAD = 0, BOS = 1 as in shadergrad's vocabularies.
    lengths = torch.tensor([5, 3, 2])
    source = torch.randint(3, vocab, (5, 3))
    for b, length in enumerate(lengths.tolist()):
        source[length:, b] = 0
    targets = torch.randint(3, vocab, (3, 4))  # batch-major, 4 steps
    targets[2, 3] = 0  # a padded target step, which the loss ignores
    decoder_input = torch.cat([torch.ones(1, 3, dtype=torch.long), targets.T[:-1]], 0)
    target = targets.reshape(-1)
    saved = state(model)
    with torch.no_grad():
        logits = model(source, lengths, decoder_input)
    losses = adam_losses(
        model,
        lambda: torch.nn.functional.cross_entropy(
            model(source, lengths, decoder_input), target, ignore_index=0
        ),
    )
    io = {
        "source": source,
        "lengths": lengths,
        "decoder_input": decoder_input,
        "target": target,
        "logits": logits,
        "losses": losses,
    }
    return saved, io


def conv1d_case():
    torch.manual_seed(5)
    model = torch.nn.Conv1d(4, 5, 3)
    x = torch.randn(2, 4, 7)
    saved = state(model)
    with torch.no_grad():
        y = model(x)
    losses = adam_losses(model, lambda: torch.tanh(model(x)).pow(2).mean())
    return saved, {"x": x, "y": y, "losses": losses}


class TransformerLayers(torch.nn.Module):
    """PyTorch's pre-norm Transformer layers, as shadergrad's nn::TransformerEncoderLayer
    and nn::TransformerDecoderLayer build them."""

    def __init__(self, d, heads, ff):
        super().__init__()
        layer = dict(dropout=0.0, batch_first=True, norm_first=True)
        self.encoder_layer = torch.nn.TransformerEncoderLayer(d, heads, ff, **layer)
        self.decoder_layer = torch.nn.TransformerDecoderLayer(d, heads, ff, **layer)

    def forward(self, source, target, lengths):
        padded = torch.arange(source.shape[1])[None, :] >= lengths[:, None]
        memory = self.encoder_layer(source, src_key_padding_mask=padded)
        causal = torch.nn.Transformer.generate_square_subsequent_mask(target.shape[1])
        out = self.decoder_layer(
            target, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=padded
        )
        return memory, out


def transformer_layers_case():
    torch.manual_seed(6)
    model = TransformerLayers(8, 2, 16)
    model.train()  # dropout is 0; training mode keeps PyTorch off its fused fast path
    with torch.no_grad():
        # PyTorch starts the attention biases at 0 and the norms at 1: move every
        # parameter off its start, so that each one's place is tested.
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    source = torch.randn(3, 5, 8)
    target = torch.randn(3, 4, 8)
    lengths = torch.tensor([5, 2, 4])
    saved = state(model)
    with torch.no_grad():
        memory, out = model(source, target, lengths)
    losses = adam_losses(model, lambda: model(source, target, lengths)[1].pow(2).mean())
    io = {
        "source": source,
        "target": target,
        "lengths": lengths,
        "memory": memory,
        "out": out,
        "losses": losses,
    }
    return saved, io


def sinusoidal_positions(steps, width):
    """shadergrad's nn::transformer::sinusoidal_positions."""
    positions = torch.zeros(steps, width, dtype=torch.float64)
    for t in range(steps):
        for i in range(width):
            angle = t * 10000.0 ** (-(i // 2 * 2) / width)
            positions[t, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    return positions.float()


class TransformerSeq2Seq(torch.nn.Module):
    """shadergrad's nn::transformer::Transformer: embeddings·sqrt(d) plus sinusoidal
    positions, a pre-norm nn.Transformer, the output layer, under the same names."""

    def __init__(self, vocab, d, heads, layers, ff):
        super().__init__()
        self.d = d
        self.source_embedding = torch.nn.Embedding(vocab, d)
        self.target_embedding = torch.nn.Embedding(vocab, d)
        self.transformer = torch.nn.Transformer(
            d, heads, layers, layers, ff, dropout=0.0, batch_first=True, norm_first=True
        )
        self.output = torch.nn.Linear(d, vocab)

    def embed(self, table, ids):
        x = table(ids.T) * self.d**0.5  # time-major ids, batch-major rows
        return x + sinusoidal_positions(ids.shape[0], self.d)

    def forward(self, source, lengths, decoder_input):
        padded = torch.arange(source.shape[0])[None, :] >= lengths[:, None]
        steps = decoder_input.shape[0]
        causal = torch.nn.Transformer.generate_square_subsequent_mask(steps)
        out = self.transformer(
            self.embed(self.source_embedding, source),
            self.embed(self.target_embedding, decoder_input),
            tgt_mask=causal,
            tgt_is_causal=True,
            src_key_padding_mask=padded,
            memory_key_padding_mask=padded,
        )
        return self.output(out).reshape(-1, self.output.out_features)


def transformer_seq2seq_case():
    torch.manual_seed(7)
    (vocab, d, heads, layers, ff) = (11, 8, 2, 2, 16)
    model = TransformerSeq2Seq(vocab, d, heads, layers, ff)
    model.train()  # dropout is 0; training mode keeps PyTorch off its fused fast path
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    lengths = torch.tensor([5, 3, 2])
    source = torch.randint(3, vocab, (5, 3))
    for b, length in enumerate(lengths.tolist()):
        source[length:, b] = 0
    targets = torch.randint(3, vocab, (3, 4))
    targets[1, 3] = 0
    decoder_input = torch.cat([torch.ones(1, 3, dtype=torch.long), targets.T[:-1]], 0)
    target = targets.reshape(-1)
    saved = state(model)
    with torch.no_grad():
        logits = model(source, lengths, decoder_input)
    losses = adam_losses(
        model,
        lambda: torch.nn.functional.cross_entropy(
            model(source, lengths, decoder_input), target, ignore_index=0
        ),
    )
    io = {
        "source": source,
        "lengths": lengths,
        "decoder_input": decoder_input,
        "target": target,
        "logits": logits,
        "losses": losses,
    }
    return saved, io


CASES = {
    "mlp": mlp_case,
    "rnn": lambda: recurrent_case("RNN", 1, False, False),
    "gru": lambda: recurrent_case("GRU", 2, True, True),
    "lstm": lambda: recurrent_case("LSTM", 2, False, True),
    "seq2seq_gru": seq2seq_case,
    "conv1d": conv1d_case,
    "transformer_layers": transformer_layers_case,
    "seq2seq_transformer": transformer_seq2seq_case,
}


def write():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_default_dtype(torch.float32)
    for name, case in CASES.items():
        saved, io = case()
        save_file(saved, OUT / f"{name}.state.safetensors")
        save_file({k: v.contiguous() for k, v in io.items()}, OUT / f"{name}.io.safetensors")
        print(f"{name}: {', '.join(f'{k} {list(v.shape)}' for k, v in saved.items())}")


def check(directory):
    """Loads shadergrad's saves of the MLP into PyTorch and compares the logits."""
    directory = pathlib.Path(directory)
    model = Mlp([3, 7, 5, 4])
    weights = load_file(directory / "mlp.safetensors")
    model.load_state_dict(weights, strict=True)
    io = load_file(OUT / "mlp.io.safetensors")
    expected = load_file(directory / "mlp.logits.safetensors")["logits"]
    with torch.no_grad():
        logits = model(io["x"])
    error = (logits - expected).abs().max().item()
    print(f"shadergrad's save loads into PyTorch (strict): logits differ by at most {error:.2e}")
    assert error < 1e-5, error


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    else:
        write()
