"""The benchmark's plumbing on tiny sizes: it runs, writes a table, ratios are positive.
No timing is asserted."""

import re

import archsearch.bench
from archsearch.bench import OPTIONS, main
from archsearch.benchmark.parts import PARTS

SMALL = ["model=compact", "images=96", "reps=1", "batch=32", "trials=2", "mem_images=256", "mem_workers=1",
         "conc_trials=1", "conc_images=64", "conc_epochs=1", "run_images=1000"]


def bench_table(tmp_path, parts: str) -> str:
    out = tmp_path / "B.md"
    assert main([f"parts={parts}", *SMALL, f"out={out}"]) == 0
    text = out.read_text()
    ratios = [float(r.replace(",", "")) for r in re.findall(r"\| \**([\d.,]+)x", text)]
    assert ratios and all(r > 0 for r in ratios)
    assert "torch" in text and "machine:" in text and "model (parts train, breakdown, compile): compact" in text
    return text


# every part but compile (minutes of C++ builds: the real bench), in two halves that run side by side
def test_bench_model_parts_write_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    text = bench_table(tmp_path, "train,breakdown,validator,memory")
    assert "trainer.compile=false: auto for a run of 1,000 images chose eager (short run" in text
    for part in ("1. training, end to end", "1b. a run of 1,000 images, projected", "2a. model step alone", "2b. era_s9 augmentation",
                 "3. validator: dilated_sep", "3. validator: long30 (30 layers)", "5. peak memory"):
        assert part in text


def test_bench_sweep_parts_write_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    text = bench_table(tmp_path, "sweep,concurrency")
    for part in ("4. sweep overhead", "6. sweep throughput (trials/hour)"):
        assert part in text


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


def test_bench_refuses_an_unknown_option_before_measuring(capsys):
    assert main(["parts=validator", "nosuchkey=1"]) == 2
    out = capsys.readouterr()
    assert out.err == f"error: unknown option 'nosuchkey'; valid options: {', '.join(OPTIONS)}\n"
    assert "bench:" not in out.err and not out.out  # no part ran, nothing written


def test_the_help_lists_every_part_and_option():
    doc = archsearch.bench.__doc__
    assert f"comma list of: {', '.join(PARTS)} (default: all)" in doc
    for option in OPTIONS:
        assert re.search(rf"(?<![\w.]){re.escape(option)}\b", doc), option
