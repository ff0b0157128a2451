"""The run report's figures: matplotlib (Agg, imported lazily) -> PNG bytes.

Each function takes plain data (``sections`` reads it) and returns the PNG of one figure;
none keeps global pyplot state (``matplotlib.figure.Figure`` directly), so rendering is safe
in any process and leaves nothing open.
"""
from __future__ import annotations

import io

import numpy as np

STATE_COLOURS = {  # fill, edge
    "succeeded": ("#c8e6c9", "#2e7d32"),
    "skipped": ("#e3f2fd", "#1565c0"),
    "running": ("#fff9c4", "#f9a825"),
    "incomplete": ("#ffe0b2", "#ef6c00"),
    "failed": ("#ffcdd2", "#c62828"),
    "not run": ("#ffffff", "#9e9e9e"),
}
MODEL_STYLE = {"model": ("#1565c0", "-"), "baseline": ("#757575", "--"), "oracle": ("#2e7d32", ":")}


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The DAG
# ---------------------------------------------------------------------------------------------

def dag_layout(nodes: list[tuple[str, list[str]]], sweeps: int = 4):
    """Layered (Sugiyama-style) layout of a DAG given as ``[(name, deps)]`` in declaration order.

    Returns ``(levels, chains)``: ``levels[k]`` lists layer ``k`` left to right, holding node names
    and, for every edge that skips layers, a waypoint ``(parent, child, k)`` per layer it crosses;
    ``chains[(parent, child)]`` lists the edge's waypoints top to bottom. A node's layer is its
    longest path from a source (one below its deepest dependency). The order within layers starts
    from declaration order and gets ``sweeps`` rounds of the barycentre heuristic (down: by the mean
    position of an item's predecessors; up: of its successors), which removes most crossings; ties
    keep the previous order, so the layout is deterministic. Dependencies on unknown nodes are
    ignored; a cycle raises ``ValueError``."""
    names = [name for name, _ in nodes]
    known = set(names)
    parents = {name: [d for d in dict.fromkeys(deps) if d in known and d != name] for name, deps in nodes}
    layer: dict[str, int] = {}

    def depth(name: str, seen: tuple = ()) -> int:
        if name not in layer:
            if name in seen:
                raise ValueError(f"cycle in the DAG at {name!r}")
            layer[name] = 1 + max((depth(d, seen + (name,)) for d in parents[name]), default=-1)
        return layer[name]

    for name in names:
        depth(name)
    levels: list[list] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for name in names:
        levels[layer[name]].append(name)
    up: dict = {n: [] for n in names}  # item -> items one layer above it that lead to it
    chains: dict[tuple[str, str], list] = {}
    for child in names:
        for parent in parents[child]:
            above, chain = parent, []
            for k in range(layer[parent] + 1, layer[child]):
                waypoint = (parent, child, k)
                levels[k].append(waypoint)
                up[waypoint] = [above]
                chain.append(waypoint)
                above = waypoint
            up[child].append(above)
            chains[(parent, child)] = chain
    down: dict = {item: [] for item in up}
    for item, aboves in up.items():
        for a in aboves:
            down[a].append(item)
    slot = {item: i for level in levels for i, item in enumerate(level)}

    def reorder(level: list, neighbours: dict) -> None:
        def centre(item) -> float:
            near = [slot[m] for m in neighbours[item]]
            return float(np.mean(near)) if near else float(slot[item])
        level.sort(key=lambda item: (centre(item), slot[item]))
        for i, item in enumerate(level):
            slot[item] = i

    for _ in range(sweeps):
        for level in levels[1:]:
            reorder(level, up)
        for level in reversed(levels[:-1]):
            reorder(level, down)
    return levels, chains


def dag_layers(nodes: list[tuple[str, list[str]]], sweeps: int = 4) -> dict[str, tuple[int, int]]:
    """Node name -> ``(layer, slot)`` of :func:`dag_layout`, slot = rank among the layer's nodes."""
    levels, _ = dag_layout(nodes, sweeps)
    return {name: (k, i) for k, level in enumerate(levels) for i, name in enumerate(x for x in level if isinstance(x, str))}


def dag_x(levels: list[list], chains: dict, width: dict, rounds: int = 12) -> dict:
    """x of every item of :func:`dag_layout`'s ``levels`` (``width``: its footprint): packed and centred,
    then ``rounds`` of pulling each item towards the mean x of its neighbours in the layers above and
    below, keeping the layer's order and no overlap (the mean of a left-to-right and a right-to-left
    projection onto the order constraints, both feasible, so their mean is too)."""
    up: dict = {item: [] for level in levels for item in level}
    for (parent, child), chain in chains.items():
        path = [parent, *chain, child]
        for a, b in zip(path, path[1:]):
            up[b].append(a)
    down: dict = {item: [] for item in up}
    for item, aboves in up.items():
        for a in aboves:
            down[a].append(item)
    x = {}
    for level in levels:
        left = -sum(width[i] for i in level) / 2
        for item in level:
            x[item] = left + width[item] / 2
            left += width[item]
    for r in range(rounds):
        order = levels[1:] if r % 2 == 0 else list(reversed(levels[:-1]))
        for level in order:
            want = []
            for item in level:
                near = [x[m] for m in (up[item] if r % 2 == 0 else down[item])] or [x[item]]
                want.append(0.5 * x[item] + 0.5 * float(np.mean(near)))
            sep = [(width[a] + width[b]) / 2 for a, b in zip(level, level[1:])]
            lo, hi = list(want), list(want)
            for i in range(1, len(level)):
                lo[i] = max(want[i], lo[i - 1] + sep[i - 1])
            for i in range(len(level) - 2, -1, -1):
                hi[i] = min(want[i], hi[i + 1] - sep[i])
            for item, a, b in zip(level, lo, hi):
                x[item] = (a + b) / 2
    return x


def _smooth(points: list[tuple[float, float]], Path):
    """A path through ``points``' ends that rounds each corner (quadratic Béziers between segment midpoints)."""
    if len(points) == 2:
        return Path(points, [Path.MOVETO, Path.LINETO])
    verts, codes = [points[0]], [Path.MOVETO]
    for i in range(1, len(points) - 1):
        mid_in = ((points[i - 1][0] + points[i][0]) / 2, (points[i - 1][1] + points[i][1]) / 2) if i > 1 else points[0]
        mid_out = ((points[i][0] + points[i + 1][0]) / 2, (points[i][1] + points[i + 1][1]) / 2)
        if i > 1:
            verts.append(mid_in)
            codes.append(Path.LINETO)
        verts += [points[i], mid_out]
        codes += [Path.CURVE3, Path.CURVE3]
    verts.append(points[-1])
    codes.append(Path.LINETO)
    return Path(verts, codes)


def dag_figure(steps: list[dict]) -> bytes:
    """The run's DAG (DESIGN §1): steps in layers top to bottom by longest-path depth (:func:`dag_layout`),
    coloured by state, labelled with their seconds; edges that skip layers are routed between the
    boxes. ``steps``: ``{"name", "deps", "state", "seconds"}``."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
    from matplotlib.path import Path

    levels, chains = dag_layout([(s["name"], s["deps"]) for s in steps])
    box_w, box_h, dy = 2.0, 0.62, 1.0
    x = dag_x(levels, chains, {item: box_w + 0.4 if isinstance(item, str) else 0.5 for level in levels for item in level})
    y = {item: -k * dy for k, level in enumerate(levels) for item in level}
    span = max(x.values()) - min(x.values()) + box_w
    fig = _figure(max(span * 0.95, 7.0), 0.62 * len(levels) + 1.0)
    ax = fig.subplots()
    for (parent, child), chain in chains.items():
        points = [(x[parent], y[parent] - box_h / 2)] + [(x[w], y[w]) for w in chain] + [(x[child], y[child] + box_h / 2)]
        ax.add_patch(FancyArrowPatch(path=_smooth(points, Path), arrowstyle="-|>", mutation_scale=9, color="#90a4ae",
                                     lw=0.9, zorder=1))
    for s in steps:
        cx, cy = x[s["name"]], y[s["name"]]
        fill, edge = STATE_COLOURS.get(s["state"], STATE_COLOURS["not run"])
        ax.add_patch(FancyBboxPatch((cx - box_w / 2, cy - box_h / 2), box_w, box_h,
                                    boxstyle="round,pad=0,rounding_size=0.12", facecolor=fill, edgecolor=edge, lw=1.2,
                                    zorder=2, linestyle="--" if s["state"] == "not run" else "-"))
        seconds = f"{s['seconds']:.1f} s" if s.get("seconds") is not None else ""
        detail = seconds if s["state"] == "succeeded" else f"{s['state']} {seconds}".strip()
        ax.text(cx, cy + 0.08, s["name"], ha="center", va="center", fontsize=8.5, zorder=3, fontweight="bold")
        ax.text(cx, cy - 0.17, detail, ha="center", va="center", fontsize=7.5, zorder=3, color="#37474f")
    ax.set_xlim(min(x.values()) - box_w / 2 - 0.1, max(x.values()) + box_w / 2 + 0.1)
    ax.set_ylim(-(len(levels) - 1) * dy - box_h / 2 - 0.1, box_h / 2 + 0.1)
    ax.axis("off")
    present = [st for st in STATE_COLOURS if any(s["state"] == st for s in steps)]
    ax.legend(handles=[Patch(facecolor=STATE_COLOURS[st][0], edgecolor=STATE_COLOURS[st][1], label=st) for st in present],
              loc="upper right", fontsize=8, frameon=False)
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def volumes_figure(rows: list[dict]) -> bytes:
    """Validated rows per day per raw table, dead letters stacked on top in red (DESIGN §4: bad rows go to
    dead letters, counted per partition)."""
    days = sorted({r["day"] for r in rows})
    tables = sorted({r["table"] for r in rows})
    by = {(r["table"], r["day"]): r for r in rows}
    fig = _figure(max(6.0, 1.1 * len(days) + 2.5), 3.4)
    ax = fig.subplots()
    width = 0.8 / max(len(tables), 1)
    colours = ["#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#558b2f"]
    x = np.arange(len(days))
    dead_labelled = False
    for i, table in enumerate(tables):
        valid = np.array([by[(table, d)]["valid_rows"] if (table, d) in by else 0 for d in days], dtype=float)
        dead = np.array([by[(table, d)]["dead_rows"] if (table, d) in by else 0 for d in days], dtype=float)
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, valid, width * 0.92, label=table, color=colours[i % len(colours)])
        if dead.any():
            ax.bar(pos, dead, width * 0.92, bottom=valid, color="#c62828", label=None if dead_labelled else "dead letters")
            dead_labelled = True
    ax.set_xticks(x, days, rotation=0, fontsize=8)
    ax.set_ylabel("rows")
    ax.legend(fontsize=8, ncol=len(tables) + 1, loc="upper center", bbox_to_anchor=(0.5, 1.16), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def session_length_figure(lengths: np.ndarray) -> bytes:
    """Histogram of listings viewed per one-hour session, log-scaled counts (paper 000 Figure 2)."""
    fig = _figure(7.0, 3.2)
    ax = fig.subplots()
    top = int(lengths.max())
    counts = np.bincount(lengths, minlength=top + 1)[1:]
    ax.bar(np.arange(1, top + 1), counts, width=1.0, color="#1565c0", edgecolor="white", linewidth=0.3)
    ax.axvline(9.5, color="#c62828", lw=1, ls="--")
    ax.text(9.7, counts.max(), f"{(lengths < 10).mean():.0%} of sessions view < 10 listings", color="#c62828",
            fontsize=8, va="top")
    ax.set_yscale("log")
    ax.set_xlabel("listings viewed in the session")
    ax.set_ylabel("sessions (log scale)")
    ax.set_xlim(0.5, top + 0.5)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# Representations
# ---------------------------------------------------------------------------------------------

def quality_figure(gaps: dict[str, dict[str, float]]) -> bytes:
    """Grouped bars: the same-minus-different-label cosine gap of each representation per label column
    (paper 000 Figure 13's gut check; 0 = no better than random). ``gaps``: rep -> label -> gap."""
    reps = list(gaps)
    labels = sorted({label for g in gaps.values() for label in g})
    fig = _figure(max(5.5, 1.3 * len(reps) + 2.5), 3.2)
    ax = fig.subplots()
    width = 0.8 / max(len(labels), 1)
    colours = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a"]
    x = np.arange(len(reps))
    for i, label in enumerate(labels):
        values = [gaps[r].get(label, np.nan) for r in reps]
        ax.bar(x - 0.4 + width * (i + 0.5), values, width * 0.92, label=label, color=colours[i % len(colours)])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, reps)
    ax.set_ylabel("cosine gap (same − different label)")
    ax.legend(fontsize=8, ncol=len(labels), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def _thin(x: np.ndarray, y: np.ndarray, points: int = 4000):
    if len(x) <= points:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, points).astype(int))
    return x[keep], y[keep]


def curves_figure(task: str, series: list[tuple[str, str, np.ndarray, np.ndarray, float, float]],
                  base_rate: float) -> bytes:
    """ROC and precision-recall curves on the test day (paper 000 §5, Tables 2-4 report their areas).

    ``series``: ``(label, style, labels, scores, roc_auc, pr_auc)`` with style a key of MODEL_STYLE."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig = _figure(9.0, 3.9)
    roc_ax, pr_ax = fig.subplots(1, 2)
    for label, style, y, score, roc, pr in series:
        colour, line = MODEL_STYLE[style]
        fpr, tpr, _ = roc_curve(y, score)
        roc_ax.plot(*_thin(fpr, tpr), color=colour, ls=line, lw=1.5, label=f"{label} (ROC-AUC {roc:.4f})")
        precision, recall, _ = precision_recall_curve(y, score)
        pr_ax.plot(*_thin(recall, precision), color=colour, ls=line, lw=1.5, label=f"{label} (PR-AUC {pr:.4f})",
                   drawstyle="steps-post")
    roc_ax.plot([0, 1], [0, 1], color="#bdbdbd", lw=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{task.upper()} ROC", xlim=(0, 1),
               ylim=(0, 1.01))
    pr_ax.axhline(base_rate, color="#bdbdbd", lw=0.8)
    pr_ax.set(xlabel="recall", ylabel="precision", title=f"{task.upper()} precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7.5, loc="lower right" if ax is roc_ax else "upper right", frameon=False)
        ax.grid(alpha=0.3)
    return _png(fig)


def reliability_figure(panels: list[dict]) -> bytes:
    """Reliability diagrams (mean predicted probability vs observed rate per bin) before and after Platt
    scaling (paper 000 §5.3, A.3). ``panels``: ``{"task", "limit", "curves": [(label, Reliability, ece)]}``;
    marker area grows with the bin's row count."""
    fig = _figure(4.6 * len(panels), 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colours = {"raw": "#c62828", "Platt": "#1565c0"}
    for ax, panel in zip(axes, panels):
        limit = panel["limit"]
        ax.plot([0, limit], [0, limit], color="#bdbdbd", lw=0.8, label="perfect calibration")
        for label, rel, ece in panel["curves"]:
            full = rel.count > 0
            size = 12 + 120 * np.sqrt(rel.count[full] / rel.count.max())
            colour = colours.get(label.split()[0], "#37474f")
            ax.plot(rel.mean_prob[full], rel.mean_label[full], color=colour, lw=1, alpha=0.7)
            ax.scatter(rel.mean_prob[full], rel.mean_label[full], s=size, color=colour, alpha=0.8,
                       label=f"{label} (ECE {ece:.4f})")
        observed = [np.nanmax(rel.mean_label[rel.count > 0]) for _, rel, _ in panel["curves"]]
        top = min(1.0, max([limit] + [1.05 * o for o in observed]))
        ax.set(xlim=(0, limit), ylim=(0, top), xlabel="mean predicted probability", ylabel="observed rate",
               title=f"{panel['task'].upper()} on the test day")
        ax.legend(fontsize=7.5, loc="upper left", frameon=False)
        ax.grid(alpha=0.3)
    return _png(fig)


def trend_figure(points: list[dict]) -> bytes:
    """Daily ROC-AUC of each model by test day over the last runs (paper 000 Figure 8).
    ``points``: ``{"test_day", "<model>": roc_auc}`` oldest first."""
    import datetime as dt

    fig = _figure(9.0, 3.4)
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=2, maxticks=10)
    axes = fig.subplots(1, 2)
    for ax, task in zip(axes, ("ctr", "pccvr")):
        for model, style in ((task, "model"), (f"{task}_baseline", "baseline"), (f"{task}_oracle", "oracle")):
            xy = [(dt.date.fromisoformat(p["test_day"]), p[model]) for p in points if p.get(model) is not None]
            if not xy:
                continue
            colour, line = MODEL_STYLE[style]
            ax.plot([a for a, _ in xy], [b for _, b in xy], color=colour, ls=line, marker="o", ms=4, lw=1.3,
                    label=model.replace(f"{task}_oracle", "oracle"))
        days = [dt.date.fromisoformat(p["test_day"]) for p in points]
        ax.set_xlim(min(days) - dt.timedelta(days=1), max(days) + dt.timedelta(days=1))
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set(title=f"{task.upper()} ROC-AUC by test day", ylabel="ROC-AUC")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7.5, loc="best", frameon=False)
        else:
            ax.text(0.5, 0.5, "no evaluated run", ha="center", va="center", transform=ax.transAxes, color="#757575")
        ax.tick_params(axis="x", labelsize=7.5)
    return _png(fig)
