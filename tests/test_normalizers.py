from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxshard.normalizers import (
    Lexicon,
    canonicalize,
    cmi,
    i_index,
    latin_key,
    m_index,
    normalize,
    normalize_lines,
    read_lexicon,
    score,
    tag_scripts,
    token_script,
)
from voxshard.normalizers.nativize import to_native_word
from voxshard.schemas import ConfigError

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[1]
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\t|\\n")


def unescape(text: str) -> str:
    return _ESCAPE.sub(
        lambda m: (
            chr(int(m.group(1), 16)) if m.group(1) else {"\\t": "\t", "\\n": "\n"}[m.group(0)]
        ),
        text,
    )


def golden(name: str) -> list[list[str]]:
    lines = (GOLDEN / name).read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    return [[unescape(field) for field in row] for row in rows[1:]]


# --- the cases the issue names, code points written out


def test_nfc_composition_exclusion_and_composition() -> None:
    assert canonicalize("\u0958") == "\u0915\u093c"
    assert canonicalize("\u0928\u093c") == "\u0929"


def test_atomic_letters_from_zwj_sequences() -> None:
    assert canonicalize("\u09a4\u09cd\u200d") == "\u09ce"
    assert canonicalize("\u0d28\u0d4d\u200d") == "\u0d7b"


def test_issue_canonical_cases() -> None:
    persian = "می\u200cخواهم"
    assert canonicalize(persian) == persian and "\u200c" in canonicalize(persian)
    assert canonicalize("ｆａｎｃｙ") == "fancy"
    assert canonicalize("كـتاب") == "كتاب"
    assert canonicalize("ㅎㅏㄴ") == "ㅎㅏㄴ"


def test_issue_script_cases() -> None:
    assert tag_scripts("होम्योपथी में अर्थराइटिस treatment".split()) == [
        "Deva",
        "Deva",
        "Deva",
        "Latn",
    ]
    assert token_script("Facebookपर") == "mixed"
    assert token_script("2024") == "Zyyy"


def test_issue_code_mixing_cases() -> None:
    tags = "EN EN HI HI univ univ HI HI EN EN EN HI HI".split()
    assert round(cmi(tags), 2) == 45.45
    assert round(m_index(tags), 4) == 0.9836
    assert i_index(tags) == pytest.approx(0.3)
    assert cmi(["HI", "HI", "univ"]) == 0.0
    assert normalize("मैं कल दिल्ली जा रहा हूँ", "hin").cmi == 0.0


def test_issue_to_latin_cases() -> None:
    assert latin_key("डिस्कवरी") == latin_key("ಡಿಸ್ಕವರಿ")
    assert latin_key("हिंदी") == latin_key("हिन्दी")


def test_issue_scoring_cases() -> None:
    ref = ["Homeopathy में arthritis treatment"]
    hyp = ["होम्योपथी में अर्थराइटिस treatment"]
    assert score(ref, hyp, "hin").wer == 0.5
    lexicon = Lexicon({"homeopathy": "होम्योपथी", "arthritis": "अर्थराइटिस"}, {})
    result = score(ref, hyp, "hin", lexicon=lexicon)
    assert result.t_wer == 0.0 and result.wer == 0.5


# --- golden tables, reviewed like code


@pytest.mark.parametrize(("lang", "text", "expected"), golden("canonical.tsv"))
def test_golden_canonical(lang: str, text: str, expected: str) -> None:
    assert canonicalize(text, lang) == expected
    assert canonicalize(expected, lang) == expected


@pytest.mark.parametrize(("lang", "text", "expected"), golden("scripts.tsv"))
def test_golden_scripts(lang: str, text: str, expected: str) -> None:
    assert list(normalize(text, lang).scripts) == expected.split()


@pytest.mark.parametrize(("lang", "text", "expected"), golden("to_latin.tsv"))
def test_golden_to_latin(lang: str, text: str, expected: str) -> None:
    assert normalize(text, lang, "to-latin").text == expected


@pytest.mark.parametrize(("lang", "scheme", "text", "expected"), golden("to_native.tsv"))
def test_golden_to_native(lang: str, scheme: str, text: str, expected: str) -> None:
    assert normalize(text, lang, "to-native", scheme=scheme).text == expected


def test_to_native_prefers_the_lexicon_and_counts_unknown_words(tmp_path: Path) -> None:
    path = tmp_path / "lex.tsv"
    path.write_text("latin\tnative\ntreatment\tट्रीटमेंट\n", encoding="utf-8")
    lexicon = read_lexicon(str(path))
    result = normalize("Treatment ok2 xyz", "hin", "to-native", lexicon, scheme="none")
    assert result.text == "ट्रीटमेंट ok2 xyz" and result.unknown == 2
    assert to_native_word("Qx", "itrans", "Deva") is None  # not ITRANS
    assert to_native_word("gha", "itrans", "Taml") is None  # Tamil has no gha


def test_lexicon_errors_name_lines(tmp_path: Path) -> None:
    path = tmp_path / "lex.tsv"
    path.write_text("a\tb\nonly-one-column\n\tx\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_lexicon(str(path))
    assert [p.rsplit(":", 2)[1] for p in info.value.problems] == ["2", "3"]


def test_unknown_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown policy 'upper'"):
        normalize("x", "eng", "upper")


# --- properties


letters_text = st.text(
    alphabet=st.characters(categories=("L", "M", "N", "P", "S", "Z", "Cf", "Cc")), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_canonicalize_is_total_and_idempotent(text: str) -> None:
    once = canonicalize(text)
    assert canonicalize(once) == once


@settings(max_examples=200, deadline=None)
@given(
    letters_text,
    st.sampled_from(["keep", "canonical", "to-latin", "to-native"]),
    st.sampled_from(["hin", "ben", "urd", "eng", "cmn", "xyz"]),
)
def test_policies_never_raise_and_keep_one_line(text: str, policy: str, lang: str) -> None:
    result = normalize(text, lang, policy)
    assert "\n" not in result.text and "\r" not in result.text
    assert 0.0 <= result.cmi <= 100.0


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(categories=["L"]), min_size=1, max_size=20),
    st.sampled_from(["canonical", "to-latin", "to-native"]),
)
def test_a_letter_string_never_becomes_empty(text: str, policy: str) -> None:
    assert normalize(text, "hin", policy).text != ""


@settings(max_examples=150, deadline=None)
@given(
    st.lists(letters_text.map(lambda text: text.replace("\n", " ")), max_size=6),
    st.sampled_from(["keep", "canonical", "to-latin", "to-native"]),
)
def test_one_line_out_per_line_in(lines: list[str], policy: str) -> None:
    stdin = io.BytesIO("".join(line + "\n" for line in lines).encode("utf-8"))
    for as_json in (False, True):
        stdin.seek(0)
        out = "".join(normalize_lines(stdin, "hin", policy, as_json=as_json))
        assert out.count("\n") == len(lines)


def test_normalize_cli_json_and_score_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voxshard", "normalize", "--lang", "hi", "--json"],
        input="होम्योपथी में  arthritis treatment\n\n".encode(),
        capture_output=True,
        cwd=REPO,
        check=True,
    )
    first, second = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert first["normalized"] == "होम्योपथी में arthritis treatment"
    assert first["scripts"] == ["Deva", "Deva", "Latn", "Latn"]
    assert first["cmi"] == 50.0
    assert second["normalized"] == "" and second["scripts"] == []
    (tmp_path / "ref").write_text("Homeopathy में arthritis treatment\nएक दो\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("होम्योपथी में अर्थराइटिस treatment\nएक\n", encoding="utf-8")
    (tmp_path / "lex").write_text("homeopathy\tहोम्योपथी\narthritis\tअर्थराइटिस\n", encoding="utf-8")
    scored = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxshard",
            "score",
            "--ref",
            str(tmp_path / "ref"),
            "--hyp",
            str(tmp_path / "hyp"),
            "--lexicon",
            str(tmp_path / "lex"),
            "--json",
            "--details",
        ],
        capture_output=True,
        cwd=REPO,
        check=True,
    )
    report = json.loads(scored.stdout)
    assert (report["wer"], report["t_wer"], report["ref_words"]) == (0.5, round(1 / 6, 6), 6)
    assert [row["t_wer"] for row in report["details"]] == [0.0, 0.5]


def test_build_fills_transcript_policy_scripts_and_cmi(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from conftest import tone, write_audio, write_tsv
    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.runner import run_build

    for name in ("a", "b", "c"):
        write_audio(tmp_path / f"{name}.wav", tone(300, 1.0, 16000), 16000, "wav")
    write_tsv(
        tmp_path / "m.tsv",
        ["id", "path", "language", "transcript"],
        [
            ["a", "a.wav", "hi", "Homeopathy  में arthritis treatment"],
            ["b", "b.wav", "hi", "मैं कल दिल्ली जा रहा हूँ"],
            ["c", "c.wav", "pl", "dzień dobry"],
        ],
    )
    (tmp_path / "lex.tsv").write_text("homeopathy\tहोम्योपथी\n", encoding="utf-8")
    out = tmp_path / "out"
    stats = run_build(
        BuildConfig(
            "manifest",
            str(tmp_path / "m.tsv"),
            str(out),
            normalize="to-native",
            lexicon=str(tmp_path / "lex.tsv"),
            scheme="none",
        )
    )
    rows = {
        r["key"]: r["transcript"] for r in pq.read_table(out / "utterances.parquet").to_pylist()
    }
    assert rows["manifest_a"] == {
        "raw": "Homeopathy  में arthritis treatment",
        "normalized": "होम्योपथी में arthritis treatment",
        "scripts": ["Latn", "Deva", "Latn", "Latn"],
        "cmi": 50.0,  # homeopathy is a Hindi word by the lexicon: hin hin eng eng
    }
    assert rows["manifest_b"]["cmi"] == 0.0
    assert stats["code_switching"] == {
        "hin": {"transcribed": 2, "code_switched": 1, "share": 0.5},
        "pol": {"transcribed": 1, "code_switched": 0, "share": 0.0},
    }
    with pytest.raises(ConfigError, match="unknown policy"):
        BuildConfig("manifest", str(tmp_path / "m.tsv"), str(tmp_path / "o2"), normalize="x")


def test_fidelity_fixes_against_their_definitions() -> None:
    """to-latin drops letters whose key is empty (letters.tsv) instead of keeping the word;
    punctuation never counts as a word in CMI / M-index / I-index; an empty reference
    scores as jiwer 4.0 defines it; halfwidth Hangul folds to compatibility jamo (NFKC's
    <narrow> step), as the same letters typed as compatibility jamo stay."""
    from voxshard.normalizers import canonicalize, latin_key, normalize, score

    assert [latin_key(w) for w in ("день", "объём,", "شيء")] == ["den", "obem", "shy"]
    assert latin_key("日本") == "日本"  # a script with no key table: kept whole
    with_danda = normalize("मैं ठीक हूँ । ok", "hin")
    without = normalize("मैं ठीक हूँ ok", "hin")
    assert (with_danda.cmi, round(with_danda.m_index, 4), round(with_danda.i_index, 4)) == (
        25.0,
        0.6,
        0.3333,
    )
    assert (with_danda.cmi, with_danda.m_index, with_danda.i_index) == (
        without.cmi,
        without.m_index,
        without.i_index,
    )
    assert score([""], ["hello world"], "eng").wer == 2.0
    assert score([""], [""], "eng").wer == 0.0
    assert score(["", ""], ["a", "b c"], "eng").wer == 3.0  # every reference empty
    assert score(["a b"], ["a b c"], "eng").wer == 0.5
    assert score([""], ["abcde"], "eng").cer == 5.0
    assert canonicalize("\uffa1\uffc2", "kor") == "\u3131\u314f"  # not 가
    assert canonicalize("\u3131\u314f", "kor") == "\u3131\u314f"
    assert canonicalize("ＡＢＣ１ ｶﾞ", "jpn") == "ABC1 ガ"


def test_to_native_rules_beyond_the_scheme_tables() -> None:
    """Bengali writes v and w as ব (it has no VA); IAST ḷ before a vowel is ळ (ISO 15919)
    and vocalic elsewhere; HK's L is ळ; ISO 15919's r̥ is a vowel and its combining ring is
    part of the word, not an edge; a word-initial capital H is not a visarga."""
    from voxshard.normalizers import normalize
    from voxshard.normalizers.nativize import to_native_word
    from voxshard.normalizers.policies import split_edges

    assert to_native_word("vAMlA", "itrans", "Beng") == "বাংলা"
    assert to_native_word("dhanyavAda", "itrans", "Beng") == "ধন্যবাদ"
    assert to_native_word("śāḷā", "iast", "Deva") == "शाळा"
    assert to_native_word("kḷpta", "iast", "Deva") == "कॢप्त"
    assert to_native_word("baLa", "hk", "Deva") == "बळ"
    assert to_native_word("pitr̥", "iast", "Deva") == "पितृ"
    assert to_native_word("Hindi", "itrans", "Deva") == "हिन्दि"
    assert to_native_word("H", "itrans", "Deva") == "ह्"  # read as h, like Hindi's
    assert to_native_word(".nka", "itrans", "Deva") is None  # anusvara first: no word
    assert split_edges("«pitr̥»,") == ("«", "pitr̥", "»,")
    result = normalize("pitr̥ ok", "hin", "to-native", scheme="iast")
    assert result.text == "पितृ ओक्" and result.unknown == 0
