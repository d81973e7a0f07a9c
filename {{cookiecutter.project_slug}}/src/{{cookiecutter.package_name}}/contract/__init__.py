"""The YMIR protocol without any framework: inputs, hyper-parameters, datasets, models, outputs.

Nothing here imports torch, so the contract can be tested and reused anywhere.
"""
