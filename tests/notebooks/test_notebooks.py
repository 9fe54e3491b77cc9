"""Every notebook in notebooks/ is committed clean and runs top to bottom on tiny random models.

The notebooks read their models and engine knobs from ``GROUNDED_SAM_*`` environment
variables in their parameters cell; here they point at tiny random models saved to a temp
dir, so each notebook runs in seconds on a CPU (its numbers are meaningless); the quickstart's SAM 3
cell reads ``GROUNDED_SAM_SAM3``, a tiny random SAM 3 here, and must run on it. Each notebook is
executed twice: with the example photos of ``../shared/data`` (skipped when absent, as in a
user's clone) and with that folder missing, so that the synthetic-scene fallback is run too.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SHARED_DATA = REPO.parent / "shared" / "data"
KERNEL_NAME = "grounded-sam-tests"
CELL_TIMEOUT_S = 300

# Engine knobs that make tiny random models return something (see each parameters cell).
TINY_KNOBS = {
    "GROUNDED_SAM_DEVICE": "cpu",
    "GROUNDED_SAM_THRESHOLD": "0",
    "GROUNDED_SAM_POINTS_PER_SIDE": "4",
    "GROUNDED_SAM_PRED_IOU_THRESH": "0",
    "GROUNDED_SAM_STABILITY_THRESH": "0.5",
    "GROUNDED_SAM_VIDEO_FRAMES": "6",  # 05_video_tracking: a short clip, few tracks
    "GROUNDED_SAM_MAX_TRACKS": "4",
}

# Absolute paths of some machine: /home/..., /Users/..., /tmp/..., C:\...
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.:/~-])/(?:home|Users|root|tmp|work|mnt|opt|var|usr|private|Volumes|srv)/"
    r"|(?<![A-Za-z])[A-Za-z]:\\"
)
PARAMETERS = ("GROUNDED_SAM_SAM", "GROUNDED_SAM_CLIP", "GROUNDED_SAM_DATA", "GROUNDED_SAM_DEVICE")
ALLOWED_NB_METADATA = {"kernelspec", "language_info"}
ALLOWED_CELL_METADATA = {"tags"}

notebook_params = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])


def test_notebooks_exist() -> None:
    names = {p.name for p in NOTEBOOKS}
    for expected in (
        "01_quickstart.ipynb",
        "02_interactive_prompts.ipynb",
        "03_open_vocabulary_labeling.ipynb",
        "04_evaluate.ipynb",
        "05_video_tracking.ipynb",
    ):
        assert expected in names


@notebook_params
def test_notebook_is_committed_clean(path: Path) -> None:
    """No outputs, no execution counts, no machine-specific metadata or absolute paths."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert set(nb.metadata) <= ALLOWED_NB_METADATA, f"strip notebook metadata: {set(nb.metadata)}"
    assert set(nb.metadata.get("language_info", {})) <= {"name"}, "strip language_info"
    for i, cell in enumerate(nb.cells):
        assert set(cell.metadata) <= ALLOWED_CELL_METADATA, f"cell {i} has metadata"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"cell {i} has an execution count"
    text = path.read_text(encoding="utf-8")
    for needle in {str(REPO), str(Path.home())} - {"/"}:
        assert needle not in text, f"{path.name} contains the machine path {needle}"
    sources = "\n".join(c.source for c in nb.cells) + json.dumps(nb.metadata)
    found = ABSOLUTE_PATH.search(sources)
    assert found is None, f"{path.name} contains an absolute path near {found.group(0)!r}"


@notebook_params
def test_notebook_has_a_parameters_cell(path: Path) -> None:
    """The first code cell takes the models from the environment, so CI can swap them."""
    nb = nbformat.read(path, as_version=4)
    first_code = next(c.source for c in nb.cells if c.cell_type == "code")
    for var in PARAMETERS:
        assert var in first_code, f"the parameters cell of {path.name} does not read {var}"


@pytest.fixture(scope="module")
def kernel_spec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec that runs this interpreter, whatever kernels the machine has installed."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "grounded_sam tests",
                "language": "python",
            }
        )
    )
    return root


def _data_dir(which: str, tmp_path: Path) -> Path:
    """The example data folder the notebook sees: the real one, or one that does not exist."""
    if which == "shared" and SHARED_DATA.is_dir():
        return SHARED_DATA
    return tmp_path / "no-data-here"


@pytest.fixture(scope="module")
def tiny_propagator(video_sam_dir: Path) -> Path:
    """A tiny random SAM 2.1 video checkpoint: the video notebook's ``PROPAGATOR``."""
    return video_sam_dir


@notebook_params
def test_notebook_runs(
    path: Path,
    tmp_path: Path,
    tiny_model_specs: tuple[str, str],
    kernel_spec_dir: Path,
    tiny_propagator: Path,
) -> None:
    """Every notebook, on the example data when present (synthetic scenes otherwise)."""
    _execute(
        path,
        _data_dir("shared", tmp_path),
        tiny_model_specs,
        kernel_spec_dir,
        tiny_propagator,
        tmp_path,
    )


@pytest.mark.parametrize(
    "name", ["01_quickstart", "03_open_vocabulary_labeling", "05_video_tracking"]
)
def test_notebook_runs_without_example_data(
    name: str,
    tmp_path: Path,
    tiny_model_specs: tuple[str, str],
    kernel_spec_dir: Path,
    tiny_propagator: Path,
) -> None:
    """What a user with a fresh clone gets: synthetic scenes instead of ../shared/data."""
    if not SHARED_DATA.is_dir():
        pytest.skip("already covered by test_notebook_runs (no example data here)")
    _execute(
        NOTEBOOK_DIR / f"{name}.ipynb",
        _data_dir("synthetic", tmp_path),
        tiny_model_specs,
        kernel_spec_dir,
        tiny_propagator,
        tmp_path,
    )


def _execute(
    path: Path,
    data_dir: Path,
    tiny_model_specs: tuple[str, str],
    kernel_spec_dir: Path,
    propagator: Path,
    tmp_path: Path,
) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    sam_spec, clip_spec = tiny_model_specs
    env = dict(os.environ)
    env.update(TINY_KNOBS)
    env.update(
        {
            "GROUNDED_SAM_SAM": sam_spec,
            "GROUNDED_SAM_CLIP": clip_spec,
            "GROUNDED_SAM_DATA": str(data_dir),
            "GROUNDED_SAM_PROPAGATOR": str(propagator),  # SAM 2.1 (the tiny SAM is SAM 1)
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            # the notebooks' own work folders (tempfile.mkdtemp) go under pytest's tmp_path
            "TMPDIR": str(tmp_path),
        }
    )
    sam3 = _tiny_sam3()
    if sam3 is not None:  # the quickstart's SAM 3 cell runs on a tiny random SAM 3
        env["GROUNDED_SAM_SAM3"] = str(sam3)
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_spec_dir)]),
    )
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    start = time.perf_counter()
    # Raises CellExecutionError with the traceback on any error. nbclient keeps a kernel it
    # did not create alive (and its connection file in /tmp): cleanup_kc shuts it down.
    client.execute(env=env, cleanup_kc=True)
    elapsed = time.perf_counter() - start
    print(f"{path.name} ({data_dir.name}): {elapsed:.1f} s")
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("output_type") == "error"
    ]
    assert not errors
    sam3_cells = [c for c in nb.cells if c.get("id") == "01-sam3"]
    if sam3_cells and sam3 is not None:  # it ran on SAM 3, not into its "not loaded" branch
        text = "".join(out.get("text", "") for out in sam3_cells[0].outputs)
        assert "no CLIP:" in text and "SAM 3 not loaded" not in text, text


def _tiny_sam3() -> Path | None:
    """A tiny random SAM 3 folder, or None when transformers has no SAM 3."""
    import transformers

    if not hasattr(transformers, "Sam3Model"):
        return None
    from tests.sam.sam3_models import tiny_sam3_folder

    return tiny_sam3_folder()
