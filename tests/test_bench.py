"""The benchmark's plumbing on tiny sizes: it runs, writes a table, ratios are positive.
No timing is asserted."""

import re

from archsearch.bench import main


def test_bench_runs_all_parts_and_writes_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "B.md"
    parts = "parts=train,breakdown,validator,sweep,concurrency,memory"  # compile (minutes of C++ builds): the real bench
    code = main([parts, "images=96", "reps=1", "batch=32", "trials=2", "mem_images=256", "mem_workers=1",
                 "conc_trials=1", "conc_images=64", "conc_epochs=1", f"out={out}"])
    assert code == 0
    text = out.read_text()
    for part in ("1. training, end to end", "2a. model step alone", "2b. era_s9 augmentation",
                 "3. validator: dilated_sep", "3. validator: long30 (30 layers)", "4. sweep overhead",
                 "5. peak memory", "6. sweep throughput (trials/hour)"):
        assert part in text
    ratios = [float(r.replace(",", "")) for r in re.findall(r"\| \**([\d.,]+)x", text)]
    assert ratios and all(r > 0 for r in ratios)
    assert "torch" in text and "machine:" in text


def test_bench_rejects_bad_options(capsys):
    assert main(["parts=train,nope"]) == 2
    assert "parts: unknown part 'nope'" in capsys.readouterr().err
    assert main(["data=folder"]) == 2
