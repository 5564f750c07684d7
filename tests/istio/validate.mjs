// Validate Istio resources against the CRD schemas Istio publishes, compiled into
// @kubernetes-models/istio (pinned in package.json). Reads a JSON array of resources on stdin and
// prints one JSON result per resource: {"kind": ..., "ok": true} or {"kind": ..., "ok": false, "error": ...}.
import { WasmPlugin } from "@kubernetes-models/istio/extensions.istio.io/v1alpha1/WasmPlugin";

const kinds = { WasmPlugin };

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((resource) => {
  const Model = kinds[resource.kind];
  if (!Model) return { kind: resource.kind, ok: false, error: `no published schema for kind ${resource.kind}` };
  try {
    new Model(resource).validate();
    return { kind: resource.kind, ok: true };
  } catch (err) {
    return { kind: resource.kind, ok: false, error: String(err && err.message ? err.message : err) };
  }
});
process.stdout.write(JSON.stringify(results) + "\n");
