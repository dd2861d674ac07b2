"""stemnmf.decompose.NMF: recovery, monotonicity, seeding, agreement with scikit-learn, bad input."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import scipy.sparse
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.decomposition import NMF as SkNMF
from sklearn.exceptions import NotFittedError

from stemnmf.decompose import NMF, RowBlocks
from stemnmf.decompose import kernels
from stemnmf.errors import ConfigError, DataValueError

SOLVERS = ["hals", "mu", "kl", "compressed"]


def separable_factors(n=60, m=45, k=3, seed=0):
    """W (n, k), H (k, m) with private positions and private features per component.

    Each component owns 5 positions where only it is present and 5 features where
    only it is non-zero, so the factorisation of W @ H is unique up to
    permutation and scale.
    """
    rng = np.random.default_rng(seed)
    W = rng.random((n, k)) * (rng.random((n, k)) < 0.6)
    H = rng.random((k, m)) * (rng.random((k, m)) < 0.6)
    for j in range(k):
        W[5 * j : 5 * j + 5] = 0
        W[5 * j : 5 * j + 5, j] = 1 + rng.random(5)
        H[:, 5 * j : 5 * j + 5] = 0
        H[j, 5 * j : 5 * j + 5] = 1 + rng.random(5)
    return W.astype(np.float32), H.astype(np.float32)


def matched_cosines(A, B):
    """Cosine similarity of the columns of A and B after the best permutation."""
    An = A / np.linalg.norm(A, axis=0)
    Bn = B / np.linalg.norm(B, axis=0)
    cos = An.T @ Bn
    rows, cols = linear_sum_assignment(-cos)
    return cos[rows, cols]


def frobenius(X, W, H):
    return float(np.linalg.norm(X.astype(np.float64) - W.astype(np.float64) @ H.astype(np.float64)))


def kl_divergence(X, W, H):
    X = X.astype(np.float64)
    WH = W.astype(np.float64) @ H.astype(np.float64)
    pos = X > 0
    return float(np.sum(X[pos] * np.log(X[pos] / WH[pos])) - X.sum() + WH.sum())


@pytest.fixture(scope="module")
def noisy():
    """A rank-4 non-negative product plus small uniform noise (80 x 50)."""
    rng = np.random.default_rng(1)
    W = rng.random((80, 4))
    H = rng.random((4, 50))
    return (W @ H + 0.05 * rng.random((80, 50))).astype(np.float32)


# -- recovery -------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", SOLVERS)
def test_recovers_separable_factors_up_to_permutation_and_scale(solver):
    W0, H0 = separable_factors()
    X = W0 @ H0
    model = NMF(3, solver=solver, init="nndsvda", max_iter=3000, tol=1e-10, random_state=0)
    W = model.fit_transform(X)
    assert W.dtype == np.float32 and model.components_.dtype == np.float32
    assert matched_cosines(W, W0).min() > 0.995
    assert matched_cosines(model.components_.T, H0.T).min() > 0.995
    assert model.reconstruction_err_ < 0.01 * np.linalg.norm(X)


# -- monotone objectives ------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["mu", "kl", "hals"])
def test_objective_never_increases(solver, noisy):
    X = noisy
    objective = kl_divergence if solver == "kl" else frobenius
    start = NMF(4, init="random", max_iter=0, random_state=3)
    W = start.fit_transform(X)
    H = start.components_
    values = [objective(X, W, H)]
    for _ in range(25):  # one iteration at a time, evaluated independently in float64
        model = NMF(4, solver=solver, max_iter=1, tol=0)
        W = model.fit_transform(X, W=W, H=H)
        H = model.components_
        values.append(objective(X, W, H))
    steps = np.diff(values)
    assert np.all(steps <= 1e-6 * values[0]), steps.max()
    assert values[-1] < 0.5 * values[0]


def test_loss_curve_of_mu_is_non_increasing(noisy):
    model = NMF(4, solver="mu", init="random", max_iter=60, tol=0, random_state=0)
    W = model.fit_transform(noisy)
    curve = np.asarray(model.loss_curve_)
    assert len(curve) == 60 == model.n_iter_
    assert np.all(np.diff(curve) <= 1e-6 * curve[0])
    exact = 0.5 * frobenius(noisy, W, model.components_) ** 2
    assert model.objective_ == pytest.approx(exact, rel=1e-5)
    assert curve[-1] == pytest.approx(exact, rel=1e-3)


# -- seeding ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["random", "nndsvd", "nndsvda"])
def test_same_seed_gives_identical_results(init, noisy):
    fits = [NMF(4, init=init, random_state=7, max_iter=20).fit(noisy) for _ in range(2)]
    np.testing.assert_array_equal(fits[0].components_, fits[1].components_)
    assert fits[0].reconstruction_err_ == fits[1].reconstruction_err_


def test_different_seeds_give_different_starts(noisy):
    starts = []
    for seed in (0, 1):
        model = NMF(4, init="random", max_iter=0, random_state=seed)
        starts.append((model.fit_transform(noisy), model.components_))
    assert not np.allclose(starts[0][0], starts[1][0])
    assert not np.allclose(starts[0][1], starts[1][1])
    # and the same seed again gives the same start
    again = NMF(4, init="random", max_iter=0, random_state=0)
    np.testing.assert_array_equal(again.fit_transform(noisy), starts[0][0])


def test_compressed_solver_is_seeded(noisy):
    a = NMF(4, solver="compressed", random_state=3).fit(noisy).components_
    b = NMF(4, solver="compressed", random_state=3).fit(noisy).components_
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("solver", ["hals", "kl"])
def test_result_does_not_depend_on_the_number_of_threads(solver, noisy, monkeypatch):
    fits = []
    for threads in ("1", "3"):
        monkeypatch.setenv("STEMNMF_NUM_THREADS", threads)
        blocks = RowBlocks(noisy, block_rows=7)  # 12 blocks
        model = NMF(4, solver=solver, random_state=0, max_iter=30)
        fits.append((model.fit_transform(blocks), model.components_))
    np.testing.assert_array_equal(fits[0][0], fits[1][0])
    np.testing.assert_array_equal(fits[0][1], fits[1][1])


def test_default_blocks_do_not_depend_on_the_number_of_threads(monkeypatch):
    rng = np.random.default_rng(0)
    X = (rng.random((9000, 3)) @ rng.random((3, 300)) + 0.01).astype(np.float32)  # 10.3 MiB: 2 blocks
    assert [len(block) for _, block in RowBlocks(X)] == [4500, 4500]
    fits = []
    for threads in ("1", "2", "5"):
        monkeypatch.setenv("STEMNMF_NUM_THREADS", threads)
        fits.append(NMF(3, random_state=0, max_iter=5).fit(X).components_)
    np.testing.assert_array_equal(fits[0], fits[1])
    np.testing.assert_array_equal(fits[0], fits[2])
    monkeypatch.setenv("STEMNMF_NUM_THREADS", "many")
    with pytest.raises(ConfigError, match="STEMNMF_NUM_THREADS"):
        NMF(3).fit(X)


# -- agreement with scikit-learn -------------------------------------------------------------------
@pytest.mark.parametrize(
    "beta_loss, ours, alpha_W, l1_ratio",
    [
        ("frobenius", "mu", 0.0, 0.0),
        ("kullback-leibler", "kl", 0.0, 0.0),
        ("frobenius", "mu", 0.01, 0.5),
        ("kullback-leibler", "kl", 0.005, 1.0),
    ],
)
def test_multiplicative_updates_match_scikit_learn_iterates(beta_loss, ours, alpha_W, l1_ratio, noisy):
    rng = np.random.default_rng(5)
    W0 = rng.random((80, 4)).astype(np.float32) + 0.1
    H0 = rng.random((4, 50)).astype(np.float32) + 0.1
    sk = SkNMF(4, solver="mu", beta_loss=beta_loss, init="custom", max_iter=40, tol=0, alpha_W=alpha_W, l1_ratio=l1_ratio)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W_sk = sk.fit_transform(noisy, W=W0.copy(), H=H0.copy())
    model = NMF(4, solver=ours, max_iter=40, tol=0, alpha_W=alpha_W, l1_ratio=l1_ratio)
    W = model.fit_transform(noisy, W=W0, H=H0)
    np.testing.assert_allclose(W, W_sk, rtol=2e-3, atol=1e-4 * W_sk.max())
    np.testing.assert_allclose(model.components_, sk.components_, rtol=2e-3, atol=1e-4 * sk.components_.max())


def test_hals_reaches_scikit_learn_cd_objective(noisy):
    sk = SkNMF(4, solver="cd", init="nndsvda", max_iter=3000, tol=0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W_sk = sk.fit_transform(noisy)
    model = NMF(4, solver="hals", init="nndsvda", max_iter=3000, tol=0, random_state=0)
    W = model.fit_transform(noisy)
    ours, theirs = frobenius(noisy, W, model.components_), frobenius(noisy, W_sk, sk.components_)
    assert ours == pytest.approx(theirs, rel=5e-3)
    assert model.reconstruction_err_ == pytest.approx(ours, rel=1e-5)


def test_regularisation_matches_scikit_learn_objective(noisy):
    """With penalties, both minimise the same objective: equal values at convergence."""
    alpha, l1_ratio = 0.002, 0.3
    n, m = noisy.shape

    def objective(W, H):
        W, H = W.astype(np.float64), H.astype(np.float64)
        return (
            0.5 * frobenius(noisy, W, H) ** 2
            + alpha * l1_ratio * m * W.sum()
            + 0.5 * alpha * (1 - l1_ratio) * m * (W**2).sum()
            + alpha * l1_ratio * n * H.sum()
            + 0.5 * alpha * (1 - l1_ratio) * n * (H**2).sum()
        )

    sk = SkNMF(4, solver="cd", init="nndsvda", max_iter=3000, tol=0, alpha_W=alpha, l1_ratio=l1_ratio, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W_sk = sk.fit_transform(noisy)
    model = NMF(4, init="nndsvda", max_iter=3000, tol=0, alpha_W=alpha, l1_ratio=l1_ratio, random_state=0)
    W = model.fit_transform(noisy)
    assert objective(W, model.components_) == pytest.approx(objective(W_sk, sk.components_), rel=1e-2)
    assert model.objective_ == pytest.approx(objective(W, model.components_), rel=1e-4)


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_regularised_solution_satisfies_the_optimality_conditions(solver, noisy):
    """KKT of the penalised objective (scikit-learn's scaling): gradient 0 on the support, >= 0 at zeros."""
    alpha, l1_ratio = 0.02, 0.5
    n, m = noisy.shape
    model = NMF(3, solver=solver, max_iter=4000, tol=0, alpha_W=alpha, l1_ratio=l1_ratio, random_state=0)
    W = model.fit_transform(noisy).astype(np.float64)
    H = model.components_.astype(np.float64)
    X = noisy.astype(np.float64)
    grad_W = W @ (H @ H.T) - X @ H.T + m * alpha * l1_ratio + m * alpha * (1 - l1_ratio) * W
    grad_H = (W.T @ W) @ H - W.T @ X + n * alpha * l1_ratio + n * alpha * (1 - l1_ratio) * H
    for A, g, scale in ((W, grad_W, np.abs(X @ H.T).max()), (H, grad_H, np.abs(W.T @ X).max())):
        tolerance = 2e-3 * scale
        assert np.abs(g[A > 1e-6 * A.max()]).max() < tolerance
        assert g[A == 0].min(initial=0.0) > -tolerance


def test_l1_penalty_makes_factors_sparser(noisy):
    plain = NMF(4, random_state=0, max_iter=300).fit(noisy)
    sparse = NMF(4, random_state=0, max_iter=300, alpha_W=0.02, l1_ratio=1.0).fit(noisy)
    assert (sparse.components_ == 0).sum() > (plain.components_ == 0).sum()


# -- the KL solver: known answers ------------------------------------------------------------------
def test_kl_rank_one_is_the_independence_model():
    """For k = 1 the KL-optimal W H is outer(row sums, column sums) / total, reached in one iteration."""
    rng = np.random.default_rng(2)
    X = (rng.random((30, 20)) + 0.1).astype(np.float32)
    model = NMF(1, solver="kl", init="random", max_iter=1, tol=0, random_state=0)
    W = model.fit_transform(X)
    X64 = X.astype(np.float64)
    expected = np.outer(X64.sum(axis=1), X64.sum(axis=0)) / X64.sum()
    np.testing.assert_allclose(W @ model.components_, expected, rtol=1e-5)
    divergence = float(np.sum(X64 * np.log(X64 / expected)))  # sum(WH) = sum(X) here
    assert model.objective_ == pytest.approx(divergence, rel=1e-4)


def test_kl_fits_a_noiseless_product():
    W0, H0 = separable_factors(seed=4)
    X = W0 @ H0
    model = NMF(3, solver="kl", max_iter=3000, tol=1e-12, random_state=0).fit(X)
    assert model.objective_ < 1e-4 * X.sum()


def test_beta_loss_kl_with_mu_is_the_kl_solver(noisy):
    a = NMF(3, solver="kl", random_state=0, max_iter=20).fit(noisy).components_
    b = NMF(3, solver="mu", beta_loss="kullback-leibler", random_state=0, max_iter=20).fit(noisy).components_
    np.testing.assert_array_equal(a, b)


# -- warm starts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["hals", "mu", "compressed"])
def test_warm_start_with_an_appended_component(solver):
    W0, H0 = separable_factors(k=3, seed=6)
    X = W0 @ H0
    two = NMF(2, solver=solver, random_state=0, max_iter=500, tol=1e-8)
    W2 = two.fit_transform(X)
    H2 = two.components_
    W_in = np.hstack([W2, np.full((len(X), 1), 0.01, np.float32)])
    H_in = np.vstack([H2, np.full((1, X.shape[1]), 0.01, np.float32)])
    W_copy, H_copy = W_in.copy(), H_in.copy()
    three = NMF(3, solver=solver, max_iter=2000, tol=1e-9)
    W3 = three.fit_transform(X, W=W_in, H=H_in)
    np.testing.assert_array_equal(W_in, W_copy)  # the caller's arrays are untouched
    np.testing.assert_array_equal(H_in, H_copy)
    assert W3.shape == (len(X), 3) and three.n_components_ == 3
    assert three.reconstruction_err_ < 0.1 * two.reconstruction_err_


def test_warm_start_with_zero_component_is_reseeded():
    W0, H0 = separable_factors(k=3, seed=6)
    X = W0 @ H0
    two = NMF(2, random_state=0, max_iter=300).fit(X)
    W_in = np.hstack([two.transform(X), np.zeros((len(X), 1), np.float32)])
    H_in = np.vstack([two.components_, np.zeros((1, X.shape[1]), np.float32)])
    three = NMF(3, max_iter=2000, tol=1e-9, random_state=0)
    W3 = three.fit_transform(X, W=W_in, H=H_in)
    assert np.abs(W3[:, 2]).max() > 0
    assert three.reconstruction_err_ < 0.1 * two.reconstruction_err_


def test_warm_start_continues_where_it_stopped(noisy):
    """Ten iterations, then ten more from the result, equal twenty in one go (HALS is stateless)."""
    start = NMF(4, init="random", random_state=0, max_iter=0)
    W0 = start.fit_transform(noisy)
    H0 = start.components_
    once = NMF(4, max_iter=20, tol=0)
    W_once = once.fit_transform(noisy, W=W0, H=H0)
    first = NMF(4, max_iter=10, tol=0)
    W_half = first.fit_transform(noisy, W=W0, H=H0)
    second = NMF(4, max_iter=10, tol=0)
    W_twice = second.fit_transform(noisy, W=W_half, H=first.components_)
    np.testing.assert_allclose(W_twice, W_once, rtol=1e-5, atol=1e-6)


# -- transform and the scikit-learn API ------------------------------------------------------------
@pytest.mark.parametrize("solver", SOLVERS)
def test_transform_solves_for_w_with_h_fixed(solver, noisy):
    model = NMF(4, solver=solver, random_state=0, max_iter=400, tol=1e-7)
    W_fit = model.fit_transform(noisy)
    W = model.transform(noisy)
    assert W.shape == (80, 4) and W.dtype == np.float32 and (W >= 0).all()
    # W from transform fits at least as well as the W of the fit (it is optimal for this H)
    loss = kl_divergence if solver == "kl" else frobenius
    assert loss(noisy, W, model.components_) <= loss(noisy, W_fit, model.components_) * (1 + 1e-3)
    np.testing.assert_allclose(model.inverse_transform(W), W @ model.components_, rtol=1e-6)


def test_estimator_basics(noisy):
    model = NMF(3, solver="mu", init="random", max_iter=50, random_state=1, alpha_W=0.1)
    params = model.get_params()
    assert params["n_components"] == 3 and params["solver"] == "mu" and params["alpha_H"] == "same"
    assert set(params) == {
        "n_components", "solver", "beta_loss", "init", "max_iter", "tol",
        "alpha_W", "alpha_H", "l1_ratio", "random_state", "verbose",
    }
    twin = clone(model)
    assert twin.get_params() == params and not hasattr(twin, "components_")
    assert model.fit(noisy) is model
    assert model.components_.shape == (3, 50) and model.n_components_ == 3
    assert model.n_features_in_ == 50 and 1 <= model.n_iter_ <= 50
    assert list(model.get_feature_names_out()) == ["nmf0", "nmf1", "nmf2"]
    model.set_params(n_components=2)
    assert model.fit(noisy).components_.shape == (2, 50)
    assert "NMF(" in repr(model)
    assert NMF().fit(noisy).n_components_ == 50  # None: min(n, m)


def test_transform_needs_a_fit(noisy):
    with pytest.raises(NotFittedError):
        NMF(2).transform(noisy)


def test_max_iter_zero_returns_the_initialisation(noisy):
    model = NMF(3, init="nndsvd", max_iter=0, random_state=0)
    W = model.fit_transform(noisy)
    assert model.n_iter_ == 0 and model.loss_curve_ == []
    assert model.reconstruction_err_ == pytest.approx(frobenius(noisy, W, model.components_), rel=1e-5)


def test_errors_are_exact(noisy):
    model = NMF(3, random_state=0, max_iter=30)
    W = model.fit_transform(noisy)
    R = noisy.astype(np.float64) - W.astype(np.float64) @ model.components_.astype(np.float64)
    assert model.reconstruction_err_ == pytest.approx(np.linalg.norm(R), rel=1e-5)
    assert model.mean_abs_err_ == pytest.approx(np.abs(R).mean(), rel=1e-5)


# -- row blocks and out-of-core input --------------------------------------------------------------
def test_row_blocks_from_hdf5_and_generator_match_the_array(noisy, tmp_path):
    reference = NMF(4, random_state=0, max_iter=25)
    W_ref = reference.fit_transform(RowBlocks(noisy, block_rows=16))
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["X"] = noisy
    with h5py.File(path, "r") as f:
        model = NMF(4, random_state=0, max_iter=25)
        W_h5 = model.fit_transform(RowBlocks(f["X"], block_rows=16))
    np.testing.assert_array_equal(W_h5, W_ref)
    np.testing.assert_array_equal(model.components_, reference.components_)

    def blocks():
        for start in range(0, len(noisy), 16):
            yield noisy[start : start + 16].astype(np.float64)

    model = NMF(4, random_state=0, max_iter=25)
    W_gen = model.fit_transform(RowBlocks(blocks))
    np.testing.assert_array_equal(W_gen, W_ref)
    assert model.transform(RowBlocks(blocks)).shape == (80, 4)


def test_row_blocks_from_a_list_and_a_dask_array(noisy):
    import dask.array as da

    reference = NMF(3, random_state=0, max_iter=15).fit(RowBlocks(noisy, block_rows=20)).components_
    listed = NMF(3, random_state=0, max_iter=15).fit(RowBlocks([noisy[i : i + 20] for i in range(0, 80, 20)]))
    np.testing.assert_array_equal(listed.components_, reference)
    lazy = NMF(3, random_state=0, max_iter=15).fit(RowBlocks(da.from_array(noisy, chunks=(20, 50)), block_rows=20))
    np.testing.assert_array_equal(lazy.components_, reference)
    with pytest.raises(DataValueError, match="disagree"):
        NMF(1).fit(RowBlocks([noisy[:10], noisy[10:, :5]]))


def test_block_kernels_sum_to_the_whole_matrix_update(noisy):
    """frobenius_w_step on row blocks, summed, equals the update on the whole matrix."""
    rng = np.random.default_rng(0)
    Wt = rng.random((4, 80)).astype(np.float32)
    H = rng.random((4, 50)).astype(np.float32)
    HHt = H @ H.T
    whole = Wt.copy()
    total = kernels.frobenius_w_step(noisy, whole, H, HHt, solver="hals", sweeps=2)
    parts = kernels.FrobeniusPartial.zeros(4, 50)
    blocked = Wt.copy()
    for start in range(0, 80, 25):
        kernels.frobenius_w_step(noisy[start : start + 25], blocked[:, start : start + 25], H, HHt, sweeps=2, out=parts)
    np.testing.assert_allclose(blocked, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts.WtX, total.WtX, rtol=1e-5)
    np.testing.assert_allclose(parts.WtX, blocked.astype(np.float64) @ noisy, rtol=1e-5)
    np.testing.assert_allclose(parts.WtW, blocked.astype(np.float64) @ blocked.T, rtol=1e-5)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "X, message",
    [
        (np.array([[1.0, -0.5], [0.2, 0.3]]), "Negative values"),
        (np.array([[1.0, np.nan], [0.2, 0.3]]), "NaN"),
        (np.array([[1.0, np.inf], [0.2, 0.3]]), "inf"),
        (np.array([[1.0, -np.inf], [0.2, 0.3]]), "inf"),
        (np.zeros((0, 5)), r"0 sample\(s\)"),
        (np.zeros((5, 0)), r"0 feature\(s\)"),
        (np.array([[1 + 1j, 2]]), "Complex"),
        (np.array([["a", "b"]], dtype=object), "numbers"),
        (np.zeros((4, 3)), "all zero"),
        (np.ones(5), "2-D"),
        (np.ones((2, 3, 4)), "2-D"),
    ],
)
def test_bad_data_raise_one_clear_error(X, message):
    with pytest.raises(DataValueError, match=message) as info:
        NMF(1).fit(X)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_sparse_input_is_refused():
    with pytest.raises(DataValueError, match="sparse"):
        NMF(1).fit(scipy.sparse.random(5, 4, density=0.5, format="csr"))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_components": 6}, "larger than min"),
        ({"n_components": 0}, "'n_components' parameter of NMF must be an int in the range"),
        ({"n_components": 2, "solver": "foo"}, "'solver' parameter of NMF must be a str among"),
        ({"n_components": 2, "beta_loss": "itakura-saito"}, "'beta_loss' parameter"),
        ({"n_components": 2, "beta_loss": "kullback-leibler"}, "Frobenius"),
        ({"n_components": 2, "solver": "compressed", "beta_loss": "kullback-leibler"}, "Frobenius"),
        ({"n_components": 2, "init": "nndsvdar"}, "'init' parameter"),
        ({"n_components": 2, "init": "custom"}, "both W and H"),
        ({"n_components": 2, "max_iter": -1}, "max_iter"),
        ({"n_components": 2, "tol": -1.0}, "tol"),
        ({"n_components": 2, "alpha_W": -0.1}, "alpha_W"),
        ({"n_components": 2, "alpha_H": "other"}, "alpha_H"),
        ({"n_components": 2, "l1_ratio": 1.5}, "l1_ratio"),
        ({"n_components": 2, "random_state": "seed"}, "'random_state' parameter .* Got 'seed'"),
    ],
)
def test_bad_options_raise_config_error(options, message):
    X = np.ones((8, 5), np.float32) + np.eye(8, 5, dtype=np.float32)
    with pytest.raises(ConfigError, match=message) as info:
        NMF(**options).fit(X)
    assert isinstance(info.value, ValueError)


def test_bad_warm_starts(noisy):
    W = np.ones((80, 2), np.float32)
    H = np.ones((2, 50), np.float32)
    with pytest.raises(DataValueError, match="do not fit"):
        NMF(2).fit(noisy, W=W[:10], H=H)
    with pytest.raises(DataValueError, match="negative"):
        NMF(2).fit(noisy, W=-W, H=H)
    with pytest.raises(DataValueError, match="NaN"):
        NMF(2).fit(noisy, W=W, H=H * np.nan)
    with pytest.raises(ConfigError, match="n_components=3"):
        NMF(3).fit(noisy, W=W, H=H)
    with pytest.raises(ConfigError, match="both"):
        NMF(2).fit(noisy, W=W)
    assert NMF().fit(noisy, W=W, H=H).n_components_ == 2  # k taken from the warm start


@pytest.mark.parametrize("solver", SOLVERS)
def test_zero_rows_get_zero_weights_and_zero_columns_zero_components(solver, noisy):
    X = noisy.copy()
    X[[3, 40]] = 0
    X[:, [7, 8]] = 0
    model = NMF(3, solver=solver, random_state=0, max_iter=50)
    W = model.fit_transform(X)
    assert np.isfinite(W).all() and np.isfinite(model.components_).all()
    assert (W[[3, 40]] == 0).all()
    assert (model.components_[:, [7, 8]] == 0).all()
    assert (model.transform(X)[[3, 40]] == 0).all()


def test_transform_checks_the_number_of_features(noisy):
    model = NMF(2, random_state=0, max_iter=5).fit(noisy)
    with pytest.raises(DataValueError, match="X has 10 features, but NMF is expecting 50"):
        model.transform(noisy[:, :10])
    with pytest.raises(DataValueError, match="expected"):
        model.inverse_transform(np.ones((3, 5)))


def test_integer_and_float64_input_are_converted(noisy):
    counts = np.round(noisy * 10).astype(np.int64)
    model = NMF(2, random_state=0, max_iter=10)
    assert model.fit_transform(counts).dtype == np.float32
    np.testing.assert_array_equal(
        NMF(2, random_state=0, max_iter=10).fit(counts.astype(np.float64)).components_, model.components_
    )


@pytest.mark.parametrize("solver, tol", [("hals", 1e-3), ("mu", 1e-3), ("compressed", 1e-3), ("kl", 1e-2)])
def test_tol_stops_on_the_relative_objective_change(noisy, solver, tol):
    model = NMF(4, solver=solver, tol=tol, max_iter=2000, random_state=0).fit(noisy)
    curve = np.asarray(model.loss_curve_)
    assert model.n_iter_ < 2000 and len(curve) == model.n_iter_
    steps = (curve[:-1] - curve[1:]) / np.abs(curve[:-1])
    assert steps[-1] <= tol  # stopped at the first relative change below tol ...
    assert np.all(steps[:-1] > tol)  # ... and not before


def test_values_too_large_for_float32_products_are_one_clear_error():
    with pytest.raises(DataValueError, match="rescale X"):
        NMF(2, max_iter=20, random_state=0).fit(np.full((30, 30), 1e20, np.float32))
    model = NMF(2, max_iter=20, random_state=0).fit(np.full((30, 30), 1e12, np.float32))
    assert np.isfinite(model.reconstruction_err_)
