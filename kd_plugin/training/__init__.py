"""The DeepSpeed distillation trainer and its pieces (launch environment, engine config, checkpoints)."""
