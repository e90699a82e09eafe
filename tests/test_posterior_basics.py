"""Cheap posterior checks: the chain runner on analytic energies, HMC, the exact potential,
seeding, SIR starts, the sampler configuration, devices and input errors."""

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pytest
import torch
from helpers import perturbed_estimator
from sbi.utils import BoxUniform, mcmc_transform

from sbi_mflow.sampling import (
    ConvergenceWarning,
    NUTSConfig,
    manifold_posterior,
    run_chains,
    to_inference_data,
)
from sbi_mflow.sampling.device import resolve_sampling_device
from sbi_mflow.sampling.init import sir_starts, systematic_resample
from sbi_mflow.sampling.record import DIVERGENCE_ENERGY


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # short chains on purpose
        yield
    torch.set_num_threads(threads)


def _setup(model="mflow"):
    estimator = perturbed_estimator(model, data_dim=4, manifold_dim=2, param_dim=2,
                                    dtype=torch.float32, scale=0.05)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    with torch.no_grad():
        x_o = estimator.sample((5,), torch.tensor([[0.3, -0.2]]))[:, 0]
    return estimator, prior, x_o


def test_same_seed_gives_identical_draws_and_hmc_works():
    estimator, prior, x_o = _setup()
    posterior = manifold_posterior(estimator, prior, num_chains=2, warmup_steps=20, thin=1,
                                   check_manifold=False, method="hmc", num_steps=5,
                                   step_size=0.1, num_init_candidates=200)
    first = posterior.sample((20,), x=x_o, seed=3)
    second = posterior.sample((20,), x=x_o, seed=3)
    torch.testing.assert_close(first, second)  # same seed, same arithmetic: identical
    assert not torch.equal(first, posterior.sample((20,), x=x_o, seed=4))
    idata = posterior.sample_arviz(20, x=x_o, seed=0)
    stats = idata.sample_stats
    # HMC: fixed trajectory length (step size × steps) once adaptation has ended
    steps = stats["n_steps"].values
    assert (steps == steps[:, :1]).all() and (steps >= 1).all()
    assert np.isnan(stats["tree_depth"].values).all()  # no tree for HMC
    assert idata.posterior.attrs["sampler"] == "pyro hmc"
    assert idata.posterior.attrs["chain_mode"] == "product"
    assert idata.posterior["theta"].shape == (2, 10, 2)
    assert prior.support.check(torch.as_tensor(idata.posterior["theta"].values)).all()


def test_pie_conditional_posterior_samples_with_the_exact_potential():
    estimator, prior, x_o = _setup("pie-conditional")
    with pytest.warns(UserWarning, match="conditions the manifold on θ"):
        posterior = manifold_posterior(estimator, prior, num_chains=1, warmup_steps=5, thin=1,
                                       num_init_candidates=20)
    samples = posterior.sample((5,), x=x_o, seed=0)
    assert samples.shape == (5, 2) and torch.isfinite(samples).all()
    assert type(posterior.potential_fn).__name__ == "ExactLikelihoodPotential"
    assert posterior.inference_data is None  # sample() builds no ArviZ data


def test_posterior_option_and_input_errors():
    estimator, prior, x_o = _setup()
    with pytest.raises(ValueError, match="method"):
        manifold_posterior(estimator, prior, method="slice")
    with pytest.raises(ValueError, match="num_chains"):
        manifold_posterior(estimator, prior, num_chains=0)
    with pytest.raises(ValueError, match="param_names"):
        manifold_posterior(estimator, prior, param_names=["a"])
    with pytest.raises(TypeError, match="Unknown sampler options"):
        manifold_posterior(estimator, prior, vectorize_chains=True)
    posterior = manifold_posterior(estimator, prior, check_manifold=False,
                                   param_names=["alpha", "beta"], num_init_candidates=100)
    with pytest.raises(TypeError, match="Unknown sampler options"):
        posterior.sample((4,), x=x_o, num_walkers=3)
    with pytest.raises(ValueError, match="num_samples"):
        posterior.sample_arviz(0, x=x_o)
    with pytest.raises(ValueError, match=r"x_o must have shape \(num_trials, 4\)"):
        posterior.sample((4,), x=torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(num_observations, 4\)"):
        posterior.sample_batched((4,), x=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="x contains 12 NaN"):
        posterior.sample_batched((4,), x=torch.full((3, 4), math.nan))
    with pytest.raises(ValueError, match="sampling_device is fixed"):
        posterior.sample((4,), x=x_o, sampling_device="cpu")
    idata = posterior.sample_arviz(8, x=x_o, seed=0, num_chains=1, warmup_steps=5, thin=1)
    assert list(idata.posterior["theta_dim"].values) == ["alpha", "beta"]


def test_config_validates_every_option():
    config = NUTSConfig()
    assert config.chain_mode == "product" and config.num_chains == 10
    assert config.replace(num_chains=4).num_chains == 4 and config.num_chains == 10
    bad = [
        (dict(chain_mode="vectorised"), "chain_mode"),
        (dict(num_chains=2.5), "num_chains"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(thin=0), "thin"),
        (dict(thin=2.0), "thin"),
        (dict(min_transitions=0), "min_transitions"),
        (dict(target_accept_prob=1.0), "target_accept_prob"),
        (dict(step_size=0.0), "step_size"),
        (dict(num_threads=0), "num_threads"),
        (dict(sampling_device="gpu"), "sampling_device"),
        (dict(full_mass=True), "full_mass=True needs chain_mode='independent'"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            config.replace(**change)
    assert config.replace(full_mass=True, chain_mode="independent").full_mass
    # thin=None: each chain runs ≥ min_transitions (1000) transitions after warm-up
    assert config.thin is None and config.min_transitions == 1000
    assert [config.thin_for(n) for n in (250, 300, 1000, 2500)] == [4, 4, 1, 1]
    assert config.replace(thin=2).thin_for(1) == 2
    with pytest.raises(TypeError, match="Unknown sampler options"):
        config.replace(num_walkers=3)


def test_sampling_device_plumbing_on_the_cpu():
    """"auto" samples a chart potential on the CPU, an exact one where the estimator is;
    a CPU estimator with a CPU prior is a no-op (same prior object, CPU samples)."""
    estimator, prior, x_o = _setup()
    assert resolve_sampling_device("auto", estimator, chart=True) == torch.device("cpu")
    assert resolve_sampling_device("auto", estimator, chart=False) == torch.device("cpu")
    assert resolve_sampling_device("cpu", estimator, chart=True) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            manifold_posterior(estimator, prior, sampling_device="cuda")
    posterior = manifold_posterior(estimator, prior, sampling_device="cpu", num_chains=2,
                                   warmup_steps=5, thin=1, check_manifold=False,
                                   num_init_candidates=50)
    assert posterior.prior is prior and posterior.sampling_device == torch.device("cpu")
    samples = posterior.sample_arviz(4, x=x_o, seed=0).posterior["theta"]
    assert samples.dtype == "float64"  # ArviZ stores float64; the draws are float32 values
    assert posterior.inference_data.posterior.attrs["sampling_device"] == "cpu"
    samples = posterior.sample((4,), x=x_o, seed=0)
    assert samples.device == torch.device("cpu") and samples.dtype == torch.float32


def _gaussian(mu, sigma, calls):
    def energy(z):
        calls.append(z.shape[0])
        return 0.5 * (((z - mu) / sigma) ** 2).sum(-1)

    return energy


@pytest.mark.parametrize("chain_mode", ["product", "independent"])
def test_chains_sample_an_analytic_gaussian_with_honest_per_chain_statistics(chain_mode):
    """NUTS on U(z) = ½ Σ_k (z_k − μ_k)² / σ_k²: means and variances of N(μ, diag σ²), and
    per-chain statistics that follow from their definitions."""
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    sigma = torch.tensor([0.3, 2.0], dtype=torch.float64)
    calls = []
    energy = _gaussian(mu, sigma, calls)
    pyro.set_rng_seed(0)
    num_chains, num_draws = 4, 300
    inits = torch.randn(num_chains, 2, dtype=torch.float64) * 2
    # thin=1: the record relations below link consecutive transitions
    result = run_chains(energy, inits, num_draws=num_draws, warmup_steps=150,
                        chain_mode=chain_mode, thin=1)
    draws = result.samples
    assert draws.shape == (num_chains, num_draws, 2) and result.chain_mode == chain_mode
    # product: one call for all chains; independent: one call for the chains still running
    assert max(calls) == num_chains and (set(calls) == {num_chains}) == (chain_mode == "product")
    ess = az.ess(az.convert_to_dataset({"z": draws.numpy()}), method="bulk")["z"].values
    flat = draws.reshape(-1, 2)
    standard_error = sigma / torch.as_tensor(ess).sqrt()
    # 4 standard errors per component (two-sided p ≈ 6e-5; measured ≤ 2 SE)
    assert ((flat.mean(0) - mu).abs() < 4 * standard_error).all()
    # relative SE of an sd estimate is 1/√(2 ESS) ≈ 0.025 at the tail ESS ≈ 800: 0.12 is 4.8
    # SE (over 15 seeds the larger deviation is ≤ 0.061, 0.045 here)
    torch.testing.assert_close(flat.std(0), sigma, rtol=0.12, atol=0)
    # R-hat over 15 seeds: 1.004 ± 0.0025 (max 1.009; 1.011 here): 1.02 is 6 sd
    assert float(az.rhat(az.convert_to_dataset({"z": draws.numpy()}))["z"].max()) < 1.02
    stats = result.stats
    # lp is −U of each chain's own draw: the same float64 values (measured equal; the float64
    # defaults only allow for a batched re-evaluation's reduction order)
    torch.testing.assert_close(torch.as_tensor(stats["lp"]), -energy(draws))
    # energy = U(start) + ½ r̃ᵀr̃ with r̃ ~ N(0, I_2): the kinetic part ~ ½ χ²_2, mean 1 and
    # sd 1 per transition; 1196 transitions → the mean is 1 ± 0.03 (0.1: > 3 sd). kinetic ≥ 0
    # is exact for consecutive transitions (thin = 1): energy = fl(U + K) ≥ U in float64 and
    # lp is −U, the same float
    kinetic = stats["energy"][:, 1:] + stats["lp"][:, :-1]
    assert (kinetic >= 0).all() and abs(kinetic.mean() - 1.0) < 0.1
    assert ((stats["acceptance_rate"] >= 0) & (stats["acceptance_rate"] <= 1)).all()
    # tree depth D = number of doublings: 2^(D−1) <= leapfrog steps <= 2^D − 1
    assert (2.0 ** (stats["tree_depth"] - 1) <= stats["n_steps"]).all()
    assert (stats["n_steps"] <= 2.0 ** stats["tree_depth"] - 1).all()
    step_sizes = stats["step_size"][:, 0]
    assert (stats["step_size"] == step_sizes[:, None]).all()  # fixed after warm-up: same float
    if chain_mode == "product":  # shared trajectory, per-chain energies
        assert (stats["n_steps"] == stats["n_steps"][:1]).all()
        assert (step_sizes == step_sizes[0]).all()
        assert not (stats["energy"] == stats["energy"][:1]).all()
    else:  # each chain adapts its own step size and mass matrix
        # four adaptation paths end at different floats; equal only by a 1e-16 coincidence
        assert len(set(step_sizes.tolist())) == num_chains
        assert not (stats["n_steps"] == stats["n_steps"][:1]).all()
    # adapted diagonal inverse mass matrix ≈ posterior variances, per chain. Pyro estimates
    # them from warm-up windows of ~50 autocorrelated draws (relative sd of a variance
    # estimate √(2/n_eff) ≈ 0.3) and shrinks them (Stan's regularisation): 12 estimates
    # stay within a factor 4 (log 4 ≈ 4.6 sd of log-variance).
    variances = torch.stack(result.inverse_mass_matrices)
    assert variances.shape == (num_chains, 2)
    assert ((variances / sigma**2).log().abs() < math.log(4.0)).all()
    # seeded: the same run again gives the same draws
    pyro.set_rng_seed(0)
    again = run_chains(energy, torch.randn(num_chains, 2, dtype=torch.float64) * 2,
                       num_draws=20, warmup_steps=20, chain_mode=chain_mode, thin=1)
    pyro.set_rng_seed(0)
    twice = run_chains(energy, torch.randn(num_chains, 2, dtype=torch.float64) * 2,
                       num_draws=20, warmup_steps=20, chain_mode=chain_mode, thin=1)
    assert torch.equal(again.samples, twice.samples)


@pytest.mark.parametrize("chain_mode", ["product", "independent"])
def test_each_divergent_transition_of_each_chain_is_counted_once(chain_mode):
    """A standard normal with a wall at z = 1 (curvature 10⁶): trajectories that hit it
    diverge. ``diverging`` flags transitions per chain; ArviZ's sum is the number of
    divergent (chain, transition) pairs, and a shared product-space trajectory that diverged
    is charged only to the chains whose own energy error exploded."""

    def energy(z):
        z = z[:, 0]
        return 0.5 * z**2 + 0.5e6 * torch.relu(z - 1.0) ** 2

    pyro.set_rng_seed(1)
    num_chains = 4
    result = run_chains(energy, torch.zeros(num_chains, 1, dtype=torch.float64), num_draws=150,
                        warmup_steps=50, chain_mode=chain_mode, thin=1)
    stats = result.stats
    diverging = stats["diverging"]
    assert diverging.dtype == bool and diverging.shape == (num_chains, 150)
    assert result.num_divergences == int(diverging.sum()) > 0
    idata = to_inference_data(result.samples, stats)
    assert int(idata.sample_stats["diverging"].values.sum()) == result.num_divergences
    if chain_mode == "independent":
        # each chain's flags are its own (run_chains checks them against Pyro's own list)
        assert len({tuple(row) for row in diverging.tolist()}) > 1
    else:
        # a divergent shared trajectory is charged to the chain(s) that hit the wall (their
        # own energy error ≫ 1000), not to all 4: each chain is past z = 1 with
        # probability 0.16, so two at once is rare
        # (thin = 1: measured mean 1.05, 112 of 117 divergent trajectories charged to one chain)
        charged = diverging.sum(0)[diverging.any(0)]
        assert (charged >= 1).all() and charged.mean() < 2
    assert DIVERGENCE_ENERGY == 1000.0


@pytest.mark.parametrize("chain_mode", ["product", "independent"])
def test_thinning_keeps_every_kth_transition_of_the_same_run(chain_mode):
    """thin=k runs k× the transitions and keeps the last of each window: with the same seed
    the kept draws are exactly draws k−1, 2k−1, … of the unthinned run (same arithmetic,
    so compared exactly), and a kept record is divergent when its window diverged."""

    def energy(z):  # the wall of the divergence test above: some transitions diverge
        z = z[:, 0]
        return 0.5 * z**2 + 0.5e6 * torch.relu(z - 1.0) ** 2

    inits = torch.zeros(3, 1, dtype=torch.float64)
    pyro.set_rng_seed(1)
    full = run_chains(energy, inits, num_draws=120, warmup_steps=30, chain_mode=chain_mode,
                      thin=1)
    pyro.set_rng_seed(1)
    thinned = run_chains(energy, inits, num_draws=40, warmup_steps=30, chain_mode=chain_mode,
                         thin=3)
    assert thinned.samples.shape == (3, 40, 1)
    assert torch.equal(thinned.samples, full.samples[:, 2::3])
    windows = full.stats["diverging"].reshape(3, 40, 3).any(-1)
    assert full.num_divergences > 0
    assert np.array_equal(thinned.stats["diverging"], windows)
    assert np.array_equal(thinned.stats["n_steps"], full.stats["n_steps"][:, 2::3])


@pytest.mark.parametrize("pooled", [True, False])
def test_pooled_mass_matrix_is_the_mean_of_the_chains_own_variances(pooled):
    """Two well-separated modes of different widths (−5 with sd 0.5, +5 with sd 1; no chain
    crosses), two chains warming up in each: pooled adaptation gives every chain the mean
    of the chains' own variances (0.25 + 1)/2 = 0.625, not the variance of all draws
    together (≈ 25.6, the distance between the modes); per-chain adaptation each chain its
    own mode's 0.25 or 1."""

    def energy(z):
        z = z[:, 0]
        return -torch.logaddexp(-0.5 * ((z + 5) / 0.5) ** 2, -0.5 * (z - 5) ** 2)

    inits = torch.tensor([[-5.0], [-5.0], [5.0], [5.0]], dtype=torch.float64)
    widths = torch.tensor([0.25, 0.25, 1.0, 1.0], dtype=torch.float64)
    pyro.set_rng_seed(0)
    result = run_chains(energy, inits, num_draws=10, warmup_steps=100, thin=1,
                        pooled_mass_matrix=pooled)
    variances = torch.stack(result.inverse_mass_matrices)[:, 0]
    # modes never mix (barrier of 12.5 nats or more), so the sign of every draw is its
    # start's
    assert torch.equal(result.samples[:, :, 0].sign(), inits.sign().expand(4, 10))
    if pooled:
        # one estimate for all, the mean of 4 chains' ~75 autocorrelated window draws
        # each (relative error ~√(2τ/n) per chain, τ the autocorrelation time); Stan's
        # shrinkage n/(n + 5) lowers it by ~6% (seeds 0–5 gave 0.45–0.68): a factor 1.6
        # covers both and is 40 times below 25.6
        assert torch.equal(variances, variances[:1].expand(4))
        assert 0.625 / 1.6 < float(variances[0]) < 0.625 * 1.6
    else:
        # each chain's own ~75 autocorrelated window draws, relative error ~√(2τ/75) with
        # τ of a few (seeds 0–5: ratios 0.59–1.36): within a factor 2.5 of its mode's
        assert ((variances / widths).log().abs() < math.log(2.5)).all()


def test_systematic_resampling_gives_each_candidate_its_share_of_chains():
    """Each candidate gets ⌊C w⌋ or ⌈C w⌉ of the C starts; zero weights never."""
    torch.manual_seed(0)
    weights = torch.tensor([0.0, 0.5, 0.25, 0.125, 0.125, 0.0])
    for num in (4, 8, 20, 40):
        index = systematic_resample(weights.log(), num)
        counts = torch.bincount(index, minlength=6).double()
        expected = num * weights.double()
        # integer counts within 1 of C·w: ⌊C w⌋ or ⌈C w⌉ (= C w when it is an integer). The
        # weights pass through float32 log and exp, so bin edges move by ~1e-7; a count
        # changes only if the seeded u lands within 1e-7 of an edge (probability ~1e-5)
        assert ((counts - expected).abs() < 1).all(), (num, counts)
        assert counts[0] == counts[-1] == 0
    with pytest.raises(RuntimeError, match="zero"):
        systematic_resample(torch.full((3,), -math.inf), 2)


@pytest.mark.parametrize("masses", [(0.25, 0.25, 0.25, 0.25), (0.4, 0.3, 0.2, 0.1)])
def test_systematic_resampling_gives_each_separated_mode_its_share_of_chains(masses):
    """Four modes with masses a_k, apart in (θ₁, θ₂) (centres (±0.5, ±0.5), sd 0.05) and
    each spread along θ₀ (sd 1, as SLCP's sign modes share their other coordinates): mode k
    gets ⌊C a_k⌋ or ⌈C a_k⌉ of the C starts, as one candidate does, for any C and seed. That
    needs each mode to be one stretch of the resampling order; along the principal axis
    (θ₀) all four interleave."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.5, 0.5], [0.0, -0.5, 0.5], [0.0, -0.5, -0.5],
                            [0.0, 0.5, -0.5]])
    masses = torch.tensor(masses, dtype=torch.float64)
    spread = torch.tensor([1.0, 0.05, 0.05])
    points = (centres.repeat_interleave(200, 0)
              + spread * torch.randn(800, 3, generator=generator))
    mode = torch.arange(4).repeat_interleave(200)
    # each point carries its mode's mass / 200, times a factor in [0.5, 1.5) renormalised
    # per mode, so that candidates differ in weight but modes keep their exact mass
    jitter = 0.5 + torch.rand(800, generator=generator, dtype=torch.float64)
    jitter = jitter / torch.zeros(4, dtype=torch.float64).index_add(0, mode, jitter)[mode]
    log_weights = (masses[mode] * jitter).log()
    for seed in range(5):
        torch.manual_seed(seed)
        for num in (4, 6, 10, 20):
            counts = torch.bincount(mode[systematic_resample(log_weights, num, points)],
                                    minlength=4).double()
            # a mode's mass is a sum of 200 float64 weights, exact to ~1e-15; where C a_k is
            # an integer the count is pinned to it unless the seeded u lands within ~1e-15 of
            # a bin edge
            expected = num * masses
            assert ((counts - expected).abs() < 1).all(), (seed, num, counts)


class _TwoModes:
    """A stand-in potential of B observations: observation b has modes at ±0.5 (sd 0.05)
    with weights (½, ½) for b = 0 and (1, 0) for b = 1."""

    device = "cpu"

    def __init__(self, num_obs: int) -> None:
        self.x_batch = torch.zeros(num_obs, 1, 4)

    def batched(self, theta, track_gradients=False):
        up = -0.5 * ((theta - 0.5) / 0.05).pow(2).sum(-1)
        down = -0.5 * ((theta + 0.5) / 0.05).pow(2).sum(-1)
        values = torch.logsumexp(torch.stack([up, down]), 0)  # (B, M)
        values[1:] = up[1:]
        return values


def test_sir_starts_put_chains_in_both_modes_in_proportion():
    """Two equally likely modes: 20 chains start 10 and 10 (±1) in each, for every seed
    (independent draws would give 10 ± 2.2); a second observation, batched with it, whose
    mass is all in one mode gets all 20 there."""
    _, prior, _ = _setup()
    transform = mcmc_transform(prior)
    # importance ESS ≈ 300 of 20000 candidates: a mode's share a has SE √(¼/300) = 0.029, so
    # 20 a = 10 ± 0.58 chains. A count outside 9..11 needs |20 a − 10| ≥ 2, i.e. 3.5 SE
    # (measured counts 10, 10, 10, 11, 11)
    for seed in range(5):
        torch.manual_seed(seed)
        starts = transform.inv(sir_starts(_TwoModes(2), prior, transform, 20, 20000).z)
        assert starts.shape == (2, 20, 2)
        assert 9 <= int((starts[0].sum(-1) > 0).sum()) <= 11
        assert int((starts[1].sum(-1) > 0).sum()) == 20
    # too few candidates for the target ESS: more are drawn (1000, 2000, 4000, …)
    result = sir_starts(_TwoModes(1), prior, transform, 20, 1000, target_ess=300)
    # ESS grows ≈ 1/64 per candidate: ~250 at 16000, ~500 at 32000 (measured 508). ≥ 300 is
    # the doubling's stopping rule on the same float (the 100 000-candidate cap is far off)
    assert float(result.ess[0]) >= 300 and result.num_candidates in (8000, 16000, 32000)
    assert 9 <= int((transform.inv(result.z[0]).sum(-1) > 0).sum()) <= 11


class _NarrowTwoModes(_TwoModes):
    """Like :class:`_TwoModes` but each mode has sd 0.002: of N prior draws on [-1, 1]²,
    ~N · 6e-6 fall within 2 sd of a mode, so the importance ESS is ~1 up to N ~ 10⁶."""

    def batched(self, theta, track_gradients=False):
        up = -0.5 * ((theta - 0.5) / 0.002).pow(2).sum(-1)
        down = -0.5 * ((theta + 0.5) / 0.002).pow(2).sum(-1)
        return torch.logsumexp(torch.stack([up, down]), 0)


def test_too_few_effective_candidates_temper_the_weights_so_both_modes_get_chains():
    """Untempered, ESS ≈ 1: all 20 chains start at the heaviest draw, in one mode. With the
    target ESS out of reach, the starts come from tempered weights w^β (ESS 400), which are
    symmetric in the two modes, so each gets 10 ± 2."""
    _, prior, _ = _setup()
    transform = mcmc_transform(prior)
    torch.manual_seed(0)
    untempered = sir_starts(_NarrowTwoModes(1), prior, transform, 20, 2000, target_ess=0)
    assert float(untempered.beta[0]) == 1.0
    assert int((transform.inv(untempered.z[0]).sum(-1) > 0).sum()) in (0, 20)
    for seed in range(3):
        torch.manual_seed(seed)
        result = sir_starts(_NarrowTwoModes(1), prior, transform, 20, 2000, target_ess=400)
        # the screening stops at its cap, 100 × 2000 candidates, with ESS ~6 (measured 6-8)
        assert result.num_candidates == 200_000 and float(result.ess[0]) < 400
        assert 0 < float(result.beta[0]) < 1
        # a mode's tempered share a has SE √(¼/400) = 0.025 (20 a = 10 ± 0.5 chains; 20
        # seeds measured 8.6–11.0) and the count is ⌊20 a⌋ or ⌈20 a⌉: outside 8..12 needs
        # |20 a − 10| > 2, 4 SE (measured counts 10, 9, 8)
        up = int((transform.inv(result.z[0]).sum(-1) > 0).sum())
        assert 8 <= up <= 12, (seed, up)


def test_an_error_in_the_potential_stops_all_independent_chains_and_is_raised():
    """The lockstep runner unwinds every chain's thread and re-raises the error."""
    import threading

    calls = []

    def energy(z):
        calls.append(z.shape[0])
        if len(calls) == 30:
            raise FloatingPointError("the potential failed")
        return 0.5 * z.pow(2).sum(-1)

    before = threading.active_count()
    with pytest.raises(FloatingPointError, match="the potential failed"):
        run_chains(energy, torch.zeros(3, 2, dtype=torch.float64), num_draws=50,
                   warmup_steps=50, chain_mode="independent")
    assert threading.active_count() == before and len(calls) == 30


@pytest.mark.parametrize("chain_mode", ["product", "independent"])
def test_groups_of_chains_sample_their_own_targets_with_their_own_mass_matrix(chain_mode):
    """Two observations' chains in one run (groups=2): rows 0–2 target N(0, 1), rows 3–5
    N(5, 0.5²). The energy sees every row in its place (also when independent chains
    finish at different times), each group's draws have its own target's moments, and the
    pooled mass matrix of each group is its own target's variance."""
    mean = torch.tensor([0.0, 0.0, 0.0, 5.0, 5.0, 5.0], dtype=torch.float64)
    sd = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5, 0.5], dtype=torch.float64)
    shapes = []

    def energy(z):
        shapes.append(z.shape[0])
        return 0.5 * ((z[:, 0] - mean) / sd) ** 2

    pyro.set_rng_seed(0)
    inits = mean[:, None] + 0.1
    result = run_chains(energy, inits, num_draws=400, warmup_steps=300, thin=1,
                        chain_mode=chain_mode, groups=2)
    assert set(shapes) == {6}
    draws = result.samples[..., 0]  # (6, 400)
    for rows, target_mean, target_sd in ((slice(0, 3), 0.0, 1.0), (slice(3, 6), 5.0, 0.5)):
        group = draws[rows].flatten()
        # 1200 draws, ESS ≥ 300 (NUTS on a 1-D Gaussian; measured ≥ 900): SE(mean) ≤ sd/17,
        # SE(sd) ≤ sd/24; 5 SE
        assert abs(float(group.mean()) - target_mean) < 5 * target_sd / 17
        assert abs(float(group.std()) - target_sd) < 5 * target_sd / 24
    if chain_mode == "product":
        variances = torch.stack(result.inverse_mass_matrices)[:, 0]
        # each group pools its 3 chains' variances over the last warm-up window (100 draws
        # each, relative error ~√(2/300)) of its own target; seeds 0–5 gave 0.86–1.01 and
        # 0.21–0.28: within a factor 2 of its variance (1 vs 0.25, 4× apart), the same float
        # within a group
        assert (variances[:3] == variances[0]).all() and (variances[3:] == variances[3]).all()
        assert 0.5 < float(variances[0]) < 2.0 and 0.125 < float(variances[3]) < 0.5
