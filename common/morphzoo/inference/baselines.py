"""Classical registration baselines as ``field_fn(moving, fixed) -> ddf`` callables.

Each baseline plugs into :class:`~morphzoo.inference.Registrar` in place of a network::

    reg = Registrar(None, spatial_dims=3, spatial_size=(64, 64, 64), field_fn=AntsSyN())

and so goes through exactly the same resampling, warping and metric code as the bundles.
Inputs are normalised ``(B, 1, *S)`` tensors on the network grid; the output is a ``(B, N, *S)``
displacement in voxels, channel ``i`` along array axis ``i``, in MONAI's backward-warping
convention ``warped(x) = moving(x + ddf(x))`` (what :class:`monai.networks.blocks.Warp` does).

- :class:`AntsSyN`: ANTs SyN through ``antspyx`` (``ants.registration``). The images are given
  to ANTs with unit spacing, zero origin and identity direction; ANTsPy keeps numpy's axis
  order (ITK index ``i`` = array axis ``i``), so the composed forward transform (affine + warp,
  ``ants.apply_transforms(..., compose=...)``) is already a displacement in voxels per array axis.
- :class:`AntsAffine`: the same ANTs call with ``type_of_transform="Affine"`` (affine only; the
  "Affine" row of papers' tables).
- :class:`AntsSyN` with ``type_of_transform="SyNRA"`` (``ants_synra``): rigid, then affine,
  then SyN, antspyx defaults: the strongest classical ANTs pipeline.
- :class:`ElastixBSpline`: elastix through ``itk-elastix`` with the default B-spline parameter
  map. ITK views a numpy array with its axes reversed (ITK ``x`` = last array axis), so the
  field from ``itk.transformix_deformation_field`` has its components reversed. With
  ``maps=("affine", "bspline")`` (``elastix_affine_bspline``) elastix runs its default affine map
  and then the B-spline map, the classical two-stage pipeline.
- :class:`ConvexAdam`: ConvexAdam (Siebert, Hansen, Heinrich; PyPI ``convexadam``) with its
  default settings: MIND-SSC features, a discrete coupled-convex search, then Adam instance
  optimisation of the field. 3D only (the package is written for volumes).

Both conventions are checked numerically in ``tests/inference/test_baselines.py`` (a known
integer shift, in 2D and 3D). The third-party packages are imported lazily: this module imports
without them, and using a baseline without them raises an :class:`ImportError` that says
``pip install -e .[baselines]``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Sequence

import numpy as np
import torch

from morphzoo.inference.registrar import Registrar

__all__ = [
    "AntsSyN",
    "AntsAffine",
    "ElastixBSpline",
    "ConvexAdam",
    "BASELINES",
    "baseline_registrar",
    "require_ants",
    "require_elastix",
    "require_convexadam",
]

_INSTALL_HINT = "pip install -e .[baselines]   (or: pip install antspyx==0.6.3 itk-elastix convexadam)"


def require_ants():
    """Import and return ``ants`` (antspyx), with an actionable error when it is missing."""
    try:
        import ants  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(f"The ANTs SyN baseline needs antspyx, which is not installed: {_INSTALL_HINT}") from e
    return ants


def require_elastix():
    """Import and return ``itk`` with the elastix wrapping (itk-elastix), or raise a clear error."""
    try:
        import itk  # noqa: PLC0415

        itk.elastix_registration_method, itk.transformix_deformation_field, itk.ParameterObject  # noqa: B018
    except (ImportError, AttributeError) as e:
        raise ImportError(f"The elastix B-spline baseline needs itk-elastix, which is not installed: {_INSTALL_HINT}") from e
    return itk


def require_convexadam():
    """Import and return ``convexAdam.convex_adam_MIND`` (PyPI ``convexadam``), or raise a clear error."""
    try:
        from convexAdam import convex_adam_MIND  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(f"The ConvexAdam baseline needs convexadam, which is not installed: {_INSTALL_HINT}") from e
    return convex_adam_MIND


def _as_batch(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    if moving.shape != fixed.shape or moving.ndim not in (4, 5) or moving.shape[1] != 1:
        raise ValueError(
            f"expected moving and fixed of the same shape (B, 1, *S) with 2 or 3 spatial axes, got "
            f"{tuple(moving.shape)} and {tuple(fixed.shape)}."
        )
    mov = moving.detach().float().cpu().numpy()[:, 0]
    fix = fixed.detach().float().cpu().numpy()[:, 0]
    return np.ascontiguousarray(mov), np.ascontiguousarray(fix)


class _Baseline:
    """Shared ``__call__``: per batch item, ``register_arrays`` -> ``(N, *S)`` field; stacked."""

    name = "baseline"

    def register_arrays(self, moving: np.ndarray, fixed: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    last_result: dict[str, np.ndarray] | None = None  #: ``register_arrays`` output of the last batch item

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *S)`` moving and fixed -> ``(B, N, *S)`` displacement (voxels, array-axis order)."""
        mov, fix = _as_batch(moving, fixed)
        ddfs = []
        for m, f in zip(mov, fix):
            self.last_result = self.register_arrays(m, f)
            ddfs.append(self.last_result["ddf"])
        return torch.as_tensor(np.stack(ddfs), dtype=moving.dtype, device=moving.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class AntsSyN(_Baseline):
    """ANTs SyN (antspyx) as a ``field_fn``.

    Args:
        type_of_transform: ``ants.registration`` transform (``"SyN"``: affine + symmetric
            diffeomorphic; also ``"SyNOnly"``, ``"SyNRA"``, ``"ElasticSyN"``...).
        random_seed: seed of ANTs' metric sampling (reproducible runs); ``None`` leaves it unset.
            ``antsRegistration`` treats ``--random-seed 0`` like no seed (results change from run
            to run), hence the default 1.
        **kwargs: passed to ``ants.registration`` (e.g. ``syn_metric``, ``reg_iterations``).
    """

    name = "ants_syn"

    def __init__(self, type_of_transform: str = "SyN", random_seed: int | None = 1, **kwargs: Any) -> None:
        require_ants()  # fail early with the install hint; pays the import cost outside any timing
        self.type_of_transform = type_of_transform
        self.random_seed = random_seed
        self.kwargs = dict(kwargs)

    def register_arrays(self, moving: np.ndarray, fixed: np.ndarray) -> dict[str, np.ndarray]:
        """Register two numpy images (same shape, 2D or 3D).

        Returns:
            ``ddf``: ``(N, *S)`` float32 displacement in voxels, array-axis order, backward warping;
            ``warped``: ANTs' own warped moving image (``ants.apply_transforms``, linear).
        """
        ants = require_ants()
        if moving.shape != fixed.shape:
            raise ValueError(f"moving {moving.shape} and fixed {fixed.shape} must have the same shape.")
        fix = ants.from_numpy(np.asarray(fixed, dtype=np.float32))  # spacing 1, origin 0, identity direction
        mov = ants.from_numpy(np.asarray(moving, dtype=np.float32))
        kwargs = dict(self.kwargs)
        # antspyx 0.6 passes `--random-seed` from ants.config._random_seed and ignores a `random_seed` kwarg
        seeded_by_config = hasattr(getattr(ants, "config", None), "_random_seed")
        previous_seed = ants.config._random_seed if seeded_by_config else None
        if self.random_seed is not None:
            if seeded_by_config:
                ants.config._random_seed = int(self.random_seed)
            else:
                kwargs.setdefault("random_seed", int(self.random_seed))
        with tempfile.TemporaryDirectory(prefix="morphzoo-ants-") as tmp:
            try:
                reg = ants.registration(
                    fixed=fix, moving=mov, type_of_transform=self.type_of_transform, outprefix=os.path.join(tmp, "reg_"), **kwargs
                )
            finally:
                if seeded_by_config:
                    ants.config._random_seed = previous_seed
            fwd = reg["fwdtransforms"]
            # one displacement field for the whole forward chain (warp after affine), in physical
            # units of the fixed image = voxels along array axes (unit spacing, identity direction)
            comp = ants.apply_transforms(fixed=fix, moving=mov, transformlist=fwd, compose=os.path.join(tmp, "comp_"))
            field = ants.image_read(comp).numpy()  # (*S, N)
            warped = ants.apply_transforms(fixed=fix, moving=mov, transformlist=fwd, interpolator="linear").numpy()
        if field.shape != (*fixed.shape, fixed.ndim):
            raise RuntimeError(f"ANTs returned a field of shape {field.shape} for images of shape {fixed.shape}.")
        ddf = np.moveaxis(field, -1, 0).astype(np.float32)
        return {"ddf": np.ascontiguousarray(ddf), "warped": np.asarray(warped, dtype=np.float32)}


class AntsAffine(AntsSyN):
    """ANTs affine registration: :class:`AntsSyN` with ``type_of_transform="Affine"``.

    Args:
        random_seed: seed of ANTs' metric sampling (see :class:`AntsSyN`); ``None`` leaves it unset.
        **kwargs: passed to ``ants.registration`` (e.g. ``aff_metric``, ``aff_iterations``).
    """

    name = "ants_affine"

    def __init__(self, random_seed: int | None = 1, **kwargs: Any) -> None:
        super().__init__(type_of_transform="Affine", random_seed=random_seed, **kwargs)


class ElastixBSpline(_Baseline):
    """elastix B-spline registration (itk-elastix) with the default ``bspline`` parameter map.

    Args:
        parameter_overrides: entries replacing the default map's (e.g. ``{"MaximumNumberOfIterations": ["500"]}``).
        random_seed: elastix ``RandomSeed`` for the random image sampler; ``None`` leaves it unset.
        number_of_threads: threads, set as ITK's global default (it also applies to other ITK
            filters of this process); ``None``: ITK's default (all cores, or
            ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``).
    """

    name = "elastix_bspline"

    def __init__(
        self,
        parameter_overrides: dict[str, Any] | None = None,
        random_seed: int | None = 0,
        number_of_threads: int | None = None,
        maps: Sequence[str] = ("bspline",),
    ) -> None:
        require_elastix()  # fail early; itk loads its elastix wrapping lazily (~10 s), outside any timing
        self.maps = tuple(maps)
        if self.maps != ("bspline",):
            self.name = "elastix_" + "_".join(self.maps)
        self.parameter_overrides = dict(parameter_overrides or {})
        self.random_seed = random_seed
        self.number_of_threads = number_of_threads

    def parameter_object(self):
        itk = require_elastix()
        po = itk.ParameterObject.New()
        for name in self.maps:
            pm = po.GetDefaultParameterMap(name)
            if self.random_seed is not None:
                pm["RandomSeed"] = [str(int(self.random_seed))]
            for k, v in self.parameter_overrides.items():
                pm[k] = [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]
            po.AddParameterMap(pm)
        return po

    def register_arrays(self, moving: np.ndarray, fixed: np.ndarray) -> dict[str, np.ndarray]:
        """Register two numpy images (same shape, 2D or 3D).

        Returns:
            ``ddf``: ``(N, *S)`` float32 displacement in voxels, array-axis order, backward warping;
            ``warped``: elastix's own result image.
        """
        itk = require_elastix()
        if moving.shape != fixed.shape:
            raise ValueError(f"moving {moving.shape} and fixed {fixed.shape} must have the same shape.")
        # image_from_array copies; spacing 1, origin 0, identity direction; ITK axes = reversed numpy axes
        fix = itk.image_from_array(np.ascontiguousarray(fixed, dtype=np.float32))
        mov = itk.image_from_array(np.ascontiguousarray(moving, dtype=np.float32))
        kwargs: dict[str, Any] = {"parameter_object": self.parameter_object(), "log_to_console": False}
        if self.number_of_threads:
            # ITK's global default, not the filter's own number_of_threads: with itk-elastix 0.25.4
            # the latter (> 1) crashes 3D registrations with a segmentation fault
            itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(int(self.number_of_threads))
        warped, params = itk.elastix_registration_method(fix, mov, **kwargs)  # no output directory: nothing written
        # T(x) - x for every fixed-grid point x, in physical units = voxels (unit spacing)
        # transformix writes deformationField.nii into its output directory (default: the current
        # one); a temporary directory keeps the user's working directory clean
        with tempfile.TemporaryDirectory(prefix="morphzoo_transformix_") as tmp:
            field_image = itk.transformix_deformation_field(mov, params, output_directory=tmp, log_to_console=False)
            field = np.array(itk.array_from_image(field_image), copy=True)
        if field.shape != (*fixed.shape, fixed.ndim):
            raise RuntimeError(f"elastix returned a field of shape {field.shape} for images of shape {fixed.shape}.")
        ddf = np.moveaxis(field[..., ::-1], -1, 0).astype(np.float32)  # ITK (x, y[, z]) -> array axes
        return {"ddf": np.ascontiguousarray(ddf), "warped": np.asarray(itk.array_from_image(warped), dtype=np.float32)}


class ConvexAdam(_Baseline):
    """ConvexAdam (PyPI ``convexadam``, ``convex_adam_pt``) as a ``field_fn``, 3D only.

    Args:
        **kwargs: passed to ``convex_adam_pt`` (default: the package's defaults, e.g. MIND radius 1,
            dilation 2, grid spacing 6, search half-width 4, 80 Adam steps, lambda 1.25).

    The package returns a ``(H, W, D, 3)`` displacement in voxels whose component ``k`` runs along
    array axis ``k`` with backward warping, i.e. already MONAI's ``Warp`` convention (checked on a
    known shift in ``tests/inference/test_baselines.py``).
    """

    name = "convexadam"

    def __init__(self, **kwargs: Any) -> None:
        require_convexadam()
        self.kwargs = dict(kwargs)

    def register_arrays(self, moving: np.ndarray, fixed: np.ndarray) -> dict[str, np.ndarray]:
        """Register two 3D numpy images of one shape; returns ``{"ddf": (3, *S)}``."""
        cadam = require_convexadam()
        if moving.ndim != 3 or moving.shape != fixed.shape:
            raise ValueError(f"ConvexAdam registers 3D images of one shape, got {moving.shape} and {fixed.shape}.")
        cuda = torch.cuda.is_available()
        kwargs = {"device": torch.device("cuda" if cuda else "cpu"), "dtype": torch.float16 if cuda else torch.float32, **self.kwargs}
        # its Adam stage needs autograd, also when called from a Registrar (which predicts under no_grad)
        with torch.inference_mode(False), torch.enable_grad():
            disp = cadam.convex_adam_pt(
                torch.from_numpy(np.ascontiguousarray(fixed, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(moving, dtype=np.float32)),
                **kwargs,
            )
        ddf = np.moveaxis(np.asarray(disp, dtype=np.float32), -1, 0)
        return {"ddf": np.ascontiguousarray(ddf)}


def _ants_synra(**kwargs: Any) -> AntsSyN:
    base = AntsSyN(type_of_transform="SyNRA", **kwargs)
    base.name = "ants_synra"
    return base


def _elastix_affine_bspline(**kwargs: Any) -> ElastixBSpline:
    return ElastixBSpline(maps=("affine", "bspline"), **kwargs)


#: benchmark method name -> factory of the ``field_fn``
BASELINES = {
    "ants_syn": AntsSyN,
    "ants_synra": _ants_synra,
    "ants_affine": AntsAffine,
    "elastix_bspline": ElastixBSpline,
    "elastix_affine_bspline": _elastix_affine_bspline,
    "convexadam": ConvexAdam,
}


def baseline_registrar(
    name: str,
    spatial_dims: int,
    spatial_size: Sequence[int] | None = None,
    labels: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> Registrar:
    """A :class:`Registrar` running the baseline ``name`` (a key of :data:`BASELINES`) at ``spatial_size``.

    The Registrar's untimed warm-up call is skipped: a classical method has no lazy
    initialisation left once constructed (the constructors load the libraries), and a warm-up
    would double the cost of the first pair. ``kwargs`` go to the baseline's constructor.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}.")
    reg = Registrar(
        None,
        spatial_dims=spatial_dims,
        spatial_size=spatial_size,
        labels=labels,
        device=device if device is not None else "cpu",
        size_multiple=1,
        field_fn=BASELINES[name](**kwargs),
    )
    reg._warm = True  # see docstring
    reg.num_parameters = 0
    return reg
