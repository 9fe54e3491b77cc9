"""ONNX export of a SAM 3 checkpoint: one clear line naming what is supported, nothing loaded.

SAM 3 is a text-prompted detector (a text-grounder family of the registry) with no ONNX
exporter; its checkpoint is refused from its config, before its weights are read (the Hub's
is 3.4 GB and gated), and nothing is written. Needs no onnx package: the refusal comes first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grounded_sam.deploy.onnx import export_sam_onnx
from tests.sam.sam3_models import tiny_sam3_folder

SUPPORTED = (
    "ONNX export supports the SAM families (model_type 'sam', 'sam_hq', 'sam2', 'sam2_video')"
)


def _no_weights(*args, **kwargs):
    raise AssertionError("the SAM 3 weights were loaded before the refusal")


def test_a_sam3_folder_is_refused_before_its_weights_load(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("grounded_sam.sam.loading.load_sam_model", _no_weights)
    folder = tiny_sam3_folder()
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        export_sam_onnx(folder, out)
    message = str(info.value)
    assert message.startswith(SUPPORTED) and "\n" not in message
    assert f"{str(folder)!r} is a SAM 3 checkpoint ('sam3')" in message
    assert "export a SAM-family checkpoint instead (e.g. 'vit_b' or 'sam2.1_t'" in message
    assert not out.exists()


def test_a_loaded_sam3_model_is_refused_the_same_way(tmp_path: Path) -> None:
    import transformers

    model = transformers.Sam3Model.from_pretrained(tiny_sam3_folder()).eval()
    with pytest.raises(ValueError) as info:
        export_sam_onnx(model, tmp_path / "out")
    assert str(info.value).startswith(SUPPORTED)
    assert "'Sam3Model' is a SAM 3 checkpoint ('sam3')" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_the_command_says_it_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from grounded_sam.cli.main import main

    monkeypatch.setattr("grounded_sam.sam.loading.load_sam_model", _no_weights)
    out = tmp_path / "onnx"
    assert main(["export-onnx", "--sam", str(tiny_sam3_folder()), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"grounded-sam: error: {SUPPORTED}")
    assert "SAM 3 checkpoint ('sam3')" in err[0] and "--sam vit_b" in err[0]
    assert not out.exists()
