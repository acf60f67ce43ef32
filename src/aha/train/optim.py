"""AdamW for RL fine-tuning in three memory layouts (`optim.name`), and linear warmup + constant/cosine decay.

Why master weights: RL fine-tuning uses learning rates around 1e-6. A bf16 weight has an 8-bit mantissa, so an
update smaller than ~weight/256 rounds to nothing and a pure-bf16 AdamW silently stops learning. `AdamWMaster`
keeps an fp32 copy of every low-precision parameter in its state, applies the AdamW update there and writes the
rounded result back into the live bf16 parameter in place -- the tensor the rollout engine reads, so there is
still one set of weights for generation and no sync step.

    adamw              AdamWMaster (torch's AdamW for fp32 weights): bf16 weights + grads (4 B/param) + fp32
                       master, exp_avg, exp_avg_sq (12 B/param) = 16 B/param on the GPU (7B: 122 GB)
    adamw_8bit         torchao's AdamW8bit: block-quantised 8-bit moments (2 B/param) and no master; bf16 weights
                       are rounded stochastically (unbiased, so 1e-6 updates survive in expectation): 6 B/param
    adamw_cpu_offload  AdamWOffload: AdamWMaster's update and state in host memory (12 B/param there), computed
                       by torch's fused CPU AdamW kernel; each gradient is copied to the host and its new weights
                       back, one tensor ahead of the CPU. 4 B/param on the GPU; one process only.
torchao's own CPUOffloadOptimizer is not used: it copies each gradient in a backward hook, before the trainer
clips the norm (the clip would be lost), and keeps bf16 weights on the host (no master).
"""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("adamw", "adamw_8bit", "adamw_cpu_offload")
EXTRA_8BIT = "optim.name=adamw_8bit needs torchao: pip install 'aha-rl[optim]'"


class AdamWMaster(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter; torch.optim.AdamW's update) computed in fp32 on master copies.

    State per parameter: step, exp_avg, exp_avg_sq and, for non-fp32 parameters, master (fp32). The state is
    plain tensors (DTensors under FSDP2), so torch.distributed.checkpoint saves and reshards it.
    """

    offload = False  # state in host memory (AdamWOffload)

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
                if torch.is_tensor(v) and v.is_floating_point() and (key != "step" or self.offload):
                    self.state[p][key] = v.to(device=self.state_device(p), dtype=torch.float32)

    def state_device(self, p: torch.Tensor) -> torch.device:
        return torch.device("cpu") if self.offload else p.device

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


class AdamWOffload(AdamWMaster):
    """AdamWMaster with its state (fp32 master, exp_avg, exp_avg_sq, step) in host memory and the update on the
    CPU; the same state keys, so checkpoints move between the two. Every parameter gets a master (the live
    weights are on the GPU). While the CPU updates tensor i, the copy of gradient i+1 to the host runs."""

    offload = True

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            nxt = _to_host(params[0].grad) if params else None
            for i, p in enumerate(params):
                grad, ready = nxt
                if i + 1 < len(params):
                    nxt = _to_host(params[i + 1].grad)
                if ready is not None:
                    ready.synchronize()
                st = self.state[p]
                if "step" not in st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros(p.shape, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros(p.shape, dtype=torch.float32)
                if "master" not in st:  # a checkpoint of fp32 weights saved by AdamWMaster has none
                    st["master"] = p.detach().to("cpu", torch.float32, copy=True)
                st["step"] += 1
                _adamw_cpu(st, grad.float(), group)
                _to_device(st["master"], p)
        return loss


def _to_host(grad: torch.Tensor):
    """(host copy of grad, an event to wait for, or None when it is already on the host)."""
    if grad.device.type != "cuda":
        return grad, None
    host = torch.empty(grad.shape, dtype=grad.dtype, pin_memory=True)
    host.copy_(grad, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _to_device(master: torch.Tensor, p: torch.Tensor) -> None:
    """Round the fp32 master into the live parameter. Through pinned memory the copy is asynchronous; the pinned
    block is not reused before the copy has run (torch's caching host allocator records the stream)."""
    if p.device.type != "cuda":
        p.copy_(master)
        return
    staged = torch.empty(p.shape, dtype=p.dtype, pin_memory=True)
    staged.copy_(master)
    p.copy_(staged, non_blocking=True)


def _adamw_cpu(st: dict, g: torch.Tensor, group: dict) -> None:
    """One AdamW update of st["master"] by gradient g (fp32, CPU): torch's fused CPU kernel (torch >= 2.4), or
    AdamWMaster's arithmetic where a build lacks it."""
    lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    w, m, v = st["master"], st["exp_avg"], st["exp_avg_sq"]
    if hasattr(torch, "_fused_adamw_"):
        torch._fused_adamw_(
            [w], [g], [m], [v], [], [st["step"]], lr=lr, beta1=b1, beta2=b2, weight_decay=wd,
            eps=eps, amsgrad=False, maximize=False,
        )  # fmt: skip
        return
    t = float(st["step"])
    w.mul_(1 - lr * wd)
    m.lerp_(g, 1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    w.addcdiv_(m, (v / (1 - b2**t)).sqrt_().add_(eps), value=-lr / (1 - b1**t))


def build_optimizer(
    model, lr: float, weight_decay: float, betas, eps: float, name: str = "adamw"
) -> torch.optim.Optimizer:
    """The optimizer `name` (one of OPTIMIZERS) over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("the model has no trainable parameters; check model.lora settings")
    kw = dict(lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)
    if name == "adamw_8bit":
        try:
            from torchao.optim import AdamW8bit
        except ImportError:
            raise RuntimeError(EXTRA_8BIT) from None
        return AdamW8bit(params, **kw, bf16_stochastic_round=params[0].dtype == torch.bfloat16)
    if name == "adamw_cpu_offload":
        return AdamWOffload(params, **kw)
    if name != "adamw":
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if all(p.dtype == torch.float32 for p in params):
        return torch.optim.AdamW(params, **kw)
    return AdamWMaster(params, **kw)


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
