"""A registration result as transforms other tools read: ITK/SimpleITK/Slicer (``transform.h5``) and
ANTs (``warp_ants.nii.gz`` + ``affine_ants.mat``).

The written transform maps a physical point of the fixed image to the physical point of the moving
image (ITK's resampling convention, LPS), as ITK reads both files: resampling the moving image onto
the fixed image with it reproduces ``warped.nii.gz``. With ``G_f``, ``G_m`` the index-to-physical
maps of the fixed and moving images (as ITK reads them), ``M`` the fixed-to-moving voxel map of the
grid change (:func:`~morphzoo.transforms.spatial.reference_to_moving_voxels`), ``A`` the
pre-alignment affine in fixed voxels and ``u`` the residual field (fixed voxels)::

    T(p) = A_phys(p + D(p)),   A_phys = G_m M A G_f^-1,   D(G_f x) = lin(G_f) u(x)

``A_phys`` is written as an ITK ``AffineTransform`` and ``D`` as a ``DisplacementFieldTransform``
on the fixed grid (via :func:`monai.data.itk_torch_bridge.monai_to_itk_ddf`), the two in one
``CompositeTransform`` (the field applied first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from morphzoo.transforms.io import ImageRecord, InputError

__all__ = [
    "split_affine_field",
    "itk_geometry",
    "physical_transform",
    "write_transforms",
    "read_initial_transform",
    "TRANSFORM_NAMES",
]

TRANSFORM_NAMES = ("transform.h5", "warp_ants.nii.gz", "affine_ants.mat")


def split_affine_field(ddf: np.ndarray, affine_vox: np.ndarray | None) -> np.ndarray:
    """The residual field ``u`` of a composed field ``ddf(x) = A(x + u(x)) - x``.

    Args:
        ddf: ``(N, *S)`` composed field in voxels, array-axis order.
        affine_vox: ``(N, N + 1)`` the affine ``A`` in voxels of the same grid, or ``None`` (``u = ddf``).

    Returns:
        ``(N, *S)``: ``A^-1 (x + ddf(x)) - x``.
    """
    if affine_vox is None:
        return ddf
    n = ddf.shape[0]
    hom = np.eye(n + 1)
    hom[:n] = affine_vox
    inv = np.linalg.inv(hom)
    x = np.indices(ddf.shape[1:]).astype(np.float64)
    target = x + ddf
    back = np.einsum("ij,j...->i...", inv[:n, :n], target) + inv[:n, n].reshape((n,) + (1,) * n)
    return (back - x).astype(np.float32)


def itk_geometry(image: Any) -> np.ndarray:
    """``(N + 1, N + 1)`` index -> physical (LPS) matrix of an ITK image: ``[D diag(s), o; 0, 1]``."""
    import itk

    n = image.GetImageDimension()
    direction = np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64)
    g = np.eye(n + 1)
    g[:n, :n] = direction @ np.diag(np.asarray(image.GetSpacing(), dtype=np.float64))
    g[:n, n] = np.asarray(image.GetOrigin(), dtype=np.float64)
    return g


def _read_itk(rec: ImageRecord) -> Any:
    import itk

    return itk.imread(str(rec.path), itk.F)


def _itk_axes(rec: ImageRecord) -> bool:
    """Whether MorphZoo's array axes are ITK's index axes (NIfTI: nibabel order = ITK x, y, z) or
    reversed (PNG: rows, columns = ITK y, x)."""
    return rec.kind != "png"


def _perm(rec: ImageRecord, n: int) -> np.ndarray:
    """Homogeneous permutation from MorphZoo array-axis order to ITK index order (its own inverse)."""
    p = np.eye(n + 1)
    if not _itk_axes(rec):
        p[:n, :n] = np.eye(n)[::-1]
    return p


def physical_transform(
    ddf: np.ndarray, moving: ImageRecord, fixed: ImageRecord, voxel_map: np.ndarray, affine_vox: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, Any]:
    """The affine and the residual displacement field in ITK physical space (see module docstring).

    Args:
        ddf: ``(N, *S)`` composed field on the fixed grid (voxels, MorphZoo array-axis order).
        moving, fixed: the pair as read (their files are re-read by ITK for the geometry).
        voxel_map: ``(N + 1, N + 1)`` fixed voxel -> moving voxel matrix (array-axis order).
        affine_vox: ``(N, N + 1)`` the pre-alignment affine in fixed voxels (array-axis order) or ``None``.

    Returns:
        ``(matrix, translation, field)``: the ``N x N`` matrix and ``N`` translation of ``A_phys`` and
        the ITK vector image of ``D`` (float32, the fixed image's geometry).
    """
    from monai.data.itk_torch_bridge import monai_to_itk_ddf

    fix_itk, mov_itk = _read_itk(fixed), _read_itk(moving)
    n = ddf.shape[0]
    u = split_affine_field(ddf, affine_vox)
    perm_f, perm_m = _perm(fixed, n), _perm(moving, n)  # array-axis order <-> ITK index order
    a = np.eye(n + 1)
    if affine_vox is not None:
        a[:n] = affine_vox
    # index (ITK order) -> array axes -> affine -> moving array axes -> moving ITK index -> physical
    a_phys = itk_geometry(mov_itk) @ perm_m @ voxel_map @ a @ perm_f @ np.linalg.inv(itk_geometry(fix_itk))
    # monai_to_itk_ddf takes the field in ITK *array* order (z, y, x), components along those axes
    if _itk_axes(fixed):
        u_itk = np.ascontiguousarray(np.transpose(u, (0,) + tuple(range(n, 0, -1)))[::-1])
    else:
        u_itk = np.ascontiguousarray(u)
    field = monai_to_itk_ddf(fix_itk, u_itk.astype(np.float64))
    return a_phys[:n, :n], a_phys[:n, n], field


def write_transforms(
    out_dir: str | Path,
    ddf: np.ndarray,
    moving: ImageRecord,
    fixed: ImageRecord,
    voxel_map: np.ndarray,
    affine_vox: np.ndarray | None = None,
) -> list[Path]:
    """Write ``transform.h5`` (ITK composite: affine, then displacement field), ``warp_ants.nii.gz``
    (the field, ANTs' vector-image layout) and ``affine_ants.mat`` (the affine) into ``out_dir``.

    ANTs applies ``[warp_ants.nii.gz, affine_ants.mat]`` (antspyx ``transformlist`` order, the field
    first to the point) as ``transform.h5``. Returns the written paths.
    """
    import itk

    out_dir = Path(out_dir)
    matrix, translation, field = physical_transform(ddf, moving, fixed, voxel_map, affine_vox)
    n = matrix.shape[0]
    affine = itk.AffineTransform[itk.D, n].New()
    affine.SetMatrix(itk.matrix_from_array(np.ascontiguousarray(matrix, dtype=np.float64)))
    affine.SetTranslation([float(t) for t in translation])
    field_d = itk.Image[itk.Vector[itk.D, n], n].New()  # the transform needs a double field
    field_d.SetRegions(field.GetLargestPossibleRegion())
    field_d.CopyInformation(field)
    field_d.Allocate()
    itk.array_view_from_image(field_d)[:] = itk.array_view_from_image(field)
    disp = itk.DisplacementFieldTransform[itk.D, n].New()
    disp.SetDisplacementField(field_d)
    composite = itk.CompositeTransform[itk.D, n].New()
    composite.AddTransform(affine)  # the first added is applied last: T(p) = A(p + D(p))
    composite.AddTransform(disp)
    paths = [out_dir / name for name in TRANSFORM_NAMES]
    itk.transformwrite([composite], str(paths[0]))
    itk.imwrite(field, str(paths[1]))
    itk.transformwrite([affine], str(paths[2]))
    return paths


def read_initial_transform(path: str | Path, moving: ImageRecord, fixed: ImageRecord, voxel_map: np.ndarray) -> np.ndarray:
    """A user's affine (ITK ``.txt``/``.tfm``/``.h5`` or ANTs ``.mat``, fixed -> moving physical
    points, as ``antsRegistration`` and ITK write them) as the pre-alignment affine in fixed voxels.

    The inverse of the export: ``A = M^-1 G_m^-1 T G_f`` (array-axis order; see the module docstring),
    the affine the pipeline's pre-alignment stage would have found.

    Args:
        path: the transform file; a composite transform must hold exactly one affine-like transform.
        moving, fixed: the pair as read (their files give ITK's geometry).
        voxel_map: fixed voxel -> moving voxel matrix of the grid change.

    Returns:
        ``(N, N + 1)`` affine in fixed voxels, array-axis order.

    Raises:
        InputError: if the file is missing, unreadable, not affine or of another dimension.
    """
    import itk

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: initial transform not found.")
    try:
        transforms = itk.transformread(str(p))
    except Exception as e:  # ITK raises RuntimeError with a long message
        raise InputError(f"{p}: not a transform ITK can read ({str(e).strip().splitlines()[-1][:200]}).") from None
    flat = []
    for t in transforms:
        if "Composite" in t.GetNameOfClass():
            flat += [t.GetNthTransform(k) for k in range(t.GetNumberOfTransforms())]
        else:
            flat.append(t)
    n = fixed.spatial_dims
    if len(flat) != 1 or not hasattr(flat[0], "GetMatrix") or not hasattr(flat[0], "GetOffset"):
        names = [t.GetNameOfClass() for t in flat]
        raise InputError(f"{p}: expected one affine transform, found {names}.")
    t = flat[0]
    matrix = np.asarray(itk.array_from_matrix(t.GetMatrix()), dtype=np.float64)
    if matrix.shape != (n, n):
        raise InputError(f"{p}: a {matrix.shape[0]}D transform for {n}D images.")
    phys = np.eye(n + 1)
    phys[:n, :n] = matrix
    phys[:n, n] = np.asarray(t.GetOffset(), dtype=np.float64)
    fix_itk, mov_itk = _read_itk(fixed), _read_itk(moving)
    a = (
        np.linalg.inv(voxel_map) @ _perm(moving, n) @ np.linalg.inv(itk_geometry(mov_itk))
        @ phys @ itk_geometry(fix_itk) @ _perm(fixed, n)
    )
    return a[:n]
