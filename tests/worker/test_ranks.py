"""``--gpus`` / ``AUTOSLIM_WORKER_GPUS``: which devices a worker's searches run on, one rank each.
(The multi-rank worker itself runs in test_end_to_end.py.)"""

from __future__ import annotations

import pytest

from worker.ranks import parse_gpus


def test_gpus_are_gpu_indices_or_a_number_of_cpu_ranks():
    assert parse_gpus("0,1, 3") == ["0", "1", "3"]
    assert parse_gpus("cpu:2") == parse_gpus(" cpu : 2 ") == ["cpu", "cpu"]
    assert parse_gpus("") == []
    for bad in ("0,0", "gpu1", "cpu", "cpu:0", "cpu:2,0", "0,cpu"):
        with pytest.raises(ValueError, match=r"e\.g\. 0,1,2,3, or cpu:N for N ranks on the CPU"):
            parse_gpus(bad)
