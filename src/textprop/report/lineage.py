"""The lineage tree of a search: an inline SVG of candidates by parent -> child.

One row per candidate, in depth-first order from the seed, so each candidate sits under the
parent it was made from and a parent's whole subtree is contiguous (its trunk never runs
through an unrelated node). A merge hangs under its first parent; its second parent is
joined by a dashed line. The marker's shape is the origin (seed square, mutation circle,
merge diamond) and its fill the status: filled for a pool member, hollow for the rest, so
rejected children stay visible but recede. Like the score chart, it is a pure function of
the data with presentation attributes only, and every text in it is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from textprop.ledger import CandidateRow

KEPT = ("seed", "accepted")  # statuses of pool members
STATUS_COLORS = {
    "seed": "#475569",
    "accepted": "#16a34a",
    "rejected": "#dc2626",
    "outscored": "#d97706",
    "duplicate": "#94a3b8",
    "unchanged": "#94a3b8",
}
_INK, _MUTED, _FAINT, _FONT = "#0f172a", "#64748b", "#94a3b8", "system-ui, sans-serif"
_EDGE, _EDGE_FAINT, _MERGE, _PICK, _PICK_SOFT = ("#64748b", "#cbd5e1", "#7c3aed", "#b45309",
                                                 "#fef3c7")
WIDTH, ROW, TOP, LEFT = 1100, 26, 40, 22
# (header, x offset from the text column, anchor)
COLUMNS = (("candidate", 0, "start"), ("origin", 92, "start"), ("status", 176, "start"),
           ("validation", 340, "end"), ("gate", 450, "end"), ("step", 500, "end"),
           ("changed", 524, "start"), ("note", 700, "start"))


@dataclass(frozen=True)
class Placed:
    """A candidate's row and depth in the tree, and its parent in the tree (None: a root)."""

    row: int
    depth: int
    tree_parent: int | None


def layout(candidates: Sequence[CandidateRow]) -> dict[int, Placed]:
    """Depth-first order from the roots, children by id; a candidate hangs under its first
    parent that exists (a merge's other parents get extra edges)."""
    ids = {c.id for c in candidates}
    children: dict[int | None, list[int]] = {}
    for c in sorted(candidates, key=lambda c: c.id):
        parent = next((p for p in c.parents if p in ids and p != c.id), None)
        children.setdefault(parent, []).append(c.id)
    placed: dict[int, Placed] = {}
    stack = [(i, 0, None) for i in reversed(children.get(None, []))]
    while stack:
        cid, depth, parent = stack.pop()
        if cid in placed:  # a cycle in a damaged ledger: show each candidate once
            continue
        placed[cid] = Placed(len(placed), depth, parent)
        stack.extend((k, depth + 1, cid) for k in reversed(children.get(cid, [])))
    for c in sorted(candidates, key=lambda c: c.id):  # unreachable (a cycle): as roots
        if c.id not in placed:
            placed[c.id] = Placed(len(placed), 0, None)
    return placed


def lineage_tree(candidates: Sequence[CandidateRow], *, pick: int | None = None,
                 pick_note: str = "final pick", front: Sequence[int] = (),
                 href_prefix: str = "#cand-") -> str:
    """The SVG of the tree; `pick` is highlighted, ids in `front` are marked as on it."""
    by_id = {c.id: c for c in candidates}
    placed = layout(candidates)
    depth = max((p.depth for p in placed.values()), default=0)
    lane = min(22.0, 320.0 / max(depth, 1))
    text_x = LEFT + depth * lane + 26
    height = TOP + ROW * len(placed) + 8

    def xy(cid: int) -> tuple[float, float]:
        p = placed[cid]
        return LEFT + p.depth * lane, TOP + ROW * p.row + ROW / 2

    parts = [f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" role="img" '
             f'viewBox="0 0 {WIDTH} {height}" width="100%" font-family="{_FONT}" '
             f'font-size="13" aria-label="Lineage of {len(placed)} candidates">']
    parts.append(_header(text_x))
    if pick in placed:
        _, y = xy(pick)
        parts.append(f'<rect class="pick-row" x="4" y="{_f(y - ROW / 2 + 1)}" '
                     f'width="{WIDTH - 8}" height="{ROW - 2}" rx="5" fill="{_PICK_SOFT}"/>')
    parts.append('<g class="edges">')
    for c in sorted(candidates, key=lambda c: placed[c.id].row):
        tree_parent = placed[c.id].tree_parent
        for parent in dict.fromkeys(c.parents):
            if parent not in placed or parent == c.id:
                continue
            parts.append(_edge(xy(parent), xy(c.id), parent, c.id, lane,
                               merge=parent != tree_parent, kept=c.status in KEPT))
    parts.append("</g>")
    front_ids = set(front)
    for c in sorted(candidates, key=lambda c: placed[c.id].row):
        notes = ([f"★ {pick_note}"] if c.id == pick else []) + (
            ["on the front"] if c.id in front_ids else [])
        parts.append(_node(c, xy(c.id), text_x, notes, by_id, href_prefix))
    parts.append("</svg>")
    return "\n".join(parts)


def _f(v: float) -> str:
    return f"{v:.1f}"


def _score(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _short(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _header(text_x: float) -> str:
    y = TOP - 14
    out = [f'<g class="lineage-head" fill="{_MUTED}" font-size="11" font-weight="600" '
           'letter-spacing=".04em">']
    for label, dx, anchor in COLUMNS:
        out.append(f'<text x="{_f(text_x + dx)}" y="{y}" text-anchor="{anchor}">'
                   f"{label.upper()}</text>")
    out.append(f'<line x1="4" x2="{WIDTH - 4}" y1="{TOP - 4}" y2="{TOP - 4}" '
               f'stroke="#e2e8f0" stroke-width="1"/></g>')
    return "\n".join(out)


def _edge(start: tuple[float, float], end: tuple[float, float], parent: int, child: int,
          lane: float, *, merge: bool, kept: bool) -> str:
    (x1, y1), (x2, y2) = start, end
    data = f'data-from="{parent}" data-to="{child}"'
    if merge:  # right of both ends, then along a half lane (no node sits there), in from the
        bend = max(x1, x2) + lane / 2  # right: it never runs over the tree's own edges
        d = f"M{_f(x1)},{_f(y1)} H{_f(bend)} V{_f(y2)} H{_f(x2)}"
        return (f'<path class="edge edge-merge" {data} d="{d}" fill="none" '
                f'stroke="{_MERGE}" stroke-width="1.5" stroke-dasharray="4 3"/>')
    r = min(6.0, abs(y2 - y1) / 2, abs(x2 - x1) / 2)
    sign = 1 if y2 >= y1 else -1
    d = (f"M{_f(x1)},{_f(y1)} V{_f(y2 - sign * r)} Q{_f(x1)},{_f(y2)} {_f(x1 + r)},{_f(y2)} "
         f"H{_f(x2)}")
    return (f'<path class="edge" {data} d="{d}" fill="none" '
            f'stroke="{_EDGE if kept else _EDGE_FAINT}" stroke-width="1.5"/>')


def _marker(origin: str, status: str, x: float, y: float) -> str:
    """Shape by origin, fill by status: filled for pool members, hollow (a cross if
    rejected) for the rest."""
    color = STATUS_COLORS.get(status, _FAINT)
    filled = status in KEPT
    fill, stroke = (color, "#ffffff") if filled else ("#ffffff", color)
    style = f'fill="{fill}" stroke="{stroke}" stroke-width="{2 if filled else 1.75}"'
    r = 6.0
    if origin == "seed":
        shape = (f'<rect x="{_f(x - r)}" y="{_f(y - r)}" width="{_f(2 * r)}" '
                 f'height="{_f(2 * r)}" rx="2" {style}/>')
    elif origin == "merge":
        r = 7.5
        shape = (f'<path d="M{_f(x)},{_f(y - r)} L{_f(x + r)},{_f(y)} L{_f(x)},{_f(y + r)} '
                 f'L{_f(x - r)},{_f(y)} Z" {style}/>')
    else:
        shape = f'<circle cx="{_f(x)}" cy="{_f(y)}" r="{_f(r)}" {style}/>'
    if status == "rejected":
        d = r * 0.45
        shape += (f'<path d="M{_f(x - d)},{_f(y - d)} L{_f(x + d)},{_f(y + d)} '
                  f'M{_f(x - d)},{_f(y + d)} L{_f(x + d)},{_f(y - d)}" stroke="{color}" '
                  'stroke-width="1.75" stroke-linecap="round"/>')
    return shape


def _node(c: CandidateRow, at: tuple[float, float], text_x: float, notes: list[str],
          by_id: dict[int, CandidateRow], href_prefix: str) -> str:
    x, y = at
    kept = c.status in KEPT
    ink, muted = (_INK, _MUTED) if kept else (_FAINT, _FAINT)
    gate = ("" if c.gate_after is None else
            f"{_short(c.gate_before)} → {_short(c.gate_after)}")
    parents = ", ".join(f"#{p}" for p in c.parents if p in by_id) or "none"
    tip = (f"#{c.id} · {c.origin} · {c.status} · from {parents} · step {c.step} · "
           f"validation {_score(c.val_score)}" + (f" · {c.reason}" if c.reason else ""))
    cells = {
        "candidate": (f"#{c.id}", ink, "700"),
        "origin": (c.origin, muted, "400"),
        "status": (c.status, STATUS_COLORS.get(c.status, _FAINT), "600"),
        "validation": (_score(c.val_score), ink, "600" if kept else "400"),
        "gate": (gate, muted, "400"),
        "step": (str(c.step), muted, "400"),
        "note": (" · ".join(notes), _PICK, "700"),
        "changed": (_clip(", ".join(c.changed), 24), muted, "400"),
    }
    text = []
    for label, dx, anchor in COLUMNS:
        value, fill, weight = cells[label]
        if value:
            text.append(f'<text x="{_f(text_x + dx)}" y="{_f(y)}" text-anchor="{anchor}" '
                        f'dominant-baseline="middle" fill="{fill}" font-weight="{weight}">'
                        f"{escape(value)}</text>")
    ring = (f'<circle cx="{_f(x)}" cy="{_f(y)}" r="11" fill="none" stroke="{_PICK}" '
            'stroke-width="2"/>' if notes and notes[0].startswith("★") else "")
    dim = "" if kept else ' opacity="0.75"'
    node = (f'<g class="node node-{_slug(c.status)}" data-id="{c.id}" '
            f'data-status="{escape(c.status)}" data-origin="{escape(c.origin)}" '
            f'data-parents="{escape(",".join(map(str, c.parents)))}"{dim}>'
            f"<title>{escape(tip)}</title>{ring}{_marker(c.origin, c.status, x, y)}"
            f'{"".join(text)}</g>')
    return f'<a href="{escape(href_prefix)}{c.id}">{node}</a>'


def _clip(text: str, limit: int) -> str:
    limit = max(limit, 8)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _slug(v: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-" else "-" for ch in v.lower()) or "unknown"
