"""Image loading and prompt validation: every bad input gets a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from grounded_sam.inputs import as_boxes, as_points, load_image, parse_prompt


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize(
    ("mode", "value"),
    [("L", 77), ("RGB", (10, 20, 30)), ("P", 3), ("CMYK", (0, 0, 0, 0)), ("I;16", 65535)],
)
def test_modes_become_rgb_uint8(tmp_path, mode, value):
    img = Image.new(mode, (7, 5), value)
    arr = load_image(_save(img, tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg"))
    assert arr.shape == (5, 7, 3) and arr.dtype == np.uint8
    assert arr.flags.writeable


def test_16_bit_scaled_to_8_bit(tmp_path):
    img = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert load_image(img).max() == 255


def test_rgba_composited_on_white(tmp_path):
    img = Image.new("RGBA", (3, 3), (255, 0, 0, 0))
    assert (load_image(_save(img, tmp_path / "a.png")) == 255).all()


def test_exif_rotation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "r.jpg"
    img.save(path, exif=exif)
    assert load_image(path).shape == (40, 20, 3)


def test_array_passthrough_and_grayscale():
    arr = np.zeros((6, 8, 3), dtype=np.uint8)
    assert load_image(arr).shape == (6, 8, 3)
    assert load_image(np.zeros((6, 8), dtype=np.uint8)).shape == (6, 8, 3)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda p: p / "missing.jpg", FileNotFoundError, "not found"),
        (lambda p: (p / "t.txt").write_text("hello") and p / "t.txt", ValueError, "not an image"),
        (lambda p: p, ValueError, "directory"),
    ],
)
def test_bad_paths(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        load_image(make(tmp_path))


def test_truncated_image(tmp_path):
    path = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    data = path.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((4, 4, 3), dtype=np.float32), "dtype uint8"),
        (np.zeros((4, 4, 5), dtype=np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((2, 4, 4, 3), dtype=np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "zero pixels"),
    ],
)
def test_bad_arrays(arr, match):
    with pytest.raises(ValueError, match=match):
        load_image(arr)


def test_zero_pixel_pil():
    with pytest.raises(ValueError, match="zero pixels"):
        load_image(Image.new("RGB", (0, 5)))


def test_wrong_type():
    with pytest.raises(TypeError, match="image path"):
        load_image(42)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("dog", ["dog"]),
        ("date, fig,hazelnut", ["date", "fig", "hazelnut"]),
        ("  the   red car ,", ["the red car"]),
        (["cat", "Cat", "dog"], ["cat", "dog"]),
    ],
)
def test_parse_prompt(prompt, expected):
    assert parse_prompt(prompt) == expected


@pytest.mark.parametrize("prompt", ["", "   ", " , ,", []])
def test_empty_prompt(prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        parse_prompt(prompt)


@pytest.mark.parametrize("prompt", [None, 3, b"dog", ["dog", 5]])
def test_non_string_prompt(prompt):
    with pytest.raises(TypeError):
        parse_prompt(prompt)


@pytest.mark.parametrize(
    ("points", "labels", "match"),
    [
        ([[5, 5], [200, 5]], None, "outside the image"),
        ([[5, -1]], None, "outside the image"),
        ([[1, 2, 3]], None, r"shape \(N, 2\)"),
        ([[1, 2]], [1, 0], "2 labels"),
        ([[1, 2]], [3], "1 \\(foreground\\) or 0"),
        ([[np.nan, 2]], None, "NaN"),
    ],
)
def test_bad_points(points, labels, match):
    with pytest.raises(ValueError, match=match):
        as_points(points, labels, (50, 100))


@pytest.mark.parametrize(
    ("boxes", "match"),
    [
        ([10, 10, 5, 20], "x2 < x1"),
        ([10, 30, 20, 20], "y2 < y1"),
        ([0, 0, 101, 20], "outside the image"),
        ([[1, 2, 3]], r"shape \(N, 4\)"),
    ],
)
def test_bad_boxes(boxes, match):
    with pytest.raises(ValueError, match=match):
        as_boxes(boxes, (50, 100))


def test_good_prompts():
    pts, labels = as_points([[0, 0], [100, 50]], [1, 0], (50, 100))
    assert pts.shape == (2, 2) and labels.tolist() == [1, 0]
    assert as_boxes([0, 0, 100, 50], (50, 100)).shape == (1, 4)


# -- phrases: validated and normalised once ----------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        ("\udcff", "lone surrogate U\\+DCFF"),
        ("cat, \udcffx", "lone surrogate"),
        (["dog", "a\ud800b"], "lone surrogate U\\+D800"),
        ("a\x00b", "control character U\\+0000"),
        ("red\x1bapple", "control character U\\+001B"),
        ("x" * 301, "has 301 characters; the limit is 300"),
        (",".join(f"p{i}" for i in range(129)), "More than 128 phrases"),
        ("y" * 200_000, "the limit is"),
    ],
)
def test_bad_phrases_are_clear_value_errors(prompt, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_prompt(prompt)
    str(info.value).encode("utf-8")  # the message itself is printable text


def test_phrases_normalised():
    # NFC: "e" + combining grave == precomposed "è"; tabs and newlines are whitespace
    assert parse_prompt("cre\u0300me\tbrûlée, crème  brûlée\n") == ["crème brûlée"]
    assert parse_prompt(",".join(f"p{i}" for i in range(128)))[-1] == "p127"
    assert parse_prompt("猫, 🐱") == ["猫", "🐱"]


# -- numeric knobs --------------------------------------------------------------------------


def test_numpy_scalars_are_numbers():
    from grounded_sam.grounding.options import QueryOptions
    from grounded_sam.inputs import check_int, check_number

    assert check_number("threshold", np.float32(0.25), 0, 1) == pytest.approx(0.25)
    assert check_int("top_k", np.int64(2), 1) == 2
    opts = QueryOptions(np.float64(0.1), np.int32(3), np.uint8(1), np.int16(5))
    assert (opts.threshold, opts.top_k, opts.refine, opts.min_region_area) == (
        pytest.approx(0.1),
        3,
        1,
        5,
    )


@pytest.mark.parametrize(
    ("knobs", "match"),
    [
        ((True, 1, 0, 0), "threshold must be a number, got True"),
        ((0.3, True, 0, 0), "top_k must be an integer, got True"),
        ((0.3, 2.0, 0, 0), "top_k must be an integer, got 2.0"),
        ((0.3, 1, np.bool_(True), 0), "refine must be an integer"),
        ((0.3, 1, 0, -5), "min_region_area must be >= 0, got -5"),
        ((float("nan"), 1, 0, 0), "threshold must be a number, got NaN"),
        ((1.5, 1, 0, 0), "threshold must be in \\[0, 1\\], got 1.5"),
        ((0.3, 1, 10**9, 0), "refine must be in \\[0, 8\\], got 1000000000 \\(each pass"),
        ((0.3, 0, 0, 0), "top_k must be in"),
        ((0.3, 1, -1, 0), "refine must be in"),
    ],
)
def test_bad_knobs(knobs, match):
    from grounded_sam.grounding.options import QueryOptions

    with pytest.raises(ValueError, match=match):  # (threshold, top_k, refine, min_region_area)
        QueryOptions(*knobs)


def test_permission_denied_is_a_permission_error(tmp_path, monkeypatch):
    import os

    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the open fail as it does for users

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(PermissionError, match="Permission denied reading .*locked.png"):
        load_image(path)


def test_image_pixel_limit_in_the_api(tmp_path):
    from grounded_sam import limits

    with pytest.raises(ValueError, match="the limit is 50,000,000 pixels"):
        load_image(np.zeros((1, limits.MAX_IMAGE_SIDE + 1), dtype=np.uint8))
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (8000, 7000, 3), (0, 0, 0))
    with pytest.raises(ValueError, match="8000 px; the limit"):
        load_image(big)


def test_decompression_bomb_is_named(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # 2.5 KB on disk, 400 Mpx decoded
    with pytest.raises(ValueError, match="too large|decompression bomb"):
        load_image(path)
