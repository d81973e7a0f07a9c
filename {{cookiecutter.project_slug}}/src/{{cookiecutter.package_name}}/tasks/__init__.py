"""The executor author's three functions, one module per task: ``training.train(ctx)``,
``mining.mine(ctx)`` and ``infer.infer(ctx)``.

Each receives the context type of its task (:class:`~..contract.context.TrainingContext`,
:class:`~..contract.context.MiningContext`, :class:`~..contract.context.InferenceContext`: typed
hyper-parameters, class names, datasets, the model package, progress and the task's validated
result writer, each documented there) and is the place to plug a real model in. Only the tasks
chosen at generation time are present, so this package imports none of them: ``__main__`` loads
the one it runs.
"""
