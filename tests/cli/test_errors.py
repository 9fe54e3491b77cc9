"""Every bad input gives one clear line on stderr, a non-zero exit status and no traceback.

Each case is a real subprocess of the entry point; they run concurrently (they are
independent) to keep the suite fast.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cli.conftest import cli_env, error_lines, run_cli, synthetic_image

# name -> (args with {img}/{bad}/{dir}/{empty}/{file}/{models} placeholders, expected
#          exit status, substrings of the error line)
CASES: dict[str, tuple[list[str], int, list[str]]] = {
    "missing image": (
        ["segment", "{tmp}/nope.jpg", "-p", "dog", "-o", "{tmp}/o1", "{models}"],
        1,
        ["Image not found", "nope.jpg"],
    ),
    "missing folder": (
        ["label", "{tmp}/no-such-dir", "-c", "dog", "-o", "{tmp}/o2", "{models}"],
        1,
        ["Images folder not found", "no-such-dir"],
    ),
    "empty folder": (
        ["label", "{empty}", "-c", "dog", "-o", "{tmp}/o3", "{models}"],
        1,
        ["No images found", "empty"],
    ),
    "unreadable image": (
        ["segment", "{bad}", "-p", "dog", "-o", "{tmp}/o4", "{models}"],
        1,
        ["bad.png"],
    ),
    "empty prompt": (
        ["segment", "{img}", "-p", " , ", "-o", "{tmp}/o5", "{models}"],
        1,
        ["prompt is empty"],
    ),
    "empty class list": (
        ["label", "{dir}", "--classes", ",", "-o", "{tmp}/o6", "{models}"],
        1,
        ["class list (--classes) is empty"],
    ),
    "too many classes": (
        ["label", "{dir}", "--classes", ",".join(f"c{i}" for i in range(200)),
         "-o", "{tmp}/o6b", "{models}"],
        1,
        ["More than 128 phrases", "class list (--classes)"],
    ),
    "control character in a class": (
        ["label", "{dir}", "--classes", "dog, c\x07t", "-o", "{tmp}/o6c", "{models}"],
        1,
        ["control character", "U+0007"],
    ),
    "class too long": (
        ["label", "{dir}", "--classes", "x" * 400, "-o", "{tmp}/o6d", "{models}"],
        1,
        ["400 characters", "the limit is 300"],
    ),
    "unknown format": (
        ["label", "{dir}", "-c", "dog", "--format", "xml", "-o", "{tmp}/o7", "{models}"],
        2,
        ["--format", "invalid choice", "'xml'"],
    ),
    "output is a file": (
        ["segment", "{img}", "-p", "dog", "-o", "{file}", "{models}"],
        1,
        ["is a file", "out.txt"],
    ),
    "sam folder missing": (
        ["segment", "{img}", "-p", "dog", "-o", "{tmp}/o8", "{models}",
         "--sam", "/nonexistent/sam"],
        1,
        ["/nonexistent/sam", "save_pretrained"],
    ),
    "sam hub id offline": (
        ["segment", "{img}", "-p", "dog", "-o", "{tmp}/o9", "{models}",
         "--sam", "facebook/sam-vit-nonexistent"],
        1,
        ["facebook/sam-vit-nonexistent", "--local-dir"],
    ),
    "clip missing": (
        ["label", "{dir}", "-c", "dog", "-o", "{tmp}/o10", "{models}",
         "--clip", "local-dir:/nonexistent/clip"],
        1,
        ["/nonexistent/clip", "local"],
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory, model_args: list[str]
) -> dict[str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("errors")
    img = synthetic_image(tmp / "img.png")
    bad = tmp / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    folder = tmp / "dir"
    synthetic_image(folder / "a.jpg")
    (tmp / "empty" / "sub").mkdir(parents=True)
    (tmp / "empty" / "readme.txt").write_text("no images here")
    out_file = tmp / "out.txt"
    out_file.write_text("a file, not a folder")
    values = {"tmp": tmp, "img": img, "bad": bad, "dir": folder, "empty": tmp / "empty",
              "file": out_file}  # fmt: skip

    def expand(args: list[str]) -> list[str]:
        expanded: list[str] = []
        for arg in args:
            if arg == "{models}":
                expanded += model_args
            else:
                expanded.append(arg.format(**values))
        # Later options win: a case's own --sam/--clip overrides the tiny models.
        return expanded

    def run(name: str) -> subprocess.CompletedProcess:
        return run_cli(expand(CASES[name][0]), env=cli_env(HF_HUB_OFFLINE="1"))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line_and_nonzero_exit(name: str, results) -> None:
    proc = results[name]
    _, status, needles = CASES[name]
    lines = error_lines(proc.stderr)
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("grounded-sam") and ": error: " in lines[0]
    for needle in needles:
        assert needle in lines[0]
    assert proc.stdout == ""


def test_model_error_says_how_to_use_a_local_copy(results) -> None:
    line = error_lines(results["sam hub id offline"].stderr)[0]
    assert "on a connected machine" in line and "sam-vit-nonexistent" in line
    assert "--sam DIR" in line  # the command-line way to point at a local copy
    assert "Traceback" not in results["clip missing"].stderr
