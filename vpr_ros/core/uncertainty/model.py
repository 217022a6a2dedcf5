"""A map's uncertainty model: its BayesCap head and the calibrators that turn features into probabilities.

Stored in the map directory (written by `vpr_train_uncertainty`, see build/uncertainty_training.py):

    <map>/uncertainty.pt     the head's state dict (torch.save of tensors; loaded with weights_only=True)
    <map>/uncertainty.json   head configuration, the descriptor fingerprint and dimension it was trained
                             for, how its pairs were found, training statistics, and the calibrators:
                             `global` (similarity, margin, BayesCap uncertainties) and `rerank:<matcher>`
                             (the same plus inliers), and `baseline:<name>` (one feature each, for
                             evaluation)

A hypothesis gets a probability only from a calibrator fitted for how it was ranked: global retrieval
uses `global`; a re-ranked list uses `rerank:<matcher>` for the matcher that ran, and without one
the probabilities stay NaN (not measured) rather than borrowed from another ranking. Since format
version 3 each of these is fitted on the best hypotheses of the calibration queries (the one a loop
closure is made from, whose probability the evaluation scores), and `<name>:others` on the rest.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core.uncertainty.bayescap import (HEAD_KEYS, BayesCapHead, descriptor_uncertainty, pair_log_likelihood,
                                               variance)
from vpr_ros.core.uncertainty.calibration import Calibrator
from vpr_ros.core.uncertainty.features import select

HEAD_FILE, META_FILE = "uncertainty.pt", "uncertainty.json"
FORMAT = "vpr_ros.uncertainty"
FORMAT_VERSION = 3  # 2: low-rank head with its projection, pair likelihood feature, monotone calibrators;
#                    3: geometry features, separate calibrators for the best hypothesis and the others
READS = (2, 3)  # version 2's calibrators name features that hypothesis_features still gives


def rerank_key(matcher: str) -> str:
    return f"rerank:{matcher}"


def others_key(key: str) -> str:
    """The calibrator for the hypotheses after the best one, beside calibrator `key` (format version 3)."""
    return f"{key}:others"


def ranking_key(matcher: str | None, sequence: bool = False) -> str:
    """The calibrator name for hypotheses ranked globally or re-ranked by `matcher`, by sequence or not."""
    key = rerank_key(matcher) if matcher else "global"
    return f"sequence:{key}" if sequence else key


@dataclass
class UncertaintyModel:
    head: BayesCapHead
    head_conf: dict  # BayesCapHead keyword arguments
    fingerprint: str  # descriptor fingerprint of the map it was trained for
    calibrators: dict[str, Calibrator] = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # pairs, thresholds, losses, calibration pairs

    @property
    def dim(self) -> int:
        return self.head.dim

    def uncertainty(self, descriptors: np.ndarray) -> np.ndarray:
        """N x D descriptors -> N BayesCap uncertainties (mean predicted variance; NaN for NaN rows)."""
        return descriptor_uncertainty(self.head, descriptors)

    def describe(self, query: np.ndarray, candidates: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """One query descriptor (D) and K candidate descriptors (K x D), in one pass of the head -> the
        query's uncertainty, the K candidates' uncertainties and the K pair likelihoods
        (bayescap.pair_log_likelihood); NaN where a descriptor has a NaN."""
        rows = np.concatenate([np.asarray(query, np.float32).reshape(1, -1),
                               np.asarray(candidates, np.float32).reshape(-1, self.dim)])
        finite = np.isfinite(rows).all(axis=1)
        u = np.full(len(rows), np.nan)
        pair = np.full(len(rows) - 1, np.nan)
        if finite.any():
            with torch.inference_mode():
                x, mean, alpha, beta = self.head(torch.from_numpy(np.where(finite[:, None], rows, 0.0)))
                u = np.where(finite, variance(alpha.double(), beta.double()).mean(dim=1).numpy(), np.nan)
                if finite[0]:
                    pair = pair_log_likelihood(x[:1], (mean[:1], alpha[:1], beta[:1]), x[1:],
                                               (mean[1:], alpha[1:], beta[1:])).double().numpy()
                    pair = np.where(finite[1:], pair, np.nan)
        return float(u[0]), u[1:], pair

    def calibrator_for(self, matcher: str | None) -> Calibrator | None:
        return self.calibrators.get(ranking_key(matcher))

    def sequence_calibrator(self, matcher: str | None, length: int, similarity: str) -> Calibrator | None:
        """The calibrator for hypotheses ranked by sequence (window `length`, `similarity` rows) and re-ranked
        by `matcher`, when one was fitted on a replayed session with that window and those rows."""
        fitted = self.training.get("sequence", {})
        if fitted.get("length") != length or fitted.get("similarity") != similarity:
            return None
        return self.calibrators.get(ranking_key(matcher, sequence=True))

    def probabilities(self, features: np.ndarray, matcher: str | None = None,
                      calibrator: Calibrator | None = None) -> np.ndarray:
        """One query's K hypotheses' features (features.hypothesis_features, published order) -> K probabilities
        of being the query's place, from `calibrator` (default: the one for `matcher`'s ranking); NaN where no
        calibrator fits the ranking or a feature it uses is NaN."""
        features = np.asarray(features, np.float64)
        calibrator = calibrator if calibrator is not None else self.calibrator_for(matcher)
        if calibrator is None or len(features) == 0:
            return np.full(len(features), np.nan)
        out = calibrator.predict(select(features, calibrator.features))
        others = self._others_of(calibrator)
        if others is not None and len(features) > 1:  # the best hypothesis has its own calibrator (format 3)
            out[1:] = others.predict(select(features[1:], others.features))
        return out

    def _others_of(self, calibrator: Calibrator) -> Calibrator | None:
        """The calibrator for the hypotheses after the best one, beside `calibrator` (None: it serves them all)."""
        name = next((n for n, c in self.calibrators.items() if c is calibrator), None)
        return None if name is None else self.calibrators.get(others_key(name))

    def save(self, folder: Path) -> list[str]:
        """Write the two files into `folder`; returns their names."""
        torch.save({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, folder / HEAD_FILE)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "head": self.head_conf,
                "fingerprint": self.fingerprint, "dim": self.dim,
                "calibrators": {name: c.to_json() for name, c in self.calibrators.items()},
                "training": self.training}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
        return [HEAD_FILE, META_FILE]

    @classmethod
    def load(cls, folder: Path, dim: int, fingerprint: str) -> "UncertaintyModel":
        """Read and check the files; ValueError naming the problem when they do not fit this map."""
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{META_FILE} is not a vpr_ros uncertainty model")
        if meta.get("format_version") not in READS:
            raise ValueError(f"{META_FILE} is an uncertainty model of format version {meta.get('format_version')}; this "
                             f"vpr_ros reads versions {READS}: retrain it with vpr_train_uncertainty")
        if meta["dim"] != dim or meta["fingerprint"] != fingerprint:
            raise ValueError(f"the uncertainty model was trained for {meta['dim']}-d descriptors with fingerprint "
                             f"{meta['fingerprint'][:12]}, but the map has {dim}-d, {fingerprint[:12]}; "
                             "retrain it with vpr_train_uncertainty")
        head = BayesCapHead(dim, **{k: meta["head"][k] for k in HEAD_KEYS})
        state = torch.load(folder / HEAD_FILE, map_location="cpu", weights_only=True)
        head.load_state_dict(state, strict=True)
        head.eval()
        calibrators = {name: Calibrator.from_json(c) for name, c in meta["calibrators"].items()}
        return cls(head, meta["head"], fingerprint, calibrators, meta.get("training", {}))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value)} is not JSON serialisable")
