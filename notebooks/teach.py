# %% [markdown]
# # Who should hold which layers? A first look at split and federated learning
#
# Several small edge devices want to train one neural network together. How should the work be
# shared? This notebook walks through the classic answers — **centralized** training, **federated
# learning (FL)**, **model parallelism (MP)**, **split learning (SL / SFL)** — and then **flexible
# parallel learning (FPL)**, which mixes them. For each, it draws the *plan* (which node holds which
# layers and which data, and what travels between nodes) and prices it with fplstudy's **dry run**:
# the exact FLOPs, bytes, energy, time and memory of one round of training, computed from the plan
# alone, without training anything.
#
# All numbers below are computed by the cells that print them; costs are **per round** (one pass of
# every branch over its data).

# %% tags=["parameters"]
# Parameters (papermill -p NAME VALUE / -y overrides any of them)
smoke_test: bool = False  # CI: a 200-sample subset and a tiny plan search
config: dict = {"rounds": 1}  # config keys of the walk's plans; the others (nodes, device, server_device, link, ...) take fplstudy's defaults, `fplstudy keys` lists them; one round priced: every number is per round
topology: str = ""  # a topology file or a shipped site (fog_wifi, phones_lte, wearables_ble, wearables_mcu): every plan on it, and the plan search also chooses which node holds which part
slider_nodes: int = 6  # starting position of the sliders: edge nodes
slider_branches: int = 2  # starting position: branches D
slider_junction_at: int = 2  # starting position: blocks below the junction (the cut point)
slider_junction: str = "adapter"  # starting position: junction mode (shared | adapter | concat)
explore_nodes: int = 6  # edge nodes of the plan search
explore_cuts: str = "balanced"  # balanced: FLOP/count-balanced cuts only; all: every cut placement (slower)

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from fplstudy.views import teach
from fplstudy.config import make_config
from fplstudy.costs.search import explore
from fplstudy.facts.profiles import load_profiles

base = dict(config)
if topology:
    base["topology"] = topology  # devices and links from the site; plan nodes placed by the default rule
if smoke_test:
    base["max_train_samples"] = 200  # a seeded subset of digits: same plans, smaller numbers
    explore_nodes = min(explore_nodes, 2)
    explore_cuts = "balanced"
cfg = make_config(base)  # one line naming the key if a value is refused; cfg.nodes etc. are the defaults filled in
runs, table = teach.walk(base, cfg.nodes)  # one dry run per strategy of the walk (centralized on 1 node)
profiles = load_profiles()

# %% [markdown]
# ## The walk: from one node to FPL
#
# The same learning task shared in five ways (split learning in two variants), one after the other:
#
# 1. **Centralized**: one node does everything.
# 2. **Federated learning**: copy the model, split the data.
# 3. **Model parallelism**: split the model, keep the data.
# 4. **Split learning**: clients hold the head, a server holds the tail; **split-federated learning** is
#    split learning with parallel clients.
# 5. **FPL**: branches of data parallelism meeting a model-parallel trunk.
#
# For each, a sentence says what to look at, and a picture shows the plan: boxes are nodes (with the layers they
# hold and their device), grey tags the data shards, arrows the messages of one round, each labelled with its
# payload bytes. The table under it lists each node's costs per round.

# %%
for dry in runs:
    display(Markdown(f"### {teach.STRATEGY_NAMES[dry.plan.strategy]}"))
    teach.show_step(dry)

# %% [markdown]
# ## Side by side
#
# The same learning task, five ways. Communication, energy, time and the memory of the most loaded
# node pull in different directions: no strategy wins on every column.

# %%
display(HTML(teach.html_table(teach.readable_table(table.drop(columns="strategy")))))
teach.plot_walk(table)
plt.show()

# %% [markdown]
# ## Your turn: move the sliders
#
# Choose the number of nodes, the number of branches, the cut point (how many layers sit below the
# junction), the junction mode, and the device and link profiles. Every move re-prices the FPL plan with
# the dry run and redraws its picture, its per-node energy and its place among the strategies above.
#
# The sliders only offer positions that are plans: the branches leave the other nodes to the trunk,
# which needs at least one layer per node above the cut, and a `concat` junction splits the image rows
# evenly among the branches. When one slider limits another, the line under the sliders says how; a
# move that leaves another slider out of range moves it to the nearest value that fits, and says so.
# (The sliders need a live kernel; run headless, the cell shows the starting position as a picture.)

# %%
panel = teach.slider_panel(base, table, devices=sorted(profiles.devices), links=sorted(profiles.links),
                           nodes=slider_nodes, branches=slider_branches, junction_at=slider_junction_at,
                           junction=slider_junction, device=cfg.device, link=cfg.link)
display(panel)

# %% [markdown]
# ## Searching every plan
#
# Instead of moving sliders by hand, `fplstudy.costs.search` enumerates every valid plan for a node count
# (strategies, branches, stages, cut points, junction modes, sync), prices each with the dry run and
# keeps the **Pareto front**: the plans that no other plan beats on energy, bytes, makespan and
# per-node memory at once. (`fplstudy explore --set nodes=8 --out front.csv` does the same from the
# command line; the `set` column of the CSV trains a front plan with `fplstudy run`.)
#
# On a topology (the `topology` parameter, for example `fog_wifi`: 8 Raspberry Pis on Wi-Fi behind two
# Jetson gateways and a mini-PC server), a plan is also a *placement*: which node of the site holds which
# part. The search then also tries every placement of the stages and the aggregator (the data stays where
# it is), and its energy counts what the gateways spend forwarding messages (`energy_j_site`).

# %%
# on a topology the search also places the plan's nodes (data owners stay where the data is)
res = explore(base, explore_nodes, cuts=explore_cuts, search_placement="topology" in base,
              max_placements=20 if smoke_test else 200)
display(Markdown(f"{len(res.plans)} valid plans priced in {res.seconds:.1f} s; {len(res.front)} on the Pareto "
                 f"front; its first 15 plans:"))
teach.plot_front(res)
plt.show()
display(HTML(teach.html_table(teach.front_table(res, placement="topology" in base))))

# %% [markdown]
# ## At the paper's scale: ResNet-18 on CIFAR-10, priced without the data
#
# Costs do not depend on the pixels, so a dry run can price ResNet-18 on CIFAR-10's declared shape
# (50,000 training images of 3×32×32, 5,000 per class) without the files. FL ships the parameters,
# 4 bytes × (11.17 M parameters + BatchNorm statistics) up and down per client per round, however much
# data there is; MP, SL and FPL ship activations and gradients for every sample, so their bytes grow
# with the data. The figure draws bytes per epoch against the training-set size, beside the digits CNN:
# right of a dotted line, FL ships less. The sentences under it say, from these dry runs, where the
# lines cross and by how much FL wins or loses on each training set. (The whole study at this scale,
# VGG-11, ResNet-18 and MobileNetV2 at 2 to 16 nodes: `python -m fplstudy.study.scale`, DVC stage `scale`.)

# %%
from fplstudy.study import scale
from fplstudy.views.scale import draw_crossover

samples = (100, 1000) if smoke_test else (100, 1000, 10_000, 50_000)  # ResNet-18 training-set sizes priced
large, crossing, points = scale.compare_to_reference("resnet18", "cifar10", nodes=cfg.nodes, samples=samples,
                                                     device=cfg.device, server_device=cfg.server_device, link=cfg.link)
draw_crossover(crossing, points, large)
plt.show()
display(Markdown(scale.reference_lesson(points)))

# %% [markdown]
# ## What did we learn
#
# Every number below comes from the dry runs above.

# %%
display(Markdown(teach.lessons(table, res)))
