"""Training on captured photographs: a per-image appearance embedding and camera-pose refinement.

- **Appearance**: a learned code per training image (exposure, white balance), fed to the colour MLP only
  (:class:`nerf.field.NGPField`), as nerfacto does; views that are not training images use the mean code
  (:func:`appearance_description` says which).
- **Pose refinement**: per-image SO3xR3 deltas (axis-angle rotation, translation), nerfstudio's camera optimiser:
  a training ray of image ``i`` starts at ``o + t_i`` and points along ``R_i d``, ``R_i = exp(omega_i)``, so the
  refined camera-to-world is ``[R_i R | c + t_i]`` (:meth:`CameraRefinement.refined`). The translation is learned
  in half box diagonals (so its learning rate and penalty do not depend on the world's units); the deltas pay an
  L2 penalty (the norm of each image's rotation and translation, averaged, each with its own weight) and have a
  learning rate of their own.
"""

from __future__ import annotations

import torch
from torch import nn


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(N, 3, 3)`` of axis-angle vectors ``(N, 3)`` (Rodrigues' formula; its Taylor series
    near 0, so that the gradient at the identity is exact)."""
    theta2 = (omega * omega).sum(-1, keepdim=True)[..., None]  # (N, 1, 1)
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    zero = torch.zeros_like(omega[:, 0])
    wx, wy, wz = omega.unbind(-1)
    k = torch.stack([zero, -wz, wy, wz, zero, -wx, -wy, wx, zero], dim=-1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + a * k + b * (k @ k)


class CameraRefinement(nn.Module):
    """Per-image pose deltas ``deltas`` ``(images, 6)``: translation (in units of ``scale``, a float: half the box
    diagonal), then axis-angle rotation; zero at the start."""

    def __init__(self, images: int, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)
        self.deltas = nn.Parameter(torch.zeros(images, 6))

    def forward(
        self, image: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays ``(N, 3)`` of training images ``image`` ``(N,)`` (long) moved by their images' deltas."""
        d = self.deltas[image]
        rotated = (so3_exp(d[:, 3:]) @ dirs[:, :, None])[:, :, 0]
        return origins + d[:, :3] * self.scale, rotated

    def refined(self, poses: torch.Tensor) -> torch.Tensor:
        """The refined camera-to-world ``(images, 4, 4)`` of the training poses ``(images, 4, 4)``."""
        d = self.deltas.detach().to(poses)
        out = poses.clone()
        out[:, :3, :3] = so3_exp(d[:, 3:]) @ poses[:, :3, :3]
        out[:, :3, 3] = poses[:, :3, 3] + d[:, :3] * self.scale
        return out

    def penalty(self, rotation: float, translation: float) -> torch.Tensor:
        """``rotation * mean |omega| + translation * mean |t|`` over the images (0-d)."""
        return (self.deltas[:, 3:].norm(dim=-1).mean() * rotation
                + self.deltas[:, :3].norm(dim=-1).mean() * translation)

    def summary(self) -> dict[str, float]:
        """Mean and largest correction: rotation in degrees, translation in world units."""
        d = self.deltas.detach()
        rot, trans = d[:, 3:].norm(dim=-1).rad2deg(), d[:, :3].norm(dim=-1) * self.scale
        return {"pose_rotation_mean_deg": float(rot.mean()), "pose_rotation_max_deg": float(rot.max()),
                "pose_translation_mean": float(trans.mean()), "pose_translation_max": float(trans.max())}


class AppearanceEmbedding(nn.Module):
    """One learned code ``(dims,)`` per training image, zero at the start (so the mean code is a trained one);
    :meth:`forward` of ``None`` is the mean code."""

    def __init__(self, images: int, dims: int) -> None:
        super().__init__()
        self.codes = nn.Embedding(images, dims)
        nn.init.zeros_(self.codes.weight)

    def forward(self, image: torch.Tensor | None, n: int) -> torch.Tensor:
        """Codes ``(n, dims)``: of the training images ``image`` ``(n,)`` (long), or ``n`` copies of the mean."""
        if image is None:
            return self.codes.weight.mean(dim=0).expand(n, -1)
        return self.codes(image)


def appearance_description(field: nn.Module) -> str:
    """Which appearance code a render of ``field`` uses for a view that is not a training image."""
    embedding = getattr(field, "appearance", None)
    if embedding is None:
        return "none (no appearance embedding)"
    return f"mean of the {embedding.codes.num_embeddings} training images' codes"
