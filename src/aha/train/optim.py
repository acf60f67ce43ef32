"""AdamW (with fp32 master weights when the model is in bf16/fp16) and linear warmup + constant/cosine decay.

Why master weights: RL fine-tuning uses learning rates around 1e-6. A bf16 weight has an 8-bit mantissa, so an
update smaller than ~weight/256 rounds to nothing and a pure-bf16 AdamW silently stops learning. `AdamWMaster`
keeps an fp32 copy of every low-precision parameter in its state, applies the AdamW update there and writes the
rounded result back into the live bf16 parameter in place -- the tensor the rollout engine reads, so there is
still one set of weights for generation and no sync step. Memory: bf16 weights + grads (4 B/param) + fp32
master, exp_avg, exp_avg_sq (12 B/param) = 16 B/param, the same as fp32 training with AdamW.
"""

from __future__ import annotations

import math

import torch


class AdamWMaster(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter; torch.optim.AdamW's update) computed in fp32 on master copies.

    State per parameter: step, exp_avg, exp_avg_sq and, for non-fp32 parameters, master (fp32). The state is
    plain tensors (DTensors under FSDP2), so torch.distributed.checkpoint saves and reshards it.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        )

    def load_state_dict(self, state_dict) -> None:
        # torch's loader casts floating-point state to each parameter's dtype; the master and the moments
        # must stay fp32 (a bf16 master would undo the point of having one), so they are put back as saved.
        super().load_state_dict(state_dict)
        # Saved state is keyed by whatever its groups list (ids, or names from torch.distributed.checkpoint),
        # in the order of our own groups' parameters -- the mapping torch's loader uses too.
        saved_keys = [k for g in state_dict["param_groups"] for k in g["params"]]
        own = [p for g in self.param_groups for p in g["params"]]
        for key_, p in zip(saved_keys, own):
            for key, v in state_dict["state"].get(key_, {}).items():
                if key != "step" and torch.is_tensor(v) and v.is_floating_point():
                    self.state[p][key] = v.to(device=p.device, dtype=torch.float32)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    if p.dtype != torch.float32:
                        st["master"] = p.detach().float()
                w = st.get("master", p)  # the fp32 weight the update is applied to
                g = p.grad.float()
                st["step"] += 1
                t = float(st["step"])
                w.mul_(1 - lr * wd)
                st["exp_avg"].lerp_(g, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (st["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(eps)
                w.addcdiv_(st["exp_avg"], denom, value=-lr / (1 - b1**t))
                if w is not p:
                    p.copy_(w)  # round into the live low-precision weight
        return loss


def build_optimizer(
    model, lr: float, weight_decay: float, betas, eps: float
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("the model has no trainable parameters; check model.lora settings")
    if all(p.dtype == torch.float32 for p in params):
        return torch.optim.AdamW(
            params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps
        )
    return AdamWMaster(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


def lr_lambda(step: int, *, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer, *, total: int, warmup: int, schedule: str, min_ratio: float):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_lambda(s, total=total, warmup=warmup, schedule=schedule, min_ratio=min_ratio),
    )
