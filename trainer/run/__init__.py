"""A run: `train.train_and_evaluate(config, workdir)` from a config to its final eval and
export. The controller owns the outer loop (cadence, evals, checkpoints, preemption) and runs
the actions after each loop and eval; then checkpoints, TensorBoard summaries, the console,
curves.png and the exported model (`export`, its SavedModel `serving`, read back by
`exported.load_export`); and `cli`, the prologue every command shares.

May import every layer below it (`trainer.step`, `trainer.rundir`, ...); only the entry
points (`trainer.main`, `.evaluate`, `.plot`) import it.
"""
