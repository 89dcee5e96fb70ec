"""Which tensors are sketched, under which names, in which groups (sedmon._parameters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sedmon._parameters import LAYER_GROUP_ORDER, group_members, named_parameters
from sedmon.sketching import sketch_parameters


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(width, 3 * width)
        self.attn.c_proj = nn.Linear(width, width)
        self.attn.register_buffer("bias", torch.tril(torch.ones(1, 1, 8, 8)))
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(width, 4 * width)
        self.mlp.c_proj = nn.Linear(4 * width, width)


class TinyGPT(nn.Module):
    """GPT-2's parameter names (transformer.h.N...), lm_head tied to wte."""

    def __init__(self, layers: int = 6, width: int = 16, vocab: int = 50) -> None:
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(vocab, width)
        self.transformer.wpe = nn.Embedding(8, width)
        self.transformer.h = nn.ModuleList(Block(width) for _ in range(layers))
        self.transformer.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight


class DDPLike(nn.Module):
    """DistributedDataParallel's naming: the model under `module.`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = model


def names(source: object) -> list[str]:
    return [n for n, _ in named_parameters(source)]


def test_tied_weights_count_once_under_the_embedding_name() -> None:
    found = names(TinyGPT())
    assert "transformer.wte.weight" in found
    assert "lm_head.weight" not in found
    assert found == sorted(found)
    total = sum(p.numel() for _, p in named_parameters(TinyGPT()))
    model = TinyGPT()
    assert total == sum(p.numel() for p in model.parameters())  # parameters() dedups too


def test_compiled_and_ddp_wrapped_models_have_the_plain_names_and_sketch() -> None:
    torch.manual_seed(0)
    model = TinyGPT()
    compiled = torch.compile(model)  # OptimizedModule: `_orig_mod.` names, compiled lazily
    assert any(n.startswith("_orig_mod.") for n, _ in compiled.named_parameters())
    assert names(compiled) == names(model) == names(DDPLike(model))
    plain = sketch_parameters(model, dim=64)["all"]
    np.testing.assert_array_equal(sketch_parameters(compiled, dim=64)["all"], plain)
    np.testing.assert_array_equal(sketch_parameters(DDPLike(model), dim=64)["all"], plain)


def test_frozen_parameters_and_buffers_are_not_sketched() -> None:
    model = TinyGPT()
    model.transformer.wpe.weight.requires_grad_(False)
    assert "transformer.wpe.weight" not in names(model)
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state_names = names(bn.state_dict())
    assert state_names == ["0.bias", "0.weight", "1.bias", "1.weight"]  # no running stats


def test_a_saved_state_dict_has_the_live_models_names_and_sketch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = TinyGPT()
    torch.save(torch.compile(model).state_dict(), tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt")  # the tie survives: one storage, two keys
    assert "_orig_mod.lm_head.weight" in state
    assert names(state) == names(model)  # causal masks (attn.bias, 4-D) are not learned
    live = sketch_parameters(model, dim=50, groups="layers")
    saved = sketch_parameters(state, dim=50, groups="layers")
    assert list(live) == list(saved)
    for group in live:
        np.testing.assert_allclose(saved[group], live[group], rtol=0, atol=1e-12)


def test_layer_groups_split_blocks_into_thirds_and_cover_every_parameter_once() -> None:
    found = names(TinyGPT(layers=6))
    members = group_members(found, "layers")
    assert list(members) == [g for g in LAYER_GROUP_ORDER if g in members]
    assert set(members) == {
        "embeddings",
        "attn.early",
        "mlp.early",
        "attn.mid",
        "mlp.mid",
        "attn.late",
        "mlp.late",
        "norms",
    }
    flat = [n for group in members.values() for n in group]
    assert sorted(flat) == sorted(found) and len(flat) == len(set(flat))
    assert "transformer.h.1.attn.c_attn.weight" in members["attn.early"]
    assert "transformer.h.2.mlp.c_fc.bias" in members["mlp.mid"]
    assert "transformer.h.5.attn.c_proj.weight" in members["attn.late"]
    assert "transformer.h.3.ln_1.weight" in members["norms"]
    assert "transformer.ln_f.bias" in members["norms"]
    assert members["embeddings"] == ["transformer.wpe.weight", "transformer.wte.weight"]


def test_llama_style_names_are_grouped_too() -> None:
    found = [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.2.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ]
    members = group_members(found, "layers")
    assert members["attn.early"] == ["model.layers.0.self_attn.q_proj.weight"]
    assert members["attn.mid"] == ["model.layers.1.self_attn.o_proj.weight"]
    assert members["mlp.late"] == ["model.layers.2.mlp.down_proj.weight"]
    assert members["norms"] == ["model.layers.0.input_layernorm.weight", "model.norm.weight"]
    assert members["head"] == ["lm_head.weight"]
    assert members["embeddings"] == ["model.embed_tokens.weight"]


def test_a_model_without_blocks_is_grouped_by_top_level_module() -> None:
    model = nn.Module()
    model.net = nn.Module()
    model.net.encoder = nn.Linear(4, 4)
    model.net.decoder = nn.Linear(4, 2)
    members = group_members(names(model), "layers")
    assert members == {
        "decoder": ["net.decoder.bias", "net.decoder.weight"],
        "encoder": ["net.encoder.bias", "net.encoder.weight"],
    }


def test_pattern_groups_take_the_first_match_and_refuse_gaps() -> None:
    found = names(TinyGPT(layers=2))
    mapping = {"attention": ["*.attn.*"], "rest": ["*"]}
    members = group_members(found, mapping)
    assert list(members) == ["attention", "rest"]
    assert all(".attn." in n for n in members["attention"])
    assert not any(".attn." in n for n in members["rest"])
    with pytest.raises(ValueError, match="matches no group pattern"):
        group_members(found, {"attention": ["*.attn.*"]})
    with pytest.raises(ValueError, match=r"\['nothing'\] match no parameter"):
        group_members(found, {"nothing": ["no.such.*"], "rest": ["*"]})
    with pytest.raises(ValueError, match="reserved"):
        group_members(found, {"all": ["*"]})
    with pytest.raises(TypeError, match="list of patterns"):
        group_members(found, {"attention": "*.attn.*"})
    with pytest.raises(ValueError, match="'all', 'layers'"):
        group_members(found, "per-layer")


def test_two_different_tensors_under_one_normalised_name_are_an_error() -> None:
    pairs = [("module.w", torch.zeros(3)), ("w", torch.ones(3))]
    with pytest.raises(ValueError, match="both named 'w'"):
        named_parameters(pairs)
