# %% [markdown]
# # Trade-offs of the study
#
# Which distribution of the learning task gives which accuracy for which energy, traffic and time — and which
# differences are more than noise? This notebook reads the aggregate tables of the study (`results/seeds.csv`: one row
# per plan × seed; `summary.csv`: per plan, mean, sd and 95 % interval of every metric; `rounds.csv`; `costs.csv`),
# draws the trade-off figures (shown here and saved into `figures/`), and tests the claims of the seed paper
# (Malandrino & Chiasserini, *Flexible Parallel Learning in Edge Scenarios*, PerCom Workshops 2022) with paired
# comparisons over seeds. `dvc repro` runs it as the `tradeoffs` stage; with the default parameters it reads
# `<repo>/results` and saves the figures into `<repo>/runs/figures/` (git-ignored), where JupyterLab's file browser shows them.

# %% tags=["parameters"]
# Parameters (papermill -p). The comparisons are fixed in params.yaml (findings), not here.
params_file: str = "params.yaml"  # the study's parameters (findings section), relative to the repository root
results_dir: str = ""  # folder with seeds.csv, summary.csv, rounds.csv, costs.csv; empty means <repo>/results
figures_dir: str = ""  # folder for the PNG figures, empty means paths.Folders.notebook_figures (<repo>/runs/figures, git-ignored; a temp folder in smoke tests)
findings_md: str = ""  # markdown file for the findings, empty means findings.md in the figures folder
sensitivity_csv: str = ""  # the profile-sensitivity verdicts (results/sensitivity/verdicts.csv); empty means none
focus_nodes: int = 0  # node count of the learning-curve and per-node figures, 0 means 4 if run, else the most
smoke_test: bool = False  # tiny sizes for CI: trains a tiny study (2 rounds, 3 seeds) in a temp folder

# %%
import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import Markdown

from fplstudy import paths
from fplstudy.study.findings import comparisons, findings
from fplstudy.study.params import load_params, load_study, smoke_params
from fplstudy.study.pool import run_group
from fplstudy.study.tables import aggregate, budget_rounds, write_aggregate
from fplstudy.train.results import atomic_write_text
from fplstudy.views import figures

where = paths.folders(Path.cwd())  # the checkout papermill/JupyterLab runs in, and its folders
if figures_dir:
    fig_dir = Path(figures_dir)
else:  # visible in JupyterLab's file browser; smoke tests keep the checkout clean
    fig_dir = Path(tempfile.mkdtemp(prefix="fplstudy-figures-")) if smoke_test else where.notebook_figures
params = smoke_params() if smoke_test else load_params(where.root / params_file)
the_study = load_study(params)
measured_on = figures.setting(the_study)  # under every figure: dataset, model, devices, link, seeds
if smoke_test and not results_dir:
    scratch = Path(tempfile.mkdtemp(prefix="fplstudy-smoke-"))
    run_group(the_study, None, scratch / "runs", log=lambda line: None)
    write_aggregate(the_study, aggregate(the_study, scratch / "runs"), scratch)
    results_dir = str(scratch)
tables = Path(results_dir) if results_dir else where.results
seeds, summary, rounds, costs = (pd.read_csv(tables / f"{t}.csv") for t in ("seeds", "summary", "rounds", "costs"))
if not focus_nodes:
    focus_nodes = 4 if (summary["nodes"] == 4).any() else int(summary["nodes"].max())
summary[["name", "seeds", "test_acc_mean_mean", "test_acc_mean_ci_low", "test_acc_mean_ci_high", "energy_j_mean",
         "bytes_total_mean", "makespan_s_mean"]]

# %% [markdown]
# ## Accuracy against cost, with the Pareto front
#
# Each point is one plan on IID data at the fixed budget: the mean over seeds, with its 95 % interval (the tables');
# marker size grows with the node count. The dashed staircase joins the plans whose *means* no other plan beats on
# both axes — a front of means, so two plans whose intervals overlap may swap places with more seeds.

# %%
# every plan at the fixed budget: the same rounds (min_rounds when runs stop at a target accuracy)
acc, energy, nbytes, makespan = "test_acc_budget", "energy_j_budget", "bytes_budget", "makespan_s_budget"
figures.publish(figures.tradeoff(seeds, energy, acc, maximize_y=True),
              fig_dir / "accuracy_vs_energy.png", "accuracy against energy", setting=measured_on)

# %%
figures.publish(figures.tradeoff(seeds, nbytes, acc, maximize_y=True),
              fig_dir / "accuracy_vs_bytes.png", "accuracy against bytes", setting=measured_on)

# %%
figures.publish(figures.tradeoff(seeds, energy, makespan), fig_dir / "makespan_vs_energy.png",
              "makespan against energy", setting=measured_on)

# %% [markdown]
# ## Where the energy and the bytes go
#
# Per node, over the whole training (mean over seeds), stacked by kind of work, for one plan of each strategy at
# `focus_nodes` nodes on IID data.

# %%
focus = summary[(summary["nodes"] == focus_nodes) & summary["partition"].isin(["iid", "features"])]
figures.publish(figures.node_costs(costs, list(focus["name"])), fig_dir / "node_costs.png", f"{focus_nodes} nodes",
                setting=measured_on)

# %% [markdown]
# ## Learning curves

# %%
figures.publish(figures.learning_curves(rounds, focus_nodes), fig_dir / "learning_curves.png", f"{focus_nodes} nodes",
                setting=measured_on)

# %% [markdown]
# ## Time and energy to accuracy
#
# The same learning curves against what they cost: every round's accuracy at the makespan and the energy spent up to
# it. Where a line crosses the dashed target (params.yaml, `findings.target_acc`, fixed before the study ran) is what
# the equal-accuracy findings compare.

# %%
target = the_study.findings.get("target_acc")
figures.publish(figures.to_accuracy(rounds, "cum_makespan_s", target), fig_dir / "time_to_accuracy.png",
              "time to accuracy", setting=measured_on)

# %%
figures.publish(figures.to_accuracy(rounds, "cum_energy_j", target), fig_dir / "energy_to_accuracy.png",
              "energy to accuracy", setting=measured_on)

# %% [markdown]
# ## Model-size overhead of the junction modes

# %%
figures.publish(figures.model_size_bars(summary), fig_dir / "model_size.png", "fpl plans", setting=measured_on)

# %% [markdown]
# ## Effect of non-IID data

# %%
figures.publish(figures.non_iid(seeds), fig_dir / "non_iid.png", "plans run on both IID and Dirichlet data",
                setting=measured_on)

# %% [markdown]
# ## Findings
#
# Each claim is a paired comparison over seeds (`fplstudy.study.findings.comparisons`; the statistics are in
# `fplstudy.study.stats`): TOST decides *equivalent within δ*, the paired t-test *better* or *worse*, else
# *inconclusive*; a cost that is the same on every seed is a value, with no interval or p. They are read at equal
# accuracy (the costs of reaching the target) and at the fixed budget. `dvc repro` writes the text to
# `results/findings.md` and the table to `results/comparisons.csv`.

# %%
table = comparisons(the_study.findings, seeds)
budget = budget_rounds(the_study)
robust = pd.read_csv(where.root / sensitivity_csv) if sensitivity_csv else None
text = "\n".join(findings(the_study.findings, table, summary, budget_rounds=budget, sensitivity=robust))
md = Path(findings_md) if findings_md else fig_dir / "findings.md"
atomic_write_text(md.with_name("comparisons.csv"), table.to_csv(index=False, lineterminator="\n", float_format="%.10g"))
atomic_write_text(md, f"# Findings of the {the_study.name} study\n\n" + text + "\n")
Markdown(text)
