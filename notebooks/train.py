# %% [markdown]
# # Train plans
#
# How well does one distribution of the learning task learn, over several seeds, and what does it cost each node?
# This notebook trains with fplstudy (real PyTorch training, simulated nodes) and writes one run folder per plan and
# seed: `metrics.json`, `rounds.csv`, `ledger.csv`.
#
# - **One plan** (exploring): give its config keys, e.g.
#   `papermill notebooks/train.ipynb out.ipynb -y "config: {strategy: fl, nodes: 8}" -y "seeds: [0, 1, 2]"`,
#   or edit the parameters cell in JupyterLab. Keys left out take fplstudy's defaults (`fplstudy keys` lists them).
# - **A group of the study** (what `dvc repro` runs as `train@<group>`): `-p group fl` trains every plan × seed of
#   that group of `params.yaml`'s active study into `results/runs/<group>/`.
#
# Every run is trained in a worker process whose CPU kernels are pinned to one level (`study.kernels` in
# `params.yaml`, default AVX2: `fplstudy.study.params.KERNELS`), one thread each, so the files are the same on any x86-64
# machine with that level.

# %% tags=["parameters"]
# Parameters (papermill -p / -y). Config keys and their defaults live in fplstudy.config.Config only.
group: str = ""  # a group of params.yaml's active study: train all its plans x seeds (dvc repro passes it)
config: dict = {}  # without group: config keys of the one plan to train, e.g. {"strategy": "fl", "nodes": 8}
seeds: list = []  # without group: seeds of that plan; empty means [the config's seed]
params_file: str = "params.yaml"  # the study's parameters, relative to the repository root
runs_dir: str = ""  # folder for the run folders, empty means paths.Folders.notebook_runs (<repo>/runs/notebook, git-ignored; a temp folder in smoke tests)
data_dir: str = ""  # dataset folder, empty means <repo>/data (digits: restore it with `dvc pull data.dvc`)
workers: int = 0  # runs at once, 0 means the study's `workers` (group) or 2 (one plan)
smoke_test: bool = False  # tiny sizes for CI: SMOKE_SIZES (2 rounds on 120 samples)
overwrite: bool = False  # replace run folders in runs_dir that hold another config's finished run (dvc repro passes True: the stage owns results/runs/<group>)

# %%
import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import display

from fplstudy import paths
from fplstudy.facts.datasets import require_dataset
from fplstudy.study.params import (
    SMOKE_SIZES,
    check_notebook_parameters,
    load_params,
    load_study,
    single_plan,
    smoke_params,
)
from fplstudy.study.pool import run_group, train_runs
from fplstudy.study.tables import plan_columns, read_runs
from fplstudy.views import figures

check_notebook_parameters(group=group, config=config, seeds=seeds, params_file=params_file, runs_dir=runs_dir,
                          data_dir=data_dir, workers=workers, smoke_test=smoke_test, overwrite=overwrite)
where = paths.folders(Path.cwd())  # the checkout papermill/JupyterLab runs in, and its folders
if runs_dir:
    out = Path(runs_dir)
else:  # visible in JupyterLab's file browser; smoke tests keep the checkout clean
    out = Path(tempfile.mkdtemp(prefix="fplstudy-runs-")) if smoke_test else where.notebook_runs
if group:
    params = smoke_params() if smoke_test else load_params(where.root / params_file)
    the_study = load_study(params)  # every plan's config validated before any training
    plans = the_study.group_plans(group)
    columns = {p.name: plan_columns(the_study, p) for p in plans}
    dataset = plans[0].config.dataset if plans else ""
else:  # one line naming the key if a value is refused
    name, runs = single_plan(config, seeds, out, **(SMOKE_SIZES if smoke_test else {}))
    dataset = runs[0][0].dataset
require_dataset(dataset, Path(data_dir) if data_dir else where.data)
out

# %% [markdown]
# ## Train
#
# One progress line per run (also on the terminal that runs papermill or `dvc repro`), with the time left.
# Runs already complete for the same code and config are kept, so an interrupted group resumes.

# %%
if group:
    records = run_group(the_study, group, out, workers=workers or None, overwrite=overwrite)
    folders = [(columns[p.name], s, d) for p, s, d in the_study.run_dirs(out) if p.group == group]
else:
    records = train_runs(runs, workers=workers or 2, label="plan", overwrite=overwrite)
    folders = [({"name": name}, c.seed, folder) for c, folder, _ in runs]
tables = read_runs(folders)
# what can change the floats of each run trained here (threads, CPU kernel level, CPU model, torch, kernel variables)
display(pd.DataFrame([{"run": r["run"], **(r.get("environment") or {})} for r in records]))
tables["seeds"][["name", "seed", "status", "test_acc_mean", "energy_j", "bytes_total", "makespan_s"]]

# %% [markdown]
# ## Learning curves and costs
#
# Test accuracy per round (mean over seeds, band: 95 % Student-t interval), and where the energy goes.

# %%
fig = figures.run_overview(tables["rounds"], tables["costs"], title=group or name)
