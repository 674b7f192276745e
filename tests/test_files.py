"""archsearch.files: what every command and run leaves behind is whole or as it was before."""

import numpy as np
import pytest
import torch

from archsearch.files import put_back, read_if_any, write_whole


def test_a_writer_stopped_halfway_leaves_the_earlier_file_and_no_temporary_one(tmp_path):
    """A checkpoint (torch.save) or a data cache (np.savez) interrupted mid-write: the file a resumed
    run reads is the earlier one, whole, and nothing is left beside it."""
    path = tmp_path / "run" / "last.pt"
    write_whole(path, lambda f: torch.save({"epoch": 3}, f))

    def killed(f):
        f.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_whole(path, killed)
    assert torch.load(path) == {"epoch": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]

    cache = tmp_path / "cache" / "train.npz"  # np.savez appends .npz to a name without it: the temporary keeps it
    write_whole(cache, lambda f: np.savez(f, x=np.arange(3)))
    with np.load(cache) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in cache.parent.iterdir()) == ["train.npz"]


def test_a_refused_write_puts_back_what_it_replaced(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\n")
    before = read_if_any(mine)
    write_whole(mine, "name: refused\n")
    put_back(mine, before)
    assert mine.read_text() == "name: mine\n"
    new = tmp_path / "new.yaml"
    before = read_if_any(new)
    write_whole(new, b"name: refused\n")
    put_back(new, before)
    assert before is None and not new.exists()
