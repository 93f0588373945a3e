"""The user-facing configuration of one learning task: flat keys, validated before any work.

A :class:`Config` is what a user writes (YAML file, ``--set key=value``, notebook parameters). It is
resolved into a :class:`fplstudy.plans.plan.Plan` (who holds which layers, which data, who syncs) by
:func:`fplstudy.plans.plan.resolve`. Both are plain data; nothing here trains.

Validation is done by pydantic (strict types, unknown keys refused); every error is re-raised as a
:class:`ConfigError` whose one-line message names the key, the offending value and what is allowed.
Every YAML a user gives (a config file, a ``--set`` value, a ``profiles_file``) is read by
:func:`parse_yaml` / :func:`read_yaml_file`: safe tags only, one document, UTF-8, and no key twice in a
mapping.

Limits that need no data live here (finite floats, the seed range, sanity bounds on ``rounds`` and
``local_epochs``, ``threads`` at most 4 per usable CPU, paths a file system can take); a YAML file is at most
:data:`MAX_YAML_BYTES` and a YAML integer at most :data:`MAX_INT_DIGITS` digits; limits derived from the dataset and the model (branches, ``test_fraction``,
``batch_size``, batch steps) are checked by :func:`fplstudy.plans.plan.resolve`. So is the ``strategy``
name: the strategies are :mod:`fplstudy.plans.strategies`'s registry, which reads this module (never the
other way round), and :func:`fplstudy.plans.strategies.preset` refuses a name it does not hold.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

JUNCTIONS = ("shared", "adapter", "concat")  # the junction modes (DESIGN.md, "Vocabulary")


SEED_MAX = 2**32 - 1  # numpy.random.seed's and scikit-learn's random_state range is 0..2**32 - 1
FLOAT32_MAX = 3.4028234663852886e38  # torch's SGD casts lr and weight_decay to float32 (overflow above)
MAX_ROUNDS = 100_000  # sanity bound: far beyond any FL study (hundreds to a few thousand rounds)
MAX_SLOWDOWN = 1000.0  # sanity bound of straggler_slowdown: a straggler at most a thousand times slower
MAX_LOCAL_EPOCHS = 10_000  # sanity bound on passes over a shard per round
THREADS_PER_CPU = 4  # bound of the threads key per usable CPU: beyond, torch's threads only wait for a core

class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, and an integer too long for Python's ``int``-to-text limit (4300 digits) shown
    by its size: ``repr`` itself raises ValueError for it."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 4000:
            return f"<an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)


_REPR = _ShortRepr()  # bounded repr: a value in a message stays one short line (no YAML alias bomb)
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 8, 8, 8, 8
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 200, 200, 60
SHORT_REPR_CHARS = 300
SHORT_KEY_CHARS = 100  # a key in a message (a user's typo may be any length)


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a bounded size (nesting, items, characters) and kept on one line."""
    text = _REPR.repr(value).replace("\n", "\\n")
    return text if len(text) <= SHORT_REPR_CHARS else text[:SHORT_REPR_CHARS] + "..."


def short_key(key: Any) -> str:
    """A key as a message names it: its text, cut to :data:`SHORT_KEY_CHARS` and kept on one line."""
    text = " ".join(str(key).split()) if isinstance(key, str) else short_repr(key)
    return text if len(text) <= SHORT_KEY_CHARS else text[:SHORT_KEY_CHARS - 3] + "..."


def _rebuild_error(cls: type, args: tuple, state: dict[str, Any]) -> BaseException:
    """An exception of ``cls`` with ``args`` and attributes ``state``, made without calling its ``__init__``."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class PicklableError:
    """Mixin of every exception of the package: it crosses a process boundary whole (a worker process of
    the study's pool, a node process of the distributed backend), message and attributes, whatever its
    ``__init__`` takes. Python rebuilds an unpickled exception by calling ``cls(*args)``, which fails for
    an ``__init__`` whose arguments are not the message alone; this rebuilds it from its state instead."""

    def __reduce__(self):
        return _rebuild_error, (type(self), self.args, dict(self.__dict__))


class ConfigError(PicklableError, ValueError):
    """A configuration that cannot be run. The message names the key, the value and the fix."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config key '{short_key(key)}': got {short_repr(value)}; {allowed}")


class StudyError(PicklableError, ValueError):
    """A study's parameters (``params.yaml``) that cannot be run; the message names the entry, the value
    and the fix."""


# --------------------------------------------------------------------------- YAML the user gives

class YamlError(PicklableError, ValueError):
    """YAML that cannot be used. ``reason`` is one line (where, what, the fix); for a key given twice
    ``key`` is its dotted path and ``value`` the second value."""

    def __init__(self, reason: str, key: str | None = None, value: Any = None):
        self.reason, self.key, self.value = reason, key, value
        super().__init__(reason)


_MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_YAML_VALUES = 100_000  # values a document may expand to, aliases repeated (params.yaml: a few thousand)
MAX_YAML_BYTES = 16 * 2**20  # a YAML file a user gives: the largest the project reads (params.yaml) is ~10 kB


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the scalars of the YAML 1.2 core schema, as a person means them and as
    DVC (ruamel.yaml, YAML 1.2) reads ``params.yaml``: ``1e-3`` is a number, ``010`` is ten, ``1:30`` is
    text, only ``true``/``false`` are booleans (``yes``, ``no``, ``on``, ``off`` are text); octal is
    ``0o17``, hexadecimal ``0x1f``."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                    r"|\.(?:nan|NaN|NAN))$")
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


MAX_INT_DIGITS = 1000  # decimal digits of a YAML integer (any key's bound is far below; Python prints <= 4300)


def _scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode, pattern: re.Pattern, what: str) -> str:
    """The text of a scalar read as ``what``; refused where it is not one (an explicit tag, ``!!int 1.5``, on
    text of another kind: the implicit resolvers match the patterns already)."""
    text = loader.construct_scalar(node)
    if not isinstance(text, str) or not pattern.match(text):
        raise YamlError(f"tagged {node.tag.rsplit(':', 1)[-1]} at {_where(node.start_mark)} but "
                        f"{short_repr(text)} is not {what}; remove the tag or fix the value")
    return text


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = _scalar(loader, node, _INT, "an integer (YAML 1.2: 10, -3, 0o17, 0x1f)")
    digits = len(text.lstrip("+-")) - (2 if text.startswith(("0o", "0x")) else 0)
    if digits > MAX_INT_DIGITS:  # int() refuses 4300+ decimal digits with a ValueError; no key needs a tenth of it
        raise YamlError(f"an integer of {digits} digits at {_where(node.start_mark)}, more than {MAX_INT_DIGITS}; "
                        f"give a number a config can use")
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # "010" is ten: YAML 1.2 has no leading-zero octal


def _yaml12_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = _scalar(loader, node, _FLOAT, "a number (YAML 1.2: 0.5, 1e-3, .inf, .nan)").lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if text == ".nan" else float(text)


def _yaml12_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return _scalar(loader, node, _BOOL, "a boolean (YAML 1.2: true or false)").lower() == "true"


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _yaml12_float)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:bool", _yaml12_bool)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is repeated (memoized per node, so counting is
    linear in the document while the expansion may be exponential)."""
    visiting: set[int] = set()  # a node inside itself (a recursive alias) counts once
    todo = [(node, False)]
    while todo:
        item, ready = todo.pop()
        if id(item) in sizes:
            continue
        children = ([c for pair in item.value for c in pair] if isinstance(item, yaml.MappingNode)
                    else item.value if isinstance(item, yaml.SequenceNode) else [])
        if ready:
            sizes[id(item)] = min(1 + sum(sizes.get(id(c), 0) for c in children), 1 << 62)
        elif id(item) not in visiting:
            visiting.add(id(item))
            todo.append((item, True))
            todo += [(c, False) for c in children if id(c) not in sizes and id(c) not in visiting]
    return sizes[id(node)]


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"


def _check_unique_keys(loader: yaml.SafeLoader, node: yaml.Node, path: tuple[str, ...], seen: set[int]) -> None:
    """Refuse a mapping that gives a key twice (PyYAML keeps the last one silently). YAML merge keys
    (``<<``) may be overridden by an explicit key, as YAML 1.1 says. Shared (aliased) nodes are
    visited once."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                _check_unique_keys(loader, value_node, path, seen)
                continue
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if name is not None:
                if (key_node.tag, name) in first:
                    try:
                        value = loader.construct_object(value_node, deep=True)
                    except yaml.YAMLError:
                        value = getattr(value_node, "value", "?")
                    raise YamlError(f"given twice (at {_where(first[key_node.tag, name].start_mark)} and at "
                                    f"{_where(key_node.start_mark)}); a key may appear once: keep one",
                                    ".".join((*path, name)), value)
                first[key_node.tag, name] = key_node
            _check_unique_keys(loader, value_node, (*path, str(name)), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(loader, item, (*path, str(i)), seen)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = f"{exc.problem} at {_where(exc.problem_mark)}" if exc.problem else f"at {_where(exc.problem_mark)}"
        if exc.context and exc.context_mark is not None and _where(exc.context_mark) != _where(exc.problem_mark):
            return f"not valid YAML: {exc.context} at {_where(exc.context_mark)}: {problem}"
        return f"not valid YAML: {' '.join(filter(None, (exc.context, problem)))}"
    return "not valid YAML: " + str(exc).splitlines()[0]


def parse_yaml(text: str) -> Any:
    """Parse one YAML document the way fplstudy reads every YAML a user gives.

    Safe tags only (a ``!!python/…`` tag is refused, never executed), scalars as the YAML 1.2 core schema
    reads them (``1e-3`` a number, ``010`` ten, ``yes`` text: :class:`_Yaml12Loader`), exactly one
    document, no key twice in a mapping, and at most :data:`MAX_YAML_VALUES` values once aliases are
    repeated.

    Args:
        text: the YAML text.

    Returns:
        The parsed value (None for an empty document).

    Raises:
        YamlError: with a one-line reason naming the line and column, or the duplicated key.
    """
    loader = None
    try:
        loader = _Yaml12Loader(text)  # refuses unprintable characters already
        node = loader.get_single_node()
        if node is None:
            return None
        if (size := _expanded_size(node, {})) > MAX_YAML_VALUES:
            raise YamlError(f"expands to {size:,} values once its aliases (*name) are repeated, more than "
                            f"{MAX_YAML_VALUES:,}; write the values out or repeat fewer aliases")
        _check_unique_keys(loader, node, (), set())
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        if isinstance(exc, yaml.constructor.ConstructorError):
            fix = "remove the tag: only plain values are read (numbers, strings, lists, mappings)"
        elif isinstance(exc, yaml.composer.ComposerError) and "single document" in str(exc.context):
            fix = "keep one document (no '---' line)"
        else:
            fix = "fix the syntax (quote strings, close brackets)"
        raise YamlError(f"{_yaml_reason(exc)}; {fix}") from None
    except RecursionError:
        raise YamlError("not valid YAML: nested too deeply for a config (lists inside lists "
                        "hundreds deep); write flat values") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_file(path: str | Path) -> Any:
    """Read a UTF-8 YAML file with :func:`parse_yaml`.

    Raises:
        YamlError: the file is missing, a folder, unreadable, larger than :data:`MAX_YAML_BYTES`, not UTF-8, or
            not valid YAML.
    """
    path = Path(path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte in it
        why = exc.strerror if isinstance(exc, OSError) else "a NUL byte in the name"
        raise YamlError(f"not a usable path ({why}); give a YAML file") from None
    if is_dir:
        raise YamlError("is a folder; give a YAML file")
    if not is_file:
        raise YamlError("no such file; give a YAML file")
    try:
        if (size := path.stat().st_size) > MAX_YAML_BYTES:
            raise YamlError(f"is {size:,} bytes, more than {MAX_YAML_BYTES // 2**20} MiB; a config, profiles, "
                            f"topology or params file is a few kB: give the right file")
        raw = path.read_bytes()
    except OSError as exc:
        raise YamlError(f"cannot be read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as "
                        f"UTF-8") from None
    return parse_yaml(text)


class Config(BaseModel):
    """One learning task. Every field has a default; ``fplstudy keys`` lists them.

    Units and meanings are in the trailing comments; ``None`` means "derived from the strategy".
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # --- what is learned
    strategy: str = "fpl"  # a name of fplstudy.plans.strategies.REGISTRY; checked where the plan is resolved
    dataset: str = "digits"  # digits, mnist5k (both offline) | mnist | fashion_mnist | cifar10
    data_dir: str | None = None  # torchvision root folder; None = <repo>/data or ./data
    download: bool = False  # let torchvision download a missing dataset (needs network)
    model: str | None = None  # None = the dataset's default (digits: cnn, mnist: lenet5, cifar10: resnet18)
    max_train_samples: int | None = None  # take a seeded subset of the training set (smoke runs)
    test_fraction: float = 0.2  # digits and mnist5k: held-out fraction (stratified, drawn with the seed)

    # --- who does it
    nodes: int = 4  # edge nodes in the plan (how it is read depends on the strategy, see plan.py)
    branches: int | None = None  # D, copies of the lower part trained on separate shards
    branch_stages: int = 1  # S_b, nodes that hold one branch (model parallel inside a branch)
    trunk_stages: int | None = None  # S_t, nodes that hold the trunk; None = the nodes left over
    junction: Literal["shared", "adapter", "concat"] | None = None  # None = adapter for fpl, else shared
    junction_at: int | None = None  # blocks below the junction; None = the model's default head size
    branch_cuts: list[int] | None = None  # absolute block indices where branch stages start (S_b - 1)
    trunk_cuts: list[int] | None = None  # absolute block indices where trunk stages start (S_t - 1)
    cut_by: Literal["flops", "count"] = "flops"  # default cuts balance forward FLOPs or block counts

    # --- data partition
    partition: Literal["iid", "dirichlet", "shards", "features"] = "iid"  # how the training set is split among branches: iid | dirichlet (label skew, alpha) | shards (classes_per_node) | features (every branch sees every sample, a slice of its rows)
    alpha: float = 0.5  # Dirichlet concentration (> 0; small = more skewed)
    classes_per_node: int = 2  # shards: classes held by each branch

    # --- optimisation
    rounds: int = 20  # communication rounds (at most, with stop_at_acc)
    stop_at_acc: float | None = None  # stop a run after the first round whose test accuracy (mean over branches) reaches this fraction, once min_rounds are done; None = train every round. The dry run prices every round
    min_rounds: int = 1  # rounds a run trains before stop_at_acc may stop it (a fixed budget every run reaches)
    local_epochs: int = 1  # passes over its shard by each branch per round
    batch_size: int = 32  # samples per step per branch (at most; see last_batch)
    last_batch: Literal["spread", "drop", "keep"] = "spread"  # an epoch of n samples that batch_size does not divide: spread (k = ceil(n / batch_size) batches of floor(n/k) or ceil(n/k) samples), drop (the n mod batch_size left over are left out, PyTorch's drop_last) or keep (a last, smaller batch, PyTorch's default)
    micro_batches: int = 1  # micro-batches per batch (pipelining inside a branch)
    lr: float = 0.05  # SGD learning rate
    momentum: float = 0.0  # SGD momentum (state kept per node, never averaged; see client_optimizer)
    weight_decay: float = 0.0  # SGD L2 penalty
    # FedAvg clients' optimizer state across a sync: reset = every client starts from the averaged
    # model with a fresh optimizer (no momentum carried over), as McMahan et al.'s and Flower's clients
    # do; keep = momentum buffers survive the sync. Only matters with momentum > 0 and sync=fedavg.
    client_optimizer: Literal["keep", "reset"] = "reset"  # FedAvg clients' optimizer state across a sync: reset | keep
    seed: int = 0  # every random choice (split, partition, init, shuffling) derives from it
    threads: int = Field(1, ge=0)  # torch CPU threads; 1 = one fixed summation order, 0 = torch's default; at most 4 per usable CPU
    accelerator: Literal["cpu", "cuda", "auto"] = "cpu"  # torch device that trains (not a device profile: the ledger prices the profiles whatever trains): cpu | cuda (refused where torch sees no CUDA device; deterministic algorithms) | auto (cuda where there is one, else cpu). The distributed backend trains on cpu

    # --- reconciliation of replicated parts
    sync: Literal["none", "fedavg", "relay"] | None = None  # None = the strategy's own
    sync_every: int = 1  # rounds between syncs

    # --- dynamics: who takes part in a round (dynamics.py)
    fraction_fit: float = 1.0  # share of the available branches that train in a round (Flower's fraction_fit), in (0, 1]
    dropout: float = 0.0  # probability that an edge-side node is absent for a round, in [0, 1]
    dropout_trace: str | None = None  # CSV file round,node of absences instead of dropout
    straggler_prob: float = 0.0  # probability that an edge-side node is a straggler for a round, in [0, 1]
    straggler_slowdown: float = 1.0  # a straggler's computes take this many times as long (>= 1)
    round_deadline_s: float | None = None  # seconds into a FedAvg round after which late branches are dropped

    # --- costing (profiles are data files, see profiles.py)
    device: str = "rpi4"  # device profile of data owners and branch stage holders
    server_device: str = "minipc"  # device profile of trunk stage holders and the aggregator
    link: str = "wifi5"  # link profile of every link
    node_devices: dict[str, str] | None = None  # per-node override, {node name: device profile}
    topology: str | None = None  # a topology file (or a shipped one's name): every node's device and the links (topology.py); None = the uniform site of the keys above
    placement: dict[str, str] | None = None  # with topology: {plan node: topology node}; nodes left out are placed by topology.place's rule
    forwarding: Literal["packet", "message"] = "packet"  # on a topology, how relays forward: packet by packet (bits / slowest hop) or whole messages (store-and-forward, Σ hops) (topology.py)
    profiles_file: str | None = None  # YAML file with extra or overriding device/link profiles
    pipeline: Literal["sequential", "gpipe", "1f1b"] = "sequential"  # makespan of a branch's stages
    network: Literal["links", "star", "inbox"] = "star"  # star: one half-duplex interface per node (what the emulated testbed validated on a Wi-Fi-like site); links: a link per node pair; inbox: links, a receive posted after the receiver's earlier work (makespan.py)

    # --- the distributed backend (ignored by the simulated one)
    distributed_timeout_s: float = 60.0  # longest wait for the rendezvous, one message or one collective (s)
    testbed_time_scale: float | None = None  # emulated backend: common slow-down of compute and links (>= 1); None = smallest that fits
    testbed_cpu: Literal["cfs", "dilate"] = "cfs"  # emulated backend: slow a node's CPU by CFS quota, or stretch each chunk (testbed.py)


PATH_KEYS = ("data_dir", "dropout_trace", "topology", "profiles_file")  # the keys that name a file or folder
NAME_MAX, PATH_MAX = 255, 4096  # bytes of one part of a path and of the whole (Linux's limits, most file systems')


def unusable_path(path: str | None) -> str | None:
    """Why ``path`` cannot name a file on any file system (a NUL byte, text that has no bytes, a part longer than
    :data:`NAME_MAX` or a whole longer than :data:`PATH_MAX` bytes), or None: the operating system would refuse
    it with an error that is not "no such file"."""
    if path is None:
        return None
    if "\x00" in path:
        return "it holds a NUL byte"
    try:
        raw = os.fsencode(path)
    except UnicodeError:
        return "it holds characters with no bytes in the file system's encoding"
    if len(raw) > PATH_MAX:
        return f"{len(raw)} bytes, more than the {PATH_MAX} a path may have"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return f"a part of {len(longest)} bytes, more than the {NAME_MAX} a file name may have"
    return None


def max_threads() -> int:
    """The most torch threads a config may ask for: 4 per CPU this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return THREADS_PER_CPU * cpus


def unknown_key(key: str) -> str:
    """The fix for an unknown config key: the nearest known keys, and where every key is listed (the whole list
    would make a line of 600 characters)."""
    near = difflib.get_close_matches(key, Config.model_fields, n=3, cutoff=0.6)
    return "unknown key; " + (f"did you mean {' or '.join(near)}? " if near else "") + "`fplstudy keys` lists every key"


def _describe_allowed(err: dict) -> str:
    etype = err["type"]
    if etype == "extra_forbidden":
        return unknown_key(str(err["loc"][0]) if err["loc"] else "")
    msg = err["msg"]
    return msg[0].lower() + msg[1:] if msg else "invalid value"


def key_descriptions() -> dict[str, str]:
    """Each config key's description: the trailing comment of its line in :class:`Config`, the one place keys
    are declared (read from the source, so the two never disagree)."""
    import inspect
    import io
    import tokenize

    out: dict[str, str] = {}
    name = None
    for tok in tokenize.generate_tokens(io.StringIO(inspect.getsource(Config)).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string in Config.model_fields:
            name = tok.string
        elif tok.type == tokenize.COMMENT and name is not None:
            out.setdefault(name, tok.string.lstrip("# ").strip())
        elif tok.type == tokenize.NEWLINE:
            name = None
    return out


def make_config(values: dict[str, Any] | None = None) -> Config:
    """Validate a mapping of keys into a :class:`Config`.

    Args:
        values: key → value; missing keys take their defaults.

    Returns:
        The validated config.

    Raises:
        ConfigError: on the first unknown key, wrong type or value out of range, naming key, value and
            what is allowed.
    """
    values = dict(values or {})
    for key in values:
        if not isinstance(key, str):
            raise ConfigError(short_repr(key), values[key], "config keys are names; `fplstudy keys` lists them")
    try:
        cfg = Config(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "?"
        raise ConfigError(key, err.get("input"), _describe_allowed(err)) from None
    _check_ranges(cfg)
    return cfg


def _check_ranges(cfg: Config) -> None:
    for key, field in Config.model_fields.items():  # every float key: nan and inf are refused by name
        value = getattr(cfg, key)
        if field.annotation is float and not math.isfinite(value):
            raise ConfigError(key, value, "must be a finite number")
    if not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError("seed", cfg.seed, f"must be an integer in 0..{SEED_MAX} (numpy's and "
                                            f"scikit-learn's seed range)")
    positive = ("nodes", "branch_stages", "rounds", "local_epochs", "batch_size", "micro_batches",
                "sync_every", "classes_per_node", "min_rounds")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(key, getattr(cfg, key), "must be an integer >= 1")
    for key in ("branches", "trunk_stages", "max_train_samples"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(key, value, "must be an integer >= 1 (or left out to derive it)")
    if cfg.min_rounds > cfg.rounds:
        raise ConfigError("min_rounds", cfg.min_rounds, f"must be at most rounds (now {cfg.rounds})")
    if cfg.stop_at_acc is not None and not (math.isfinite(cfg.stop_at_acc) and 0 < cfg.stop_at_acc <= 1):
        raise ConfigError("stop_at_acc", cfg.stop_at_acc, "give the test accuracy to stop at as a fraction in (0, 1], "
                                                          "e.g. 0.95, or leave it out to train every round")
    if not 0 < cfg.fraction_fit <= 1:
        raise ConfigError("fraction_fit", cfg.fraction_fit, "the share of branches that take part must lie in (0, 1]")
    if not 0 <= cfg.dropout <= 1:
        raise ConfigError("dropout", cfg.dropout, "a probability must lie in [0, 1]")
    if cfg.dropout_trace is not None and cfg.dropout > 0:
        raise ConfigError("dropout", cfg.dropout, "give dropout or dropout_trace, not both")
    if not 0 <= cfg.straggler_prob <= 1:
        raise ConfigError("straggler_prob", cfg.straggler_prob, "a probability must lie in [0, 1]")
    if not 1 <= cfg.straggler_slowdown <= MAX_SLOWDOWN:
        raise ConfigError("straggler_slowdown", cfg.straggler_slowdown,
                          f"a straggler's computes take this many times as long: give a number in [1, {MAX_SLOWDOWN:g}]")
    if cfg.round_deadline_s is not None and not (math.isfinite(cfg.round_deadline_s) and cfg.round_deadline_s > 0):
        raise ConfigError("round_deadline_s", cfg.round_deadline_s,
                          "give the seconds into a round after which late branches are dropped (> 0), or leave it out")
    if cfg.junction_at is not None and cfg.junction_at < 0:
        raise ConfigError("junction_at", cfg.junction_at, "must be >= 0 (blocks below the junction)")
    if not cfg.alpha > 0:
        raise ConfigError("alpha", cfg.alpha, "the Dirichlet concentration must be > 0 (e.g. 0.5)")
    if not 0 < cfg.lr <= FLOAT32_MAX:
        raise ConfigError("lr", cfg.lr, f"the learning rate must be > 0 (e.g. 0.05) and at most {FLOAT32_MAX:.4g} "
                                        f"(the optimizer works in float32)")
    if not 0 <= cfg.momentum < 1:
        raise ConfigError("momentum", cfg.momentum, "SGD momentum must lie in [0, 1) (e.g. 0.9); at 1 or "
                                                    "more past steps never fade and training diverges")
    if cfg.weight_decay < 0:
        raise ConfigError("weight_decay", cfg.weight_decay, "must be >= 0")
    # SGD's L2 term alone maps w to (1 - lr * wd) w (plus momentum): it is stable only for
    # lr * wd < 2 (1 + momentum) (heavy-ball stability on a quadratic); beyond, the weights grow
    # without bound whatever the data, and the run would blame lr.
    wd_max = 2 * (1 + cfg.momentum) / cfg.lr
    if cfg.weight_decay >= wd_max:
        raise ConfigError("weight_decay", cfg.weight_decay,
                          f"with lr={cfg.lr:g} and momentum={cfg.momentum:g} the decay alone makes the weights "
                          f"grow without bound; use weight_decay < 2 (1 + momentum) / lr = {wd_max:.4g}")
    for key, bound, why in (("rounds", MAX_ROUNDS, "communication rounds"),
                            ("local_epochs", MAX_LOCAL_EPOCHS, "passes over a shard per round")):
        if getattr(cfg, key) > bound:
            raise ConfigError(key, getattr(cfg, key), f"at most {bound} {why} (a sanity bound; a longer "
                                                      f"study is a series of runs)")
    if not 0 < cfg.test_fraction < 1:
        raise ConfigError("test_fraction", cfg.test_fraction, "must lie strictly between 0 and 1")
    if not 0 < cfg.distributed_timeout_s <= 86400:  # also refuses nan
        raise ConfigError("distributed_timeout_s", cfg.distributed_timeout_s,
                          "must be > 0 and <= 86400 seconds (it must exceed the longest wait a round imposes)")
    if cfg.testbed_time_scale is not None and not 1 <= cfg.testbed_time_scale <= 1000:  # also refuses nan
        raise ConfigError("testbed_time_scale", cfg.testbed_time_scale,
                          "must be between 1 and 1000 (or left out: the smallest scale that fits the machine)")
    for key in PATH_KEYS:
        problem = unusable_path(getattr(cfg, key))
        if problem:
            raise ConfigError(key, getattr(cfg, key), f"not a usable path ({problem}); give an existing "
                                                      + ("folder" if key == "data_dir" else "file"))
    if not 0 <= cfg.threads <= max_threads():
        raise ConfigError("threads", cfg.threads, f"give 1..{max_threads()} torch threads (at most 4 per CPU this "
                                                  f"process may use: more only queue for the cores), or 0 for "
                                                  f"torch's default")
    if cfg.micro_batches > cfg.batch_size:
        raise ConfigError("micro_batches", cfg.micro_batches,
                          f"must be <= batch_size ({cfg.batch_size})")


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML (``4`` → int, ``[2, 5]`` → list).

    A key given twice keeps the last value (the usual reading of repeated command-line options).

    Raises:
        ConfigError: when a pair has no ``=`` or its value is not valid YAML.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(pair, pair, "write overrides as key=value, e.g. --set nodes=6")
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except YamlError as exc:
            where = key.strip() + ("." + exc.key if exc.key else "")
            raise ConfigError(where, raw, f"{exc.reason}; e.g. --set trunk_cuts=[2,5]") from None
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
        try:
            loaded = read_yaml_file(path)
        except YamlError as exc:
            if exc.key is not None:
                raise ConfigError(exc.key, exc.value, f"{path}: {exc.reason}") from None
            raise ConfigError("CONFIG", str(path), exc.reason) from None
        loaded = {} if loaded is None else loaded
        if not isinstance(loaded, dict):
            raise ConfigError("CONFIG", str(path), "the file must hold a mapping of config keys")
        values.update(loaded)
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        values.update(parse_overrides(overrides))
    return make_config(values)

