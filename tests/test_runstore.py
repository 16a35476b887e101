"""scorepde.runstore: one result file per run, atomic, skipped when present; grid shards."""

import os
import re

import pytest

from scorepde.runstore import RunStore, parse_shard, run_name, shard_of


def test_run_name_keeps_fields_apart():
    a = run_name(data="gmm8", beta=0.0015, seed=0, budget="small")
    assert a == "data=gmm8__beta=0.0015__seed=0__budget=small"
    assert run_name(data="gmm8", beta=0.00150001, seed=0, budget="small") != a
    assert run_name(data="gmm8", beta=0.0015, seed=1, budget="small") != a
    with pytest.raises(ValueError, match="unsafe"):
        run_name(data="a/b")


def test_save_load_done(tmp_path):
    store = RunStore(str(tmp_path / "runs"))
    key = dict(data="gmm8", beta=0.0, seed=2, budget="tiny")
    assert not store.done(**key)
    path = store.save({"nll": 1.5}, **key)
    assert store.done(**key) and os.path.basename(path).startswith("data=gmm8")
    assert store.load(**key) == {**key, "nll": 1.5}
    assert [r["nll"] for r in store.all()] == [1.5]
    assert not [f for f in os.listdir(tmp_path / "runs") if f.startswith(".tmp")]


def test_failed_write_leaves_no_result(tmp_path):
    store = RunStore(str(tmp_path))
    with pytest.raises(TypeError):
        store.save({"nll": object()}, data="x", seed=0)  # not JSON
    assert not store.done(data="x", seed=0) and os.listdir(tmp_path) == []


def test_shards_partition_the_grid():
    grid = list(range(7))
    parts = [list(shard_of(grid, parse_shard(f"{i}/3"))) for i in range(3)]
    assert sorted(sum(parts, [])) == grid and parts[0] == [0, 3, 6]
    assert list(shard_of(grid, parse_shard(None))) == grid
    for bad in ("2/2", "a/b", "1"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_shards_split_each_kind_of_run_evenly():
    # the toy grid's order: a vanilla run before each preset FP run, then FP runs only, so
    # plain every-other dealing gives shard 0 every vanilla run and shard 1 the costly FP runs
    grid = [(m, s) for s in range(4) for m in ("vanilla", "fp")] + [("fp2", s) for s in range(4)]
    parts = [list(shard_of(grid, parse_shard(f"{i}/2"), kind=lambda run: run[0])) for i in range(2)]
    assert sorted(sum(parts, [])) == sorted(grid)
    for part in parts:
        assert [m for m, _ in part].count("vanilla") == 2 and [m for m, _ in part].count("fp") == 2
    assert [m for m, _ in shard_of(grid, (0, 2))].count("vanilla") == 4  # the plain dealing


def test_shards_stay_balanced_when_kinds_have_odd_counts():
    # finetune.py's grid with 3 seeds: DSM and 3 FP β, 3 runs each; dealing each kind from
    # shard 0 gave shard 0 eight runs and shard 1 four
    grid = [(b, s) for b in (0.0, 0.1, 0.01, 1.0) for s in range(3)]
    parts = [list(shard_of(grid, parse_shard(f"{i}/2"), kind=lambda run: run[0])) for i in range(2)]
    assert sorted(sum(parts, [])) == sorted(grid)
    assert [len(p) for p in parts] == [6, 6]
    for b in (0.0, 0.1, 0.01, 1.0):
        assert sorted(sum(r[0] == b for r in p) for p in parts) == [1, 2]


def _grid(store, seeds, ran):
    """A resumable grid as the scripts run one: skip what is done, run and save the rest."""
    for seed in seeds:
        if not store.done(kind="toy", seed=seed):
            ran.append(seed)
            store.save({"nll": float(seed)}, kind="toy", seed=seed)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_a_dict"])
def test_a_damaged_run_file_is_redone_alone_and_kept_aside(tmp_path, damage):
    store = RunStore(str(tmp_path))
    _grid(store, range(4), [])
    victim = store.path(kind="toy", seed=2)
    text = open(victim).read()
    bad = {"truncate": text[: len(text) // 2], "garbage": "\x00\x01 not json", "not_a_dict": "[1, 2]"}[damage]
    with open(victim, "w") as f:
        f.write(bad)
    others = {s: os.stat(store.path(kind="toy", seed=s)).st_mtime_ns for s in (0, 1, 3)}
    ran = []
    with pytest.warns(UserWarning, match=re.escape(victim)):
        _grid(store, range(4), ran)
    assert ran == [2]  # only the damaged run is redone
    assert store.load(kind="toy", seed=2)["nll"] == 2.0
    assert {s: os.stat(store.path(kind="toy", seed=s)).st_mtime_ns for s in (0, 1, 3)} == others
    assert open(victim + ".corrupt").read() == bad  # nothing is lost
    assert [r["seed"] for r in store.all()] == [0, 1, 2, 3]


def test_all_and_load_skip_and_name_a_damaged_file(tmp_path):
    store = RunStore(str(tmp_path))
    store.save({"nll": 1.0}, kind="toy", seed=0)
    store.save({"nll": 2.0}, kind="toy", seed=1)
    with open(store.path(kind="toy", seed=1), "w") as f:
        f.write('{"nll": ')
    with pytest.warns(UserWarning, match="does not parse"):
        assert [r["seed"] for r in store.all()] == [0]
    with pytest.raises(ValueError, match="seed=1"):
        store.load(kind="toy", seed=1)
