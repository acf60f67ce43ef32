"""The PPO value model (critic): a causal LM's decoder with a scalar head, V(s_t) = w . h_t + b.

h_t (B, L, H) is the decoder's last hidden state at position t, i.e. after reading tokens 0..t, so
values[:, t] estimates the return of the state *before* token t+1 is generated -- the same alignment as the
trainer's per-target logprobs (values[:, :-1] lines up with logp (B, L-1)).

Initialisation (classic RLHF PPO, Ouyang et al. 2022 initialise the critic from a trained model): the
backbone is the decoder of any causal LM (the policy's checkpoint by default, or another path); the head
starts at exactly zero, so V = 0 at step 0 and the first advantages are the rewards discounted by (gamma lam)^k
rather than rewards plus the noise of a random head (which, at the scale of a 0/1 reward, swamps them). The
backbone gets gradients from the second update on. The head is kept in float32 whatever the backbone dtype:
it is one (H,) vector and the regression target needs the precision.

On disk (Hugging Face-loadable): the backbone via `save_pretrained` (config.json + model.safetensors, opens
with `AutoModel.from_pretrained`), the head as value_head.safetensors {"weight": (1, H), "bias": (1,)}.
`ValueModel.from_pretrained(dir)` reads that layout back; given a plain causal-LM directory instead it takes
that model's decoder and a fresh head.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

HEAD_FILE = "value_head.safetensors"


class ValueModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int | None = None):
        super().__init__()
        self.backbone = backbone
        H = hidden_size or backbone.config.hidden_size
        head = nn.utils.skip_init(
            nn.Linear, H, 1, dtype=torch.float32
        )  # no default init: it draws global RNG
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        self.value_head = head.to(next(backbone.parameters()).device)

    @property
    def config(self):
        return self.backbone.config

    def get_decoder(self):
        """The transformer whose `.layers` FSDP shards one by one (aha.train.dist.Dist.shard)."""
        return self.backbone

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids, attention_mask (B, L) -> values (B, L) float32."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state  # (B, L, H)
        return self.value_head(hidden.float()).squeeze(-1)  # (B, L)

    # ---- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_causal_lm(cls, lm) -> ValueModel:
        """Wrap the decoder of a (non-PEFT) causal LM; the LM's output head is dropped."""
        return cls(lm.get_decoder(), lm.config.hidden_size)

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        seed: int = 0,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
    ) -> ValueModel:
        """A value checkpoint (backbone + value_head.safetensors) or any causal LM ("tiny-random", "tiny-base", "tiny-recheck",
        a local HF directory, a hub id): the latter gets a fresh (zero) head. `seed` only matters for
        "tiny-random", whose weights it draws."""
        from .compat import dtype_kwarg
        from .load import enable_checkpointing, load_model, resolve_device, resolve_dtype

        p = Path(path)
        if (p / HEAD_FILE).is_file():
            from transformers import AutoModel

            dev = resolve_device(device)
            backbone = AutoModel.from_pretrained(
                str(p),
                trust_remote_code=trust_remote_code,
                **dtype_kwarg(resolve_dtype(dtype, dev)),
            ).to(dev)
            model = cls(backbone)
            model.load_head(p)
        else:
            lm, _ = load_model(
                path, device=device, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code
            )
            model = cls.from_causal_lm(lm)
        if gradient_checkpointing:
            # the policy's: non-reentrant on every transformers version
            enable_checkpointing(model.backbone)
        return model.train()

    # ---- files ----------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, state_dict: dict | None = None) -> Path:
        """Backbone (HF format) + value_head.safetensors. state_dict: this module's full state dict, when the
        parameters themselves are sharded (FSDP gathers it first)."""
        from safetensors.torch import save_file

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        sd = state_dict if state_dict is not None else self.state_dict()
        part = lambda prefix: {
            k[len(prefix) :]: v.detach().contiguous().cpu()
            for k, v in sd.items()
            if k.startswith(prefix)
        }
        self.backbone.save_pretrained(p, state_dict=part("backbone."), safe_serialization=True)
        save_file(part("value_head."), str(p / HEAD_FILE))
        return p

    def load_head(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        self.value_head.load_state_dict(load_file(str(Path(path) / HEAD_FILE)))
