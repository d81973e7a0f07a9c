"""MMSegmentation 1.2 behind the semantic segmentation tasks (``tasks/{training,infer,mining}``).

- :mod:`.models`: the offered models (``model`` hyper-parameter) and their baked weights;
- :mod:`.data`: seg-coco items -> label maps, background handling, the dataset class;
- :mod:`.config`: config surgery (classes, data, schedule, image size, weights, options);
- :mod:`.metric`: mIoU / mAcc / aAcc over the task's classes, as fractions;
- :mod:`.training`: the training run and its stages;
- :mod:`.predictor`, :mod:`.jobs`: batched, sharded prediction from a stage's files;
- :mod:`.inference`, :mod:`.mining`: the infer and mining tasks;
- :mod:`.package`: untrained stages and packages for tests and benchmarks.
"""
