"""PNG plots for vpr_eval reports (matplotlib, no display needed)."""

from pathlib import Path

import numpy as np

from vpr_ros.core.evaluation.metrics import precision_recall

LABELS = {"combined": "calibrated combination", "bayescap": "BayesCap uncertainty", "l2": "L2 distance",
          "pa": "PA-score", "sue": "SUE (spatial spread)", "inliers": "inlier count"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confidence_plots(confidence: dict, folder: Path, title: str) -> list[Path]:
    """Precision-recall curves and reliability diagrams of evaluate_confidence's methods."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    methods = {k: v for k, v in confidence["methods"].items() if "scores" in v}
    correct = np.asarray(confidence["correct"], bool)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, report in methods.items():
        precision, recall = precision_recall(np.asarray(report["scores"]), correct)
        ax.step(np.r_[0, recall], np.r_[precision[0], precision], where="post",
                label=f"{LABELS.get(name, name)} (AUC-PR {report['auc_pr']:.3f})")
    ax.set(xlabel="recall (correct top-1 kept)", ylabel="precision", ylim=(0, 1.02), xlim=(0, 1.0),
           title=f"{title}: top-1 {confidence['top1_accuracy']:.3f} correct")
    ax.legend(fontsize=8, loc="lower left")
    pr_path = folder / "confidence_pr.png"
    fig.tight_layout()
    fig.savefig(pr_path, dpi=120)
    plt.close(fig)

    with_prob = {k: v for k, v in methods.items() if v.get("reliability")}
    fig, axes = plt.subplots(1, max(len(with_prob), 1), figsize=(3.2 * max(len(with_prob), 1), 3.4), squeeze=False)
    for ax, (name, report) in zip(axes[0], with_prob.items()):
        rel = report["reliability"]
        lower, count = np.asarray(rel["bin_lower"]), np.asarray(rel["count"])
        width = lower[1] - lower[0] if len(lower) > 1 else 1.0
        accuracy = np.nan_to_num(np.asarray(rel["accuracy"], float))
        ax.bar(lower, accuracy, width=width, align="edge", edgecolor="k", alpha=0.7)
        ax.plot([0, 1], [0, 1], "r--", lw=1)
        for x, n in zip(lower, count):
            if n:
                ax.text(x + width / 2, 0.02, str(n), ha="center", fontsize=6)
        ax.set(title=f"{LABELS.get(name, name)}\nECE {report['ece']:.3f}", xlabel="predicted probability",
               ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.title.set_fontsize(8)
    rel_path = folder / "confidence_reliability.png"
    fig.tight_layout()
    fig.savefig(rel_path, dpi=120)
    plt.close(fig)
    return [pr_path, rel_path]
