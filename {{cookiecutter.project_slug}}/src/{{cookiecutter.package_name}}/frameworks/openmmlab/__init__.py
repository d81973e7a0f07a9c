"""Glue shared by the OpenMMLab-based implementations (MMDetection and MMSegmentation).

- :mod:`.checkpoint`: loading the checkpoints the executor trusts on torch >= 2.6;
- :mod:`.hooks`: the mmengine hooks that report progress and write model stages;
- :mod:`.distributed`: torchrun launch (GPUs, or gloo processes on the CPU), rank helpers;
- :mod:`.failures`: exceptions -> YMIR executor error codes;
- :mod:`.preflight`: before the work, whether the image can compute on the task's GPUs;
- :mod:`.options`: the ``cfg_options`` hyper-parameter (mmengine ``key=value`` overrides);
- :mod:`.package`: untrained model stages and packages for tests and benchmarks;
- :mod:`.weights`: the offered models' configs and baked weights, fitting a checkpoint to a model.
"""
