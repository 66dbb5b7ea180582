"""Any dataset of ours written as a COLMAP sparse model (one PINHOLE camera, points3D from the depth maps)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from raytrace.camera import c2w_to_colmap, image_rays
from raytrace.colmap import ColmapCamera, ColmapImage, ColmapModel, write_model
from raytrace.dataset_format import SPLITS, Frame, read_transforms, resolve_image, transforms_path
from raytrace.errors import InputError

MAX_POINTS = 20000  # points3D written from the depth maps of a dataset, at most


def dataset_model(out_dir: str | Path, max_points: int = MAX_POINTS) -> ColmapModel:
    """The COLMAP model of a dataset of ours in ``out_dir`` (every split; images named relative to it, one
    PINHOLE camera) with up to ``max_points`` points3D: surface points of the depth maps, coloured by the
    images, each tracked in the view it came from."""
    out_dir = Path(out_dir)
    frames = []
    for split in SPLITS:
        path = transforms_path(out_dir, split)
        if path.is_file():
            t = read_transforms(path)
            frames += [(path, t, i, fr) for i, fr in enumerate(t.frames)]
    if not frames:
        raise InputError(out_dir, "transforms_train.json", "no split files to convert")
    cameras: dict[int, ColmapCamera] = {}
    images: dict[int, ColmapImage] = {}
    ids, xyz, rgb, tracks = [], [], [], []
    per_frame = max(1, max_points // len(frames))
    for image_id, (path, t, i, fr) in enumerate(frames, start=1):
        image_path = resolve_image(out_dir, fr.file_path, path, f"frames[{i}].file_path")
        img = np.asarray(iio.imread(image_path))
        intr = t.intrinsics(img.shape[1], img.shape[0])
        key = (intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy)
        cam = next((c for c in cameras.values() if (c.width, c.height, *c.params) == key), None)
        if cam is None:
            cam = ColmapCamera(len(cameras) + 1, "PINHOLE", intr.width, intr.height, key[2:])
            cameras[cam.camera_id] = cam
        qvec, tvec = c2w_to_colmap(fr.transform_matrix)
        name = image_path.relative_to(out_dir.resolve()).as_posix()
        xys, pids = np.zeros((0, 2)), np.zeros(0, np.int64)
        depth = _frame_distance(out_dir, fr)
        if depth is not None:
            hit = np.flatnonzero(depth > 0)
            pick = hit[:: max(1, len(hit) // per_frame)][:per_frame]
            o, d = image_rays(torch.tensor(fr.transform_matrix, dtype=torch.float64), intr)
            p = (o.numpy() + depth[:, None] * d.numpy())[pick]
            first = len(ids) + 1
            pids = np.arange(first, first + len(pick), dtype=np.int64)
            xys = np.stack([pick % intr.width, pick // intr.width], axis=-1) + 0.5
            ids += pids.tolist()
            xyz.append(p)
            rgb.append(img.reshape(-1, img.shape[-1])[pick, :3].astype(np.uint8))
            tracks += [np.array([[image_id, j]]) for j in range(len(pick))]
        images[image_id] = ColmapImage(image_id, qvec, tvec, cam.camera_id, name, xys, pids)
    return ColmapModel(cameras, images, np.asarray(ids, dtype=np.int64),
                       np.concatenate(xyz) if xyz else np.zeros((0, 3)),
                       np.concatenate(rgb) if rgb else np.zeros((0, 3), np.uint8), np.zeros(len(ids)), tracks)


def _frame_distance(root: Path, frame: Frame) -> np.ndarray | None:
    """The exact ray distance ``(H * W,)`` of ``frame``: its ``distance_path`` (``.npz``) or a format-1
    ``depth_path`` (``.npy``); None when it has neither on disk."""
    if frame.distance_path is not None and (root / frame.distance_path).is_file():
        with np.load(root / frame.distance_path, allow_pickle=False) as npz:
            return npz["distance"].reshape(-1)
    if frame.depth_path is not None and frame.depth_path.endswith(".npy") and (root / frame.depth_path).is_file():
        return np.load(root / frame.depth_path, allow_pickle=False).reshape(-1)
    return None


def write_dataset_model(out_dir: str | Path) -> Path:
    """Write the dataset in ``out_dir`` as a COLMAP text model into ``out_dir/sparse/0/``; returns that folder."""
    folder = Path(out_dir) / "sparse" / "0"
    write_model(dataset_model(out_dir), folder)
    return folder
