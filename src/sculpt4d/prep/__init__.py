"""Data preparation: animated GLB loading, procedural 4D assets, rendering, consistent 4D sampling.

Per-object stages (frames -> render -> sample -> verify) and their orchestration live by job:
:mod:`~sculpt4d.prep.params` (settings), :mod:`~sculpt4d.prep.stages` (the stages),
:mod:`~sculpt4d.prep.runner` (discovery, shards, resume, process pool), :mod:`~sculpt4d.prep.report`
(failure report, summary) and :mod:`~sculpt4d.prep.meshio` (frame layout, PLY IO); the CLI is
:mod:`~sculpt4d.prep.__main__`.

Kept light: import submodules directly (``from sculpt4d.prep.gltf_anim import load_animated_mesh``).
"""
