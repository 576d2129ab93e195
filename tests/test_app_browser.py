"""The demo page renders in a real browser (headless Chromium): title, status line, the domain choice and the
four tabs. The same Chromium takes a screenshot of a running demo (README.md, "The web demo"):
``chromium --headless --no-sandbox --hide-scrollbars --window-size=1400,1900 --virtual-time-budget=20000
--screenshot=demo.png http://127.0.0.1:7860/``."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from app.pipeline import DemoPipeline

from app_helpers import free_port, make_demo_weights
from test_app_domains import make_emoji_weights

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")]


def test_page_renders_the_tabs(tmp_path):
    from app.ui import build_demo, launch

    pipeline = DemoPipeline.load(weights_dir=make_emoji_weights(make_demo_weights(tmp_path / "weights")))
    demo = build_demo(pipeline)
    url = launch(demo, port=free_port(), block=False)
    try:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
             "--dump-dom", url],
            capture_output=True, text=True, timeout=120)
    finally:
        demo.close()
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    for tab in ("generate", "reconstruct", "tokens", "evaluate"):  # rendered tab buttons, not the config JSON
        assert 'role="tab"' in dom and f'data-tab-id="{tab}"' in dom, f"tab {tab!r} not rendered"
    assert "FlowMo" in dom and "32 tokens × vocab 64" in dom  # the title and the status line
    assert 'id="domain"' in dom and "Emoji" in dom  # the domain choice, with both domains
