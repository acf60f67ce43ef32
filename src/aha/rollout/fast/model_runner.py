"""The decoder forward over the model's *own* modules, so any in-place update is seen (the packed copy below is
taken afresh at every generate call).

Per layer (Llama / Qwen2 / Qwen3, pre-norm):
    x, r = rms_norm(h [+ r])                          input_layernorm (residual add fused)
    q, k, v = q_proj(x), k_proj(x), v_proj(x)         the model's Linear modules (Qwen2 biases, LoRA wrappers)
    q = rope_cache(q, k, v)                           Qwen3 q_norm/k_norm, RoPE, K/V -> paged cache
    h = o_proj(attention(q, cache))
    x, r = rms_norm(h + r)                            post_attention_layernorm
    h = down_proj(silu(gate_proj(x)) * up_proj(x))
logits = lm_head(rms_norm(h + r))                     lm_head is the embedding when tied

The linear layers are *called* (module(x)), so a peft LoRA wrapper adds its low-rank term; norms, RoPE and
attention read the parameters directly. Packed projections (`pack()`, on by default on a GPU): q/k/v and gate/up
of each layer run as one GEMM each on a concatenated copy of their weights, copied from the live parameters at
the start of every generate call (the optimizer changes them in place between calls) into a buffer kept until
unpack() (the engine's release()); a group with a projection that is not a plain nn.Linear (a LoRA wrapper, a
hooked module) keeps the module calls. At 64 rows on an H200 the separate GEMMs are launch-bound (~4-5 us each,
however small).

fp8 weights (weights_dtype="fp8", `pack()` builds them instead): q/k/v, gate/up and down of every layer as float8
e4m3 with a scale per output channel, quantized from the live weights at every generate call; decode steps run
them through fp8_linear.py on activations the RMSNorm and SiLU kernels quantize per row. o_proj stays in the
model dtype (its input comes from the attention, and e4m3 would gain ~1 us) but runs through the same kernel
(linear_partials, FUSED_SUMS), the lm head stays in the model dtype too (FP8_LM_HEAD), and prefill keeps the
module calls. q/k/v, gate/up and down must be plain nn.Linear (no LoRA adapter): FP8Unsupported otherwise.

RoPE cos/sin come from the model's own rotary module at positions 0..L-1, so every static rope type it implements
(default, linear, llama3, yarn) is reproduced exactly; length-dependent types (dynamic, longrope) are refused.
Anything else unsupported raises UnsupportedModel and the engine falls back to HF generate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import decode_attention, prefill_attention, prefill_meta
from .fp8_linear import (
    E4M3,
    fp8_linear,
    linear_partials,
    quantize_weight,
    rms_norm_fp8,
    silu_mul_fp8,
)
from .kv_cache import gather
from .layers import rms_norm, rope_cache, silu_mul

FAMILIES = ("llama", "qwen2", "qwen3")
# weights_dtype="fp8": the lm head in e4m3 too. Off: on SmolLM2-135M it triples the per-token KL to the trainer
# (6.0e-2 against 2.4e-2 with the model's lm head; docs/results/rollout_is/real_mismatch_3.txt) for ~50 us of a
# 1.5B decode step; a switch for measurements (read when pack() runs)
FP8_LM_HEAD = False
# weights_dtype="fp8": o_proj runs on its model-dtype weights through fp8_linear's kernel (linear_partials: with
# PDL it prefetches them while the attention runs), and the split-K partial sums of o_proj and down_proj are
# added by the RMSNorm that reads them rather than by a kernel of their own. Off: cuBLAS o_proj and
# fp8_linear's split sum; a switch for measurements (read when pack() runs)
FUSED_SUMS = True
STATIC_ROPE = ("default", "linear", "llama3", "yarn")


class UnsupportedModel(ValueError):
    pass


class FP8Unsupported(ValueError):
    """weights_dtype="fp8" on a model with a projection that is not a plain nn.Linear."""


def unwrap(model):
    """The HF *ForCausalLM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class ModelRunner:
    def __init__(self, model):
        self.model = model
        hf = unwrap(model)
        cfg = hf.config
        family = getattr(cfg, "model_type", None)
        if family not in FAMILIES:
            raise UnsupportedModel(f"model_type {family!r} is not one of {', '.join(FAMILIES)}")
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise UnsupportedModel(f"hidden_act {cfg.hidden_act!r} (only silu)")
        if getattr(cfg, "use_sliding_window", False) or any(
            t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])
        ):
            raise UnsupportedModel("sliding-window attention layers")
        body = getattr(hf, "model", None)
        if body is None or not hasattr(body, "layers") or not hasattr(body, "rotary_emb"):
            raise UnsupportedModel(f"{type(hf).__name__} has no .model.layers / .model.rotary_emb")
        self.rotary = body.rotary_emb
        rope_type = getattr(self.rotary, "rope_type", "default")
        if rope_type not in STATIC_ROPE:
            raise UnsupportedModel(f"rope type {rope_type!r} (supported: {', '.join(STATIC_ROPE)})")
        self.embed, self.layers, self.norm = body.embed_tokens, list(body.layers), body.norm
        self.lm_head = hf.get_output_embeddings()
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.scale = attn.scaling
        self.qk_norm = hasattr(attn, "q_norm")
        if self.num_heads % self.num_kv_heads:
            raise UnsupportedModel(
                f"{self.num_heads} heads not a multiple of {self.num_kv_heads} KV heads"
            )
        self.vocab_size = self.embed.weight.shape[0]
        self._rope_key, self._cos, self._sin = None, None, None
        self._parallel, self._streams, self._next = False, None, 0
        # per layer: (qkv weight, qkv bias, gate/up weight, gate/up bias), None where not packed
        self._packed: list[tuple] | None = None
        self._buffer: torch.Tensor | None = None  # the one allocation the packed views live in
        self._layout: tuple | None = None  # the packed groups' shapes (part of params_key)
        # weights_dtype="fp8": per layer ((qkv e4m3, scales, bias), (gate/up e4m3, scales, None), (down ...)),
        # and the lm head's (e4m3, scales, bias) with FP8_LM_HEAD; built by pack() in these buffers
        self.weights_dtype = "auto"
        self._fp8: list | None = None
        self._fp8_head: tuple | None = None
        self._fp8_bufs: tuple | None = None
        self._fused = False  # FUSED_SUMS as of the last pack()
        self._o_proj: list | None = None  # per layer: o_proj through linear_partials
        # decode-step shapes already run eagerly (batch.py: no warm-up before capture)
        self.warmed: set = set()

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def params_key(self) -> tuple:
        """Identity of every parameter storage (and of the packed buffer and its layout): a CUDA graph is valid
        while this is unchanged."""
        buf = self._buffer
        packed = (buf.data_ptr(), self._layout) if buf is not None else ()
        fp8 = tuple(t.data_ptr() for t in self._fp8_bufs) if self._fp8_bufs else ()
        return tuple(p.data_ptr() for p in self.model.parameters()) + packed + fp8

    def pack(self) -> int:
        """Copy the live q/k/v and gate/up weights (and their biases) into one buffer, as per-layer views
        (qkv weight, qkv bias, gate/up weight, gate/up bias; None where a group keeps its module calls);
        returns its bytes. Called at the start of every generate call; the buffer is kept (its address, which
        CUDA graphs capture, does not change) until unpack(). With weights_dtype="fp8" the fp8 copy instead."""
        if self.weights_dtype == "fp8":
            return self._pack_fp8()
        groups = self._groups()
        total = _numel(groups)
        buf = self._buffer
        if buf is None or (buf.numel(), buf.dtype, buf.device) != (total, self.dtype, self.device):
            # the old storage goes before the new one is taken
            self._packed = self._buffer = buf = None
            self._buffer = buf = torch.empty(total, dtype=self.dtype, device=self.device)
        views, off = [], 0
        with torch.no_grad():
            for g in groups:
                if g is None:
                    views.append(None)
                    continue
                n = sum(t.numel() for t in g)
                v = buf[off : off + n].view(sum(t.shape[0] for t in g), *g[0].shape[1:])
                torch.cat([t.detach() for t in g], out=v)
                views.append(v)
                off += n
        self._packed = [tuple(views[k : k + 4]) for k in range(0, len(views), 4)]
        self._layout = tuple(None if g is None else tuple(t.shape for t in g) for g in groups)
        return buf.nbytes

    def pack_bytes(self) -> int:
        """What pack() would allocate, without allocating it."""
        if self.weights_dtype == "fp8":  # e4m3 and a 4-byte scale per row
            return sum(
                m.weight.numel() + 4 * m.weight.shape[0] for g in self._fp8_groups() for m in g
            )
        return _numel(self._groups()) * self.embed.weight.element_size()

    def _fp8_groups(self) -> list[list[torch.nn.Linear]]:
        """Per layer q/k/v, gate/up and down (then the lm head with FP8_LM_HEAD): the projections fp8 copies,
        checked plain."""
        out = []
        for i, layer in enumerate(self.layers):
            a, m = layer.self_attn, layer.mlp
            for name, mods in (
                ("q/k/v_proj", (a.q_proj, a.k_proj, a.v_proj)),
                ("gate/up_proj", (m.gate_proj, m.up_proj)),
                ("down_proj", (m.down_proj,)),
            ):
                if self._plain(*mods) is None:
                    raise FP8Unsupported(
                        f"layer {i}'s {name} is not a plain nn.Linear of the model's dtype (a LoRA adapter, a "
                        "hook or a quantized weight): fp8 weights copy plain projections only"
                    )
                out.append(list(mods))
        if FP8_LM_HEAD:
            if self._plain(self.lm_head) is None:
                raise FP8Unsupported(
                    "the lm head is not a plain nn.Linear: fp8 weights copy plain projections only"
                )
            out.append([self.lm_head])
        return out

    def _pack_fp8(self) -> int:
        groups = self._fp8_groups()
        rows = sum(m.weight.shape[0] for g in groups for m in g)
        total = sum(m.weight.numel() for g in groups for m in g)
        biases = [m.bias for g in groups for m in g if m.bias is not None]
        nb = sum(b.numel() for b in biases)
        bufs = self._fp8_bufs
        want = (total, rows, nb)
        if bufs is None or (bufs[0].numel(), bufs[1].numel(), bufs[2].numel()) != want:
            self._fp8 = self._fp8_head = self._fp8_bufs = None
            dev = self.device
            bufs = self._fp8_bufs = (
                torch.empty(total, dtype=E4M3, device=dev),
                torch.empty(rows, dtype=torch.float32, device=dev),
                torch.empty(nb, dtype=self.dtype, device=dev),
            )
        wbuf, sbuf, bbuf = bufs
        views, off, roff, boff = [], 0, 0, 0
        with torch.no_grad():
            for g in groups:
                n_rows = sum(m.weight.shape[0] for m in g)
                K = g[0].weight.shape[1]
                w = wbuf[off : off + n_rows * K].view(n_rows, K)
                sc = sbuf[roff : roff + n_rows]
                r = 0
                for m in g:
                    n = m.weight.shape[0]
                    quantize_weight(m.weight.detach(), w[r : r + n], sc[r : r + n])
                    r += n
                b = None
                if g[0].bias is not None:
                    b = bbuf[boff : boff + n_rows]
                    torch.cat([m.bias.detach() for m in g], out=b)
                    boff += n_rows
                views.append((w, sc, b))
                off += n_rows * K
                roff += n_rows
        n = 3 * self.num_layers
        self._fp8 = [tuple(views[k : k + 3]) for k in range(0, n, 3)]
        self._fp8_head = views[n] if len(views) > n else None
        self._fused = FUSED_SUMS
        # o_proj through linear_partials where it is plain (else its module call, a LoRA adapter's say) and in
        # half precision (an fp32 model keeps cuBLAS's fp32 product: Triton's fp32 dot rounds to TF32)
        half = self.dtype in (torch.bfloat16, torch.float16)
        self._o_proj = [
            FUSED_SUMS and half and self._plain(layer.self_attn.o_proj) is not None
            for layer in self.layers
        ]
        return sum(t.nbytes for t in bufs)

    def _groups(self) -> list:
        """Per layer: q/k/v weights, their biases, gate/up weights, their biases (lists of tensors to
        concatenate, None where a group keeps its module calls or has no bias)."""
        groups = []
        for layer in self.layers:
            a, m = layer.self_attn, layer.mlp
            for mods in (
                self._plain(a.q_proj, a.k_proj, a.v_proj),
                self._plain(m.gate_proj, m.up_proj),
            ):
                groups.append([p.weight for p in mods] if mods else None)
                groups.append([p.bias for p in mods] if mods and mods[0].bias is not None else None)
        return groups

    @property
    def packed(self) -> bool:
        return self._buffer is not None or self._fp8_bufs is not None

    def unpack(self) -> None:
        """Drop the packed buffer (the module calls are used until the next pack)."""
        self._packed = self._buffer = self._layout = None
        self._fp8 = self._fp8_head = self._fp8_bufs = self._o_proj = None

    def _plain(self, *mods) -> list | None:
        """The modules when all are plain nn.Linear with plain weights of the model's dtype and device, all with
        or all without a bias, and nothing hooked on them; else None (a LoRA wrapper, a DTensor shard, a
        quantized weight, a forward hook or a replaced forward: the module call is what HF runs)."""
        from torch.nn.modules import module as nn_module

        if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
            return None
        for m in mods:
            if type(m) is not torch.nn.Linear or "forward" in m.__dict__:
                return None
            if m._forward_hooks or m._forward_pre_hooks:
                return None
        if len({m.bias is None for m in mods}) > 1:
            return None
        ts = [t for m in mods for t in m.parameters()]
        if not all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in ts):
            return None
        return (
            list(mods)
            if all(t.dtype == self.dtype and t.device == self.device for t in ts)
            else None
        )

    def ensure_rope(self, length: int) -> None:
        """cos/sin tables (L, D) in the model dtype for positions 0..L-1, from the model's rotary module."""
        length = max(1024, 1 << (int(length) - 1).bit_length())
        key = (length, self.dtype, self.device)
        if (
            self._rope_key is not None
            and self._rope_key[0] >= length
            and self._rope_key[1:] == key[1:]
        ):
            return
        pos = torch.arange(length, device=self.device)[None]
        dummy = torch.empty(1, dtype=self.dtype, device=self.device)
        cos, sin = self.rotary(dummy, pos)  # (1, L, D)
        self._cos, self._sin = cos[0].contiguous(), sin[0].contiguous()
        self._rope_key = key

    def _norm(self, h, mod, residual):
        return rms_norm(h, mod.weight, mod.variance_epsilon, residual)

    def _side(self, fn, x):
        """fn(x) on a side stream when decoding on CUDA (the small k/v and gate GEMMs overlap the main-stream
        GEMM; in a CUDA graph this becomes parallel branches). Join with _join before using the result."""
        if not self._parallel:
            return fn(x)
        if self._streams is None:
            self._streams = [torch.cuda.Stream(x.device) for _ in range(2)]
        s = self._streams[self._next % 2]
        self._next += 1
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            return fn(x)

    def _join(self):
        if self._parallel:
            for s in self._streams:
                torch.cuda.current_stream().wait_stream(s)

    def _split_qkv(self, qkv):
        """q, k, v: column slices of one q/k/v GEMM's output (read in place)."""
        nq, nkv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return qkv[:, :nq], qkv[:, nq : nq + nkv], qkv[:, nq + nkv :]

    def _attn_in(self, i, x, pos, slot, layer_cache):
        a = self.layers[i].self_attn
        w, b = self._packed[i][:2] if self._packed else (None, None)
        if w is not None:  # one GEMM
            q, k, v = self._split_qkv(F.linear(x, w, b))
        else:
            k, v = self._side(a.k_proj, x), self._side(a.v_proj, x)
            q = a.q_proj(x)
            self._join()
        return self._rope(i, q, k, v, pos, slot, layer_cache)

    def _rope(self, i, q, k, v, pos, slot, layer_cache):
        a = self.layers[i].self_attn
        qn = a.q_norm.weight if self.qk_norm else None
        kn = a.k_norm.weight if self.qk_norm else None
        eps = a.q_norm.variance_epsilon if self.qk_norm else 1e-6
        k_cache, v_cache, k_scale, v_scale = layer_cache
        return rope_cache(
            q,
            k,
            v,
            self._cos,
            self._sin,
            pos,
            slot,
            k_cache,
            v_cache,
            self.num_heads,
            self.num_kv_heads,
            qn,
            kn,
            eps,
            k_scale,
            v_scale,
        )

    def _mlp(self, i, x):
        m = self.layers[i].mlp
        w, b = self._packed[i][2:] if self._packed else (None, None)
        if w is not None:
            gu = F.linear(x, w, b)
            n = gu.shape[1] // 2
            return m.down_proj(silu_mul(gu[:, :n], gu[:, n:]))
        g = self._side(m.gate_proj, x)
        u = m.up_proj(x)
        self._join()
        return m.down_proj(silu_mul(g, u))

    def decode(
        self, tok, pos, slot, seq_lens, block_table, cache, splits: int = 1, counters=None
    ) -> torch.Tensor:
        """One token per sequence. tok/pos/slot (B,) int64, seq_lens (B,) int32 (= pos + 1),
        block_table (B, W) int32 -> logits (B, V) in the model dtype. counters: decode_attention's."""
        if self._fp8 is not None:
            return self._decode_fp8(tok, pos, slot, seq_lens, block_table, cache, splits, counters)
        h, r = self.embed(tok), None  # (B, H)
        self._parallel = tok.is_cuda
        for i, layer in enumerate(self.layers):
            x, r = self._norm(h, layer.input_layernorm, r)
            kv = cache.layer(i)
            q = self._attn_in(i, x, pos, slot, kv)  # (B, NH, D)
            h = self._attend(i, q, kv, block_table, seq_lens, cache, splits, counters)
            x, r = self._norm(h, layer.post_attention_layernorm, r)
            h = self._mlp(i, x)
        x, _ = self._norm(h, self.norm, r)
        self._parallel = False
        return self.lm_head(x)

    def _attend(self, i, q, kv, block_table, seq_lens, cache, splits, counters):
        """Decode attention over layer i's cache, then o_proj."""
        o = self._attention(i, q, kv, block_table, seq_lens, cache, splits, counters)
        return self.layers[i].self_attn.o_proj(o)

    def _attention(self, i, q, kv, block_table, seq_lens, cache, splits, counters):
        """Decode attention over layer i's cache -> (B, heads * head_dim)."""
        o = decode_attention(
            q,
            kv[0],
            kv[1],
            block_table,
            seq_lens,
            cache.page_size,
            self.scale,
            splits,
            k_scale=kv[2],
            v_scale=kv[3],
            counters=counters,
        )
        return o.reshape(o.shape[0], -1)

    def _decode_fp8(self, tok, pos, slot, seq_lens, block_table, cache, splits, counters):
        """decode() on the fp8 copies (module docstring; FUSED_SUMS: h may be partial sums, which the next
        rms_norm_fp8 adds)."""
        h, r = self.embed(tok), None
        dt = self.dtype
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            (qkv, gu, down), kv = self._fp8[i], cache.layer(i)
            ln = layer.input_layernorm
            x, r = rms_norm_fp8(h, ln.weight, ln.variance_epsilon, r)
            q, k, v = self._split_qkv(fp8_linear(*x, *qkv, dtype=dt))
            q = self._rope(i, q, k, v, pos, slot, kv)
            o = self._attention(i, q, kv, block_table, seq_lens, cache, splits, counters)
            o_proj = layer.self_attn.o_proj
            h = linear_partials(o, o_proj.weight, o_proj.bias) if self._o_proj[i] else o_proj(o)
            ln = layer.post_attention_layernorm
            x, r = rms_norm_fp8(h, ln.weight, ln.variance_epsilon, r)
            g = fp8_linear(*x, *gu, dtype=dt)
            n = g.shape[1] // 2
            # the last layer's output goes to the final norm, which takes partial sums only on the fp8 lm head's path
            partials = self._fused and (i < last or self._fp8_head is not None)
            h = fp8_linear(*silu_mul_fp8(g[:, :n], g[:, n:]), *down, dtype=dt, partials=partials)
        if self._fp8_head is None:
            return self.lm_head(self._norm(h, self.norm, r)[0])
        x, _ = rms_norm_fp8(h, self.norm.weight, self.norm.variance_epsilon, r)
        return fp8_linear(*x, *self._fp8_head, dtype=dt)

    def prefill(
        self, tokens, pos, slot, lens: list[int], cache, all_logits: bool = False
    ) -> torch.Tensor:
        """Whole prompts, packed. tokens/pos/slot (T,), T = sum(lens) -> logits of each prompt's last
        token (P, V), or of every token (T, V) with all_logits."""
        h, r = self.embed(tokens), None  # (T, H)
        self._parallel = False  # big GEMMs fill the GPU already
        meta = prefill_meta(lens, tokens.device)
        for i, layer in enumerate(self.layers):
            x, r = self._norm(h, layer.input_layernorm, r)
            kv = cache.layer(i)
            q = self._attn_in(i, x, pos, slot, kv)  # (T, NH, D)
            # the prompt attends to its K/V as cached (fp8: dequantized), as its decode steps will
            k, v = gather(kv[0], kv[2], slot, q.dtype), gather(kv[1], kv[3], slot, q.dtype)
            o = prefill_attention(q, k, v, meta, self.scale)
            h = layer.self_attn.o_proj(o.reshape(o.shape[0], -1))
            x, r = self._norm(h, layer.post_attention_layernorm, r)
            h = self._mlp(i, x)
        if not all_logits:
            last = torch.tensor(lens).cumsum(0) - 1
            h, r = h[last.to(h.device, non_blocking=True)], r[last.to(h.device, non_blocking=True)]
        x, _ = self._norm(h, self.norm, r)
        return self.lm_head(x)


def _numel(groups: list) -> int:
    """Elements of every tensor in the packed groups (None: a group left out)."""
    return sum(t.numel() for g in groups if g is not None for t in g)
