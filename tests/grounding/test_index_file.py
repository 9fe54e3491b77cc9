"""Crafted index files (issues 22 and 23): no file is trusted.

Each case starts from a real tiny index (``torch.load`` of a saved one), edits the dict and
``torch.save``-s it: zip bombs and inflated archives, stride-0 giants (under a memory cap,
in a subprocess), stripped and wrong-shaped encoder features of HQ-SAM and SAM 2, another
embedding width or CLIP width, inconsistent sizes. Each must end in one ValueError naming
the file and the field, before any tensor is materialised at a claimed size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from grounded_sam import EverythingSettings, GroundedSAM
from grounded_sam.grounding import index_file
from grounded_sam.grounding.index import ImageIndex, expected_encoder_shapes
from grounded_sam.grounding.index_file import MAX_INDEX_BYTES

REPO = Path(__file__).resolve().parents[2]


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    image[10:30, 10:40] = (250, 200, 20)
    return image


@pytest.fixture(scope="module")
def saved(tiny_gs, tmp_path_factory) -> Path:
    index = tiny_gs.index(_image())
    assert len(index) > 0
    return index.save(tmp_path_factory.mktemp("index") / "a.gsindex")


def _crafted(path: Path, tmp_path: Path, edit) -> Path:
    blob = torch.load(path, weights_only=True)
    edit(blob)
    bad = tmp_path / "bad.gsindex"
    torch.save(blob, bad)
    return bad


# -- the archive ------------------------------------------------------------------------------


def test_the_bound_is_the_largest_legal_index() -> None:
    """The derivation in index_file: image + encoder outputs + 1,000 proposals at L = 256."""
    from grounded_sam import limits

    image = limits.MAX_IMAGE_PIXELS * 3
    per_proposal = (1 + limits.MAX_REFINE + 1) * 256 * 256 * 4 + 256 * 256  # logits, frame
    assert image + 1_000 * per_proposal < MAX_INDEX_BYTES < 4 * 2**30


def test_an_archive_that_would_inflate_past_the_bound_is_refused(
    saved, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(index_file, "MAX_INDEX_BYTES", 0)
    monkeypatch.setattr(index_file, "_ARCHIVE_SLACK", 1000)
    with pytest.raises(
        ValueError,
        match=r"a\.gsindex would inflate to 0\.\d\d GB; an index is at most 0\.00 GB: not a "
        "grounded_sam index",
    ):
        ImageIndex.load(saved)


def test_tensors_claiming_more_than_the_bound_are_refused(saved, monkeypatch) -> None:
    monkeypatch.setattr(index_file, "MAX_INDEX_BYTES", 1000)  # the archive still passes
    with pytest.raises(ValueError, match=r"a\.gsindex is not a valid.*the tensors claim"):
        ImageIndex.load(saved)


@pytest.mark.timeout(60)
def test_a_deflate_bomb_member_is_refused_without_inflating(saved, tmp_path) -> None:
    """A 512 MiB tensor record compressed to ~2 MB (issue 23: 2 GiB in 3.1 MB) appended to a
    real index: only the zip directory is read, and torch.save never compresses."""
    bomb = tmp_path / "bomb.gsindex"
    bomb.write_bytes(saved.read_bytes())
    with zipfile.ZipFile(bomb, "a") as archive:
        prefix = archive.namelist()[0].split("/")[0]
        info = zipfile.ZipInfo(f"{prefix}/data/999")
        info.compress_type = zipfile.ZIP_DEFLATED
        info._compresslevel = 1  # type: ignore[attr-defined]
        with archive.open(info, "w", force_zip64=True) as member:
            chunk = bytes(64 << 20)
            for _ in range(8):
                member.write(chunk)
    assert bomb.stat().st_size < 8 << 20
    with pytest.raises(ValueError, match=r"bomb\.gsindex has compressed members.*not a grounded"):
        ImageIndex.load(bomb)


def test_a_file_that_is_not_an_archive_is_refused(tmp_path) -> None:
    bad = tmp_path / "x.gsindex"
    bad.write_bytes(b"\x80\x04not a zip at all" * 100)
    with pytest.raises(ValueError, match=r"x\.gsindex is not a grounded_sam index file"):
        ImageIndex.load(bad)


def test_an_unknown_field_is_refused(saved, tmp_path) -> None:
    bad = _crafted(saved, tmp_path, lambda b: b.update(extra=torch.zeros(10)))
    with pytest.raises(ValueError, match=r"bad\.gsindex is not a valid.*'extra' is not an index"):
        ImageIndex.load(bad)


# -- layout: stride-0 and overlapping views ---------------------------------------------------


def test_a_stride_0_view_is_refused_naming_the_field(saved, tmp_path) -> None:
    def edit(b):
        h, w, _ = b["image"].shape
        b["image"] = b["image"][:1, :1].expand(h, w, 3)  # one pixel claiming the image

    with pytest.raises(ValueError, match=r"bad\.gsindex .*'image' is a view whose elements"):
        ImageIndex.load(_crafted(saved, tmp_path, edit))


def test_dense_permuted_tensors_still_load(saved) -> None:
    """What we write is dense but not always contiguous (SAM's embedding is channels-last):
    such files (every file written so far) load."""
    blob = torch.load(saved, weights_only=True)
    assert not blob["embeddings"].is_contiguous()
    index = ImageIndex.load(saved)
    torch.testing.assert_close(index.embedding.embeddings, blob["embeddings"])


GIANTS = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from grounded_sam import ImageIndex

    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    cap = vm + (1 << 30)  # 1 GiB above what is mapped now; each giant claims more
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    out = {}
    for path in sys.argv[1:]:
        try:
            ImageIndex.load(path)
            out[path] = "no error"
        except ValueError as exc:
            out[path] = "ValueError: " + str(exc)
        except BaseException as exc:  # MemoryError, RuntimeError from the allocator, ...
            out[path] = f"{type(exc).__name__}: {exc}"[:300]
    print(json.dumps(out))
    """
)


def _stride0_proposals(n: int):
    """Every per-proposal tensor a stride-0 view claiming ``n`` rows (issue 22: 1.6 GB)."""

    def edit(b):
        def grow(t):
            return t[:1].expand(n, *t.shape[1:])

        b["region_embeddings"] = grow(b["region_embeddings"])
        b["frame_masks"] = grow(b["frame_masks"])
        for key in ("low_res_logits", "crop_index", "boxes", "predicted_iou"):
            b["proposals"][key] = grow(b["proposals"][key])
        for key in ("stability_score", "point_coords"):
            b["proposals"][key] = grow(b["proposals"][key])
        b["box_decodes"] = {}

    return edit


@pytest.mark.timeout(120)
def test_stride_0_giants_under_a_memory_cap_are_clean_errors(saved, tmp_path) -> None:
    cases = {n: _crafted(saved, tmp_path, _stride0_proposals(n)) for n in (100_000,)}
    assert cases[100_000].stat().st_size < 2 << 20  # a small file claiming gigabytes
    logits = torch.load(cases[100_000], weights_only=True)["proposals"]["low_res_logits"]
    assert logits.numel() * logits.element_size() > 1 << 30
    proc = subprocess.run(
        [sys.executable, "-c", GIANTS, *map(str, cases.values())],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for path in cases.values():
        assert got[str(path)].startswith("ValueError: "), got[str(path)]
        assert "is a view whose elements overlap" in got[str(path)]
        assert "bad.gsindex is not a valid index file: field '" in got[str(path)]


# -- consistent sizes, and the loading engine's models ----------------------------------------


def test_input_size_inconsistent_with_the_image_is_refused(saved, tmp_path) -> None:
    bad = _crafted(saved, tmp_path, lambda b: b.update(input_size=[1, 1]))
    with pytest.raises(ValueError, match=r"bad\.gsindex .*'input_size' is \(1, 1\), but an image"):
        ImageIndex.load(bad)


def test_an_embedding_of_another_shape_is_refused_by_the_engine(tiny_gs, saved, tmp_path) -> None:
    def edit(b):
        e = b["embeddings"]
        b["embeddings"] = torch.cat([e, e[:, :1]], dim=1)  # one channel more

    bad = _crafted(saved, tmp_path, edit)
    ImageIndex.load(bad)  # well-bounded: only the models can tell
    with pytest.raises(ValueError, match=r"bad\.gsindex does not fit this engine: field "
                       r"'embeddings' has shape \(1, 33,"):  # fmt: skip
        tiny_gs.load_index(bad)
    with pytest.raises(ValueError, match="'embeddings' has shape"):
        tiny_gs.query(ImageIndex.load(bad), "square")


def test_features_a_sam_model_does_not_take_are_refused(tiny_gs, saved, tmp_path) -> None:
    bad = _crafted(saved, tmp_path, lambda b: b.update(features=[torch.zeros(1, 2, 2, 2)]))
    with pytest.raises(ValueError, match=r"bad\.gsindex does not fit.*'features' holds 1"):
        tiny_gs.load_index(bad)


def test_region_embeddings_of_another_width_are_refused(tiny_gs, saved, tmp_path) -> None:
    width = tiny_gs.scorer.embed_dim

    def edit(b):
        r = b["region_embeddings"]
        b["region_embeddings"] = torch.cat([r, r[:, :3]], dim=1)

    bad = _crafted(saved, tmp_path, edit)
    with pytest.raises(ValueError, match=rf"bad\.gsindex does not fit this engine: field "
                       rf"'region_embeddings' is {width + 3} wide.*embeds {width}"):  # fmt: skip
        tiny_gs.load_index(bad)
    with pytest.raises(ValueError, match="'region_embeddings' is .* wide"):  # not mat1 and mat2
        tiny_gs.query(ImageIndex.load(bad), "square")
    assert len(tiny_gs.query(tiny_gs.load_index(saved), "square")) > 0


@pytest.fixture(scope="module")
def family_engines(tiny_gs, tmp_path_factory) -> dict[str, GroundedSAM]:
    from grounded_sam.sam.factory import load_predictor
    from grounded_sam.sam.tiny import save_tiny_sam2, save_tiny_sam_hq

    folder = tmp_path_factory.mktemp("families")
    out = {"sam": tiny_gs}
    for name, save in (("sam_hq", save_tiny_sam_hq), ("sam2", save_tiny_sam2)):
        predictor = load_predictor(save(folder / name), "cpu", torch.float32)
        out[name] = GroundedSAM(
            predictor,
            tiny_gs.scorer,
            proposal_settings=EverythingSettings(
                points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
            ),
            threshold=0.0,
        )
    return out


@pytest.mark.parametrize("family", ["sam", "sam_hq", "sam2"])
def test_expected_shapes_are_what_the_encoder_gives(family_engines, family) -> None:
    predictor = family_engines[family].predictor
    embedding = predictor.encode(_image())
    emb, feats = expected_encoder_shapes(predictor)
    assert emb == tuple(embedding.embeddings.shape)
    assert feats == tuple(tuple(f.shape) for f in embedding.features)


def _strip(b):
    b["features"] = []


def _shrink_first(b):
    f = b["features"][0]
    b["features"][0] = f[..., : f.shape[-1] // 2].clone()


def _swap_levels(b):
    b["features"] = [b["features"][1], b["features"][0]]


def _double_first(b):
    b["features"][0] = b["features"][0].double()


@pytest.mark.parametrize(
    ("family", "edit", "match"),
    [
        ("sam_hq", _strip, "'features' holds 0 .* needs 1: HQ-SAM's early ViT features"),
        ("sam_hq", _shrink_first, r"'features\[0\]' has shape .* but this SAM model's is"),
        ("sam_hq", _double_first, r"'features\[0\]' is torch.float64 but the embedding is"),
        ("sam2", _strip, "'features' holds 0 .* needs 2: SAM 2's two high-resolution"),
        ("sam2", _swap_levels, r"'features\[0\]' has shape .* but this SAM model's is"),
    ],
    ids=["hq-stripped", "hq-shape", "hq-dtype", "sam2-stripped", "sam2-swapped"],
)
def test_family_features_are_checked_against_the_model(
    family_engines, tmp_path, family, edit, match
) -> None:
    gs = family_engines[family]
    path = gs.index(_image()).save(tmp_path / "good.gsindex")
    assert len(gs.load_index(path).embedding.features) > 0  # the family's own file loads
    bad = _crafted(path, tmp_path, edit)
    with pytest.raises(ValueError, match=rf"bad\.gsindex does not fit this engine: .*{match}"):
        gs.load_index(bad)
    with pytest.raises(ValueError, match=match.split(" .*")[0]):
        gs.query(ImageIndex.load(bad), "square")  # not a conv channel mismatch
