"""The Helm chart renders what config/ renders, object by object, apart from Helm's own labels
and the Namespace (Helm installs into an existing one: `--create-namespace`). Usage:
    chart-matches-config.py HELM_OUTPUT KUSTOMIZE_OUTPUT...
"""
import sys

import yaml

HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance"}


def objects(paths):
    found = {}
    for path in paths:
        with open(path) as file:
            for obj in yaml.safe_load_all(file):
                if not obj or obj["kind"] == "Namespace":
                    continue
                labels = obj["metadata"].get("labels", {})
                for label in HELM_LABELS:
                    labels.pop(label, None)
                meta = obj["metadata"]
                found[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
    return found


def main():
    chart, config = objects(sys.argv[1:2]), objects(sys.argv[2:])
    problems = [f"only in the chart: {key}" for key in chart.keys() - config.keys()]
    problems += [f"only in config/: {key}" for key in config.keys() - chart.keys()]
    problems += [
        f"differs: {key}\n  chart:  {chart[key]}\n  config: {config[key]}"
        for key in chart.keys() & config.keys()
        if chart[key] != config[key]
    ]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"ok: the chart renders the {len(chart)} objects of {' '.join(sys.argv[2:])}")


main()
