"""Label Studio's brush RLE: a vector written from the format's spec, round trips, the SDK."""

from __future__ import annotations

import numpy as np
import pytest

from grounded_sam.serve.brush import decode_rle, mask_to_rle, rle_to_mask


def _bytes_of(bits: str) -> list[int]:
    bits += "0" * (8 - len(bits) % 8)  # at least one padding bit, as label_studio_sdk pads
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


def test_a_vector_written_by_hand_from_the_format() -> None:
    # 1 x 3 mask [0, 1, 1] -> RGBA bytes [0]*4 + [255]*8: two runs (4 and 8 values)
    header = f"{12:032b}" + f"{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    run_zeros = "1" + "00" + f"{4 - 1:03b}" + f"{0:08b}"  # a run, 3-bit length field
    run_ones = "1" + "00" + f"{8 - 1:03b}" + f"{255:08b}"
    want = _bytes_of(header + run_zeros + run_ones)
    assert mask_to_rle(np.array([[0, 1, 1]], dtype=bool)) == want
    # 1 x 5 of ones = a run of 20: the 8-bit length field
    run = "1" + "10" + f"{20 - 1:08b}" + f"{255:08b}"
    want = _bytes_of(f"{20:032b}" + f"{7:05b}" + "0010001101111111" + run)
    assert mask_to_rle(np.ones((1, 5), dtype=bool)) == want


def test_runs_of_every_length_field_and_long_runs_round_trip() -> None:
    rng = np.random.default_rng(0)
    masks = [
        np.zeros((3, 4), bool),
        np.ones((300, 300), bool),  # 360,000 values: runs split at 65,536
        rng.random((37, 53)) > 0.5,  # many short runs
        np.repeat(rng.random((9, 1)) > 0.5, 70, axis=1),  # runs of 280 values and more
    ]
    for n in (1, 2, 3, 4, 5, 63, 64, 65):  # runs of 4, 8, 12, 16, 20, 252, 256, 260 values
        m = np.zeros((1, 200), bool)
        m[0, 10 : 10 + n] = True
        masks.append(m)
    for mask in masks:
        rle = mask_to_rle(mask)
        assert all(0 <= v <= 255 for v in rle)
        assert np.array_equal(rle_to_mask(rle, *mask.shape), mask)
        flat = decode_rle(rle)
        assert flat.size == mask.size * 4 and set(np.unique(flat)) <= {0, 255}


def test_the_decoder_reads_literal_chunks_too() -> None:
    header = f"{3:032b}" + f"{7:05b}" + "0010001101111111"
    literal = "0" + "00" + f"{3 - 1:03b}" + f"{1:08b}" + f"{2:08b}" + f"{3:08b}"
    assert decode_rle(_bytes_of(header + literal)).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="ends before"):
        decode_rle(_bytes_of(header)[:7])
    with pytest.raises(ValueError, match="holds"):
        rle_to_mask(mask_to_rle(np.ones((2, 2), bool)), 3, 3)


def test_label_studio_sdk_decodes_our_rle_when_installed() -> None:
    brush = pytest.importorskip("label_studio_sdk.converter.brush")
    rng = np.random.default_rng(1)
    mask = rng.random((41, 29)) > 0.6
    ours = mask_to_rle(mask)
    assert ours == brush.mask2rle((mask * 255).astype(np.uint8))
    layer = np.reshape(brush.decode_rle(ours), (41, 29, 4))[:, :, 3]
    assert np.array_equal(layer > 0, mask)
