"""Flow matching path/loss, Euler+CFG sampler schedule (reference §4), shared noise."""

import math

import pytest
import torch

from sculpt4d.diffusion import EulerSampler, FlowMatching, motion_loss, sample_timesteps, shared_noise


def test_flow_path_and_target():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    fm = FlowMatching()
    assert torch.equal(fm.path(x0, x1, torch.zeros(3)), x0)
    assert torch.allclose(fm.path(x0, x1, torch.ones(3)), x1)
    t = torch.tensor([0.25, 0.5, 0.75])
    assert torch.allclose(fm.path(x0, x1, t)[1], 0.5 * x0[1] + 0.5 * x1[1])
    assert torch.allclose(fm.path(x0, x1, t)[0], 0.75 * x0[0] + 0.25 * x1[0])
    assert torch.equal(fm.target(x0, x1), x1 - x0)


def test_loss_matches_manual_and_weights():
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(4, 2, 6, 3, generator=g)  # 4D latents [B,T,N,C]
    noise = torch.randn(x1.shape, generator=g)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9])
    fm = FlowMatching()
    model = lambda x, tt, c: 0.3 * x  # noqa: E731
    xt = t.view(4, 1, 1, 1) * x1 + (1 - t.view(4, 1, 1, 1)) * noise
    per = ((0.3 * xt - (x1 - noise)) ** 2).mean(dim=(1, 2, 3))
    loss, ps = fm.loss(model, x1, None, t=t, noise=noise, return_per_sample=True)
    assert torch.allclose(ps, per) and torch.allclose(loss, per.mean())
    w = torch.tensor([1.0, 0.0, 2.0, 0.5])
    assert torch.allclose(fm.loss(model, x1, None, t=t, noise=noise, weights=w), (w * per).mean())
    # the exact velocity gives zero loss
    exact = lambda x, tt, c: x1 - noise  # noqa: E731
    assert fm.loss(exact, x1, None, t=t, noise=noise).item() == 0.0


@pytest.mark.parametrize("kind", ["uniform", "logit_normal"])
def test_timestep_samplers(kind):
    t1 = sample_timesteps(2000, kind, torch.Generator().manual_seed(3))
    t2 = sample_timesteps(2000, kind, torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2) and t1.shape == (2000,)
    assert (t1 >= 0).all() and (t1 <= 1).all()
    assert abs(t1.mean().item() - 0.5) < 0.03
    if kind == "logit_normal":  # concentrated in the middle
        assert ((t1 > 0.25) & (t1 < 0.75)).float().mean() > 0.6
    ts = sample_timesteps(2000, kind, torch.Generator().manual_seed(3), shift=3.0)
    assert ts.mean() < t1.mean()  # shift > 1 moves towards noise (t=0)


def test_sigma_schedule_matches_reference():
    s = EulerSampler(50)
    sig = s.sigmas()
    assert sig.dtype == torch.float32 and sig.shape == (51,)
    assert sig[0].item() == 0.0 and sig[-1].item() == 1.0 and sig[-2].item() == 1.0
    dts = sig[1:] - sig[:-1]
    assert torch.allclose(dts[:-1], torch.full((49,), 1 / 49), atol=1e-6)
    assert dts[-1].item() == 0.0
    assert torch.allclose(s.timesteps(), sig[:-1] * 1000)


def test_shifted_schedule_spends_more_steps_at_the_noisy_end():
    plain, shifted = EulerSampler(25).sigmas(), EulerSampler(25, shift=3.0).sigmas()
    assert torch.equal(EulerSampler(25, shift=1.0).sigmas(), plain)  # 1 = upstream's schedule, bit for bit
    assert shifted[0].item() == 0.0 and shifted[-2].item() == 1.0 and shifted[-1].item() == 1.0
    noise = 1.0 - plain[:-1].double()
    torch.testing.assert_close(
        shifted[:-1].double(), 1.0 - 3.0 * noise / (1.0 + 2.0 * noise), atol=1e-7, rtol=0
    )
    dts = shifted[1:-1] - shifted[:-2]
    assert (dts > 0).all() and (dts[1:] > dts[:-1]).all()  # steps grow from the noise towards the data
    assert (shifted[1:-2] < plain[1:-2]).all()  # every time point between the ends is noisier
    with pytest.raises(ValueError, match="shift must be > 0"):
        EulerSampler(25, shift=0.0)


@pytest.mark.parametrize("shift", [1.0, 0.5, 3.0])
def test_any_step_spacing_integrates_a_constant_velocity_exactly(shift):
    noise = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    velocity = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(1))
    out = EulerSampler(7, shift=shift).sample(
        lambda x, t, c: velocity.expand_as(x), noise, None, guidance_scale=-1.0, progress=False
    )
    torch.testing.assert_close(out, noise + velocity)  # the steps' dt sum to 1 whatever their spacing


@pytest.mark.parametrize("scale,expect_batch", [(5.0, 4), (0.0, 4), (-1.0, 2)])
def test_model_calls_t_and_cfg_batch(scale, expect_batch):
    calls = []

    def model(x, t, c):
        calls.append((x.shape[0], t.clone(), t.dtype))
        return torch.zeros_like(x)

    noise = torch.randn(2, 3, 7, 4).half()  # [B,T,N,C] in fp16
    cond = torch.randn(2, 3, 5, 8).half()
    out = EulerSampler(50).sample(model, noise, cond, guidance_scale=scale, progress=False)
    assert len(calls) == 50 and out.dtype == torch.float16
    assert all(c[0] == expect_batch and c[2] == torch.float16 for c in calls)
    ts = torch.stack([c[1][0].float() for c in calls])
    ref = (torch.linspace(0, 1, 50, dtype=torch.float64).float() * 1000).half().float() / 1000
    assert torch.allclose(ts, ref.half().float(), atol=1e-3)
    assert ts[0] == 0 and ts[-1] == 1


def test_cfg_formula_and_zero_uncond():
    seen = {}

    def model(x, t, c):  # velocity = mean of the context, per sample
        seen["ctx"] = c
        return c.mean(dim=(1, 2)).view(-1, 1, 1).expand_as(x).clone()

    b, w = 2, 3.5
    cond = torch.rand(b, 4, 6) + 1.0  # [B,L,D]
    noise = torch.zeros(b, 5, 2)
    out = EulerSampler(2).sample(model, noise, cond, guidance_scale=w, progress=False)
    assert torch.equal(seen["ctx"][b:], torch.zeros_like(cond))  # unconditional = zeros
    vc = cond.mean(dim=(1, 2)).view(-1, 1, 1)
    # sigmas [0, 1, 1]: one step of dt=1 with v = v_u + w (v_c - v_u) = w v_c
    assert torch.allclose(out, (w * vc).expand_as(noise), atol=1e-6)
    # an explicit uncond is used instead of zeros
    uncond = torch.ones_like(cond)
    out2 = EulerSampler(2).sample(model, noise, cond, uncond, guidance_scale=w, progress=False)
    assert torch.allclose(out2, (1 + w * (vc - 1)).expand_as(noise), atol=1e-6)
    # skip_cfg_at_one: single batch, v = v_c
    out3 = EulerSampler(2, skip_cfg_at_one=True).sample(
        model, noise, cond, guidance_scale=1.0, progress=False
    )
    assert seen["ctx"].shape[0] == b and torch.allclose(out3, vc.expand_as(noise))


def test_toy_ode_reaches_target():
    target = torch.randn(3, 16, 4, generator=torch.Generator().manual_seed(5))

    def exact_velocity(x, t, c):  # straight path noise -> target: v = (x1 - x) / (1 - t)
        return (target - x) / (1 - t.view(-1, 1, 1)).clamp_min(1e-6)

    steps = []
    noise = torch.randn(3, 16, 4, generator=torch.Generator().manual_seed(6))
    out = EulerSampler(20).sample(
        exact_velocity, noise, None, progress=True, callback=lambda i, t, x: steps.append(i)
    )
    assert steps == list(range(20))
    assert torch.allclose(out, target, atol=1e-5)


def test_shared_noise():
    shape = (2, 4, 6, 3)
    a1 = shared_noise(shape, 1.0, torch.Generator().manual_seed(0))
    assert a1.shape == shape and all(torch.equal(a1[:, 0], a1[:, t]) for t in range(4))
    assert not torch.equal(a1[0], a1[1])
    a0 = shared_noise(shape, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(a0, torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    assert not torch.allclose(a0[:, 0], a0[:, 1])
    # marginal N(0,1) per frame and correlation alpha between frames
    big = shared_noise((4000, 2, 16), 0.5, torch.Generator().manual_seed(1))
    for t in range(2):
        assert abs(big[:, t].mean().item()) < 0.02 and abs(big[:, t].std().item() - 1) < 0.02
    corr = (big[:, 0] * big[:, 1]).mean().item()
    assert abs(corr - 0.5) < 0.03
    with pytest.raises(ValueError):
        shared_noise(shape, 1.5)
    assert math.isfinite(float(shared_noise((1, 1, 1), 0.3).sum()))


def test_cfg_pair_as_two_passes_gives_the_batched_result():
    """``cfg_batch=False`` (low_vram): two half-size calls per step, the same latents as the doubled batch."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4 + 8, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    batches = []

    def model(x, t, c):  # x [B, N, 4], c [B, 8]: a velocity that depends on x, t and the condition
        batches.append(x.shape[0])
        feat = torch.cat([x, (c + t[:, None])[:, None].expand(-1, x.shape[1], -1)], dim=-1)
        return net(feat)

    noise, cond = torch.randn(3, 7, 4), torch.randn(3, 8)
    uncond = 0.3 * torch.randn(3, 8)
    ref = EulerSampler(6).sample(model, noise, cond, uncond, guidance_scale=4.0, progress=False)
    assert set(batches) == {6}
    batches.clear()
    out = EulerSampler(6, cfg_batch=False).sample(
        model, noise, cond, uncond, guidance_scale=4.0, progress=False
    )
    assert batches == [3] * 12  # cond then uncond, at every step
    assert torch.allclose(out, ref, atol=1e-5) and not torch.equal(out, noise)
    # without CFG the option changes nothing: one call per step
    batches.clear()
    EulerSampler(6, cfg_batch=False).sample(model, noise, cond, guidance_scale=-1.0, progress=False)
    assert batches == [3] * 6


@pytest.mark.parametrize("cfg_batch", [True, False])
def test_guidance_until_guides_the_early_steps_only(cfg_batch):
    """CFG at the steps with t < ``guidance_until`` (t = 0 is noise), one conditional call after; 1 = every step."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4 + 8, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    calls = []

    def model(x, t, c):  # x [B, N, 4], c [B, 8]
        calls.append((float(t[0]), x.shape[0], bool((c == 0).all())))
        return net(torch.cat([x, (c + t[:, None])[:, None].expand(-1, x.shape[1], -1)], dim=-1))

    noise, cond = torch.randn(3, 7, 4), torch.randn(3, 8)
    sampler = EulerSampler(6, cfg_batch=cfg_batch, guidance_until=0.5)  # time points 0, .2, .4, .6, .8, 1
    out = sampler.sample(model, noise, cond, guidance_scale=4.0, progress=False)
    guided = [t for t, b, zeros in calls if b == 6 or zeros]
    assert sorted(set(guided)) == pytest.approx([0.0, 0.2, 0.4])  # an unconditional call only before t = 0.5
    assert [b for t, b, _ in calls if t > 0.5] == [3, 3, 3] and not any(z for t, _, z in calls if t > 0.5)

    def by_hand() -> torch.Tensor:  # the same integration written out: CFG, then the conditional velocity
        x, sigmas = noise, sampler.sigmas()
        for i in range(6):
            t = sigmas[i].expand(3)
            v = model(x, t, cond)
            if sigmas[i] < 0.5:
                v = model(x, t, torch.zeros_like(cond)) + 4.0 * (v - model(x, t, torch.zeros_like(cond)))
            x = x + (sigmas[i + 1] - sigmas[i]) * v
        return x

    torch.testing.assert_close(out, by_hand(), atol=1e-5, rtol=0)
    every = EulerSampler(6, cfg_batch=cfg_batch).sample(
        model, noise, cond, guidance_scale=4.0, progress=False
    )
    assert torch.equal(EulerSampler(6, cfg_batch=cfg_batch, guidance_until=1.0).sample(
        model, noise, cond, guidance_scale=4.0, progress=False), every)  # fmt: skip
    assert not torch.allclose(out, every, atol=1e-3)
    with pytest.raises(ValueError, match="guidance_until must be in"):
        EulerSampler(6, guidance_until=1.5)


def test_motion_loss_charges_what_differs_between_frames_only():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 5, 6, 4, generator=g)  # [B, T, N, C] data latents
    x0 = shared_noise(x1.shape, 1.0, g)  # one noise per sequence, as at inference
    target = FlowMatching.target(x0, x1)
    assert motion_loss(target, target) == 0
    # an error every frame shares costs flow loss but no motion loss
    common = target + torch.randn(2, 1, 6, 4, generator=g)
    assert motion_loss(common, target) < 1e-10 < float((common - target).pow(2).mean())
    # a model that copies its anchor frame pays the whole motion of the data
    copy = target[:, :1].expand_as(target)
    expected = (x1[:, 1:] - x1[:, :1]).pow(2).mean()
    assert torch.allclose(motion_loss(copy, target), expected)
