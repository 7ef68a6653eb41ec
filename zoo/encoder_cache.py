"""Vision features keyed by content: an image (or video) seen before skips the vision encoder and deepstack.

Each grid row of a call (one image or one video) is keyed by a hash of its pixel values' bytes plus its grid and
dtype, so the same placeholder token ids with another image miss. Hashing reads no pixels back to the host: on a
GPU two independent 64-bit sums of murmur-mixed 32-bit words are computed on the device and 16 bytes come back; on
the CPU it is blake2b of the bytes. Entries are evicted least recently used beyond a byte budget. The encoder runs
once per call on the images that missed (their own grid set: one more CUDA graph the first time), and a call's
outputs are assembled in order from the entries.
"""
import hashlib
from collections import OrderedDict

import torch

_M1, _M2 = 0x85EBCA6B, 0xC2B2AE35  # murmur3's 32-bit finalizer constants


def _mix32(x):
    """murmur3 fmix32 on int64 lanes holding uint32 values."""
    mask = 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = (x * _M1) & mask
    x = x ^ (x >> 13)
    x = (x * _M2) & mask
    return x ^ (x >> 16)


def content_key(pixels: torch.Tensor, grid_row) -> tuple:
    """A key for one image's (or video's) pixel values and grid."""
    raw = pixels.contiguous().view(-1).view(torch.uint8)
    if raw.device.type == "cuda":
        digest = device_digest(raw)
    else:
        digest = hashlib.blake2b(raw.numpy().tobytes(), digest_size=16).hexdigest()
    return digest, tuple(int(v) for v in grid_row), str(pixels.dtype), raw.numel()


def item_keys(pixels: torch.Tensor, grid_thw: torch.Tensor) -> list:
    """content_key of each grid row's pixels (one image or one video each), in order."""
    chunks = pixels.split(grid_thw.prod(-1).tolist())
    return [content_key(chunk, row) for chunk, row in zip(chunks, grid_thw.tolist())]


def device_digest(raw: torch.Tensor) -> tuple:
    """Two 64-bit sums of murmur-mixed 32-bit words (each word mixed with its index), computed where the bytes
    live; 16 bytes come back to the host."""
    pad = (-raw.numel()) % 4
    words = torch.cat([raw, raw.new_zeros(pad)]).view(torch.int32).long() & 0xFFFFFFFF
    idx = torch.arange(words.numel(), device=words.device)
    lanes = [_mix32(words ^ _mix32((idx * 2 + s) & 0xFFFFFFFF)) for s in (0, 1)]
    return tuple(torch.stack([(lane * (idx | 1)).sum() for lane in lanes]).tolist())


class EncoderCache:
    """LRU of per-item vision outputs (merged features [n, out], deepstack levels [n, out] each) under a byte
    budget; counts hits and misses."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.entries = OrderedDict()  # key -> (merged, levels)
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _size(entry):
        merged, levels = entry
        return sum(t.numel() * t.element_size() for t in (merged, *levels))

    def get(self, key):
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key, entry):
        if key in self.entries:
            return
        self.entries[key] = entry
        self.bytes += self._size(entry)
        while self.bytes > self.budget and self.entries:
            _, old = self.entries.popitem(last=False)
            self.bytes -= self._size(old)

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "bytes": self.bytes, "entries": len(self.entries)}

    def encode(self, encoder, pixels, grid_thw, merge: int, keys=None):
        """encoder(pixels, grid) for the items not cached; the call's (merged, levels) assembled in order.
        keys: item_keys(pixels, grid_thw) when the caller has them already."""
        patches = grid_thw.prod(-1).tolist()
        chunks = pixels.split(patches)
        keys = keys if keys is not None else item_keys(pixels, grid_thw)
        found = {}
        for key in keys:
            entry = self.get(key)
            if entry is not None:
                found[key] = entry
        missing = list(dict.fromkeys(k for k in keys if k not in found))  # each new item encoded once
        hits = sum(k in found for k in keys)
        self.hits += hits
        self.misses += len(keys) - hits
        if missing:
            rows = [keys.index(k) for k in missing]
            merged, levels = encoder(torch.cat([chunks[i] for i in rows]), grid_thw[rows])
            sizes = [patches[i] // merge ** 2 for i in rows]
            for k, m, *lv in zip(missing, merged.split(sizes), *(level.split(sizes) for level in levels)):
                found[k] = (m.clone(), [x.clone() for x in lv])  # own storage: the encoder's buffers are reused
                self.put(k, found[k])
        merged = torch.cat([found[k][0] for k in keys])
        levels = [torch.cat([found[k][1][i] for k in keys]) for i in range(len(found[keys[0]][1]))]
        return merged, levels
