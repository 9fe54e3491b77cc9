"""The README's snippets, as a new user meets them from the repository root.

Every ``grounded-sam`` command line in a shell block parses, every ``python -m`` module and
every repository path in a snippet exists, every install hint works from a clone, every Python
block compiles; and the snippets meant to run without downloaded weights (the "Try it without
weights" section and the ONNX decoder example, with the tiny models and an ONNX export of the
tiny SAM in place of the real ones) run as written, in a folder laid out like the clone.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from grounded_sam.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SEPARATORS = {"&&", "||", "|", ";"}
REPO_PATH = re.compile(r"(?<![\w/.$-])((?:grounded_sam|notebooks|benchmarks|tests)/[\w./*-]*\w)")


def blocks(lang: str, text: str = README) -> list[tuple[int, str]]:
    """(line number, body) of every fenced block of ``lang`` in ``text``."""
    return [
        (text[: m.start()].count("\n") + 1, m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1) == lang
    ]


def section(title: str) -> str:
    """The README text from the heading ``title`` to the next heading of any level."""
    start = README.index(f"\n{title}\n")
    following = re.search(r"^#{1,6} ", README[start + len(title) + 2 :], re.M)
    return README[start : start + len(title) + 2 + (following.start() if following else 0)]


def commands(body: str) -> list[list[str]]:
    """The simple commands of a shell block: continuations joined, comments dropped, pipes
    and ``&&`` chains split, output redirections dropped."""
    found = []
    for line in body.replace("\\\n", " ").splitlines():
        current: list[str] = []
        redirected = False
        for token in [*shlex.split(line, comments=True), "&&"]:
            if token in SEPARATORS:
                if current:
                    found.append(current)
                current, redirected = [], False
            elif token.startswith(">") or redirected:
                redirected = True
            else:
                current.append(token)
    return found


def all_commands() -> list[tuple[int, list[str]]]:
    return [(line, cmd) for line, body in blocks("bash") for cmd in commands(body)]


CLI_LINES = [
    pytest.param(cmd[cmd.index("grounded-sam") + 1 :], id=f"line{line}")
    for line, cmd in all_commands()
    if "grounded-sam" in cmd
]


def test_the_readme_has_the_snippets_this_module_checks() -> None:
    assert len(CLI_LINES) > 15 and len(blocks("python")) > 5
    assert "### Try it without weights" in README


@pytest.mark.parametrize("argv", CLI_LINES)
def test_every_command_line_parses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        cli_main.build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"grounded-sam {shlex.join(argv)}: {capsys.readouterr().err} ({exc})")


def test_every_python_module_named_exists() -> None:
    modules = [cmd[cmd.index("-m") + 1] for _, cmd in all_commands() if cmd[:2] == ["python", "-m"]]
    modules += re.findall(r"python -m ([\w.]+)", README)
    assert "grounded_sam.clip.local_copy" in modules
    for module in set(modules):
        assert importlib.util.find_spec(module) is not None, module


def test_every_repository_path_in_a_snippet_exists() -> None:
    layout = section("## Layout") if "\n## Layout\n" in README else ""
    snippets = [body for lang in ("bash", "python") for _, body in blocks(lang)]
    paths = {p for body in snippets if body not in layout for p in REPO_PATH.findall(body)}
    assert "grounded_sam/app/examples/fruits.jpg" in paths
    for path in sorted(paths):
        assert list(REPO.glob(path)), f"{path} is named in a README snippet but does not exist"


def test_install_hints_work_from_a_clone() -> None:
    """No package name that is not on the index; every extra named exists in pyproject."""
    assert not re.search(r"pip install\s+['\"]?grounded[-_]sam\[", README)
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    optional = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^(\w+) = ", optional, re.M))
    named = set(re.findall(r"pip install -e \"\.\[(\w+)\]\"", README))
    assert {"dev", "onnx", "ray"} <= named and named <= extras, (named, extras)


@pytest.mark.parametrize(
    "body", [pytest.param(body, id=f"line{line}") for line, body in blocks("python")]
)
def test_every_python_block_compiles(body: str) -> None:
    ast.parse(body, filename="README.md")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the repository root (the package and its example photos)."""
    root = tmp_path_factory.mktemp("clone")
    (root / "grounded_sam").symlink_to(REPO / "grounded_sam", target_is_directory=True)
    return root


def test_try_it_without_weights_command_runs_as_written(
    clone: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The section's one shell command, both halves run in-process (same code as the shell)."""
    monkeypatch.chdir(clone)
    ((_, body),) = blocks("bash", section("### Try it without weights"))
    (python, flag, code), segment = commands(body)
    assert (python, flag, segment[0]) == ("python", "-c", "grounded-sam")
    exec(compile(code, "README python -c", "exec"), {})
    assert "model shards" not in capsys.readouterr().err  # no transformers bar on saving
    assert cli_main.main(segment[1:]) == 0
    assert (clone / "out-tiny" / "fruits.json").is_file()
    assert (clone / "out-tiny" / "fruits_overlay.png").is_file()


def test_try_it_without_weights_python_runs_as_written(
    clone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(clone)
    ((_, body),) = blocks("python", section("### Try it without weights"))
    namespace: dict = {}
    exec(compile(body, "README Try it (python)", "exec"), namespace)
    assert len(namespace["dets"]) >= 1  # the knobs make random weights return detections


def test_onnx_decoder_snippet_runs_from_the_repository_root(
    clone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ONNX example, with the tiny SAM exported where it expects sam-onnx/."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from grounded_sam import EverythingSettings, GroundedSAM
    from grounded_sam.deploy.onnx import export_sam_onnx
    from grounded_sam.testing import save_tiny_models

    monkeypatch.chdir(clone)
    sam, clip = save_tiny_models(clone / "onnx-models")
    export_sam_onnx(sam, clone / "sam-onnx", encoder=False)
    real = GroundedSAM.from_pretrained
    settings = EverythingSettings(points_per_side=4, pred_iou_thresh=0.0)

    def tiny(sam_id: str, **kwargs: object) -> GroundedSAM:
        assert sam_id == "facebook/sam-vit-base"
        return real(sam=sam, clip=clip, device="cpu", proposal_settings=settings)

    monkeypatch.setattr(GroundedSAM, "from_pretrained", staticmethod(lambda sam: tiny(sam)))
    body = next(b for _, b in blocks("python") if "InferenceSession" in b)
    # The snippet is for the full-size decoder (256x256 mask input); the tiny one's is smaller.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(clone / "sam-onnx" / "decoder.onnx"))
    tiny_mask = next(i.shape for i in session.get_inputs() if i.name == "mask_input")
    assert "(1, 1, 256, 256)" in body
    body = body.replace("(1, 1, 256, 256)", str((1, 1, *tiny_mask[2:])))
    namespace: dict = {}
    exec(compile(body, "README ONNX snippet", "exec"), namespace)
    mask = namespace["mask"].numpy()
    assert mask.shape == (480, 640) and mask.dtype == np.bool_
