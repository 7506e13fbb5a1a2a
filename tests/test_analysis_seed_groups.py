"""Runs are averaged as seeds only when they differ in nothing but the seed (analysis.seed_groups), on Sacred-shaped
documents in a fresh database on the test server; the settings that change nothing are the ones declared
``bookkeeping`` with the setting (kd_plugin.config)."""

from __future__ import annotations

import warnings

import pytest

from analysis import ablation_table, load_metrics, load_runs, plot_loss_curves
from analysis.seed_groups import seeds_label
from kd_plugin.config import distill_bookkeeping_keys
from tests.test_analysis_runs import database, insert_run  # noqa: F401  (database is a fixture)

LOSS = {"loss": ([1, 2], [2.0, 1.0])}


def test_bookkeeping_is_declared_with_the_setting():
    keys = distill_bookkeeping_keys()
    assert {"output_dir", "log_every", "progress_bar", "data.cache_dir", "performance.compile",
            "performance.fuse_logit_rows"} <= keys
    assert not keys & {"seed", "max_steps", "stop_at_step", "deepspeed_config", "T", "alpha_ce", "data.corpus",
                       "student.layers", "optim.lr", "eval_max_sequences"}


def test_runs_differing_only_in_bookkeeping_are_seeds(database):  # noqa: F811
    insert_run(database, 1, {"seed": 1, "output_dir": "/a", "log_every": 1, "performance": {"compile": False}},
               metrics=LOSS)
    insert_run(database, 2, {"seed": 2, "output_dir": "/b", "log_every": 5, "performance": {"compile": True}},
               metrics=LOSS)
    runs = load_runs(db=database)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = ablation_table(runs, "variant", "final.loss")
    assert table[["n_seeds", "n_runs"]].values.tolist() == [[2, 2]]


def test_a_row_that_mixes_settings_is_refused_or_split(database, tmp_path):  # noqa: F811
    insert_run(database, 1, {"seed": 1}, metrics=LOSS)
    insert_run(database, 2, {"seed": 2, "stop_at_step": 3, "deepspeed_config": "ds_configs/zero3.json"},
               metrics=LOSS)
    insert_run(database, 3, {"seed": 3}, metrics=LOSS)
    runs = load_runs(db=database)
    with pytest.raises(ValueError, match=r"full: stop_at_step \[3, None\], "
                                         r"deepspeed_config \[None, 'ds_configs/zero3.json'\]"):
        ablation_table(runs, "variant", "final.loss")
    with pytest.warns(UserWarning, match=r"rows split by \['deepspeed_config', 'stop_at_step'\]"):
        split = ablation_table(runs, "variant", "final.loss", mixed="split")
    assert sorted(split["n_seeds"].tolist()) == [1, 2]

    curves = load_metrics(runs, "loss", db=database)
    assert {"stop_at_step", "deepspeed_config"} <= set(curves.columns)
    assert "output_dir" not in curves.columns  # bookkeeping: never a reason to split
    with pytest.raises(ValueError, match="differ in more than the seed"):
        plot_loss_curves(curves, path=tmp_path / "mixed.png")
    assert plot_loss_curves(curves, path=tmp_path / "split.png", mixed="split").exists()
    only_default = curves[curves["run_id"] != 2]
    assert plot_loss_curves(only_default, path=tmp_path / "seeds.png").exists()


def test_a_seed_run_twice_is_counted_once_and_named(database):  # noqa: F811
    for run_id, seed in ((1, 1), (2, 1), (3, 2)):
        insert_run(database, run_id, {"seed": seed}, metrics=LOSS)
    runs = load_runs(db=database)
    with pytest.warns(UserWarning, match=r"seed run more than once.*full: seed \[1\]"):
        table = ablation_table(runs, "variant", "final.loss")
    assert table[["n_seeds", "n_runs"]].values.tolist() == [[2, 3]]
    assert seeds_label(runs) == "2 seeds, 3 runs" and seeds_label(runs.loc[[1, 3]]) == "2 seeds"


def test_the_deepspeed_config_is_compared_by_content_not_by_path(database):  # noqa: F811
    """Two checkouts' copies of one JSON are one setting; another ZeRO stage is not; monitors never count."""
    zero2 = {"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW"}, "train_batch_size": 16}
    insert_run(database, 1, {"seed": 1, "deepspeed_config": "/home/a/kd/ds_configs/zero2.json"}, metrics=LOSS,
               info={"deepspeed_config": dict(zero2, tensorboard={"enabled": True, "output_path": "/a/tb"})})
    insert_run(database, 2, {"seed": 2, "deepspeed_config": "/home/b/kd/ds_configs/zero2.json"}, metrics=LOSS,
               info={"deepspeed_config": zero2})
    runs = load_runs(db=database)
    assert runs.loc[1, "deepspeed_settings"] == runs.loc[2, "deepspeed_settings"]
    assert ablation_table(runs, "variant", "final.loss")[["n_seeds", "n_runs"]].values.tolist() == [[2, 2]]
    insert_run(database, 3, {"seed": 3, "deepspeed_config": "/home/a/kd/ds_configs/zero2.json"}, metrics=LOSS,
               info={"deepspeed_config": dict(zero2, zero_optimization={"stage": 3})})
    with pytest.raises(ValueError, match=r"full: deepspeed_settings \['[0-9a-f]{12}', '[0-9a-f]{12}'\]"):
        ablation_table(load_runs(db=database), "variant", "final.loss")


def test_the_code_commit_is_a_column_but_not_a_setting(database):  # noqa: F811
    """Which commit ran is shown per run (and NA where none was recorded), but a rerun after a commit that
    changed nothing trained is still a seed of the same setting."""
    insert_run(database, 1, {"seed": 1}, metrics=LOSS, info={"code": {"commit": "a" * 40, "dirty": False}})
    insert_run(database, 2, {"seed": 2}, metrics=LOSS, info={"code": {"commit": "b" * 40, "dirty": True}})
    insert_run(database, 3, {"seed": 3}, metrics=LOSS)
    runs = load_runs(db=database)
    assert runs["code_commit"].tolist()[:2] == ["a" * 40, "b" * 40] and runs["code_dirty"].tolist()[:2] == [False, True]
    assert runs["code_commit"].isna().tolist()[2]
    assert ablation_table(runs, "variant", "final.loss")[["n_seeds", "n_runs"]].values.tolist() == [[3, 3]]
