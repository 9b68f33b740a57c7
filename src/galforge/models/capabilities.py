"""What a generator can do, declared by its family instead of guessed from its type.

A generator class lists its capabilities in ``CAPABILITIES`` (a set of the names below);
:func:`capabilities` checks that the methods each one promises are there and returns the
set. Sampling, the latent tools, ``galforge generate`` and ``galforge field`` dispatch on
these names, never on a family's name or class.

``"latent"`` — sample from latents (every sampler)
    ``latent_shape(n, **options) -> tuple`` (the input of ``n`` images; options such as
    ``image_size`` for fully convolutional generators) and ``forward(z) -> N×C×H×W``.
``"windowed"`` — windowed generation for deep fields of any size
    ``channels``, ``latent_channels``, ``upscale`` (output pixels per latent pixel, per
    axis), ``spec() -> dict``, ``plan_window(tile) -> plan`` where ``plan.latent_start``
    (<= 0: the margin before the tile) and ``plan.latent_size`` give the latent window a
    ``tile``-pixel tile needs (the receptive-field margins), ``window_masks(plan, origin,
    latent_hw, device) -> masks | None`` (what zeroes positions outside the field, or None
    when the generator needs none) and ``forward_window(z, plan, masks) -> [B, C, tile,
    tile]``, equal to the matching part of ``forward`` over the whole field latent.
``"conditional"`` — images for given conditions (class labels or physical parameters)
    ``condition_names: tuple[str, ...]`` and ``forward(z, conditions)`` with ``conditions`` a
    float tensor ``N×len(condition_names)``.
``"staged"`` — a chain of generators whose intermediate images can be drawn
    ``stages: tuple[str, ...]`` (the part names in order) and ``stage_output(z, k) ->
    N×C×H×W``, the model-space output of stage ``k`` (1-based; the last is ``forward(z)``).
    A bundle's hyper-parameter ``<part>_normalizer`` maps stage ``<part>``'s output to
    physical units (the bundle's normaliser when absent).
``"intermediate"`` — an intermediate latent space w (StyleGAN's)
    ``mapping(z) -> w``, ``synthesis(w) -> images`` (``w`` is ``N×w_dim`` or per layer
    ``N×num_ws×w_dim``), ``num_ws`` and ``mean_w() -> w`` (truncation toward the mean, style
    mixing and projection happen in w).
``"noise"`` — per-pixel noise inputs (StyleGAN's)
    ``noise_shapes() -> [(h, w), ...]`` (one per noise input), ``const_noise()`` (the fixed
    maps stored with the weights, ``1×1×h×w`` each) and a ``noise=[maps]`` keyword on
    ``forward`` (and ``synthesis`` for intermediate generators); each map is ``N×1×h×w`` or
    ``1×1×h×w``. Without it the generator uses its own default (the stored maps in eval mode).
``"physical"`` — the generator's output is already in the bundle's physical units
    ``forward(z)`` returns physical images (the generator maps its parts' model-space output
    with the normalisers it holds, e.g. to add galaxies into a field); sampling and training
    use it as it is, without the clamp to ``output_range`` and the normaliser's inverse.
``"sources"`` — fields composed of sources, each window drawn from the seed alone
    ``channels``, ``upscale`` (1), ``spec() -> dict``, ``render_window(seed, y0, x0, h, w,
    field_hw) -> C×h×w`` (physical units; equal to the matching part of the whole field) and
    ``sources_window(seed, y0, x0, h, w, field_hw) -> dict`` (the truth catalogue of the
    sources centred in the window: ``id``, ``x``, ``y``, ``flux`` N×C, ``hlr``,
    ``ellipticity``, ``pa_deg``); ``galforge field`` writes it beside the pixels.
``"prepsf"`` — the galaxy before the telescope (a physical forward model)
    ``scene(z[, conditions]) -> N×C×H×W``, the scene before the PSF in the bundle's physical
    units on the training data's pixel grid (``forward`` is that scene through the PSF plus
    sky noise), and ``psf_info() -> dict``: ``psf`` (one description per band,
    :mod:`galforge.data.psf`), ``pixel_scale`` (arcsec) and ``kernel`` (``C×k×k`` images of
    the PSF with the pixel response, each summing to one; with ``oversample`` > 1 the scene and
    kernel are on a grid that much finer, ``scene_pixel_scale``, the kernel without the pixel,
    which summing each block over the data's pixel supplies; an optional ``observe(scene)``
    gives the noiseless observation). ``galforge generate --psf`` and
    :mod:`galforge.galsim` re-observe such scenes through another PSF and pixel scale.
"""

from __future__ import annotations

from torch import nn

from galforge.errors import ModelError

LATENT = "latent"
WINDOWED = "windowed"
CONDITIONAL = "conditional"
INTERMEDIATE = "intermediate"
STAGED = "staged"
NOISE = "noise"
PHYSICAL = "physical"
SOURCES = "sources"
PREPSF = "prepsf"

REQUIRED: dict[str, tuple[str, ...]] = {
    LATENT: ("latent_shape", "forward"),
    WINDOWED: (
        "channels",
        "latent_channels",
        "upscale",
        "spec",
        "plan_window",
        "window_masks",
        "forward_window",
    ),
    CONDITIONAL: ("condition_names", "forward"),
    INTERMEDIATE: ("mapping", "synthesis", "mean_w", "num_ws"),
    STAGED: ("stages", "stage_output"),
    NOISE: ("noise_shapes", "const_noise", "forward"),
    PHYSICAL: ("latent_shape", "forward"),
    SOURCES: ("channels", "upscale", "spec", "render_window", "sources_window"),
    PREPSF: ("scene", "psf_info"),
}

__all__ = [
    "CONDITIONAL",
    "INTERMEDIATE",
    "LATENT",
    "NOISE",
    "PHYSICAL",
    "PREPSF",
    "REQUIRED",
    "SOURCES",
    "STAGED",
    "WINDOWED",
    "capabilities",
    "require",
]


def capabilities(generator: nn.Module) -> frozenset[str]:
    """The capabilities ``generator`` declares (``CAPABILITIES``), checked against its methods."""
    declared = frozenset(getattr(generator, "CAPABILITIES", ()) or ())
    unknown = declared - set(REQUIRED)
    if unknown:
        raise ModelError(
            f"{type(generator).__name__} declares unknown capabilities {sorted(unknown)}; "
            f"known: {', '.join(sorted(REQUIRED))}"
        )
    for cap in declared:
        missing = [name for name in REQUIRED[cap] if not hasattr(generator, name)]
        if missing:
            raise ModelError(
                f"{type(generator).__name__} declares the {cap!r} capability but lacks "
                f"{', '.join(missing)}"
            )
    return declared


def require(generator: nn.Module, capability: str, what: str) -> None:
    """ModelError saying that ``what`` needs ``capability`` unless the generator has it."""
    if capability not in capabilities(generator):
        family = getattr(generator, "family", type(generator).__name__)
        have = ", ".join(sorted(capabilities(generator))) or "none"
        raise ModelError(
            f"{what} needs a generator with the {capability!r} capability; the {family!r} "
            f"generator has: {have}"
        )
