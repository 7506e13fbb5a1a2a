"""The DeepSpeed distillation trainer and its pieces (models, batch stream, engine, checkpoints, callbacks, interruption)."""
