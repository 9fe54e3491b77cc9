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


def test_shell_skips_an_over_long_line(model_args, tmp_path: Path) -> None:
    # A 1.5 GB line was read whole into memory (and then a traceback); now it is discarded
    # in bounded chunks, with one error line, and the shell answers the next phrase.
    from grounded_sam.cli.shell import MAX_LINE_CHARS

    image = synthetic_image(tmp_path / "shapes.png")
    size = 10_000_000
    stdin = b"x" * size + b"\nhazelnut\nquit\n"
    proc = _run(["shell", str(image), *model_args], stdin=stdin)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, stderr
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr
    assert f"line of {size:,} characters skipped" in errors[0]
    assert f"at most {MAX_LINE_CHARS:,} characters" in errors[0]
    assert "Traceback" not in stderr
    assert proc.stdout.decode().count(" instance(s) in ") == 1  # the next phrase was answered


class _CountingStdin(io.StringIO):
    """stdin that records the longest piece handed out by one readline."""

    longest = 0

    def readline(self, size: int = -1) -> str:  # type: ignore[override]
        line = super().readline(size)
        self.longest = max(self.longest, len(line))
        return line


def test_shell_reads_a_long_line_in_bounded_chunks(monkeypatch) -> None:
    import pytest

    from grounded_sam.cli import shell

    stdin = _CountingStdin("y" * (5 * shell.MAX_LINE_CHARS + 7) + "\n" + "z" * 10 + "\n")
    monkeypatch.setattr("sys.stdin", stdin)
    with pytest.raises(ValueError, match=f"line of {5 * shell.MAX_LINE_CHARS + 7:,} characters"):
        shell._read_phrase(interactive=False)
    assert shell._read_phrase(interactive=False) == "z" * 10  # the next line is intact
    assert shell._read_phrase(interactive=False) is None
    assert 0 < stdin.longest <= shell.MAX_LINE_CHARS + 1
    # a line of exactly the limit is read whole
    monkeypatch.setattr("sys.stdin", io.StringIO("w" * shell.MAX_LINE_CHARS + "\n"))
    assert shell._read_phrase(interactive=False) == "w" * shell.MAX_LINE_CHARS
