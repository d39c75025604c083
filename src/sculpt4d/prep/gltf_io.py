"""Minimal glTF 2.0 reader: GLB/.gltf container, buffers, accessors and images as numpy / PIL.

Written from the glTF 2.0 specification (sections 4.4 Buffers, 5.1 Accessors, 3.9 GLB). Only reading;
no validation beyond what is needed to fail with a clear :class:`~sculpt4d.errors.InputError`.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from sculpt4d.errors import InputError

GLB_MAGIC = 0x46546C67  # b"glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942

COMPONENT_DTYPES: dict[int, np.dtype] = {
    5120: np.dtype("<i1"),
    5121: np.dtype("<u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
TYPE_SIZES: dict[str, int] = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}


def _normalize_int(a: np.ndarray) -> np.ndarray:
    """Normalized integer -> float32 per spec (signed: max(c / MAX, -1); unsigned: c / MAX)."""
    info = np.iinfo(a.dtype)
    out = a.astype(np.float32) / float(info.max)
    if info.min < 0:
        out = np.maximum(out, -1.0)
    return out


class GltfDocument:
    """A parsed glTF asset: ``json`` (the document) plus lazily decoded buffers."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: file not found")
        data = self.path.read_bytes()
        self._glb_bin: bytes | None = None
        if data[:4] == b"glTF":
            self.json = self._parse_glb(data)
        else:
            try:
                self.json = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise InputError(f"{self.path}: not a GLB (bad magic) and not glTF JSON ({e})") from None
        if not isinstance(self.json, dict) or "asset" not in self.json:
            raise InputError(f"{self.path}: glTF JSON has no 'asset' object; corrupt or not a glTF file")
        used = set(self.json.get("extensionsRequired", []))
        unsupported = used & {"KHR_draco_mesh_compression", "EXT_meshopt_compression"}
        if unsupported:
            raise InputError(
                f"{self.path}: compressed geometry ({', '.join(sorted(unsupported))}) is not supported; "
                "re-export the asset without mesh compression"
            )
        self._buffers: dict[int, bytes] = {}

    # ------------------------------------------------------------------ container
    def _parse_glb(self, data: bytes) -> dict[str, Any]:
        if len(data) < 20:
            raise InputError(f"{self.path}: truncated GLB ({len(data)} bytes)")
        magic, version, length = struct.unpack_from("<III", data, 0)
        if magic != GLB_MAGIC:
            raise InputError(f"{self.path}: bad GLB magic")
        if version != 2:
            raise InputError(f"{self.path}: GLB version {version} is not supported (need 2)")
        if length > len(data):
            raise InputError(f"{self.path}: truncated GLB (header says {length} bytes, file has {len(data)})")
        offset, doc = 12, None
        while offset + 8 <= length:
            chunk_len, chunk_type = struct.unpack_from("<II", data, offset)
            body = data[offset + 8 : offset + 8 + chunk_len]
            if len(body) != chunk_len:
                raise InputError(f"{self.path}: truncated GLB chunk at byte {offset}")
            if chunk_type == CHUNK_JSON:
                try:
                    doc = json.loads(body.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise InputError(f"{self.path}: corrupt GLB JSON chunk ({e})") from None
            elif chunk_type == CHUNK_BIN and self._glb_bin is None:
                self._glb_bin = body
            offset += 8 + chunk_len
        if doc is None:
            raise InputError(f"{self.path}: GLB has no JSON chunk")
        return doc

    def buffer(self, index: int) -> bytes:
        if index not in self._buffers:
            spec = self.json["buffers"][index]
            uri = spec.get("uri")
            if uri is None:
                if self._glb_bin is None:
                    raise InputError(f"{self.path}: buffer {index} refers to a missing GLB BIN chunk")
                raw = self._glb_bin
            elif uri.startswith("data:"):
                raw = base64.b64decode(uri.split(",", 1)[1])
            else:
                file = self.path.parent / uri
                if not file.is_file():
                    raise InputError(f"{self.path}: external buffer '{uri}' not found next to the file")
                raw = file.read_bytes()
            if len(raw) < spec.get("byteLength", 0):
                raise InputError(
                    f"{self.path}: buffer {index} is truncated ({len(raw)} < {spec['byteLength']} bytes)"
                )
            self._buffers[index] = raw
        return self._buffers[index]

    def buffer_view(self, index: int) -> tuple[bytes, int, int | None]:
        """Returns (buffer bytes, byte offset of the view, byte stride or None)."""
        view = self.json["bufferViews"][index]
        buf = self.buffer(view["buffer"])
        start = view.get("byteOffset", 0)
        if start + view["byteLength"] > len(buf):
            raise InputError(f"{self.path}: bufferView {index} runs past the end of its buffer")
        return buf, start, view.get("byteStride")

    # ------------------------------------------------------------------ accessors
    def _read_raw(self, view: int | None, offset: int, count: int, dtype: np.dtype, ncomp: int) -> np.ndarray:
        if view is None:
            return np.zeros((count, ncomp), dtype)
        buf, start, stride = self.buffer_view(view)
        elem = dtype.itemsize * ncomp
        stride = stride or elem
        begin = start + offset
        need = begin + (count - 1) * stride + elem if count else begin
        if need > len(buf):
            raise InputError(f"{self.path}: accessor data runs past the end of the buffer")
        arr = np.ndarray(
            (count, ncomp), dtype=dtype, buffer=buf, offset=begin, strides=(stride, dtype.itemsize)
        )
        return arr.copy()

    def accessor(self, index: int, normalize: bool = True) -> np.ndarray:
        """Decode accessor ``index`` to ``[count, ncomp]`` (matrices as ``[count, 4, 4]`` column-major -> row).

        Normalized integer data becomes float32 when ``normalize``; sparse substitution is applied.
        """
        try:
            acc = self.json["accessors"][index]
            dtype = COMPONENT_DTYPES[acc["componentType"]]
            ncomp = TYPE_SIZES[acc["type"]]
            count = acc["count"]
        except (KeyError, IndexError, TypeError) as e:
            raise InputError(f"{self.path}: malformed accessor {index} ({e!r})") from None
        if acc["type"] in ("MAT2", "MAT3") and dtype.itemsize < 4:
            raise InputError(f"{self.path}: padded {acc['type']} accessors of small ints are not supported")
        arr = self._read_raw(acc.get("bufferView"), acc.get("byteOffset", 0), count, dtype, ncomp)
        sparse = acc.get("sparse")
        if sparse:
            n = sparse["count"]
            ind = sparse["indices"]
            idx = self._read_raw(
                ind["bufferView"], ind.get("byteOffset", 0), n, COMPONENT_DTYPES[ind["componentType"]], 1
            )[:, 0].astype(np.int64)
            val = sparse["values"]
            arr[idx] = self._read_raw(val["bufferView"], val.get("byteOffset", 0), n, dtype, ncomp)
        if normalize and acc.get("normalized", False) and dtype.kind in "iu":
            arr = _normalize_int(arr)
        if acc["type"] == "MAT4":
            arr = arr.reshape(count, 4, 4).transpose(0, 2, 1)  # column-major storage
        elif acc["type"] == "MAT3":
            arr = arr.reshape(count, 3, 3).transpose(0, 2, 1)
        return arr

    # ------------------------------------------------------------------ images
    def image(self, index: int):
        """Decode image ``index`` to a PIL image (RGBA), or None when it cannot be read."""
        from PIL import Image

        spec = self.json.get("images", [])[index]
        try:
            if "bufferView" in spec:
                buf, start, _ = self.buffer_view(spec["bufferView"])
                length = self.json["bufferViews"][spec["bufferView"]]["byteLength"]
                raw = buf[start : start + length]
            elif spec.get("uri", "").startswith("data:"):
                raw = base64.b64decode(spec["uri"].split(",", 1)[1])
            else:
                raw = (self.path.parent / spec["uri"]).read_bytes()
            img = Image.open(io.BytesIO(raw))
            img.load()
            return img.convert("RGBA")
        except Exception:  # noqa: BLE001 - a broken texture should not break geometry loading
            return None
