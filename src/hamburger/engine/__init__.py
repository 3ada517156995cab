"""The training engine every task shares and no task owns: the loop and its Task contract, checkpoints, typed
configs and argument types, results writers, measurement, the shared command-line helpers."""
