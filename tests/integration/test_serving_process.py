"""What the serving process must never do itself. Checked in a fresh interpreter, because the
test process imports everything the other tests need."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ringfence.service.core.fitting import knn_available

SERVE_AND_CLUSTER = textwrap.dedent(
    """
    import asyncio, sys
    from ringfence.client import AsyncClient, Fingerprint, ScoreRequest
    from ringfence.service.app import App
    from ringfence.service.settings import Settings

    async def main() -> None:
        app = App(Settings(port=0, host="127.0.0.1", data_dir=sys.argv[1],
                           cluster_backend="knn", cluster_assign_interval_s=0.05,
                           cluster_refit_interval_s=3600))
        port = await app.start()
        async with AsyncClient(f"127.0.0.1:{port}", timeout=5) as client:
            for i in range(40):
                await client.score(ScoreRequest(
                    account_id=f"acct-{i}", client_ip=f"203.0.113.{i % 4}",
                    fingerprint=Fingerprint(device_id=f"dev-{i % 3}")))
        await asyncio.sleep(0.3)  # several cluster-work ticks: the k-NN warm-up is asked for
        assert app._fit_warmed, "the k-NN warm-up was never handed to the refit worker"
        await app.refit_now()  # a k-NN fit, in the worker
        await app.place_pending_now()
        await app.stop(grace=1)
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in {"numba", "llvmlite", "fast_hdbscan", "pynndescent"})
        print("LOADED", loaded)

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not knn_available(), reason="fast-hdbscan is not installed")
def test_the_serving_process_never_imports_numba(tmp_path: Path) -> None:
    # Importing fast-hdbscan compiles or loads numba kernels holding the GIL: 33 s with a cold
    # numba cache (a fresh container), 1 s with a warm one. It happened on the event loop at
    # the first cluster tick and froze every call for that long; it belongs in the refit worker.
    out = subprocess.run(
        [sys.executable, "-c", SERVE_AND_CLUSTER, str(tmp_path)],
        capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED []" in out.stdout, out.stdout[-2000:]
