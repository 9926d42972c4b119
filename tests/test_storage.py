"""schemas.storage on local folders and fsspec URLs, and whole builds with ROOT and OUT as URLs.

``memory://`` (fsspec's in-process filesystem) stands in for an object store in the default
run (it publishes a file when opened, so atomicity is checked locally and on gs:// only); the
gs:// tests run against a local GCS emulator (gcp-storage-emulator + gcsfs), offline.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import run_build
from voxshard.pipelines.verify import verify
from voxshard.schemas import storage


def upload_tree(local: Path, url: str) -> None:
    for folder, _dirs, files in os.walk(local):
        for name in files:
            path = Path(folder) / name
            relative = path.relative_to(local).as_posix()
            storage.write_atomic(storage.join(url, relative), path.read_bytes())


def read_tree(url: str) -> dict[str, bytes]:
    return {name: storage.read_bytes(storage.join(url, name)) for name in storage.walk_files(url)}


def local_tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def memory_url() -> Iterator[str]:
    url = f"memory://voxshard-test-{uuid.uuid4().hex}"
    yield url
    storage.remove_tree(url)


@pytest.fixture(params=["local", "memory"])
def base(request: pytest.FixtureRequest, tmp_path: Path, memory_url: str) -> str:
    return str(tmp_path / "base") if request.param == "local" else memory_url


def test_write_list_walk_remove(base: str) -> None:
    storage.write_atomic(storage.join(base, "a", "x.bin"), b"x" * 10)
    storage.write_atomic(storage.join(base, "a", "b", "y.bin"), b"yy")
    storage.write_atomic(storage.join(base, "z.txt"), b"z")
    assert storage.listdir(base) == ["a", "z.txt"]
    assert storage.listdir(storage.join(base, "a")) == ["b", "x.bin"]
    assert list(storage.walk_files(base)) == ["a/b/y.bin", "a/x.bin", "z.txt"]
    assert storage.isdir(storage.join(base, "a")) and not storage.isfile(storage.join(base, "a"))
    assert storage.isfile(storage.join(base, "z.txt"))
    assert storage.getsize(storage.join(base, "a", "x.bin")) == 10
    with storage.open_read(storage.join(base, "a", "x.bin")) as handle:
        handle.seek(4)
        assert handle.read(3) == b"xxx" and handle.tell() == 7
    storage.remove(storage.join(base, "z.txt"))
    storage.remove(storage.join(base, "never-there"))  # removing nothing is fine
    storage.remove_tree(storage.join(base, "a"))
    assert not storage.exists(storage.join(base, "a", "x.bin"))
    assert not storage.exists(storage.join(base, "z.txt"))


def check_failed_write(base: str) -> None:
    target = storage.join(base, "out", "shard.tar")
    storage.write_atomic(target, b"old")
    with pytest.raises(RuntimeError), storage.atomic_writer(target) as handle:
        handle.write(b"partial new content")
        raise RuntimeError("disk gone")
    assert storage.read_bytes(target) == b"old"
    assert list(storage.walk_files(storage.join(base, "out"))) == ["shard.tar"]


def test_a_failed_local_write_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    check_failed_write(str(tmp_path))


def test_unknown_scheme_says_what_to_install() -> None:
    from voxshard.schemas import ConfigError

    with pytest.raises(ConfigError, match="install the fsspec filesystem for nosuchfs://"):
        storage.exists("nosuchfs://bucket/x")


def test_build_with_root_and_out_as_urls(cv_root: Path, tmp_path: Path, memory_url: str) -> None:
    """A memory:// ROOT and OUT give the same shards and index bytes as local folders."""
    local_out = tmp_path / "local-out"
    run_build(BuildConfig("commonvoice", str(cv_root), str(local_out), shard_size_mb=0.05))
    root_url = storage.join(memory_url, "corpus")
    out_url = storage.join(memory_url, "out")
    upload_tree(cv_root, root_url)
    stats = run_build(BuildConfig("commonvoice", root_url, out_url, shard_size_mb=0.05))
    assert stats["written"] == 11
    remote = read_tree(out_url)
    local = local_tree(local_out)
    assert sorted(remote) == sorted(local)
    assert {k: v for k, v in remote.items() if k != "COMPLETED"} == {
        k: v for k, v in local.items() if k != "COMPLETED"
    }  # COMPLETED holds the config hash, which covers ROOT
    problems, summary = verify(out_url)
    assert problems == [] and summary["samples"] == 11


def test_rerun_on_a_url_out_is_a_no_op_or_refused(cv_root: Path, memory_url: str) -> None:
    from voxshard.schemas import ConfigError

    out_url = storage.join(memory_url, "out")
    config = BuildConfig("commonvoice", str(cv_root), out_url, shard_size_mb=0.05)
    run_build(config)
    assert run_build(config)["already_built"]  # the same build: nothing to do
    other = BuildConfig("commonvoice", str(cv_root), out_url, shard_size_mb=0.04)
    with pytest.raises(ConfigError, match="already holds a completed build with other options"):
        run_build(other)
    run_build(other, overwrite=True)
    assert storage.isfile(storage.join(out_url, "COMPLETED"))


# ---------------------------------------------------------------- gs:// against an emulator


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def gcs_emulator() -> Iterator[str]:
    """A local GCS emulator; yields a bucket URL. gcsfs talks to it via STORAGE_EMULATOR_HOST."""
    # the emulator lacks the storage-control API that gcsfs probes for bucket types; the
    # variable is read when gcsfs is imported
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    server_module = pytest.importorskip("gcp_storage_emulator.server")
    pytest.importorskip("gcsfs")
    port = _free_port()
    server = server_module.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    saved = {name: os.environ.get(name) for name in ("STORAGE_EMULATOR_HOST",)}
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    import fsspec

    fs = fsspec.filesystem("gs", token="anon", project="voxshard-test", skip_instance_cache=True)
    fs.mkdir("voxshard-test")
    fsspec.filesystem("gs").clear_instance_cache()
    try:
        yield "gs://voxshard-test"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        fsspec.filesystem("gs").clear_instance_cache()


def test_gs_build_and_verify_against_the_emulator(
    cv_root: Path, tmp_path: Path, gcs_emulator: str
) -> None:
    """ROOT and OUT on gs:// (emulated): the same bytes as a local build; verify reads it back."""
    check_failed_write(f"{gcs_emulator}/failed-write")
    run_id = uuid.uuid4().hex[:8]
    root_url = f"{gcs_emulator}/{run_id}/corpus"
    out_url = f"{gcs_emulator}/{run_id}/out"
    upload_tree(cv_root, root_url)
    stats = run_build(BuildConfig("commonvoice", root_url, out_url, shard_size_mb=0.05))
    assert stats["written"] == 11 and stats["rejected"] == 0
    local_out = tmp_path / "local-out"
    run_build(BuildConfig("commonvoice", str(cv_root), str(local_out), shard_size_mb=0.05))
    remote = read_tree(out_url)
    local = local_tree(local_out)
    assert {k: v for k, v in remote.items() if k != "COMPLETED"} == {
        k: v for k, v in local.items() if k != "COMPLETED"
    }
    problems, summary = verify(out_url)
    assert problems == [] and summary["samples"] == 11


def test_the_training_stream_reads_a_build_at_a_url(
    cv_root: Path, tmp_path: Path, memory_url: str
) -> None:
    from voxshard.training.data import CorruptCounter, LanguageStream, discover

    local_out = tmp_path / "out"
    run_build(BuildConfig("commonvoice", str(cv_root), str(local_out), shard_size_mb=0.05))
    upload_tree(local_out, storage.join(memory_url, "out"))

    def first_epoch(build: str) -> list[tuple[str, int, float]]:
        found = discover([build], ("train",))
        rows = []
        for language, shards in sorted(found.shards.items()):
            stream = LanguageStream(language, shards, 0, 1, 0, CorruptCounter())
            while True:
                item = stream.next()
                if stream.epoch > 0:  # the first item of the next epoch
                    break
                rows.append((item.key, len(item.audio), float(item.audio.sum())))
        return rows

    local = first_epoch(str(local_out))
    assert len(local) == 7  # en 3, pl 2, de 2 train clips
    assert first_epoch(storage.join(memory_url, "out")) == local


def test_lexicon_and_geo_tables_read_from_urls(memory_url: str) -> None:
    from voxshard.corpora.geo_table import read_geo_table
    from voxshard.normalizers import read_lexicon

    lexicon_url = storage.join(memory_url, "lexicon.tsv")
    storage.write_atomic(
        lexicon_url, "latin\tnative\nnamaste\t\u0928\u092e\u0938\u094d\u0924\u0947\n".encode()
    )
    assert read_lexicon(lexicon_url).to_native == {
        "namaste": "\u0928\u092e\u0938\u094d\u0924\u0947"
    }
    geo_url = storage.join(memory_url, "geo.csv")
    storage.write_atomic(geo_url, b"speaker,lat,lon\ns1,52.52,13.405\n")
    assert read_geo_table(geo_url).lookup("manifest", "manifest_s1", "eng") == (
        52.52,
        13.405,
        "speaker",
    )


def test_a_build_into_a_url_holds_a_lease(cv_root: Path, memory_url: str) -> None:
    """A second build into the same URL is refused while the first one's lease is fresh;
    a lease a killed build left (not refreshed for LEASE_EXPIRY_S) does not block."""
    import json
    import time

    from voxshard.pipelines.outdir import LEASE_EXPIRY_S, LOCK
    from voxshard.schemas import BuildError

    out_url = storage.join(memory_url, "leased")
    config = BuildConfig("commonvoice", str(cv_root), out_url)
    lease = {"token": "other", "owner": "pid 7 on elsewhere", "refreshed": time.time()}
    storage.write_atomic(storage.join(out_url, LOCK), json.dumps(lease).encode())
    with pytest.raises(
        BuildError, match=r"being built by another voxshard process \(pid 7 on elsewhere\)"
    ):
        run_build(config)
    stale = {**lease, "refreshed": time.time() - LEASE_EXPIRY_S - 1}
    storage.write_atomic(storage.join(out_url, LOCK), json.dumps(stale).encode())
    assert run_build(config)["written"] == 11
    assert not storage.exists(storage.join(out_url, LOCK))  # released when done


def test_similarity_and_the_probe_read_builds_at_urls(
    cv_root: Path, memory_url: str, tmp_path: Path
) -> None:
    from voxshard.pipelines.similarity import SimilarityConfig, run_similarity
    from voxshard.training.probe import read_build

    build = storage.join(memory_url, "cv")
    run_build(BuildConfig("commonvoice", str(cv_root), build))
    report = run_similarity(
        SimilarityConfig(builds=(build,), out=str(tmp_path / "sim"), plots=False)
    )
    assert report["languages"] == ["deu", "eng", "pol"] and report["speakers"]["count"] == 6
    rows = read_build(build, per_language=100, sample_rate=16000)
    assert len(rows) == 11 and {language for _key, language, _split, _audio in rows} == {
        "deu",
        "eng",
        "pol",
    }
    # similarity's outputs at a URL: the same files, byte for byte, as in a local folder
    sim_url = storage.join(memory_url, "sim")
    run_similarity(SimilarityConfig(builds=(build,), out=sim_url, plots=True))
    run_similarity(SimilarityConfig(builds=(build,), out=str(tmp_path / "sim2"), plots=True))
    remote, local = read_tree(sim_url), local_tree(tmp_path / "sim2")
    assert sorted(remote) == sorted(local) and "geo.png" in remote
    assert {k: v for k, v in remote.items() if not k.endswith(".png")} == {
        k: v for k, v in local.items() if not k.endswith(".png")
    }


def test_local_folder_uploads_only_a_finished_block(memory_url: str) -> None:
    target = storage.join(memory_url, "staged")
    with pytest.raises(RuntimeError), storage.local_folder(target) as folder:
        Path(folder, "a.txt").write_text("a")
        raise RuntimeError("failed half way")
    assert not storage.exists(storage.join(target, "a.txt"))
    with storage.local_folder(target) as folder:
        Path(folder, "sub").mkdir()
        Path(folder, "sub", "b.bin").write_bytes(b"bb")
    assert storage.read_bytes(storage.join(target, "sub", "b.bin")) == b"bb"
