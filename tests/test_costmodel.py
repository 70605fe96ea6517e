"""The cost model: profiles (validation, cache keys, round trips) and latency
predictions from step statistics, on synthetic profiles and stats."""

import json

import pytest

from specs_local.costmodel import (
    check_profile,
    decode_call_seconds,
    extra_row_seconds,
    find_profile,
    load_profile,
    predict_latencies,
    predict_method_latency,
    predict_ratio_on,
    predict_seconds,
    priced_by_shape,
    profile_key,
    profile_path,
    rows_call_seconds,
    save_profile,
    speculation_can_pay,
    speculation_note,
    speculation_ratio,
    speedup_vs_beam,
    store_profile,
)
from specs_local.errors import SpecsError

DRAFT = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
TARGET = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"

# This 2-core CPU, as measured for the issue.
CPU = {"machine": "cpu-2", "threads": None, "n_gpu_layers": 0, "models": {
    TARGET: {"prefill_tps": 70.0, "decode_tps": {"1": 27.9, "2": 32.7, "4": 37.8, "8": 34.4}},
    DRAFT: {"prefill_tps": 135.0, "decode_tps": {"1": 45.5, "2": 51.8, "4": 75.4, "8": 81.6}},
}}
# GPU-like: prefill far cheaper per token than decode, batching nearly free.
GPU = {"machine": "gpu", "threads": None, "n_gpu_layers": 99, "models": {
    TARGET: {"prefill_tps": 20000.0, "decode_tps": {"1": 200.0, "4": 780.0, "16": 3000.0}},
    DRAFT: {"prefill_tps": 50000.0, "decode_tps": {"1": 400.0, "4": 1500.0, "16": 5800.0}},
}}
# Round numbers for hand-computed predictions.
SIMPLE = {"machine": "simple", "threads": 2, "n_gpu_layers": 0, "models": {
    "t.gguf": {"prefill_tps": 100.0, "decode_tps": {"1": 10.0, "4": 40.0}},
    "d.gguf": {"prefill_tps": 200.0, "decode_tps": {"1": 20.0, "4": 80.0}},
}}


def usage(file, calls, batch, evaluated, **extra):
    return {"file": file, "generation_calls": calls, "mean_generation_batch": batch, "evaluated": evaluated, **extra}


def simple_stats(wall=6.0):
    return {"wall_seconds": wall, "n": 4, "steps": 3, "step_tokens": 30,
            "models": {"target": usage("t.gguf", 10, 2.5, 225), "draft": usage("d.gguf", 20, 4.0, 280)},
            "reward": {"name": "calculator+self", "seconds": 7.0}}


def record(problem_id, method, stats):
    return {"id": problem_id, "problem": "p", "answer": "1", "gold": "1", "correct": True, "method": method,
            "stats": stats}


# ---------------------------------------------------------------- interpolation


@pytest.mark.parametrize("batch, seconds", [
    (1, 1 / 10), (4, 4 / 40),  # measured sizes
    (2.5, 2.5 / 25),  # halfway from 10 to 40 tok/s
    (0.5, 0.5 / 10), (8, 8 / 40),  # clamped: throughput held at the end values
])
def test_decode_call_seconds_interpolates_throughput_and_clamps(batch, seconds):
    assert decode_call_seconds(SIMPLE["models"]["t.gguf"], batch) == pytest.approx(seconds)


def test_decode_call_seconds_of_no_rows_is_zero():
    assert decode_call_seconds(SIMPLE["models"]["t.gguf"], 0) == 0.0


# Measured by `specs-local profile` since it records decode shapes: prefill by batch and attention.
SHAPED = {"machine": "shaped", "threads": 2, "n_gpu_layers": 0, "models": {
    "t.gguf": {"prefill_tps": 100.0, "decode_tps": {"1": 10.0, "4": 40.0},
               "prefill_tps_by_batch": {"64": 80.0, "256": 100.0}, "attention_seconds_per_cell": 1e-5},
}}


@pytest.mark.parametrize("rows, seconds", [
    (4, 4 / 40), (64, 64 / 80), (256, 256 / 100),  # measured sizes, decode and prefill in one table
    (34, 34 / 60),  # halfway from 4 rows (40 tok/s) to 64 rows (80 tok/s)
    (512, 512 / 100),  # held past the largest size
])
def test_rows_call_seconds_spans_decode_and_prefill_sizes(rows, seconds):
    assert rows_call_seconds(SHAPED["models"]["t.gguf"], rows) == pytest.approx(seconds)


def test_rows_call_seconds_of_an_older_profile_places_prefill_at_256_rows():
    # SIMPLE has no prefill_tps_by_batch: its prefill_tps (100) stands at 256 rows.
    assert rows_call_seconds(SIMPLE["models"]["t.gguf"], 256) == pytest.approx(256 / 100)
    assert rows_call_seconds(SIMPLE["models"]["t.gguf"], 130) == pytest.approx(130 / 70)


def test_predict_from_decode_shapes_adds_the_attention_of_decode_sized_calls():
    shaped = usage("t.gguf", 0, 0.0, 0, decode_batches={"4": [10, 40, 20000], "64": [2, 100, 90000]},
                   attended_cells=110000)
    # 10 calls of 4 rows at 40 tok/s reading 20000 cells at 1e-5 s each; 2 calls of 50 rows
    # (between 4 and 64 rows: 40 + 46/60*40 tok/s), whose cells cost nothing extra.
    expected = 10 * 4 / 40 + 20000 * 1e-5 + 2 * 50 / (40 + 46 / 60 * 40)
    stats = {"models": {"target": shaped}}
    assert predict_seconds(stats, SHAPED) == pytest.approx(expected)


def test_a_profile_without_attention_costs_no_attention():
    shaped = usage("t.gguf", 0, 0.0, 0, decode_batches={"1": [5, 5, 10**9]}, attended_cells=10**9)
    assert predict_seconds({"models": {"t": shaped}}, SIMPLE) == pytest.approx(5 * 1 / 10)


# Measured by `specs-local profile` since it records cost by depth: a shallow baseline at 0 s.
DEPTHED = {"machine": "depthed", "threads": 2, "n_gpu_layers": 0, "models": {
    "t.gguf": {"prefill_tps": 100.0, "decode_tps": {"1": 10.0, "4": 40.0},
               "prefill_tps_by_batch": {"64": 80.0, "256": 100.0},
               "decode_row_seconds_by_depth": {"50": 0.0, "300": 0.002, "1100": 0.010},
               "prefill_row_seconds_by_depth": {"150": 0.0, "1150": 0.001}},
}}


@pytest.mark.parametrize("depth, seconds", [
    (20, 0.0), (50, 0.0),  # at or below the shallow baseline: nothing extra
    (300, 0.002), (1100, 0.010),  # measured depths
    (700, 0.006),  # halfway from 300 to 1100
    (1500, 0.014),  # past the deepest: along the last segment (1e-5 s per cell)
])
def test_extra_row_seconds_interpolates_in_depth(depth, seconds):
    table = DEPTHED["models"]["t.gguf"]["decode_row_seconds_by_depth"]
    assert extra_row_seconds(table, depth) == pytest.approx(seconds)


def test_extra_row_seconds_of_a_single_depth_extends_through_zero():
    assert extra_row_seconds({"1000": 0.01}, 2000) == pytest.approx(0.02)


def test_predict_from_depth_tables_prices_decode_and_prefill_rows_by_the_cells_they_read():
    shaped = usage("t.gguf", 0, 0.0, 0, decode_batches={"4": [10, 40, 28000], "64": [2, 100, 115000]},
                   attended_cells=143000)
    # 10 calls of 4 rows, each row reading 700 cells (0.006 s extra by the decode table);
    # 2 calls of 50 rows reading 1150 cells each (0.001 s extra by the prefill table).
    expected = 10 * 4 / 40 + 40 * 0.006 + 2 * 50 / (40 + 46 / 60 * 40) + 100 * 0.001
    assert predict_seconds({"models": {"target": shaped}}, DEPTHED) == pytest.approx(expected)


def test_check_profile_keeps_depth_tables_with_integer_keys():
    entry = {"prefill_tps": 1.0, "decode_tps": {"1": 1.0}, "decode_row_seconds_by_depth": {"0300": 0.002, 40: 0}}
    checked = check_profile({"machine": "m", "models": {"x.gguf": entry}})
    assert checked["models"]["x.gguf"]["decode_row_seconds_by_depth"] == {"300": 0.002, "40": 0.0}


@pytest.mark.parametrize("extra, message", [
    ({"prefill_tps_by_batch": {"x": 1.0}}, "bad prefill_tps_by_batch"),
    ({"prefill_tps_by_batch": {"64": -1.0}}, "bad prefill_tps_by_batch"),
    ({"attention_seconds_per_cell": -1e-6}, "non-negative attention_seconds_per_cell"),
    ({"decode_row_seconds_by_depth": {}}, "bad decode_row_seconds_by_depth"),
    ({"prefill_row_seconds_by_depth": {"deep": 0.1}}, "bad prefill_row_seconds_by_depth"),
    ({"decode_row_seconds_by_depth": {"300": -0.1}}, "bad decode_row_seconds_by_depth"),
])
def test_check_profile_refuses_bad_shape_figures(extra, message):
    entry = {"prefill_tps": 1.0, "decode_tps": {"1": 1.0}, **extra}
    with pytest.raises(SpecsError, match=message):
        check_profile({"machine": "m", "models": {"x.gguf": entry}})


# ---------------------------------------------------------------- predictions


def test_predict_seconds_matches_hand_computation():
    # target: 10 calls at batch 2.5 -> 10 * 0.1 s; 225 - 25 generation rows = 200 tokens at 100/s -> 2 s
    # draft: 20 calls at batch 4 -> 20 * 0.05 s; 280 - 80 rows = 200 tokens at 200/s -> 1 s
    # the reward's 7 s are not added: its model time is in the models' tokens
    assert predict_seconds(simple_stats(), SIMPLE) == pytest.approx(3.0 + 2.0)


def test_predict_seconds_names_a_model_missing_from_the_profile():
    stats = {"models": {"target": usage("other.gguf", 1, 1.0, 10)}}
    with pytest.raises(SpecsError, match="the profile of simple has no model other.gguf"):
        predict_seconds(stats, SIMPLE)


def test_model_map_points_a_run_file_at_a_profile_entry():
    stats = {"models": {"target": usage("real-7b.gguf", 10, 1.0, 10)}}
    assert predict_seconds(stats, SIMPLE, model_map={"real-7b.gguf": "t.gguf"}) == pytest.approx(10 * 0.1)


def test_method_latency_is_the_mean_over_finished_problems():
    records = [record("1", "specs", simple_stats()),
               record("2", "specs", {"models": {"target": usage("t.gguf", 0, 0.0, 100)}}),  # 1 s of prefill
               {"id": "3", "method": "specs", "error": "context full"}]
    assert predict_method_latency(records, SIMPLE) == pytest.approx((5.0 + 1.0) / 2)
    assert predict_method_latency(records[2:], SIMPLE) is None
    assert predict_latencies({"specs": records, "rsd": records[2:]}, SIMPLE) == {"specs": pytest.approx(3.0)}


def test_speculation_cannot_pay_on_this_cpu():
    ratio = speculation_ratio(CPU, DRAFT, TARGET, n=4)
    # draft 60 tokens at batch 4 + target scoring 240 tokens, over target 60 tokens at batch 4;
    # 240 rows run at the throughput interpolated from 8 rows (34.4) to 256 rows (70.0)
    scoring_tps = 34.4 + (240 - 8) / (256 - 8) * (70.0 - 34.4)
    expected = (60 * 4 / 75.4 + 240 / scoring_tps) / (60 * 4 / 37.8)
    assert ratio == pytest.approx(expected)
    assert ratio > 1
    assert not speculation_can_pay(CPU, DRAFT, TARGET, n=4)
    assert speculation_note(CPU, DRAFT, TARGET, 4) == (
        f"speculation cannot pay here: drafting+scoring costs {ratio:.2f}x a target step even at 100% acceptance")


def test_speculation_pays_where_prefill_is_cheap():
    ratio = speculation_ratio(GPU, DRAFT, TARGET, n=4)
    assert ratio < 0.81
    assert speculation_can_pay(GPU, DRAFT, TARGET, n=4)
    assert speculation_note(GPU, DRAFT, TARGET, 4) is None


def test_rejected_drafts_add_the_target_step_back():
    full = speculation_ratio(GPU, DRAFT, TARGET, n=4, acceptance=1.0)
    assert speculation_ratio(GPU, DRAFT, TARGET, n=4, acceptance=0.0) == pytest.approx(full + 1.0)
    assert speculation_ratio(GPU, DRAFT, TARGET, n=4, acceptance=0.5) == pytest.approx(full + 0.5)


def test_speculation_note_is_silent_without_a_usable_profile():
    assert speculation_note(None, DRAFT, TARGET, 4) is None
    assert speculation_note(SIMPLE, DRAFT, TARGET, 4) is None


def cpu_run_records():
    """Step statistics as a CPU run records them: specs drafts, beam-target generates."""
    specs = {"wall_seconds": 99.0, "models": {
        "target": usage(TARGET, 40, 1.0, 40 + 960),  # a few deferred steps, and 960 scored tokens
        "draft": usage(DRAFT, 240, 4.0, 960 + 200)}}
    beam = {"wall_seconds": 80.0, "models": {"target": usage(TARGET, 240, 4.0, 960 + 200)}}
    return {"specs": [record("1", "specs", specs), record("2", "specs", specs)],
            "beam-target": [record("1", "beam-target", beam), record("2", "beam-target", beam)]}


def test_predicted_ratio_on_other_hardware():
    runs = cpu_run_records()
    on_gpu = predict_ratio_on(GPU, runs)
    on_cpu = predict_ratio_on(CPU, runs)
    assert on_gpu["machine"] == "gpu" and on_gpu["baseline"] == "beam-target"
    assert on_gpu["ratios"]["beam-target"] == pytest.approx(1.0)
    assert on_gpu["ratios"]["specs"] < 1 < on_cpu["ratios"]["specs"]
    specs, beam = on_gpu["predicted_seconds"]["specs"], on_gpu["predicted_seconds"]["beam-target"]
    assert on_gpu["ratios"]["specs"] == pytest.approx(specs / beam)


def test_a_model_map_names_only_entries_a_profile_lacks(tmp_path):
    """A profile measured elsewhere on other files (say, figures published for other models)
    is priced through --model-map; a profile of the run's own files (this machine's, or
    another's) keeps their names."""
    from specs_local.bench import report

    renamed = {**GPU, "models": {"big.gguf": GPU["models"][TARGET], "small.gguf": GPU["models"][DRAFT]}}
    other_cpu = {**CPU, "machine": "other-cpu"}  # profiled on the run's own files
    summary = report(cpu_run_records(), tmp_path, command="bench", profile=CPU, other_profiles=[renamed, other_cpu],
                     model_map={TARGET: "big.gguf", DRAFT: "small.gguf"}, baseline="beam-target")
    notes = " ".join(summary["notes"])
    assert all(f"Speculation on {machine}" in notes for machine in ("cpu-2", "gpu", "other-cpu"))
    assert "Cost model on other-cpu" in notes
    assert f"Cost model on gpu: predicted latency ratio against beam-target, replaying these runs' step " \
           f"statistics: specs {predict_ratio_on(GPU, cpu_run_records())['ratios']['specs']:.2f}" in notes


def test_predicted_ratio_is_none_without_the_baseline():
    runs = cpu_run_records()
    assert predict_ratio_on(GPU, {"specs": runs["specs"]})["ratios"] == {"specs": None}


# ---------------------------------------------------------------- profiles


def test_profile_round_trip(tmp_path):
    path = save_profile(CPU, tmp_path / "sub" / "cpu.json")
    assert load_profile(path) == CPU
    assert not list(path.parent.glob("*.tmp"))  # written atomically, no leftovers


@pytest.mark.parametrize("text, message", [
    ("{", "is not JSON"),
    ('{"models": {}}', "is not a specs-local profile"),
    ('{"machine": "m", "models": {}}', "profiles no models"),
    ('{"machine": "m", "models": {"a.gguf": {"prefill_tps": 0, "decode_tps": {"1": 5}}}}', "positive prefill_tps"),
    ('{"machine": "m", "models": {"a.gguf": {"prefill_tps": 9, "decode_tps": {"one": 5}}}}', "bad decode_tps"),
    ('{"machine": "m", "threads": 0, "models": {"a.gguf": {"prefill_tps": 9, "decode_tps": {"1": 5}}}}', "threads"),
])
def test_load_profile_refuses_bad_files_in_one_line(tmp_path, text, message):
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(SpecsError, match=message) as refused:
        load_profile(path)
    assert "\n" not in str(refused.value)


def test_load_profile_of_a_missing_file(tmp_path):
    with pytest.raises(SpecsError, match="cannot read profile"):
        load_profile(tmp_path / "none.json")


def test_profile_key_holds_everything_speed_depends_on():
    key = profile_key("vm x86_64 2 cores", "/models/" + TARGET, 2, 0)
    assert key == f"vm-x86_64-2-cores__{TARGET}__threads-2__gpu-0"
    assert profile_key("vm x86_64 2 cores", TARGET, None, 99).endswith("__threads-auto__gpu-99")
    assert profile_key("vm", TARGET, 2, 0, "off").endswith("__threads-2__gpu-0__repack-off")


def test_store_and_find_profile_by_machine_file_threads_and_gpu_layers(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path))
    stored = store_profile({**CPU, "machine": "box", "threads": 2})
    assert sorted(stored) == sorted(profile_path(profile_key("box", f, 2, 0)) for f in (TARGET, DRAFT))
    assert all(p.parent == tmp_path / "profiles" for p in stored)
    assert json.loads(stored[0].read_text())["machine"] == "box"

    found = find_profile([TARGET, "/somewhere/" + DRAFT], 2, 0, machine="box")
    assert found == {"machine": "box", "threads": 2, "n_gpu_layers": 0, "cpu_repack": "auto", "models": CPU["models"]}
    assert find_profile([TARGET], 4, 0, machine="box") is None  # other threads
    assert find_profile([TARGET], 2, 0, machine="box", cpu_repack="off") is None  # other weight layout
    store_profile({**CPU, "machine": "box", "threads": 2, "cpu_repack": "off"})
    assert find_profile([TARGET, DRAFT], 2, 0, machine="box", cpu_repack="off")["cpu_repack"] == "off"
    assert find_profile([TARGET], 2, 99, machine="box") is None  # other GPU offload
    assert find_profile([TARGET], 2, 0, machine="other") is None  # other machine
    assert find_profile([TARGET, "unprofiled.gguf"], 2, 0, machine="box") is None  # not every model


def test_find_profile_defaults_to_this_machine(tmp_path, monkeypatch):
    from specs_local.machine import machine_name

    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path))
    store_profile({**CPU, "machine": machine_name()})
    assert find_profile([TARGET, DRAFT], None, 0)["models"] == CPU["models"]


# ---------------------------------------------------------------- the solve stats phrase


def test_speedup_vs_beam_from_the_run_timings():
    stats = {"wall_seconds": 10.0, "n": 4, "step_tokens": 100, "reward": {"seconds": 2.0},
             "models": {"target": {"generation_seconds": 5.0, "generation_calls": 50, "mean_generation_batch": 2.0}}}
    # 0.1 s per target call x 100 tokens + 2 s reward = 12 s of beam-target vs 10 s
    assert speedup_vs_beam(stats).startswith("est. speedup vs beam-target (n=4): 1.20x")
    assert "n/a" in speedup_vs_beam({"wall_seconds": 1.0, "n": 4, "models": {}})


def test_priced_by_shape_needs_every_model_to_carry_decode_shapes():
    shaped = usage("t.gguf", 1, 1.0, 1, decode_batches={"1": [1, 1, 1]}, attended_cells=1)
    assert priced_by_shape(record("a", "specs", {"models": {"target": shaped, "draft": shaped}}))
    assert not priced_by_shape(record("a", "specs", {"models": {"target": shaped, "draft": usage("d.gguf", 1, 1.0, 1)}}))
    assert not priced_by_shape(record("a", "specs", {}))
