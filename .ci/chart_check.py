"""Lints and renders charts/tenantcred with the real Helm engine (helm-python-sdk), then checks the
rendered objects: they parse, the Deployment is hardened, the RBAC grants no verb the code does not
use, the chart's CRD is the generated one, and every flag passed to the binary exists."""

import pathlib
import subprocess
import sys

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "tenantcred"
BINARY = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "debug" / "tenantcred")

# (apiGroup, resource) -> the verbs tenantcred's code uses. Anything else is a finding.
USED = {
    ("tenantcred.dev", "tenantapicredentials"): {"list", "watch", "patch"},
    ("tenantcred.dev", "tenantapicredentials/status"): {"patch"},
    ("", "secrets"): {"get", "list", "watch", "create", "patch"},
    ("events.k8s.io", "events"): {"create"},
    ("apps", "deployments"): {"patch"},
    ("apps", "statefulsets"): {"patch"},
    ("apps", "daemonsets"): {"patch"},
    ("coordination.k8s.io", "leases"): {"get", "list", "watch", "create", "patch"},
    ("tenantcred.dev", "apiproviders"): {"list", "watch"},
    ("tenantcred.dev", "apiproviders/status"): {"patch"},
}
# Roles for people (labelled tenantcred.dev/role-for=people) grant only these.
PEOPLE = {("tenantcred.dev", "apiproviders"): {"get", "list", "watch", "create", "update", "patch", "delete"}}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def render(values, label):
    report = helm.lint(str(CHART), values, strict=True, namespace="tenantcred-system")
    for m in report.get("messages", []):
        if m.get("severity", 0) >= 2:
            fail(f"[{label}] helm lint: {m}")
    for e in report.get("errors", []) or []:
        fail(f"[{label}] helm lint error: {e}")
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(values, name="tenantcred", namespace="tenantcred-system", is_install=True)
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            for key in ("apiVersion", "kind"):
                if key not in doc:
                    fail(f"[{label}] {path}: a document without {key}")
            if not doc.get("metadata", {}).get("name"):
                fail(f"[{label}] {path}: a document without metadata.name")
            docs.append(doc)
    print(f"[{label}] lint clean, rendered {len(docs)} objects: {sorted({d['kind'] for d in docs})}")
    return docs


def check_rbac(docs, label):
    for d in docs:
        if d["kind"] not in ("Role", "ClusterRole"):
            continue
        people = d["metadata"].get("labels", {}).get("tenantcred.dev/role-for") == "people"
        for rule in d.get("rules", []):
            for group in rule.get("apiGroups", []):
                for res in rule.get("resources", []):
                    allowed = (PEOPLE if people else USED).get((group, res))
                    for verb in rule.get("verbs", []):
                        if verb == "*" or group == "*" or res == "*":
                            fail(f"[{label}] {d['kind']} {d['metadata']['name']}: wildcard")
                        elif allowed is None or verb not in allowed:
                            fail(f"[{label}] {d['kind']} {d['metadata']['name']} grants {verb} on {group}/{res}, which the code never uses")


def check_deployment(docs, label):
    deps = [d for d in docs if d["kind"] == "Deployment"]
    if len(deps) != 1:
        fail(f"[{label}] expected one Deployment, got {len(deps)}")
        return []
    pod = deps[0]["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(f"[{label}] pod must run as non-root with seccomp RuntimeDefault")
    c = pod["containers"][0]
    sc = c.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
        fail(f"[{label}] container must have a read-only root filesystem and no privilege escalation")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        fail(f"[{label}] container must drop all capabilities")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        if c.get(probe, {}).get("httpGet", {}).get("path") != path:
            fail(f"[{label}] {probe} must call {path}")
    if not c.get("resources", {}).get("requests"):
        fail(f"[{label}] container needs resource requests")
    return c["args"]


def check_flags(args, label):
    help_text = subprocess.run([BINARY, "run", "--help"], capture_output=True, text=True, check=True).stdout
    if args[0] != "run":
        fail(f"[{label}] the container must run `tenantcred run`")
    for a in args[1:]:
        flag = a.split("=", 1)[0]
        if flag not in help_text:
            fail(f"[{label}] flag {flag} is not a flag of `tenantcred run`")


ALLOWED = ["api.example.com:8443", "*.corp.example", "10.20.0.0/16", "192.168.1.5:9000"]
cluster = render({"prometheusRule": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}},
                  "networkPolicy": {"enabled": True}, "operator": {"allowedHosts": ALLOWED},
                  "grafanaDashboard": {"enabled": True}}, "cluster-wide")


def check_network_policy(docs, label):
    """Egress: DNS, the API server, providers on public addresses (443 + allowedHosts ports), and
    each address pattern of allowedHosts as its own ipBlock on its port (443 when none is written);
    nothing else."""
    nps = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if len(nps) != 1:
        fail(f"[{label}] expected one NetworkPolicy, got {len(nps)}")
        return
    egress = nps[0]["spec"]["egress"]
    ports = lambda rule: sorted(p["port"] for p in rule.get("ports", []))
    if ports(egress[0]) != [53, 53]:
        fail(f"[{label}] first egress rule must be DNS only: {egress[0]}")
    if ports(egress[1]) != [443, 6443]:
        fail(f"[{label}] second egress rule must be the API server ports: {egress[1]}")
    providers = egress[2]
    if ports(providers) != [443, 8443, 9000]:
        fail(f"[{label}] provider ports must be 443 and those of allowedHosts: {ports(providers)}")
    v4, v6 = providers["to"][0]["ipBlock"], providers["to"][1]["ipBlock"]
    if v4["cidr"] != "0.0.0.0/0" or not {"10.0.0.0/8", "169.254.0.0/16", "127.0.0.0/8", "198.18.0.0/15"} <= set(v4["except"]):
        fail(f"[{label}] providers must be public addresses only: {v4}")
    if v6["cidr"] != "2000::/3" or "2002::/16" not in v6["except"]:
        fail(f"[{label}] IPv6 providers must be global unicast, less 6to4 and the special blocks: {v6}")
    nets = {(r["to"][0]["ipBlock"]["cidr"], tuple(ports(r))) for r in egress[3:]}
    if nets != {("10.20.0.0/16", (443,)), ("192.168.1.5/32", (9000,))}:
        fail(f"[{label}] allowedHosts addresses must be ipBlocks of their own: {nets}")


check_network_policy(cluster, "cluster-wide")
import json
dashboards = [d for d in cluster if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
if len(dashboards) != 1:
    fail("[cluster-wide] grafanaDashboard.enabled must render one ConfigMap labelled grafana_dashboard=1")
elif json.loads(dashboards[0]["data"]["tenantcred.json"]) != json.loads((CHART / "dashboards" / "tenantcred.json").read_text()):
    fail("[cluster-wide] the dashboard ConfigMap must hold charts/tenantcred/dashboards/tenantcred.json")
args = [d for d in cluster if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
if [a for a in args if a.startswith("--allowed-host=")] != [f"--allowed-host={h}" for h in ALLOWED]:
    fail(f"[cluster-wide] allowedHosts must become --allowed-host flags: {args}")
defaults = render({}, "defaults")
if sum(d["kind"] == "NetworkPolicy" for d in defaults) != 1:
    fail("[defaults] the egress NetworkPolicy must be on by default")
namespaced = render({"watchNamespaces": ["partner-prod", "partner-staging"], "leaderElection": {"enabled": False},
                     "replicaCount": 1}, "namespaced")
for docs, label in ((cluster, "cluster-wide"), (namespaced, "namespaced")):
    check_rbac(docs, label)
    check_flags(check_deployment(docs, label), label)
kinds = {d["kind"] for d in cluster}
for k in ("ClusterRole", "ClusterRoleBinding", "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "PodDisruptionBudget", "ConfigMap"):
    if k not in kinds:
        fail(f"[cluster-wide] no {k} rendered")
def cluster_wide_resources(d):
    return {r for rule in d.get("rules", []) for r in rule.get("resources", [])}
for d in namespaced:
    if d["kind"] == "ClusterRole" and not cluster_wide_resources(d) <= {"apiproviders", "apiproviders/status"}:
        fail(f"[namespaced] namespaced mode must grant nothing cluster-wide but the ApiProviders: {d['metadata']['name']}")
roles = sorted(d["metadata"]["namespace"] for d in namespaced if d["kind"] == "Role")
if roles != ["partner-prod", "partner-staging"]:
    fail(f"[namespaced] expected a Role in each watched namespace, got {roles}")
rules = [d for d in cluster if d["kind"] == "PrometheusRule"][0]["spec"]["groups"][0]["rules"]
alerts = sorted(r["alert"] for r in rules)
print(f"alerts: {alerts}")

for crd in sorted((ROOT / "crds").glob("*.yaml")):
    chart_crd = CHART / "crds" / crd.name
    if not chart_crd.exists() or chart_crd.read_text() != crd.read_text():
        fail(f"charts/tenantcred/crds/{crd.name} differs from crds/: copy the generated CRDs")

if failures:
    print(f"{len(failures)} chart checks failed")
    sys.exit(1)
print("chart checks passed")
