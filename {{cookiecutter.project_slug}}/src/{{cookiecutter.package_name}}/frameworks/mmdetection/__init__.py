"""MMDetection 3.x for YMIR detection and instance segmentation (issue 4).

- :mod:`.models`: the offered models (short names -> configs shipped in mmdet, COCO weights);
- :mod:`.data`: YMIR datasets -> COCO json files;
- :mod:`.config`: config surgery from the hyper-parameters;
- :mod:`.training`: ``run(ctx)``, the training task;
- :mod:`.detector`: a model package -> a detector on a device (thresholds, memory format, fp16);
- :mod:`.predictor`: candidates -> DataLoader batches -> per-image predictions;
- :mod:`.jobs`: what a rank needs (its share of candidates, the payload, the hyper-parameters);
- :mod:`.inference`, :mod:`.mining`: the infer and mining tasks.
"""
