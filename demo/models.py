"""The demo's models: a small character-level transformer and an MLP for modular arithmetic.

Both are small enough to train on two CPU cores in minutes and to keep every checkpoint's
flattened parameters in memory for exact spectra (validation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class CharConfig:
    """Shape of `CharTransformer`: about 0.6 M parameters with the defaults."""

    vocab_size: int = 128
    context: int = 64
    width: int = 128
    layers: int = 3
    heads: int = 4


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a 4x MLP, both residual."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        shape = (b, t, self.heads, c // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class CharTransformer(nn.Module):
    """GPT-style character model: token + position embeddings, blocks, final norm, head.

    Parameter names start with `embed.`, `blocks.<i>.`, `head.`: the layer groups a
    sketcher can split on. forward: (B, T) int64 codes -> (B, T, vocab) logits.
    """

    def __init__(self, config: CharConfig | None = None) -> None:
        super().__init__()
        cfg = config or CharConfig()
        self.config = cfg
        self.embed = nn.ModuleDict(
            {
                "token": nn.Embedding(cfg.vocab_size, cfg.width),
                "position": nn.Embedding(cfg.context, cfg.width),
            }
        )
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.head = nn.ModuleDict(
            {"norm": nn.LayerNorm(cfg.width), "logits": nn.Linear(cfg.width, cfg.vocab_size)}
        )
        self.apply(_init_weights)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        t = codes.shape[1]
        pos = torch.arange(t, device=codes.device)
        x = self.embed["token"](codes) + self.embed["position"](pos)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head["logits"](self.head["norm"](x))
        return logits


class ModularMLP(nn.Module):
    """Grokking model for (a op b) mod p: shared embedding of a and b, concatenated, MLP.

    forward: (B, 2) int64 operands -> (B, p) logits. Parameter groups: `embed.`,
    `hidden.`, `readout.`.
    """

    def __init__(self, p: int, width: int = 128, hidden: int = 512) -> None:
        super().__init__()
        self.embed = nn.Embedding(p, width)
        self.hidden = nn.Linear(2 * width, hidden)
        self.readout = nn.Linear(hidden, p)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        x = self.embed(pairs).flatten(1)
        logits: torch.Tensor = self.readout(F.relu(self.hidden(x)))
        return logits


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def parameter_count(model: nn.Module) -> int:
    """Number of learned scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All learned parameters, keys in sorted order, flattened to one float64 CPU vector."""
    named = sorted((n, p) for n, p in model.named_parameters() if p.requires_grad)
    return torch.cat([p.detach().reshape(-1).to(torch.float64).cpu() for _, p in named])


def group_slices(model: nn.Module, depth: int = 2) -> dict[str, slice]:
    """Layer groups of the flattened vector (`flat_parameters` order): name prefix of
    `depth` dotted parts (`blocks.0`, `embed.token`, ...) -> its slice."""
    named = sorted((n, p) for n, p in model.named_parameters() if p.requires_grad)
    out: dict[str, slice] = {}
    start = 0
    for name, p in named:
        key = ".".join(name.split(".")[:depth])
        end = start + p.numel()
        prev = out.get(key)
        out[key] = slice(prev.start if prev else start, end)
        start = end
    return out
