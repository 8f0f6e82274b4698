"""Chest-radiograph-like phantoms with findings whose ground truth is exact.

A phantom is drawn from a :class:`PhantomSpec` (pure data: every random choice is made
when the spec is sampled), so the same spec always renders the same image, and a spec
with one finding removed renders the same image except where that finding was.

Anatomy lives in a normalised frame ``(u, v)``: ``u`` to the image right (the patient's
left on a PA film), ``v`` downwards, the thorax spanning about ``[-1, 1]``. Each spec has
its own centre, scale and rotation mapping pixel centres (see :mod:`gazerad.coords`) into
that frame. Intensities are attenuation-like (bright = dense) and are written as 16-bit.

Every finding's contribution has compact support, so its rendered footprint is a mask
and its box is the tight box of that mask (the NIH ``[x, y, w, h]`` convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from gazerad.coords import mask_to_box, pixel_centres

__all__ = ["FINDING_CLASSES", "Finding", "PhantomSpec", "Rendered", "sample_spec", "render"]

#: Finding classes the generator draws (NIH ChestX-ray14 names).
FINDING_CLASSES: tuple[str, ...] = ("Nodule", "Mass", "Effusion", "Cardiomegaly", "Pneumothorax")


@dataclass(frozen=True)
class Finding:
    """One finding. ``params`` are in the anatomy frame; ``conspicuity`` is in ``(0, 1]``."""

    label: str
    side: int  # -1: image left (patient's right), +1: image right, 0: central
    params: dict[str, float]
    conspicuity: float


@dataclass(frozen=True)
class PhantomSpec:
    """All random choices of one phantom (anatomy, exposure, noise, findings)."""

    size: int
    centre: tuple[float, float]  # pixel (x, y) of the thorax centre
    scale: float  # pixels per anatomy unit
    angle: float  # radians, counter-clockwise rotation of the anatomy
    anatomy: dict[str, float]
    exposure: dict[str, float]
    noise_seed: int
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    def without(self, index: int) -> PhantomSpec:
        """The same phantom with finding ``index`` removed (for ground-truth checks)."""
        return replace(self, findings=tuple(f for i, f in enumerate(self.findings) if i != index))


@dataclass
class Rendered:
    """A rendered phantom.

    Attributes:
        image: ``(H, W)`` uint16.
        masks: per finding, the ``(H, W)`` bool footprint of its contribution.
        boxes: per finding, ``[x, y, w, h]`` tight box of its mask (``None`` if not visible).
        lungs: ``(H, W)`` bool lung fields (where a reader sweeps).
        heart_box: ``[x, y, w, h]`` of the cardiac silhouette.
    """

    image: np.ndarray
    masks: list[np.ndarray]
    boxes: list[tuple[int, int, int, int] | None]
    lungs: np.ndarray
    heart_box: tuple[int, int, int, int]


# --------------------------------------------------------------------------- sampling


def _lung_geometry(a: dict[str, float], side: int) -> tuple[float, float, float, float]:
    """(centre u, centre v, half width, half height) of one lung's outer ellipse."""
    return side * a["lung_cu"], a["lung_cv"], a["lung_a"], a["lung_b"]


def _diaphragm(a: dict[str, float], u: np.ndarray | float, side: int) -> np.ndarray | float:
    """v of the hemidiaphragm dome at u (image-left dome sits higher, as the liver pushes it)."""
    cu, _, half_w, _ = _lung_geometry(a, side)
    top = a["dome_v"] + (0.0 if side < 0 else a["dome_asym"])
    t = np.clip((np.asarray(u) - cu) / half_w, -1.6, 1.6)
    return top + a["dome_h"] * t**2


def _heart_halfwidth(a: dict[str, float]) -> float:
    return a["heart_ctr"] * a["thorax_halfwidth"]


def _inside_lung(a: dict[str, float], u: float, v: float, side: int, margin: float) -> bool:
    cu, cv, half_w, half_h = _lung_geometry(a, side)
    r = ((u - cu) / (half_w - margin)) ** 2 + ((v - cv) / (half_h - margin)) ** 2
    if r >= 1.0 or v > float(_diaphragm(a, u, side)) - margin:
        return False
    hu = (u - a["heart_cu"]) / (_heart_halfwidth(a) + margin)
    hv = (v - a["heart_cv"]) / (a["heart_b"] + margin)
    return hu * hu + hv * hv >= 1.0 and abs(u) > a["medi_w"] + margin


def sample_spec(rng: np.random.Generator, size: int = 512, n_findings: int | None = None) -> PhantomSpec:
    """Draw a phantom spec: anatomy, pose, exposure and 0 to 3 findings.

    Args:
        rng: random generator (the only source of randomness).
        size: image side in pixels.
        n_findings: force this many findings (default: 0 with p=0.4, else 1-3).
    """
    a = {
        "thorax_halfwidth": rng.uniform(0.80, 0.90),
        "lung_cu": rng.uniform(0.40, 0.45),
        "lung_cv": rng.uniform(-0.05, 0.03),
        "lung_a": rng.uniform(0.34, 0.40),
        "lung_b": rng.uniform(0.68, 0.76),
        "dome_v": rng.uniform(0.36, 0.46),
        "dome_asym": rng.uniform(0.02, 0.07),
        "dome_h": rng.uniform(0.08, 0.14),
        "heart_cu": rng.uniform(0.08, 0.14),
        "heart_cv": rng.uniform(0.20, 0.26),
        "heart_b": rng.uniform(0.22, 0.27),
        "heart_ctr": rng.uniform(0.38, 0.47),  # cardiothoracic ratio, normal < 0.5
        "medi_w": rng.uniform(0.10, 0.13),
        "spine_w": rng.uniform(0.055, 0.07),
        "rib_phase": rng.uniform(0.0, 1.0),
        "rib_gap": rng.uniform(0.16, 0.19),
        "rib_w": rng.uniform(0.024, 0.032),
        "rib_curve": rng.uniform(0.45, 0.65),
        "clav_v": rng.uniform(-0.80, -0.70),
        "clav_tilt": rng.uniform(0.05, 0.15),
        "soft": rng.uniform(0.85, 1.15),
        "bone": rng.uniform(0.7, 1.1),
        "markings": rng.uniform(0.5, 0.9),
    }
    scale = size / 2.0 * rng.uniform(0.86, 1.0)
    centre = (size / 2.0 + rng.normal(0, 0.02 * size), size / 2.0 + rng.normal(0.03 * size, 0.02 * size))
    angle = float(np.deg2rad(rng.normal(0.0, 2.5)))
    exposure = {
        "gamma": rng.uniform(0.8, 1.25),
        "contrast": rng.uniform(0.85, 1.15),
        "peak": rng.uniform(36000, 62000),
        "floor": rng.uniform(800, 4000),
        "noise": rng.uniform(0.006, 0.02),
        "blur": rng.uniform(0.6, 1.3),
    }
    if n_findings is None:
        n_findings = int(rng.choice([0, 1, 2, 3], p=[0.40, 0.35, 0.17, 0.08]))
    # pick the labels first (only nodules repeat); an enlarged heart is placed before
    # anything that must avoid it. A label that cannot be placed is redrawn, so the count holds.
    findings: list[Finding] = []
    placed = dict(a)  # anatomy as rendered (heart enlarged once Cardiomegaly is drawn)
    if n_findings and rng.random() < 0.14 * n_findings:
        f = _sample_finding(rng, "Cardiomegaly", placed, scale, findings)
        placed["heart_ctr"] = f.params["ctr"]
        findings.append(f)
    others = [c for c in FINDING_CLASSES if c != "Cardiomegaly"]
    weights = np.array([0.30, 0.18, 0.20, 0.18])
    for _ in range(100):
        if len(findings) >= n_findings:
            break
        label = str(rng.choice(others, p=weights / weights.sum()))
        if label != "Nodule" and any(f.label == label for f in findings):
            continue
        f = _sample_finding(rng, label, placed, scale, findings)
        if f is not None:
            findings.append(f)
    return PhantomSpec(
        size=size,
        centre=(float(centre[0]), float(centre[1])),
        scale=float(scale),
        angle=angle,
        anatomy={k: float(v) for k, v in a.items()},
        exposure={k: float(v) for k, v in exposure.items()},
        noise_seed=int(rng.integers(0, 2**31 - 1)),
        findings=tuple(findings),
    )


def _sample_finding(rng: np.random.Generator, label: str, a: dict[str, float], scale: float, others: list[Finding]) -> Finding | None:
    px = 1.0 / scale  # one pixel in anatomy units
    sides_taken = {(f.label, f.side) for f in others}
    if label in ("Nodule", "Mass"):
        if label == "Nodule":
            radius = rng.uniform(3.0, 10.0) * px  # 6-20 px diameter
            contrast = rng.uniform(0.10, 0.45)
        else:
            radius = rng.uniform(15.0, 40.0) * px  # 30-80 px diameter
            contrast = rng.uniform(0.25, 0.55)
        for _ in range(40):
            side = int(rng.choice([-1, 1]))
            cu, cv, half_w, half_h = _lung_geometry(a, side)
            u = cu + rng.uniform(-half_w, half_w)
            v = cv + rng.uniform(-half_h, half_h)
            if not _inside_lung(a, u, v, side, margin=radius * 1.2):
                continue
            if any(f.label in ("Nodule", "Mass") and np.hypot(f.params["u"] - u, f.params["v"] - v) < f.params["r"] + radius + 6 * px for f in others):
                continue
            size_term = min(1.0, radius / (8.0 * px))
            consp = float(np.clip(contrast / 0.45 * (0.45 + 0.55 * size_term), 0.05, 1.0))
            params = {"u": u, "v": v, "r": radius, "contrast": contrast}
            if label == "Mass":
                params.update(lob3=rng.uniform(0.05, 0.15), lob5=rng.uniform(0.0, 0.08), ph3=rng.uniform(0, 2 * np.pi), ph5=rng.uniform(0, 2 * np.pi))
            return Finding(label, side, params, consp)
        return None
    if label == "Effusion":
        side = int(rng.choice([-1, 1]))
        if ("Pneumothorax", side) in sides_taken:
            return None
        height = rng.uniform(0.10, 0.32)
        density = rng.uniform(0.55, 0.9)
        consp = float(np.clip(0.25 + 2.0 * (height - 0.08) * density, 0.1, 1.0))
        return Finding(label, side, {"height": height, "density": density, "meniscus": rng.uniform(0.05, 0.12)}, consp)
    if label == "Cardiomegaly":
        ctr = rng.uniform(0.54, 0.66)
        return Finding(label, 0, {"ctr": ctr}, float(np.clip((ctr - 0.5) * 6.0, 0.2, 1.0)))
    if label == "Pneumothorax":
        side = int(rng.choice([-1, 1]))
        if ("Effusion", side) in sides_taken:
            return None
        collapse = rng.uniform(0.12, 0.35)  # fraction of lung width lost laterally/apically
        return Finding(label, side, {"collapse": collapse, "line": rng.uniform(0.06, 0.14)}, float(np.clip(collapse * 2.6, 0.15, 1.0)))
    raise ValueError(f"unknown finding class {label!r}")


# --------------------------------------------------------------------------- rendering


def _frame(spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray]:
    """Anatomy coordinates ``(u, v)`` of every pixel centre, each ``(H, W)``."""
    x, y = pixel_centres(spec.size, spec.size)
    dx, dy = x - spec.centre[0], y - spec.centre[1]
    c, s = np.cos(spec.angle), np.sin(spec.angle)
    u = (c * dx + s * dy) / spec.scale
    v = (-s * dx + c * dy) / spec.scale
    return u, v


def _dome(r2: np.ndarray) -> np.ndarray:
    """Projected thickness of a ball: sqrt(1 - r^2) inside, exactly 0 outside."""
    return np.sqrt(np.clip(1.0 - r2, 0.0, None))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lung_r2(a: dict[str, float], u: np.ndarray, v: np.ndarray, side: int, shrink: float = 0.0) -> np.ndarray:
    """Squared normalised radius of one lung's outline (1 on the outline).

    ``shrink`` pulls the lateral and apical edge in (a collapsed lung); the medial edge and
    the base stay where they are.
    """
    cu, cv, half_w, half_h = _lung_geometry(a, side)
    hw = half_w * (1.0 - shrink)
    ucen = cu - side * half_w * shrink
    hh = half_h * (1.0 - 0.6 * shrink)
    vcen = cv + half_h * 0.6 * shrink
    t = np.clip((v - vcen) / hh, -1.0, 1.0)
    hw = hw * (0.72 + 0.28 * (t + 1.0) / 2.0)  # apex narrower than the base
    ucen = ucen + side * 0.04 * (t + 1.0) / 2.0
    return ((u - ucen) / hw) ** 2 + ((v - vcen) / hh) ** 2


def _lung_air(a: dict[str, float], u: np.ndarray, v: np.ndarray, side: int, shrink: float = 0.0) -> np.ndarray:
    """Air thickness of one lung (exactly 0 outside it)."""
    air = _dome(_lung_r2(a, u, v, side, shrink))
    below = v - _diaphragm(a, u, side)
    air = air * _smoothstep(-below / 0.04)
    # medial edge: mediastinum and heart border (soft transition of a few pixels)
    heart = ((u - a["heart_cu"]) / _heart_halfwidth(a)) ** 2 + ((v - a["heart_cv"]) / a["heart_b"]) ** 2
    air = air * _smoothstep((np.sqrt(heart) - 1.0) / 0.05)
    air = air * _smoothstep((np.abs(u) - a["medi_w"]) / 0.04)
    return air * (np.sign(u) == side)


def render(spec: PhantomSpec) -> Rendered:
    """Render a phantom spec to a 16-bit image with per-finding masks and boxes."""
    a = dict(spec.anatomy)
    n = spec.size
    u, v = _frame(spec)
    noise_rng = np.random.default_rng(spec.noise_seed)

    # --- anatomy (attenuation-like, before findings) -------------------------------
    body = _dome((u / (a["thorax_halfwidth"] + 0.12)) ** 2) * a["soft"]
    shoulders = (v < -0.75) * _smoothstep((-0.75 - v) / 0.15)
    neck = _dome((u / 0.22) ** 2)
    body = body * (1 - shoulders) + shoulders * np.maximum(neck * a["soft"], body * 0.6)
    medi_w = a["medi_w"] + 0.03 + 0.05 * _smoothstep((v + 0.2) / 0.4)  # wider towards the heart
    medi = _dome((u / medi_w) ** 2) * _smoothstep((0.6 - v) / 0.1)
    spine = _dome((u / a["spine_w"]) ** 2)
    vert = 0.85 + 0.15 * np.cos(2 * np.pi * (v / 0.11 + a["rib_phase"])) ** 8
    spine = spine * vert
    abdomen = np.zeros_like(u)
    for side in (-1, 1):
        below = v - _diaphragm(a, u, side)
        abdomen = np.maximum(abdomen, (np.sign(u) == side) * _smoothstep(below / 0.05) * 0.35)

    # ribs: posterior arcs (concave down, highest just lateral to the spine) with cortex
    ribs = np.zeros_like(u)
    au = np.abs(u)
    lateral = _smoothstep((au - a["spine_w"]) / 0.05) * _smoothstep((a["thorax_halfwidth"] + 0.05 - au) / 0.08)
    lowest = a["dome_v"] + 0.2
    for k in range(-1, 11):
        v0 = -0.80 + (k + a["rib_phase"]) * a["rib_gap"]
        if v0 > lowest + 0.1:
            break
        centre_v = v0 - 0.30 * au + a["rib_curve"] * 1.3 * au**2
        d = np.abs(v - centre_v) / (a["rib_w"] * (1 + 0.5 * au))
        band = d < 1.0
        shaft = np.where(band, 0.55 * _dome(d**2) + 0.45 * _smoothstep((d - 0.5) / 0.3), 0.0)
        ribs = np.maximum(ribs, shaft * lateral)
    ribs = ribs * _smoothstep((lowest - v) / 0.15)
    clav = np.zeros_like(u)
    for side in (-1, 1):
        t = side * u
        line_v = a["clav_v"] + a["clav_tilt"] * (t - 0.1) - 0.04 * np.sin(np.clip((t - 0.1) / 0.5, 0, 1) * np.pi)
        inside = (t > 0.08) & (t < 0.62)
        clav = np.maximum(clav, _dome(((v - line_v) / 0.032) ** 2) * inside * _smoothstep((t - 0.08) / 0.04))
    trachea = _dome((u / 0.035) ** 2) * _smoothstep((-0.30 - v) / 0.1)

    # lung markings: vessel-like ridge network, denser towards the hila
    g = ndimage.gaussian_filter(noise_rng.standard_normal((n, n)), sigma=max(1.2, 2.2 * spec.scale / 256))
    ridges = np.exp(-((g / (0.30 * g.std())) ** 2))
    hilum = np.exp(-(((au - 0.18) / 0.35) ** 2 + ((v - 0.05) / 0.5) ** 2))
    markings = a["markings"] * ridges * (0.35 + 0.65 * hilum)

    # bones, soft tissue and mediastinum do not depend on findings: blur them (detector MTF)
    base = 1.0 * body + 0.5 * medi + 0.18 * spine * a["bone"] + 0.22 * ribs * a["bone"] + 0.35 * clav * a["bone"] + abdomen - 0.18 * trachea
    base = ndimage.gaussian_filter(base, sigma=spec.exposure["blur"])
    # heart and lungs are smooth already; left unblurred so finding footprints stay exact
    attenuation = base + _heart_and_lungs(a, u, v, markings)

    # --- findings: compact additive contributions ------------------------------------
    a_eff = _effective_anatomy(spec)
    deltas: list[np.ndarray] = []
    for f in spec.findings:
        if f.label == "Cardiomegaly":
            deltas.append(_heart_and_lungs(a_eff, u, v, markings) - _heart_and_lungs(a, u, v, markings))
        else:
            deltas.append(_finding_delta(f, a_eff, u, v, markings))
    total = attenuation + (np.sum(deltas, axis=0) if deltas else 0.0)

    # --- exposure, detector noise, 16-bit ----------------------------------------------
    e = spec.exposure
    lo, hi = -0.55, 2.2
    x = np.clip((total - lo) / (hi - lo), 0.0, 1.0)
    x = np.clip(0.5 + (x ** e["gamma"] - 0.5) * e["contrast"], 0.0, 1.0)
    x = x + e["noise"] * np.sqrt(0.2 + x) * noise_rng.standard_normal((n, n))
    img = np.clip(e["floor"] + x * (e["peak"] - e["floor"]), 0, 65535).astype(np.uint16)

    masks = [d != 0 for d in deltas]
    boxes = [mask_to_box(m) for m in masks]
    lungs = (_lung_air(a_eff, u, v, -1) + _lung_air(a_eff, u, v, 1)) > 0.05
    heart_mask = _heart(a_eff, u, v) > 0
    return Rendered(image=img, masks=masks, boxes=boxes, lungs=lungs, heart_box=mask_to_box(heart_mask) or (0, 0, n, n))


def _effective_anatomy(spec: PhantomSpec) -> dict[str, float]:
    """Anatomy with the findings that change it applied (an enlarged heart)."""
    a = dict(spec.anatomy)
    for f in spec.findings:
        if f.label == "Cardiomegaly":
            a["heart_ctr"] = f.params["ctr"]
    return a


def _heart(a: dict[str, float], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _dome(((u - a["heart_cu"]) / _heart_halfwidth(a)) ** 2 + ((v - a["heart_cv"]) / a["heart_b"]) ** 2)


def _heart_and_lungs(a: dict[str, float], u: np.ndarray, v: np.ndarray, markings: np.ndarray) -> np.ndarray:
    """Attenuation of the cardiac silhouette minus the lung air (with markings)."""
    air = _lung_air(a, u, v, -1) + _lung_air(a, u, v, 1)
    return 0.4 * _heart(a, u, v) - 0.85 * air * (1.0 - 0.22 * markings)


def _finding_delta(f: Finding, a: dict[str, float], u: np.ndarray, v: np.ndarray, markings: np.ndarray) -> np.ndarray:
    """Additive attenuation of one finding; exactly 0 outside its footprint."""
    p = f.params
    if f.label in ("Nodule", "Mass"):
        du, dv = u - p["u"], v - p["v"]
        r = np.hypot(du, dv)
        radius = np.full_like(r, p["r"])
        if f.label == "Mass":
            phi = np.arctan2(dv, du)
            radius = p["r"] * (1 + p["lob3"] * np.sin(3 * phi + p["ph3"]) + p["lob5"] * np.sin(5 * phi + p["ph5"]))
        return p["contrast"] * _dome((r / radius) ** 2)
    if f.label == "Effusion":
        side = f.side
        cu, _, half_w, _ = _lung_geometry(a, side)
        lateral = np.clip(side * (u - cu) / half_w, -1.0, 1.0)
        # fluid surface: higher laterally (meniscus), `height` above the dome
        surface = _diaphragm(a, u, side) - p["height"] - p["meniscus"] * np.clip(lateral, 0, 1) ** 2
        fluid = _smoothstep((v - surface) / 0.05)
        air = _lung_air(a, u, v, side)
        return 0.85 * p["density"] * air * fluid
    if f.label == "Pneumothorax":
        side = f.side
        full = _lung_air(a, u, v, side)
        kept = _lung_air(a, u, v, side, shrink=p["collapse"])
        gap = (full > 0) & (kept <= 0)
        # in the gap: no lung markings, a little more air
        delta = np.where(gap, -0.85 * (0.12 * full - 0.22 * full * markings), 0.0)
        # the visceral pleural line: the collapsed lung's outline where it runs inside the
        # lung field (lateral and apical; medially it coincides with the lung's own border)
        r = np.sqrt(_lung_r2(a, u, v, side, shrink=p["collapse"]))
        line = (full > 0) & (r > 0.97) & (r < 1.0) & (np.sign(u) == side)
        return delta + np.where(line, p["line"] * _dome(((r - 0.985) / 0.015) ** 2), 0.0)
    raise ValueError(f"unknown finding class {f.label!r}")
