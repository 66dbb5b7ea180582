"""Recovered cameras against known ones: the similarity that best maps one set of camera centres onto the other
(Umeyama's least squares) and the distances left after it."""

from __future__ import annotations

import numpy as np


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale ``s``, rotation ``R`` ``(3, 3)`` and translation ``t`` ``(3,)`` minimising
    ``sum |s R src_i + t - dst_i|^2`` over points ``src``, ``dst`` ``(N, 3)`` (Umeyama 1991; no reflection)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    src_centred, dst_centred = src - mu_s, dst - mu_d
    u, sing, vt = np.linalg.svd(dst_centred.T @ src_centred / len(src))
    flip = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ flip @ vt
    scale = float(np.trace(np.diag(sing) @ flip) / ((src_centred * src_centred).sum() / len(src)))
    return scale, rot, mu_d - scale * rot @ mu_s


def centre_errors(estimated: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per camera ``(N,)``: the distance between the true centre and the estimated one after the similarity
    alignment of all ``estimated`` centres ``(N, 3)`` onto the ``true`` ones ``(N, 3)``, in the true units."""
    scale, rot, t = similarity(estimated, true)
    return np.linalg.norm(scale * estimated @ rot.T + t - true, axis=1)
