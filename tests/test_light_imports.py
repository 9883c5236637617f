"""The client and the connectors never load torch or transformers (users of search_and_rerank need no GPU stack)."""

from __future__ import annotations

import subprocess
import sys


def test_client_and_connectors_do_not_import_torch():
    code = (
        "import sys, connectors, sidecar, sidecar.client\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'torchvision') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
