"""Kernel generators (simplex, centring, determinism) and kernel files (round trips, validation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deblurcli.errors import KernelError, UsageError
from deblurcli.kernels import (
    center_of_mass,
    disk_kernel,
    gaussian_kernel,
    motion_kernel,
    random_kernel,
    read_kernel,
    write_kernel,
)

LEVIN_TXT = Path(__file__).resolve().parents[2] / "shared/data/levin09/kernels_double"


def _assert_simplex(k: np.ndarray) -> None:
    assert k.dtype == np.float64 and k.ndim == 2
    assert np.all(k >= 0)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)


def _assert_centred(k: np.ndarray, tol: float = 1e-9) -> None:
    c = k.shape[0] // 2
    assert center_of_mass(k) == pytest.approx((c, c), abs=tol)


@pytest.mark.parametrize("seed", range(4))
def test_motion_kernel_simplex_centred(seed: int) -> None:
    k = motion_kernel(31, rng=np.random.default_rng(seed))
    assert k.shape == (31, 31)
    _assert_simplex(k)
    _assert_centred(k)
    assert np.count_nonzero(k) > 10  # a path, not a dot


def test_motion_kernel_deterministic_per_seed() -> None:
    a = motion_kernel(25, rng=np.random.default_rng(3))
    b = motion_kernel(25, rng=np.random.default_rng(3))
    c = motion_kernel(25, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_motion_kernel_extent_bounds_support() -> None:
    k = motion_kernel(31, rng=np.random.default_rng(0), extent=0.3)
    rows, cols = np.nonzero(k)
    half = 0.3 * 14 + 1  # scaled reach plus the bilinear neighbour
    assert np.abs(rows - 15).max() <= half and np.abs(cols - 15).max() <= half


def test_gaussian_kernel_matches_formula() -> None:
    k = gaussian_kernel(7, 2.0, 1.0, theta=0.0)
    _assert_simplex(k)
    r = np.arange(7) - 3
    expected = np.exp(-(r[None, :] ** 2) / 8 - (r[:, None] ** 2) / 2)
    np.testing.assert_allclose(k, expected / expected.sum(), rtol=1e-12)
    # theta = pi/2 turns the wide axis from columns to rows.
    np.testing.assert_allclose(gaussian_kernel(7, 2.0, 1.0, theta=np.pi / 2), k.T, atol=1e-12)
    _assert_centred(gaussian_kernel(9, 2.5, 0.7, theta=0.4))


def test_disk_kernel_antialiased() -> None:
    k = disk_kernel(3.0)
    assert k.shape == (7, 7)
    _assert_simplex(k)
    _assert_centred(k)
    np.testing.assert_allclose(k, k.T)
    assert k[3, 3] == k.max() and k[0, 0] == 0
    edge = k[3, 0] / k[3, 3]  # pixel centre exactly on the circle: about half covered
    assert 0.3 < edge < 0.7
    assert disk_kernel(0.01).max() == 1.0  # sub-pixel radius: a delta


@pytest.mark.parametrize("kind", ["motion", "gaussian", "defocus"])
def test_random_kernel_each_kind(kind: str) -> None:
    ks = [random_kernel(np.random.default_rng(s), kinds=(kind,), max_size=21) for s in (0, 0, 1)]
    for k in ks:
        assert k.shape == (21, 21)
        _assert_simplex(k)
        _assert_centred(k)
    np.testing.assert_array_equal(ks[0], ks[1])
    assert not np.allclose(ks[0], ks[2])


def test_random_kernel_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        random_kernel(np.random.default_rng(0), kinds=("box",))
    with pytest.raises(ValueError):
        random_kernel(np.random.default_rng(0), max_size=20)


@pytest.mark.parametrize("suffix", [".txt", ".npy"])
def test_write_read_exact(tmp_path: Path, suffix: str) -> None:
    k = motion_kernel(15, rng=np.random.default_rng(1))
    write_kernel(tmp_path / f"k{suffix}", k)
    np.testing.assert_array_equal(read_kernel(tmp_path / f"k{suffix}"), k / k.sum())


def test_png_round_trip_is_normalised(tmp_path: Path) -> None:
    k = gaussian_kernel(9, 1.5, 1.5)
    write_kernel(tmp_path / "k.png", k)
    back = read_kernel(tmp_path / "k.png")
    _assert_simplex(back)
    np.testing.assert_allclose(back, k, atol=2e-3)


def test_read_csv_and_comments(tmp_path: Path) -> None:
    (tmp_path / "k.csv").write_text("# a kernel\n0, 1, 0\n0,2,1\n")
    np.testing.assert_allclose(read_kernel(tmp_path / "k.csv"), [[0, 0.25, 0], [0, 0.5, 0.25]])


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("neg.txt", "0 1\n-1 2\n"),
        ("zero.txt", "0 0\n0 0\n"),
        ("nan.txt", "0 nan\n1 1\n"),
        ("ragged.txt", "1 2\n3\n"),
        ("words.txt", "a b\n"),
        ("k.gif", "x"),
    ],
)
def test_read_kernel_rejects(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(KernelError):
        read_kernel(tmp_path / name)


def test_read_kernel_rejects_shape_and_missing(tmp_path: Path) -> None:
    np.save(tmp_path / "cube.npy", np.ones((3, 3, 3)))
    np.save(tmp_path / "big.npy", np.ones((256, 3)))
    for name in ("cube.npy", "big.npy", "missing.txt"):
        with pytest.raises(KernelError) as info:
            read_kernel(tmp_path / name)
        assert isinstance(info.value, UsageError)


@pytest.mark.skipif(not LEVIN_TXT.is_dir(), reason="shared data absent")
def test_reads_levin_text_kernel() -> None:
    k = read_kernel(LEVIN_TXT / "levin09_kernel1.txt")
    assert k.shape == (19, 19)
    _assert_simplex(k)
