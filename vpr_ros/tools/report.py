"""A self-contained HTML report of a bag replay: summary tables and plots embedded as PNG data.

Plots: the trajectory with each query's top-1 drawn to its map frame (green correct, red wrong) and
the accepted loop closures marked, precision-recall of the top-1 confidence (and of every
confidence method with an uncertainty model), the calibration of the published probability, and a
histogram of the per-frame latency. With the query images at hand, a gallery of thumbnails
(tools/gallery.py): wrong answers, the least probable loop closures, right ones.
"""

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from vpr_ros.core.evaluation.metrics import precision_recall
from vpr_ros.core.evaluation.replay import PROCESSED
from vpr_ros.tools.plots import LABELS, _pyplot

RECALL_NS = ("1", "5", "10")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def trajectory_plot(records, positives_ok: list[bool | None], vpr_map) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    frames = vpr_map.frames
    posed = frames.has_pose
    ax.plot(frames.pose[posed, 0], frames.pose[posed, 1], "-", color="0.6", lw=3, label="map frames", zorder=1)
    truth = np.array([r.true_pose[:2] for r in records])
    ax.plot(truth[:, 0], truth[:, 1], "-", color="tab:blue", lw=1, label="query (true)", zorder=2)
    for colour, want, label in (("tab:green", True, "top-1 correct"), ("tab:red", False, "top-1 wrong")):
        segments = [(r.true_pose[:2], frames.pose[r.keys[0], :2]) for r, ok in zip(records, positives_ok)
                    if ok is want and len(r.keys) and posed[r.keys[0]] and np.isfinite(r.true_pose[:2]).all()]
        for i, (a, b) in enumerate(segments):
            ax.plot([a[0], b[0]], [a[1], b[1]], "-", color=colour, lw=0.8, alpha=0.7, zorder=3,
                    label=f"{label} ({len(segments)})" if i == 0 else None)
    loops = [r for r in records if r.loop_key >= 0 and np.isfinite(r.true_pose[:2]).all()]
    if loops:
        xy = np.array([r.true_pose[:2] for r in loops])
        ax.scatter(xy[:, 0], xy[:, 1], s=10, color="black", zorder=4, label=f"loop closure accepted ({len(loops)})")
    dropped = [r for r in records if r.status != PROCESSED and np.isfinite(r.true_pose[:2]).all()]
    if dropped:
        xy = np.array([r.true_pose[:2] for r in dropped])
        ax.scatter(xy[:, 0], xy[:, 1], s=12, marker="x", color="tab:orange", zorder=4,
                   label=f"dropped or bad ({len(dropped)})")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("trajectory: query -> top-1 map frame")
    return _png(fig)


def corrected_trajectory_plot(trajectory: dict) -> str:
    """Truth, odometry alone and the back-end's optimised path, with the closures it took (or the fixes)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    paths = trajectory["paths"]
    for name, style, colour, width in (("truth", "-", "0.4", 3), ("odometry", "--", "tab:red", 1.2),
                                        ("optimised", "-", "tab:green", 1.2)):
        xy = np.asarray(paths[name]).reshape(-1, 2)
        error = trajectory.get(name, {}).get("ate_rmse_m")
        ax.plot(xy[:, 0], xy[:, 1], style, color=colour, lw=width, zorder=2,
                label=name + (f" (ATE {error:.2f} m)" if error is not None else ""))
    limit = 3 * trajectory["graph"]["settings"]["kernel_sigmas"]
    held = [c for c in paths["closures"] if c[4] <= limit or trajectory["graph"]["settings"]["kernel"] == "none"]
    dropped = [c for c in paths["closures"] if c not in held]
    for closures, colour, style, label in ((held, "tab:blue", "-", "closures the graph agrees with"),
                                           (dropped, "tab:purple", ":", "closures the kernel all but ignores")):
        for i, (qx, qy, mx, my, _) in enumerate(closures):
            ax.plot([qx, mx], [qy, my], style, color=colour, lw=0.7, alpha=0.7, zorder=3,
                    label=f"{label} ({len(closures)})" if i == 0 else None)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"pose graph: {trajectory['mode']}")
    return _png(fig)


def trajectory_section(trajectory: dict) -> list[str]:
    """The HTML of a report's trajectory error: table and plot."""
    rows = [[name, _fmt(e["ate_rmse_m"]), _fmt(e["ate_median_m"]), _fmt(e["ate_max_m"]), _fmt(e["rpe_10m_rmse_m"])]
            for name, e in (("odometry alone", trajectory["odometry"]), ("with vpr_ros (core back-end)",
                            trajectory["optimised"]), ("vpr_pose_graph node", trajectory.get("pose_graph_node")))
            if e is not None]
    g = trajectory["graph"]
    align = "SE(3)-aligned" if trajectory["align"] == "se3" else "in the map frame"
    parts = [f"<h2>Trajectory error ({html.escape(trajectory['mode'])}, {align}, evo)</h2>",
             _table(rows, ["path", "ATE RMSE (m)", "ATE median", "ATE max", "RPE per 10 m"]),
             f"<p>{trajectory['ate_ratio']:.1f}x lower ATE with vpr_ros; the back-end took {g['closures']} closures "
             f"({g.get('downweighted', 0)} of them all but ignored by its kernel) and {g['fixes']} fixes; refused: "
             f"{html.escape(json.dumps(g['refused']))}.</p>"]
    for row in trajectory.get("injected_false_closures", []):
        parts.append(f"<p>+{row['injected']} false closures ({row['share']:.0%}): ATE "
                     f"{row['configured']['ate_rmse_m']:.3f} m as configured, "
                     f"{row['no kernel, no support']['ate_rmse_m']:.3f} m without kernel or support.</p>")
    if "paths" in trajectory:
        parts.append(f'<img alt="trajectory" src="data:image/png;base64,{corrected_trajectory_plot(trajectory)}">')
    return parts


def write_slam_html(path: Path, report: dict) -> Path:
    """The report of a slam run (vpr_eval --slam): loop closures and trajectory error, one file."""
    loops = report["loop_closures"]
    parts = [f"<h1>vpr_ros slam run: {html.escape(', '.join(Path(b).name for b in report['bags']))}</h1>",
             f"<p>{report['replay']} replay; a closure is correct within {report['distance_m']} m.</p>",
             _table([[loops["accepted"], loops["correct"], _fmt(loops["precision"]), loops["metric"],
                      _fmt(loops.get("nees", {}).get("nees_mean"))]],
                    ["closures accepted", "correct", "precision", "metric", "NEES mean (6 when right)"]),
             *trajectory_section(report["trajectory"])]
    return _write(path, parts, report)


def pr_plot(report: dict) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    top1 = report["top1"]
    ax.plot(top1["pr_curve"]["recall"], top1["pr_curve"]["precision"], lw=2,
            label=f"top-1 by {top1['confidence']} (AUC-PR {top1['auc_pr']:.3f})")
    if "confidence" in report:
        correct = np.asarray(report["confidence"]["correct"], bool)
        for name, m in report["confidence"]["methods"].items():
            if "scores" not in m or name == "combined":
                continue
            precision, recall = precision_recall(np.asarray(m["scores"]), correct)
            ax.plot(recall, precision, lw=1, label=f"{LABELS.get(name, name)} ({m['auc_pr']:.3f})")
    ax.set_xlabel("recall (correct top-1 kept)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("precision-recall of the top-1 as a loop closure")
    return _png(fig)


def calibration_plot(method: dict) -> str:
    plt = _pyplot()
    rel = method["reliability"]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    centres = np.asarray(rel["bin_lower"]) + 0.05
    accuracy = np.asarray(rel["accuracy"], np.float64)
    ax.bar(centres, np.nan_to_num(accuracy), width=0.09, alpha=0.7, label="fraction correct")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for x, n in zip(centres, rel["count"]):
        ax.text(x, 0.02, str(n), ha="center", fontsize=7)
    ax.set_xlabel("published probability")
    ax.set_ylabel("fraction of top-1 correct")
    ax.set_title(f"calibration (ECE {method['ece']:.3f}; counts per bin)")
    ax.legend(fontsize=8)
    return _png(fig)


def latency_plot(records) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage, colour in (("total", "tab:blue"), ("end_to_end", "tab:orange")):
        values = [r.timings_ms[stage] for r in records if r.status == PROCESSED and stage in r.timings_ms]
        if values:
            ax.hist(values, bins=40, alpha=0.6, color=colour, label=f"{stage} (p50 {np.median(values):.0f} ms)")
    ax.set_xlabel("ms per frame")
    ax.set_ylabel("frames")
    ax.legend(fontsize=8)
    ax.set_title("latency")
    return _png(fig)


def _direction_only(reasons: dict) -> str:
    """The loop closures that kept a translation direction only, counted by reason (escaped HTML)."""
    if not reasons:
        return "Every correct loop closure had a metric pose."
    return "Without a metric pose (direction only): " + "; ".join(
        f"{n} &times; {html.escape(str(why))}" for why, n in sorted(reasons.items(), key=lambda item: -item[1])) + "."


def _table(rows: list[list], header: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def write_html(path: Path, report: dict, records, vpr_map, query_image=None) -> Path:
    """Write the report to `path` (one file: styles and images inline). query_image(record): the query's RGB
    image, for the gallery of wrong answers, doubtful loop closures and right ones (tools/gallery.py); without
    it, no gallery."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    truth = [f["correct"] for f in report["per_frame"]]
    frames = report["frames"]
    recall_rows = []
    if "recall_global" in report:
        recall_rows.append(["global"] + [_fmt(report["recall_global"][n]) for n in RECALL_NS])
        recall_rows.append([f"re-ranked ({report['config'].get('rerank')})"] + [_fmt(report["recall"][n]) for n in RECALL_NS])
    else:
        recall_rows.append(["global"] + [_fmt(report["recall"][n]) for n in RECALL_NS])
    loop = report["loop_closure"]
    criterion = (f"within {report['frame_tolerance']} map frames" if "frame_tolerance" in report
                 else f"within {report['distance_m']} m" if "distance_m" in report else "ground-truth table")
    parts = [
        f"<h1>vpr_ros replay: {html.escape(Path(report['bag']).name)} against {html.escape(Path(report['map']).name)}</h1>",
        f"<p>{report['replay']} replay, preset {html.escape(report['preset'])} ({report['descriptor_dim']}-d), "
        f"{report['map_size']} map frames; a match is correct {criterion}.</p>",
        "<h2>Frames</h2>",
        _table([[frames["total"], frames["processed"], frames["dropped"], frames["bad"], frames["without_true_match"]]],
               ["in bag", "processed", "dropped", "bad", "no true match in map"]),
        "<h2>Recall@N</h2>", _table(recall_rows, ["ranking", "R@1", "R@5", "R@10"]),
        f"<p>{html.escape(report.get('recall_note', ''))}</p>",
        "<h2>Loop closures</h2>",
        _table([[loop["accepted"], loop["correct"], loop["false"], _fmt(loop["precision"]), _fmt(loop["recall"])]],
               ["accepted", "correct", "false", "precision", "recall"]),
    ]
    if report.get("metric", {}).get("translation_error_m", {}).get("count"):
        m = report["metric"]
        rows = [[name, _fmt(m[key]["p50"]), _fmt(m[key]["p95"]), _fmt(m[key]["max"])]
                for name, key in (("translation error (m)", "translation_error_m"),
                                  ("rotation error (deg)", "rotation_error_deg"), ("NEES (6 when right)", "nees"),
                                  ("vpr/pose camera position error (m)", "camera_position_error_m"),
                                  ("map frame's position error (m)", "map_frame_position_error_m"))
                if m[key].get("count")]
        parts += [f"<h3>Metric loop closures: {m['metric']} of {m['loop_closures']} correct ones</h3>",
                  _table(rows, ["against the true poses", "median", "p95", "max"]),
                  f"<p>NEES mean {m['nees']['mean']:.1f}. {_direction_only(m['direction_only'])}</p>"]
    if "top1" in report:
        t = report["top1"]
        parts += [_table([[t["confidence"], _fmt(t["accuracy"]), _fmt(t["auc_pr"]), _fmt(t["recall_at_precision_100"])]],
                         ["top-1 confidence", "top-1 accuracy", "AUC-PR", "recall at 100 % precision"])]
    parts += ["<h2>Latency per stage (ms)</h2>",
              _table([[stage, f"{v['p50']:.1f}", f"{v['p95']:.1f}", f"{v['max']:.1f}", v["count"]]
                      for stage, v in report["latency_ms"].items()], ["stage", "p50", "p95", "max", "frames"])]
    if "confidence" in report:
        rows = [[LABELS.get(name, name)] + (["skipped: " + m["skipped"], "", "", "", ""] if "skipped" in m else
                [_fmt(m["auc_pr"]), _fmt(m["auroc"]), _fmt(m["precision_at_recall_100"]),
                 _fmt(m["precision_at_recall_90"]), _fmt(m.get("ece"))])
                for name, m in report["confidence"]["methods"].items()]
        parts += ["<h2>Confidence of the top-1</h2>",
                  _table(rows, ["method", "AUC-PR", "AUROC", "P@R100", "P@R90", "ECE"])]
    images = [trajectory_plot(records, truth, vpr_map) if vpr_map.frames.has_pose.any() else None]
    if "top1" in report:
        images.append(pr_plot(report))
    combined = report.get("confidence", {}).get("methods", {}).get("combined", {})
    if "reliability" in combined:
        images.append(calibration_plot(combined))
    images.append(latency_plot(records))
    parts += ["<h2>Plots</h2>"] + [f'<img alt="plot" src="data:image/png;base64,{png}">' for png in images if png]
    if "trajectory" in report:
        parts += trajectory_section(report["trajectory"])
    if query_image is not None:
        from vpr_ros.tools.gallery import gallery_html

        parts += gallery_html(records, truth, vpr_map, report["config"].get("rerank"), query_image)
    return _write(path, parts, report)


def _write(path: Path, parts: list[str], report: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    slim = {k: v for k, v in report.items() if k not in ("top1", "confidence", "per_frame")}
    if "paths" in slim.get("trajectory", {}):
        slim["trajectory"] = {k: v for k, v in slim["trajectory"].items() if k != "paths"}
    parts = parts + ["<h2>Configuration and full figures</h2>",
                     f"<details><summary>JSON</summary><pre>{html.escape(json.dumps(slim, indent=2))}</pre></details>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}th{background:#eee}img{max-width:49%;margin:4px}")
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>vpr_ros report</title>"
                    f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
    return path
