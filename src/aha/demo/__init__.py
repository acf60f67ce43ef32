"""`aha demo` and the tiny base models behind it: their corpus, tokenizer and pretraining.

    run.py        `aha demo`: held-out eval -> GRPO on the chain task -> held-out eval, on a laptop CPU
    corpus.py     the synthetic pretraining corpus (no R1 template, no <think>/<answer>, no held-out problem)
    tokenizer.py  byte-level BPE with Qwen2's pre-tokenizer and left-anchored merges
    pretrain.py   PretrainConfig + pretrain(cfg) -> HF-format directory (`aha pretrain configs/pretrain.yaml`)

The chain task itself (its problems, their hash split, the RL rows) is aha.data.chain: data/ never imports this
package. Nothing heavy is imported here; import the submodule you need.
"""
