"""Turning a DeepSpeed checkpoint into a Hugging Face model folder, with its model card.

    python -m kd_plugin.export <checkpoints dir> <out dir> [--tag stepNNNNNNNN]
"""

from kd_plugin.export.checkpoint_state import export_client_state, save_tokenizer
from kd_plugin.export.model_card import StudentCard, add_downstream_results, read_model_card, write_model_card
from kd_plugin.export.run_card import run_card
from kd_plugin.export.student import export_student

__all__ = ["StudentCard", "add_downstream_results", "export_client_state", "export_student", "read_model_card",
           "run_card", "save_tokenizer", "write_model_card"]
