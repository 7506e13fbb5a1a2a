"""kd_plugin: declarative knowledge distillation (DistilBERT, Sanh et al. 2019) on Hugging Face transformers."""

__version__ = "0.1.0"
