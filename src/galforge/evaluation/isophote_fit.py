"""galforge's own isophote ellipse fitter, batched over stamps with NumPy.

The method is Jedrzejewski's (1987, MNRAS 226, 747), as implemented in IRAF ``ellipse`` and
in photutils, whose conventions and defaults it follows so that the two engines of
:func:`galforge.evaluation.morphology.measure_isophotes` give the same answers:

* an isophote of semi-major axis ``sma`` and geometry ``x0, y0, ε, PA`` is sampled with
  bilinear interpolation at polar angles ``φ`` (measured from the major axis) spaced by
  ``min(1/r(φ), 0.5)`` radians, ``r(φ)`` the ellipse's radius, so that samples lie about one
  pixel apart along it;
* the intensities are fitted by (exact, linear) least squares with
  ``I(φ) = I0 + A1 sin φ + B1 cos φ + A2 sin 2φ + B2 cos 2φ`` — photutils solves the same
  problem iteratively, so the two differ in the last digits, which on rare isophotes tips
  a convergence test the other way;
* the local radial intensity gradient comes from a second ellipse 10 % larger (20 % when the
  first estimate is not decreasing); its relative error stops the outward growth;
* the largest harmonic amplitude (of those not held fixed) is turned into a correction of
  the centre along the minor (A1) or major (B1) axis, of the PA (A2) or of ε (B2), divided
  by the gradient; the isophote has converged when that amplitude is below ``conver`` times
  the rms of the fit's residual (after at least ``minit`` iterations, twice as many for the
  first isophote), or stops after ``maxit`` iterations (returning the geometry with the
  smallest amplitude seen), when too few samples fall on the image (``fflag``) or when the
  gradient becomes unusable;
* the semi-major axis grows geometrically by ``1 + step`` from the start outwards up to
  ``maxsma`` (or until two consecutive isophotes fail, after which the geometry is frozen),
  then inwards from the start down to ``minsma``; each isophote starts from the geometry of
  the previous one.

Every stamp goes through this independently, but all stamps are advanced together: one
pass of the loop performs one fitter iteration for every stamp that still has work, and the
ellipse sampling, gradients and least-squares fits of all of them are single array
operations. Only the bookkeeping between isophotes (a handful of scalar steps per isophote)
is per stamp.

Stop codes are photutils' (0 converged, 1 too many samples off the image, 2 iteration limit,
3 too few samples — not kept, 4 geometry frozen, 5 geometry replaced by a neighbour's after
a failure).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IsophoteFits", "fit_isophotes", "ellipse_flux"]

_MAX_EPS = 0.95
_MIN_EPS = 0.05
_PHI_MIN = 0.05


@dataclass
class IsophoteFits:
    """The isophotes of one stamp, sorted by semi-major axis (arrays of equal length)."""

    sma: np.ndarray
    eps: np.ndarray
    pa: np.ndarray  # radians
    x0: np.ndarray
    y0: np.ndarray
    stop_code: np.ndarray


def _initial_phi(sma: np.ndarray, astep: float) -> np.ndarray:
    """First polar angle of a sample: half the sector width of an ellipse of this size."""
    inner = np.minimum(astep * sma, 3.0)
    width = np.clip(inner / np.maximum(sma, 1e-300), 0.05, 0.2)
    return width / 2.0


def _radius(phi, sma, eps):
    q = 1.0 - eps
    return sma * q / np.sqrt((q * np.cos(phi)) ** 2 + np.sin(phi) ** 2)


def _polar_angles(sma, eps, astep, csma, ceps):
    """Sample angles of all ellipses (rows): φ_{k+1} = φ_k + min(1/r(φ_k), 0.5) up to 2π.

    The first angle and radius are those of the ellipse ``(csma, ceps)`` the geometry was
    first made for (photutils carries them over when a geometry is reused at another size,
    and the sampling follows it to give the same answers). Returns flat arrays
    ``(phi, row, radius)``; each row's first sample comes first, in row order.
    """
    n_rows = len(sma)
    q = 1.0 - eps
    m = 1.0 - q * q
    inv_b2 = 1.0 / (sma * q) ** 2
    # 1/r(φ)² = (1 − m cos²φ) / b² = a2 + nb2 cos 2φ; the loop runs on ψ = 2φ (exact in binary)
    a2 = (1.0 - 0.5 * m) * inv_b2
    nb2 = -0.5 * m * inv_b2
    phi0 = _initial_phi(csma, astep)
    r0 = _radius(phi0, csma, ceps)
    limit = 2.0 * (2.0 * np.pi + _PHI_MIN)
    rows = np.arange(n_rows)
    out_psi, out_row, out_inv = [2.0 * phi0], [rows], [1.0 / r0]
    psi = out_psi[0] + np.minimum(2.0 / r0, 1.0)
    while True:
        alive = psi <= limit
        if not alive.all():
            rows, psi, a2, nb2 = rows[alive], psi[alive], a2[alive], nb2[alive]
            if not rows.size:
                break
        for _ in range(8):  # rows that pass the limit here are dropped below
            out_psi.append(psi)
            out_row.append(rows)
            c = np.cos(psi)
            c *= nb2
            c += a2
            np.sqrt(c, out=c)  # 1 / r(φ)
            out_inv.append(c)
            d = c + c
            np.minimum(d, 1.0, out=d)
            psi = psi + d
    psi = np.concatenate(out_psi)
    keep = psi <= limit
    return (0.5 * psi[keep], np.concatenate(out_row)[keep], 1.0 / np.concatenate(out_inv)[keep])


def _sample(
    flat: np.ndarray, shape, stamp: np.ndarray, x0, y0, sma, eps, pa, astep, csma=None, ceps=None
):
    """Bilinear samples along each ellipse (rows), as flat arrays.

    Returns ``(phi, row, values, valid, n_total)``: every sample's angle, row and value,
    whether it fell on the image, and each row's number of samples.
    """
    h, w = shape
    phi, row, r = _polar_angles(
        sma, eps, astep, sma if csma is None else csma, eps if ceps is None else ceps
    )
    n_total = np.bincount(row, minlength=len(sma))
    ang = phi + pa[row]
    x = r * np.cos(ang) + x0[row]
    y = r * np.sin(ang) + y0[row]
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.all():
        x = np.where(ok, x, 0.0)
        y = np.where(ok, y, 0.0)
    i = np.trunc(x)
    j = np.trunc(y)
    ok &= (i >= 0) & (i <= w - 2) & (j >= 0) & (j <= h - 2)
    fx, fy = x - i, y - j
    base = stamp[row] * (h * w) + j.astype(np.intp) * w + i.astype(np.intp)
    base[~ok] = 0
    qx, qy = 1.0 - fx, 1.0 - fy
    v = (
        flat[base] * qx * qy
        + flat[base + w] * qx * fy
        + flat[base + 1] * fx * qy
        + flat[base + w + 1] * fy * fx
    )
    v[~ok] = 0.0
    return phi, row, v, ok, n_total


def _moments(row: np.ndarray, v: np.ndarray, ok: np.ndarray, n_rows: int):
    """Count, mean and (population) standard deviation of the valid samples of each row."""
    n = np.bincount(row, weights=ok, minlength=n_rows)
    nn = np.maximum(n, 1)
    mean = np.bincount(row, weights=v, minlength=n_rows) / nn
    d = v - mean[row]
    d[~ok] = 0.0
    std = np.sqrt(np.bincount(row, weights=d * d, minlength=n_rows) / nn)
    mean[n == 0] = np.nan
    std[n == 0] = np.nan
    return n.astype(np.int64), mean, std


_PAIRS = [(i, j) for i in range(5) for j in range(i, 5)]


def _harmonics(phi: np.ndarray, row: np.ndarray, v: np.ndarray, ok: np.ndarray, n_rows: int):
    """Least-squares I0, A1, B1, A2, B2 of each row and the rms of its residual."""
    phi, row, v = phi[ok], row[ok], v[ok]
    s1, c1 = np.sin(phi), np.cos(phi)
    s2, c2 = 2.0 * s1 * c1, c1 * c1 - s1 * s1
    design = (None, s1, c1, s2, c2)
    normal = np.empty((n_rows, 5, 5))
    rhs = np.empty((n_rows, 5))
    for i, j in _PAIRS:
        if i == 0:
            wts = None if j == 0 else design[j]
        else:
            wts = design[i] * design[j]
        col = np.bincount(row, weights=wts, minlength=n_rows)
        normal[:, i, j] = col
        normal[:, j, i] = col
    rhs[:, 0] = np.bincount(row, weights=v, minlength=n_rows)
    for i in range(1, 5):
        rhs[:, i] = np.bincount(row, weights=design[i] * v, minlength=n_rows)
    n = normal[:, 0, 0]
    usable = n >= 5
    normal[~usable] = np.eye(5)
    rhs[~usable] = 0.0
    try:
        coef = np.linalg.solve(normal, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        coef = np.stack(
            [np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(normal, rhs, strict=True)]
        )
    c = coef[row]
    res = v - (c[:, 0] + c[:, 1] * s1 + c[:, 2] * c1 + c[:, 3] * s2 + c[:, 4] * c2)
    nn = np.maximum(n, 1)
    mres = np.bincount(row, weights=res, minlength=n_rows) / nn
    d = res - mres[row]
    rms = np.sqrt(np.bincount(row, weights=d * d, minlength=n_rows) / nn)
    return coef, rms, usable


def _gradient(m0, s0, n0, m1, s1, n1, sma, step, prev, second):
    """Radial intensity gradient and its error from the isophote and the ellipse ``1 + step``
    times larger, or, when that estimate is not clearly negative, the one ``1 + 2 step``
    times larger: ``second(mask)`` gives the count, mean and deviation of those rows.
    ``prev`` is the gradient measured before on this sample (``None`` for a new sample).
    The error is NaN when no usable gradient was found.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        var0 = s0**2 / n0
        grad = (m1 - m0) / sma / step
        gerr = np.sqrt(var0 + s1**2 / n1) / sma / step
        if prev is None:
            prev = grad + gerr
        retry = grad >= prev / 3.0
        if retry.any():
            n2, m2, s2 = second(retry)
            g2 = (m2 - m0[retry]) / sma[retry] / (2.0 * step)
            e2 = np.sqrt(var0[retry] + s2**2 / n2) / sma[retry] / (2.0 * step)
            lost = g2 >= prev[retry] / 3.0
            grad[retry] = np.where(lost, 0.8 * prev[retry], g2)
            gerr[retry] = np.where(lost, np.nan, e2)
    return grad, gerr


def _geo(rec):
    """Starting geometry (x0, y0, ε, PA, and the size and ε it was made for) of a record."""
    return rec[1:5] + rec[6:8]


class _Stamp:
    """Per-stamp bookkeeping between isophotes (the outward/inward growth of the fit)."""

    __slots__ = ("isos", "inward", "noiter", "maxsma", "minsma")

    def __init__(self, minsma, maxsma):
        self.isos: list[list[float]] = []  # [sma, x0, y0, eps, pa, code]
        self.inward = False
        self.noiter = False
        self.minsma = minsma
        self.maxsma = maxsma


def fit_isophotes(
    images: np.ndarray,
    x0,
    y0,
    sma0,
    eps0,
    pa0,
    *,
    minsma,
    maxsma,
    fix_center=False,
    step: float = 0.1,
    conver: float = 0.05,
    minit: int = 10,
    maxit: int = 50,
    fflag: float = 0.7,
    maxgerr: float = 0.5,
) -> list[IsophoteFits]:
    """Fit isophotes on every stamp of ``images`` (``N×H×W``) at once.

    ``x0, y0, sma0, eps0, pa0`` (radians), ``minsma``, ``maxsma`` and ``fix_center`` are
    scalars or one value per stamp: the starting geometry, the range of semi-major axes and
    whether the centre is held fixed. The other options are those of photutils'
    ``Ellipse.fit_image`` with its defaults. Returns one :class:`IsophoteFits` per stamp; a
    stamp whose first isophote cannot be fitted gets an empty one.
    """
    imgs = np.ascontiguousarray(np.asarray(images, dtype=np.float64))
    if imgs.ndim != 3:
        raise ValueError(f"images must be N×H×W, got shape {imgs.shape}")
    n_st, h, w = imgs.shape
    flat = imgs.ravel()

    def per(v, dtype=np.float64):
        return np.broadcast_to(np.asarray(v, dtype=dtype), (n_st,)).copy()

    gx, gy, ge, gp, gs = per(x0), per(y0), per(eps0), per(pa0), per(sma0)
    gcs, gce = gs.copy(), ge.copy()  # size and ε the geometry was made for
    fixc = per(fix_center, bool)
    mins, maxs = per(minsma), per(maxsma)
    if not (np.all(np.isfinite(maxs)) and np.all(maxs > 0) and np.all(mins >= 0)):
        raise ValueError("maxsma must be finite and positive and minsma >= 0")
    stamps = [_Stamp(float(mins[k]), float(maxs[k])) for k in range(n_st)]
    it = np.zeros(n_st, dtype=np.int64)
    minit_now = np.full(n_st, 2 * minit, dtype=np.int64)
    inward = np.zeros(n_st, dtype=bool)
    pending = np.zeros(n_st, dtype=bool)
    lexceed = np.zeros(n_st, dtype=bool)
    min_amp = np.full(n_st, np.inf)
    mgeo = np.zeros((n_st, 6))  # geometry with the smallest amplitude
    active = np.ones(n_st, dtype=bool)
    step_in = 1.0 / (1.0 + step) - 1.0

    def start(k, sma, geo):
        gs[k] = sma
        gx[k], gy[k], ge[k], gp[k], gcs[k], gce[k] = geo
        it[k] = 0
        pending[k] = False
        lexceed[k] = False
        min_amp[k] = np.inf
        minit_now[k] = minit  # twice that for the first isophote only
        inward[k] = stamps[k].inward

    def fix_last(st, index):
        last = st.isos.pop()
        ref = st.isos[index]
        last[1:5] = ref[1:5]  # the geometry, not the sampling origin
        if last[5] < 0:
            last[5] = 5
        st.isos.append(last)

    def go_inward(k):
        st = stamps[k]
        st.inward = True
        sma = st.isos[0][0] / (1.0 + step)
        start(k, sma, _geo(st.isos[-1]))

    def finish(k, code, geo):
        """An isophote of stamp ``k`` is done: record it and set up the next one."""
        st = stamps[k]
        sma = float(gs[k])
        if code != 3:
            st.isos.append([sma, *geo[:4], code, *geo[4:]])
        if not st.inward:
            if code == 3:
                if not st.isos:
                    active[k] = False
                    return
                go_inward(k)
                return
            if code < 0 or code == 1:
                if len(st.isos) == 1:  # no meaningful fit from this start
                    st.isos.clear()
                    active[k] = False
                    return
                fix_last(st, -1)
                last = st.isos[-1]
                if len(st.isos) > 2 and ((last[5] == 5 and st.isos[-2][5] == 5) or last[5] == 1):
                    if st.maxsma > last[0]:
                        st.noiter = True
                    else:
                        go_inward(k)
                        return
            nxt = st.isos[-1][0] * (1.0 + step)
            if nxt >= st.maxsma:
                go_inward(k)
                return
            if st.noiter:  # frozen geometry out to maxsma
                while nxt < st.maxsma:
                    last = st.isos[-1]
                    st.isos.append([nxt, *last[1:5], 4, *last[6:8]])
                    nxt *= 1.0 + step
                go_inward(k)
                return
            start(k, nxt, _geo(st.isos[-1]))
            return
        if code < 0:
            fix_last(st, 0)
        if code == 3:
            active[k] = False
            return
        nxt = st.isos[-1][0] * (1.0 + step_in)
        if nxt <= max(st.minsma, 0.5):
            active[k] = False
            return
        start(k, nxt, _geo(st.isos[-1]))

    while active.any():
        a_idx = np.flatnonzero(active)
        n = len(a_idx)
        ax, ay, ae, ap, asma = gx[a_idx], gy[a_idx], ge[a_idx], gp[a_idx], gs[a_idx]
        # the isophote and its gradient ellipse (1 + step), in one pass
        stamp2 = np.concatenate([a_idx, a_idx])
        phi, row, v, ok, n_total = _sample(
            flat,
            (h, w),
            stamp2,
            np.tile(ax, 2),
            np.tile(ay, 2),
            np.concatenate([asma, asma * (1.0 + step)]),
            np.tile(ae, 2),
            np.tile(ap, 2),
            step,
            np.concatenate([gcs[a_idx], asma * (1.0 + step)]),
            np.concatenate([gce[a_idx], ae]),
        )
        cnt, mean, std = _moments(row, v, ok, 2 * n)
        n0, m0, s0 = cnt[:n], mean[:n], std[:n]

        def second(mask, x=ax, y=ay, e=ae, p=ap, a_=asma, ids=a_idx):
            _, r2, v2, ok2, _ = _sample(
                flat,
                (h, w),
                ids[mask],
                x[mask],
                y[mask],
                a_[mask] * (1.0 + 2.0 * step),
                e[mask],
                p[mask],
                step,
            )
            return _moments(r2, v2, ok2, int(mask.sum()))

        grad, gerr = _gradient(m0, s0, n0, mean[n:], std[n:], cnt[n:], asma, step, None, second)
        with np.errstate(divide="ignore", invalid="ignore"):
            has_err = np.isfinite(gerr) & (gerr != 0) & (grad < 0)
            rel = np.where(has_err, gerr / np.abs(grad), np.nan)
        codes = np.full(n, -99, dtype=np.int64)  # -99: still iterating
        use_min = np.zeros(n, dtype=bool)

        # 1) conditions on a geometry that a correction just produced
        pend = pending[a_idx]
        if pend.any():
            lex = lexceed[a_idx]
            bad = ~inward[a_idx] & ((rel > maxgerr) | (grad >= 0.0))
            stop = pend & ~has_err
            stop |= pend & has_err & bad & lex
            lexceed[a_idx] = np.where(pend & has_err & bad & ~lex, True, lex)
            stop |= pend & ((ax < 1.0) | (ax > w) | (ay < 1.0) | (ay > h))
            neg = pend & (ae < 0.0)
            if neg.any():
                ki = a_idx[neg]
                ge[ki] = np.minimum(-ae[neg], _MAX_EPS)
                gp[ki] = np.where(ap[neg] < np.pi / 2, ap[neg] + np.pi / 2, ap[neg] - np.pi / 2)
            zero = pend & (ge[a_idx] == 0.0)
            ge[a_idx[zero]] = _MIN_EPS
            ae, ap = ge[a_idx], gp[a_idx]
            # the fit goes on with this sample's intensities but the gradient of the
            # changed geometry, its fallback judged against the gradient just measured
            moved = (neg | zero) & ~stop
            if moved.any():
                mi = np.flatnonzero(moved)
                ki, sm = a_idx[mi], asma[mi]
                xm, ym, em, pm = ax[mi], ay[mi], ae[mi], ap[mi]
                _, row2, v2, ok2, _ = _sample(
                    flat, (h, w), ki, xm, ym, sm * (1.0 + step), em, pm, step
                )
                c2, mn2, sd2 = _moments(row2, v2, ok2, len(mi))

                def second2(mask, x=xm, y=ym, e=em, p=pm, a_=sm, ids=ki):
                    return second(mask, x, y, e, p, a_, ids)

                grad[mi], _ = _gradient(
                    m0[mi], s0[mi], n0[mi], mn2, sd2, c2, sm, step, grad[mi], second2
                )
            codes[stop] = -1
            limit = pend & ~stop & (it[a_idx] >= maxit)
            codes[limit] = 2
            use_min |= limit

        # 2) one iteration of the fit for the others
        body = codes == -99
        main = row < n
        coef, rms, usable = _harmonics(phi[main], row[main], v[main], ok[main], n)
        few = body & (~usable | (n0 < 1))
        codes[few] = 3
        body &= ~few
        free = np.abs(coef[:, 1:])
        free[fixc[a_idx], :2] = -1.0
        big = np.argmax(free, axis=1)
        harm = coef[np.arange(n), 1 + big]
        amp = np.abs(harm)
        newmin = body & (amp < min_amp[a_idx])
        if newmin.any():
            ki = a_idx[newmin]
            min_amp[ki] = amp[newmin]
            mgeo[ki] = np.stack(
                [ax[newmin], ay[newmin], ae[newmin], ap[newmin], gcs[ki], gce[ki]], axis=1
            )
        conv = body & (conver * 2.0 * rms > amp) & (it[a_idx] >= minit_now[a_idx] - 1)
        codes[conv] = 0
        body &= ~conv
        flagged = body & (n0 < n_total[:n] * fflag)
        codes[flagged] = 1
        use_min |= flagged
        body &= ~flagged
        if body.any():
            ki = a_idx[body]
            hb, gb, bb = harm[body], grad[body], big[body]
            eb, pb, sb = ae[body], ap[body], asma[body]
            with np.errstate(divide="ignore", invalid="ignore"):
                aux0 = -hb * (1.0 - eb) / gb
                aux1 = -hb / gb
                dx = np.where(
                    bb == 0, -aux0 * np.sin(pb), np.where(bb == 1, aux1 * np.cos(pb), 0.0)
                )
                dy = np.where(bb == 0, aux0 * np.cos(pb), np.where(bb == 1, aux1 * np.sin(pb), 0.0))
                dpa = hb * 2.0 * (1.0 - eb) / sb / gb / ((1.0 - eb) ** 2 - 1.0)
                deps = hb * 2.0 * (1.0 - eb) / sb / gb
            gx[ki] = ax[body] + dx
            gy[ki] = ay[body] + dy
            gp[ki] = np.where(bb == 2, (pb + dpa) % np.pi, pb)
            ge[ki] = np.where(bb == 3, np.minimum(eb - deps, _MAX_EPS), eb)
            gcs[ki] = sb
            gce[ki] = ge[ki]
            pending[ki] = True
            it[ki] += 1

        for j in np.flatnonzero(codes != -99):
            k = int(a_idx[j])
            geo = list(mgeo[k]) if use_min[j] else [ax[j], ay[j], ae[j], ap[j], gcs[k], gce[k]]
            finish(k, int(codes[j]), [float(g) for g in geo])

    out = []
    for st in stamps:
        arr = np.array(sorted(st.isos, key=lambda r: r[0]), dtype=np.float64).reshape(-1, 8)
        out.append(
            IsophoteFits(
                sma=arr[:, 0],
                x0=arr[:, 1],
                y0=arr[:, 2],
                eps=arr[:, 3],
                pa=arr[:, 4],
                stop_code=arr[:, 5].astype(np.int64),
            )
        )
    return out


def ellipse_flux(
    image: np.ndarray, x0: float, y0: float, sma: float, eps: float, pa: float
) -> float:
    """Sum of the pixels whose centres lie inside the ellipse (photutils' ``tflux_e``)."""
    hh, ww = image.shape
    imin = max(0, int(x0 - sma - 0.5) - 1)
    jmin = max(0, int(y0 - sma - 0.5) - 1)
    imax = min(ww, int(x0 + sma + 0.5) + 1)
    jmax = min(hh, int(y0 + sma + 0.5) + 1)
    if jmax - jmin <= 1 or imax - imin <= 1:
        return 0.0
    yy, xx = np.mgrid[jmin:jmax, imin:imax]
    dx, dy = xx - x0, yy - y0
    rad = np.hypot(dx, dy)
    ang = np.arctan2(dy, dx) - pa
    q = 1.0 - eps
    r_e = sma * q / np.sqrt((q * np.cos(ang)) ** 2 + np.sin(ang) ** 2)
    return float(image[jmin:jmax, imin:imax][rad <= r_e].sum())
