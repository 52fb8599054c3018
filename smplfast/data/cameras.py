"""Random pinhole cameras for synthetic people: a free single camera, or a calibrated multi-camera rig.

Frames: the world is the body model's frame (y up, metres). Cameras follow the project's convention:
``X_cam = R X + t`` with x right, y down and z forward (into the scene), a point projecting to
``u = f_x X/Z + c_x, v = f_y Y/Z + c_y`` in pixels. Rows of ``R`` are the camera's axes in world
coordinates, so the camera centre in the world is ``-R^T t``.

Every camera is aimed at its subject, and its focal length is chosen from the subject's size and
distance so that the person covers a chosen fraction of the image (like a camera operator zooming),
which keeps every view usable at small image sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "Cameras",
    "look_at",
    "facing_azimuth",
    "view_angles",
    "project",
    "single_view_cameras",
    "rig_cameras",
]


@dataclass
class Cameras:
    """Sampled pinhole cameras as numpy float64 arrays with any leading dims (a rig is (n, views)):
    ``rotation`` (..., 3, 3), ``translation`` (..., 3), ``focal`` (..., 2) and ``center`` (..., 2) in
    pixels (world -> camera ``X_cam = R X + t``).

    This is the synthetic-data engine's record of the cameras it drew (numpy, written to the
    data sets' npz files as is).  The cameras themselves are :class:`smplfast.geometry.PerspectiveCamera`'s
    model; :meth:`to_perspective` and :meth:`from_perspective` convert between the two."""

    rotation: np.ndarray
    translation: np.ndarray
    focal: np.ndarray
    center: np.ndarray

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., K, 3) -> camera coordinates (..., K, 3); leading dims match the cameras'."""
        return np.einsum("...ij,...kj->...ki", self.rotation, points) + self.translation[..., None, :]

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Camera-frame points (..., K, 3) -> pixels (..., K, 2)."""
        return project(points_cam, self.focal, self.center)

    def reshape(self, *shape) -> "Cameras":
        """The same cameras with leading dims ``shape``."""
        return Cameras(self.rotation.reshape(*shape, 3, 3), self.translation.reshape(*shape, 3),
                       self.focal.reshape(*shape, 2), self.center.reshape(*shape, 2))

    def __getitem__(self, index) -> "Cameras":
        """The cameras selected by a numpy index over the leading dims."""
        return Cameras(self.rotation[index], self.translation[index], self.focal[index], self.center[index])

    def to_perspective(self, dtype=None, device=None):
        """These cameras, leading dims flattened to one batch, as a :class:`smplfast.geometry.PerspectiveCamera`
        in ``dtype`` (default float64) on ``device``."""
        import torch

        from ..geometry import PerspectiveCamera

        dtype = torch.float64 if dtype is None else dtype
        conv = lambda a, tail: torch.as_tensor(np.asarray(a).reshape(-1, *tail)).to(device=device, dtype=dtype)  # noqa: E731
        return PerspectiveCamera(focal=conv(self.focal, (2,)), center=conv(self.center, (2,)),
                                 rotation=conv(self.rotation, (3, 3)), translation=conv(self.translation, (3,)))

    @classmethod
    def from_perspective(cls, camera) -> "Cameras":
        """The (B,) cameras of a :class:`smplfast.geometry.PerspectiveCamera` (which must have a ``center``)."""
        if camera.center is None:
            raise ValueError("Cameras.from_perspective: the camera has no center; give it one")
        arr = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
        return cls(arr(camera.rotation), arr(camera.translation), arr(camera.focal), arr(camera.center))


def project(points_cam: np.ndarray, focal: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points (..., K, 3) with focal/center (..., 2) -> (..., K, 2).

    Points at or behind the camera (Z <= 0) get NaN, which callers treat as not visible."""
    z = points_cam[..., 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = points_cam[..., :2] / np.where(z > 0, z, np.nan)
    return uv * focal[..., None, :] + center[..., None, :]


def look_at(eye: np.ndarray, target: np.ndarray, roll: Optional[np.ndarray] = None,
            up: Tuple[float, float, float] = (0.0, 1.0, 0.0)) -> Tuple[np.ndarray, np.ndarray]:
    """World -> camera rotation (..., 3, 3) and translation (..., 3) of cameras at ``eye`` (..., 3)
    looking at ``target`` (..., 3) with the image's up direction towards world ``up``, then turned
    by ``roll`` (...,) radians about the viewing axis."""
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    z = target - eye
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(n < 1e-8):
        raise ValueError("look_at: the viewing direction is parallel to the up vector")
    x = x / n
    y = np.cross(z, x)  # image y points down (away from world up)
    if roll is not None:
        c, s = np.cos(roll)[..., None], np.sin(roll)[..., None]
        x, y = c * x + s * y, -s * x + c * y
    R = np.stack([x, y, z], axis=-2)
    t = -np.einsum("...ij,...j->...i", R, eye)
    return R, t


def _framing_focal(size: int, distance: np.ndarray, extent: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Focal length (pixels) at which an object of ``extent`` metres at ``distance`` spans
    ``fraction`` of the image side."""
    return fraction * size * distance / np.maximum(extent, 1e-3)


def single_view_cameras(rng: np.random.Generator, subject: np.ndarray, extent: np.ndarray, size: int, *,
                        distance=(2.5, 8.0), height=(-0.7, 1.2), fraction=(0.45, 0.85),
                        aim_jitter: float = 0.12, roll_deg=(-6.0, 6.0),
                        center_jitter: float = 0.02, azimuths_deg: Optional[Sequence[float]] = None,
                        azimuth_jitter_deg: float = 10.0, facing: Optional[np.ndarray] = None,
                        elevation_deg: Optional[Tuple[float, float]] = None) -> Cameras:
    """One random camera per subject.

    ``subject`` (n, 3) is the point to frame (the pelvis), ``extent`` (n,) the person's size in
    metres (largest side of the posed body's bounding box). The camera sits at a random azimuth,
    ``distance`` metres away, ``height`` metres above the subject point, aimed at the subject moved by
    up to ``aim_jitter`` x extent (so people are not always centred, and sometimes cut by the image
    border), rolled by an angle uniform in ``roll_deg`` (degrees); focal length frames the person at
    ``fraction`` of the image; the principal point is the image centre moved by N(0, ``center_jitter`` x size).

    Viewpoint controls (the lab / in-the-wild gap of the training splits):

    * ``azimuths_deg``: None = any azimuth (uniform on the circle); else a list of fixed azimuths,
      relative to the direction each person faces (``facing`` (n,) radians: the world azimuth of the
      body's forward axis; 0 = camera in front of the person, 90 = at the person's left), of which
      each camera picks one uniformly, moved by U(+-``azimuth_jitter_deg``).
    * ``elevation_deg``: None = camera ``height`` metres above the subject point (uniform); else
      the elevation angle of the camera centre seen from the subject point, uniform in the range
      (degrees, positive = looking down at the person).

    With the defaults the draws are exactly those of the original sampler, so data made with them is
    unchanged.
    """
    n = len(subject)
    if azimuths_deg is None:
        az = rng.uniform(-np.pi, np.pi, n)
    else:
        if facing is None or np.shape(facing) != (n,):
            raise ValueError(f"single_view_cameras: fixed azimuths need facing (n,) = ({n},); got "
                             f"{None if facing is None else np.shape(facing)}")
        table = np.asarray(azimuths_deg, dtype=np.float64)
        pick = rng.integers(0, len(table), n)
        az = np.asarray(facing, np.float64) + np.deg2rad(table[pick] + rng.uniform(-1, 1, n) * azimuth_jitter_deg)
    d = rng.uniform(*distance, n)
    if elevation_deg is None:
        h = rng.uniform(*height, n)
        horizontal = np.sqrt(np.maximum(d ** 2 - h ** 2, 1e-6))
    else:
        el = np.deg2rad(rng.uniform(*elevation_deg, n))
        h, horizontal = d * np.sin(el), d * np.cos(el)
    eye = subject + np.stack([horizontal * np.sin(az), h, horizontal * np.cos(az)], -1)
    target = subject + rng.uniform(-1, 1, (n, 3)) * aim_jitter * extent[:, None]
    roll = np.deg2rad(rng.uniform(*roll_deg, n))
    R, t = look_at(eye, target, roll)
    f = _framing_focal(size, np.linalg.norm(target - eye, axis=-1), extent, rng.uniform(*fraction, n))
    c = size / 2 + rng.normal(0, center_jitter * size, (n, 2))
    return Cameras(R, t, np.stack([f, f], -1), c)


def rig_cameras(rng: np.random.Generator, subject: np.ndarray, extent: np.ndarray, size: int, views: int, *,
                radius=(3.0, 6.0), height=(1.0, 2.0), azimuth_jitter_deg: float = 20.0,
                fraction=(0.5, 0.8), aim_jitter: float = 0.1, center_jitter: float = 0.01) -> Cameras:
    """A calibrated rig of ``views`` cameras around each subject, as in Human3.6M's capture room.

    The rig is centred on the world origin: camera k stands at azimuth ``base + 2 pi k / views``
    (+- ``azimuth_jitter_deg``), ``radius`` metres from the origin and ``height`` metres above the
    floor (y = 0), and looks at the subject point ``subject`` (n, 3) moved by up to ``aim_jitter`` m.
    Each camera's focal length frames the person (``extent`` (n,) metres) at ``fraction`` of the image.
    Returns cameras with leading dims (n, views).
    """
    n = len(subject)
    base = rng.uniform(0, 2 * np.pi, (n, 1))
    az = base + 2 * np.pi * np.arange(views) / views + np.deg2rad(rng.uniform(-1, 1, (n, views)) * azimuth_jitter_deg)
    r = rng.uniform(*radius, (n, views))
    h = rng.uniform(*height, (n, views))
    eye = np.stack([r * np.sin(az), h, r * np.cos(az)], -1)
    target = subject[:, None, :] + rng.uniform(-1, 1, (n, views, 3)) * aim_jitter
    R, t = look_at(eye, target)
    f = _framing_focal(size, np.linalg.norm(target - eye, axis=-1), extent[:, None], rng.uniform(*fraction, (n, views)))
    c = size / 2 + rng.normal(0, center_jitter * size, (n, views, 2))
    return Cameras(R, t, np.stack([f, f], -1), c)


def facing_azimuth(global_orient_matrix: np.ndarray) -> np.ndarray:
    """World azimuth (radians, same convention as the cameras': ``atan2(x, z)``) of the direction a
    body faces, i.e. of its forward axis (model +z) under the global rotation (..., 3, 3)."""
    fwd = np.asarray(global_orient_matrix)[..., :, 2]
    return np.arctan2(fwd[..., 0], fwd[..., 2])


def view_angles(rotation: np.ndarray, translation: np.ndarray, subject: np.ndarray,
                facing: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Azimuth, elevation and roll (degrees) of cameras ``X_cam = R X + t`` (..., 3, 3), (..., 3) seen
    from ``subject`` (..., 3), the inverse of how :func:`single_view_cameras` places them.

    Azimuth is relative to ``facing`` (the body's :func:`facing_azimuth`, radians) when given, in
    (-180, 180]; elevation is positive above the subject; roll is the turn of the image about the
    viewing axis away from level (image x horizontal)."""
    R = np.asarray(rotation, np.float64)
    centre = -np.einsum("...ji,...j->...i", R, np.asarray(translation, np.float64))
    rel = centre - np.asarray(subject, np.float64)
    az = np.arctan2(rel[..., 0], rel[..., 2])
    if facing is not None:
        az = az - np.asarray(facing, np.float64)
    az = np.angle(np.exp(1j * az))
    el = np.arcsin(np.clip(rel[..., 1] / np.linalg.norm(rel, axis=-1), -1.0, 1.0))
    x_axis, z_axis = R[..., 0, :], R[..., 2, :]
    # look_at: x = cos(r) x0 + sin(r) y0 with x0 horizontal and y0 . up = -|z_horizontal|.
    roll = np.arcsin(np.clip(-x_axis[..., 1] / np.sqrt(np.maximum(1.0 - z_axis[..., 1] ** 2, 1e-12)), -1.0, 1.0))
    return np.rad2deg(az), np.rad2deg(el), np.rad2deg(roll)
