"""ShapeVAE: Hunyuan3D-2.1's vector-set VAE (state-dict compatible, design.md §H1) + sequence encoding."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import trimesh
from torch import Tensor, nn

from sculpt4d.diffusion import shared_noise
from sculpt4d.errors import InputError

from .attention import Transformer
from .decoder import GeometryDecoder
from .embedder import FourierEmbedder
from .encoder import PointCrossAttentionEncoder, QuerySelection
from .posterior import DiagonalGaussian
from .surface import extract_surface
from .volume import Bounds, VolumeResult, decode_dense, decode_hierarchical


def mean_occupancy_logit(logits: Tensor) -> Tensor:
    """``[K, P]`` occupancy logits -> ``[P]``: the logit of their mean probability (K = 1: the logits as given)."""
    if logits.shape[0] == 1:
        return logits[0]
    p = torch.sigmoid(logits).mean(dim=0).clamp(1e-7, 1.0 - 1e-7)
    return torch.log(p) - torch.log1p(-p)


class ShapeVAE(nn.Module):
    """Point cloud ``[B, P, 3+F]`` -> latents ``[B, N, C]`` -> occupancy logits at any xyz.

    State-dict keys/shapes equal the reference (``encoder.*``, ``pre_kl``, ``post_kl``, ``transformer.*``,
    ``geo_decoder.*``); the default arguments build the full-size 2.1 model (327,746,177 parameters).
    DiT latents are ``to_dit(z)``: per channel ``(z − latent_mean) / latent_std`` when those statistics are
    set (plain attributes, recorded in an export's config), else the reference's ``z · scale_factor``;
    ``encode``/``decode`` never apply either. ``logvar_bound`` / ``logvar_bias_init`` choose the posterior's
    upper bound (see :class:`DiagonalGaussian`) and the initial bias of ``pre_kl``'s logvar half.
    ``weight_init``: ``"reference"`` draws every Linear from N(0, (0.25/√width)²) (the 3DShape2VecSet lineage);
    ``"pytorch"`` keeps ``nn.Linear``'s own init, which trains a small VAE far faster from scratch (the
    reference init's outputs start near zero through each of the stacked blocks). ``fps_random_start`` (not a reference option) picks whether FPS starts at a random
    point (reference behaviour) or at the first point of the input subset (deterministic parity tests).
    """

    def __init__(
        self,
        num_latents: int = 4096,
        embed_dim: int = 64,
        width: int = 1024,
        heads: int = 16,
        num_encoder_layers: int = 8,
        num_decoder_layers: int = 16,
        num_freqs: int = 8,
        include_pi: bool = False,
        point_feats: int = 4,
        pc_size: int = 81920,
        pc_sharpedge_size: int = 0,
        downsample_ratio: float = 20,
        qkv_bias: bool = False,
        qk_norm: bool = True,
        geo_decoder_mlp_expand_ratio: int = 4,
        geo_decoder_downsample_ratio: int = 1,
        geo_decoder_ln_post: bool = True,
        scale_factor: float = 1.0039506158752403,
        logvar_min: float = -30.0,
        logvar_max: float = 20.0,
        fps_random_start: bool = True,
        logvar_bound: str = "clamp",
        logvar_bias_init: float | None = None,
        weight_init: str = "reference",
        latent_mean: list[float] | None = None,
        latent_std: list[float] | None = None,
    ):
        super().__init__()
        self.config: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.num_latents = num_latents
        self.embed_dim = embed_dim
        self.width = width
        self.scale_factor = float(scale_factor)
        self.logvar_min = float(logvar_min)
        self.logvar_max = float(logvar_max)
        self.logvar_bound = logvar_bound
        self.latent_mean = None if latent_mean is None else [float(x) for x in latent_mean]
        self.latent_std = None if latent_std is None else [float(x) for x in latent_std]
        self.fps_random_start = fps_random_start

        self.fourier_embedder = FourierEmbedder(num_freqs=num_freqs, input_dim=3, include_pi=include_pi)
        self.encoder = PointCrossAttentionEncoder(
            self.fourier_embedder,
            num_latents,
            width,
            heads,
            num_encoder_layers,
            point_feats,
            pc_size,
            pc_sharpedge_size,
            downsample_ratio,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
        )
        self.pre_kl = nn.Linear(width, 2 * embed_dim)
        self.post_kl = nn.Linear(embed_dim, width)
        self.transformer = Transformer(width, heads, num_decoder_layers, qkv_bias=qkv_bias, qk_norm=qk_norm)
        self.geo_decoder = GeometryDecoder(
            self.fourier_embedder,
            width,
            heads,
            mlp_expand_ratio=geo_decoder_mlp_expand_ratio,
            downsample_ratio=geo_decoder_downsample_ratio,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            use_ln_post=geo_decoder_ln_post,
        )
        if weight_init == "reference":
            self._init_weights(0.25 * math.sqrt(1.0 / width))
        elif weight_init != "pytorch":
            raise ValueError(f"weight_init must be 'reference' or 'pytorch', got {weight_init!r}")
        if logvar_bias_init is not None and not self.pre_kl.bias.is_meta:
            with torch.no_grad():
                self.pre_kl.bias[embed_dim:] = float(logvar_bias_init)

    def _init_weights(self, std: float) -> None:
        """Small-normal Linear init (the 3DShape2VecSet lineage's ``init_linear``); LayerNorms stay at 1/0."""
        for m in self.modules():
            if isinstance(m, nn.Linear) and not m.weight.is_meta:  # nothing to fill on the meta device
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ---- encoding -------------------------------------------------------------------------------
    def encode_posterior(
        self,
        surface: Tensor,
        query_idx: QuerySelection | tuple[Tensor, Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[DiagonalGaussian, QuerySelection]:
        """Posterior over latents for ``surface [B, P, 3+F]`` (-> ``[B, N, C]``) or ``[B, T, P, 3+F]``
        (-> ``[B, T, N, C]``).

        ``query_idx`` (a :class:`QuerySelection`) reuses earlier picked points; if None they are picked
        from the surface (of frame 0 for a sequence: one pick per sequence, reused for every frame).
        Returns ``(posterior, selection)``.
        """
        if surface.dim() not in (3, 4):
            raise InputError(
                f"surface must be [B, P, 3+F] or [B, T, P, 3+F], got shape {tuple(surface.shape)}"
            )
        seq = surface.dim() == 4
        first = surface[:, 0] if seq else surface  # [B, P, 3+F]
        if query_idx is None:
            selection = self.encoder.select(first[..., :3], generator, random_start=self.fps_random_start)
        else:
            selection = QuerySelection(*query_idx)
        if seq:
            B, T = surface.shape[:2]
            frames = surface.flatten(0, 1)  # [B*T, P, 3+F]
            per_frame = QuerySelection(
                selection.input_idx, selection.query_idx.expand(B, -1).repeat_interleave(T, dim=0)
            )
            moments = self.pre_kl(self.encoder(frames, per_frame))  # [B*T, N, 2C]
            moments = moments.view(B, T, *moments.shape[1:])  # [B, T, N, 2C]
        else:
            moments = self.pre_kl(self.encoder(surface, selection))  # [B, N, 2C]
        return DiagonalGaussian(moments, self.logvar_min, self.logvar_max, bound=self.logvar_bound), selection

    def encode(
        self, surface: Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """``surface [B, P, 3+F]`` -> ``z [B, N, C]`` (a posterior sample, or its mean). No scale_factor."""
        posterior, _ = self.encode_posterior(surface, generator=generator)
        return posterior.sample(generator) if sample_posterior else posterior.mode()

    def encode_sequence(
        self,
        surface: Tensor,
        sample_posterior: bool = True,
        noise_share_alpha: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``surface [B, T, P, 3+F]`` -> ``z [B, T, N, C]`` with one query-point pick per sequence.

        Posterior noise ``eps_t = sqrt(a)·eps_shared + sqrt(1-a)·eps_t_own`` (``a = noise_share_alpha``).
        """
        if surface.dim() != 4:
            raise InputError(
                f"encode_sequence expects surface [B, T, P, 3+F], got shape {tuple(surface.shape)}"
            )
        posterior, _ = self.encode_posterior(surface, generator=generator)
        if not sample_posterior:
            return posterior.mode()
        eps = shared_noise(
            posterior.shape,
            noise_share_alpha,
            generator,
            device=posterior.mean.device,
            dtype=posterior.mean.dtype,
        )  # [B, T, N, C]
        return posterior.sample(noise=eps)

    # ---- DiT latent space -----------------------------------------------------------------------
    def _latent_stats(self, z: Tensor) -> tuple[Tensor, Tensor] | None:
        if self.latent_mean is None or self.latent_std is None:
            return None
        mean = torch.tensor(self.latent_mean, dtype=z.dtype, device=z.device)  # [C]
        std = torch.tensor(self.latent_std, dtype=z.dtype, device=z.device)  # [C]
        return mean, std

    def to_dit(self, z: Tensor) -> Tensor:
        """VAE latents ``[..., C]`` -> the DiT's standardised space (per channel, or ``· scale_factor``)."""
        stats = self._latent_stats(z)
        return z * self.scale_factor if stats is None else (z - stats[0]) / stats[1]

    def from_dit(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`to_dit`."""
        stats = self._latent_stats(x)
        return x / self.scale_factor if stats is None else x * stats[1] + stats[0]

    # ---- decoding -------------------------------------------------------------------------------
    def decode(self, z: Tensor) -> Tensor:
        """``z [B, N, C]`` -> decoded latent features ``h [B, N, W]``."""
        return self.transformer(self.post_kl(z))

    def forward(self, z: Tensor) -> Tensor:
        return self.decode(z)

    def query(self, h: Tensor, xyz: Tensor, kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Occupancy logits (positive inside) at ``xyz [B, P, 3]`` given ``h [B, N, W]`` -> ``[B, P]``.

        ``kv``: ``geo_decoder.latent_kv(h)``, computed once and reused over many query chunks (same result).
        """
        return self.geo_decoder(xyz.to(h.dtype), h, kv=kv).squeeze(-1)

    def _volumes(
        self,
        z: Tensor,
        bounds: Bounds,
        resolution: int,
        num_chunks: int,
        hierarchical: bool,
        level: float,
        min_resolution: int = 63,
        query_dtype: torch.dtype = torch.float32,
        ensemble: bool = False,
    ) -> list[VolumeResult]:
        if z.dim() != 3:
            raise InputError(f"latents must be [B, N, C], got shape {tuple(z.shape)}")
        out = []
        autocast = query_dtype != torch.float32
        with torch.inference_mode():
            h = self.decode(z)  # [B, N, W]
            groups = [h] if ensemble else [h[b : b + 1] for b in range(h.shape[0])]
            for hb in groups:  # [K, N, W]: one volume of K latents' mean occupancy (K = 1: of one latent)
                kv = self.geo_decoder.latent_kv(hb)  # the latent side, once for all query chunks

                def query_fn(xyz: Tensor, hb: Tensor = hb, kv: tuple[Tensor, Tensor] = kv) -> Tensor:
                    with torch.autocast(hb.device.type, dtype=query_dtype, enabled=autocast):
                        points = xyz.to(hb.device)[None].expand(hb.shape[0], -1, -1)  # [K, P, 3]
                        return mean_occupancy_logit(self.query(hb, points, kv).float())  # [P]

                if hierarchical:
                    out.append(
                        decode_hierarchical(
                            query_fn,
                            bounds,
                            resolution,
                            num_chunks,
                            level=level,
                            min_resolution=min_resolution,
                            device=z.device,
                        )
                    )
                else:
                    out.append(decode_dense(query_fn, bounds, resolution, num_chunks, device=z.device))
        return out

    def decode_volume(
        self,
        z: Tensor,
        bounds: Bounds = 1.01,
        resolution: int = 256,
        num_chunks: int = 8000,
        hierarchical: bool = True,
        level: float = 0.0,
        return_results: bool = False,
        min_resolution: int = 63,
        query_dtype: torch.dtype = torch.float32,
    ) -> Tensor | list[VolumeResult]:
        """Logits on the ``(R+1)^3`` grid ``[B, R+1, R+1, R+1]`` float32; NaN = not evaluated (hierarchical).

        ``return_results=True`` gives the per-item :class:`VolumeResult` (NaN-free logits, evaluated
        mask, number of query points). ``query_dtype`` bfloat16 runs the geometry decoder's queries under
        autocast (faster where the hardware has bf16 dot products; logits to about 3 significant digits).
        """
        results = self._volumes(
            z, bounds, resolution, num_chunks, hierarchical, level, min_resolution, query_dtype
        )
        if return_results:
            return results
        return torch.stack([r.with_nan() for r in results])

    def latents_to_mesh(
        self,
        z: Tensor,
        bounds: Bounds = 1.01,
        octree_resolution: int = 256,
        mc_level: float = 0.0,
        num_chunks: int = 8000,
        mc_algo: str = "mc",
        hierarchical: bool = True,
        largest_component: bool = False,
        min_resolution: int = 63,
        query_dtype: torch.dtype = torch.float32,
        ensemble: bool = False,
    ) -> list[trimesh.Trimesh]:
        """``z [B, N, C]`` (unscaled VAE latents) -> one mesh per item (empty mesh + warning if no surface);
        ``ensemble``: one mesh of the B items' mean occupancy probability instead.

        ``min_resolution``: coarsest level of the hierarchical decode (halving stops above it).
        ``largest_component`` keeps only the connected component with most faces (off = reference parity).
        ``query_dtype``: see :meth:`decode_volume`.
        """
        meshes = []
        volumes = self._volumes(
            z,
            bounds,
            octree_resolution,
            num_chunks,
            hierarchical,
            mc_level,
            min_resolution,
            query_dtype,
            ensemble,
        )
        for b, res in enumerate(volumes):
            verts, faces = extract_surface(res.logits, bounds, mc_level, mc_algo)
            if len(faces) == 0:
                warnings.warn(
                    f"latents_to_mesh: item {b} has no surface at level {mc_level} (empty mesh)", stacklevel=2
                )
            mesh = trimesh.Trimesh(vertices=verts, faces=faces)
            if largest_component and len(mesh.faces):
                parts = mesh.split(only_watertight=False)
                if len(parts) > 1:
                    mesh = max(parts, key=lambda m: len(m.faces))
            meshes.append(mesh)
        return meshes
