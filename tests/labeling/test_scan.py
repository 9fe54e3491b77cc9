"""The job's images: found recursively in any case, folders checked before any model."""

from __future__ import annotations

from pathlib import Path

import pytest

from grounded_sam.labeling import (
    find_images,
    prepare_labeling,
)


def test_find_images_recursive_any_case_sorted(image_folder: Path, tmp_path: Path) -> None:
    (image_folder / ".hidden").mkdir()
    (image_folder / ".hidden" / "x.jpg").write_bytes(b"")
    (image_folder / "out").mkdir()
    (image_folder / "out" / "y.jpg").write_bytes(b"")
    found = find_images(image_folder, exclude=[image_folder / "out"])
    rels = [p.relative_to(image_folder).as_posix() for p in found]
    assert rels == ["a.jpg", "b.PNG", "sub/a.png", "sub/broken.jpg", "sub/c.webp"]


def test_prepare_labeling_rejects_bad_folders(image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        prepare_labeling(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="not a folder"):
        prepare_labeling(image_folder / "a.jpg", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images found"):
        prepare_labeling(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        prepare_labeling(image_folder, tmp_path / "file.txt")
    with pytest.raises(ValueError, match="contains the images folder"):
        prepare_labeling(image_folder, image_folder.parent)
    # An output folder inside the images folder is fine and is not scanned.
    assert len(prepare_labeling(image_folder, image_folder / "dataset")) == 5
