"""Tests of the command line (run as a subprocess), what-if sweeps, plots and scenarios.

The command-line tests use the smallest bundled scenario (``mnist_conv``, 30 blocks)
and a generated 140-block chain that nengo-loihi's one-block-per-core allocators
cannot fit on one chip of 128 cores.
"""

import json
import math
import subprocess
import sys
import textwrap

import pytest

from partitioner.cli import COMPARE_COLUMNS, DEFAULT_STRATEGIES
from partitioner.errors import ScenarioError
from partitioner.hardware import BoardSpec, ChipSpec
from partitioner.scenario import load_scenario
from partitioner.whatif import (
    SENSITIVITY_PJ,
    chip_counts,
    plot_whatif,
    smallest_board,
    whatif,
)

SCENARIO = "mnist_conv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RECORD_FIELDS = [c.key for c in COMPARE_COLUMNS] + ["feasible", "reason", "source"]
WHATIF_FIELDS = (
    "board", "board_chips", "chips", "lower_bound_chips", "strategy", "feasible",
    "reason", "chips_used", "cores", "mean_core_utilization_pct", "interchip_axons",
    "interchip_spikes", "max_link_load", "hop_weighted_cost", "time_us", "energy_uj",
    "energy_sensitivity", "runtime_s",
)

CHAIN_SCENARIO = """
import numpy as np
import nengo

N_ENSEMBLES = 140

def build():
    rng = np.random.RandomState(0)
    with nengo.Network(seed=0) as net:
        ens = [nengo.Ensemble(8, 1, label=f"e{i}") for i in range(N_ENSEMBLES)]
        for pre, post in zip(ens[:-1], ens[1:]):
            nengo.Connection(pre.neurons, post.neurons,
                             transform=rng.uniform(-0.1, 0.1, (8, 8)))
    return net
"""


# ---------------------------------------------------------------- helpers
def run_cli(*args, check=True):
    """Run ``python -m partitioner.cli ARGS``; returns the CompletedProcess."""
    proc = subprocess.run(
        [sys.executable, "-m", "partitioner.cli", *map(str, args)],
        capture_output=True, text=True, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1024


def table_rows(stdout, first_header):
    """Rows (lists of cells) of the table whose header starts with ``first_header``."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def decimals(text):
    """Digits after the decimal point in a printed number."""
    return len(text.split(".", 1)[1]) if "." in text else 0


def assert_cell_matches(cell, value, where):
    """``cell`` is ``value`` as printed: '-' for None, else rounded to its digits."""
    cell = cell.rstrip("*")
    if value is None:
        assert cell == "-", where
        return
    shown = float(cell)
    tol = 0.5 * 10 ** -decimals(cell) + 1e-9 * abs(value)
    if "." not in cell and abs(value) >= 1e4:  # '.4g' may drop digits of big numbers
        tol = max(tol, 5e-4 * abs(value))
    assert abs(shown - value) <= tol, f"{where}: table {cell} vs JSON {value}"


def tiny_board(n_chips, cores=16):
    rows = 1 if n_chips <= 4 else 2
    return BoardSpec(f"tiny{n_chips}", n_chips, (rows, n_chips // rows),
                     chip=ChipSpec(cores=cores))


# --------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def compare_run(workdir):
    out, png = workdir / "compare.json", workdir / "compare.png"
    proc = run_cli("-q", "compare", SCENARIO, "--json", out, "--plot", png)
    return proc, json.loads(out.read_text()), png


@pytest.fixture(scope="module")
def chain_scenario(workdir):
    path = workdir / "chain.py"
    path.write_text(textwrap.dedent(CHAIN_SCENARIO))
    return path


@pytest.fixture(scope="module")
def plans(workdir):
    a, b = workdir / "a.json", workdir / "b.json"
    run_cli("-q", "plan", SCENARIO, "-o", a)
    run_cli("-q", "plan", SCENARIO, "-o", b, "--strategy", "roundrobin", "--chips", 4)
    return a, b


@pytest.fixture(scope="module")
def synthetic_graph():
    from partitioner.synthetic import random_graph

    return random_graph(200, seed=1)


# ---------------------------------------------------------------- compare
def test_compare_json_has_a_full_record_per_strategy(compare_run):
    _, data, _ = compare_run
    assert data["scenario"] == SCENARIO
    assert data["board"] == "nahuku32"
    assert data["lower_bounds"]["cores"] >= 1 and data["lower_bounds"]["chips"] == 1
    names = [r["strategy"] for r in data["records"]]
    assert names == DEFAULT_STRATEGIES.split(",")
    for record in data["records"]:
        missing = [f for f in RECORD_FIELDS if f not in record]
        assert not missing, (record["strategy"], missing)
        assert record["feasible"]
        assert record["cores"] >= data["lower_bounds"]["cores"]
        assert record["energy_uj"] > 0 and record["time_us"] > 0


def test_compare_table_shows_the_json_numbers(compare_run):
    proc, data, _ = compare_run
    rows = table_rows(proc.stdout, "strategy")
    assert len(rows) == len(data["records"])
    for row, record in zip(rows, data["records"]):
        assert len(row) == len(COMPARE_COLUMNS)
        assert row[0] == record["strategy"]
        for cell, col in zip(row[1:], COMPARE_COLUMNS[1:]):
            if isinstance(record[col.key], str):
                assert cell == record[col.key], col.key
                continue
            assert_cell_matches(cell, record[col.key], f"{record['strategy']}.{col.key}")


def test_compare_marks_the_best_value_of_each_column(compare_run):
    proc, data, _ = compare_run
    rows = table_rows(proc.stdout, "strategy")
    for j, col in enumerate(COMPARE_COLUMNS):
        if col.best is None:
            assert not any(row[j].endswith("*") for row in rows)
            continue
        shown = [float(row[j].rstrip("*")) for row in rows]
        best = min(shown) if col.best == "min" else max(shown)
        for row, value in zip(rows, shown):
            assert row[j].endswith("*") == (value == best), (col.key, row)
    # METIS packs several blocks per core: fewer cores than nengo-loihi's allocators.
    by_name = {r["strategy"]: r for r in data["records"]}
    assert by_name["metis"]["cores"] < by_name["greedy"]["cores"]
    assert by_name["roundrobin"]["interchip_spikes"] > by_name["metis"]["interchip_spikes"]


def test_compare_prints_lower_bounds_and_assumptions(compare_run):
    proc, data, _ = compare_run
    bounds = data["lower_bounds"]
    assert f"{bounds['cores']} cores" in proc.stdout
    assert "Lower bounds" in proc.stdout
    assert "not published" in proc.stdout.lower()


def test_compare_plot_is_a_png(compare_run):
    assert_png(compare_run[2])


def test_compare_shows_infeasible_nengo_loihi_allocators(chain_scenario, workdir):
    out = workdir / "chain.json"
    proc = run_cli("-q", "compare", chain_scenario, "--board", "kapoho_bay", "--chips", 1,
                   "--strategies", "greedy,roundrobin,greedy-interchip,metis",
                   "--json", out)
    records = {r["strategy"]: r for r in json.loads(out.read_text())["records"]}
    for name in ("greedy", "roundrobin", "greedy-interchip"):
        assert not records[name]["feasible"]
        assert "chip" in records[name]["reason"]
        assert f"{name}: infeasible" in proc.stdout
    assert records["metis"]["feasible"] and records["metis"]["chips"] == 1
    rows = {row[0]: row for row in table_rows(proc.stdout, "strategy")}
    assert rows["greedy"][1:-3] == ["-"] * (len(COMPARE_COLUMNS) - 4)


def test_compare_with_rates_file(workdir):
    rates = workdir / "rates.json"
    rates.write_text(json.dumps({"conv1": 20.0, "pool1": 10.0, "conv2": 5.0}))
    out = workdir / "rated.json"
    run_cli("-q", "compare", SCENARIO, "--rates", rates, "--chips", 2,
            "--strategies", "greedy-interchip,metis", "--json", out)
    data = json.loads(out.read_text())
    assert data["rates"] == "ensemble_rates" and data["n_chips"] == 2
    assert all(r["feasible"] for r in data["records"])


# ----------------------------------------------------------------- whatif
def test_whatif_json_records(workdir):
    out, png = workdir / "whatif.json", workdir / "whatif.png"
    proc = run_cli("-q", "whatif", SCENARIO, "--board", "kapoho_bay", "--board", "nahuku8",
                   "--chips", "1..3", "--workers", 2, "--json", out, "--plot", png)
    data = json.loads(out.read_text())
    records = data["records"]
    assert [(r["board"], r["chips"]) for r in records] == [
        (b, k) for b in ("kapoho_bay", "nahuku8") for k in (1, 2, 3)
    ]
    for r in records:
        assert all(f in r for f in WHATIF_FIELDS)
    bad = [r for r in records if not r["feasible"]]
    assert [(r["board"], r["chips"]) for r in bad] == [("kapoho_bay", 3)]
    assert "kapoho_bay" in bad[0]["reason"]
    assert data["smallest_board"] == "kapoho_bay"
    assert "Smallest board that fits: kapoho_bay" in proc.stdout
    assert "sensitivity" in proc.stdout.lower()
    assert_png(png)


# ------------------------------------------------- plan / inspect / diff
def test_plan_inspect_diff_round_trip(plans):
    a, b = plans
    plan_a, plan_b = json.loads(a.read_text()), json.loads(b.read_text())
    assert plan_a["fingerprint"] == plan_b["fingerprint"]
    assert plan_a["strategy"] == "metis" and plan_b["strategy"] == "roundrobin"
    assert plan_b["n_chips"] == 4

    shown = run_cli("inspect", a).stdout
    assert "metis" in shown and plan_a["fingerprint"] in shown
    assert f"cores         {plan_a['n_cores']}" in shown

    same = run_cli("diff", a, a).stdout
    assert "on another chip: 0 of" in same and "on another core: 0 of" in same

    diff = run_cli("diff", a, b).stdout
    assert f"chips      {plan_a['n_chips']} -> 4" in diff
    assert f"cores      {plan_a['n_cores']} -> {plan_b['n_cores']}" in diff
    assert "block " in diff


def test_inspect_scenario(workdir):
    out = run_cli("-q", "inspect", SCENARIO, "--top", 3).stdout
    assert "30 blocks" in out
    assert "Largest blocks" in out and "Resource totals" in out
    assert "Lower bounds on nahuku32" in out and "binding rule" in out
    assert "Heaviest edges" in out and "<Ensemble 'pool2'>" in out


# ------------------------------------------------------------ bad input
def _bad_inputs(workdir, plans, chain_scenario):
    no_build = workdir / "no_build.py"
    no_build.write_text("x = 1\n")
    not_net = workdir / "not_net.py"
    not_net.write_text("def build():\n    return 42\n")
    raises = workdir / "raises.py"
    raises.write_text("def build():\n    raise RuntimeError('boom\\nand more')\n")
    corrupt = workdir / "corrupt.json"
    corrupt.write_text('{"format": "loihi-partitioner.plan", "layout": [0, ')
    broken = workdir / "broken.json"
    data = json.loads(plans[0].read_text())
    data["core_ptr"] = [0, 1]
    broken.write_text(json.dumps(data))
    other = workdir / "other.json"
    data = json.loads(plans[0].read_text())
    data["fingerprint"] = "0000000000000000"
    other.write_text(json.dumps(data))
    return {
        "missing file": ["compare", workdir / "missing.py"],
        "no build()": ["compare", no_build],
        "build() not a network": ["plan", not_net, "-o", workdir / "x.json"],
        "build() raises": ["inspect", raises],
        "unknown board": ["compare", SCENARIO, "--board", "nahuku99"],
        "chips beyond board": ["compare", SCENARIO, "--chips", 40],
        "chips zero": ["plan", SCENARIO, "-o", workdir / "x.json", "--chips", 0],
        "infeasible plan": ["plan", chain_scenario, "--board", "kapoho_bay", "--chips", 1,
                            "--strategy", "greedy", "-o", workdir / "x.json"],
        "unknown strategy": ["compare", SCENARIO, "--strategies", "greedy,nope"],
        "corrupt plan": ["inspect", corrupt],
        "inconsistent plan": ["diff", broken, plans[0]],
        "mismatched plans": ["diff", plans[0], other],
        "missing plan": ["diff", plans[0], workdir / "missing.json"],
        "bad chip range": ["whatif", SCENARIO, "--chips", "3..x"],
        "missing rates file": ["compare", SCENARIO, "--rates", workdir / "none.json"],
        "missing argument": ["plan", SCENARIO],
    }


def test_bad_input_exits_2_with_one_line(workdir, plans, chain_scenario):
    failures = []
    for case, args in _bad_inputs(workdir, plans, chain_scenario).items():
        proc = run_cli("-q", *args, check=False)
        lines = proc.stderr.strip().splitlines()
        ok = (
            proc.returncode == 2
            and len(lines) == 1
            and lines[0].startswith("partitioner: error: ")
            and "Traceback" not in proc.stderr
        )
        if not ok:
            failures.append(f"{case}: exit {proc.returncode}, stderr {proc.stderr!r}")
    assert not failures, "\n".join(failures)


def test_error_message_without_quiet_is_still_one_error_line(workdir):
    proc = run_cli("compare", workdir / "missing.py", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("partitioner: error")]
    assert len(errors) == 1 and "missing.py" in errors[0]


def test_module_entry_point_shows_help():
    proc = subprocess.run([sys.executable, "-m", "partitioner", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in ("compare", "whatif", "plan", "inspect", "diff"):
        assert command in proc.stdout


# ------------------------------------------------- whatif (in process)
def test_chip_counts_default_range(synthetic_graph):
    board = tiny_board(32, cores=8)
    counts = chip_counts(synthetic_graph, board)
    from partitioner.metrics import chip_lower_bound

    lb = chip_lower_bound(synthetic_graph, board)
    assert counts == list(range(lb, lb + 9)) + [32]
    assert chip_counts(synthetic_graph, board, chips=4) == [4]
    assert chip_counts(synthetic_graph, board, chips=[3, 2, 3]) == [2, 3]


def test_whatif_on_synthetic_graph(synthetic_graph, capsys):
    small, large = tiny_board(2), tiny_board(8)
    records = whatif(synthetic_graph, boards=(small, large), workers=1, progress=True)
    assert "what-if [" in capsys.readouterr().err

    from partitioner.metrics import chip_lower_bound

    lb = chip_lower_bound(synthetic_graph, large)
    assert lb == 3
    # tiny2 is too small: only its full size is tried, and reported infeasible.
    assert [(r["board"], r["chips"]) for r in records] == [("tiny2", 2)] + [
        ("tiny8", k) for k in range(lb, 9)
    ]
    assert not records[0]["feasible"] and "at least 3 chips" in records[0]["reason"]
    assert records[0]["energy_uj"] is None
    for r in records[1:]:
        assert r["feasible"], r["reason"]
        assert r["chips_used"] <= r["chips"]
        assert r["cores"] >= 40
        assert r["interchip_spikes"] > 0 and r["time_us"] > 0
        energies = [s["energy_uj"] for s in r["energy_sensitivity"]]
        assert [s["interchip_spike_pj"] for s in r["energy_sensitivity"]] == list(SENSITIVITY_PJ)
        assert energies == sorted(energies) and energies[0] < energies[-1]
        default = SENSITIVITY_PJ.index(r["interchip_spike_pj"])
        assert math.isclose(energies[default], r["energy_uj"], rel_tol=1e-12)
    best = smallest_board(records)
    assert best["board"] == "tiny8" and best["chips_used"] == lb
    assert smallest_board(records[:1]) is None


def test_whatif_parallel_equals_serial(synthetic_graph):
    board = tiny_board(8)
    kwargs = dict(boards=(board,), chips=[3, 5, 8], progress=False)
    serial = whatif(synthetic_graph, workers=1, **kwargs)
    parallel = whatif(synthetic_graph, workers=2, **kwargs)
    strip = lambda recs: [{k: v for k, v in r.items() if k != "runtime_s"} for r in recs]
    assert strip(serial) == strip(parallel)


def test_whatif_chip_count_beyond_board_is_infeasible(synthetic_graph):
    records = whatif(synthetic_graph, boards=(tiny_board(8),), chips=[9], workers=1,
                     progress=False)
    assert not records[0]["feasible"]
    assert "8 chips" in records[0]["reason"]


def test_plot_whatif_writes_png(synthetic_graph, tmp_path):
    records = whatif(synthetic_graph, boards=(tiny_board(2), tiny_board(8)),
                     chips=[2, 3, 4, 8], workers=1, progress=False)
    path = tmp_path / "whatif.png"
    plot_whatif(records, path, title="synthetic")
    assert_png(path)


def test_plot_chip_traffic_with_an_infeasible_strategy(synthetic_graph, tmp_path):
    from partitioner import partition
    from partitioner.metrics import evaluate
    from partitioner.plots import plot_chip_traffic

    board = tiny_board(8)
    metrics = {}
    for k in (3, 6):
        plan = partition(synthetic_graph, n_chips=k, board=board, spread=True)
        metrics[f"metis x{k}"] = evaluate(synthetic_graph, plan, board)
    metrics["none"] = None
    path = tmp_path / "traffic.png"
    plot_chip_traffic(metrics, path, reasons={"none": "needs more chips"})
    assert_png(path)


# --------------------------------------------------------------- scenarios
def test_load_scenario_forms(tmp_path):
    path = tmp_path / "two.py"
    path.write_text(textwrap.dedent("""
        import nengo

        def build():
            with nengo.Network() as net:
                a = nengo.Ensemble(10, 1, label="a")
            return net

        def other():
            with nengo.Network(label="other") as net:
                nengo.Ensemble(5, 1)
            return net

        def ensemble_rates(net):
            return {e: [10.0] * e.n_neurons for e in net.all_ensembles}
    """))
    scenario = load_scenario(path)
    assert scenario.name == "two" and len(scenario.network.all_ensembles) == 1
    assert list(scenario.ensemble_rates.values())[0] == [10.0] * 10
    other = load_scenario(f"{path}:other")
    assert other.name == "two:other" and other.network.label == "other"
    bundled = load_scenario(SCENARIO)
    assert bundled.name == SCENARIO and bundled.ensemble_rates is not None
    module = load_scenario("nengo:Network")
    assert module.ensemble_rates is None


@pytest.mark.parametrize("source, match", [
    (None, "not found"),
    ("x = 1\n", "no function build"),
    ("def build():\n    return 1\n", "not a nengo.Network"),
    ("def build():\n    raise ValueError('a\\nb')\n", "raised ValueError: a b"),
    ("import no_such_module_xyz\n", "failed to load"),
])
def test_load_scenario_errors(tmp_path, source, match):
    path = tmp_path / "bad.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(ScenarioError, match=match) as info:
        load_scenario(path)
    assert "\n" not in str(info.value)
