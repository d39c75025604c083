"""Flow matching (Hunyuan3D-2.1 convention: t=0 noise, t=1 data), Euler sampler with CFG, shared noise."""

from sculpt4d.diffusion.flow import FlowMatching, motion_loss, sample_timesteps
from sculpt4d.diffusion.noise import shared_noise
from sculpt4d.diffusion.sampler import EulerSampler

__all__ = ["EulerSampler", "FlowMatching", "motion_loss", "sample_timesteps", "shared_noise"]
