"""``voxshard verify OUT``: re-read a build and recompute what its index files claim.

- COMPLETED is JSON of this schema version and seals the index files: their sha256 must match.
- Every file it needs parses (a truncated or garbled file is a problem, never a crash); every
  shards.jsonl row has its fields with their types and a plain relative path in the build's
  naming under OUT/shards (never ``..``); every rejects.jsonl line is a reject record.
- Every shard: present, the size and sha256 in shards.jsonl, a readable tar whose members
  pair up as ``<key>.flac`` + ``<key>.json`` (the same key) in key order, the sample count;
  its language, corpus, split and duration equal what its samples' records say.
- Every sample: the FLAC decodes (mono, 16-bit, the JSON's rate and length) and, where the
  encoder recorded one, its samples match STREAMINFO's MD5 (libFLAC can conceal a damaged
  frame); the JSON equals its utterances.parquet row, one row per key.
- stats.json equals the figures recomputed from the index rows and rejects.jsonl (the same
  code Finalize uses); discovered = written + rejected.
- No stray or temporary files at the top of OUT or under shards/, no .work/ left behind.

utterances.parquet is read row group by row group (one group per shard, in shards.jsonl
order), so memory stays small.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from typing import IO, Any

from voxshard.pipelines.index import SEALED_FILES, StatsBuilder, rejects_summary
from voxshard.pipelines.outdir import WORK_DIR, is_shard_path
from voxshard.pipelines.shards import ShardInfo
from voxshard.schemas import SCHEMA_VERSION, storage
from voxshard.schemas.storage import TEMP_MARKER

CHUNK_BYTES = 1 << 20
TOP_LEVEL = frozenset({"shards", *SEALED_FILES, "COMPLETED"})
SHARD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "path": str,
    "lang": str,
    "corpus": str,
    "split": str,
    "num_samples": int,
    "num_bytes": int,
    "duration_s": (int, float),
    "sha256": str,
}
REJECT_FIELDS = ("key", "source", "stage", "reason", "detail")


class _HashingReader:
    """A read-only stream that hashes what passes through, so a shard is read once."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data

    def hexdigest(self) -> str:
        """The sha256 of the whole stream (what the tar reader left is read first)."""
        while self.read(CHUNK_BYTES):
            pass
        return self.digest.hexdigest()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with storage.open_read(path) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(out: str, name: str, problems: list[str]) -> Any:
    try:
        return json.loads(storage.read_bytes(storage.join(out, name)))
    except (OSError, ValueError) as error:
        problems.append(f"{name} is not valid JSON ({error})")
        return None


def _read_jsonl(
    out: str, name: str, problems: list[str], check: Callable[[Any], str | None]
) -> list[Any] | None:
    """The rows of a JSON-lines file; each bad line is named. None when none can be trusted."""
    try:
        payload = storage.read_bytes(storage.join(out, name))
    except OSError as error:
        problems.append(f"{name} cannot be read ({error})")
        return None
    if payload and not payload.endswith(b"\n"):
        problems.append(f"{name} is truncated (its last line has no newline)")
    rows, bad = [], 0
    for number, line in enumerate(payload.splitlines(), 1):
        try:
            row = json.loads(line)
            problem = check(row)
        except ValueError:
            problem = "not JSON"
        if problem is not None:
            bad += 1
            if bad <= 5:
                problems.append(f"{name}:{number}: {problem}")
            continue
        rows.append(row)
    if bad > 5:
        problems.append(f"{name}: {bad - 5} more bad lines")
    return rows if bad == 0 else None


def _check_shard_row(row: Any) -> str | None:
    if not isinstance(row, dict) or set(row) != set(SHARD_FIELDS):
        return f"a shard row has the fields {sorted(SHARD_FIELDS)}"
    for name, kind in SHARD_FIELDS.items():
        if not isinstance(row[name], kind) or isinstance(row[name], bool):
            return f"{name} is not a {getattr(kind, '__name__', 'number')}"
    if not is_shard_path(row["path"]):
        return f"path {row['path'][:120]!r} is not a shard path under OUT/shards"
    expected_prefix = f"shards/{row['lang']}/{row['corpus']}-{row['split']}-"
    if not row["path"].startswith(expected_prefix):
        return f"path {row['path']!r} does not match lang/corpus/split {expected_prefix!r}"
    return None


def _check_reject_row(row: Any) -> str | None:
    if not isinstance(row, dict) or set(row) != set(REJECT_FIELDS):
        return f"a reject row has the fields {list(REJECT_FIELDS)}"
    if not isinstance(row["reason"], str) or not isinstance(row["stage"], str):
        return "reason and stage are strings"
    if not isinstance(row["source"], str):
        return "source is a string"
    return None


def _check_seal(out: str, completed: Any) -> list[str]:
    if not isinstance(completed, dict):
        return ["COMPLETED is not a JSON object"]
    problems = []
    if completed.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"COMPLETED: schema_version is not {SCHEMA_VERSION}")
    files = completed.get("files")
    if not isinstance(files, dict):
        return [*problems, "COMPLETED does not seal the index files (no sha256 of each)"]
    for name in SEALED_FILES:
        try:
            actual = _sha256(storage.join(out, name))
        except OSError:
            continue  # reported as missing
        if files.get(name) != actual:
            problems.append(f"{name}: sha256 differs from COMPLETED (edited after the build)")
    return problems


def _index_tables(out: str, problems: list[str]) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(storage.open_read(storage.join(out, "utterances.parquet")))
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group)
    except (OSError, pa.ArrowException) as error:
        problems.append(f"utterances.parquet cannot be read ({error})")


def _flac_md5_problem(flac: bytes, pcm: Any) -> str | None:
    """STREAMINFO's MD5 of the samples (bytes 18..33 of its body; zero = not recorded)."""
    if len(flac) < 42 or flac[:4] != b"fLaC":
        return "has no STREAMINFO"
    recorded = flac[8 + 18 : 8 + 34]
    if not any(recorded):
        return None
    if hashlib.md5(pcm.astype("<i2").tobytes()).digest() != recorded:
        return "samples differ from STREAMINFO's MD5"
    return None


def _check_members(
    shard: dict[str, Any], stream: _HashingReader, rows: dict[str, dict[str, Any]], decode: bool
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """(problems, keys, records) of one shard's tar."""
    import soundfile as sf

    problems: list[str] = []
    keys: list[str] = []
    records: list[dict[str, Any]] = []
    name = shard["path"]
    try:
        # stream mode ("r|") only calls read(); typeshed asks for a full file object
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            flac_key, flac = None, b""
            for member in tar:
                key, _, suffix = member.name.partition(".")
                handle = tar.extractfile(member)
                payload = handle.read() if handle is not None else b""
                if suffix == "flac":
                    if flac_key is not None:
                        problems.append(f"{name}: {flac_key}.flac has no {flac_key}.json")
                    flac_key, flac = key, payload
                    continue
                if suffix != "json":
                    problems.append(f"{name}: unexpected member {member.name!r}")
                    continue
                if flac_key != key:
                    problems.append(
                        f"{name}: {key}.json follows {flac_key}.flac: a sample's members "
                        "must share one key"
                        if flac_key is not None
                        else f"{name}: {key}.json has no {key}.flac before it"
                    )
                    flac_key = None
                    continue
                flac_key = None
                keys.append(key)
                try:
                    record = json.loads(payload)
                except ValueError:
                    problems.append(f"{name}: {key}.json is not JSON")
                    continue
                records.append(record)
                row = rows.get(key)
                if row is None:
                    problems.append(f"{name}: {key} is not in utterances.parquet")
                elif record != {k: v for k, v in row.items() if k != "shard"}:
                    problems.append(f"{name}: {key}.json differs from its utterances.parquet row")
                if decode:
                    try:
                        info = sf.info(io.BytesIO(flac))
                        audio, rate = sf.read(io.BytesIO(flac), dtype="int16")
                    except (RuntimeError, sf.LibsndfileError) as error:
                        problems.append(f"{name}: {key}.flac does not decode ({error})")
                        continue
                    if info.channels != 1 or info.subtype != "PCM_16":
                        problems.append(f"{name}: {key}.flac is not mono 16-bit")
                    elif (md5 := _flac_md5_problem(flac, audio)) is not None:
                        problems.append(f"{name}: {key}.flac {md5}")
                    if rate != record.get("sample_rate") or len(audio) != record.get("num_samples"):
                        problems.append(
                            f"{name}: {key}.flac has {len(audio)} samples at {rate} Hz, the JSON "
                            f"says {record.get('num_samples')} at {record.get('sample_rate')}"
                        )
            if flac_key is not None:
                problems.append(f"{name}: {flac_key}.flac has no {flac_key}.json")
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        problems.append(f"{name}: unreadable tar ({error})")
    if keys != sorted(keys):
        problems.append(f"{name}: members are not sorted by key")
    return problems, keys, records


def _check_shard_claims(shard: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """A shards.jsonl row against its samples' records (what the trainer reads)."""
    problems = []
    name = shard["path"]
    for field, record_field in (("lang", "language"), ("corpus", "corpus"), ("split", "split")):
        found = {record.get(record_field) for record in records}
        if records and found != {shard[field]}:
            problems.append(f"{name}: shards.jsonl says {field} {shard[field]!r}, samples {found}")
    seconds = round(sum(record.get("duration_s") or 0.0 for record in sorted_by_key(records)), 6)
    if records and seconds != shard["duration_s"]:
        problems.append(f"{name}: shards.jsonl says {shard['duration_s']} s, samples {seconds} s")
    return problems


def sorted_by_key(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda record: str(record.get("key")))


def _stray_files(out: str, listed: set[str]) -> list[str]:
    problems = []
    for entry in storage.listdir(out):
        if entry == WORK_DIR:
            problems.append(f"{WORK_DIR}/ is still there: the build did not finish cleanly")
        elif entry not in TOP_LEVEL:
            temporary = TEMP_MARKER in entry
            kind = "a temporary file" if temporary else "not part of the build"
            problems.append(f"{entry}: {kind}")
    shards_dir = storage.join(out, "shards")
    if storage.isdir(shards_dir):
        for below in storage.walk_files(shards_dir):
            relative = f"shards/{below}"
            if relative not in listed:
                temporary = TEMP_MARKER in storage.basename(relative)
                kind = "a temporary file" if temporary else "a file no index lists"
                problems.append(f"{relative}: {kind}")
    return problems


def _compare_stats(stats: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    problems = []
    for field in sorted(set(stats) | set(expected)):
        if field not in expected:
            problems.append(f"stats.json: unexpected field {field!r}")
        elif field not in stats:
            problems.append(f"stats.json: {field!r} is missing")
        elif stats[field] != expected[field]:
            problems.append(
                f"stats.json: {field} is {json.dumps(stats[field])[:200]}, the shards and "
                f"rejects.jsonl give {json.dumps(expected[field])[:200]}"
            )
    return problems


def verify(out: str, decode: bool = True) -> tuple[list[str], dict[str, Any]]:
    """(problems, summary). No problems means the build is complete and consistent."""
    problems: list[str] = []
    for name in ("COMPLETED", *SEALED_FILES):
        if not storage.isfile(storage.join(out, name)):
            problems.append(f"{name} is missing")
    if problems:
        return problems, {}
    problems.extend(_check_seal(out, _read_json(out, "COMPLETED", problems)))
    stats = _read_json(out, "stats.json", problems)
    shards = _read_jsonl(out, "shards.jsonl", problems, _check_shard_row)
    rejects = _read_jsonl(out, "rejects.jsonl", problems, _check_reject_row)
    if not isinstance(stats, dict):
        if stats is not None:
            problems.append("stats.json is not a JSON object")
        stats = {}
    if shards is None:
        return problems, {}
    seen: set[str] = set()
    builder = StatsBuilder()
    tables = _index_tables(out, problems)
    for shard in shards:
        path = storage.join(out, shard["path"])
        table = next(tables, None)
        row_list = [] if table is None else table.to_pylist()
        rows = {row["key"]: row for row in row_list}
        if len(rows) != len(row_list):
            problems.append(f"{shard['path']}: utterances.parquet has a key in two rows")
        if any(row["shard"] != shard["path"] for row in row_list):
            problems.append(
                f"{shard['path']}: utterances.parquet rows out of step with shards.jsonl"
            )
        if table is not None:
            builder.add(table)
        if not storage.isfile(path):
            problems.append(f"{shard['path']}: missing")
            continue
        size = storage.getsize(path)
        if size != shard["num_bytes"]:
            problems.append(
                f"{shard['path']}: {size} bytes, shards.jsonl says {shard['num_bytes']}"
            )
        with storage.open_read(path) as stream:
            reader = _HashingReader(stream)
            member_problems, keys, records = _check_members(shard, reader, rows, decode)
            if reader.hexdigest() != shard["sha256"]:
                problems.append(f"{shard['path']}: sha256 differs from shards.jsonl")
        problems.extend(member_problems)
        problems.extend(_check_shard_claims(shard, records))
        if len(keys) != shard["num_samples"] or len(row_list) != len(keys):
            problems.append(
                f"{shard['path']}: {len(keys)} samples, {len(row_list)} index rows, "
                f"shards.jsonl says {shard['num_samples']}"
            )
        duplicated = seen.intersection(keys)
        if duplicated:
            problems.append(
                f"{shard['path']}: keys also in another shard: {sorted(duplicated)[:5]}"
            )
        seen.update(keys)
    if next(tables, None) is not None:
        problems.append("utterances.parquet has rows for shards that shards.jsonl does not list")
    problems.extend(_stray_files(out, {shard["path"] for shard in shards}))
    if rejects is not None:
        infos = [ShardInfo(**shard) for shard in shards]
        counted = ("discovered", "merged_duplicate_listings", "clipped_samples")
        claimed = {
            name: value if isinstance(value := stats.get(name), int) else -1 for name in counted
        }
        expected = builder.stats(  # the counts no file holds are taken from stats.json
            infos,
            rejects_summary(rejects),
            discovered=claimed["discovered"],
            merged=claimed["merged_duplicate_listings"],
            clipped_samples=claimed["clipped_samples"],
        )
        problems.extend(_compare_stats(stats, expected))
        if stats.get("discovered") != builder.written + len(rejects):
            problems.append(
                f"accounting: discovered {stats.get('discovered')} != {builder.written} written "
                f"+ {len(rejects)} rejected"
            )
    summary = {
        "shards": len(shards),
        "samples": len(seen),
        "rejected": None if rejects is None else len(rejects),
        "decoded": decode,
    }
    return problems, summary
