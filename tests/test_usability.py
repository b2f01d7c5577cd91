"""What a new user meets: replaying saved plans, names, messages, output paths,
progress, repeatability, plots and memory.

Networks are small real nengo networks; command-line tests run the program as a
subprocess, several with different ``PYTHONHASHSEED`` values so that nengo-loihi
numbers the blocks of one network differently in each process.
"""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import warnings

import nengo
import numpy as np
import pytest
import scipy.sparse as sp

import partitioner
from partitioner.errors import InfeasibleError, PlanError
from partitioner.graph import TrafficGraph
from partitioner.plan import Plan
from partitioner.synthetic import random_graph

#: A network with unlabeled objects, PES learning (nengo-loihi adds a Node for the
#: error) and an EnsembleArray whose passthrough nodes nengo-loihi removes, creating
#: decode-neuron blocks in an order that changes between processes.
REPLAY_NET = """
import nengo
import numpy as np


def build():
    with nengo.Network(seed=3) as net:
        stim = nengo.Node(lambda t: np.sin(6 * t))
        a = nengo.Ensemble(40, 1)
        b = nengo.Ensemble(30, 1)
        nengo.Connection(stim, a)
        learned = nengo.Connection(a, b, learning_rule_type=nengo.PES(1e-4))
        error = nengo.Ensemble(30, 1)
        nengo.Connection(b, error)
        nengo.Connection(a, error, transform=-1)
        nengo.Connection(error, learned.learning_rule)
        order = 4
        memory = nengo.networks.EnsembleArray(20, order)
        nengo.Connection(stim, memory.input, transform=np.ones((order, 1)) * 0.1)
        recur = np.eye(order) + 0.1 * np.tril(np.ones((order, order)), -1)
        nengo.Connection(memory.output, memory.input, transform=recur, synapse=0.1)
        hidden = nengo.Ensemble(60, order)
        nengo.Connection(memory.output, hidden)
        nengo.Connection(hidden, b, function=lambda x: x[0])
    return net
"""

REPLAY_CHECK = """
import sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
import replay_net
from partitioner import PlanAllocator
from partitioner.extract import build_model
from partitioner.nxsdk_standin import build_on_standin

model = build_model(replay_net.build())
allocator = PlanAllocator(sys.argv[2])
board = allocator(model, 2)
nxsdk = build_on_standin(board)
print("replayed", len(nxsdk.cores()), "cores")
"""


def run(args, seed=0, check=True, cwd=None, env=None):
    """Run a command with ``PYTHONHASHSEED=seed``; returns the CompletedProcess."""
    full_env = dict(os.environ, PYTHONHASHSEED=str(seed), **(env or {}))
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=900, env=full_env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def cli(*args, **kwargs):
    return run([sys.executable, "-m", "partitioner.cli", *args], **kwargs)


def permuted(graph, order, key_shift=0):
    """``graph`` with block ``order[i]`` as block ``i`` and config keys renumbered."""
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)

    def keys(m):
        m = sp.csr_matrix(m)[order]
        n_keys = m.shape[1]
        if n_keys and key_shift:
            m = m[:, (np.arange(n_keys) + key_shift) % n_keys]
        return m

    return TrafficGraph(
        labels=[graph.labels[i] for i in order], sources=[graph.sources[i] for i in order],
        resources=graph.resources[order], shared_synapse_bits=graph.shared_synapse_bits[order],
        configs={k: keys(m) for k, m in graph.configs.items()},
        core_key=graph.core_key[order], noise_key=graph.noise_key[order],
        learning=graph.learning[order], pop_sender=graph.pop_sender[order],
        pop16_in_limit=graph.pop16_in_limit[order],
        axons=graph.axons[order][:, order], spikes=graph.spikes[order][:, order],
        input_labels=list(graph.input_labels), input_axons=graph.input_axons[:, order],
        input_spikes=graph.input_spikes[:, order], dt=graph.dt, rates=graph.rates,
    )


# ====================================================== 1. saved plans replay
@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay")
    (path / "replay_net.py").write_text(REPLAY_NET)
    (path / "check.py").write_text(REPLAY_CHECK)
    return path


def test_fingerprint_ignores_block_order_and_key_numbers():
    graph = random_graph(400, seed=4)
    order = np.random.default_rng(0).permutation(graph.n_blocks)
    shuffled = permuted(graph, order, key_shift=5)
    assert shuffled.fingerprint() == graph.fingerprint()
    assert "0x" not in graph.fingerprint()


def test_plan_maps_onto_the_same_model_numbered_differently():
    graph = random_graph(400, seed=4)
    plan = partitioner.partition(graph, n_chips=3, spread=True)
    order = np.random.default_rng(1).permutation(graph.n_blocks)
    shuffled = permuted(graph, order)
    saved = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    matched = saved.matched_to(shuffled)
    # Block i of the shuffled graph is block order[i] of the original.
    assert np.array_equal(matched.block_chip, plan.block_chip[order])
    assert np.array_equal(matched.block_core, plan.block_core[order])
    assert partitioner.evaluate(shuffled, matched).interchip_spikes == pytest.approx(
        partitioner.evaluate(graph, plan).interchip_spikes)
    with pytest.raises(PlanError, match="another order"):
        saved.check_matches(shuffled)


def test_block_order_ignores_block_and_key_numbers():
    """The canonical order names the blocks of one model alike however they and
    their config keys are numbered (keys renumbered alike in the kinds that share
    them: a block's own and widened synapse formats)."""
    from partitioner.identity import block_order

    graph = random_graph(400, seed=4)
    order = np.random.default_rng(2).permutation(graph.n_blocks)
    shuffled = permuted(graph, order)
    swap = {k: sp.csr_matrix(m)[:, np.r_[1, 0, 2:m.shape[1]]]  # keys 0 and 1 trade ids
            for k, m in shuffled.configs.items()}
    shuffled = dataclasses.replace(shuffled, configs=swap)
    mine, theirs = block_order(graph), block_order(shuffled)
    assert mine.exact and theirs.exact
    assert mine.digest == theirs.digest
    # Block i of the shuffled graph is block order[i] of the original.
    assert np.array_equal(mine.mapping(theirs)[order], np.arange(graph.n_blocks))
    assert np.array_equal(mine.blocks[mine.ranks], np.arange(graph.n_blocks))


def test_reordered_moves_every_field_with_its_block():
    from partitioner.identity import reordered

    graph = random_graph(300, seed=5)
    n = graph.n_blocks
    order = np.random.default_rng(3).permutation(n)
    moved = reordered(graph, order)
    assert moved.labels == [graph.labels[i] for i in order]
    assert np.array_equal(moved.resources, graph.resources[order])
    both = np.ix_(order, order)
    for name in ("axons", "spikes", "out_entries", "interchip_entries", "synops"):
        assert np.array_equal(getattr(moved, name).toarray(),
                              getattr(graph, name).toarray()[both]), name
    for kind, m in graph.configs.items():
        assert np.array_equal(moved.configs[kind].toarray(), m.toarray()[order]), kind
    assert np.array_equal(moved.input_axons.toarray(),
                          graph.input_axons.toarray()[:, order])
    # And back: the original graph, entry for entry.
    back = reordered(moved, np.argsort(order))
    for name, value in vars(graph).items():
        other = getattr(back, name)
        if sp.issparse(value):
            assert (value != other).nnz == 0, name
        elif isinstance(value, dict):
            assert all((value[k] != other[k]).nnz == 0 for k in value), name
        elif isinstance(value, np.ndarray):
            assert np.array_equal(value, other), name
        else:
            assert value == other, name
    with pytest.raises(ValueError, match="permutation"):
        reordered(graph, np.zeros(n, dtype=int))


def test_a_different_model_is_refused_with_what_differs():
    def net(n_neurons, connect):
        with nengo.Network(seed=0) as model:
            a = nengo.Ensemble(n_neurons, 1)
            b = nengo.Ensemble(50, 1)
            if connect:
                nengo.Connection(a, b)
        return model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = partitioner.extract(net(40, True), progress=False)
        bigger = partitioner.extract(net(60, True), progress=False)
        unconnected = partitioner.extract(net(40, False), progress=False)
    plan = partitioner.partition(base)
    with pytest.raises(PlanError, match=r"blocks' sizes"):
        plan.matched_to(bigger)
    with pytest.raises(PlanError, match=r"connections between blocks \(\d+ vs \d+"):
        plan.matched_to(unconnected)
    old = Plan.from_dict(dict(plan.to_dict(), fingerprint="0123456789abcdef"))
    with pytest.raises(PlanError, match="earlier version"):
        old.matched_to(base)


def test_saved_plans_replay_in_other_processes(replay_dir):
    """`partitioner plan` twice (two processes), `diff` says they are one model, and
    `PlanAllocator` replays the plan in a third process and builds it on the
    NxSDK stand-in: a network with unlabeled objects, PES learning and
    passthrough-removed connections."""
    net = replay_dir / "replay_net.py"
    a, b = replay_dir / "a.json", replay_dir / "b.json"
    cli("-q", "plan", net, "-o", a, "--chips", "2", seed=1)
    cli("-q", "plan", net, "-o", b, "--chips", "2", seed=2)
    labels = json.loads(a.read_text())
    assert labels["block_order"]["exact"]
    diff = cli("diff", a, b, seed=3)
    assert "blocks on another chip: 0 of" in diff.stdout
    assert "on another core: 0 of" in diff.stdout
    replayed = run([sys.executable, replay_dir / "check.py", replay_dir, a], seed=4)
    assert "replayed" in replayed.stdout


# ======================================================= 9. repeatable plans
def test_ilp_is_repeatable_when_it_stops_at_its_limit():
    """Two runs of the CP-SAT strategy on a model it cannot solve to optimality
    within its limit give the same plan (deterministic time, one worker)."""
    graph = random_graph(220, seed=3)
    plans = [partitioner.partition(graph, n_chips=4, spread=True, strategy="ilp",
                                   time_limit=0.5) for _ in range(2)]
    assert plans[0].info["status"] == "FEASIBLE"  # stopped at the limit
    assert all(p.info["repeatable"] for p in plans)
    assert np.array_equal(plans[0].layout, plans[1].layout)
    assert np.array_equal(plans[0].core_ptr, plans[1].core_ptr)
    assert np.array_equal(plans[0].core_chip, plans[1].core_chip)
    assert np.array_equal(plans[0].chip_position, plans[1].chip_position)


def test_placement_is_repeatable_when_it_stops_at_its_budget():
    """Placing 200 chips on Pohoiki Springs with a small budget stops the searches
    early; the same plan and seed still give the same positions."""
    from partitioner.placement import place_chips

    n = 200
    rng = np.random.default_rng(0)
    traffic = rng.exponential(5.0, (n, n)) * (rng.random((n, n)) < 0.05)
    np.fill_diagonal(traffic, 0.0)
    spikes = sp.csr_matrix(traffic)
    empty = sp.csr_matrix((n, 1), dtype=bool)
    graph = TrafficGraph(
        labels=[f"b{i}" for i in range(n)], sources=[f"s{i}" for i in range(n)],
        resources=np.ones((n, 4), dtype=np.int64), shared_synapse_bits=np.ones(n),
        configs={k: empty for k in ("compartment_cfgs", "vth_cfgs", "synapse_cfgs",
                                    "synapse_cfgs_shared", "stdp_pre_cfgs")},
        core_key=np.zeros(n), noise_key=np.full(n, -1), learning=np.zeros(n, bool),
        pop_sender=np.zeros(n, bool), pop16_in_limit=np.zeros(n),
        axons=(spikes > 0).astype(float), spikes=spikes, rates="synthetic",
    )
    plan = Plan.from_assignment(np.arange(n), np.arange(n), board="pohoiki_springs",
                                fingerprint=graph.fingerprint())
    runs = [place_chips(graph, plan, time_limit=0.5) for _ in range(2)]
    assert np.array_equal(runs[0], runs[1])


# ================================================ 2. names stay the functions
def test_extract_and_whatif_stay_functions_after_their_modules_load():
    """In a fresh process, importing the modules (as the allocator and the command
    line do) leaves ``partitioner.extract`` and ``partitioner.whatif`` callable."""
    code = textwrap.dedent("""
        import warnings
        warnings.simplefilter("ignore")
        import nengo
        from partitioner import MinCutAllocator  # imports partitioner.extract
        import partitioner.cli  # imports partitioner.whatif
        import partitioner
        from partitioner.extract import build_model  # the module still imports
        from partitioner.synthetic import random_graph
        with nengo.Network(seed=0) as net:
            nengo.Connection(nengo.Ensemble(20, 1), nengo.Ensemble(20, 1))
        graph = partitioner.extract(net, progress=False)
        records = partitioner.whatif(random_graph(50, seed=0), chips=[1], workers=1,
                                     progress=False)
        print(graph.n_blocks, len(records), callable(build_model))
    """)
    proc = run([sys.executable, "-c", code])
    assert proc.stdout.split() == ["3", "1", "True"]  # 2 ensembles, 1 decode block


# ========================================================== 3. METIS is quiet
def test_metis_messages_stay_off_stdout(capfd):
    import pymetis

    from partitioner.strategies.metis import _c_stdout_dropped

    xadj, adjncy = np.array([0, 1, 2]), np.array([1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with _c_stdout_dropped():
            pymetis.part_graph(5, xadj=xadj, adjncy=adjncy)  # too many parts
    print("after", flush=True)
    out, _ = capfd.readouterr()
    assert out == "after\n"


def test_metis_is_not_asked_for_trivial_cuts(capfd):
    from partitioner.strategies.metis import metis_call

    class Ctx:
        cores_per_chip, seed, spread = 128, 0, True

    pair = sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 0.0]]))
    parts = metis_call(pair, np.array([0.1, 0.1]), 5, Ctx(), {}, fill=0.95)
    assert sorted(parts.tolist()) == [0, 1]
    lonely = sp.csr_matrix((6, 6))
    parts = metis_call(lonely, np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.1]), 3, Ctx(), {},
                       fill=0.95)
    assert np.bincount(parts, minlength=3).tolist() == [2, 2, 2]
    assert capfd.readouterr().out == ""


# ===================================== 8 and 14. spreading over exactly k chips
SEVEN_BLOCKS = """
import nengo


def build():
    with nengo.Network(seed=0) as net:
        ens = [nengo.Ensemble(30, 1, label=f"e{i}") for i in range(7)]
        for pre, post in zip(ens[:-1], ens[1:]):
            nengo.Connection(pre.neurons, post.neurons, transform=0.01)
    return net
"""


def test_fewer_blocks_than_chips_is_said_plainly(tmp_path):
    path = tmp_path / "seven.py"
    path.write_text(SEVEN_BLOCKS)
    proc = cli("-q", "whatif", path, "--board", "nahuku32", "--chips", "6..12",
               "--workers", "1")
    assert "Cannot bisect" not in proc.stdout
    assert "***" not in proc.stdout + proc.stderr
    infeasible = [line for line in proc.stdout.splitlines() if "infeasible" in line]
    assert len(infeasible) == 5  # 8 .. 12 chips
    for line in infeasible:
        assert "7 block(s), fewer than the" in line and "Could not spread" not in line


def random_network(seed):
    """A random network of 8 to 15 ensembles, as many random networks were tried."""
    rng = np.random.RandomState(seed)
    n_ens = int(rng.randint(8, 16))
    with nengo.Network(seed=seed) as net:
        ens = [nengo.Ensemble(int(rng.randint(5, 200)), int(rng.randint(1, 3)))
               for _ in range(n_ens)]
        for _ in range(int(rng.randint(0, 2 * n_ens))):
            a, b = rng.randint(0, n_ens, 2)
            if a == b:
                continue
            if rng.rand() < 0.5:
                shape = (ens[b].n_neurons, ens[a].n_neurons)
                nengo.Connection(ens[a].neurons, ens[b].neurons,
                                 transform=rng.uniform(-1e-3, 1e-3, shape))
            else:
                shape = (ens[b].dimensions, ens[a].dimensions)
                nengo.Connection(ens[a], ens[b], transform=rng.uniform(-1, 1, shape))
    return net


def test_spread_fills_chips_a_cut_left_empty():
    """A 10-block network over 8 chips: METIS leaves chips empty; cores are split to
    fill them, and the plan obeys every rule and builds on the stand-in."""
    from partitioner.allocator import board_from_plan
    from partitioner.extract import build_model
    from partitioner.nxsdk_standin import build_on_standin
    from partitioner.packing import check_plan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(random_network(88))
    graph = partitioner.extract(model, progress=False)
    assert graph.n_blocks == 10
    plan = partitioner.partition(graph, n_chips=8, spread=True)
    assert plan.n_chips == 8
    check_plan(graph, plan)
    nxsdk = build_on_standin(board_from_plan(model, plan, graph))
    assert len(nxsdk.n2Chips) == 8


def test_spread_over_as_many_chips_as_blocks():
    graph = random_graph(12, seed=1, avg_degree=2)
    plan = partitioner.partition(graph, n_chips=12, spread=True)
    assert plan.n_chips == 12 and plan.n_cores == 12
    with pytest.raises(InfeasibleError, match="12 block"):
        partitioner.partition(graph, n_chips=13, spread=True)


# ======================================================= 4. output paths first
@pytest.mark.parametrize("args, expected", [
    (["compare", "mnist_conv", "--plot", "{tmp}/out.xyz"], "cannot write '.xyz' files"),
    (["compare", "mnist_conv", "--json", "{tmp}/missing/out.json"], "does not exist"),
    (["whatif", "mnist_conv", "--plot", "{tmp}/missing/out.png"], "does not exist"),
    (["plan", "mnist_conv", "-o", "{tmp}/missing/plan.json"], "mkdir -p"),
    (["plan", "mnist_conv", "-o", "{tmp}/plan.txt"], "ending in .json"),
    (["fit", "mnist_conv", "--json", "{tmp}"], "is a folder"),
])
def test_bad_output_paths_fail_before_any_work(tmp_path, args, expected):
    proc = cli(*[a.format(tmp=tmp_path) for a in args], check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partitioner: error: ")
    assert expected in lines[0]
    assert "loading scenario" not in proc.stderr  # nothing was built


# ================================================ 5. scenarios ship with it
def test_non_editable_install_runs_bundled_scenarios_from_anywhere(tmp_path):
    """`pip install .` (a wheel, not editable) into a fresh folder, then
    `partitioner compare spa_like` from another folder."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target,
         root])
    assert (target / "partitioner" / "scenarios" / "spa_like.py").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target)}
    where = run([sys.executable, "-c", "import partitioner; print(partitioner.__file__)"],
                cwd=elsewhere, env=env)
    assert where.stdout.startswith(str(target))
    script = target / "bin" / "partitioner"
    helped = run([sys.executable, script, "compare", "--help"], cwd=elsewhere, env=env)
    assert "spa_like" in helped.stdout and "mnist_conv" in helped.stdout
    proc = run([sys.executable, script, "-q", "compare", "spa_like"], cwd=elsewhere,
               env=env)
    assert "Scenario spa_like: 1000 blocks" in proc.stdout
    metis = next(line.split() for line in proc.stdout.splitlines()
                 if line.startswith("metis"))
    # The README's Quickstart says what this run shows.
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert f"we need 1 chip and {metis[2].rstrip('*')} cores" in readme
    assert metis[1].rstrip("*") == "1"


# ============================================= 6. checking without hardware
def test_check_builds_a_saved_plan_on_the_standin(replay_dir):
    plan = replay_dir / "checked.json"
    cli("-q", "plan", replay_dir / "replay_net.py", "-o", plan, seed=5)
    proc = cli("-q", "check", plan, seed=6)
    assert "every per-core table is within its size" in proc.stdout
    data = json.loads(plan.read_text())
    rows = [line for line in proc.stdout.splitlines() if line.split()[:1] == ["0"]]
    assert len(rows) == len(data["core_chip"])
    header = next(line for line in proc.stdout.splitlines() if "compartments" in line)
    assert "input axons" in header and "syn formats" in header


def test_check_builds_a_scenario_on_the_standin():
    proc = cli("-q", "check", "mnist_conv", "--top", "3")
    assert "build_board built 30 blocks" in proc.stdout
    assert "more cores (the 3 fullest shown" in proc.stdout


def test_check_refuses_a_plan_that_does_not_fit_its_model(replay_dir, tmp_path):
    plan = replay_dir / "checked2.json"
    cli("-q", "plan", replay_dir / "replay_net.py", "-o", plan)
    other = tmp_path / "other.py"
    other.write_text(SEVEN_BLOCKS)
    proc = cli("-q", "check", plan, "--scenario", other, check=False)
    assert proc.returncode == 2
    assert "made for another model" in proc.stderr


def readme_block(marker):
    """The README's Python block that contains ``marker``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        blocks = [b.split("```", 1)[0] for b in f.read().split("```python\n")[1:]]
    return next(b for b in blocks if marker in b)


def test_readme_simulator_recipe_runs_on_the_standin():
    """The README's recipe for nengo_loihi.Simulator(target="loihi") without NxSDK."""
    code = readme_block("standin_hardware")
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.sin)
        a = nengo.Ensemble(60, 1)
        nengo.Connection(stim, a)
        nengo.Connection(a, nengo.Ensemble(40, 1))
    scope = {"net": net}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "README.md", "exec"), scope)
    hw = scope["hw"]
    assert hw.board.summary() and hw.board.summary()[0]["compartments"] > 0


# ======================================================= 7. no silent waits
SLOW_SCENARIO = """
import time
import nengo


def build():
    time.sleep(7)
    with nengo.Network(seed=0) as net:
        nengo.Connection(nengo.Ensemble(20, 1), nengo.Ensemble(20, 1))
    return net
"""


def test_long_stages_report_elapsed_time(tmp_path):
    path = tmp_path / "slow.py"
    path.write_text(SLOW_SCENARIO)
    proc = cli("inspect", path)
    assert "[partitioner] loading scenario" in proc.stderr
    assert "... still loading scenario" in proc.stderr
    assert "done loading scenario" in proc.stderr


def test_whatif_progress_bar_ticks_while_a_point_runs():
    import io
    import time

    from partitioner.whatif import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(2, "what-if", stream=stream)
    with bar.ticking(0.05):
        time.sleep(0.3)
    assert stream.getvalue().count("\r") >= 3


# ============================================================ 13. docs drift
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_docstrings_point_only_to_files_in_the_repository():
    import re

    pattern = re.compile(r"``((?:\.\./|docs/|scenarios/|partitioner/)[\w./-]+)``")
    for folder, _, files in os.walk(os.path.join(ROOT, "partitioner")):
        for name in files:
            if not name.endswith(".py"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                text = f.read()
            for ref in pattern.findall(text):
                path = os.path.normpath(os.path.join(ROOT, ref))
                assert path.startswith(ROOT + os.sep), f"{name} points outside: {ref}"
                assert os.path.exists(path), f"{name} points to a missing file: {ref}"


def guide_fit_rows():
    with open(os.path.join(ROOT, "docs", "guide.md"), encoding="utf-8") as f:
        text = f.read()
    table = text.split("model    blocks  cores", 1)[1].split("```", 1)[0]
    return {line.split()[0]: line.split() for line in table.splitlines()[1:]
            if line.strip() and not line.startswith("-")}


def test_guide_fit_example_matches_a_run():
    proc = cli("-q", "fit", "resnet_unfitted")
    rows = {}
    for line in proc.stdout.splitlines():
        if line.split()[:1] in (["before"], ["after"]):
            rows[line.split()[0]] = line.split()
    documented = guide_fit_rows()
    assert rows["before"] == documented["before"]
    assert rows["after"] == documented["after"]
    assert documented["applied"][1:4] == rows["after"][1:4]


# ============================================================== 10. messages
def test_a_network_with_nothing_on_chip_is_said_so():
    from partitioner.errors import ExtractionError

    with nengo.Network() as net:
        nengo.Node(1.0)
    with pytest.raises(ExtractionError, match="nothing to place on Loihi"):
        partitioner.extract(net, progress=False)


def test_a_dense_connection_gets_one_piece_of_advice():
    from partitioner.errors import BlockTooLargeError

    with nengo.Network(seed=1) as net:
        wide = nengo.Ensemble(4200, 1, label="wide")
        narrow = nengo.Ensemble(10, 1, label="narrow")
        nengo.Connection(wide.neurons, narrow.neurons, transform=np.full((10, 4200), 1e-4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BlockTooLargeError) as info:
            partitioner.extract(net, progress=False)
    text = str(info.value)
    assert "No block shape helps" in text and "4200 input axons" in text
    assert "BlockShape(" not in text and "block_shape =" not in text
    assert info.value.suggestion is None


# ==================================================================== 15. pins
def pes_network():
    with nengo.Network(seed=3) as net:
        stim = nengo.Node(lambda t: np.sin(6 * t))
        a = nengo.Ensemble(40, 1, label="a")
        b = nengo.Ensemble(30, 1, label="b")
        nengo.Connection(stim, a)
        learned = nengo.Connection(a, b, learning_rule_type=nengo.PES(1e-4))
        error = nengo.Ensemble(30, 1, label="error")
        nengo.Connection(b, error)
        nengo.Connection(a, error, transform=-1)
        nengo.Connection(error, learned.learning_rule)
        memory = nengo.networks.EnsembleArray(20, 2, label="memory")
        nengo.Connection(a, memory.input[0])
        c = nengo.Ensemble(30, 1, label="c")  # on chip, unlike b (post of learning)
        through = nengo.Connection(memory.output, c, transform=[[1.0, 1.0]])
    return net, learned, through


def test_pinning_a_connection_nengo_loihi_replaced_pins_its_blocks():
    from partitioner.allocator import MinCutAllocator, pins_to_blocks
    from partitioner.extract import build_model

    net, learned, through = pes_network()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(net)
    assert learned not in model.objs and through not in model.objs
    pins = pins_to_blocks({learned: 1, through: 1}, model)
    assert len(pins) >= 2 and set(pins.values()) == {1}
    allocator = MinCutAllocator(spread=True, pins={learned: 1, through: 1})
    allocator(model, 2)
    chips = allocator.last_plan.block_chip
    assert all(chips[b] == 1 for b in pins)


def test_a_pin_that_cannot_fit_is_named():
    """144 blocks that send population axons (each needs a core) pinned to one
    128-core chip."""
    n = 150
    empty = sp.csr_matrix((n, 1), dtype=bool)
    sources = [f"<Ensemble 'conv'>[{i}]" for i in range(144)] + [
        f"<Ensemble 'dense'>[{i}]" for i in range(6)]
    graph = TrafficGraph(
        labels=[f"b{i}" for i in range(n)], sources=sources,
        resources=np.full((n, 4), 8, dtype=np.int64), shared_synapse_bits=np.full(n, 8),
        configs={k: empty for k in ("compartment_cfgs", "vth_cfgs", "synapse_cfgs",
                                    "synapse_cfgs_shared", "stdp_pre_cfgs")},
        core_key=np.zeros(n), noise_key=np.full(n, -1), learning=np.zeros(n, bool),
        pop_sender=np.arange(n) < 144, pop16_in_limit=np.zeros(n),
        axons=sp.csr_matrix((n, n)), spikes=sp.csr_matrix((n, n)),
    )
    with pytest.raises(InfeasibleError) as info:
        partitioner.partition(graph, pins={b: 0 for b in range(144)})
    text = str(info.value)
    assert "<Ensemble 'conv'>" in text and "chip 0" in text
    assert "144 of them need a core of their own" in text and "128" in text
    assert "Could not place the model" not in text


# =================================================================== 11. plots
def sweep_record(board, board_chips, chips, value=None):
    """A what-if record: feasible with ``value`` in every measure, else infeasible."""
    feasible = value is not None
    sens = [{"interchip_spike_pj": pj, "energy_uj": value * f}
            for pj, f in ((20.0, 0.9), (40.0, 1.0), (80.0, 1.2))] if feasible else []
    return {"board": board, "board_chips": board_chips, "chips": chips,
            "chips_used": chips if feasible else None, "feasible": feasible,
            "reason": None if feasible else "too few chips", "interchip_spike_pj": 40.0,
            "time_us": value, "interchip_spikes": value, "energy_uj": value,
            "energy_sensitivity": sens}


def line_colors(fig):
    ax = fig.axes[0]
    return {line.get_label().split(" ")[0]: line.get_color() for line in ax.get_lines()}


def test_whatif_plot_keeps_board_colours_and_shows_hidden_lines():
    from matplotlib.colors import to_hex

    from partitioner.whatif import whatif_figure

    feasible = [sweep_record("kapoho_bay", 2, 2, 3.0), sweep_record("nahuku8", 8, 2, 3.0),
                sweep_record("nahuku8", 8, 4, 5.0)]
    without = [sweep_record("kapoho_bay", 2, 4)] + feasible[1:]
    colors_a = line_colors(whatif_figure(feasible))
    colors_b = line_colors(whatif_figure(without))
    assert to_hex(colors_a["nahuku8"]) == to_hex(colors_b["nahuku8"])

    twins = [sweep_record("nahuku8", 8, c, float(c)) for c in (2, 4)] + [
        sweep_record("nahuku32", 32, c, float(c)) for c in (2, 4)] + [
        sweep_record("nahuku8", 8, 32), sweep_record("nahuku8", 8, 6)]
    fig = whatif_figure(twins, title="t")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert "nahuku32 (same as nahuku8)" in lines
    twin = lines["nahuku32 (same as nahuku8)"]
    assert twin.get_linestyle() != "-" and twin.get_zorder() > lines["nahuku8"].get_zorder()
    title = fig._suptitle.get_text()
    assert title.index("nahuku8 x6") < title.index("nahuku8 x32")


def test_compare_plot_counts_titles_and_colorbar():
    from partitioner.plots import chip_traffic_figure, format_count

    graph = random_graph(2500, seed=2)
    metrics = {}
    for name, k in (("six", 6), ("eight", 8)):
        plan = partitioner.partition(graph, n_chips=k, spread=True)
        metrics[name] = partitioner.evaluate(graph, plan)
    fig = chip_traffic_figure(metrics)
    fig.canvas.draw()
    heatmaps, histograms = fig.axes[0:2], fig.axes[2:4]
    for ax in histograms:
        ticks = ax.get_yticks()
        assert np.allclose(ticks, np.round(ticks))
    for ax in heatmaps + histograms:
        assert "e+" not in ax.get_title()
    assert format_count(25856.0) == "25,856" and format_count(2300) == "2,300"
    # The colorbar sits next to the last heatmap's image.
    everything = fig.axes + [c for ax in fig.axes for c in ax.child_axes]
    colorbar = next(a for a in everything if a.get_ylabel().startswith("Inter-chip"))
    renderer = fig.canvas.get_renderer()
    image_box = heatmaps[-1].get_window_extent(renderer)
    gap = (colorbar.get_window_extent(renderer).x0 - image_box.x1) / fig.bbox.width
    assert 0 <= gap < 0.03


# ================================================================= 12. memory
MEMORY_CHECK = """
import sys, warnings
warnings.simplefilter("ignore")
import numpy as np
import nengo


def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) * 1024


rng = np.random.RandomState(0)
with nengo.Network(seed=0) as net:
    ens = [nengo.Ensemble(400, 1) for _ in range(26)]
    for pre, post in zip(ens[:-1], ens[1:]):
        for _ in range(2):
            nengo.Connection(pre.neurons, post.neurons,
                             transform=rng.uniform(-1e-3, 1e-3, (400, 400)))
weights = 50 * 400 * 400 * 8
from partitioner.extract import build_model

with nengo.Network(seed=1) as warm:
    nengo.Connection(nengo.Ensemble(10, 1).neurons, nengo.Ensemble(10, 1).neurons,
                     transform=np.full((10, 10), 1e-3))
build_model(warm)  # loads what the builder imports on first use
before = peak()
model = build_model(net)
print((peak() - before) / weights)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_building_keeps_no_second_copies_of_the_weights():
    """Building a network of dense neuron-to-neuron connections for partitioning
    costs about three times its weights (the blocks' synapse weights and indices,
    and one connection's temporaries), not five (two more copies per connection)."""
    proc = run([sys.executable, "-c", MEMORY_CHECK])
    assert float(proc.stdout.strip()) < 4.0


def test_building_drops_the_connection_weight_copies():
    from partitioner.extract import build_model

    with nengo.Network(seed=0) as net:
        a, b = nengo.Ensemble(50, 1), nengo.Ensemble(60, 1)
        conn = nengo.Connection(a.neurons, b.neurons, transform=np.ones((60, 50)) * 1e-3)
    model = build_model(net)
    assert model.params[conn].weights is None
    assert any(s.weights for blk in model.blocks for s in blk.synapses)
    # A simulator built afterwards keeps its weights.
    import nengo_loihi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with nengo_loihi.Simulator(net, target="sim", progress_bar=False) as sim:
            assert sim.data[conn].weights is not None


def test_whatif_uses_no_more_processes_than_memory_allows():
    from partitioner.whatif import _worker_count, workers_memory_allows

    graph = random_graph(2000, seed=0)
    assert workers_memory_allows(graph, available=1 * 2**30) == 1
    assert workers_memory_allows(graph, available=64 * 2**30) > 50
    big = workers_memory_allows(graph, available=8 * 2**30)
    assert 1 <= big <= 16
    assert _worker_count(None, 100, graph) <= min(os.cpu_count() or 1,
                                                  workers_memory_allows(graph))
