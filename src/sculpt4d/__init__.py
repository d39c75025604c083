"""sculpt4d: native 4D shape generation with sparse-attention diffusion transformers."""

__version__ = "0.1.0"
