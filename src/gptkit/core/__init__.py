"""The minimal engine and the plugin contract: hook specs, registry, interfaces,
options, settings, model config and model, tokenizer, loss, data, generation,
weights, quantization hooks, devices; :mod:`gptkit.core.training` (the trainer)
and :mod:`gptkit.core.checkpoints` (the checkpoint formats).

May import: :mod:`gptkit.system` and :mod:`gptkit.errors`."""
