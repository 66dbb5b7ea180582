"""Every "auto" of a run, decided in one place: :func:`resolve` turns a config and a dataset's description into the
run's settings, which the run's ``config.json`` and its checkpoints record."""

from __future__ import annotations

import dataclasses

from nerf.config import PRESETS, TrainConfig, preset_name
from raytrace.bounds import box_text
from raytrace.reader import DatasetDescription

UNBOUNDED_CONE_ANGLE = 1.0 / 256.0
"""instant-NGP's cone angle for scenes with ``aabb_scale`` > 1: the default of contracted scenes."""

UNBOUNDED_DISTORTION = 0.03
"""mip-NeRF 360's distortion-loss weight, the default of contracted scenes (with :data:`UNBOUNDED_NEAR_GRADIENTS`:
alone it lets a contracted scene collapse into a screen in front of each camera). It carves the fog a contracted
scene starts in (bench/RESULTS.md)."""

UNBOUNDED_NEAR_GRADIENTS = 1.0
"""The radius of near-camera gradient scaling of contracted scenes, in half box diagonals."""

LR_FINAL_FACTOR = 0.03
"""The learning rate at a run's end, over its first: instant-NGP's decay, the default of bounded scenes."""

UNBOUNDED_LR_FINAL_FACTOR = 0.15
"""The same for contracted scenes: the fox from instant-ngp's JSON learned more with it by the end of 300 s, and
our unbounded render (whitted) as much (bench/RESULTS.md); the object scene learned a little less."""

UNBOUNDED_CPU_SAMPLES = 1 << 13
"""The sample budget of a step of a contracted scene where the preset leaves it open (the CPU's; the rays adapt to
it, down to ``batch_rays / RAY_RANGE``): a ray of a contracted scene takes several times a bounded scene's samples,
and a fixed batch of rays made its step's cost grow with them. Under a time budget the run takes as many steps as
fit, and of the budgets tried (2^13 to 2^16) the smallest learned most in 300 s (bench/RESULTS.md); the fox's steps
keep to the floor of 128 rays until its grid carves. Bounded scenes keep the fixed batch (0)."""


def resolve(cfg: TrainConfig, description: DatasetDescription | None, device_type: str) -> TrainConfig:
    """``cfg`` with every ``None`` / ``auto`` decided for ``description`` (None: a bounded scene in ``cfg.aabb``)
    on a ``device_type`` device:

    - the preset (``auto``: ``gpu`` on CUDA, else ``cpu``) fills ``steps`` (not under a time budget: the budget
      is the run's length, and the learning rate decays over it), ``batch_rays``, ``samples_per_step``, ``hash``
      and ``march``;
    - the scene box ``aabb``: the dataset's, stated or inferred (see :mod:`raytrace.bounds`);
    - ``scene_contraction``: ``mipnerf360`` for an unbounded dataset, except for ``--model nerf``; a contracted
      scene steps with :data:`UNBOUNDED_CONE_ANGLE`, weighs :data:`UNBOUNDED_DISTORTION`, scales near-camera
      gradients within :data:`UNBOUNDED_NEAR_GRADIENTS`, decays its learning rate to
      :data:`UNBOUNDED_LR_FINAL_FACTOR` (a bounded one to :data:`LR_FINAL_FACTOR`) and, where the preset leaves
      the sample budget open, marches :data:`UNBOUNDED_CPU_SAMPLES` per step; a bounded one does none of the rest;
    - ``capture``: captured data (``description.captured``: photographs, where exposure varies and the poses come
      from structure from motion) gets the per-image appearance embedding (``--model ngp`` only) and the
      camera-pose refinement; renders get neither;
    - ``inferred``: the dataset's inferred choices that no flag overrode, each naming its flag.
    """
    preset = preset_name(cfg.preset, device_type)
    timed = {"steps"} if cfg.time_budget is not None else set()  # the budget is the run's length
    cfg = dataclasses.replace(cfg, preset=preset, **{k: v for k, v in PRESETS[preset].items()
                                                     if getattr(cfg, k) is None and k not in timed})
    assert cfg.march is not None
    bounded = description is None or description.bounds.bounded
    aabb = cfg.aabb
    if aabb is None and description is not None:
        aabb = tuple(float(v) for v in description.bounds.aabb.reshape(-1))
    contraction = cfg.march.scene_contraction
    if contraction == "auto":
        contraction = "none" if bounded or cfg.model == "nerf" else "mipnerf360"
    contracted = contraction != "none"
    march = dataclasses.replace(cfg.march, scene_contraction=contraction, cone_angle=_or(
        cfg.march.cone_angle, UNBOUNDED_CONE_ANGLE if contracted else 0.0))
    optim = dataclasses.replace(
        cfg.optim,
        lr_final_factor=_or(cfg.optim.lr_final_factor, UNBOUNDED_LR_FINAL_FACTOR if contracted else LR_FINAL_FACTOR),
        distortion=_or(cfg.optim.distortion, UNBOUNDED_DISTORTION if contracted else 0.0),
        near_gradients=_or(cfg.optim.near_gradients, UNBOUNDED_NEAR_GRADIENTS if contracted else 0.0),
    )
    samples = cfg.samples_per_step
    if samples is None:
        samples = UNBOUNDED_CPU_SAMPLES if contracted else 0
    captured = description is not None and description.captured
    capture = dataclasses.replace(
        cfg.capture,
        appearance_embedding=_or(cfg.capture.appearance_embedding, captured and cfg.model == "ngp"),
        pose_refinement=_or(cfg.capture.pose_refinement, captured),
    )
    overridden = {"--aabb": cfg.aabb is not None, "--scene-contraction": cfg.march.scene_contraction != "auto"}
    inferred = cfg.inferred or tuple(
        str(i) for i in (description.inferred if description is not None else [])
        if not overridden.get(i.flag.split()[0], False))
    return dataclasses.replace(cfg, aabb=aabb, march=march, optim=optim, samples_per_step=samples, capture=capture,
                               inferred=inferred)


def _or(value: float | bool | None, default: float | bool) -> float | bool:
    return default if value is None else value


def startup_line(cfg: TrainConfig) -> str:
    """The line a run prints at its start: the scene's box and kind, what photographs get, and what was inferred
    (with its flags)."""
    kind = "contracted (mipnerf360)" if cfg.march is not None and cfg.march.scene_contraction != "none" else "bounded"
    box = "none" if cfg.aabb is None else box_text([cfg.aabb[:3], cfg.aabb[3:]])
    inferred = "; ".join(cfg.inferred)
    c = cfg.capture
    capture = (f"appearance embedding {'on' if c.appearance_embedding else 'off'}, pose refinement "
               f"{'on' if c.pose_refinement else 'off'} (--[no-]appearance-embedding, --[no-]pose-refinement)")
    if c.appearance_embedding or c.pose_refinement:
        capture += f", learned from {c.per_image_start:g} of the run on (--per-image-start)"
    return f"scene: box {box}, {kind}; {capture}" + (f"; inferred {inferred}" if inferred else "")
