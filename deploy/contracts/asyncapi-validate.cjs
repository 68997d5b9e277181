// Validates AsyncAPI documents with @asyncapi/parser, the library behind `asyncapi validate`:
// the schema of the spec version, $refs (proto/events/*.schema.json) and the AsyncAPI ruleset.
// Prints nothing but a summary line per file on success; exits 1 on any error-level diagnostic.
//   NODE_PATH=.local/contracts-node/node_modules node deploy/contracts/asyncapi-validate.cjs FILE...
'use strict';

const { Parser, fromFile, DiagnosticSeverity } = require('@asyncapi/parser');

const SEVERITY = ['error', 'warning', 'information', 'hint'];

async function main(files) {
  const parser = new Parser();
  let failed = false;
  for (const file of files) {
    const { document, diagnostics } = await fromFile(parser, file).parse();
    const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
    const others = diagnostics.length - errors.length;
    if (document === undefined || errors.length > 0) {
      failed = true;
      for (const d of diagnostics) {
        const at = d.range ? `${d.range.start.line + 1}:${d.range.start.character + 1}` : '-';
        console.error(`${file}:${at} ${SEVERITY[d.severity]} ${d.code} ${d.message} (${d.path.join('.')})`);
      }
      continue;
    }
    console.log(`${file}: valid AsyncAPI ${document.version()} (${others} non-error diagnostics)`);
  }
  return failed ? 1 : 0;
}

if (process.argv.length < 3) {
  console.error('usage: asyncapi-validate.cjs FILE...');
  process.exit(2);
}
main(process.argv.slice(2)).then(
  (rc) => process.exit(rc),
  (err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  },
);
