from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import CV_HEADERS, cv_row, write_tsv
from voxshard.corpora import CorpusOptions, SourceUtterance, get_corpus
from voxshard.corpora.base import read_table
from voxshard.schemas import ConfigError, CorpusFormatError

CV = get_corpus("commonvoice")


def parse_all(
    root: Path,
    splits: tuple[str, ...] = ("train", "dev", "test"),
    languages: frozenset[str] | None = None,
) -> list[Any]:
    options = CorpusOptions(str(root), splits, languages)
    results: list[Any] = []
    for source in CV.list_sources(options):
        results.extend(CV.parse_source(options, source))
    return results


def test_unbalanced_quote_three_rows_in_three_rows_out(tmp_path: Path) -> None:
    header = CV_HEADERS["v13"]
    rows = [
        cv_row(header, client_id="a", path="common_voice_en_1.mp3", sentence='He said "no.'),
        cv_row(header, client_id="b", path="common_voice_en_2.mp3", sentence='"Quoted" start'),
        cv_row(header, client_id="c", path="common_voice_en_3.mp3", sentence="plain"),
    ]
    write_tsv(tmp_path / "en" / "train.tsv", header, rows)
    (tmp_path / "en" / "clips").mkdir()
    parsed = parse_all(tmp_path, ("train",))
    assert [u.transcript for u in parsed] == ['He said "no.', '"Quoted" start', "plain"]


@pytest.mark.parametrize("generation", sorted(CV_HEADERS))
def test_every_header_generation(tmp_path: Path, generation: str) -> None:
    header = CV_HEADERS[generation]
    gender = "female_feminine" if generation == "v17" else "female"
    accent_column = "accents" if "accents" in header else "accent"
    row = cv_row(
        header,
        client_id="ab" * 64,
        path="common_voice_fy-NL_42.mp3",
        sentence="Hoe giet it?",
        age="fourties",
        gender=gender,
        locale="fy-NL",
        **{accent_column: "Frysk"},
    )
    write_tsv(tmp_path / "fy-NL" / "dev.tsv", header, [row])
    (tmp_path / "fy-NL" / "clips").mkdir()
    [utterance] = parse_all(tmp_path, ("dev",))
    assert utterance == SourceUtterance(
        key="commonvoice_fy-NL_42",
        corpus="commonvoice",
        split="dev",
        source_language="fy-NL",
        audio_path="fy-NL/clips/common_voice_fy-NL_42.mp3",
        origin="fy-NL/dev.tsv:2",
        speaker="commonvoice_" + "ab" * 64,
        gender="female",
        age="fourties",
        accent="Frysk",
        transcript="Hoe giet it?",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("male", "male"),
        ("female", "female"),
        ("other", "other"),
        ("male_masculine", "male"),
        ("female_feminine", "female"),
        ("transgender", "other"),
        ("non-binary", "other"),
        ("do_not_wish_to_say", None),
        ("", None),
    ],
)
def test_both_gender_vocabularies(tmp_path: Path, value: str, expected: str | None) -> None:
    header = CV_HEADERS["v17"]
    write_tsv(
        tmp_path / "en" / "test.tsv",
        header,
        [cv_row(header, client_id="c", path="x.mp3", gender=value)],
    )
    (tmp_path / "en" / "clips").mkdir()
    [utterance] = parse_all(tmp_path, ("test",))
    assert utterance.gender == expected


def test_malformed_rows_are_errors_and_parsing_goes_on(tmp_path: Path) -> None:
    header = CV_HEADERS["v13"]
    path = tmp_path / "en" / "train.tsv"
    write_tsv(path, header, [cv_row(header, client_id="a", path="a.mp3")])
    with open(path, "ab") as handle:
        handle.write(b"only\ttwo\n")  # short row
        handle.write("\t".join(cv_row(header, client_id="b", path="b.mp3")).encode() + b"\n")
        handle.write(b"\xff\xfe bad bytes\t" * 10 + b"\n")  # not UTF-8
        handle.write(b"\n")  # blank line: skipped
        handle.write("\t".join(cv_row(header, client_id="c", path="c/../x.mp3")).encode() + b"\n")
    (tmp_path / "en" / "clips").mkdir()
    results = parse_all(tmp_path, ("train",))
    kinds = [(r.reason, r.line) if isinstance(r, CorpusFormatError) else r.key for r in results]
    assert kinds == [
        "commonvoice_a",
        ("wrong column count", 3),
        "commonvoice_b",
        ("not valid UTF-8", 5),
        ("invalid clip name", 7),
    ]


def test_missing_required_column_rejects_the_table(tmp_path: Path) -> None:
    write_tsv(tmp_path / "en" / "train.tsv", ["client_id", "sentence"], [["a", "hi"]])
    (tmp_path / "en" / "clips").mkdir()
    [error] = parse_all(tmp_path, ("train",))
    assert isinstance(error, CorpusFormatError)
    assert (error.reason, error.detail) == ("header lacks required columns", "path")


def test_language_filter_and_locale_folder_listing(cv_root: Path) -> None:
    options = CorpusOptions(str(cv_root), ("train", "dev", "test"), frozenset({"pol", "deu"}))
    assert CV.list_sources(options) == [
        "de/train.tsv",
        "de/dev.tsv",
        "de/test.tsv",
        "pl/train.tsv",
        "pl/dev.tsv",
        "pl/test.tsv",
    ]


def test_root_may_be_one_locale_folder(cv_root: Path) -> None:
    options = CorpusOptions(str(cv_root / "pl"), ("train",))
    [source] = CV.list_sources(options)
    assert source == "train.tsv"
    utterances = list(CV.parse_source(options, source))
    assert [u.audio_path for u in utterances] == [  # type: ignore[union-attr]
        "clips/common_voice_pl_1.mp3",
        "clips/common_voice_pl_2.mp3",
    ]
    assert {u.source_language for u in utterances} == {"pl"}  # type: ignore[union-attr]


def test_listing_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Common Voice locale folders"):
        CV.list_sources(CorpusOptions(str(tmp_path), ("train",)))
    (tmp_path / "en" / "clips").mkdir(parents=True)
    with pytest.raises(ConfigError, match="locales found: en"):
        CV.list_sources(CorpusOptions(str(tmp_path), ("train",)))


def test_read_table_strips_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes(b'\xef\xbb\xbfa\tb\r\n1\t"2\r\n')
    assert list(read_table(str(path), "t.tsv")) == [(2, {"a": "1", "b": '"2'})]


def _corpus_1_folder(folder: Path, locale: str, clip_prefix: str = "common_voice_") -> None:
    """A Common Voice Corpus 1-4 archive folder: TSVs and clips inside, no locale column."""
    from conftest import tone, write_audio

    header = CV_HEADERS["v1"]
    rows = []
    for number in (1, 2):
        clip = f"{clip_prefix}{locale}_{number}.mp3"
        write_audio(folder / "clips" / clip, tone(300 + 100 * number, 1.0, 48000), 48000, "mp3")
        rows.append(cv_row(header, client_id=f"c{number}".ljust(128, "0"), path=clip, sentence="x"))
    write_tsv(folder / "train.tsv", header, rows)


@pytest.mark.parametrize("as_root", [True, False])
def test_corpus_1_archive_folders_take_their_locale_from_the_name(
    tmp_path: Path, as_root: bool
) -> None:
    """cv-corpus-1_de/ once read as 'cv' (Chuvash): its locale is the name's suffix."""
    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.runner import run_build

    top = tmp_path / "download"
    _corpus_1_folder(top / "cv-corpus-1_de", "de")
    _corpus_1_folder(top / "cv-corpus-4-2019-12-10_zh-TW", "zh-TW")
    root = top / "cv-corpus-1_de" if as_root else top
    stats = run_build(BuildConfig("commonvoice", str(root), str(tmp_path / "out")))
    expected = {"deu": 2} if as_root else {"deu": 2, "cmn": 2}
    assert stats["by_language"]["utterances"] == expected
    assert sorted(p.name for p in (tmp_path / "out" / "shards").iterdir()) == sorted(expected)


def test_a_folder_whose_locale_nothing_gives_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "my-copy"
    _corpus_1_folder(folder, "de", clip_prefix="clip_")
    options = CorpusOptions(root=str(folder))
    with pytest.raises(ConfigError, match=r"cannot tell the locale of .*my-copy"):
        get_corpus("commonvoice").list_sources(options)
    renamed = tmp_path / "clips-named"  # its clips say it
    _corpus_1_folder(renamed, "pl")
    sources = get_corpus("commonvoice").list_sources(CorpusOptions(root=str(renamed)))
    items = list(
        get_corpus("commonvoice").parse_source(CorpusOptions(root=str(renamed)), sources[0])
    )
    assert {item.source_language for item in items if isinstance(item, SourceUtterance)} == {"pl"}


def test_clip_durations_plan_without_header_reads(
    cv_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Common Voice >= 16.1 states each clip's length (clip TAB duration[ms]): the plan takes
    it instead of opening the MP3, and a clip far over --max-duration is not decoded."""
    import soundfile as sf

    import voxshard.pipelines.plan as plan
    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.runner import run_build

    lines = ["clip\tduration[ms]"]
    for clip in sorted((cv_root / "en" / "clips").iterdir()):
        if clip.name == "common_voice_en_4.mp3":
            continue  # only its bad row below
        info = sf.info(clip)
        milliseconds = round(1000 * info.frames / info.samplerate)
        lines.append(f"{clip.name}\t{99000 if clip.name.endswith('_2.mp3') else milliseconds}")
    lines.append("common_voice_en_4.mp3\tnot a number")  # a bad row: that clip's header is read
    (cv_root / "en" / "clip_durations.tsv").write_text("\n".join(lines) + "\n")
    opened: list[str] = []
    real = plan.read_header  # type: ignore[attr-defined]

    def counting(path: str):  # type: ignore[no-untyped-def]
        opened.append(path)
        return real(path)

    monkeypatch.setattr(plan, "read_header", counting)  # the name plan.py calls
    out = tmp_path / "out"
    stats = run_build(
        BuildConfig("commonvoice", str(cv_root), str(out), languages=("en",), max_error_rate=1.0)
    )
    assert sorted(p.rsplit("/", 1)[1] for p in opened) == ["common_voice_en_4.mp3"]
    assert stats["rejected_by_reason"] == {"too long": 1}
    [reject] = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert reject["detail"] == (
        "99.000 s by the corpus's duration table > --max-duration 60.0 (not decoded)"
    )
