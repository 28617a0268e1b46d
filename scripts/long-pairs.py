#!/usr/bin/env python3
"""Writes sentence pairs of 150-200 words for checking that train-seq2seq handles long
sentences: each source is drawn from a vocabulary of 2,000 made-up words, its target is the
source reversed. Deterministic (seeded), standard library only.

    python3 scripts/long-pairs.py long.tsv [PAIRS]
"""
import random
import sys


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    path = sys.argv[1]
    pairs = int(sys.argv[2]) if len(sys.argv) == 3 else 300
    rng = random.Random(1)
    words = [f"w{i}" for i in range(2000)]
    with open(path, "w") as out:
        for _ in range(pairs):
            source = [rng.choice(words) for _ in range(rng.randint(150, 200))]
            out.write(" ".join(source) + "\t" + " ".join(reversed(source)) + "\n")


if __name__ == "__main__":
    main()
