"""Seeded synthetic B-mode ultrasound phantoms with exact masks.

A phantom is rendered the way a scanner forms an image, in *beam space* (rows = depth samples
along a scan line, columns = scan lines), then scan-converted to the Cartesian image:

1. **Echogenicity map** ``E`` (mean backscattered power, tissue = 1): smooth tissue heterogeneity;
   optional layers (bright skin, hypoechoic fat with bright septa, striated muscle under a bright
   fascia); lesions replace tissue: anechoic cysts (E ~ 0), hypoechoic (E ~ 0.2) or hyperechoic
   (E ~ 6) solid lesions.
2. **Speckle**: complex Gaussian scatterer amplitudes scaled by ``sqrt(E)`` are blurred by an
   anisotropic Gaussian point-spread function (short axially, wider laterally) and the envelope
   is taken. In homogeneous tissue this is Rayleigh-distributed multiplicative noise on ``E``
   with a grain of the PSF's size; at lesion borders the PSF blurs the edge as a scanner does.
3. **Attenuation and gain** in dB along each line: tissue attenuation (dB/cm x depth), extra
   attenuation along the path travelled inside lesions (negative for cysts -> posterior
   enhancement; large for hyperechoic lesions -> acoustic shadow), a TGC-like depth gain curve
   that mostly compensates tissue attenuation (with ripple), an overall gain, and a faint
   electronic noise floor.
4. **Log compression** over a 50-60 dB dynamic range to uint8.
5. **Geometry**: ``"linear"`` uses parallel vertical lines (beam space = the image);
   ``"sector"`` uses lines fanning from an apex above the image (a convex probe) and is
   scan-converted by bilinear interpolation; pixels outside the fan are exactly 0.

Masks are exact: each is the geometric shape that generated the structure (ellipse, lobulated
contour, layer band between two boundary curves), evaluated at pixel centres and clipped to the
field of view; lesions occlude the layers they lie in. Coordinates: pixel (row i, column j)
covers ``[j, j+1) x [i, i+1)`` with its centre at ``(j + 0.5, i + 0.5)``; boxes are XYXY with
``x1 = max column + 1`` and ``y1 = max row + 1`` (COCO's convention).

Everything depends only on ``seed`` (numpy ``default_rng``); the same arguments give the same
bytes. Only numpy and OpenCV are used; a 256 or 512 phantom takes milliseconds on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import cv2
import numpy as np

Geometry = Literal["sector", "linear"]
Kind = Literal["cyst", "solid", "layered", "mixed"]
GEOMETRIES: tuple[str, ...] = ("sector", "linear")
KINDS: tuple[str, ...] = ("cyst", "solid", "layered", "mixed")
MIN_SIZE = 32

_ECHO = {"cyst": 1e-3, "hypoechoic_lesion": (0.12, 0.25), "hyperechoic_lesion": (5.0, 8.0)}
# Extra attenuation inside a lesion, in dB per cm, relative to tissue (cysts: fluid attenuates
# far less than tissue, hence posterior enhancement; calcified/fibrous lesions shadow).
_EXTRA_ATTEN_DB_CM = {"cyst": None, "hypoechoic_lesion": (4.0, 8.0),
                      "hyperechoic_lesion": (8.0, 12.0)}


@dataclass(frozen=True)
class PhantomInstance:
    """One structure instance: ``mask`` is H x W bool, ``box`` XYXY ints (x1, y1 exclusive)."""

    structure: str
    mask: np.ndarray
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Phantom:
    """A synthetic B-mode image with its ground truth.

    Attributes:
        image: H x W uint8 B-mode image (0 outside the field of view).
        masks: structure name -> H x W bool, the union of that structure's instances.
        instances: every instance, in generation order (layers top to bottom, then lesions).
        fov: H x W bool field of view (the fan for ``"sector"``; all True for ``"linear"``).
        seed, geometry, kind: the arguments that generated it.
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    instances: tuple[PhantomInstance, ...]
    fov: np.ndarray
    seed: int
    geometry: str
    kind: str
    params: dict[str, float] = field(default_factory=dict)

    @property
    def structures(self) -> tuple[str, ...]:
        """Structure names, in order of first appearance among the instances."""
        return tuple(dict.fromkeys(inst.structure for inst in self.instances))

    @property
    def boxes(self) -> np.ndarray:
        """N x 4 int64 XYXY boxes, one per instance (same order as ``instances``)."""
        return np.array([inst.box for inst in self.instances], dtype=np.int64).reshape(-1, 4)

    def centroid(self, key: int | str, inside: bool = True) -> tuple[float, float]:
        """Centroid ``(x, y)`` in pixel coordinates of an instance (int) or a structure (str).

        With ``inside=True`` the centre of the mask pixel nearest the centroid is returned when
        the centroid itself falls outside the mask (curved layers, crescents), so the point can
        serve as a positive click prompt.
        """
        if isinstance(key, str):
            if key not in self.masks:
                raise KeyError(f"no structure {key!r} in this phantom; have {self.structures}")
            mask = self.masks[key]
        else:
            if not -len(self.instances) <= key < len(self.instances):
                raise IndexError(f"instance {key} out of range (phantom has "
                                 f"{len(self.instances)})")
            mask = self.instances[key].mask
        rows, cols = np.nonzero(mask)
        cx, cy = float(cols.mean()) + 0.5, float(rows.mean()) + 0.5
        if inside and not mask[int(cy), int(cx)]:
            nearest = int(np.argmin((cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2))
            cx, cy = float(cols[nearest]) + 0.5, float(rows[nearest]) + 0.5
        return cx, cy


# --------------------------------------------------------------------------- geometry


class _Scan:
    """Probe geometry: maps between depth/lateral fractions (d, u in [0, 1]) and pixels.

    ``d`` is the fraction of the imaged depth (0 at the probe face), ``u`` the fraction of the
    lateral extent (0 left). Beam space is an ``n_ax`` x ``n_lat`` grid over (d, u).
    """

    def __init__(self, size: int, geometry: str, rng: np.random.Generator) -> None:
        self.size = size
        self.geometry = geometry
        self.n_ax = self.n_lat = size
        centres = np.arange(size, dtype=np.float32) + 0.5
        self.px, self.py = np.meshgrid(centres, centres)  # pixel centres, H x W
        if geometry == "sector":
            self.half_angle = math.radians(rng.uniform(26.0, 32.0))
            self.r0 = rng.uniform(0.12, 0.28) * size
            self.apex_x = size / 2.0
            self.apex_y = 0.02 * size - self.r0
            self.r1 = min(0.49 * size / math.sin(self.half_angle), 0.985 * size - self.apex_y)
            d, u = self.to_du(self.px, self.py)
            self.fov = (d >= 0) & (d <= 1) & (u >= 0) & (u <= 1)
            # Beam grid samples sit on d = a / (n_ax - 1), u = l / (n_lat - 1).
            self.beam_d = np.linspace(0, 1, self.n_ax, dtype=np.float32)[:, None]
            self.beam_u = np.linspace(0, 1, self.n_lat, dtype=np.float32)[None, :]
            self.map_x = (u * (self.n_lat - 1)).astype(np.float32)
            self.map_y = (d * (self.n_ax - 1)).astype(np.float32)
        else:
            self.fov = np.ones((size, size), dtype=bool)
            self.beam_d = (centres / size)[:, None]
            self.beam_u = (centres / size)[None, :]
        self.beam_d, self.beam_u = np.broadcast_arrays(self.beam_d, self.beam_u)
        self.beam_x, self.beam_y = self.to_xy(self.beam_d, self.beam_u)
        self.pix_d, self.pix_u = self.to_du(self.px, self.py)

    def to_du(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.geometry == "linear":
            return (y / self.size).astype(np.float32), (x / self.size).astype(np.float32)
        dx, dy = x - self.apex_x, y - self.apex_y
        r = np.hypot(dx, dy)
        theta = np.arctan2(dx, dy)
        d = (r - self.r0) / (self.r1 - self.r0)
        u = (theta + self.half_angle) / (2 * self.half_angle)
        return d.astype(np.float32), u.astype(np.float32)

    def to_xy(self, d: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d, u = np.asarray(d, np.float32), np.asarray(u, np.float32)
        if self.geometry == "linear":
            return u * self.size, d * self.size
        r = self.r0 + d * (self.r1 - self.r0)
        theta = (u * 2 - 1) * self.half_angle
        return (self.apex_x + r * np.sin(theta)).astype(np.float32), \
            (self.apex_y + r * np.cos(theta)).astype(np.float32)

    def to_image(self, beam: np.ndarray) -> np.ndarray:
        """Scan-convert a beam-space float image to the Cartesian grid (0 outside the FOV)."""
        if self.geometry == "linear":
            return beam
        out = cv2.remap(beam, self.map_x, self.map_y, interpolation=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        return np.where(self.fov, out, 0).astype(np.float32)


# --------------------------------------------------------------------------- shapes

Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _blob(cx: float, cy: float, radius: float, aspect: float, angle: float,
          harmonics: np.ndarray, phases: np.ndarray) -> Inside:
    """A (lobulated) ellipse: inside where rho <= radius * (1 + sum a_k cos(k phi + p_k)).

    The returned function tests points (x, y arrays of one shape) and evaluates the contour only
    for points within the shape's bounding radius, which keeps large grids cheap.
    """
    ca, sa = math.cos(angle), math.sin(angle)
    reach = radius * (1 + float(np.abs(harmonics).sum()))

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.zeros(np.shape(x), dtype=bool)
        near = (np.abs(x - cx) <= reach) & (np.abs(y - cy) <= reach)
        dx, dy = x[near] - cx, y[near] - cy
        lx = dx * ca + dy * sa
        ly = (-dx * sa + dy * ca) / aspect
        rho = np.hypot(lx, ly)
        phi = np.arctan2(ly, lx)
        bound = np.ones_like(rho)
        for k, (a, p) in enumerate(zip(harmonics, phases), start=2):
            bound += a * np.cos(k * phi + p)
        out[near] = rho <= radius * bound
        return out

    return inside


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int,
                  sigma: float) -> np.ndarray:
    """Smooth random field, exp of a bicubically upsampled Gaussian grid (log-normal, mean ~1)."""
    grid = rng.normal(0.0, sigma, size=(cells, cells)).astype(np.float32)
    up = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.exp(up - sigma * sigma / 2)


# --------------------------------------------------------------------------- scene


@dataclass
class _Scene:
    echo: np.ndarray  # beam-space echogenicity, n_ax x n_lat
    instances: list[tuple[str, np.ndarray]] = field(default_factory=list)  # pixel masks
    # name, beam-space inside mask, extra attenuation in dB/cm (NaN for cysts: set from tissue)
    lesions: list[tuple[str, np.ndarray, float]] = field(default_factory=list)


def _add_layers(scene: _Scene, scan: _Scan, rng: np.random.Generator) -> float:
    """Skin / fat / muscle bands with wavy boundaries; returns the muscle's top depth fraction."""
    def curve(base: float) -> Callable[[np.ndarray], np.ndarray]:
        amp, freq, phase = rng.uniform(0.004, 0.02), rng.uniform(0.5, 2.0), rng.uniform(0, 6.3)
        return lambda u: base + amp * np.sin(2 * np.pi * freq * u + phase)

    b1 = curve(rng.uniform(0.035, 0.06))
    b2 = curve(rng.uniform(0.2, 0.32))
    d, u = scan.beam_d, scan.beam_u
    e1, e2 = b1(u), b2(u)
    echo = scene.echo
    skin = d < e1
    fat = (d >= e1) & (d < e2)
    muscle = d >= e2
    echo[skin] *= rng.uniform(2.0, 3.0)
    echo[fat] *= rng.uniform(0.25, 0.4)
    for _ in range(int(rng.integers(2, 5))):  # thin bright connective-tissue septa in the fat
        sept = curve(rng.uniform(0.0, 1.0))
        depth = e1 + (e2 - e1) * np.clip(sept(u) - np.floor(sept(u)), 0.15, 0.85)
        echo[fat & (np.abs(d - depth) < 0.004)] *= rng.uniform(4.0, 7.0)
    n_stripes = rng.uniform(25, 45)  # muscle fibres: striations parallel to the fascia
    wiggle = 0.01 * np.sin(2 * np.pi * rng.uniform(1, 3) * u + rng.uniform(0, 6.3))
    stripes = 1 + 0.6 * np.cos(2 * np.pi * n_stripes * (d - e2 + wiggle))
    echo[muscle] *= (rng.uniform(0.8, 1.0) * stripes)[muscle]
    echo[np.abs(d - e2) < 0.006] *= rng.uniform(4.0, 6.0)  # fascia: a specular bright line
    pd, pu = scan.pix_d, scan.pix_u
    p1, p2 = b1(pu), b2(pu)
    for name, m in (("skin", pd < p1), ("fat", (pd >= p1) & (pd < p2)), ("muscle", pd >= p2)):
        scene.instances.append((name, m & scan.fov))
    return float(max(e2.max(), 0.0))


def _place_lesion(scene: _Scene, scan: _Scan, rng: np.random.Generator, structure: str,
                  d_range: tuple[float, float], taken: list[tuple[float, float, float]]) -> None:
    """Add one lesion whose contour lies inside the FOV and away from earlier lesions."""
    size = scan.size
    for _attempt in range(60):
        d = rng.uniform(*d_range)
        u = rng.uniform(0.25, 0.75)
        cx, cy = (float(v) for v in scan.to_xy(np.float32(d), np.float32(u)))
        radius = rng.uniform(0.05, 0.11) * size
        lobes = 0.0 if structure == "cyst" else (0.09 if structure == "hypoechoic_lesion"
                                                 else 0.05)
        harmonics = rng.uniform(0.0, lobes, size=4)
        phases = rng.uniform(0.0, 2 * np.pi, size=4)
        aspect = rng.uniform(0.6, 1.0)
        angle = rng.uniform(0.0, np.pi)
        shape = _blob(cx, cy, radius, aspect, angle, harmonics, phases)
        # Contour samples (the largest lobe bound) must lie in the FOV, depth window included.
        phi = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        r_max = radius * (1 + harmonics.sum())
        ex = cx + r_max * np.cos(phi)
        ey = cy + r_max * np.sin(phi)
        ed, eu = scan.to_du(ex, ey)
        fits = (ed.min() > max(0.04, d_range[0] - 0.2)) and ed.max() < 0.97 \
            and eu.min() > 0.03 and eu.max() < 0.97
        apart = all(math.hypot(cx - tx, cy - ty) > r_max + tr + 0.02 * size
                    for tx, ty, tr in taken)
        if fits and apart:
            break
    taken.append((cx, cy, r_max))
    lo_hi = _ECHO[structure]
    level = lo_hi if isinstance(lo_hi, float) else rng.uniform(*lo_hi)
    inside_beam = shape(scan.beam_x, scan.beam_y)
    if structure == "hypoechoic_lesion":  # heterogeneous interior
        texture = _smooth_field(rng, scene.echo.shape, 12, 0.5)
        scene.echo[inside_beam] = (level * texture)[inside_beam]
    else:
        scene.echo[inside_beam] = level
    extra = _EXTRA_ATTEN_DB_CM[structure]
    db_cm = float("nan") if extra is None else float(rng.uniform(*extra))
    scene.lesions.append((structure, inside_beam, db_cm))
    mask = shape(scan.px, scan.py) & scan.fov
    scene.instances.append((structure, mask))


# --------------------------------------------------------------------------- rendering


def _gauss_kernel(sigma: float) -> tuple[int, np.ndarray]:
    k = 2 * int(math.ceil(3 * sigma)) + 1
    return k, cv2.getGaussianKernel(k, sigma, ktype=cv2.CV_32F)[:, 0]


def _speckle_envelope(echo: np.ndarray, rng: np.random.Generator, sigma_ax: float,
                      sigma_lat: float) -> np.ndarray:
    """|PSF * (sqrt(E) * complex white noise)|, normalised so E[env^2] = E in flat regions."""
    # Real, then imaginary part: two draws in this order (the phantoms' bytes depend on it).
    noise = [rng.standard_normal(echo.shape, dtype=np.float32) for _part in range(2)]
    return _envelope(echo, noise[0], noise[1], sigma_ax, sigma_lat)


def _envelope(echo: np.ndarray, noise_re: np.ndarray, noise_im: np.ndarray, sigma_ax: float,
              sigma_lat: float) -> np.ndarray:
    """Speckle envelope of given white scatterer noise (real, imaginary parts; E's shape)."""
    amp = np.sqrt(echo).astype(np.float32)
    kx, gx = _gauss_kernel(sigma_lat)
    ky, gy = _gauss_kernel(sigma_ax)
    norm = 1.0 / math.sqrt(float((gx ** 2).sum() * (gy ** 2).sum()) * 2.0)
    out = np.empty(echo.shape, np.float32)
    power = np.zeros(echo.shape, np.float32)
    for noise in (noise_re, noise_im):
        cv2.GaussianBlur(noise * amp, (kx, ky), sigmaX=sigma_lat, sigmaY=sigma_ax, dst=out,
                         borderType=cv2.BORDER_REFLECT)
        power += out * out
    return np.sqrt(power) * norm


def _path_in_lesions_db(scene: _Scene, scan: _Scan, depth_cm: float,
                        tissue_db_cm: float) -> np.ndarray:
    """Extra round-trip attenuation (dB) accumulated inside lesions above each beam sample."""
    total = np.zeros(scene.echo.shape, np.float32)
    step_cm = depth_cm / scan.n_ax
    for structure, inside, db_cm in scene.lesions:
        # Fluid attenuates almost nothing: behind a cyst the TGC over-compensates.
        rate = -tissue_db_cm if structure == "cyst" else db_cm
        total += rate * step_cm * np.cumsum(inside, axis=0, dtype=np.float32)
    return total


def make_phantom(seed: int = 0, size: int = 256, geometry: str = "sector",
                 kind: str = "mixed") -> Phantom:
    """Render one seeded B-mode phantom.

    Args:
        seed: any int; the same arguments always give the same bytes.
        size: image side in pixels (square image), at least ``MIN_SIZE`` (32).
        geometry: ``"sector"`` (convex-probe fan, zero outside) or ``"linear"``.
        kind: ``"cyst"`` (1-3 anechoic cysts with posterior enhancement), ``"solid"`` (1-2
            hypo- or hyperechoic solid lesions with shadowing), ``"layered"`` (skin, fat,
            muscle), or ``"mixed"`` (layers with a cyst and a solid lesion in the muscle).

    Returns:
        :class:`Phantom` with an H x W uint8 image and exact H x W bool masks.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an int >= {MIN_SIZE}, got {size!r}")
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    size = int(size)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & (2**63 - 1),
                                                        GEOMETRIES.index(geometry),
                                                        KINDS.index(kind), size]))
    scan = _Scan(size, geometry, rng)

    # 1. Echogenicity map: tissue heterogeneity, then layers, then lesions replacing tissue.
    scene = _Scene(echo=_smooth_field(rng, (scan.n_ax, scan.n_lat), 7, 0.25))
    taken: list[tuple[float, float, float]] = []
    if kind in ("layered", "mixed"):
        muscle_top = _add_layers(scene, scan, rng)
    if kind == "cyst":
        for _ in range(int(rng.integers(1, 4))):
            _place_lesion(scene, scan, rng, "cyst", (0.3, 0.75), taken)
    elif kind == "solid":
        for _ in range(int(rng.integers(1, 3))):
            name = "hypoechoic_lesion" if rng.random() < 0.5 else "hyperechoic_lesion"
            _place_lesion(scene, scan, rng, name, (0.3, 0.7), taken)
    elif kind == "mixed":
        window = (min(muscle_top + 0.2, 0.6), 0.75)
        _place_lesion(scene, scan, rng, "cyst", window, taken)
        name = "hypoechoic_lesion" if rng.random() < 0.5 else "hyperechoic_lesion"
        _place_lesion(scene, scan, rng, name, window, taken)

    # 2. Speckle: grain scales with the image so phantoms look alike at every size.
    grain = size / 256.0
    env = _speckle_envelope(scene.echo, rng, sigma_ax=0.7 * grain, sigma_lat=1.5 * grain)

    # 3. Attenuation, posterior effects, TGC and gain, in dB along depth.
    depth_cm = float(rng.uniform(4.0, 8.0))
    tissue_db_cm = float(rng.uniform(3.0, 6.0))  # ~0.5 dB/cm/MHz x 3-6 MHz, round trip
    depth = scan.beam_d * depth_cm
    nodes = np.linspace(0, 1, 6)
    ripple = rng.uniform(-1.5, 1.5, size=nodes.size)
    tgc = (rng.uniform(0.8, 0.95) * tissue_db_cm * depth
           + np.interp(scan.beam_d, nodes, ripple))
    gain_db = float(rng.uniform(-3.0, 3.0))
    noise_floor = 10 ** (-38 / 20) * np.abs(
        rng.standard_normal(env.shape, dtype=np.float32))
    db = (20 * np.log10(env + noise_floor + 1e-6) + gain_db - tissue_db_cm * depth + tgc
          - _path_in_lesions_db(scene, scan, depth_cm, tissue_db_cm))

    # 4. Log compression: 0 dB (tissue) lands at ~55% of the grey range.
    dynamic_range = float(rng.uniform(50.0, 60.0))
    grey = (db + 0.55 * dynamic_range) * (255.0 / dynamic_range)

    # 5. Scan conversion and quantisation.
    image = np.rint(np.clip(scan.to_image(grey.astype(np.float32)), 0, 255)).astype(np.uint8)
    image[~scan.fov] = 0

    instances: list[PhantomInstance] = []
    lesion_union = np.zeros((size, size), bool)
    for name, mask in scene.instances:
        if name not in ("skin", "fat", "muscle"):
            lesion_union |= mask
    for name, mask in scene.instances:
        if name in ("skin", "fat", "muscle"):
            mask = mask & ~lesion_union  # lesions occlude the layer they lie in
        if mask.any():
            instances.append(PhantomInstance(name, mask, _box(mask)))
    masks: dict[str, np.ndarray] = {}
    for inst in instances:
        masks[inst.structure] = masks.get(inst.structure, np.zeros((size, size), bool)) \
            | inst.mask
    params = {"depth_cm": depth_cm, "attenuation_db_cm": tissue_db_cm,
              "dynamic_range_db": dynamic_range, "gain_db": gain_db}
    return Phantom(image=image, masks=masks, instances=tuple(instances), fov=scan.fov,
                   seed=int(seed), geometry=geometry, kind=kind, params=params)


def make_batch(n: int, seed: int = 0, size: int = 256, geometry: str | None = None,
               kind: str | None = None) -> list[Phantom]:
    """``n`` phantoms; ``geometry``/``kind`` ``None`` vary them (seeded) across the batch.

    Item ``i`` is ``make_phantom(s_i, size, g_i, k_i)`` with ``s_i`` drawn from ``seed``, so any
    item can be regenerated alone from its recorded ``seed``, ``geometry`` and ``kind``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(n)):
        s = int(rng.integers(0, 2**31 - 1))
        g = geometry if geometry is not None else GEOMETRIES[int(rng.integers(len(GEOMETRIES)))]
        k = kind if kind is not None else KINDS[int(rng.integers(len(KINDS)))]
        out.append(make_phantom(s, size=size, geometry=g, kind=k))
    return out


# --------------------------------------------------------------------------- cine loops

MOTIONS: tuple[str, ...] = ("translate", "pulsate", "deform", "mixed")
TARGETS: tuple[str, ...] = ("cyst", "hypoechoic_lesion")


@dataclass(frozen=True)
class Cine:
    """A synthetic cine loop of one moving structure, with its exact mask on every frame.

    Attributes:
        frames: N x H x W uint8 B-mode frames (0 outside the field of view).
        masks: N x H x W bool, the target's exact mask per frame (pixel centres, clipped to fov).
        boxes: N x 4 int64 XYXY boxes of ``masks`` (x1, y1 exclusive).
        times_s: N frame times in seconds (``k / fps``).
        dropout: N bool, frames that carry a dropout band (poor probe contact).
        fov: H x W bool field of view.
        structure: ``"cyst"`` or ``"hypoechoic_lesion"``.
        seed, geometry, motion: the arguments that generated it; params: drawn values.
    """

    frames: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    times_s: np.ndarray
    dropout: np.ndarray
    fov: np.ndarray
    structure: str
    seed: int
    geometry: str
    motion: str
    params: dict[str, float] = field(default_factory=dict)


def _cine_path(rng: np.random.Generator, motion: str, size: int, period: float
               ) -> Callable[[int], tuple[float, float, float, float, np.ndarray]]:
    """Per-frame (dx, dy, radius scale, aspect scale, harmonic phases) of a motion model.

    One cycle per ``period`` frames (a heartbeat), with random phases: ``translate`` moves the
    centre on an ellipse-like path, ``pulsate`` scales the radius by 1 +- 25 %, ``deform``
    rotates lobes and squashes the aspect; ``mixed`` does all three, each milder.
    """
    mix = motion == "mixed"
    move = (0.05 if mix else 0.08) * size if motion in ("translate", "mixed") else 0.0
    pulse = (0.18 if mix else 0.25) if motion in ("pulsate", "mixed") else 0.0
    squash = (0.15 if mix else 0.25) if motion in ("deform", "mixed") else 0.0
    ph = rng.uniform(0.0, 2 * np.pi, size=4)
    lobe_phases = rng.uniform(0.0, 2 * np.pi, size=4)
    ax, ay = move * rng.uniform(0.7, 1.0), move * rng.uniform(0.4, 0.7)

    def at(t: int) -> tuple[float, float, float, float, np.ndarray]:
        w = 2 * np.pi * t / period
        turn = w * np.arange(1, 5) * 0.5 if squash else np.zeros(4)
        return (ax * math.sin(w + ph[0]), ay * math.sin(w + ph[1]),
                1.0 + pulse * math.sin(w + ph[2]), 1.0 - squash * (0.5 + 0.5 * math.sin(w + ph[3])),
                lobe_phases + turn)

    return at


def make_cine(seed: int = 0, n_frames: int = 24, size: int = 256, geometry: str = "sector",
              motion: str = "mixed", structure: str = "cyst", fps: float = 30.0,
              period: float = 30.0, dropout: float = 0.15, shadow: bool = True,
              decorrelation: float = 0.3) -> Cine:
    """Render a seeded cine loop: one cyst or hypoechoic lesion moving, pulsating, deforming.

    The scene is the phantom's (see the module docstring) with time added: tissue scatterers
    are fixed, so speckle persists from frame to frame and decorrelates by ``decorrelation``
    (0 = frozen, 1 = new speckle every frame); electronic noise is new each frame. The target's
    shape follows :func:`_cine_path`'s motion model, one cycle per ``period`` frames (30: a
    heartbeat of 1 s at the default 30 frames/s), and stays inside the field of view on every
    frame. ``shadow`` adds a small calcification above the target's path whose acoustic shadow
    darkens part of it on some frames; ``dropout`` is the chance per frame of a band of scan
    lines losing 12-20 dB (poor contact). Masks are exact for every frame.

    Returns:
        :class:`Cine` with N x H x W frames and masks.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) \
            or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an int >= {MIN_SIZE}, got {size!r}")
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    if structure not in TARGETS:
        raise ValueError(f"structure must be one of {TARGETS}, got {structure!r}")
    if not 0.0 <= dropout <= 1.0 or not 0.0 <= decorrelation <= 1.0 or not fps > 0 \
            or not period > 0:
        raise ValueError(f"need 0 <= dropout, decorrelation <= 1 and fps, period > 0, got "
                         f"{dropout}, {decorrelation}, {fps}, {period}")
    n, size = int(n_frames), int(size)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & (2**63 - 1), 7919,
                                                        GEOMETRIES.index(geometry),
                                                        MOTIONS.index(motion),
                                                        TARGETS.index(structure), size, n]))
    scan = _Scan(size, geometry, rng)
    base_echo = _smooth_field(rng, (scan.n_ax, scan.n_lat), 7, 0.25)

    # 1. The target's path: redraw until its contour stays inside the fov on every frame.
    lobes = 0.06 if structure == "cyst" and motion not in ("deform", "mixed") else 0.09
    for _attempt in range(60):
        cd, cu = rng.uniform(0.4, 0.62), rng.uniform(0.35, 0.65)
        cx0, cy0 = (float(v) for v in scan.to_xy(np.float32(cd), np.float32(cu)))
        radius = rng.uniform(0.08, 0.12) * size
        aspect0, angle = rng.uniform(0.75, 1.0), rng.uniform(0.0, np.pi)
        harmonics = rng.uniform(0.0, lobes, size=4)
        path = _cine_path(rng, motion, size, float(period))
        phi = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        fits = True
        for t in range(n):
            dx, dy, scale, _squash, _ph = path(t)
            r_max = radius * scale * (1 + harmonics.sum())
            ed, eu = scan.to_du(cx0 + dx + r_max * np.cos(phi), cy0 + dy + r_max * np.sin(phi))
            fits &= bool(ed.min() > 0.12 and ed.max() < 0.95 and eu.min() > 0.05
                         and eu.max() < 0.95)
        if fits:
            break

    def target(t: int) -> Inside:
        dx, dy, scale, squash, phases = path(t)
        return _blob(cx0 + dx, cy0 + dy, radius * scale, aspect0 * squash, angle, harmonics,
                     phases)

    # 2. Fixed parts: lesion echo, a shadowing calcification above the path, imaging chain.
    level = _ECHO["cyst"] if structure == "cyst" else rng.uniform(*_ECHO["hypoechoic_lesion"])
    texture = _smooth_field(rng, base_echo.shape, 12, 0.5) if structure != "cyst" else None
    lesion_db = (float("nan") if structure == "cyst"
                 else float(rng.uniform(*_EXTRA_ATTEN_DB_CM["hypoechoic_lesion"])))  # type: ignore[misc]
    calc_beam = None
    if shadow:
        sx, sy = (float(v) for v in scan.to_xy(np.float32(max(cd - 0.25, 0.1)),
                                               np.float32(cu + rng.choice([-1, 1]) * 0.09)))
        calc = _blob(sx, sy, 0.03 * size, 1.0, 0.0, np.zeros(4), np.zeros(4))
        calc_beam = calc(scan.beam_x, scan.beam_y)
        calc_db = float(rng.uniform(30.0, 45.0))
    depth_cm = float(rng.uniform(4.0, 8.0))
    tissue_db_cm = float(rng.uniform(3.0, 6.0))
    depth = scan.beam_d * depth_cm
    nodes = np.linspace(0, 1, 6)
    tgc = (rng.uniform(0.8, 0.95) * tissue_db_cm * depth
           + np.interp(scan.beam_d, nodes, rng.uniform(-1.5, 1.5, size=nodes.size)))
    gain_db = float(rng.uniform(-3.0, 3.0))
    dynamic_range = float(rng.uniform(50.0, 60.0))
    scatter = [rng.standard_normal(base_echo.shape, dtype=np.float32) for _ in range(2)]
    keep = math.sqrt(1.0 - decorrelation ** 2)
    grain = size / 256.0
    has_dropout = rng.random(n) < dropout

    frames = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), bool)
    for t in range(n):
        shape = target(t)
        inside = shape(scan.beam_x, scan.beam_y)
        echo = base_echo.copy()
        scene = _Scene(echo=echo)
        if calc_beam is not None:
            echo[calc_beam] = _ECHO["hyperechoic_lesion"][1]  # type: ignore[index]
            scene.lesions.append(("hyperechoic_lesion", calc_beam, calc_db))
        echo[inside] = level if texture is None else (level * texture)[inside]
        scene.lesions.append((structure, inside, lesion_db))
        noise = [keep * s + decorrelation * rng.standard_normal(s.shape, dtype=np.float32)
                 for s in scatter]
        env = _envelope(echo, noise[0], noise[1], 0.7 * grain, 1.5 * grain)
        floor = 10 ** (-38 / 20) * np.abs(rng.standard_normal(env.shape, dtype=np.float32))
        db = (20 * np.log10(env + floor + 1e-6) + gain_db - tissue_db_cm * depth + tgc
              - _path_in_lesions_db(scene, scan, depth_cm, tissue_db_cm))
        if has_dropout[t]:
            u0, width = rng.uniform(0.0, 0.85), rng.uniform(0.1, 0.25)
            edge = np.clip(np.minimum(scan.beam_u - u0, u0 + width - scan.beam_u) / 0.03, 0, 1)
            db = db - rng.uniform(12.0, 20.0) * edge
        grey = (db + 0.55 * dynamic_range) * (255.0 / dynamic_range)
        image = np.rint(np.clip(scan.to_image(grey.astype(np.float32)), 0, 255)).astype(np.uint8)
        image[~scan.fov] = 0
        frames[t] = image
        masks[t] = shape(scan.px, scan.py) & scan.fov
    boxes = np.array([_box(m) for m in masks], dtype=np.int64).reshape(-1, 4)
    params = {"depth_cm": depth_cm, "attenuation_db_cm": tissue_db_cm,
              "dynamic_range_db": dynamic_range, "gain_db": gain_db,
              "radius_px": float(radius), "fits_fov": float(fits)}
    return Cine(frames=frames, masks=masks, boxes=boxes,
                times_s=np.arange(n, dtype=np.float64) / float(fps), dropout=has_dropout,
                fov=scan.fov, structure=structure, seed=int(seed), geometry=geometry,
                motion=motion, params=params)
