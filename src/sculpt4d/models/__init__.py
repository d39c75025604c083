"""Model components: ``vae`` (ShapeVAE), ``dit`` (3D/4D DiT), ``attention`` (masks/backends), ``conditioner``.

Kept import-free: import the submodules directly (e.g. ``from sculpt4d.models.conditioner import VideoConditioner``).
"""
