"""MultiTaskVPT: one batched pass over several tasks' prompts equals running each task alone."""
import pytest
import torch

from vpt_explore.model.multitask import MultiTaskVPT

from vpt_explore.errors import ConfigError

from tests.conftest import small_vit
from tests.model.test_prefix import TOL, _max_diff, _prompted


def _three_tasks(vit, **cfg):
    return {"birds": _prompted(vit, seed=1, num_classes=3, **cfg),
            "cars": _prompted(vit, seed=2, num_classes=7, **cfg),
            "dogs": _prompted(vit, seed=3, num_classes=2, **cfg)}


@pytest.mark.parametrize("path, cfg", [
    ("prefix", dict(length=5)),
    ("token", dict(length=5)),
    ("token", dict(length=3, layers="shallow")),
    ("token", dict(length=1, location="add")),
    ("auto", dict(length=4, pool="image", learn_cls=True)),
])
def test_multitask_equals_per_task_runs(vit, path, cfg):
    tasks = _three_tasks(vit, **cfg)
    mt = MultiTaskVPT(vit, tasks, path=path).eval()
    images = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ids = ["cars", "birds", "dogs", "cars", "dogs", "birds", "cars"]
    with torch.no_grad():
        out = mt(images, ids)
        by_index = mt(images, torch.tensor([mt.names.index(t) for t in ids]))
        for b, t in enumerate(ids):
            alone = tasks[t](images[b:b + 1])[0]
            assert out[b].shape == alone.shape
            assert _max_diff(out[b], alone) < TOL
            assert torch.equal(out[b], by_index[b])
        grouped = mt.forward_by_task(images, ids)
    assert grouped["cars"][0].tolist() == [0, 3, 6]
    assert grouped["cars"][1].shape == (3, 7)


def test_multitask_auto_picks_path(vit):
    assert MultiTaskVPT(vit, _three_tasks(vit, length=2)).path == "prefix"
    assert MultiTaskVPT(vit, _three_tasks(vit, length=2, layers="shallow")).path == "token"


def test_multitask_refuses_mismatch_and_foreign_backbone(vit):
    tasks = {"a": _prompted(vit, length=5), "b": _prompted(vit, length=6, pool="image")}
    with pytest.raises(ConfigError, match="length.*pool"):
        MultiTaskVPT(vit, tasks)
    with pytest.raises(ConfigError, match="backbone"):
        MultiTaskVPT(vit, {"a": _prompted(small_vit(), length=5)})
    with pytest.raises(ConfigError, match="layers"):
        MultiTaskVPT(vit, _three_tasks(vit, length=2, layers="shallow"), path="prefix")
    with pytest.raises(ConfigError, match="task_ids"):
        MultiTaskVPT(vit, _three_tasks(vit, length=2)).eval()(torch.zeros(1, 3, 32, 32), ["cats"])


def test_multitask_refresh(vit):
    tasks = _three_tasks(vit, length=3)
    mt = MultiTaskVPT(vit, tasks).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tasks["dogs"].prompts.add_(torch.randn_like(tasks["dogs"].prompts))
        mt.refresh()
        out = mt(images, ["dogs", "birds"])
        assert _max_diff(out[0], tasks["dogs"](images[:1])[0]) < TOL


def test_multitask_prefix_cache_tracks_prompt_changes(vit):
    """Like PrefixViT: the cached K/V rows notice changed prompts without a call to refresh()."""
    tasks = _three_tasks(vit, length=3)
    mt = MultiTaskVPT(vit, tasks, path="prefix").eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    ids = ["dogs", "birds", "dogs"]
    with torch.no_grad():
        before = mt(images, ids)
        assert not mt.is_stale()
        tasks["dogs"].prompts.add_(torch.randn_like(tasks["dogs"].prompts))
        assert mt.is_stale()                            # it used to keep serving the old rows
        after = mt(images, ids)
        assert not mt.is_stale()
        assert _max_diff(before[0], after[0]) > 1e-3 and _max_diff(before[1], after[1]) < TOL
        for b, name in enumerate(ids):
            assert _max_diff(after[b], tasks[name](images[b:b + 1])[0]) < TOL
    assert not MultiTaskVPT(vit, tasks, path="token").eval().is_stale()  # no cache, never stale
