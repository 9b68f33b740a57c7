"""The two-stage model: BEGAN's k_t, the networks, and composition into fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galforge.errors import ModelError
from galforge.models.capabilities import capabilities
from galforge.models.registry import build_generator, compose, get_family
from galforge.models.twostage import (
    BEGANDiscriminator,
    GalaxiesPart,
    PatchGenerator,
    PositionsDiscriminator,
    PositionsGenerator,
    PositionsPart,
    TwoStageSampler,
    began_k_update,
    convergence_measure,
    grid_input,
    occupied_cells,
    reconstruction_loss,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sampler(conditional=False, h=64, w=64, grid=8, offsets=None):
    pos = PositionsPart(8, 4, grid, conditional, h, w, 0)
    gal = GalaxiesPart(8, 4, 8, 1, conditional)
    if offsets is not None:
        pos.set_layout(h, w, torch.tensor(offsets, dtype=torch.float32))
    return TwoStageSampler(pos, gal).eval()


def test_began_k_update_follows_the_equilibrium_rule():
    # k + λ (γ L(x) − L(G(z))): 0.5 + 0.1 (0.5·0.2 − 0.05) = 0.505
    assert began_k_update(0.5, 0.2, 0.05, 0.5, 0.1) == pytest.approx(0.505)
    assert began_k_update(0.5, 0.2, 0.3, 0.5, 0.1) == pytest.approx(0.48)
    assert began_k_update(0.0, 0.1, 0.9, 0.5, 1.0) == 0.0  # clipped at 0
    assert began_k_update(0.99, 1.0, 0.0, 1.0, 1.0) == 1.0  # clipped at 1
    assert began_k_update(0.3, 0.4, 0.2, 0.5, 0.0) == 0.3  # λ_k = 0: k stays
    assert convergence_measure(0.2, 0.05, 0.5) == pytest.approx(0.2 + 0.05)
    # a run of updates equals the recurrence computed by hand
    k, lr, lg = 0.0, [0.3, 0.25, 0.2], [0.1, 0.05, 0.2]
    for a, b in zip(lr, lg, strict=True):
        k = began_k_update(k, a, b, 0.7, 0.01)
    expected = min(max(0.01 * ((0.21 - 0.1) + (0.175 - 0.05) + (0.14 - 0.2)), 0), 1)
    assert k == pytest.approx(expected)


def test_networks_shapes_and_reconstruction_loss():
    g = PositionsGenerator(8, 4, 32, conditional=True)
    out = g(torch.randn(3, 8))
    assert out.shape == (3, 4, 32, 32)
    occ01 = (out[:, 0] + 1) / 2
    torch.testing.assert_close(out[:, 1:].sum(dim=1), occ01)  # classes × occupancy
    assert PositionsDiscriminator(4, 4, 32)(out).shape == (3,)
    real = grid_input(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), torch.tensor([[[2, 0], [0, 1]]]))
    assert real[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert real[0, :, 0, 1].tolist() == [-1.0, 0.0, 0.0, 0.0]
    pg = PatchGenerator(16, 4, 32, conditional=True)
    cls = torch.tensor([0, 1, 2])
    p = pg(torch.rand(3, 16) * 2 - 1, cls)
    assert p.shape == (3, 1, 32, 32) and p.abs().max() <= 1
    d = BEGANDiscriminator(16, 4, 32, conditional=True)
    assert d(p, cls).shape == p.shape
    loss = reconstruction_loss(d, p, cls)
    assert loss.item() == pytest.approx((p - d(p, cls)).abs().mean().item())
    with pytest.raises(ModelError, match="size classes"):
        pg(torch.rand(3, 16))
    with pytest.raises(ModelError, match="power of two"):
        PositionsGenerator(8, 4, 24)


def test_composition_puts_each_patch_exactly_at_its_cell():
    s = _sampler(h=64, w=48, grid=8)
    delta = torch.zeros((3, 1, 8, 8))
    delta[:, 0, 4, 4] = torch.tensor([1.0, 2.0, 3.0])  # the centre pixel (index 8 // 2)
    image = torch.tensor([0, 0, 1])
    cell = torch.tensor([0, 8 * 3 + 5, 63])  # (0,0), (3,5), (7,7)
    offsets = torch.tensor([[0.0, 0.0], [1.2, -2.4], [0.0, 0.0]])
    out = s.place(delta, image, cell, offsets, 2)
    assert out.shape == (2, 1, 64, 48)
    # cell centres: y = (r + 0.5)·8 − 0.5, x = (c + 0.5)·6 − 0.5, plus the offset, rounded
    nz = {tuple(int(v) for v in i) for i in torch.nonzero(out)}
    assert nz == {(0, 0, 4, 3), (0, 0, round(27.5 - 2.4), round(32.5 + 1.2)), (1, 0, 60, 45)}
    assert out[0, 0, 4, 3] == 1.0 and out[1, 0, 60, 45] == 3.0
    # overlapping patches add; what falls outside the field is dropped
    both = s.place(
        torch.ones((2, 1, 8, 8)), torch.tensor([0, 0]), torch.tensor([0, 0]), torch.zeros((2, 2)), 1
    )
    # centre pixel (4, 3): rows 0..7 inside, columns −1..6 of which column −1 is dropped
    assert both.max() == 2.0 and both.sum() == 2 * 8 * 7


def test_sampler_places_one_galaxy_per_occupied_cell(monkeypatch):
    s = _sampler(h=64, w=64, grid=8, offsets=[[1.0, -1.0]])
    assert capabilities(s) == {"latent", "physical"}
    z = torch.randn(s.latent_shape(2))
    occ, classes = s.layout(z)
    assert classes is None and occ.shape == (2, 8, 8)

    def delta(h, cls=None):
        p = torch.zeros((h.shape[0], 1, 8, 8))
        p[:, 0, 4, 4] = 1.0
        return p

    monkeypatch.setattr(s.galaxies, "forward", delta)
    with torch.no_grad():
        out = s(z)
    for i in range(2):
        r, c = np.nonzero(occ[i].numpy())
        # centre (8r + 3.5, 8c + 3.5) plus the one stored offset (dx, dy) = (1, −1), rounded
        expect = {
            (int(8 * a + 3.5 - 1 + 0.5), int(8 * b + 3.5 + 1 + 0.5))
            for a, b in zip(r, c, strict=True)
        }
        got = {tuple(int(v) for v in p) for p in torch.nonzero(out[i, 0])}
        assert got == expect
        assert out[i].sum() == occ[i].sum()


def test_galaxies_part_maps_to_physical_units_with_a_zero_background():
    norm = {
        "stretch": "linear",
        "target": [-1.0, 1.0],
        "lo": [0.0],
        "hi": [100.0],
        "offset": [0.0],
        "softening": [1.0],
    }
    gal = GalaxiesPart(8, 4, 8, 1, False, norm)
    gal.floor.fill_(5.0)
    x = gal.physical(torch.tensor([-1.0, -0.95, -0.8, 1.0]).reshape(1, 1, 2, 2))
    assert x.flatten().tolist() == pytest.approx([0.0, 0.0, 10.0, 100.0])


def test_bundle_parts_rebuild_from_their_specs():
    s = _sampler(conditional=True, offsets=[[0.5, 0.5], [-1.0, 2.0]])
    assert get_family("twostage").parts == ("positions", "galaxies")
    pos = build_generator("twostage_positions", s.positions.spec())
    gal = build_generator("twostage_galaxies", s.galaxies.spec())
    pos.load_state_dict(s.positions.state_dict())
    gal.load_state_dict(s.galaxies.state_dict())
    again = compose("twostage", {"positions": pos, "galaxies": gal}).eval()
    z = torch.randn(s.latent_shape(2))
    with torch.no_grad():
        torch.testing.assert_close(again(z), s(z))
    with pytest.raises(ModelError, match="both"):
        TwoStageSampler(PositionsPart(8, 4, 8, True, 64, 64), GalaxiesPart(8, 4, 8))


def test_occupied_cells_threshold_bernoulli_and_count_rules():
    gen = torch.Generator().manual_seed(0)
    prob = torch.full((4000, 4, 4), 0.01)
    prob[:, 0, 0], prob[:, 1, 2] = 0.75, 0.25
    u = torch.rand(prob.shape, generator=gen)
    thr = occupied_cells(prob, u, "threshold")
    assert thr[:, 0, 0].all() and thr.sum() == 4000  # only p > 1/2
    bern = occupied_cells(prob, u, "bernoulli")
    torch.testing.assert_close(bern.float().mean(0), prob[0], atol=0.03, rtol=0)
    # count: exactly K = counts[⌊u_K · len⌋] cells per field, drawn in proportion to p
    counts = torch.tensor([1.0, 1.0])
    one = occupied_cells(prob, u, "count", counts, torch.rand(4000, generator=gen))
    assert torch.all(one.sum(dim=(1, 2)) == 1)
    freq = one.float().mean(0)
    total = float(prob[0].sum())
    assert freq[0, 0] == pytest.approx(0.75 / total, abs=0.03)
    assert freq[1, 2] == pytest.approx(0.25 / total, abs=0.03)
    counts = torch.tensor([2.0, 5.0, 16.0])
    cu = torch.tensor([0.1, 0.5, 0.99, 0.0])
    many = occupied_cells(prob[:4], u[:4], "count", counts, cu)
    assert many.sum(dim=(1, 2)).tolist() == [2, 5, 16, 2]
    zero = prob[:1].clone()
    zero[0, 3] = 0.0  # p = 0: never drawn while others are left
    assert not occupied_cells(zero, u[:1], "count", torch.tensor([12.0]), cu[:1])[0, 3].any()
    with pytest.raises(ModelError, match="counts"):
        occupied_cells(prob, u, "count")
    with pytest.raises(ModelError, match="sampling"):
        occupied_cells(prob, u, "poisson")


def test_positions_prior_sets_the_expected_count():
    g = PositionsGenerator(8, 4, 32).eval()
    g.set_occupancy_prior(12 / 1024)
    with torch.no_grad():
        prob, classes = g.maps(torch.randn(64, 8))
    assert classes is None
    # an untrained map holds about the data's number of galaxies (sum of p), not ~half the grid
    assert 4 < float(prob.sum(dim=(1, 2)).mean()) < 36


# ----------------------------------------------------------------------------- eigen stage
def _blobs(n=24, size=16, seed=0):
    """Elliptical exponential blobs centred on pixel size // 2, cut at 1 count (background 0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size // 2
    out = np.zeros((n, size, size), np.float32)
    for i in range(n):
        q, t, r = rng.uniform(0.4, 1.0), rng.uniform(0, np.pi), rng.uniform(1.0, 2.5)
        u = xx * np.cos(t) + yy * np.sin(t)
        v = (-xx * np.sin(t) + yy * np.cos(t)) / q
        img = rng.uniform(50, 400) * np.exp(-np.hypot(u, v) / r)
        out[i] = np.where(img >= 1.0, img, 0.0)
    return out


def test_dihedral_turns_keep_the_centre_pixel():
    from galforge.training.recipes.twostage import dihedral

    for size in (8, 9):
        p = np.zeros((1, size, size), np.float32)
        c = size // 2
        p[0, c, c], p[0, c, c + 1], p[0, c - 1, c] = 5.0, 1.0, 2.0
        d = dihedral(p)
        assert d.shape == (8, size, size) and np.array_equal(d[0], p[0])
        assert np.all(d[:, c, c] == 5.0) and np.all(d.sum(axis=(1, 2)) == 8.0)
        assert len({tuple(np.argwhere(x == 1.0)[0]) for x in d}) == 4  # the four neighbours


def test_keep_central_cluster_keeps_one_cluster():
    from galforge.models.twostage import keep_central_cluster

    x = torch.zeros((3, 1, 9, 9))
    x[0, 0, 3:6, 3:6] = 2.0  # the central cluster
    x[0, 0, 0, 0] = 7.0  # an island
    x[1, 0, 0:2, 0:3] = 1.0  # the centre is 0: the largest cluster stays
    x[1, 0, 8, 8] = 9.0
    out = keep_central_cluster(x)
    assert out[0].sum() == 18.0 and out[0, 0, 0, 0] == 0
    assert out[1].sum() == 6.0 and out[1, 0, 8, 8] == 0
    assert out[2].sum() == 0


@pytest.mark.parametrize("density", ["gmm", "kde"])
def test_eigen_stage_draws_single_clusters_on_an_exact_zero_background(density):
    from scipy import ndimage

    from galforge.training.recipes.twostage import fit_eigen_galaxies

    patches = _blobs()
    classes = np.arange(len(patches)) % 3
    fit = fit_eigen_galaxies(
        patches,
        classes,
        components=6,
        mixture=2,
        conditional=True,
        softening=1.0,
        seed=0,
        density=density,
        bandwidth=0.3,
    )
    gal = GalaxiesPart(
        patch=16,
        conditional=True,
        stage="eigen",
        components=6,
        mixture=2,
        single_cluster=True,
        density=density,
    )
    gal.net.set_fit(fit)
    gal.floor.fill_(1.0)
    h = torch.rand((40, gal.net.latent_dim), generator=torch.Generator().manual_seed(0)) * 2 - 1
    cls = torch.arange(40) % 3
    with torch.no_grad():
        x = gal(h, cls)
    assert x.shape == (40, 1, 16, 16) and torch.isfinite(x).all()
    assert bool(((x == 0) | (x >= 1.0)).all())  # below the floor is exactly 0
    for p in x[:, 0].numpy():
        _, k = ndimage.label(p != 0, structure=np.ones((3, 3)))
        assert k == 1 and p[8, 8] > 0  # one cluster, holding the centre
    # flux in the data's range, and the same latent gives the same galaxies
    flux = x.sum(dim=(1, 2, 3))
    assert flux.min() > 0.2 * patches.sum(axis=(1, 2)).min()
    assert flux.max() < 5 * patches.sum(axis=(1, 2)).max()
    torch.testing.assert_close(gal(h, cls), x, rtol=0, atol=0)
    # the spec rebuilds it
    again = build_generator("twostage_galaxies", gal.spec())
    again.load_state_dict(gal.state_dict())
    torch.testing.assert_close(again(h, cls), x)
    with pytest.raises(ModelError, match="size classes"):
        gal(h)


def test_conditional_cells_draw_their_class_from_the_class_probabilities(monkeypatch):
    pos = PositionsPart(8, 4, 8, True, 64, 64, 0, class_sampling="draw")
    pos.set_layout(64, 64, torch.zeros((1, 2)), counts=torch.tensor([64.0]))
    pos.sampling = "count"
    s = TwoStageSampler(pos, GalaxiesPart(8, 4, 8, 1, True)).eval()
    probs = torch.tensor([0.5, 0.3, 0.2])[None, :, None, None].expand(200, 3, 8, 8)
    monkeypatch.setattr(
        pos.net, "maps", lambda z: (torch.full((z.shape[0], 8, 8), 0.5), probs[: z.shape[0]])
    )
    z = torch.randn(s.latent_shape(200), generator=torch.Generator().manual_seed(0))
    assert z.shape[1] == 8 + 64 * (8 + 2) + 1 + 64  # one class draw per cell
    occ, classes = s.layout(z)
    assert bool(occ.all())  # 64 of 64 cells
    share = torch.bincount(classes.flatten(), minlength=3).float() / classes.numel()
    torch.testing.assert_close(share, torch.tensor([0.5, 0.3, 0.2]), atol=0.02, rtol=0)
    pos.class_sampling = "argmax"  # the first version: always the most probable class
    _, classes = s.layout(torch.randn(s.latent_shape(200)))
    assert bool((classes == 0).all())
    with pytest.raises(ModelError, match="class sampling"):
        PositionsPart(8, 4, 8, True, 64, 64, class_sampling="max")
