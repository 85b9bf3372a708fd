// Runs a magenta.js model file with @magenta/sketch in Node.js, for tests/test_magenta_js.py.
//
//   node tests/js/mixture_params.js MODEL.json REQUEST.json
//
// (with NODE_PATH pointing at examples/web/node_modules). REQUEST.json holds
//   points: stroke-5 rows in model units, fed one by one from the state below (the start
//           token first); after each, the mixture parameters of the next point are recorded
//   initial_state: "zero" (the library's zeroState()) or "info" (the model's info.initial_state)
//   seed, temperature, max_steps: one sample drawn with model.sample() from the same state,
//           Math.random replaced by a seeded generator
// and the script prints one JSON object: {"params": [...], "sample": [[dx, dy, p1, p2, p3], ...]}.
'use strict';

const fs = require('fs');

// The library and TensorFlow.js log to the console; stdout carries the result alone.
console.log = (...args) => console.error(...args);
console.info = console.log;
console.warn = console.log;

const [modelPath, requestPath] = process.argv.slice(2);
const request = JSON.parse(fs.readFileSync(requestPath, 'utf8'));

// SketchRNN.initialize() fetches its URL; here the URL is a local file.
globalThis.fetch = async (url) => ({json: async () => JSON.parse(fs.readFileSync(url, 'utf8'))});

// mulberry32: a small seeded replacement for Math.random, which model.sample() draws from.
function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function startState(model) {
  if (request.initial_state === 'info') {
    const s = model.info.initial_state;
    return {h: new Float32Array(s.h), c: new Float32Array(s.c)};
  }
  return model.zeroState();
}

function pdfToObject(pdf) {
  const n = pdf.pi.length;
  return {
    pi: Array.from(pdf.pi), mu_x: Array.from(pdf.muX), mu_y: Array.from(pdf.muY),
    // getPDF's sigmaY runs on past its 20 entries (a slice bound in 0.2.0): keep those.
    sigma_x: Array.from(pdf.sigmaX), sigma_y: Array.from(pdf.sigmaY.slice(0, n)),
    corr: Array.from(pdf.corr), pen: Array.from(pdf.pen),
  };
}

async function main() {
  const ms = require('@magenta/sketch');
  await ms.tf.setBackend('cpu');
  const model = new ms.SketchRNN(modelPath);
  await model.initialize();
  model.setPixelFactor(model.info.scale_factor);  // scaleFactor 1: points are in model units

  const params = [];
  let state = startState(model);
  for (const point of request.points) {
    state = model.update(point, state);
    params.push(pdfToObject(model.getPDF(state, 1.0, 1.0)));
  }

  Math.random = seededRandom(request.seed);
  const sample = [];
  state = startState(model);
  let point = model.zeroInput();
  for (let t = 0; t < request.max_steps; t++) {
    state = model.update(point, state);
    point = model.sample(model.getPDF(state, request.temperature));
    sample.push(point);
    if (point[4] === 1) break;
  }
  process.stdout.write(JSON.stringify({params, sample, backend: ms.tf.getBackend()}) + '\n');
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
