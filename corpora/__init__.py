"""Corpus adapters: one module per source layout, registered once here. Pure parsing."""

from __future__ import annotations

from voxshard.corpora import babel, commonvoice, manifest, mls, voxpopuli
from voxshard.corpora.base import (
    CorpusOptions,
    CorpusSpec,
    ParseResult,
    Setting,
    SourceUtterance,
    origin_order,
)
from voxshard.schemas import ConfigError

REGISTRY: dict[str, CorpusSpec] = {
    spec.name: spec
    for spec in (
        CorpusSpec(
            name=commonvoice.NAME,
            summary="Common Voice cv-corpus-N/<locale>/ (all TSV generations, MP3 clips)",
            default_splits=commonvoice.DEFAULT_SPLITS,
            list_sources=commonvoice.list_sources,
            parse_source=commonvoice.parse_source,
            list_languages=commonvoice.list_languages,
            known_splits=commonvoice.KNOWN_SPLITS,
            license="CC0-1.0",
            license_note="Mozilla Common Voice: public domain dedication (CC0 1.0); speakers "
            "agreed not to be identified: do not try to determine their identity",
        ),
        CorpusSpec(
            name=voxpopuli.NAME,
            summary="VoxPopuli: transcribed_data/ (VAD-cut ASR segments) and unlabelled_data/",
            default_splits=voxpopuli.DEFAULT_SPLITS,
            list_sources=voxpopuli.list_sources,
            parse_source=voxpopuli.parse_source,
            list_languages=voxpopuli.list_languages,
            settings=voxpopuli.SETTINGS,
            known_splits=("train", "dev", "test", "unlabelled"),
            license="CC0-1.0",
            license_note="VoxPopuli (facebookresearch/voxpopuli): released under CC0; the "
            "recordings are European Parliament event recordings (acknowledge the EP)",
        ),
        CorpusSpec(
            name=mls.NAME,
            summary="Multilingual LibriSpeech mls_<language>[_opus]/ (FLAC or Opus release)",
            default_splits=mls.DEFAULT_SPLITS,
            list_sources=mls.list_sources,
            parse_source=mls.parse_source,
            list_languages=mls.list_languages,
            settings=mls.SETTINGS,
            known_splits=mls.DEFAULT_SPLITS,
            license="CC-BY-4.0",
            license_note="Multilingual LibriSpeech (OpenSLR 94): CC BY 4.0; attribution "
            "required (Pratap et al. 2020; LibriVox readers)",
        ),
        CorpusSpec(
            name=babel.NAME,
            summary="IARPA BABEL packs BABEL_<phase>_<id>/ (SPHERE/WAV + [t] transcripts)",
            default_splits=babel.DEFAULT_SPLITS,
            list_sources=babel.list_sources,
            parse_source=babel.parse_source,
            list_languages=babel.list_languages,
            settings=babel.SETTINGS,
            known_splits=babel.DEFAULT_SPLITS,
            license="LicenseRef-LDC-User-Agreement",
            license_note="IARPA BABEL language packs are distributed by the LDC under its "
            "User Agreement for Non-Members: no redistribution outside the licensed organization",
        ),
        CorpusSpec(
            name=manifest.NAME,
            summary="your own TSV/JSONL manifest: path, language [, speaker, transcript, ...]",
            default_splits=None,
            list_sources=manifest.list_sources,
            parse_source=manifest.parse_source,
            license="unknown",
            license_note="your own manifest: a license column gives each row's licence; "
            "without one it is unknown",
        ),
    )
}


def get_corpus(name: str) -> CorpusSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"unknown SOURCE {name!r}; choose one of: {known}") from None


def corpus_settings() -> list[tuple[Setting, list[str]]]:
    """Every corpus's own settings, each once, with the corpora that declare it (the CLI
    makes one option of each)."""
    found: dict[str, tuple[Setting, list[str]]] = {}
    for spec in REGISTRY.values():
        for setting in spec.settings.values():
            found.setdefault(setting.name, (setting, []))[1].append(spec.name)
    return list(found.values())


__all__ = [
    "REGISTRY",
    "CorpusOptions",
    "CorpusSpec",
    "ParseResult",
    "Setting",
    "SourceUtterance",
    "corpus_settings",
    "get_corpus",
    "origin_order",
]
