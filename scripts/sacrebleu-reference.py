#!/usr/bin/env python3
"""Reference scores from sacreBLEU for shadergrad's scoring tests (tests/scoring.rs).

Run by a developer, not by CI (the Rust tests read what it writes, and need no Python):

    python3 -m venv /tmp/sbenv && /tmp/sbenv/bin/pip install sacrebleu
    /tmp/sbenv/bin/python scripts/sacrebleu-reference.py   # writes tests/data/sacrebleu/cases.json

For each corpus case it records what `sacrebleu.corpus_bleu(hyps, [refs])` and
`sacrebleu.corpus_chrf(hyps, [refs])` return with their defaults (13a tokenizer, exp
smoothing, chrF with char order 6, word order 0, beta 2), unrounded, and the exact-match
fraction. For each token case it records the corpus token error rate (sum of Levenshtein
distances over sum of reference lengths) computed by the plain Levenshtein below.
"""

import json
import pathlib

import sacrebleu

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "sacrebleu" / "cases.json"

# (name, hypotheses, references): one reference per hypothesis.
CORPUS_CASES = [
    (
        "identical",
        [
            "The quick brown fox jumps over the lazy dog.",
            "She sells sea shells by the sea shore, every day.",
        ],
        [
            "The quick brown fox jumps over the lazy dog.",
            "She sells sea shells by the sea shore, every day.",
        ],
    ),
    # Identical, but no sentence has 4 tokens: sacreBLEU's BLEU is 0 (no 4-grams at all).
    ("identical_short", ["Hello world.", "Thanks!"], ["Hello world.", "Thanks!"]),
    (
        "empty_hypotheses",
        ["", ""],
        ["There is a reference here.", "And another one."],
    ),
    ("all_empty", ["", ""], ["", ""]),
    (
        "hypothesis_longer",
        ["the cat sat on the mat and then it went to sleep for a very long time"],
        ["the cat sat on the mat"],
    ),
    (
        "hypothesis_shorter",
        ["the cat sat on the mat", "it rained"],
        [
            "the black cat sat quietly on the old mat by the door",
            "it rained all day long in the city",
        ],
    ),
    (
        "entities_and_quotes",
        [
            'He said &quot;hello&quot; &amp; left &lt;quickly&gt; . It was &apos;odd&apos;.',
            "Tom &amp;amp; Jerry &amp;quot;fight&amp;quot; again.",
            '"Quoted" text, and more "quotes".',
        ],
        [
            'He said "hello" & left <quickly>. It was \'odd\'.',
            "Tom &amp; Jerry &quot;fight&quot; again.",
            "\"Quoted\" text, and more 'quotes'.",
        ],
    ),
    (
        "numbers",
        [
            "It costs 1,000.5 dollars, or 3.14 per unit.",
            "Between 1990-2000 the rate fell to -5.5 percent.",
            "Version 2.0. was released on 12.05.2021, at 10:30.",
            "The U.S.A. has 50 states, e.g. Ohio.",
        ],
        [
            "It costs 1,000.5 dollars or 3.14 per unit.",
            "Between 1990 - 2000 the rate fell to -5.5 %.",
            "Version 2.0 was released on 12.05.2021 at 10:30.",
            "The U.S.A. has fifty states, e.g., Ohio.",
        ],
    ),
    (
        "hyphens_skipped_newlines",
        [
            "a well-\nknown state-of-the-art system<skipped> works\nfine -- mostly.\n",
            "x-ray 3-4 items - and 5 -6 more-",
        ],
        [
            "a well-known state-of-the-art system works fine - mostly.",
            "x-ray 3 - 4 items and 5 - 6 more",
        ],
    ),
    (
        "parentheses_and_apostrophes",
        [
            "(The dog's bone) isn't [here], {is it}? 'Maybe' not...",
            "Rock 'n' roll won't die; it's the 90's!",
        ],
        [
            "(The dog's bone) is not [here], {is it}? Maybe not ...",
            "Rock'n'roll will not die: it is the '90s!",
        ],
    ),
    # Unigram to trigram matches, no 4-gram match: exp smoothing gives the 4-gram 1/(2n).
    (
        "no_four_gram_match",
        [
            "the cat sat on a red mat today",
            "we went home and slept well",
        ],
        [
            "the cat sat near a red mat yesterday",
            "we went to the shop and slept",
        ],
    ),
    # Unigram matches only: bigram, trigram and 4-gram are smoothed with 1/2, 1/4, 1/8.
    ("unigram_matches_only", ["dog the bites man a"], ["the man bites a dog"]),
    ("no_match", ["completely different words here"], ["nothing shared at all"]),
    # The hypotheses have no 4-grams while the references do: precision 0, BLEU 0.
    (
        "short_hypotheses_long_references",
        ["the cat", "on the mat"],
        ["the cat sat on the mat", "a dog lay on the mat"],
    ),
    ("case_sensitive", ["The Cat Sat On The Mat Today"], ["the cat sat on the mat today"]),
    (
        "unicode",
        [
            "Le café crème est très chaud, n'est-ce pas ?",
            "我爱北京天安门。",
            "Great job 👍🏽 — see you at 5 pm!",
            "Ελληνικά και русский текст.",
            "Cafe\u0301 naïve façade",
            "١٢٣.٤ and ¡Hola! ¿Qué tal?",
        ],
        [
            "Le café crème est très chaud, n’est-ce pas?",
            "我爱北京天安门",
            "Great job 👍 — see you at 5 pm!",
            "Ελληνικά και русский текст",
            "Café naive façade",
            "123.4 and ¡Hola! ¿Qué tal?",
        ],
    ),
    (
        "whitespace",
        [
            "  multiple   spaces\tand\ttabs  here  ",
            "non\u00a0breaking\u3000ideographic\u2009thin space",
            "unit\u001fseparator and\r\ncarriage return \t\n",
        ],
        [
            "multiple spaces and tabs here",
            "non breaking ideographic thin space",
            "unit separator and carriage return",
        ],
    ),
    # chrF rewards shared substrings where BLEU sees different words.
    (
        "shared_substrings",
        [
            "unbelievable photographers were running quickly",
            "internationalisation",
        ],
        [
            "believable photographer was runs quick",
            "internationalization",
        ],
    ),
    # Sentences shorter than 6 characters, and an empty reference: chrF's orders with no
    # n-grams, and a hypothesis whose reference has none.
    ("tiny_and_empty_reference", ["a", "abc", "hello", "xy"], ["a", "abd", "", "x"]),
    (
        "translations",
        [
            "The committee approved the new budget on Tuesday.",
            "Heavy rain caused flooding in several parts of the city.",
            "She has been working at the hospital for ten years.",
            "The museum will be closed for renovation until March.",
            "Scientists discovered a new species of frog in the rainforest.",
            "The train to Berlin was delayed by two hours.",
            "He said that he would call me tomorrow morning.",
            "Prices of fresh vegetables rose sharply last month.",
            "The children played in the garden all afternoon.",
            "Our company is looking for experienced software engineers.",
            "Please turn off your mobile phones during the performance.",
            "The president met with foreign leaders at the summit.",
            "Tickets can be bought online or at the station.",
            "The bridge was built in 1889 and restored in 2005.",
            "I don't think it is a good idea to travel now.",
            "The restaurant serves traditional dishes from the region.",
            "Many students struggled with the final exam.",
            "The new law will come into force next year.",
            "We stayed at a small hotel near the beach.",
            "The police are still looking for witnesses to the accident.",
        ],
        [
            "On Tuesday, the committee approved the new budget.",
            "Heavy rainfall caused floods in several parts of the city.",
            "She has worked at the hospital for ten years.",
            "The museum will remain closed for renovations until March.",
            "Scientists have discovered a new frog species in the rainforest.",
            "The train to Berlin was two hours late.",
            "He said he would call me tomorrow morning.",
            "Fresh vegetable prices rose sharply last month.",
            "The children played in the garden the whole afternoon.",
            "Our company is seeking experienced software engineers.",
            "Please switch off your mobile phones during the performance.",
            "The president met foreign leaders at the summit.",
            "Tickets can be purchased online or at the station.",
            "The bridge was built in 1889 and renovated in 2005.",
            "I do not think it's a good idea to travel right now.",
            "The restaurant serves traditional regional dishes.",
            "Many students had difficulties with the final exam.",
            "The new law will take effect next year.",
            "We stayed in a small hotel close to the beach.",
            "Police are still searching for witnesses of the accident.",
        ],
    ),
]

# (name, hypotheses, references): token sequences written as space-separated strings.
TOKEN_CASES = [
    ("phonemes", ["HH EH0 L OW1"], ["HH AH0 L OW1"]),
    (
        "phonemes_corpus",
        ["K AE1 T", "D AO1 G Z", "B ER1 D", ""],
        ["K AE1 T", "D AO1 G", "B ER1 D Z", "F IH1 SH"],
    ),
    (
        "words",
        ["the cat sat on mat", "a quick brown dog jumped", "hello there world"],
        ["the cat sat on the mat", "the quick brown fox jumps", "hello world"],
    ),
    ("hypothesis_longer_than_reference", ["a b c d e f"], ["x y"]),
    ("empty_hypothesis", [""], ["one two three"]),
    ("all_empty", ["", ""], ["", ""]),
]


def levenshtein(a, b):
    """Edit distance with unit insert, delete and substitute costs."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def corpus_case(name, hypotheses, references):
    assert len(hypotheses) == len(references), name
    bleu = sacrebleu.corpus_bleu(hypotheses, [references])
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    same = sum(h == r for h, r in zip(hypotheses, references))
    return {
        "name": name,
        "hypotheses": hypotheses,
        "references": references,
        "bleu": {
            "score": bleu.score,
            "precisions": bleu.precisions,
            "bp": bleu.bp,
            "sys_len": bleu.sys_len,
            "ref_len": bleu.ref_len,
        },
        "chrf": chrf.score,
        "exact_match": same / len(hypotheses),
    }


def token_case(name, hypotheses, references):
    assert len(hypotheses) == len(references), name
    hyps = [h.split() for h in hypotheses]
    refs = [r.split() for r in references]
    edits = sum(levenshtein(h, r) for h, r in zip(hyps, refs))
    ref_tokens = sum(len(r) for r in refs)
    # Every case here with no reference tokens has no hypothesis tokens either: rate 0.
    rate = edits / ref_tokens if ref_tokens else 0.0
    return {"name": name, "hypotheses": hyps, "references": refs, "rate": rate}


def main():
    data = {
        "sacrebleu_version": sacrebleu.__version__,
        "corpus": [corpus_case(*case) for case in CORPUS_CASES],
        "token_error_rate": [token_case(*case) for case in TOKEN_CASES],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(data['corpus'])} corpus cases and {len(data['token_error_rate'])} token cases to {OUT}")


if __name__ == "__main__":
    main()
