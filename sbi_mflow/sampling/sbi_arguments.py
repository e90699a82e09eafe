"""sbi 0.27's ``build_posterior`` arguments, read for the NUTS posterior.

``NLE.build_posterior`` takes ``sample_with``, ``mcmc_method``, ``mcmc_parameters`` and
``posterior_parameters=MCMCPosteriorParameters(...)``. :func:`nuts_options` says whether they
ask for Pyro NUTS/HMC (``mcmc_method`` None, ``"nuts_pyro"`` or ``"hmc_pyro"``), which
:class:`~sbi_mflow.sampling.posterior.NUTSPosterior` runs, and with which
:class:`~sbi_mflow.sampling.config.NUTSConfig` settings; anything else (sbi's slice
samplers, PyMC, rejection, VI, importance sampling) is sbi's own posterior.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters

from sbi_mflow.sampling.config import NUTSConfig

__all__ = ["PYRO_METHODS", "nuts_options"]

#: sbi's method names that our sampler runs, and its own name for them.
PYRO_METHODS = {"nuts_pyro": "nuts", "hmc_pyro": "hmc"}
#: sbi's MCMC settings without a counterpart here: chains run vectorised in one process.
_NO_EFFECT = ("num_workers", "mp_context")


def nuts_options(
    sample_with: str = "mcmc",
    mcmc_method: str | None = None,
    mcmc_parameters: dict[str, Any] | None = None,
    posterior_parameters: Any = None,
) -> dict[str, Any] | None:
    """:class:`NUTSConfig` fields for the request, or None when it is for sbi's posterior.

    sbi's names map to ours: ``num_chains``, ``warmup_steps``, ``thin`` (sbi's −1, "no
    thinning chosen", is our ``thin=None``: enough transitions per chain),
    ``target_accept`` → ``target_accept_prob``, ``init_strategy`` "resample"/"sir" (both are
    SIR from the prior here), ``init_strategy_parameters["num_candidate_samples"]`` →
    ``num_init_candidates``; ``num_workers`` and ``mp_context`` have no effect. Our own
    :class:`NUTSConfig` names are accepted in ``mcmc_parameters`` too.

    Raises:
        ValueError: ``init_strategy="proposal"`` for NUTS (starts are always SIR here).
    """
    parameters = dict(mcmc_parameters or {})
    if posterior_parameters is not None:
        if not isinstance(posterior_parameters, MCMCPosteriorParameters):
            return None
        parameters = {**dataclasses.asdict(posterior_parameters), **parameters}
        mcmc_method = parameters.pop("method")
    if sample_with != "mcmc" or (mcmc_method is not None and mcmc_method not in PYRO_METHODS):
        return None
    options: dict[str, Any] = {}
    if mcmc_method is not None:
        options["method"] = PYRO_METHODS[mcmc_method]
    for name in _NO_EFFECT:
        parameters.pop(name, None)
    strategy = parameters.pop("init_strategy", "resample")
    if strategy not in ("resample", "sir"):
        raise ValueError(
            f"init_strategy={strategy!r}: the NUTS posterior always starts its chains by "
            "sampling-importance-resampling from the prior ('sir'/'resample')."
        )
    init_parameters = parameters.pop("init_strategy_parameters", None) or {}
    if "num_candidate_samples" in init_parameters:
        options["num_init_candidates"] = int(init_parameters["num_candidate_samples"])
    thin = parameters.pop("thin", None)
    if thin is not None and thin != -1:
        options["thin"] = int(thin)
    target = parameters.pop("target_accept", None)
    if target is not None:
        options["target_accept_prob"] = float(target)
    options.update(parameters)  # num_chains, warmup_steps and NUTSConfig's own names
    NUTSConfig().replace(**{k: v for k, v in options.items()
                            if k in NUTSConfig.option_names()})  # validate early
    return options
