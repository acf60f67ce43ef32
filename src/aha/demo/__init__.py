"""The tiny base model behind `aha demo`: its task, corpus, tokenizer and pretraining.

    problems.py   chain-arithmetic problems ("Compute 87+8-6+7") and the hash split that holds out 1/16
    corpus.py     the synthetic pretraining corpus (no R1 template, no <think>/<answer>, no held-out problem)
    tokenizer.py  byte-level BPE with Qwen2's pre-tokenizer and left-anchored merges
    pretrain.py   PretrainConfig + pretrain(cfg) -> HF-format directory (`aha pretrain configs/pretrain.yaml`)
    task.py       the "chain" RL task (registered with aha.data)

Nothing heavy is imported here; import the submodule you need.
"""
