"""The run directory: every name in it (`layout`), writing files there so no reader sees half
of one (`files`), reading a run back (`record`: its config.json, checkpoints and export;
`history`: its TensorBoard scalars), one run per workdir (`lock`, `lease`), and whether a
config may resume it (`resume`).

May import `trainer.config` and the layers below it; never the step or the run.
"""
