"""The benchmark's plumbing on tiny sizes: it runs, writes a table, ratios are positive.
No timing is asserted."""

import re

import archsearch.bench
from archsearch.bench import OPTIONS, chosen_parts, main
from archsearch.benchmark.parts import GPU_PARTS, PARTS

SMALL = ["model=compact", "images=96", "reps=1", "batch=32", "trials=2", "mem_images=256", "mem_workers=1",
         "conc_trials=1", "conc_images=64", "conc_epochs=1", "run_images=1000"]


def bench_table(tmp_path, parts: str) -> str:
    out = tmp_path / "B.md"
    assert main([f"parts={parts}", *SMALL, f"out={out}"]) == 0
    text = out.read_text()
    ratios = [float(r.replace(",", "")) for r in re.findall(r"\| \**([\d.,]+)x", text)]
    assert ratios and all(r > 0 for r in ratios)
    assert "torch" in text and "machine:" in text and "model (parts train, breakdown, compile, probe, kernels, layers): compact" in text
    return text


# every part but compile (minutes of C++ builds: the real bench), in two halves that run side by side
def test_bench_model_parts_write_the_table(tmp_path, monkeypatch, bf16_cpu):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    text = bench_table(tmp_path, "train,breakdown,probe,validator,memory")
    assert "trainer.compile=false: auto for a run of 1,000 images chose eager (short run" in text
    for part in ("1. training, end to end", "1b. a run of 1,000 images, projected",
                 "1c. the reference's own 85%: its 43 epochs of 50,000 images", "2a. model step alone", "2b. era_s9 augmentation",
                 "2d. model step alone, ", ", batch 64 (images/s) | batch 32: ",
                 "2e. the precision probe of trainer.amp=auto, 6 candidates, batch 32 (s) | every candidate timed",
                 "3. validator: dilated_sep", "3. validator: long30 (30 layers)", "5. peak memory"):
        assert part in text


def test_bench_sweep_parts_write_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    text = bench_table(tmp_path, "sweep,concurrency")
    for part in ("4. sweep overhead", "6. sweep throughput (trials/hour)"):
        assert part in text


def test_the_gpu_check_runs_on_the_cpu_too(tmp_path, monkeypatch):
    """python -m archsearch.bench device=cuda's own parts, on device=cpu: the code a GPU machine runs."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "B.md"
    assert main(["parts=workers,slots,system_metrics", "device=cpu", *SMALL, f"out={out}"]) == 0
    text = out.read_text()
    assert "- parts ran on: cpu" in text and "not measured" not in text
    for part in ("7. training end to end, 0 DataLoader worker(s)", "7. training end to end, 1 DataLoader worker(s)",
                 "8. sweep throughput, 1 trial(s) per CPU", "8. sweep throughput, 4 trial(s) per CPU",
                 "| 9. a 2-trial sweep with trainer.system_metrics=1, logged to MLflow | 2 trial runs |"):
        assert part in text
    assert "system metrics logged: cpu_utilization_percentage" in text
    assert chosen_parts({"device": "cuda"}) == list(GPU_PARTS) and chosen_parts({}) == list(PARTS)


def test_a_failing_part_gets_a_row_and_the_table_is_still_written(tmp_path, monkeypatch):
    def broken(opts, rows, notes):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(PARTS, "train", broken)
    out = tmp_path / "B.md"
    assert main(["parts=train,validator", "reps=1", f"out={out}"]) == 0
    text = out.read_text()
    assert "| train: not measured |  | failed: RuntimeError | CUDA error: an illegal memory access" in text
    assert "3. validator: dilated_sep" in text  # the parts after it ran


def test_bench_rejects_bad_options(capsys, monkeypatch):
    assert main(["parts=train,nope"]) == 2
    assert "parts: unknown part 'nope'" in capsys.readouterr().err
    assert main(["compile=yes"]) == 2
    assert "compile: must be one of auto, true, false; got 'yes'" in capsys.readouterr().err
    monkeypatch.setenv("CXX", "no-such-c++")
    assert main(["compile=true"]) == 2
    assert capsys.readouterr().err.startswith("error: compile=true: torch.compile needs a C++ compiler")
    monkeypatch.delenv("CXX")
    assert main(["data=folder"]) == 2
    assert main(["model=nope"]) == 2
    assert "model: unknown model 'nope'; choose one of" in capsys.readouterr().err
    assert main(["device=tpu"]) == 2
    assert "error: device: unknown device 'tpu'; choose one of auto, cpu, cuda, cuda:N" in capsys.readouterr().err


def test_bench_refuses_an_unknown_option_before_measuring(capsys):
    assert main(["parts=validator", "nosuchkey=1"]) == 2
    out = capsys.readouterr()
    assert out.err == f"error: unknown option 'nosuchkey'; valid options: {', '.join(OPTIONS)}\n"
    assert "bench:" not in out.err and not out.out  # no part ran, nothing written


def test_the_probe_part_shows_what_leaving_emulated_bf16_out_saves(tmp_path, monkeypatch):
    """On an x86 CPU without bf16 instructions auto times fp32 only: part probe times that probe
    against one that also times the emulated bf16 candidates (compact has depthwise convs: 6 of them)."""
    from archsearch.training import precision

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"sse2", "avx2", "fma"})
    text = bench_table(tmp_path, "probe")
    assert "2e. the precision probe of trainer.amp=auto, 2 candidates, batch 32 (s)" in text
    assert re.search(r"\| 2e\. the precision probe on this CPU without bf16 instructions, batch 32 \(s\) \| bf16 timed "
                     r"too \(6 candidates\): [\d.]+ .*\| fp32 only \(2 candidates, auto's\): [\d.]+ .*\| [\d.]+x \|", text)


def test_the_kernel_check_part_times_each_candidate_against_the_probe(tmp_path, monkeypatch, bf16_cpu):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "B.md"
    assert main(["parts=kernels", *SMALL, "compile=false", f"out={out}"]) == 0
    rows = [r for r in out.read_text().splitlines() if r.startswith("| 2f. kernel check, ")]
    assert [r.split(",")[1].strip() for r in rows] == ["fp32 channels_last", "bf16 NCHW", "bf16 channels_last",
                                                       "bf16-dw-fp32 NCHW", "bf16-dw-fp32 channels_last"]
    assert all(" distinct layers (s) | the probe: " in r and re.search(r"\| [\d.]+x \|$", r) for r in rows)


def test_the_layers_part_shows_where_the_time_goes_layer_by_layer(tmp_path, monkeypatch):
    """Each distinct layer alone, named by its YAML path and what it is, repeats counted, its share of
    the layers' time beside its share of the MACs: the depthwise branches' cost is seen."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "B.md"
    assert main(["parts=layers", *SMALL, "model=res_branch", f"out={out}"]) == 0
    text = out.read_text()
    rows = [r for r in text.splitlines() if r.startswith("| 2g. layer model.stages.")]
    assert len(rows) == 8  # res_branch has 15 distinct layers: the 8 that take the most time
    assert any("conv 7x7 dilation 3 depthwise, 64->64 channels on 64x16x16" in r for r in rows)
    assert "conv 3x3, 32->32 channels on 32x32x32 (x2 in the network)" in text  # the two convs of the 32x32 block
    shares = [float(x) for r in rows for x in re.findall(r"; (\d+)% of the layers' time", r)]
    assert len(shares) == 8 and shares == sorted(shares, reverse=True) and sum(shares) <= 101
    assert all(re.search(r"\| fp32 NCHW: [\d.]+ \([\d.]+-[\d.]+\) \| .+: [\d.]+ .*% of the MACs \| [\d.]+x \|$", r)
               for r in rows)
    assert "part 2g: 15 distinct conv/linear layers of res_branch" in text


def test_the_help_lists_every_part_and_option():
    doc = archsearch.bench.__doc__
    assert f"comma list of: {', '.join(PARTS)} (default: all)" in doc
    for option in OPTIONS:
        assert re.search(rf"(?<![\w.]){re.escape(option)}\b", doc), option


def test_a_run_never_writes_over_the_gathered_benchmarks_unless_told(tmp_path, monkeypatch, capsys):
    """BENCHMARKS.md gathers tables of many runs by hand: a run writes a new file of its own under
    outputs/bench/ (two started in one second get two files); out=FILE replaces FILE; a folder that is not there is refused before anything is
    measured (not after minutes of measuring)."""
    ran = []

    def quick(opts, rows, notes):
        ran.append(1)
        rows.append(("9. quick", "1", "2", "2.00x"))

    monkeypatch.setitem(PARTS, "validator", quick)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "BENCHMARKS.md").write_text("# gathered by hand\n")
    assert main(["parts=validator"]) == 0
    assert (tmp_path / "BENCHMARKS.md").read_text() == "# gathered by hand\n"
    written = list((tmp_path / "outputs" / "bench").glob("*.md"))
    assert len(written) == 1 and "| 9. quick | 1 | 2 | 2.00x |" in written[0].read_text()
    assert f"wrote {written[0].relative_to(tmp_path)}" in capsys.readouterr().err
    # a second run started in the same second gets a file of its own beside the first
    monkeypatch.setattr("archsearch.bench.time.strftime", lambda fmt, *t: "2026-01-01_00-00-00")
    assert main(["parts=validator"]) == 0 and main(["parts=validator"]) == 0
    names = sorted(p.name for p in (tmp_path / "outputs" / "bench").iterdir())
    assert names[:2] == ["2026-01-01_00-00-00-2.md", "2026-01-01_00-00-00.md"] and len(names) == 3
    assert all("| 9. quick |" in (tmp_path / "outputs" / "bench" / n).read_text() for n in names[:2])
    capsys.readouterr()

    assert main(["parts=validator", "out=BENCHMARKS.md"]) == 0
    assert "| 9. quick |" in (tmp_path / "BENCHMARKS.md").read_text() and capsys.readouterr()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left

    for out, says in (("nowhere/B.md", "out: folder nowhere does not exist; create it, or give out=- to print only"),
                      ("outputs", "out: outputs is a folder; give a file name")):
        assert main(["parts=validator", f"out={out}"]) == 2
        assert capsys.readouterr().err.strip().startswith(f"error: {says}")
    assert len(ran) == 4  # the refused runs measured nothing
