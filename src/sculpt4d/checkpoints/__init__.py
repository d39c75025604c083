"""Checkpoints by verb: :mod:`.resolve` (``hf://``), :mod:`.read` (formats, safely), :mod:`.keys` (every key
translation), :mod:`.diagnose` (config hints, readable mismatches), :mod:`.load` (into built components),
:mod:`.write` (safetensors, sharded bins)."""
