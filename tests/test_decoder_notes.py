"""libmpg123's notes stay off the terminal during a build; everything else passes through."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import run_cli
from voxshard.pipelines.decoder_notes import is_decoder_note

CHILD = r"""
import os, sys
from voxshard.pipelines.decoder_notes import quiet_decoder_notes
print("before", file=sys.stderr, flush=True)
with quiet_decoder_notes() as filtered:
    os.write(2, b"Note: Illegal Audio-MPEG-Header 0x00000000 at offset 771.\n")
    os.write(2, b"Note: Trying to resync...\nkept line\n")
    print("python line", file=sys.stderr, flush=True)
    os.write(2, b"[src/libmpg123/parse.c:1234] error: giving up\n")
    os.write(2, b"progress 50%\r")
print(f"after {filtered.lines}", file=sys.stderr, flush=True)
"""


def test_only_the_decoder_lines_are_dropped() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, check=True, timeout=60
    )
    assert result.stderr == b"before\nkept line\npython line\nprogress 50%\rafter 3\n"
    assert is_decoder_note(b"Warning: Encountered more data after announced end of track.")
    assert not is_decoder_note(b"09:38:56 voxshard Note: a user's own message")


def test_a_build_with_a_damaged_mp3_prints_no_decoder_notes(tmp_path: Path) -> None:
    from voxshard.pipelines.demo import generate_commonvoice_demo

    root = tmp_path / "cv"
    generate_commonvoice_demo(str(root), clips_per_language=4)  # holds a truncated MP3
    shown = run_cli(
        "build", "commonvoice", str(root), "--out", str(tmp_path / "out"), "--max-error-rate", "0.5"
    )
    assert shown.returncode == 0, shown.stderr
    assert "built" in shown.stderr and "rejected" in shown.stderr
    assert "Illegal Audio-MPEG-Header" not in shown.stderr + shown.stdout
    assert "resync" not in shown.stderr + shown.stdout
    rejects = (tmp_path / "out" / "rejects.jsonl").read_text()
    assert "common_voice_pl_corrupt.mp3" in rejects  # the damaged file is still reported


GONE = r"""
import os, sys
from voxshard.pipelines.decoder_notes import quiet_decoder_notes
os.close(2); os.open(os.devnull, os.O_RDONLY)  # fd 2: a stderr that cannot be written
with quiet_decoder_notes() as filtered:
    for _ in range(2000):  # 200 kB: more than a pipe holds
        os.write(2, b"x" * 99 + b"\n")
    os.write(2, b"Note: resync\n")
print("not stuck")
"""


def test_a_stderr_that_went_away_does_not_hang_the_build() -> None:
    result = subprocess.run(
        [sys.executable, "-c", GONE], capture_output=True, timeout=60, check=True
    )
    assert result.stdout == b"not stuck\n"
