"""Label Studio's brush RLE: the ``rle`` list of a ``brushlabels`` result.

Label Studio stores a brush mask as the RGBA pixels of a W x H layer (4 bytes per pixel,
row-major; the mask in every channel, 0 or 255), packed with the ``rle-pack`` bit format of
thi.ng/umbrella, which its frontend decodes. A stream of bits, most significant first:

* header: 32 bits value count (W * H * 4), 5 bits word size - 1 (7: bytes), four 4-bit
  run-length field sizes - 1 (the sizes are 3, 4, 8 and 16 bits);
* then chunks until ``count`` values are produced: 1 bit kind (1: a run of one value
  repeated, 0: literal values), 2 bits choosing one of the four size fields, that many
  bits of ``length - 1``, then one word (a run) or ``length`` words (literals);
* zero bits pad the stream to whole bytes; the bytes are the ``rle`` list of ints.

:func:`mask_to_rle` writes what ``label_studio_sdk.converter.brush.mask2rle`` writes for a
0/255 mask: only runs (a pixel is 4 equal bytes, so no run is shorter than 4), each with the
smallest size field that holds it, runs longer than 65536 split into 65536-value chunks, and
at least one padding bit (a stream that fills its last byte gets a zero byte more).
:func:`rle_to_mask` reads any stream of the format (literals too), as the frontend does.

Thread safety: pure functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_rle", "mask_to_rle", "rle_to_mask"]

_SIZES = (3, 4, 8, 16)
_WORD = 8


def _bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The bits (uint8 0/1, MSB first) of each value in its width, concatenated."""
    total = int(widths.sum())
    field = np.repeat(np.arange(len(values)), widths)
    starts = np.cumsum(widths) - widths
    pos = np.arange(total) - np.repeat(starts, widths)
    shift = (widths[field] - 1 - pos).astype(np.uint64)
    return ((values[field].astype(np.uint64) >> shift) & np.uint64(1)).astype(np.uint8)


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Encode a mask as Label Studio's brush RLE.

    Args:
        mask: (H, W) bool, or uint8 (nonzero is inside; written as 255).

    Returns:
        The ``rle`` byte values (ints 0-255) of a ``brushlabels`` result's ``value``.

    Raises:
        ValueError: Not a 2-D mask, or more than 2**32 / 4 pixels.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"A brush mask must be 2-D (H, W), got shape {mask.shape}.")
    flat = np.where(mask.reshape(-1) != 0, 255, 0).astype(np.uint8)
    count = flat.size * 4
    if count >= 2**32:
        raise ValueError(f"A {mask.shape} mask is too large for Label Studio's brush RLE.")
    header_vals = [count, _WORD - 1, *(s - 1 for s in _SIZES)]
    header_widths = [32, 5, 4, 4, 4, 4]
    if flat.size:
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        starts = np.concatenate([[0], change])
        lengths = np.diff(np.concatenate([starts, [flat.size]])) * 4
        run_values = flat[starts]
        full, rest = np.divmod(lengths, 1 << 16)
        pieces = full + (rest > 0)
        value = np.repeat(run_values, pieces)
        # each run: `full` chunks of 65536, then the rest (when nonzero), in order
        last = np.cumsum(pieces) - 1
        chunk = np.full(int(pieces.sum()), 1 << 16, dtype=np.int64)
        has_rest = rest > 0
        chunk[last[has_rest]] = rest[has_rest]
        # the size field is chosen by the run's length (a run over 256 uses 16 bits for all
        # of its chunks, its last one too, as label_studio_sdk writes it)
        run_index = np.searchsorted(np.array([8, 16, 256]), lengths, side="left")  # 0..3
        index = np.repeat(run_index, pieces)
        size = np.asarray(_SIZES)[index]
        n = len(chunk)
        vals = np.stack([np.ones(n, np.int64), index, chunk - 1, value.astype(np.int64)], 1)
        widths = np.stack([np.ones(n, np.int64), np.full(n, 2), size, np.full(n, _WORD)], 1)
        body_vals, body_widths = vals.reshape(-1), widths.reshape(-1)
    else:
        body_vals = body_widths = np.zeros(0, np.int64)
    bits = _bits(
        np.concatenate([np.asarray(header_vals, np.int64), body_vals]),
        np.concatenate([np.asarray(header_widths, np.int64), body_widths]),
    )
    pad = 8 - bits.size % 8  # 1..8: as label_studio_sdk, always at least one padding bit
    bits = np.concatenate([bits, np.zeros(pad, np.uint8)])
    return np.packbits(bits).tolist()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > self.bits.size:
            raise ValueError("The brush RLE ends before its declared pixel count.")
        chunk = self.bits[self.pos : self.pos + n].astype(np.int64)
        self.pos += n
        return int(chunk @ (1 << np.arange(n - 1, -1, -1, dtype=np.int64))) if n else 0


def decode_rle(rle: list[int] | bytes) -> np.ndarray:
    """Decode a brush RLE stream to its flat values (uint8; RGBA bytes for a brush layer).

    Raises:
        ValueError: Not a byte list, or a stream shorter than its header says.
    """
    try:
        data = bytes(rle)
    except (TypeError, ValueError):
        raise ValueError("A brush RLE must be a list of byte values (ints 0-255).") from None
    reader = _Reader(data)
    count = reader.read(32)
    word = reader.read(5) + 1
    sizes = [reader.read(4) + 1 for _ in range(4)]
    if count > 4 * 20_000 * 20_000:
        raise ValueError(f"A brush RLE of {count:,} values is larger than any accepted image.")
    out = np.zeros(count, dtype=np.uint8 if word <= 8 else np.uint32)
    i = 0
    while i < count:
        repeat = reader.read(1)
        j = min(count, i + 1 + reader.read(sizes[reader.read(2)]))
        if repeat:
            out[i:j] = reader.read(word)
        else:
            for k in range(i, j):
                out[k] = reader.read(word)
        i = j
    return out


def rle_to_mask(rle: list[int] | bytes, height: int, width: int) -> np.ndarray:
    """A brush RLE as an (H, W) bool mask (its alpha channel, nonzero inside).

    Raises:
        ValueError: The stream does not hold ``height * width`` RGBA pixels.
    """
    flat = decode_rle(rle)
    if flat.size != height * width * 4:
        raise ValueError(
            f"The brush RLE holds {flat.size} values, not {height}x{width}x4 = "
            f"{height * width * 4}."
        )
    return flat.reshape(height, width, 4)[:, :, 3] != 0
