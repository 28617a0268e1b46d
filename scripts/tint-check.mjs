// Compiles every pipeline variant of a variant list under Tint, the WGSL compiler of
// Chrome and Dawn, and prints one row per variant. Exits 1 if any variant fails or could
// not be compiled, 2 if the check itself cannot run.
//
//   node scripts/tint-check.mjs target/pipeline-variants.json
//
// The list is a JSON array of {family, entry, constants, wgsl, excluded}: `wgsl` is the
// module exactly as the engine gives it to wgpu, `constants` its override values, and
// `excluded` null or the reason the variant cannot go through Tint. Tint runs inside
// dawn.node (npm package `webgpu`, installed into .tint/ by scripts/setup-tint.sh) on
// whatever Vulkan driver is present, lavapipe in CI. Each variant is compiled as a browser
// would: the shader module, then a compute pipeline with layout 'auto', so that errors
// which depend on the override values (array sizes, workgroup sizes) show too, and so
// does anything Tint's SPIR-V writer, or the driver when the pipeline is created, rejects.

import { readFileSync } from 'node:fs';

const DAWN_NODE_PACKAGE = new URL('../.tint/node_modules/webgpu/', import.meta.url);

// The WebGPU device feature that each WGSL `enable` of our shaders needs.
const FEATURE_OF_EXTENSION = { f16: 'shader-f16', subgroups: 'subgroups' };

/** Exits with status 2: the check could not run, which is not a verdict on the shaders. */
function fatal(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

function readVariants(path) {
  let variants;
  try {
    variants = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    fatal(`cannot read the variant list ${path}: ${e.message}`);
  }
  if (!Array.isArray(variants)) fatal(`${path} is not a JSON array`);
  variants.forEach((v, i) => {
    const wellFormed =
      typeof v?.family === 'string' &&
      typeof v.entry === 'string' &&
      typeof v.wgsl === 'string' &&
      typeof v.constants === 'object' &&
      v.constants !== null &&
      (v.excluded === null || typeof v.excluded === 'string');
    if (!wellFormed) fatal(`${path}: item ${i} lacks family, entry, constants, wgsl or excluded`);
  });
  return variants;
}

// dawn.node shuts Dawn down once the object that create() returned is garbage-collected,
// so that object is kept here for the whole run.
let gpu;

async function openDevice() {
  let webgpu;
  try {
    webgpu = await import(new URL('index.js', DAWN_NODE_PACKAGE));
  } catch (e) {
    fatal(`dawn.node is not installed (${e.message}); run scripts/setup-tint.sh`);
  }
  Object.assign(globalThis, webgpu.globals);
  gpu = webgpu.create([]);
  const adapter = await gpu.requestAdapter();
  if (!adapter) {
    fatal(
      'Dawn found no adapter: it needs a Vulkan driver (scripts/setup-lavapipe.sh installs ' +
        "lavapipe; VK_DRIVER_FILES can point Vulkan's loader at a driver's ICD file)",
    );
  }
  const requiredFeatures = Object.values(FEATURE_OF_EXTENSION).filter((f) =>
    adapter.features.has(f),
  );
  // The engine opens its device with the adapter's own limits, not WebGPU's defaults
  // (some kernels bind 10 storage buffers, over the default 8): so does the check.
  const requiredLimits = {};
  for (const name in adapter.limits) requiredLimits[name] = adapter.limits[name];
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  const { version } = JSON.parse(readFileSync(new URL('package.json', DAWN_NODE_PACKAGE), 'utf8'));
  const { description, vendor, architecture } = adapter.info;
  console.log(`Tint of dawn.node (npm webgpu ${version}) on ${description || `${vendor} ${architecture}`}`);
  console.log(`device: the adapter's limits; features ${requiredFeatures.join(', ') || 'none'}\n`);
  return device;
}

/** Why the device cannot compile this module, or null if it can. */
function missingFeature(wgsl, device) {
  for (const [, list] of wgsl.matchAll(/^\s*enable\s+([^;]+);/gm)) {
    for (const extension of list.split(',').map((name) => name.trim())) {
      const feature = FEATURE_OF_EXTENSION[extension];
      if (feature === undefined) return `'enable ${extension}' is no WebGPU extension`;
      if (!device.features.has(feature)) return `the adapter lacks '${feature}'`;
    }
  }
  return null;
}

/** Runs `create` inside error scopes; returns its result and the errors the scopes caught. */
async function withErrorScopes(device, create) {
  device.pushErrorScope('validation');
  device.pushErrorScope('internal');
  const result = await create();
  const errors = [];
  for (const scope of ['internal', 'validation']) {
    const error = await device.popErrorScope();
    if (error) errors.push(`${scope} error: ${error.message.trimEnd()}`);
  }
  return { result, errors };
}

/** Tint's messages as `error 62:17: message` with the source line they point at. */
function formatMessages(messages, wgsl) {
  const lines = wgsl.split('\n');
  return messages.map((m) => {
    const at = m.lineNum > 0 ? ` ${m.lineNum}:${m.linePos}` : '';
    const source = m.lineNum > 0 ? `\n    | ${lines[m.lineNum - 1]?.trim() ?? ''}` : '';
    return `${m.type}${at}: ${m.message}${source}`;
  });
}

/** Creates the shader module of `wgsl`: Tint parses and validates the whole module here.
 *  Tint's messages are the errors: the error scope then holds only the same text again. */
async function compileModule(device, label, wgsl) {
  const { result, errors: scopeErrors } = await withErrorScopes(device, async () => {
    const module = device.createShaderModule({ label, code: wgsl });
    return { module, info: await module.getCompilationInfo() };
  });
  const messages = result.info.messages;
  const errors = formatMessages(messages.filter((m) => m.type === 'error'), wgsl);
  const warnings = formatMessages(messages.filter((m) => m.type !== 'error'), wgsl);
  return { module: result.module, errors: errors.length > 0 ? errors : scopeErrors, warnings };
}

/** Creates the variant's compute pipeline: the overrides are applied, the entry point's
 *  code is generated for the backend (SPIR-V on Vulkan) and handed to the driver. */
async function compilePipeline(device, module, variant) {
  const { result: rejection, errors } = await withErrorScopes(device, () =>
    device
      .createComputePipelineAsync({
        label: `${variant.family}::${variant.entry}`,
        layout: 'auto',
        compute: { module, entryPoint: variant.entry, constants: variant.constants },
      })
      .then(
        () => null,
        (e) => e,
      ),
  );
  return rejection ? [`pipeline: ${rejection.message.trimEnd()}`, ...errors] : errors;
}

function constantsText(constants) {
  const pairs = Object.entries(constants).map(([name, value]) => `${name}=${value}`);
  return pairs.length > 0 ? pairs.join(',') : '-';
}

/** Prints rows as columns padded to their widest cell. */
function printTable(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  for (const row of rows) {
    console.log(row.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd());
  }
}

/** A block of the report: a heading and its indented lines. */
function section(heading, lines) {
  return [heading, ...lines.map((line) => line.replace(/^/gm, '  '))].join('\n');
}

async function main() {
  if (process.argv.length !== 3) fatal('usage: node scripts/tint-check.mjs VARIANTS.json');
  const variants = readVariants(process.argv[2]);
  const device = await openDevice();
  // Errors that no scope caught (there should be none), charged to the variant at hand.
  const uncaught = [];
  device.addEventListener('uncapturederror', (event) => uncaught.push(event.error.message.trimEnd()));

  // Many variants share a module: each module is compiled, and its messages shown, once.
  const modules = new Map();
  const rows = [['family', 'entry', 'constants', 'result']];
  const report = [];
  const counts = { compiled: 0, failed: 0, unchecked: 0, excluded: 0 };
  for (const variant of variants) {
    const name = `${variant.family}::${variant.entry}`;
    const row = [variant.family, variant.entry, constantsText(variant.constants)];
    rows.push(row);
    if (variant.excluded !== null) {
      row.push(`excluded: ${variant.excluded}`);
      counts.excluded += 1;
      continue;
    }
    const lacking = missingFeature(variant.wgsl, device);
    if (lacking !== null) {
      // Not compiled, so not known to compile: counted against the check, named for what it is.
      row.push(`NOT CHECKED: ${lacking}`);
      counts.unchecked += 1;
      continue;
    }
    if (!modules.has(variant.wgsl)) {
      const compiled = await compileModule(device, name, variant.wgsl);
      modules.set(variant.wgsl, { ...compiled, firstUser: name });
      if (compiled.errors.length + compiled.warnings.length > 0) {
        report.push(section(`module of ${name}:`, [...compiled.errors, ...compiled.warnings]));
      }
    }
    const module = modules.get(variant.wgsl);
    const moduleFails = module.errors.length > 0;
    const errors = moduleFails ? [] : await compilePipeline(device, module.module, variant);
    errors.push(...uncaught.splice(0).map((message) => `uncaptured error: ${message}`));
    if (errors.length > 0) report.push(section(`${row.join(' ')}:`, errors));
    if (moduleFails) {
      row.push(`FAILED: its module does not compile (see ${module.firstUser})`);
      counts.failed += 1;
    } else if (errors.length > 0) {
      row.push(`FAILED: ${errors[0].split('\n')[0]}`);
      counts.failed += 1;
    } else {
      row.push(module.warnings.length > 0 ? 'ok, with warnings' : 'ok');
      counts.compiled += 1;
    }
  }
  device.destroy();

  printTable(rows);
  if (report.length > 0) console.log(`\n${report.join('\n\n')}`);
  console.log(
    `\ntint: ${counts.compiled} of ${variants.length} variants compiled; ${counts.failed} failed, ` +
      `${counts.unchecked} not checked, ${counts.excluded} excluded`,
  );
  return counts.failed + counts.unchecked === 0 ? 0 : 1;
}

process.exitCode = await main();
