"""A TensorFlow checkpoint reader with struct and numpy only (no TensorFlow).

Why our own: the musicnn weights ship as TensorFlow-1 checkpoints, and TensorFlow must not become a
dependency. A checkpoint is two files:

- `<prefix>.index`: a LevelDB-format table (data blocks of prefix-compressed key/value entries, an
  index block pointing at them, a footer with the index block's handle and a magic number). The key
  "" holds the BundleHeaderProto; every other key is a variable name whose value is a serialised
  `BundleEntryProto` (dtype, shape, shard, offset, size, crc32c). No block is compressed.
- `<prefix>.data-00000-of-00001`: the raw little-endian tensors at those offsets.

Every block's trailer checksum and every tensor's crc32c (both the masked CRC-32C that LevelDB and
TensorFlow use) are checked, so a corrupted file fails with `CheckpointError` naming the file and
what is wrong, never with wrong weights.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5  # 1 byte compression type + 4 bytes masked crc32c
# tensorflow/core/framework/types.proto -> numpy dtypes (the ones model checkpoints use)
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 6: np.int8, 9: np.int64, 10: np.bool_,
           14: np.float16, 19: np.float16}  # 14 is bfloat16 in TF: refused below
_BFLOAT16 = 14


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated or corrupted; the message names the file."""


# ------------------------------------------------------------------------------------------ crc32c


def _crc32c_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _crc32c_table()
_crc_kernel = None


def _kernel():
    """The byte loop compiled by numba (librosa's dependency) on first use: ~10 ms for 9 MB."""
    global _crc_kernel
    if _crc_kernel is None:
        import numba  # noqa: PLC0415

        @numba.njit(cache=True, nogil=True)
        def kernel(data, table):  # pragma: no cover - compiled
            crc = np.uint32(0xFFFFFFFF)
            for b in data:
                crc = table[(crc ^ b) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
            return crc ^ np.uint32(0xFFFFFFFF)

        _crc_kernel = kernel
    return _crc_kernel


def crc32c(data: bytes | memoryview | np.ndarray) -> int:
    """CRC-32C (Castagnoli) of `data`."""
    return int(_kernel()(np.frombuffer(data, dtype=np.uint8), _TABLE))


def masked_crc32c(data: bytes | memoryview | np.ndarray) -> int:
    """LevelDB/TensorFlow's masked CRC: rotate right by 15 and add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------ varints, protos


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError("varint runs past the end of its buffer")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as int, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos:pos + length]
            if len(value) != length:
                raise ValueError("length-delimited field runs past the end of the message")
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _message(value: int | bytes) -> bytes:
    """A length-delimited field's bytes (a nested message); ValueError when the field was written as a number."""
    if not isinstance(value, bytes):
        raise ValueError(f"expected a nested message, found the number {value}")
    return value


def _entry(value: bytes) -> dict:
    """A BundleEntryProto -> {dtype, shape, shard_id, offset, size, crc32c}."""
    entry = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None, "slices": False}
    for number, v in _proto_fields(value):
        if number == 1:
            entry["dtype"] = v
        elif number == 2:
            dims = []
            for n, dim in _proto_fields(_message(v)):
                if n == 2:
                    size = next((s for k, s in _proto_fields(_message(dim)) if k == 1), 0)
                    dims.append(int(size))
            entry["shape"] = tuple(dims)
        elif number in (3, 4, 5):
            entry[{3: "shard_id", 4: "offset", 5: "size"}[number]] = int(v)
        elif number == 6:
            entry["crc32c"] = int(v)
        elif number == 7:
            entry["slices"] = True
    return entry


# ------------------------------------------------------------------------------------ LevelDB table


def _block(data: bytes, offset: int, size: int, where: str) -> bytes:
    end = offset + size
    if offset < 0 or end + _BLOCK_TRAILER > len(data):
        raise CheckpointError(f"{where}: a block handle points past the end of the file ({end} > {len(data)})")
    block = data[offset:end]
    compression = data[end]
    if compression != 0:
        raise CheckpointError(f"{where}: block at {offset} is compressed (type {compression}); not supported")
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if masked_crc32c(data[offset:end + 1]) != stored:
        raise CheckpointError(f"{where}: block at {offset} fails its crc32c check (the file is corrupted)")
    return block


def _block_entries(block: bytes, where: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise CheckpointError(f"{where}: a block of {len(block)} bytes is too short")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * n_restarts
    if end < 0:
        raise CheckpointError(f"{where}: block restart array is larger than the block")
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    if pos != end:
        raise CheckpointError(f"{where}: block entries overrun the restart array")
    return entries


def read_index(index_path: str | Path) -> dict[str, dict]:
    """Variable name -> entry dict (dtype, shape, offset, size, crc32c) of a checkpoint's .index."""
    where = str(index_path)
    try:
        data = Path(index_path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint index {where}: {exc}") from exc
    if len(data) < _FOOTER_SIZE:
        raise CheckpointError(f"{where}: {len(data)} bytes is too short for a checkpoint index")
    footer = data[-_FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != _MAGIC:
        raise CheckpointError(f"{where}: not a TensorFlow checkpoint index (bad table magic number)")
    try:
        _, pos = _varint(footer, 0)          # metaindex offset
        _, pos = _varint(footer, pos)        # metaindex size
        index_offset, pos = _varint(footer, pos)
        index_size, _ = _varint(footer, pos)
        entries: dict[str, dict] = {}
        for _, handle in _block_entries(_block(data, index_offset, index_size, where), where):
            offset, p = _varint(handle, 0)
            size, _ = _varint(handle, p)
            for key, value in _block_entries(_block(data, offset, size, where), where):
                if key:  # "" is the BundleHeaderProto
                    entries[key.decode("utf-8")] = _entry(value)
    except CheckpointError:
        raise
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{where}: malformed checkpoint index ({exc})") from exc
    if not entries:
        raise CheckpointError(f"{where}: the checkpoint index lists no variables")
    return entries


def read_checkpoint(prefix: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Variables of a TF checkpoint `<prefix>.index` + `<prefix>.data-00000-of-00001` as numpy arrays.

    `names`: only these variables (all when None). Raises CheckpointError for a missing, truncated or
    corrupted file, a sharded/sliced checkpoint, or a tensor whose bytes fail their crc32c.
    """
    prefix = str(prefix)
    index = read_index(prefix + ".index")
    wanted = list(index) if names is None else list(names)
    missing = [n for n in wanted if n not in index]
    if missing:
        raise CheckpointError(f"{prefix}.index has no variable(s) {', '.join(missing)}")
    data_path = prefix + ".data-00000-of-00001"
    try:
        data = Path(data_path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint data {data_path}: {exc}") from exc
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        e = index[name]
        if e["shard_id"] != 0 or e["slices"]:
            raise CheckpointError(f"{data_path}: {name} is sharded or sliced; only single-shard checkpoints are read")
        dtype = _DTYPES.get(e["dtype"])
        if dtype is None or e["dtype"] == _BFLOAT16:
            raise CheckpointError(f"{prefix}.index: {name} has unsupported dtype code {e['dtype']}")
        count = int(np.prod(e["shape"], dtype=np.int64)) if e["shape"] else 1
        if count * np.dtype(dtype).itemsize != e["size"]:
            raise CheckpointError(f"{prefix}.index: {name} has shape {e['shape']} but {e['size']} bytes (corrupted index)")
        end = e["offset"] + e["size"]
        if end > len(data):
            raise CheckpointError(f"{data_path}: {name} ends at byte {end}, past the file's {len(data)} bytes (truncated)")
        raw = data[e["offset"]:end]
        if e["crc32c"] is not None and masked_crc32c(raw) != e["crc32c"]:
            raise CheckpointError(f"{data_path}: {name} fails its crc32c check (the file is corrupted)")
        out[name] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(e["shape"]).astype(dtype)
    return out
