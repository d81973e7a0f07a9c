"""The devkit: a local stand-in for the YMIR platform.

``synth`` writes a YMIR-shaped ``in/`` (and empty ``out/``), ``run`` starts the executor the way the
platform does, ``verify`` checks ``out/`` against the platform's rules and ``chain`` strings them
together: train -> package -> infer / mine / mine+infer; ``al_loop`` plays the active-learning
cycle (train, mine, label the top-k, train again) to measure mining against random. The command
line is ``python -m <package>.devkit {synth,run,verify,chain,al-loop,hyperparams}``;
``hyperparams`` writes the templates' comments and the README table from the declarations.

Nothing here is imported by the executor itself: the devkit only ever runs it as a subprocess.
"""
