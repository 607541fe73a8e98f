"""safetensors.py: a standard-library reader of safetensors files, the format of the engine's model
checkpoints and of its distributed checkpoints' rank files (docs/checkpoints.md, "File layout").

It checks what the engine's reader (engine/safetensors.c) checks before answering: header length
within 100 MiB and the file, a JSON object with only padding after it, each entry a known dtype, a
shape of at most 8 non-negative integer dims, `data_offsets` inside the data section of exactly the
shape's size, no two entries overlapping, no name twice, metadata values strings. Tensors come out as
flat lists of Python numbers (`values`), or as torch tensors of their shape (`tensor`) when torch is
installed.
"""
import json
import os
import struct
import sys

from .errors import ScadlesError

MAX_HEADER = 100 << 20
MAX_NDIM = 8

# name: (bytes per element, struct code, the engine's sd_st_dtype value, which the checksum hashes)
DTYPES = {
    "BOOL": (1, "?", 0), "U8": (1, "B", 1), "I8": (1, "b", 2), "I16": (2, "h", 3), "U16": (2, "H", 4),
    "F16": (2, "e", 5), "BF16": (2, "H", 6), "I32": (4, "i", 7), "U32": (4, "I", 8), "F32": (4, "f", 9),
    "F64": (8, "d", 10), "I64": (8, "q", 11), "U64": (8, "Q", 12),
}
META_DTYPE = 13  # SD_ST_DTYPE_COUNT: what a metadata pair is hashed with


class Entry:
    """One tensor of the file: dtype, shape, byte range [begin, end) of the data section."""

    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name, dtype, shape, begin, end):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end

    @property
    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    def __repr__(self):
        return f"Entry({self.name!r}, {self.dtype}, {self.shape})"


class SafeTensors:
    """A validated safetensors file held in memory: `metadata` (str -> str), `entries` (name ->
    Entry, in data order), and the tensors by name."""

    def __init__(self, path, metadata, entries, data):
        self.path = path
        self.metadata = metadata
        self.entries = entries
        self._data = data  # the data section (bytes)

    def __contains__(self, name):
        return name in self.entries

    def names(self):
        return list(self.entries)

    def entry(self, name):
        e = self.entries.get(name)
        if e is None:
            raise ScadlesError(f"{self.path}: no tensor '{name}' (it has {len(self.entries)}: "
                               f"{', '.join(list(self.entries)[:8])}{', ...' if len(self.entries) > 8 else ''})")
        return e

    def raw(self, name):
        """The tensor's bytes, little-endian, row-major."""
        e = self.entry(name)
        return self._data[e.begin:e.end]

    def values(self, name):
        """The tensor's elements as a flat list of Python numbers (floats for F16/BF16/F32/F64)."""
        e = self.entry(name)
        size, code, _ = DTYPES[e.dtype]
        vals = list(struct.unpack_from(f"<{e.numel}{code}", self._data, e.begin))
        if e.dtype == "BF16":
            vals = [struct.unpack("<f", struct.pack("<I", v << 16))[0] for v in vals]
        return vals

    def scalar(self, name):
        """The single element of a tensor of shape [] (or of one element)."""
        e = self.entry(name)
        if e.numel != 1:
            raise ScadlesError(f"{self.path}: tensor '{name}' has shape {e.shape}, not a scalar")
        return self.values(name)[0]

    def tensor(self, name):
        """The tensor as a torch.Tensor of its shape (a copy; needs torch)."""
        torch = _torch()
        e = self.entry(name)
        td = _torch_dtypes(torch).get(e.dtype)
        if td is None:
            raise ScadlesError(f"{self.path}: tensor '{name}' is {e.dtype}, which this torch has no dtype for; "
                               "read it with values()")
        if sys.byteorder != "little" and DTYPES[e.dtype][0] > 1:
            raise ScadlesError(f"{self.path}: tensor() needs a little-endian machine; read '{name}' with values()")
        raw = bytearray(self.raw(name))  # frombuffer wants a writable buffer
        t = torch.frombuffer(raw, dtype=td) if raw else torch.empty(0, dtype=td)
        return t.reshape(e.shape)

    def checksum(self):
        """The distributed checkpoint's checksum (engine/dist_checkpoint.c): the sum, modulo 2^64, of one
        64-bit hash of (name, 0xff, dtype, bytes) per tensor and of (key, 0xff, 13, value) per metadata
        pair but "checksum", as 16 hex digits. The hash is the file's checksum_algo: "xxh3-64-sum"
        (version 2 files; needs the xxhash module, Debian python3-xxhash), or none for FNV-1a (version 1
        files; pure Python, about 4 MB/s)."""
        algo = self.metadata.get("checksum_algo")
        if algo is None:
            hash_fn = _fnv
        elif algo == "xxh3-64-sum":
            try:
                import xxhash
            except ImportError as err:
                raise ScadlesError(f"{self.path}: its checksum is XXH3-64 (checksum_algo {algo}); verifying it "
                                   "needs the xxhash module (apt-get install python3-xxhash)") from err

            def hash_fn(name, dtype, data, begin, end):
                h = xxhash.xxh3_64()
                h.update(name)
                h.update(bytes([0xFF, dtype]))
                h.update(memoryview(data)[begin:end])
                return h.intdigest()
        else:
            raise ScadlesError(f"{self.path}: checksum_algo '{algo}' is not one this package reads "
                               "(xxh3-64-sum, or none for FNV-1a)")
        total = 0
        for e in self.entries.values():
            total += hash_fn(e.name.encode(), DTYPES[e.dtype][2], self._data, e.begin, e.end)
        for k, v in self.metadata.items():
            if k != "checksum":
                vb = v.encode()
                total += hash_fn(k.encode(), META_DTYPE, vb, 0, len(vb))
        return f"{total & 0xFFFFFFFFFFFFFFFF:016x}"


def _fnv(name, dtype, data, begin, end):
    mask, prime = 0xFFFFFFFFFFFFFFFF, 1099511628211
    h = 1469598103934665603
    for b in name:
        h = ((h ^ b) * prime) & mask
    h = ((h ^ 0xFF) * prime) & mask
    h = ((h ^ dtype) * prime) & mask
    for b in memoryview(data)[begin:end]:
        h = ((h ^ b) * prime) & mask
    return h


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ScadlesError(f"this needs PyTorch, which cannot be imported ({e}); on Debian: "
                           "apt-get install python3-torch, and run Debian's /usr/bin/python3") from None
    return torch


def _torch_dtypes(torch):
    names = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "F16": "float16", "BF16": "bfloat16",
             "I32": "int32", "F32": "float32", "F64": "float64", "I64": "int64"}
    return {k: getattr(torch, v) for k, v in names.items() if hasattr(torch, v)}


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"the key '{k}' appears twice")
        d[k] = v
    return d


def read_safetensors(path):
    """Reads and validates a safetensors file; a bad one raises ScadlesError naming the file and entry."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise ScadlesError(f"cannot read {path}: {e.strerror or e}") from None
    if len(blob) < 8:
        raise ScadlesError(f"{path}: {len(blob)} bytes, too short for a safetensors file (8-byte header length first)")
    (n,) = struct.unpack_from("<Q", blob, 0)
    if n > MAX_HEADER or 8 + n > len(blob):
        raise ScadlesError(f"{path}: header length {n} is past the file ({len(blob)} bytes) or over 100 MiB: "
                           "not a safetensors file, or a truncated one")
    try:
        text = blob[8:8 + n].decode("utf-8")
        obj, end = json.JSONDecoder(object_pairs_hook=_no_duplicates).raw_decode(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise ScadlesError(f"{path}: the JSON header is malformed ({e})") from None
    if text[end:].strip(" \t\r\n"):
        raise ScadlesError(f"{path}: bytes after the JSON header at byte {8 + end} (only padding spaces may follow)")
    if not isinstance(obj, dict):
        raise ScadlesError(f"{path}: the JSON header is not an object")
    data = blob[8 + n:]
    meta = obj.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ScadlesError(f"{path}: \"__metadata__\" is not an object of strings")
    entries = []
    for name, e in obj.items():
        where = f"{path}: tensor '{name}'"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise ScadlesError(f"{where}: expected an object with dtype, shape and data_offsets")
        dtype, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in DTYPES:
            raise ScadlesError(f"{where}: unknown dtype {dtype!r} (known: {' '.join(DTYPES)})")
        if (not isinstance(shape, list) or len(shape) > MAX_NDIM
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise ScadlesError(f"{where}: shape {shape!r} is not a list of at most {MAX_NDIM} non-negative integers")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= len(data)):
            raise ScadlesError(f"{where}: data_offsets {offs!r} are not [begin, end] inside the "
                               f"{len(data)}-byte data section (a truncated file?)")
        entry = Entry(name, dtype, list(shape), offs[0], offs[1])
        if entry.numel * DTYPES[dtype][0] != offs[1] - offs[0]:
            raise ScadlesError(f"{where}: {offs[1] - offs[0]} bytes for shape {shape} of {dtype} "
                               f"({entry.numel * DTYPES[dtype][0]} expected)")
        entries.append(entry)
    entries.sort(key=lambda x: (x.begin, x.end))
    last = None
    for e in entries:
        if last is not None and e.begin < last.end and e.begin < e.end:
            raise ScadlesError(f"{path}: tensors '{last.name}' and '{e.name}' overlap in the data section")
        if e.begin < e.end:
            last = e
    return SafeTensors(path, meta, {e.name: e for e in entries}, data)
