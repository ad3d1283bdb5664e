"""Road graphs: from a one-pixel-wide skeleton to nodes and edges, and the clean-up steps on the graph.

Two layers live here:

- :func:`skeleton_to_graph` turns a thinned road mask (scikit-image ``skeletonize``) into a pixel
  graph: end points and junctions become nodes, the pixel chains between them become edges. It
  works on one block of a larger raster at a time; pixels on the block's seams are *forced* nodes
  keyed by their global pixel position, so graphs of neighbouring blocks can be stitched by key.
- :class:`RoadGraph` is a small adjacency-dict graph in local metres with the clean-up steps the
  vectorizer applies after stitching: merging degree-2 nodes, spur pruning, gap closing between
  aligned dead ends, removal of short isolated pieces and line simplification.

No networkx: a dict of node positions, a dict of edges and an adjacency dict of edge ids is all
these steps need, and keeps the plugin's dependency list short.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np

#: Neighbour offsets looked at "forwards" so that every undirected pixel link is found once.
_FORWARD = ((0, 1), (1, -1), (1, 0), (1, 1))


@dataclasses.dataclass
class PixelEdge:
    """An edge of a pixel graph: node keys at both ends and the pixel path (global row, col) between them."""

    u: int
    v: int
    path: np.ndarray  # (k, 2) int32 global (row, col), first pixel in node u, last in node v


@dataclasses.dataclass
class PixelGraph:
    """Nodes (global key -> mean global (row, col) of its pixels) and edges of one block's skeleton."""

    nodes: dict[int, tuple[float, float]]
    edges: list[PixelEdge]
    #: (m, 3) int64: global row, col and node key of every pixel that is part of a node.
    node_pixels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3), np.int64))


def pixel_links(skel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Links between skeleton pixels, with redundant diagonals removed.

    An 8-connected skeleton has "staircase" corners where a pixel touches both a 4-neighbour and the
    diagonal pixel beyond it; counting all 8 neighbours would make every such corner a junction.
    A diagonal link is therefore dropped whenever one of the two pixels it cuts across is set: the
    two pixels stay connected through that pixel, and no pixel triangle remains.

    Works on the skeleton pixels only (a few percent of the block), never on block-sized integer
    arrays, so memory and time follow the road length rather than the block area.

    Returns:
        ``(flat_index, a, b)``: the flat indices (into ``skel``) of the skeleton pixels, and the two
        ends of every link as positions in ``flat_index``.
    """
    h, w = skel.shape
    padded = np.zeros((h + 2, w + 2), dtype=bool)
    padded[1:-1, 1:-1] = skel
    pw = w + 2
    pflat = np.flatnonzero(padded)  # sorted, so neighbour ids come from searchsorted
    flat = (pflat // pw - 1) * w + (pflat % pw - 1)
    pad_flat = padded.ravel()
    a_parts, b_parts = [], []
    for dr, dc in _FORWARD:
        target = pflat + dr * pw + dc
        link = pad_flat[target]
        if dr and dc:
            link &= ~(pad_flat[pflat + dr * pw] | pad_flat[pflat + dc])
        src = np.flatnonzero(link)
        a_parts.append(src)
        b_parts.append(np.searchsorted(pflat, target[src]))
    a = np.concatenate(a_parts).astype(np.int64)
    b = np.concatenate(b_parts).astype(np.int64)
    return flat, a, b


def skeleton_to_graph(
    skel: np.ndarray,
    row_off: int = 0,
    col_off: int = 0,
    raster_width: int | None = None,
    forced: np.ndarray | None = None,
    owned: np.ndarray | None = None,
) -> PixelGraph:
    """Turn a skeleton (or one block of it) into nodes and pixel-path edges.

    Every skeleton pixel ends up in exactly one node or in the interior of exactly one edge (the
    property tests check this). Junction pixels that touch form one node; pixels of degree 1 are
    end points; closed loops without any junction get one node so that they are not lost.

    Args:
        skel: boolean skeleton of the block (core plus a one-pixel ring from the neighbours).
        row_off, col_off: global position of ``skel[0, 0]`` in the raster.
        raster_width: width of the whole raster, for global node keys (``row * width + col``).
        forced: pixels that must be individual nodes (block seams and the ring around the block).
        owned: pixels that belong to this block; an edge made only of pixels that are not owned is
            left to the block that owns them, and a direct link between two forced pixels is kept
            here if either end is owned (the stitching drops the duplicate by key).

    Returns:
        The block's :class:`PixelGraph` with global keys and coordinates.
    """
    w = skel.shape[1]
    width = raster_width if raster_width is not None else col_off + w
    flat, a, b = pixel_links(skel)
    n = flat.size
    if n == 0:
        return PixelGraph({}, [])
    rows = flat // w
    cols = flat % w
    keys = (rows + row_off) * width + (cols + col_off)
    degree = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    is_forced = forced.ravel()[flat] if forced is not None else np.zeros(n, bool)
    is_owned = owned.ravel()[flat] if owned is not None else np.ones(n, bool)
    junction = (degree >= 3) & ~is_forced
    is_node = (degree != 2) | is_forced

    # Junction pixels that touch become one node (a crossing of two wide roads thins to a small cluster).
    node_of = np.full(n, -1, dtype=np.int64)
    node_pixels = np.flatnonzero(is_node)
    node_of[node_pixels] = node_pixels
    jj = junction[a] & junction[b]
    if jj.any():
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        ja, jb = a[jj], b[jj]
        graph = coo_matrix((np.ones(ja.size), (ja, jb)), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        jpix = np.flatnonzero(junction)
        # Representative of each cluster: its smallest pixel id (so the key is a real pixel's key).
        rep = np.full(n, n, dtype=np.int64)
        np.minimum.at(rep, labels[jpix], jpix)
        node_of[jpix] = rep[labels[jpix]]

    # Adjacency lists (CSR) for the walk.
    both_a = np.concatenate([a, b])
    both_b = np.concatenate([b, a])
    order = np.argsort(both_a, kind="stable")
    nbr = both_b[order].tolist()
    start = np.concatenate([[0], np.cumsum(np.bincount(both_a, minlength=n))]).tolist()
    node_list = node_of.tolist()
    owned_list = is_owned.tolist()
    forced_list = is_forced.tolist()
    visited = bytearray(n)
    raw_edges: list[tuple[int, int, list[int]]] = []

    for p in node_pixels.tolist():
        u = node_list[p]
        for k in range(start[p], start[p + 1]):
            q = nbr[k]
            nq = node_list[q]
            if nq >= 0:
                if nq == u or p > q:
                    continue  # inside one junction cluster, or the same link seen from q
                if owned_list[p] or owned_list[q]:
                    raw_edges.append((u, nq, [p, q]))
                continue
            if visited[q]:
                continue
            path = [p, q]
            prev, cur = p, q
            while node_list[cur] < 0:
                visited[cur] = 1
                s = start[cur]
                nxt = nbr[s] if nbr[s] != prev else nbr[s + 1]
                path.append(nxt)
                prev, cur = cur, nxt
            raw_edges.append((u, node_list[cur], path))

    # Closed loops with no node at all: give each one node (its first pixel) and walk round it.
    leftover = np.flatnonzero((node_of < 0) & (np.frombuffer(bytes(visited), dtype=np.uint8) == 0))
    for p in leftover.tolist():
        if visited[p]:
            continue
        node_list[p] = p
        visited[p] = 1
        path = [p]
        prev, cur = p, nbr[start[p]]
        while cur != p:
            visited[cur] = 1
            path.append(cur)
            s = start[cur]
            nxt = nbr[s] if nbr[s] != prev else nbr[s + 1]
            prev, cur = cur, nxt
        path.append(p)
        raw_edges.append((p, p, path))
        node_of[p] = p

    # Node positions (mean of their pixels) keyed globally by the representative pixel.
    node_of_arr = np.asarray(node_list, dtype=np.int64)
    member = np.flatnonzero(node_of_arr >= 0)
    reps = node_of_arr[member]
    uniq, inv = np.unique(reps, return_inverse=True)
    cnt = np.bincount(inv).astype(np.float64)
    mean_r = np.bincount(inv, weights=rows[member].astype(np.float64)) / cnt + row_off
    mean_c = np.bincount(inv, weights=cols[member].astype(np.float64)) / cnt + col_off
    nodes = {int(keys[r]): (float(mr), float(mc)) for r, mr, mc in zip(uniq.tolist(), mean_r, mean_c)}

    edges: list[PixelEdge] = []
    for u, v, path in raw_edges:
        idx = np.asarray(path, dtype=np.int64)
        interior = idx[1:-1]
        if interior.size and not is_owned[interior].any():
            continue
        if not interior.size and not (owned_list[path[0]] or owned_list[path[-1]]):
            continue
        if not interior.size and not (forced_list[path[0]] or forced_list[path[-1]]) and u == v:
            continue
        pix = np.stack([rows[idx] + row_off, cols[idx] + col_off], axis=1).astype(np.int32)
        edges.append(PixelEdge(int(keys[u]), int(keys[v]), pix))
    node_pixels = np.stack([rows[member] + row_off, cols[member] + col_off, keys[reps]], axis=1)
    return PixelGraph(nodes, edges, node_pixels)


# --------------------------------------------------------------------------- graph in metres


@dataclasses.dataclass
class Edge:
    """A graph edge: end node ids and its polyline (k, 2) in local metres, from node u to node v."""

    u: int
    v: int
    coords: np.ndarray

    @property
    def length(self) -> float:
        d = np.diff(self.coords, axis=0)
        return float(np.hypot(d[:, 0], d[:, 1]).sum())


class RoadGraph:
    """Undirected multigraph with node positions and polyline edges, in local metres (x right, y down).

    Node ids and edge ids are ints; ``adj[node]`` is the set of incident edge ids (a self-loop
    appears once in the set but counts twice in :meth:`degree`).
    """

    def __init__(self) -> None:
        self.pos: dict[int, tuple[float, float]] = {}
        self.edges: dict[int, Edge] = {}
        self.adj: dict[int, set[int]] = {}
        self._next_edge = 0
        self._next_node = 0

    # ---- building
    def add_node(self, node: int, xy: tuple[float, float]) -> None:
        if node not in self.pos:
            self.pos[node] = xy
            self.adj[node] = set()
            self._next_node = max(self._next_node, node + 1)

    def new_node(self, xy: tuple[float, float]) -> int:
        node = self._next_node
        self.add_node(node, xy)
        return node

    def add_edge(self, u: int, v: int, coords: np.ndarray) -> int:
        eid = self._next_edge
        self._next_edge += 1
        self.edges[eid] = Edge(u, v, np.asarray(coords, dtype=np.float64))
        self.adj[u].add(eid)
        self.adj[v].add(eid)
        return eid

    def remove_edge(self, eid: int) -> None:
        e = self.edges.pop(eid)
        self.adj[e.u].discard(eid)
        self.adj[e.v].discard(eid)

    def remove_node(self, node: int) -> None:
        for eid in list(self.adj[node]):
            self.remove_edge(eid)
        del self.adj[node]
        del self.pos[node]

    def degree(self, node: int) -> int:
        return sum(2 if self.edges[e].u == self.edges[e].v else 1 for e in self.adj[node])

    def total_length(self) -> float:
        return sum(e.length for e in self.edges.values())

    def remove_isolated_nodes(self) -> None:
        for node in [n for n, es in self.adj.items() if not es]:
            del self.adj[node]
            del self.pos[node]

    def end_direction(self, node: int, lookback_m: float) -> np.ndarray:
        """Unit vector pointing out of a dead end, from a point ``lookback_m`` back along its edge."""
        (eid,) = tuple(self.adj[node])
        e = self.edges[eid]
        coords = e.coords if e.v == node else e.coords[::-1]
        end = coords[-1]
        seg = np.hypot(*np.diff(coords, axis=0).T)
        back = np.cumsum(seg[::-1])
        i = int(np.searchsorted(back, lookback_m))
        ref = coords[max(0, len(coords) - 2 - i)]
        d = end - ref
        norm = float(np.hypot(d[0], d[1]))
        return np.asarray(d / norm if norm > 0 else np.zeros(2))

    # ---- clean-up steps
    def merge_degree_two(self) -> int:
        """Join the two edges at every node of degree 2 into one edge; returns how many nodes went."""
        merged = 0
        for node in list(self.pos):
            es = self.adj.get(node)
            if es is None or len(es) != 2:
                continue
            e1, e2 = (self.edges[i] for i in es)
            if e1.u == e1.v or e2.u == e2.v:
                continue
            i1, i2 = tuple(es)
            c1 = e1.coords if e1.v == node else e1.coords[::-1]
            c2 = e2.coords if e2.u == node else e2.coords[::-1]
            a = e1.u if e1.v == node else e1.v
            b = e2.v if e2.u == node else e2.u
            self.remove_edge(i1)
            self.remove_edge(i2)
            self.add_edge(a, b, np.concatenate([c1, c2[1:]]))
            del self.adj[node]
            del self.pos[node]
            merged += 1
        return merged

    def prune_spurs(self, min_spur_m: float) -> int:
        """Remove short dead-end branches off junctions (and short self-loops), the hairs of a skeleton.

        Only edges that join a dead end (degree 1) to a junction (degree >= 3) are spurs: an isolated
        short piece is not a spur (see :meth:`remove_small_components`), and a road between two
        junctions is never pruned however short it is.
        """
        removed = 0
        for eid in list(self.edges):
            e = self.edges.get(eid)
            if e is None or e.length >= min_spur_m:
                continue
            if e.u == e.v:
                self.remove_edge(eid)
                removed += 1
                continue
            du, dv = self.degree(e.u), self.degree(e.v)
            if (du == 1 and dv >= 3) or (dv == 1 and du >= 3):
                self.remove_edge(eid)
                removed += 1
        self.remove_isolated_nodes()
        self.merge_degree_two()
        return removed

    def close_gaps(self, max_gap_m: float, max_angle_deg: float, lookback_m: float) -> int:
        """Join pairs of dead ends that are close and nearly aligned with a straight segment.

        Both dead ends must point towards each other: the angle between each end's outward direction
        and the line to the other end is at most ``max_angle_deg``. Candidates are taken shortest
        first and every dead end is used once, so a gap is never bridged twice.
        """
        from scipy.spatial import cKDTree

        ends = [n for n in self.pos if self.degree(n) == 1]
        if len(ends) < 2 or max_gap_m <= 0:
            return 0
        xy = np.array([self.pos[n] for n in ends])
        dirs = np.array([self.end_direction(n, lookback_m) for n in ends])
        pairs = cKDTree(xy).query_pairs(max_gap_m, output_type="ndarray")
        if pairs.size == 0:
            return 0
        cos_max = math.cos(math.radians(max_angle_deg))
        gap = xy[pairs[:, 1]] - xy[pairs[:, 0]]
        dist = np.hypot(gap[:, 0], gap[:, 1])
        unit = gap / np.maximum(dist, 1e-12)[:, None]
        cos_a = np.einsum("ij,ij->i", dirs[pairs[:, 0]], unit)
        cos_b = np.einsum("ij,ij->i", dirs[pairs[:, 1]], -unit)
        ok = ((cos_a >= cos_max) & (cos_b >= cos_max)) | (dist < 1e-9)
        used: set[int] = set()
        joined = 0
        for k in np.flatnonzero(ok)[np.argsort(dist[ok], kind="stable")].tolist():
            i, j = int(pairs[k, 0]), int(pairs[k, 1])
            a, b = ends[i], ends[j]
            if i in used or j in used:
                continue
            (ea,) = tuple(self.adj[a])
            if b in (self.edges[ea].u, self.edges[ea].v):
                continue  # the two ends of one short piece: not a gap in a road
            self.add_edge(a, b, np.array([self.pos[a], self.pos[b]]))
            used.update((i, j))
            joined += 1
        self.merge_degree_two()
        return joined

    def components(self) -> list[list[int]]:
        """Connected components as lists of edge ids."""
        parent: dict[int, int] = {n: n for n in self.pos}

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for e in self.edges.values():
            ru, rv = find(e.u), find(e.v)
            if ru != rv:
                parent[ru] = rv
        groups: dict[int, list[int]] = {}
        for eid, e in self.edges.items():
            groups.setdefault(find(e.u), []).append(eid)
        return list(groups.values())

    def remove_small_components(self, min_component_m: float) -> int:
        """Remove connected pieces whose total road length is below ``min_component_m``."""
        removed = 0
        for comp in self.components():
            if sum(self.edges[e].length for e in comp) < min_component_m:
                for e in comp:
                    self.remove_edge(e)
                removed += 1
        self.remove_isolated_nodes()
        return removed

    def simplify(self, tolerance_m: float) -> None:
        """Douglas-Peucker simplification of every edge; end points (the nodes) never move."""
        if tolerance_m <= 0:
            return
        import shapely

        for e in self.edges.values():
            if len(e.coords) > 2 and e.u != e.v:
                line = shapely.simplify(shapely.linestrings(e.coords), tolerance_m, preserve_topology=False)
                e.coords = np.asarray(shapely.get_coordinates(line))
            elif e.u == e.v and len(e.coords) > 4:
                ring = shapely.simplify(shapely.linestrings(e.coords), tolerance_m, preserve_topology=True)
                coords = np.asarray(shapely.get_coordinates(ring))
                if len(coords) >= 4:
                    e.coords = coords

    def snap_ends_to_nodes(self) -> None:
        """Make every edge start and end exactly on its nodes' positions (lines meet at the node point)."""
        for e in self.edges.values():
            e.coords[0] = self.pos[e.u]
            e.coords[-1] = self.pos[e.v]


def stitch(
    blocks: Iterable[PixelGraph],
    cell_xy_m: tuple[float, float],
) -> RoadGraph:
    """Join the pixel graphs of all blocks into one :class:`RoadGraph` in local metres.

    Node keys are global pixel keys, so a seam pixel that both blocks made a node is the same node;
    links that both blocks saw across a seam (two forced pixels) are kept once. Coordinates are
    pixel centres scaled by the cell size: ``x = (col + 0.5) * dx``, ``y = (row + 0.5) * dy``.
    """
    dx, dy = cell_xy_m
    graph = RoadGraph()
    seen_links: set[tuple[int, int]] = set()
    for block in blocks:
        for key, (r, c) in block.nodes.items():
            graph.add_node(key, ((c + 0.5) * dx, (r + 0.5) * dy))
        for e in block.edges:
            if len(e.path) == 2:
                link = (min(e.u, e.v), max(e.u, e.v))
                if link in seen_links:
                    continue
                seen_links.add(link)
            coords = np.empty((len(e.path), 2), dtype=np.float64)
            coords[:, 0] = (e.path[:, 1] + 0.5) * dx
            coords[:, 1] = (e.path[:, 0] + 0.5) * dy
            graph.add_edge(e.u, e.v, coords)
    return graph
