"""``--lexicon``: a TSV of ``latin <TAB> native`` pairs (an optional header line)."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxshard.normalizers.canonical import canonicalize
from voxshard.schemas import ConfigError, storage


@dataclass(frozen=True)
class Lexicon:
    to_native: dict[str, str] = field(default_factory=dict)  # casefolded Latin -> native
    to_latin: dict[str, str] = field(default_factory=dict)  # canonical native -> Latin

    def native(self, word: str) -> str | None:
        return self.to_native.get(word.casefold())

    def knows(self, word: str) -> bool:
        return word.casefold() in self.to_native or word in self.to_latin

    def same(self, a: str, b: str) -> bool:
        """True when the lexicon pairs a and b (in either order)."""
        return self.to_native.get(a.casefold()) == b or self.to_native.get(b.casefold()) == a


EMPTY = Lexicon()


def read_lexicon(path: str) -> Lexicon:
    """Read a lexicon; every malformed line is reported at once, by number."""
    to_native: dict[str, str] = {}
    to_latin: dict[str, str] = {}
    problems = []
    try:
        lines = storage.read_bytes(path).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"--lexicon {path}: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (number == 1 and line.strip().lower() == "latin\tnative"):
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            problems.append(f"--lexicon {path}:{number}: expected 'latin<TAB>native'")
            continue
        latin = canonicalize(fields[0])
        native = canonicalize(fields[1])
        to_native[latin.casefold()] = native
        to_latin.setdefault(native, latin)
    if problems:
        raise ConfigError(problems)
    return Lexicon(to_native, to_latin)
