// Validates monitoring.coreos.com/v1 objects (PrometheusRule, ServiceMonitor, PodMonitor) against the schemas of the
// Prometheus Operator's CRDs, compiled into @kubernetes-models/prometheus-operator (types, required fields, enums and
// patterns such as durations; like the API server, the schemas do not refuse unknown fields).
// stdin: a JSON array of objects. stdout: a JSON array of {"name", "problem"}, empty when every object is valid.
import { readFileSync } from "node:fs";

const KINDS = new Set(["PrometheusRule", "ServiceMonitor", "PodMonitor"]);
const docs = JSON.parse(readFileSync(0, "utf8"));
const problems = [];
for (const doc of docs) {
  const name = `${doc.kind}/${doc.metadata?.name}`;
  if (doc.apiVersion !== "monitoring.coreos.com/v1" || !KINDS.has(doc.kind)) {
    problems.push({ name, problem: `not a monitoring.coreos.com/v1 ${[...KINDS].join("/")}: ${doc.apiVersion}` });
    continue;
  }
  const module = await import(`@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${doc.kind}`);
  try {
    new module[doc.kind](doc).validate();
  } catch (error) {
    problems.push({ name, problem: String(error.message) });
  }
}
process.stdout.write(JSON.stringify(problems));
