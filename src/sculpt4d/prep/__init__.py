"""Data preparation: animated GLB loading, procedural 4D assets, rendering, consistent 4D sampling.

Kept light: import submodules directly (``from sculpt4d.prep.gltf_anim import load_animated_mesh``).
"""
