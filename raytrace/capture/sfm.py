"""Structure from motion with pycolmap (4.2): SIFT features, matching, mapping, into a COLMAP database and
model in a work folder. One camera shared by every image. Each call handles a slice of the images or pairs so
that a progress bar can follow it.

Matching: ``exhaustive`` (every pair) or ``sequential`` (each image with the next :data:`SEQUENTIAL_OVERLAP`
and those 16, 32, 64 further on, plus loop closure: :data:`LOOP_KEYFRAMES` frames spread over the sequence,
matched all against all; COLMAP's own loop detection needs a vocabulary tree downloaded from the internet).
``auto``: exhaustive up to :data:`EXHAUSTIVE_UP_TO` photos, sequential for more and for video.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pycolmap
from tqdm import tqdm

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


def extract(database: Path, image_dir: Path, names: list[str], camera_model: str, max_image_size: int) -> None:
    """SIFT features of ``names`` (in ``image_dir``) into ``database``, one ``camera_model`` camera for all; SIFT
    runs on the images shrunk to ``max_image_size`` pixels on their long side (keypoints in full-size pixels)."""
    pycolmap.Database.open(database).close()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = max_image_size
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
    with tqdm(total=len(pairs), desc="matching", unit="pair") as bar:
        for start in range(0, len(pairs), PAIRS_PER_CALL):
            chunk = pairs[start : start + PAIRS_PER_CALL]
            pair_file.write_text("".join(f"{a} {b}\n" for a, b in chunk))
            options = pycolmap.ImportedPairingOptions()
            options.match_list_path = str(pair_file)
            pycolmap.match_image_pairs(database, pairing_options=options, device=device())
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
