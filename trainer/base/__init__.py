"""The ground floor, used by every layer: what the trainer's errors are (and their exit
statuses), the one wording of each value check, which Keras runs (3 or 2), the names a user
chooses between, the one rule for `package.module:function` plug-ins, local-or-remote paths,
signals (SIGTERM, Ctrl-C) and the test points where the kill harness acts.

Imports nothing of the trainer, and TensorFlow only where a function needs it.
"""
