"""Which code made a run: the project's git commit, and whether tracked files differed from it, in ``info.code``.

Sacred can record this itself (``save_git_info=True``: ``experiment.repositories``), but it also stores the
remote's URL, which may carry an access token, on every run document; this records the commit and the dirty flag
only, with GitPython (which Sacred already depends on). A copy of the project that is not a git checkout records
``commit: null``, never a guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_plugin.runtime.paths import PROJECT_ROOT


def code_version(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """``{"commit": <40 hex digits> | None, "dirty": bool | None, "path": <the checkout>}``; dirty: a tracked
    file differs from the commit (untracked files are not counted: outputs, caches)."""
    try:
        import git

        repo = git.Repo(root)
        return {"commit": repo.head.commit.hexsha, "dirty": repo.is_dirty(untracked_files=False), "path": str(root)}
    except Exception:  # no git checkout, no git executable, an unborn branch: nothing known, nothing claimed
        return {"commit": None, "dirty": None, "path": str(root)}
