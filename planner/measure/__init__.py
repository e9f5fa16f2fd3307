"""``qplan measure``: real QLoRA training memory on a CUDA GPU, one fresh process per scenario.

- ``configs``: which ``config.json`` a scenario's model names (no torch).
- ``build``: the full-size transformers model with random weights quantized straight to NF4 on the GPU,
  in the state ``from_pretrained(..., quantization_config=BitsAndBytesConfig(...))`` leaves it.
- ``recipe``: the QLoRA recipe (prepare_model_for_kbit_training, LoRA, the Trainer's optimizer) as a
  manual loop or through ``transformers.Trainer``.
- ``tracker`` / ``nvml``: per-phase torch allocator and NVML device memory.
- ``cap``: ``--memory-cap`` emulation and the guard on paged (managed) optimizer memory.
- ``worker``: ``python -m planner.measure.worker`` runs one scenario and writes one Measurement.
- ``suite``: load and choose scenarios, run each in its own worker process, results as JSON lines as
  they finish (also used by ``qplan regress run``).
- ``equality``: proof that ``build`` leaves the GPU exactly as ``from_pretrained`` does.
- ``saved``, ``timeline``, ``paged``: probes of what autograd saves per layer, of what the caching allocator
  holds at each micro-step peak, and of how much device memory paged optimizer state takes once resident.
- ``cuda``: whether this machine can measure, and the one-line-error entry point of those GPU tools.

Only ``configs``, ``cap``, ``cuda`` and ``suite`` are imported by the CLI process; everything that imports
torch runs inside the worker or a tool.
"""
