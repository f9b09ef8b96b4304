// Validates the Prometheus Operator objects (ServiceMonitor, PrometheusRule) of a rendered
// manifest against the schemas of @kubernetes-models/prometheus-operator (generated from the
// Prometheus Operator's CRDs), offline. Other kinds are kubernetes-validate's. Usage:
//   node hack/validate-monitoring.mjs FILE
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const require = createRequire(process.env.NODE_MODULES_DIR + "/");
const yaml = require("js-yaml");
const kinds = {
  ServiceMonitor: "ServiceMonitor",
  PrometheusRule: "PrometheusRule",
};
const docs = yaml.loadAll(readFileSync(process.argv[2], "utf8")).filter(Boolean);
let failed = 0;
let checked = 0;
for (const doc of docs) {
  const kind = kinds[doc.kind];
  if (doc.apiVersion !== "monitoring.coreos.com/v1" || !kind) continue;
  const file = `${process.env.NODE_MODULES_DIR}/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}.js`;
  const module = await import(pathToFileURL(file).href);
  const Model = module[kind];
  try {
    new Model(doc).validate();
    checked++;
  } catch (error) {
    failed++;
    console.error(`${doc.kind} ${doc.metadata?.name}: ${error.message}`);
  }
}
if (failed || !checked) {
  console.error(failed ? `${failed} invalid` : "no Prometheus Operator object found");
  process.exit(1);
}
console.log(`ok: ${checked} Prometheus Operator objects validate`);
