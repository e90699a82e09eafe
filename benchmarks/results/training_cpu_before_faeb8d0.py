"""Time the trainer of faeb8d0 (before issue 12) as `training.py --candidates 1 --retries 0`.

Run from a checkout of faeb8d0 (that commit's ``train`` has no ``compile``, candidates or
retries): ``PYTHONPATH=. python <this file>``; it prints the JSON stored beside it.
"""

import json
import os
import time
import warnings

import torch

import sbi_mflow
from sbi_mflow.tracking import NullTracker
from simulators import ParticleDecay

torch.set_num_threads(1)
torch.manual_seed(0)
simulator = ParticleDecay()
theta = simulator.prior.sample((10000,))
x = simulator(theta)
build = sbi_mflow.manifold_likelihood_nn("mflow", simulator.manifold_dim, outer_layers=10,
                                         inner_layers=5, hidden_features=64, num_bins=8)
ours = sbi_mflow.ManifoldNLE(simulator.prior, density_estimator=build,
                             show_progress_bars=False, tracker=NullTracker())
ours.append_simulations(theta, x)
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ours.train(schedule="sequential", max_num_epochs=20, training_batch_size=100,
               validation_fraction=0.1, stop_after_epochs=10**6)
total = time.perf_counter() - start
seconds: dict[str, list[float]] = {"manifold": [], "density": []}
for entry in ours.summary["phases"]:
    seconds[entry["phase"]].append(entry["seconds"])
print(json.dumps({"commit": "faeb8d0", "md_seconds": total, "md_epoch_seconds": seconds,
                  "load_average": list(os.getloadavg())}))
