// Builds dist/: index.html, assets/app-<hash>.js and .css, and a .gz and a .br of each,
// reproducibly (esbuild's content hashes, fixed compression options, no timestamps), so the
// committed bundle can be checked against its source (check.sh).
import { build } from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");

// The client's one runtime dependency resolved from this package (the same exact version as
// web/client's lockfile), wherever it is imported from: one copy in the bundle, and web/client
// needs no install of its own for the board to build.
const runtimeDir = join(root, "node_modules/@bufbuild/protobuf");
const runtimeExports = JSON.parse(readFileSync(join(runtimeDir, "package.json"), "utf8")).exports;
/** The ES module file of a package.json `exports` target (conditions `import`, then `default`). */
function esmFile(target) {
  if (typeof target === "string") return target;
  for (const condition of ["import", "default"]) {
    if (target?.[condition]) return esmFile(target[condition]);
  }
  return undefined;
}
const ownRuntime = {
  name: "own-runtime",
  setup(build) {
    build.onResolve({ filter: /^@bufbuild\/protobuf(\/|$)/ }, (args) => {
      const entry = esmFile(runtimeExports[`.${args.path.slice("@bufbuild/protobuf".length)}`]);
      if (!entry) return { errors: [{ text: `${args.path} is not exported as an ES module` }] };
      return { path: join(runtimeDir, entry) };
    });
  },
};

const result = await build({
  absWorkingDir: root,
  entryPoints: ["src/main.tsx"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  jsx: "automatic",
  jsxImportSource: "preact",
  // The client package from its TypeScript source: the bundle then depends on sources only,
  // not on whether web/client was built.
  alias: { "@pm-server/client": join(root, "../client/src/index.ts") },
  plugins: [ownRuntime],
  outdir: "dist/assets",
  entryNames: "app-[hash]",
  assetNames: "[name]-[hash]",
  legalComments: "none",
  charset: "utf8",
  write: false,
  logLevel: "warning",
});

rmSync(dist, { recursive: true, force: true });
const files = new Map();
for (const file of result.outputFiles) {
  files.set(`assets/${basename(file.path)}`, Buffer.from(file.contents));
}
const js = [...files.keys()].find((f) => f.endsWith(".js"));
const css = [...files.keys()].find((f) => f.endsWith(".css"));
const template = readFileSync(join(root, "src/index.html"), "utf8");
files.set(
  "index.html",
  Buffer.from(template.replace("%CSS%", `/${css}`).replace("%JS%", `/${js}`)),
);

const rows = [];
for (const [name, data] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
  const path = join(dist, name);
  mkdirSync(dirname(path), { recursive: true });
  // gzip: node's header carries no file name and mtime 0; level 9 always.
  const gz = gzipSync(data, { level: 9 });
  const br = brotliCompressSync(data, {
    params: {
      [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
      [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
      [constants.BROTLI_PARAM_SIZE_HINT]: data.length,
    },
  });
  writeFileSync(path, data);
  // A compressed sibling only where it is smaller; the server falls back to the raw file.
  if (gz.length < data.length) writeFileSync(`${path}.gz`, gz);
  if (br.length < data.length) writeFileSync(`${path}.br`, br);
  rows.push(
    `${name.padEnd(32)} ${String(data.length).padStart(8)} raw ${String(gz.length).padStart(7)} gz ${String(br.length).padStart(7)} br`,
  );
}
console.log(rows.join("\n"));
