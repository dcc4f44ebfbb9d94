"""Renders charts/tenantcred with the real Helm engine (helm-python-sdk) and prints the manifests
as one YAML stream. Usage: render_chart.py CHART RELEASE NAMESPACE VALUES_JSON"""

import json
import sys

import helm_python as helm

chart_dir, release, namespace, values = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
chart = helm.Chart.load(chart_dir)
manifests = chart.render(values, name=release, namespace=namespace, is_install=True)
for path, text in sorted(manifests.items()):
    if path.endswith("NOTES.txt") or not text.strip():
        continue
    print(f"---\n# Source: {path}\n{text}")
