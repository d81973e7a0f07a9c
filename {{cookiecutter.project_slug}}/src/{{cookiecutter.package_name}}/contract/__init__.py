"""The YMIR protocol without any framework: inputs, hyper-parameters, datasets, models, outputs.

Nothing here imports torch, so the contract can be tested and reused anywhere. The protocol
itself is described for executor authors in docs/protocol.md; the modules here cite its
sections by anchor, e.g. docs/protocol.md#monitor-file.
"""
