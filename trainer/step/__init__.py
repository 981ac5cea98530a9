"""The step: what runs inside the compiled loop, and the builder that makes it.

`build.build(spec, strategy)` makes a run's parts from a `trainer.config.RunSpec` (model,
optimizer, the `execution.Execution` deciding where batches come from and what XLA compiles,
the weight average, the `learner.Learner` with the per-replica step functions);
`build.make_runner` gives the `loop.Runner` that runs global steps and eval passes (it owns
`strategy.run`). `local_update` makes Keras 3's update local to a replica.

May import `trainer.config` and the layers below it; never the run directory or the run.
"""
