"""Structure from motion with pycolmap (4.2): SIFT features, matching, mapping, into a COLMAP database and
model in a work folder. One camera shared by every image. Each call handles a slice of the images or pairs so
that a progress bar can follow it.

Matching: ``exhaustive`` (every pair) or ``sequential`` (each image with the next :data:`SEQUENTIAL_OVERLAP`
and those 16, 32, 64 further on, plus loop closure: :data:`LOOP_KEYFRAMES` frames spread over the sequence,
matched all against all; COLMAP's own loop detection needs a vocabulary tree downloaded from the internet).
``auto``: exhaustive up to :data:`EXHAUSTIVE_UP_TO` photos, sequential for more and for video.

:func:`triangulate`: sparse points of images whose poses are known (a dataset's), for its box.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pycolmap
from tqdm import tqdm

from raytrace.camera import OPENCV_TO_OPENGL, Intrinsics
from raytrace.capture.frames import downscale
from raytrace.errors import InputError

MATCHERS = ("auto", "exhaustive", "sequential")
MAPPERS = ("incremental", "global")
EXHAUSTIVE_UP_TO = 100
SEQUENTIAL_OVERLAP = 10
SEQUENTIAL_JUMPS = (16, 32, 64)
LOOP_KEYFRAMES = 20
IMAGES_PER_CALL = 8
PAIRS_PER_CALL = 150
SEED = 0  # pycolmap's random seed: reruns give the same model
TRIANGULATION_SIZE = 640  # :func:`triangulate` runs SIFT on images shrunk to at most this many pixels a side
TRIANGULATION_FEATURES = 1024  # and keeps at most this many features an image
TRIANGULATION_NEIGHBOURS = 16  # and matches each image with the images of this many nearest cameras


def device() -> pycolmap.Device:
    """CUDA where this pycolmap wheel was built with it, else the CPU."""
    return pycolmap.Device.cuda if pycolmap.has_cuda else pycolmap.Device.cpu


def choose_matcher(matcher: str, count: int, video: bool) -> str:
    """``matcher`` with ``auto`` resolved for ``count`` images (from a video or not)."""
    if matcher != "auto":
        return matcher
    return "sequential" if video or count > EXHAUSTIVE_UP_TO else "exhaustive"


def image_pairs(names: list[str], matcher: str) -> list[tuple[str, str]]:
    """The pairs of ``names`` (in capture order) to match: every pair, or sequential with loop closure."""
    if matcher == "exhaustive":
        return list(itertools.combinations(names, 2))
    n = len(names)
    offsets = (*range(1, SEQUENTIAL_OVERLAP + 1), *SEQUENTIAL_JUMPS)
    pairs = {(i, i + k) for i in range(n) for k in offsets if i + k < n}
    keys = sorted({round(j * (n - 1) / max(LOOP_KEYFRAMES - 1, 1)) for j in range(min(LOOP_KEYFRAMES, n))})
    pairs |= set(itertools.combinations(keys, 2))
    return [(names[i], names[j]) for i, j in sorted(pairs)]


def nearest_pairs(c2ws: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of cameras ``c2ws`` ``(N, 4, 4)`` where either is among the other's ``k``
    nearest (camera centres), sorted."""
    centres = c2ws[:, :3, 3]
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    nearest = np.argsort(distance, axis=1, kind="stable")[:, : min(k, len(c2ws) - 1)]
    return sorted({(min(i, int(j)), max(i, int(j))) for i, row in enumerate(nearest) for j in row})


def extract(database: Path, image_dir: Path, names: list[str], camera_model: str, max_image_size: int,
            camera_params: str = "", max_features: int | None = None) -> None:
    """SIFT features of ``names`` (in ``image_dir``) into ``database``, one ``camera_model`` camera for all (its
    ``camera_params`` where known, COLMAP's comma-separated list); SIFT runs on the images shrunk to
    ``max_image_size`` pixels on their long side (keypoints in full-size pixels) and keeps at most
    ``max_features`` an image (None: COLMAP's default)."""
    pycolmap.Database.open(database).close()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    reader.camera_params = camera_params
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = max_image_size
    if max_features is not None:
        extraction.sift.max_num_features = max_features
    pycolmap.import_images(database, image_dir, pycolmap.CameraMode.SINGLE, names, reader)
    with tqdm(total=len(names), desc="features", unit="img") as bar:
        for start in range(0, len(names), IMAGES_PER_CALL):
            chunk = names[start : start + IMAGES_PER_CALL]
            pycolmap.extract_features(database, image_dir, image_names=chunk, camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options=reader, extraction_options=extraction, device=device())
            bar.update(len(chunk))


def match(database: Path, pairs: list[tuple[str, str]], work: Path) -> None:
    """Match and geometrically verify ``pairs`` of image names in ``database``."""
    pair_file = work / "pairs.txt"
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = SEED
    with tqdm(total=len(pairs), desc="matching", unit="pair") as bar:
        for start in range(0, len(pairs), PAIRS_PER_CALL):
            chunk = pairs[start : start + PAIRS_PER_CALL]
            pair_file.write_text("".join(f"{a} {b}\n" for a, b in chunk))
            options = pycolmap.ImportedPairingOptions()
            options.match_list_path = str(pair_file)
            pycolmap.match_image_pairs(database, pairing_options=options, verification_options=verification,
                                       device=device())
            bar.update(len(chunk))


def reconstruct(database: Path, image_dir: Path, out: Path, mapper: str, total: int) -> pycolmap.Reconstruction | None:
    """The largest model that ``mapper`` builds from ``database`` (written under ``out``), or None."""
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=total, desc=f"{mapper} mapping", unit="img") as bar:
        if mapper == "global":
            options = pycolmap.GlobalPipelineOptions()
            options.random_seed = SEED
            models = pycolmap.global_mapping(database, image_dir, out, options)
        else:
            options = pycolmap.IncrementalPipelineOptions()
            options.random_seed = SEED
            models = pycolmap.incremental_mapping(database, image_dir, out, options,
                                                  next_image_callback=lambda: bar.update(int(bar.n < total)))
        best = max(models.values(), key=lambda m: m.num_reg_images(), default=None)
        bar.n = best.num_reg_images() if best is not None else 0
        bar.refresh()
    return best


def run_sfm(image_dir: Path, names: list[str], work: Path, *, matcher: str, mapper: str, camera_model: str,
            max_image_size: int, video: bool, verbose: bool = False) -> pycolmap.Reconstruction | None:
    """Features, matches and the largest model of the images ``names`` in ``image_dir``; the database and the
    mapper's output go into ``work`` (emptied first)."""
    pycolmap.logging.minloglevel = 0 if verbose else 2
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    database = work / "database.db"
    try:
        extract(database, image_dir, names, camera_model, max_image_size)
        match(database, image_pairs(names, choose_matcher(matcher, len(names), video)), work)
        return reconstruct(database, image_dir, work / "models", mapper, len(names))
    except ValueError as e:  # pycolmap's failed checks (an image it cannot read, a corrupt database)
        raise InputError(image_dir, None, f"pycolmap failed: {str(e).splitlines()[0]}") from None


def triangulate(images: list[np.ndarray], c2ws: np.ndarray, intrs: list[Intrinsics], work: Path) -> np.ndarray:
    """Sparse points ``(P, 3)`` of ``images`` (each ``(H, W, 3+)`` float in [0, 1]) seen by cameras ``c2ws``
    ``(N, 4, 4)`` (OpenGL axes) with full-size ``intrs``: SIFT features (at most :data:`TRIANGULATION_FEATURES`
    an image, on the images shrunk by a whole factor to at most :data:`TRIANGULATION_SIZE` pixels a side),
    matched with the images of the :data:`TRIANGULATION_NEIGHBOURS` nearest cameras (:func:`nearest_pairs`),
    triangulated with the poses held fixed (COLMAP's point triangulator). The images and the database go into
    ``work``."""
    pycolmap.logging.minloglevel = 2
    pycolmap.set_random_seed(SEED)
    image_dir, database = work / "images", work / "database.db"
    image_dir.mkdir(parents=True)
    names = [f"{i:05d}.png" for i in range(len(images))]
    groups: dict[Intrinsics, list[str]] = {}
    for name, image, intr in zip(names, images, intrs, strict=True):
        f = max(1, -(-max(image.shape[:2]) // TRIANGULATION_SIZE))
        iio.imwrite(image_dir / name, downscale((np.clip(image[..., :3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), f))
        shrunk = Intrinsics(intr.width // f, intr.height // f, intr.fx / f, intr.fy / f, intr.cx / f, intr.cy / f,
                            intr.dist)
        groups.setdefault(shrunk, []).append(name)
    for intr, group in groups.items():  # one camera for each set of intrinsics
        params = ",".join(str(v) for v in (intr.fx, intr.fy, intr.cx, intr.cy, *intr.dist))
        extract(database, image_dir, group, "OPENCV", TRIANGULATION_SIZE, params, TRIANGULATION_FEATURES)
    match(database, [(names[i], names[j]) for i, j in nearest_pairs(c2ws, TRIANGULATION_NEIGHBOURS)], work)
    model = pycolmap.Reconstruction()
    db = pycolmap.Database.open(database)
    try:
        for camera in db.read_all_cameras():
            model.add_camera_with_trivial_rig(camera)
        for image in db.read_all_images():
            w2c = np.linalg.inv(c2ws[names.index(image.name)] @ OPENCV_TO_OPENGL)
            model.add_image_with_trivial_frame(
                pycolmap.Image(name=image.name, camera_id=image.camera_id, image_id=image.image_id),
                pycolmap.Rigid3d(w2c[:3, :4]))
    finally:
        db.close()
    (work / "model").mkdir()
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = SEED
    model = pycolmap.triangulate_points(model, database, image_dir, work / "model", options=options)
    return np.array([p.xyz for p in model.points3D.values()], dtype=np.float64).reshape(-1, 3)
