"""Hostile command lines: undecodable bytes in phrases end in a one-line error, never a crash.

A Latin-1 ``\\xff`` byte on a UTF-8 command line reaches Python as the lone surrogate
``"\\udcff"``; drawing it crashed OpenCV (exit 139). Now phrases are validated where prompts
are parsed: ``segment`` exits 1 with one line, ``shell`` reports the line and goes on.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from tests.cli.conftest import ENTRY, TIMEOUT, cli_env, error_lines, synthetic_image


def _run(args: list, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ENTRY, *args], input=stdin, capture_output=True, env=cli_env(**env), timeout=TIMEOUT
    )


def test_segment_with_an_undecodable_byte_in_the_phrase(model_args, tmp_path: Path) -> None:
    image = synthetic_image(tmp_path / "shapes.png")
    proc = _run(["segment", str(image), "-p", b"\xffx", "-o", str(tmp_path / "out"), *model_args])
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and "lone surrogate U+DCFF" in lines[0], stderr
    assert "Traceback" not in stderr


def test_shell_survives_hostile_lines(model_args, tmp_path: Path, monkeypatch, capsys) -> None:
    # In-process (saves a subprocess start): stdin decodes an undecodable byte to a lone
    # surrogate (surrogateescape), which is what this StringIO hands over.
    from grounded_sam.cli.main import main

    image = synthetic_image(tmp_path / "shapes.png")
    lines = "\udcffx\n" + "a\x01b\n" + "x" * 400 + "\nhazelnut\nquit\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["shell", str(image), "--out", str(tmp_path / "out"), *model_args]) == 0
    captured = capsys.readouterr()
    errors = error_lines(captured.err)
    assert len(errors) == 3, captured.err
    assert "lone surrogate U+DCFF" in errors[0]
    assert "control character U+0001" in errors[1]
    assert "the limit is 300" in errors[2]
    assert captured.out.count(" ms; overlay: ") == 1  # the valid phrase after them was answered


def test_segment_with_a_pickle_sam_checkpoint(model_args, tiny_model_specs, tmp_path) -> None:
    # A pytorch_model.bin that torch's weights_only loader refuses gave a traceback.
    from tests.sam.test_loading import pickle_checkpoint

    folder = pickle_checkpoint(Path(tiny_model_specs[0]), tmp_path / "pickled", hostile=True)
    args = list(model_args)
    args[args.index("--sam") + 1] = str(folder)
    image = synthetic_image(tmp_path / "shapes.png")
    proc = _run(["segment", str(image), "-p", "disc", "-o", str(tmp_path / "out"), *args])
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert "pytorch_model.bin is a pickle checkpoint that cannot be loaded safely" in lines[0]
    assert "convert it to safetensors" in lines[0].lower()
    assert "Traceback" not in stderr and "code ran" not in proc.stdout.decode()
