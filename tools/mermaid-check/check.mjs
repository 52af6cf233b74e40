// Parse Mermaid files with Mermaid's own parser (mermaid.parse), the one
// GitHub's renderer runs first. Usage: node check.mjs FILE...; prints one
// JSON line per file: {"file", "ok", "type", "error"}; exit 1 if any fails.
// Mermaid's module touches DOM globals when loaded: jsdom provides them.
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

let failed = 0;
for (const file of process.argv.slice(2)) {
  const text = readFileSync(file, 'utf8');
  try {
    const res = await mermaid.parse(text);
    console.log(JSON.stringify({ file, ok: true, type: res.diagramType }));
  } catch (err) {
    failed += 1;
    const msg = String(err && err.message ? err.message : err).split('\n').slice(0, 4).join(' | ');
    console.log(JSON.stringify({ file, ok: false, error: msg }));
  }
}
process.exit(failed ? 1 : 0);
