"""The minimal core: model, data, loss, training and generation loops, checkpoints,
and the torch-free plugin machinery (hook specs, interfaces, registry)."""
