"""Captured-data training (nerf/per_image.py): the SO3 exp map, pose refinement recovering perturbed poses, the
appearance embedding learning per-image exposure, their checkpoints and ``nerf-eval``."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nerf.cli import eval_main
from nerf.config import CaptureConfig
from nerf.data import RaySampler, Split, load_dataset
from nerf.loop import train
from nerf.model import build_model, load_run
from nerf.per_image import AppearanceEmbedding, CameraRefinement, so3_exp
from nerf.render import render_image
from nerf.resolve import resolve
from nerf.step import StaticStep, make_optimizer, train_step
from nerf.train import open_session
from raytrace.camera import image_rays
from raytrace.reader import read_dataset
from tests.conftest import tiny_config

RIG_RADIUS = 3.2  # the ball scene's camera radius (tests/conftest.py SCENE)


def test_so3_exp_is_rodrigues() -> None:
    angle = 0.7
    axis = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    axis = axis / axis.norm()
    x, y, z = axis.tolist()
    c, s, t = math.cos(angle), math.sin(angle), 1.0 - math.cos(angle)
    expected = torch.tensor([[t * x * x + c, t * x * y - s * z, t * x * z + s * y],
                             [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
                             [t * x * z - s * y, t * y * z + s * x, t * z * z + c]], dtype=torch.float64)
    got = so3_exp((axis * angle)[None])[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(so3_exp(torch.zeros(1, 3))[0], torch.eye(3))
    # at the identity, d(R v)/d omega = -[v]x (R v ~ v + omega x v), also through the small-angle branch
    v = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda w: so3_exp(w[None])[0] @ v, torch.zeros(3, dtype=torch.float64))
    skew = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], dtype=torch.float64)
    torch.testing.assert_close(jac, -skew)


def rotation_error_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle ``(N,)`` in degrees between the rotations of poses ``(N, 4, 4)``."""
    rel = a[:, :3, :3].transpose(1, 2) @ b[:, :3, :3]
    cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def perturbed(poses: torch.Tensor, degrees: float, shift: float, seed: int) -> torch.Tensor:
    """``poses`` ``(N, 4, 4)`` each rotated by ``degrees`` about a random axis through its centre and moved by
    ``shift`` in a random direction."""
    gen = torch.Generator().manual_seed(seed)
    axes = torch.nn.functional.normalize(torch.randn(len(poses), 3, generator=gen), dim=-1)
    moves = torch.nn.functional.normalize(torch.randn(len(poses), 3, generator=gen), dim=-1) * shift
    out = poses.clone()
    out[:, :3, :3] = so3_exp(axes * math.radians(degrees)) @ poses[:, :3, :3]
    out[:, :3, 3] += moves
    return out


def view_error_deg(a: torch.Tensor, b: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Mean angle in degrees between the directions in which the cameras ``a`` and ``b`` ``(N, 4, 4)`` see
    ``points`` ``(P, 3)`` (each in its own camera frame): how far apart their images of the scene are."""

    def seen(poses: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize((points[None] - poses[:, None, :3, 3]) @ poses[:, :3, :3], dim=-1)

    return torch.rad2deg(torch.arccos((seen(a) * seen(b)).sum(-1).clamp(-1.0, 1.0))).mean()


def test_pose_refinement_recovers_perturbed_poses(tiny_run) -> None:
    """A trained field, frozen; every training camera turned by 1 degree and moved by 1% of the rig radius; the
    training step with pose refinement (default learning rate and penalties) brings the views of the scene back
    to a small fraction of their error. A small rotation of a camera and a sideways move by the ball's distance
    times the angle give almost the same image of a small object, so what the photographs pin down, and what is
    checked to a fraction, is the view (the directions to points on the ball); the rotation error alone falls
    less."""
    _, result = tiny_run
    model = copy.deepcopy(result.model)
    split = result.dataset.splits["train"]
    truth = split.poses
    wrong = perturbed(truth, 1.0, 0.01 * RIG_RADIUS, seed=4)
    diagonal = float((model.march.aabb[1] - model.march.aabb[0]).norm())
    model.cameras = CameraRefinement(len(split), 0.5 * diagonal)
    cfg = dataclasses.replace(result.config, capture=CaptureConfig(pose_refinement=True), batch_rays=2048)
    opt, _ = make_optimizer(cfg, model.field, model.cameras)
    opt.param_groups[0]["lr"] = 0.0  # the field stays as trained: only the poses learn
    sampler = RaySampler(dataclasses.replace(split, poses=wrong), torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    ball = torch.nn.functional.normalize(torch.randn(500, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    ball = ball * 0.6  # the scene's sphere
    # Adam moves a delta by about its learning rate a step: 1 degree takes 0.0175 / pose_lr steps; allow 3 times
    for _ in range(round(0.05 / CaptureConfig.pose_lr)):
        train_step(model, opt, sampler, cfg, gen)
    refined = model.cameras.refined(wrong)
    view_before, view_after = view_error_deg(wrong, truth, ball), view_error_deg(refined, truth, ball)
    rot_before, rot_after = rotation_error_deg(wrong, truth).mean(), rotation_error_deg(refined, truth).mean()
    print(f"view error {view_before:.3f} -> {view_after:.3f} deg, rotation {rot_before:.3f} -> {rot_after:.3f} deg")
    assert view_after < 0.2 * view_before
    assert rot_after < 0.8 * rot_before


def exposure_dataset(ball: Path, out: Path) -> Path:
    """A copy of the ``ball`` dataset whose odd training images are half as bright (an exposure change)."""
    root = out / "exposure"
    shutil.copytree(ball, root)
    frames = json.loads((root / "transforms_train.json").read_text())["frames"]
    for i, frame in enumerate(frames):
        if i % 2:
            path = root / f"{frame['file_path']}.png"
            img = iio.imread(path).astype(np.float32)
            img[..., :3] *= 0.5
            iio.imwrite(path, (img + 0.5).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def captured_run(ball: Path, tmp_path_factory: pytest.TempPathFactory):
    """A run with an appearance embedding and pose refinement on the exposure dataset, both learning from its
    first step (their start has its own test)."""
    tmp = tmp_path_factory.mktemp("captured")
    data = exposure_dataset(ball, tmp)
    cfg = tiny_config(data, tmp / "runs", steps=250, capture={
        "appearance_embedding": True, "pose_refinement": True, "appearance_dims": 8, "per_image_start": 0.0})
    return train(cfg, quiet=True)


def surface_colours(split: Split, model, image: torch.Tensor | None) -> torch.Tensor:
    """Colours ``(M, 3)`` the model's field gives the surface points of ``split``'s first view (where its render
    is opaque) in training image ``image`` (0-d long; None: the mean code)."""
    field = model.field
    out = render_image(model, split.poses[0], split.intrinsics, background=torch.ones(3))
    origins, dirs = image_rays(split.poses[0], split.intrinsics)
    hit = out["opacity"].reshape(-1) > 0.9
    points = origins[hit] + dirs[hit] * out["depth"].reshape(-1)[hit, None]
    _, geo = field.density(points)
    codes = None if image is None else image.expand(len(points))
    return field.rgb(geo, dirs[hit], codes)


@torch.no_grad()
def test_appearance_codes_learn_each_images_exposure_and_novel_views_use_the_mean(captured_run) -> None:
    model, split = captured_run.model, captured_run.dataset.splits["test"]
    field = model.field
    bright = [surface_colours(split, model, torch.tensor(i)).mean() for i in (0, 2, 4, 6)]
    dark = [surface_colours(split, model, torch.tensor(i)).mean() for i in (1, 3, 5, 7)]
    mean = surface_colours(split, model, None).mean()
    print(f"bright {[f'{b:.3f}' for b in bright]}, dark {[f'{d:.3f}' for d in dark]}, mean code {mean:.3f}")
    assert min(bright) > max(dark)  # every image's own exposure, learned in its code
    assert sum(bright) > 1.35 * sum(dark)  # about 2:1
    assert min(dark) < mean < max(bright)
    codes = field.appearance.codes.weight
    torch.testing.assert_close(field.appearance(None, 1)[0], codes.mean(dim=0))
    # a held-out render is the mean code's: its surface is as bright as the mean code's colours
    out = render_image(model, split.poses[0], split.intrinsics, background=torch.ones(3))
    assert abs(float(out["rgb"][out["opacity"] > 0.9].mean()) - float(mean)) < 0.05


def test_codes_start_at_zero_so_the_mean_code_is_every_images() -> None:
    """The codes start at zero, not at nerfacto's N(0, 1): the mean code that views other than training images use
    is then, at the start, every training image's code, not a point the colour MLP was never trained on."""
    embedding = AppearanceEmbedding(5, 8)
    codes = embedding(torch.arange(5), 5)
    torch.testing.assert_close(codes, embedding(None, 5))
    assert not codes.any()


def test_codes_and_pose_deltas_start_at_their_share_of_the_run(ball: Path, tmp_path: Path) -> None:
    """Before ``capture.per_image_start`` of the run every training ray takes the mean code and its camera as given:
    the codes learn as one and the deltas stay zero; from then on each image's own are learned. The share done is
    that of the steps or of the time budget, whichever is larger."""
    capture = {"appearance_embedding": True, "pose_refinement": True, "per_image_start": 0.5}
    session = open_session(tiny_config(ball, tmp_path, steps=40, time_budget=100.0, capture=capture))
    codes, deltas = session.model.field.appearance.codes.weight, session.model.cameras.deltas
    for _ in range(20):
        session.advance(seconds=0.0)
    assert not session.per_image
    assert codes.abs().max() > 0 and (codes == codes[0]).all()  # the mean code learned: every image's
    assert not deltas.any()
    for _ in range(5):
        session.advance(seconds=0.0)
    assert session.per_image
    assert (codes != codes[0]).any() and deltas.abs().max() > 0
    by_time = open_session(tiny_config(ball, tmp_path, steps=40, time_budget=100.0, capture=capture))
    by_time.advance(seconds=49.0)
    assert not by_time.per_image
    by_time.advance(seconds=50.0)
    assert by_time.per_image and by_time.step == 2


def test_checkpoint_round_trip_and_nerf_eval_with_both(captured_run, capsys) -> None:
    run_dir = captured_run.run_dir
    cfg, model, ckpt = load_run(run_dir, "cpu")
    assert cfg.capture.appearance_embedding and cfg.capture.pose_refinement
    assert ckpt["format_version"] == 4 and ckpt["extra"]["train_images"] == 16
    torch.testing.assert_close(model.cameras.deltas, captured_run.model.cameras.deltas, rtol=0, atol=0)
    assert float(model.cameras.deltas.abs().max()) > 0  # the poses did move in training
    torch.testing.assert_close(model.field.appearance.codes.weight, captured_run.model.field.appearance.codes.weight,
                               rtol=0, atol=0)
    split = captured_run.dataset.splits["test"]
    before = render_image(captured_run.model, split.poses[0], split.intrinsics, background=torch.ones(3))
    after = render_image(model, split.poses[0], split.intrinsics, background=torch.ones(3))
    torch.testing.assert_close(after["rgb"], before["rgb"], rtol=0, atol=1e-5)
    assert eval_main([str(run_dir), "--quiet"]) == 0
    metrics = json.loads((run_dir / "metrics_test.json").read_text())
    assert metrics["appearance"] == "mean of the 16 training images' codes"
    assert metrics["pose_rotation_max_deg"] > 0
    assert metrics["psnr"] > 15.0


def test_format_3_checkpoints_still_load(tiny_run, tmp_path: Path) -> None:
    _, result = tiny_run
    _, _, ckpt = load_run(result.run_dir, "cpu")
    old = {k: v for k, v in ckpt.items() if k != "cameras"}
    old["format_version"] = 3
    path = tmp_path / "checkpoints" / "step_0000300.pt"
    path.parent.mkdir()
    torch.save(old, path)
    _, model, _ = load_run(path, "cpu")
    assert model.cameras is None and model.field.appearance is None


def test_capture_defaults_follow_the_data(ball: Path, tmp_path: Path) -> None:
    assert not load_dataset(ball, splits=("train",)).captured
    lens = tmp_path / "lens"
    shutil.copytree(ball, lens)
    for path in lens.glob("transforms_*.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "k1": 0.01, "p2": 0.0}))
    assert load_dataset(lens, splits=("train",)).captured
    cfg = tiny_config(ball, tmp_path)
    rendered, photos = read_dataset(ball), read_dataset(lens)
    on, off = resolve(cfg, photos, "cpu").capture, resolve(cfg, rendered, "cpu").capture
    assert (on.appearance_embedding, on.pose_refinement) == (True, True)
    assert (off.appearance_embedding, off.pose_refinement) == (False, False)
    forced = dataclasses.replace(cfg, capture=CaptureConfig(appearance_embedding=False, pose_refinement=True))
    assert resolve(forced, rendered, "cpu").capture.pose_refinement
    assert not resolve(forced, photos, "cpu").capture.appearance_embedding


def test_static_step_trains_the_poses_and_codes(ball: Path, tmp_path: Path) -> None:
    """The sync-free step (CUDA's, run eagerly here) applies the pose deltas and the appearance codes too."""
    cfg = tiny_config(ball, tmp_path, batch_rays=256, samples_per_step=4096,
                      capture={"appearance_embedding": True, "pose_refinement": True})
    cfg = resolve(cfg, None, "cpu")
    dataset = load_dataset(ball, splits=("train",))
    model = build_model(cfg, dataset.aabb, torch.device("cpu"), len(dataset.splits["train"]))
    codes = model.field.appearance.codes.weight.detach().clone()
    opt = torch.optim.Adam([{"params": list(model.field.parameters())},
                            {"params": list(model.cameras.parameters()), "lr": cfg.capture.pose_lr}], lr=1e-2)
    sampler = RaySampler(dataset.splits["train"], torch.Generator().manual_seed(0))
    step = StaticStep(model, opt, sampler, cfg, torch.Generator().manual_seed(1), graph=False)
    for _ in range(3):
        assert not bool(step()[4])
    assert float(model.cameras.deltas.abs().max()) > 0
    assert not torch.equal(model.field.appearance.codes.weight, codes)
