"""The user-facing configuration of one learning task: flat keys, validated before any work.

A :class:`Config` is what a user writes (YAML file, ``--set key=value``, notebook parameters). It is
resolved into a :class:`fplstudy.plan.Plan` (who holds which layers, which data, who syncs) by
:func:`fplstudy.plan.resolve`. Both are plain data; nothing here trains.

Validation is done by pydantic (strict types, unknown keys refused); every error is re-raised as a
:class:`ConfigError` whose one-line message names the key, the offending value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

STRATEGIES = ("centralized", "fl", "mp", "sl", "sfl", "fpl")
PARTITIONS = ("iid", "dirichlet", "shards", "features")
JUNCTIONS = ("shared", "adapter", "concat")
SYNCS = ("none", "fedavg", "relay")


class ConfigError(ValueError):
    """A configuration that cannot be run. The message names the key, the value and the fix."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config key '{key}': got {value!r}; {allowed}")


class Config(BaseModel):
    """One learning task. Every field has a default; ``fplstudy keys`` lists them.

    Units and meanings are in the trailing comments; ``None`` means "derived from the strategy".
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # --- what is learned
    strategy: Literal["centralized", "fl", "mp", "sl", "sfl", "fpl"] = "fpl"
    dataset: str = "digits"  # digits (embedded, offline) | mnist | fashion_mnist | cifar10
    data_dir: Optional[str] = None  # torchvision root folder; None = <repo>/data or ./data
    download: bool = False  # let torchvision download a missing dataset (needs network)
    model: Optional[str] = None  # None = the dataset's default (digits: cnn, mnist: lenet5, cifar10: resnet18)
    max_train_samples: Optional[int] = None  # take a seeded subset of the training set (smoke runs)
    test_fraction: float = 0.2  # digits only: held-out fraction of the 1797 samples

    # --- who does it
    nodes: int = 4  # edge nodes in the plan (how it is read depends on the strategy, see plan.py)
    branches: Optional[int] = None  # D, copies of the lower part trained on separate shards
    branch_stages: int = 1  # S_b, nodes that hold one branch (model parallel inside a branch)
    trunk_stages: Optional[int] = None  # S_t, nodes that hold the trunk; None = the nodes left over
    junction: Optional[Literal["shared", "adapter", "concat"]] = None  # None = adapter for fpl, else shared
    junction_at: Optional[int] = None  # blocks below the junction; None = the model's default head size
    branch_cuts: Optional[list[int]] = None  # absolute block indices where branch stages start (S_b - 1)
    trunk_cuts: Optional[list[int]] = None  # absolute block indices where trunk stages start (S_t - 1)
    cut_by: Literal["flops", "count"] = "flops"  # default cuts balance forward FLOPs or block counts

    # --- data partition
    partition: Literal["iid", "dirichlet", "shards", "features"] = "iid"
    alpha: float = 0.5  # Dirichlet concentration (> 0; small = more skewed)
    classes_per_node: int = 2  # shards: classes held by each branch

    # --- optimisation
    rounds: int = 20  # communication rounds
    local_epochs: int = 1  # passes over its shard by each branch per round
    batch_size: int = 32  # samples per step per branch
    micro_batches: int = 1  # micro-batches per batch (pipelining inside a branch)
    lr: float = 0.05  # SGD learning rate
    momentum: float = 0.0  # SGD momentum (state kept per node, never averaged)
    weight_decay: float = 0.0  # SGD L2 penalty
    seed: int = 0  # every random choice (split, partition, init, shuffling) derives from it

    # --- reconciliation of replicated parts
    sync: Optional[Literal["none", "fedavg", "relay"]] = None  # None = the strategy's own
    sync_every: int = 1  # rounds between syncs

    # --- costing (profiles are data files, see profiles.py)
    device: str = "rpi4"  # device profile of data owners and branch stage holders
    server_device: str = "minipc"  # device profile of trunk stage holders and the aggregator
    link: str = "wifi5"  # link profile of every link
    node_devices: Optional[dict[str, str]] = None  # per-node override, {node name: device profile}
    profiles_file: Optional[str] = None  # YAML file with extra or overriding device/link profiles
    pipeline: Literal["sequential", "gpipe", "1f1b"] = "sequential"  # makespan of a branch's stages
    network: Literal["links", "star"] = "links"  # links: a link per node pair; star: one half-duplex interface per node (makespan.py)

    # --- the distributed backend (ignored by the simulated one)
    distributed_timeout_s: float = 60.0  # longest wait for the rendezvous, one message or one collective (s)
    testbed_time_scale: Optional[float] = None  # emulated backend: common slow-down of compute and links (>= 1); None = smallest that fits
    testbed_cpu: Literal["cfs", "dilate"] = "cfs"  # emulated backend: slow a node's CPU by CFS quota, or stretch each chunk (testbed.py)


def _describe_allowed(err: dict) -> str:
    etype = err["type"]
    if etype == "extra_forbidden":
        return "unknown key; known keys: " + ", ".join(Config.model_fields)
    msg = err["msg"]
    return msg[0].lower() + msg[1:] if msg else "invalid value"


def make_config(values: dict[str, Any] | None = None) -> Config:
    """Validate a mapping of keys into a :class:`Config`.

    Args:
        values: key → value; missing keys take their defaults.

    Returns:
        The validated config.

    Raises:
        ConfigError: on the first unknown key or wrong type, naming key, value and what is allowed.
    """
    values = dict(values or {})
    try:
        cfg = Config(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "?"
        raise ConfigError(key, err.get("input"), _describe_allowed(err)) from None
    _check_ranges(cfg)
    return cfg


def _check_ranges(cfg: Config) -> None:
    positive = ("nodes", "branch_stages", "rounds", "local_epochs", "batch_size", "micro_batches",
                "sync_every", "classes_per_node")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(key, getattr(cfg, key), "must be an integer >= 1")
    for key in ("branches", "trunk_stages", "max_train_samples"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(key, value, "must be an integer >= 1 (or left out to derive it)")
    if cfg.junction_at is not None and cfg.junction_at < 0:
        raise ConfigError("junction_at", cfg.junction_at, "must be >= 0 (blocks below the junction)")
    if not cfg.alpha > 0:
        raise ConfigError("alpha", cfg.alpha, "the Dirichlet concentration must be > 0 (e.g. 0.5)")
    if not cfg.lr > 0:
        raise ConfigError("lr", cfg.lr, "the learning rate must be > 0 (e.g. 0.05)")
    for key in ("momentum", "weight_decay"):
        if getattr(cfg, key) < 0:
            raise ConfigError(key, getattr(cfg, key), "must be >= 0")
    if not 0 < cfg.test_fraction < 1:
        raise ConfigError("test_fraction", cfg.test_fraction, "must lie strictly between 0 and 1")
    if not 0 < cfg.distributed_timeout_s <= 86400:  # also refuses nan
        raise ConfigError("distributed_timeout_s", cfg.distributed_timeout_s,
                          "must be > 0 and <= 86400 seconds (it must exceed the longest wait a round imposes)")
    if cfg.testbed_time_scale is not None and not 1 <= cfg.testbed_time_scale <= 1000:  # also refuses nan
        raise ConfigError("testbed_time_scale", cfg.testbed_time_scale,
                          "must be between 1 and 1000 (or left out: the smallest scale that fits the machine)")
    if cfg.micro_batches > cfg.batch_size:
        raise ConfigError("micro_batches", cfg.micro_batches,
                          f"must be <= batch_size ({cfg.batch_size})")


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML (``4`` → int, ``[2, 5]`` → list).

    Raises:
        ConfigError: when a pair has no ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(pair, pair, "write overrides as key=value, e.g. --set nodes=6")
        value = yaml.safe_load(raw) if raw.strip() else None
        out[key.strip()] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
                ) -> Config:
    """Read a YAML config file (optional), apply overrides, validate.

    Args:
        path: YAML file holding a mapping of config keys, or None for defaults.
        overrides: ``["key=value", ...]`` strings or a dict applied on top of the file.

    Returns:
        The validated config.

    Raises:
        ConfigError: for a missing/unreadable file or any invalid key or value.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("CONFIG", str(path), "no such file; give a YAML file of config keys")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError("CONFIG", str(path), "the file must hold a mapping of config keys")
        values.update(loaded)
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        values.update(parse_overrides(overrides))
    return make_config(values)
