"""Normalizer throughput: lines per CPU second on ~10-token mixed-script lines.

The corpus is 20,000 generated lines drawn from a Zipf-distributed vocabulary of 3,000
words in Devanagari, Bengali, Tamil, Latin, digits and punctuation (real transcripts repeat
words, and the per-token caches rely on it; a unique-token run is reported too).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from voxshard.normalizers import canonicalize, normalize, tag_scripts
from voxshard.normalizers.romanize import latin_key
from voxshard.normalizers.scripts import token_script

ALPHABETS = {
    "Deva": [chr(c) for c in range(0x0915, 0x0939)] + ["\u093f", "\u0940", "\u094d", "\u0902"],
    "Beng": [chr(c) for c in range(0x0995, 0x09B9)] + ["\u09bf", "\u09c0", "\u09cd"],
    "Taml": [chr(c) for c in range(0x0B95, 0x0BB9)] + ["\u0bbf", "\u0bcd"],
    "Latn": list("abcdefghijklmnopqrstuvwxyz"),
}


def make_lines(count: int, vocabulary: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = []
    for _ in range(vocabulary):
        script = rng.choice(["Deva", "Deva", "Latn", "Latn", "Beng", "Taml"])
        words.append("".join(rng.choice(ALPHABETS[script]) for _ in range(rng.randint(2, 8))))
    words += ["2024", "।", ",", "100"]
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=10)) for _ in range(count)]


def lines_per_cpu_second(function: Callable[[str], Any], lines: list[str]) -> float:
    started = time.process_time()
    for line in lines:
        function(line)
    return len(lines) / (time.process_time() - started)


def run() -> list[dict[str, Any]]:
    lines = make_lines(20_000, 3_000)
    unique = make_lines(5_000, 50_000, seed=1)
    cases = [
        (
            "canonical + script tags",
            lambda t: tag_scripts(canonicalize(t).split(" ")),
            lines,
            50_000,
        ),
        (
            "canonical + script tags (unique tokens)",
            lambda t: tag_scripts(canonicalize(t).split(" ")),
            unique,
            None,
        ),
        ("policy canonical (+ CMI)", lambda t: normalize(t, "hin"), lines, None),
        ("policy to-latin", lambda t: normalize(t, "hin", "to-latin"), lines, 20_000),
        (
            "policy to-latin (unique tokens)",
            lambda t: normalize(t, "hin", "to-latin"),
            unique,
            None,
        ),
    ]
    results = []
    for name, function, data, goal in cases:
        token_script.cache_clear()
        latin_key.cache_clear()
        if data is lines:
            lines_per_cpu_second(function, data[:2000])  # warm the caches as a long run would
        value = lines_per_cpu_second(function, data)
        results.append(
            {
                "group": "normalizers",
                "name": name,
                "value": round(value),
                "unit": "lines/CPU-s",
                "goal": None if goal is None else f">= {goal:,} lines/s",
                "met": None if goal is None else value >= goal,
            }
        )
    return results


if __name__ == "__main__":
    for row in run():
        print(row)
