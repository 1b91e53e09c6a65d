// dist/index.js: the one ESM file a browser loads (minified); prints its size gzipped.
import { build } from "esbuild";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

await build({ entryPoints: ["src/index.ts"], bundle: true, format: "esm", minify: true, target: "es2020", outfile: "dist/index.js" });
const code = readFileSync("dist/index.js");
console.log(`dist/index.js: ${code.length} B minified, ${gzipSync(code, { level: 9 }).length} B gzipped`);
