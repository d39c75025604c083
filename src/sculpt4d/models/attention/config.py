"""The attention setting of a 4D model: variant, block size, kernel and the variant's own mask options.

:data:`VARIANT_OPTIONS` is the one table of per-variant defaults; ``conf/attention/<variant>.yaml`` names the
same keys with ``null`` (= the default here) so they can be overridden on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

VARIANT_OPTIONS: dict[str, dict[str, Any]] = {
    "blockmask": dict(anchor=True, decay=0.25, dense_distance=1),
    "radial": dict(anchor=False, decay=0.2, dense_distance=1),
    "framepack": dict(anchor=False, dense_distance=1, min_blocks=1),
    "rope": dict(rope_base=10000.0),
    "full": dict(),
    "temporal": dict(),
    "spatial": dict(),
    "fixed_stride": dict(anchor=True, dense_distance=1, stride=4),
}
VARIANTS = tuple(VARIANT_OPTIONS)
_DROPPED = {"_target_"}  # an instantiable node's marker, not a setting


@dataclass(frozen=True)
class AttentionConfig:
    """One attention setting; options the variant does not have stay ``None``, its own ones are filled."""

    variant: str = "blockmask"
    block_size: int = 128  # tokens per mask block (kernel: 128)
    backend: str = "auto"  # auto | block_sparse_attn | flex | gather | dense
    anchor: bool | None = None  # key frame 0 fully attended
    decay: float | None = None  # band half-width factor: w(d) = 2^(bitlen N) / 2^(bitlen d) * decay
    dense_distance: int | None = None  # frame pairs with |i - j| <= this are fully attended
    min_blocks: int | None = None  # framepack: blocks every kept frame keeps at least
    rope_base: float | None = None  # rope: base of the temporal RoPE frequencies
    stride: int | None = None  # fixed_stride: every stride-th key frame is fully attended

    def __post_init__(self) -> None:
        if self.variant not in VARIANT_OPTIONS:
            raise ValueError(f"unknown attention variant {self.variant!r}; choose one of {VARIANTS}")
        own = VARIANT_OPTIONS[self.variant]
        foreign = [f.name for f in _OPTION_FIELDS if f.name not in own and getattr(self, f.name) is not None]
        if foreign:
            raise ValueError(
                f"unknown option(s) {sorted(foreign)} for attention variant {self.variant!r}; valid: {sorted(own)}"
            )
        object.__setattr__(self, "block_size", int(self.block_size))
        object.__setattr__(self, "backend", str(self.backend))
        for key, default in own.items():
            value = getattr(self, key)
            object.__setattr__(self, key, type(default)(default if value is None else value))

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None, **fallback: Any) -> AttentionConfig:
        """From a config node (``null`` = the default; ``fallback`` fills keys it leaves out); typos raise."""
        given = {k: v for k, v in dict(cfg or {}).items() if k not in _DROPPED and v is not None}
        names = {f.name for f in fields(cls)}
        unknown = set(given) - names
        if unknown:
            variant = given.get("variant", cls.variant)
            valid = sorted(VARIANT_OPTIONS.get(variant, {}))
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for attention variant {variant!r}; valid: {valid}"
            )
        return cls(**{**fallback, **given})

    def mask_options(self) -> dict[str, Any]:
        """The variant's own options (what the mask builder takes besides variant and block size)."""
        return {key: getattr(self, key) for key in VARIANT_OPTIONS[self.variant]}

    def to_dict(self) -> dict[str, Any]:
        """The plain node an export writes: variant, block size, the variant's options, backend."""
        return {"variant": self.variant, "block_size": self.block_size, **self.mask_options(),
                "backend": self.backend}  # fmt: skip

    def with_backend(self, backend: str) -> AttentionConfig:
        return replace(self, backend=str(backend))


_OPTION_FIELDS = [f for f in fields(AttentionConfig) if f.name not in ("variant", "block_size", "backend")]
