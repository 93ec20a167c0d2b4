"""A fingerprint of the frames a result was scored on: which frames, with which ground truth.

Two results are comparable only when they scored the same frames against the same future.
Paths do not say that (the same world can sit under another directory; two worlds written
with different seeds have the same frame ids), so the fingerprint hashes each sample's
sequence, frame id and ground-truth future (waypoints to the millimetre and their validity
mask), sorts those per-sample digests (the order frames were read in does not matter) and
hashes the list. ``v2x-vlm eval`` writes it into its JSON (``dataset.fingerprint``) and
``v2x-vlm experiments`` checks it when a Table 5 row is given as such a file
(``--ablation NAME=FILE.json``).
"""

from __future__ import annotations

import hashlib

import numpy as np


def sample_digest(sample) -> bytes:
    """SHA-256 of one sample's identity and ground-truth future."""
    h = hashlib.sha256()
    h.update(f"{sample.sequence_id}\x00{sample.sample_id}\x00".encode("utf-8"))
    xy = np.round(np.asarray(sample.future_xy, dtype=np.float64), 3) + 0.0  # + 0.0: -0.0 hashes as 0.0
    h.update(str(xy.shape).encode("ascii"))
    h.update(np.ascontiguousarray(xy).tobytes())
    h.update(np.ascontiguousarray(np.asarray(sample.future_mask, dtype=bool)).tobytes())
    return h.digest()


class SampleFingerprint:
    """An observer of ``eval.evaluate.score``: the fingerprint of every sample it was shown."""

    def __init__(self):
        self._digests: list[bytes] = []

    def update(self, sample, *metric_args) -> None:
        self._digests.append(sample_digest(sample))

    @property
    def count(self) -> int:
        return len(self._digests)

    def hexdigest(self) -> str:
        h = hashlib.sha256()
        for digest in sorted(self._digests):
            h.update(digest)
        return h.hexdigest()


def fingerprint(samples) -> str:
    """The fingerprint of a list of samples (as ``SampleFingerprint`` computes it)."""
    fp = SampleFingerprint()
    for sample in samples:
        fp.update(sample)
    return fp.hexdigest()
