"""The executor author's three functions, one module per task: ``training.train(ctx)``,
``mining.mine(ctx)`` and ``infer.infer(ctx)``.

Each receives a :class:`~..contract.context.TaskContext` (typed hyper-parameters, class names,
datasets, the model package, progress and a validated result writer) and is the place to plug a
real model in. Only the tasks chosen at generation time are present, so this package imports
none of them: ``__main__`` loads the one it runs.
"""
