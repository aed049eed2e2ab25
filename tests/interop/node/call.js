// A second, independent SOAP stack: npm `soap` reads each renkei WSDL (and the XSDs it
// imports over HTTP) and calls its operation. Reads a JSON list of calls on stdin:
//   [{"wsdl": url, "operation": name, "header": xml, "body": xml}, ...]
// and prints one JSON line per call: {"operation", "ok": true, "result"} or
// {"operation", "ok": false, "status", "faultcode", "codes"}.
"use strict";
const soap = require("soap");

function codesOf(fault) {
  const detail = (fault && fault.detail) || {};
  const findings = detail.Findings || {};
  let list = findings.Finding || [];
  if (!Array.isArray(list)) list = [list];
  return list.map((finding) => finding.code);
}

async function call(job) {
  const client = await soap.createClientAsync(job.wsdl);
  client.addSoapHeader(job.header);
  const method = client[job.operation + "Async"];
  if (typeof method !== "function") {
    return { operation: job.operation, ok: false, error: "operation not in the WSDL" };
  }
  try {
    const [result, , header] = await method.call(client, { _xml: job.body });
    return { operation: job.operation, ok: true, result, header: header || null };
  } catch (error) {
    const fault = error.root && error.root.Envelope && error.root.Envelope.Body
      ? error.root.Envelope.Body.Fault : undefined;
    return {
      operation: job.operation,
      ok: false,
      status: error.response ? error.response.status : null,
      faultcode: fault ? fault.faultcode : null,
      codes: codesOf(fault),
      error: fault ? undefined : String(error),
    };
  }
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const jobs = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  for (const job of jobs) {
    process.stdout.write(JSON.stringify(await call(job)) + "\n");
  }
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + "\n");
  process.exit(1);
});
