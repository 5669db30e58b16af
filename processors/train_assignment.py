"""Train the jet-parton assignment classifier on the skim and export it as ONNX.

Usage::

    python processors/train_assignment.py SKIM [--out DIR] [--max-iter 30] [--seed 0]

``SKIM`` is the column output written by ``skim.py`` (its directory or its ``manifest.json``). The model,
an XGBoost BDT (as the AGC uses; exported with onnxmltools), learns whether a permutation
assigns the right jets to (W1, W2, b_had, b_lep) from ``ttbar.FEATURES``. Events with even event numbers
train it, odd ones test it: the script prints the test AUC and how often the best-scored permutation of
an event is the right one. It writes ``DIR/assignment.onnx`` (input ``features``: float32
``(N, len(FEATURES))``; outputs ``label`` and ``probabilities``, no ZipMap) and ``DIR/assignment.json``
(features, metrics, settings). Training is deterministic for a given skim and seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ttbar import FEATURES, best_permutation

from distproc.columns import read_columns


def load(skim: str | Path) -> dict[str, np.ndarray]:
    """Features, labels and event numbers of the skim (through its manifest)."""
    import awkward as ak

    rows = read_columns(skim, columns=[*FEATURES, "label", "event"])
    if len(rows) == 0:
        msg = f"the skim {skim} holds no rows: run processors/skim.yaml on a sample with ttbar events"
        raise SystemExit(msg)
    features = np.stack([ak.to_numpy(rows[f]) for f in FEATURES], axis=1).astype(np.float32)
    return {"x": features, "y": ak.to_numpy(rows.label), "event": ak.to_numpy(rows.event)}


def best_is_correct(scores: np.ndarray, y: np.ndarray, event: np.ndarray) -> float:
    """Fraction of events with a correct permutation whose best-scored permutation is correct."""
    _, dense = np.unique(event, return_inverse=True)
    best = best_permutation(scores, dense, int(dense.max()) + 1)
    has_correct = np.zeros(int(dense.max()) + 1, dtype=bool)
    has_correct[dense[y == 1]] = True
    return float(np.mean(y[best][has_correct[dense[best]]] == 1))


def train(data: dict[str, np.ndarray], *, max_iter: int = 30, seed: int = 0) -> tuple[object, dict]:
    """Fit the classifier on even events; metrics on odd events."""
    from sklearn.metrics import roc_auc_score
    from xgboost import XGBClassifier

    train_rows = data["event"] % 2 == 0
    test_rows = ~train_rows
    model = XGBClassifier(
        n_estimators=max_iter, max_depth=4, learning_rate=0.3, tree_method="hist", n_jobs=2, random_state=seed
    )
    start = time.perf_counter()
    model.fit(data["x"][train_rows], data["y"][train_rows])
    seconds = time.perf_counter() - start
    scores = model.predict_proba(data["x"][test_rows])[:, 1]
    metrics = {
        "train_rows": int(train_rows.sum()),
        "test_rows": int(test_rows.sum()),
        "correct_fraction": float(data["y"].mean()),
        "test_auc": float(roc_auc_score(data["y"][test_rows], scores)),
        "test_best_is_correct": best_is_correct(scores, data["y"][test_rows], data["event"][test_rows]),
        "fit_seconds": round(seconds, 2),
    }
    return model, metrics


def export(model: object, out: Path) -> Path:
    """Write *model* as ONNX (input ``features``, outputs ``label`` and ``probabilities``)."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    onnx_model = convert_xgboost(
        model, initial_types=[("features", FloatTensorType([None, len(FEATURES)]))], target_opset=15
    )
    path = out / "assignment.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    return path


def main(argv: list[str] | None = None) -> int:
    """Train, export and report; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("skim", help="the skim's directory or manifest.json")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "models"), help="output dir")
    parser.add_argument("--max-iter", type=int, default=30, help="boosting iterations (trees)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load(args.skim)
    model, metrics = train(data, max_iter=args.max_iter, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = export(model, out)
    reproducible = {
        k: v for k, v in metrics.items() if k != "fit_seconds"
    }  # the JSON depends on the data only
    info = {"features": list(FEATURES), "max_iter": args.max_iter, "seed": args.seed, **reproducible}
    (out / "assignment.json").write_text(json.dumps(info, indent=1) + "\n")
    print(
        f"trained on {metrics['train_rows']:,} permutations ({metrics['correct_fraction']:.1%} correct) "
        f"in {metrics['fit_seconds']} s: test AUC {metrics['test_auc']:.3f}, best permutation correct in "
        f"{metrics['test_best_is_correct']:.1%} of events -> {path} ({path.stat().st_size / 1e3:.0f} kB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
