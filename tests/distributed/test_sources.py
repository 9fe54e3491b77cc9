"""Listing images for a Ray job: the same images as ``label``, text files of paths, URIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from grounded_sam.labeling import find_images
from tests.cli.conftest import synthetic_image

pytest.importorskip("pyarrow", reason="pyarrow comes with ray[data]")

from grounded_sam.distributed.sources import list_images  # noqa: E402


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    synthetic_image(root / "b.JPG", 32, 32, seed=1)
    synthetic_image(root / "a.png", 32, 40, seed=2)
    synthetic_image(root / "sub" / "c.webp", 40, 32, seed=3)
    synthetic_image(root / ".hidden" / "x.jpg", 32, 32)
    synthetic_image(root / "out" / "y.jpg", 32, 32)
    (root / "notes.txt").write_text("not an image")
    (root / ".dot.jpg").write_bytes(b"")
    return root


def test_folder_lists_what_label_lists(images: Path) -> None:
    listing = list_images(images, exclude=[images / "out"])
    expected = find_images(images, exclude=[images / "out"])
    assert [f.rel for f in listing.files] == [p.relative_to(images).as_posix() for p in expected]
    assert [f.rel for f in listing.files] == ["a.png", "b.JPG", "sub/c.webp"]
    assert listing.local and all(f.size == (images / f.rel).stat().st_size for f in listing.files)


def test_earlier_datasets_under_the_folder_are_skipped_as_label_skips_them(
    images: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from grounded_sam.labeling.scan import prepare_labeling
    from grounded_sam.labeling.state import run_file

    old = images / "sub" / "old_dataset"
    synthetic_image(old / "images" / "z.jpg", 32, 32)
    run_file(old).parent.mkdir(parents=True)
    run_file(old).write_text("{}")
    with caplog.at_level("WARNING"):
        listing = list_images(images, exclude=[images / "out"])
    assert "old_dataset" in caplog.text and "earlier labeling run" in caplog.text
    expected = prepare_labeling(images, images / "out")
    assert [f.rel for f in listing.files] == [p.relative_to(images).as_posix() for p in expected]
    assert [f.rel for f in listing.files] == ["a.png", "b.JPG", "sub/c.webp"]
    # Through a URI the same folder is skipped too.
    assert "sub/old_dataset/images/z.jpg" not in [f.rel for f in list_images(images.as_uri()).files]


def test_text_file_of_paths(images: Path, tmp_path: Path) -> None:
    listing_file = images / "list.txt"
    listing_file.write_text(
        f"# comment\n\na.png\n{images / 'sub' / 'c.webp'}\nnotes.txt\na.png\n"
    )
    listing = list_images(listing_file)
    assert [f.rel for f in listing.files] == ["a.png", "sub/c.webp"]  # relative to common root
    (tmp_path / "bad.txt").write_text(f"{images / 'missing.jpg'}\n")
    with pytest.raises(FileNotFoundError, match="1 image.*do not exist.*missing.jpg"):
        list_images(tmp_path / "bad.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="lists no image paths"):
        list_images(tmp_path / "empty.txt")


def test_uri_is_listed_and_fetched_through_pyarrow(images: Path, tmp_path: Path) -> None:
    listing = list_images(images.as_uri())
    assert not listing.local  # read through the filesystem, copied at export
    assert [f.rel for f in listing.files] == ["a.png", "b.JPG", "out/y.jpg", "sub/c.webp"]
    image = next(f for f in listing.files if f.rel == "sub/c.webp")
    local = listing.fetch(image, tmp_path / "cache")
    assert local == tmp_path / "cache" / "sub" / "c.webp"
    assert local.read_bytes() == (images / "sub" / "c.webp").read_bytes()


def test_missing_or_empty_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images found"):
        list_images(tmp_path / "empty")
