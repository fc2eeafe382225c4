"""The default backbone's recipe: offline scenes, distillation from the offline DINOv2, resume."""
import json

import numpy as np
import torch

import vpt_explore as vx
from vpt_explore.backbones import load, pretrain_dino, scenes
from vpt_explore.data import sources


def test_scenes_are_seeded_and_use_no_downstream_image():
    items = np.random.default_rng(0).integers(0, 255, (20, 28, 28), dtype=np.uint8)
    a, b = scenes.scenes(6, 0, items), scenes.scenes(6, 0, items)
    assert a.shape == (6, 64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, scenes.scenes(6, 1, items))
    assert not set(scenes.PHOTOS) & (set(sources.TEXTURE_IMAGES) | set(sources.MODALITY_IMAGES))


def test_flip_mirrors_scene_and_teacher_grid_together():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    t = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)   # [CLS] + a 2x2 grid
    fx, ft = pretrain_dino._flip(x, t, torch.tensor([True, False]))
    assert torch.equal(fx[0], x[0].flip(-1)) and torch.equal(fx[1], x[1])
    assert ft[0, :, 0].tolist() == [0, 2, 1, 4, 3] and torch.equal(ft[1], t[1])


def test_pretrain_writes_a_loadable_backbone_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrain_dino, "TEACHER_PX", 28)  # a 2x2 teacher grid keeps the test small
    monkeypatch.setattr(pretrain_dino, "TINY_DINO_ARGS", dict(pretrain_dino.TINY_DINO_ARGS, img_size=8))
    monkeypatch.setattr(pretrain_dino, "_tiny_dino_vit", lambda: load._tiny_dino_vit(img_size=8))
    log = pretrain_dino.pretrain(n_scenes=8, epochs=1, batch_size=4, out=tmp_path, work=tmp_path / "w")
    assert [e["epoch"] for e in log["epochs"]] == [1] and log["epochs"][0]["distill_loss"] > 0
    assert (tmp_path / "tiny_dino.safetensors").exists()
    assert json.loads((tmp_path / "tiny_dino.log.json").read_text())["recipe"]["seed"] == 0
    log = pretrain_dino.pretrain(n_scenes=8, epochs=2, batch_size=4, out=tmp_path, work=tmp_path / "w")
    assert "resumed after epoch 1" in capsys.readouterr().out and len(log["epochs"]) == 2


def test_shipped_default_backbone_and_its_log():
    vit = vx.load_backbone()
    assert vit.vpt_name == "tiny-dino" and vit.num_classes == 0 and vit.patch_embed.img_size == (32, 32)
    log = json.loads((pretrain_dino.ASSETS / "tiny_dino.log.json").read_text())
    assert log["recipe"]["teacher"].startswith("dinov2-s14-offline") and len(log["epochs"]) == log["recipe"]["epochs"]
    losses = [e["distill_loss"] for e in log["epochs"]]
    assert losses == sorted(losses, reverse=True)  # the distillation loss fell every epoch
