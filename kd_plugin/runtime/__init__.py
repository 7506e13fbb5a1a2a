"""The process's surroundings: launch environment (ranks, rendezvous), free ports, project paths.

Imported by every layer above it (training, tracking, preparation, experiments); imports nothing of kd_plugin but ``kd_plugin.errors``.
"""

from kd_plugin.runtime.launch import LaunchInfo, ensure_launch_env, launch_info, strip_local_rank_argument
from kd_plugin.runtime.paths import PROJECT_ROOT
from kd_plugin.runtime.ports import free_port

__all__ = ["PROJECT_ROOT", "LaunchInfo", "ensure_launch_env", "free_port", "launch_info", "strip_local_rank_argument"]
