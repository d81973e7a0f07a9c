"""MMDetection 3.x for YMIR detection and instance segmentation (issue 4).

- :mod:`.models`: the offered models (short names -> configs shipped in mmdet, COCO weights);
- :mod:`.data`: YMIR datasets -> COCO json files;
- :mod:`.config`: config surgery from the hyper-parameters;
- :mod:`.training`: ``run(ctx)``, the training task;
- :mod:`.inference`, :mod:`.mining`: batched inference and mining.
"""
