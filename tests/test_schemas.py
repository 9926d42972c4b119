from __future__ import annotations

import json

import jsonschema
import pytest

from voxshard.schemas import (
    Geo,
    GeoError,
    InvalidKeyError,
    SourceRef,
    Transcript,
    UnknownLanguageError,
    Utterance,
    arrow_schema,
    json_schema,
    language_name,
    make_key,
    resolve_language,
    validate_key,
    validate_lat_lon,
)


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("en", "eng"),
        ("eng", "eng"),
        ("EN", "eng"),
        ("pl", "pol"),
        ("zh-CN", "cmn"),
        ("zh_TW", "cmn"),
        ("zh-HK", "yue"),
        ("zh", "zho"),  # bare zh is the macrolanguage, as ISO says
        ("pa-IN", "pan"),
        ("rm-sursilv", "roh"),
        ("rm-vallader", "roh"),
        ("nan-tw", "nan"),
        ("sv-SE", "swe"),
        ("fy-NL", "fry"),
        ("ga-IE", "gle"),
        ("hy-AM", "hye"),
        ("nb-NO", "nob"),
        ("nn-NO", "nno"),
        ("ne-NP", "nep"),
        ("en_accented", "eng"),
        ("english", "eng"),
        ("portuguese", "por"),
        ("101", "yue"),
        ("202", "swh"),
        ("404", "kat"),
        ("fre", "fra"),
        ("ger", "deu"),
        ("iw", "heb"),
        ("cnh", "cnh"),
    ],
)
def test_resolve_language(tag: str, code: str) -> None:
    assert resolve_language(tag) == code


@pytest.mark.parametrize("tag", ["", "xx", "und", "mul", "zxx", "999", "klingon", "q-"])
def test_unknown_language(tag: str) -> None:
    with pytest.raises(UnknownLanguageError) as info:
        resolve_language(tag)
    assert "language_aliases.tsv" in str(info.value)


def test_language_name() -> None:
    assert language_name("cmn") == "Mandarin Chinese"


def test_make_key_is_deterministic_and_unique_after_sanitizing() -> None:
    assert make_key("commonvoice", "en_123") == "commonvoice_en_123"
    voxpopuli_id = "20180206-0900-PLENARY-15-hr_20180206-16:10:06_5"
    key = make_key("voxpopuli", voxpopuli_id)
    assert key == make_key("voxpopuli", voxpopuli_id)
    assert key.startswith("voxpopuli_20180206-0900-PLENARY-15-hr_20180206-16_10_06_5-")
    validate_key(key)
    # two ids that sanitize to the same text still get different keys
    assert make_key("m", "a:b") != make_key("m", "a_b")
    assert make_key("m", "a/b.c") != make_key("m", "a_b_c")
    assert len(make_key("m", "x" * 500)) <= 200


@pytest.mark.parametrize("bad", ["a.b", "a b", "", "a/b", "ü"])
def test_validate_key_rejects(bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(bad)


def test_geo_validation() -> None:
    assert validate_lat_lon("45.5", -73) == (45.5, -73.0)
    assert validate_lat_lon(90, 180) == (90.0, 180.0)
    for lat, lon in [(91, 0), (-90.5, 0), (0, 180.01), (0, -181), (float("nan"), 0), ("x", 0)]:
        with pytest.raises(GeoError):
            validate_lat_lon(lat, lon)  # type: ignore[arg-type]


def _utterance() -> Utterance:
    return Utterance(
        key="manifest_a",
        corpus="manifest",
        split="train",
        language="hin",
        source_language="hi",
        speaker="manifest_s1",
        gender="female",
        age=None,
        accent=None,
        geo=Geo(28.6, 77.2, "manifest"),
        transcript=Transcript("नमस्ते world", "नमस्ते world", ("Deva", "Latn"), 50.0),
        duration_s=1.5,
        sample_rate=16000,
        num_samples=24000,
        source=SourceRef("a.wav", 0.5, 2.0),
        license="CC-BY-4.0",
    )


def test_utterance_json_round_trip_and_schema() -> None:
    utterance = _utterance()
    payload = utterance.to_json_bytes()
    assert payload.endswith(b"\n")
    data = json.loads(payload)
    assert list(data) == [
        "key",
        "corpus",
        "split",
        "language",
        "source_language",
        "speaker",
        "gender",
        "age",
        "accent",
        "geo",
        "transcript",
        "duration_s",
        "sample_rate",
        "num_samples",
        "source",
        "license",
    ]
    assert "नमस्ते" in payload.decode("utf-8")  # not escaped
    assert Utterance.from_dict(data) == utterance
    jsonschema.validate(data, json_schema())
    # a version-1 sample (no licence) still reads; its licence is unknown
    old = {k: v for k, v in data.items() if k != "license"}
    assert Utterance.from_dict(old).license == "unknown"


def test_json_schema_refuses_empty_strings_and_bad_keys() -> None:
    data = _utterance().to_dict()
    cases = [("speaker", ""), ("key", "a.b"), ("language", "en"), ("gender", "f"), ("license", "")]
    for field, value in cases:
        broken = {**data, field: value}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, json_schema())


def test_arrow_schema_holds_every_json_field() -> None:
    import pyarrow as pa

    schema = arrow_schema()
    assert schema.names == [*_utterance().to_dict(), "shard"]
    table = pa.Table.from_pylist([{**_utterance().to_dict(), "shard": "s.tar"}], schema=schema)
    assert table.to_pylist()[0]["transcript"]["scripts"] == ["Deva", "Latn"]
