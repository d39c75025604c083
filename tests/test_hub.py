"""Checkpoint resolution, reading every supported layout, safety against pickled code, load_into messages."""

import json
import os
import pickle

import pytest
import torch
from torch import nn

from sculpt4d.errors import CheckpointError
from sculpt4d.hub import (
    infer_dit_config,
    infer_vae_config,
    load_into,
    load_state_dict,
    resolve_checkpoint,
    save_safetensors,
    save_sharded_bin,
    split_hunyuan_checkpoint,
)


def tiny(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    m.register_buffer("scale", torch.arange(3.0))
    return m


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


class Payload:
    """Unpickling this would create a file (via builtins.open) if code were executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class HParams:  # a harmless custom class as Lightning stores in hyper_parameters
    def __init__(self):
        self.lr = 1e-4


# ------------------------------------------------------------------------------------------ round trips
def test_sharded_bin_release_layout(tmp_path):
    sd = {k: v.to(torch.bfloat16) for k, v in tiny().state_dict().items()}
    index = save_sharded_bin(sd, tmp_path / "blockmask_bf16", max_shard_size=100)
    names = sorted(p.name for p in index.parent.iterdir())
    n = len(names) - 1
    assert n > 1 and names[-1] == "pytorch_model.bin.index.json"
    assert names[0] == f"pytorch_model-00001-of-{n:05d}.bin"
    meta = json.loads(index.read_text())
    assert set(meta["weight_map"]) == set(sd) and meta["metadata"]["total_size"] == sum(
        v.numel() * 2 for v in sd.values()
    )
    assert_same(load_state_dict(index.parent), sd)
    assert_same(load_state_dict(index), sd)
    # re-saving with fewer shards removes the stale ones
    save_sharded_bin(sd, index.parent, max_shard_size="1GB")
    assert sorted(p.name for p in index.parent.iterdir()) == [
        "pytorch_model-00001-of-00001.bin",
        "pytorch_model.bin.index.json",
    ]
    assert_same(load_state_dict(index.parent), sd)


@pytest.mark.parametrize("shard", [None, 120])
def test_safetensors_single_and_sharded(tmp_path, shard):
    sd = tiny().state_dict()
    out = save_safetensors(sd, tmp_path / "export", shard)
    if shard is None:
        assert out.name == "model.safetensors"
    else:
        assert out.name == "model.safetensors.index.json" and len(list(out.parent.glob("model-*"))) > 1
    assert_same(load_state_dict(tmp_path / "export"), sd)
    assert_same(load_state_dict(out), sd)


def test_shared_and_view_tensors_are_saved(tmp_path):
    w = torch.randn(4, 4)
    sd = {"a": w, "b": w, "row": w[1]}  # shared storage and a view
    out = save_safetensors(sd, tmp_path / "x.safetensors")
    back = load_state_dict(out)
    assert torch.equal(back["a"], w) and torch.equal(back["b"], w) and torch.equal(back["row"], w[1])


def test_hunyuan_ckpt_layout(tmp_path):
    parts = {
        name: {k: v.half() for k, v in tiny(i).state_dict().items()}
        for i, name in enumerate(["model", "vae", "conditioner"])
    }
    torch.save(parts, tmp_path / "model.fp16.ckpt")
    sd = load_state_dict(tmp_path)
    assert "model.0.weight" in sd and "conditioner.scale" in sd
    split = split_hunyuan_checkpoint(sd)
    for name in parts:
        assert_same(split[name], parts[name])


def test_lightning_ckpt_with_python_objects(tmp_path):
    sd = tiny().state_dict()
    ckpt = {
        "state_dict": {"_forward_module.model." + k: v for k, v in sd.items()},
        "hyper_parameters": {"cfg": HParams()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4}]}],
        "epoch": 3,
        "global_step": 10,
        "pytorch-lightning_version": "2.5.0",
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    got = load_state_dict(tmp_path / "last.ckpt")
    assert_same(got, {"model." + k: v for k, v in sd.items()})
    assert_same(split_hunyuan_checkpoint(got)["model"], sd)
    # DDP-style "module." prefix and DeepSpeed {"module": ...} files
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "ddp.pt")
    assert_same(load_state_dict(tmp_path / "ddp.pt"), sd)
    torch.save({"module": sd, "global_steps": 5}, tmp_path / "mp_rank_00_model_states.pt")
    assert_same(load_state_dict(tmp_path / "mp_rank_00_model_states.pt"), sd)
    # legacy (non-zip) torch.save format: mmap impossible, still loads
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert_same(load_state_dict(tmp_path / "legacy.pth"), sd)


# ----------------------------------------------------------------------------------- broken / malicious
def test_truncated_files_give_checkpoint_error(tmp_path):
    sd = tiny().state_dict()
    for f in (save_safetensors(sd, tmp_path / "a.safetensors"), tmp_path / "b.ckpt"):
        if f.suffix == ".ckpt":
            torch.save(sd, f)
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=f.name) as e:
            load_state_dict(f)
        assert "truncated" in str(e.value)
    index = save_sharded_bin(sd, tmp_path / "rel", max_shard_size=100)
    (index.parent / "pytorch_model-00002-of-00003.bin").unlink(missing_ok=True)
    first_missing = sorted(json.loads(index.read_text())["weight_map"].values())
    (index.parent / first_missing[-1]).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="missing"):
        load_state_dict(index)
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match="malformed shard index"):
        load_state_dict(index)


def test_pickled_code_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(Payload(marker), tmp_path / "evil.ckpt")
    with open(tmp_path / "evil_raw.pt", "wb") as fh:
        pickle.dump(Payload(marker), fh)
    for f in ("evil.ckpt", "evil_raw.pt"):
        with pytest.raises(CheckpointError, match=f):
            load_state_dict(tmp_path / f)
        assert not marker.exists()
    # a payload hidden next to real tensors: tensors come out, the payload stays inert
    w = torch.randn(3)
    torch.save({"w": w, "evil": Payload(marker)}, tmp_path / "mixed.pt")
    got = load_state_dict(tmp_path / "mixed.pt")
    assert list(got) == ["w"] and torch.equal(got["w"], w) and not marker.exists()
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict(tmp_path / "list.pt")


# -------------------------------------------------------------------------------------------- load_into
def test_load_into_reports_keys_and_shapes():
    m = tiny()
    sd = tiny(1).state_dict()
    assert load_into(m, sd, name="tiny") == ([], [])
    assert torch.equal(m[0].weight, sd["0.weight"])
    broken = dict(sd)
    broken.pop("2.bias")
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"tiny: .*1 missing keys \(2\.bias\).*1 unexpected keys \(extra\.weight\)"
    ):
        load_into(m, broken, name="tiny")
    missing, unexpected = load_into(m, broken, strict=False)
    assert missing == ["2.bias"] and unexpected == ["extra.weight"]


def _fake_dit_sd(hidden=32, ctx=16, heads=4, depth=3):
    hd = hidden // heads
    sd = {"x_embedder.weight": torch.zeros(hidden, 8), "x_embedder.bias": torch.zeros(hidden)}
    for i in range(depth):
        sd[f"blocks.{i}.attn1.to_q.weight"] = torch.zeros(hidden, hidden)
        sd[f"blocks.{i}.attn1.q_norm.weight"] = torch.zeros(hd)
        sd[f"blocks.{i}.attn2.to_k.weight"] = torch.zeros(hidden, ctx)
        if i == depth - 1:
            sd[f"blocks.{i}.moe.gate.weight"] = torch.zeros(4, hidden)
        else:
            sd[f"blocks.{i}.mlp.fc1.weight"] = torch.zeros(4 * hidden, hidden)
    return sd


def test_infer_configs_and_shape_mismatch_hint():
    cfg = infer_dit_config({"model." + k: v for k, v in _fake_dit_sd().items()})
    assert cfg == dict(
        in_channels=8,
        hidden_size=32,
        depth=3,
        context_dim=16,
        qk_norm=True,
        num_heads=4,
        qk_norm_type="rms",
        qkv_bias=False,
        num_moe_layers=1,
        num_experts=4,
        mlp_ratio=4,
    )
    small = nn.Module()
    small.x_embedder = nn.Linear(8, 16)
    with pytest.raises(
        CheckpointError, match=r"x_embedder\.weight: checkpoint \[32, 8\] vs model \[16, 8\]"
    ) as e:
        load_into(small, _fake_dit_sd(), name="DiT")
    assert (
        "hidden_size=32" in str(e.value) and "depth=3" in str(e.value) and "infer_dit_config" in str(e.value)
    )
    vae = {
        "post_kl.weight": torch.zeros(64, 16),
        "encoder.input_proj.weight": torch.zeros(64, 55),
        "geo_decoder.query_proj.weight": torch.zeros(64, 51),
        "geo_decoder.ln_post.weight": torch.zeros(64),
        "geo_decoder.cross_attn_decoder.mlp.c_fc.weight": torch.zeros(256, 64),
    }
    for i in range(2):
        vae[f"transformer.resblocks.{i}.attn.attention.q_norm.weight"] = torch.zeros(16)
        vae[f"encoder.self_attn.resblocks.{i}.attn.c_qkv.weight"] = torch.zeros(192, 64)
    assert infer_vae_config(vae) == dict(
        embed_dim=16,
        width=64,
        num_decoder_layers=2,
        num_encoder_layers=2,
        qk_norm=True,
        heads=4,
        qkv_bias=False,
        num_freqs=8,
        point_feats=4,
        geo_decoder_mlp_expand_ratio=4,
        geo_decoder_ln_post=True,
    )


# ---------------------------------------------------------------------------------------------- resolve
def test_resolve_local_and_missing(tmp_path):
    (tmp_path / "ck").mkdir()
    assert resolve_checkpoint(tmp_path / "ck") == (tmp_path / "ck").resolve()
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="hf://owner/repo"):
        resolve_checkpoint("hf://justowner")


def test_hf_offline_message_and_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as e:
        resolve_checkpoint("hf://TencentARC/Sculpt4D/blockmask_bf16", cache_dir=tmp_path)
    msg = str(e.value)
    assert "offline" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "huggingface-cli download TencentARC/Sculpt4D --include 'blockmask_bf16/*'" in msg
    # a cached snapshot resolves offline to the subfolder, and loads
    snap = tmp_path / "models--o--r" / "snapshots" / "c0ffee"
    (tmp_path / "models--o--r" / "refs").mkdir(parents=True)
    (tmp_path / "models--o--r" / "refs" / "main").write_text("c0ffee")
    sd = tiny().state_dict()
    save_sharded_bin(sd, snap / "blockmask_bf16", max_shard_size=100)
    path = resolve_checkpoint("hf://o/r/blockmask_bf16", cache_dir=tmp_path)
    assert path == snap / "blockmask_bf16"
    assert_same(load_state_dict(path), sd)
    with pytest.raises(CheckpointError, match="'other' was not found"):
        resolve_checkpoint("hf://o/r/other", cache_dir=tmp_path)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
