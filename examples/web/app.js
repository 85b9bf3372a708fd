// Start a drawing on the canvas; a Sketch-RNN model in the magenta.js format finishes it.
//
// The model runs in @magenta/sketch 0.2.0 (`window.ms`, from its bundle). Its API, in pixels:
// `update(point, state)` feeds one stroke-5 point [dx, dy, pen down, pen up, end] and returns
// the LSTM's new state, `getPDF(state, temperature)` gives the distribution of the next point
// and `sample(pdf)` draws one. A point's pen state says what happens after it: the move to the
// next point is drawn only if the pen stayed down.
//
// The page's state is on `window.sketchPage` (and in #status's data attributes), which
// tests/test_web.py reads: ready, finished, userStrokes, modelStrokes, modelPoints, error.
'use strict';

const query = new URLSearchParams(window.location.search);
const MODEL_URL = query.get('model') || 'sheep.gen.json';  // ?model=other.gen.json loads another
const PIXEL_FACTOR = 1;  // one unit of the training data is one CSS pixel (a sheep: ~240 x 150)
const SIMPLIFY_TOLERANCE = 2;  // pixels; the training strokes were simplified (RDP) about as much
const POINTS_PER_FRAME = 2;  // the model's drawing speed
const USER_COLOR = '#111';
const MODEL_COLOR = '#d33';

const canvas = document.getElementById('canvas');
const context = canvas.getContext('2d');
const status = document.getElementById('status');
const sampleButton = document.getElementById('sample');
const clearButton = document.getElementById('clear');
const temperatureInput = document.getElementById('temperature');
const temperatureOutput = document.getElementById('temperature-value');

// ?seed=N makes the model's draws reproducible: the library draws from Math.random, replaced
// here by mulberry32, a small seeded generator.
if (query.has('seed')) {
  let a = Number(query.get('seed')) >>> 0;
  Math.random = () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const page = window.sketchPage = {
  ready: false, finished: false, userStrokes: 0, modelStrokes: 0, modelPoints: 0, error: null,
};

let model = null;
let userLines = [];  // the person's finished lines, each [[x, y], ...] in canvas pixels
let currentLine = null;  // the line being drawn
let animation = null;  // the requestAnimationFrame id of the model's drawing

// Sharp lines on high-density screens: the backing store has devicePixelRatio pixels per CSS pixel.
const WIDTH = canvas.width;
const HEIGHT = canvas.height;
const ratio = window.devicePixelRatio || 1;
canvas.style.width = `${WIDTH}px`;
canvas.style.height = `${HEIGHT}px`;
canvas.width = WIDTH * ratio;
canvas.height = HEIGHT * ratio;
context.scale(ratio, ratio);
context.lineCap = 'round';
context.lineJoin = 'round';
context.lineWidth = 3;

function setStatus(text) {
  status.textContent = text;
  status.dataset.userStrokes = page.userStrokes;
  status.dataset.modelStrokes = page.modelStrokes;
  status.dataset.modelPoints = page.modelPoints;
}

function segment(from, to, color) {
  context.strokeStyle = color;
  context.beginPath();
  context.moveTo(from[0], from[1]);
  context.lineTo(to[0], to[1]);
  context.stroke();
}

function redraw() {
  context.clearRect(0, 0, WIDTH, HEIGHT);
  for (const line of userLines) {
    for (let i = 1; i < line.length; i++) segment(line[i - 1], line[i], USER_COLOR);
  }
}

function stopModel() {
  if (animation !== null) cancelAnimationFrame(animation);
  animation = null;
}

function temperature() {
  return Number(temperatureInput.value);
}

// The LSTM's starting state: an export of a conditional model carries the state its z gives
// (info.initial_state); a decoder-only model starts from zeros, as the library's zeroState().
function startState() {
  const s = model.info.initial_state;
  return s ? {h: Float32Array.from(s.h), c: Float32Array.from(s.c)} : model.zeroState();
}

// The state after the start token and `points`: it gives the distribution of the next point.
function stateAfter(points) {
  let state = model.update(model.zeroInput(), startState());
  for (const point of points) state = model.update(point, state);
  return state;
}

// Draws points from the model until its end token or `limit` points; the end token is dropped.
function sampleFrom(state, limit) {
  const points = [];
  for (let i = 0; i < limit; i++) {
    const point = model.sample(model.getPDF(state, temperature()));
    if (point[4] === 1) break;
    points.push(point);
    state = model.update(point, state);
  }
  return points;
}

// The person's lines as stroke-5 points, each line reached with the pen up from the last one.
function userPoints() {
  let points = [];
  let last = userLines[0][0];
  for (const line of userLines) {
    points = points.concat(model.lineToStroke(line, last));
    last = line[line.length - 1];
  }
  return points;
}

// Draws the model's points from `start`, a few per frame; the pen is up before the first.
function animate(points, start, done) {
  let i = 0;
  let position = start;
  let penDown = false;  // whether the pen stayed down after the previous point
  let drawing = false;  // whether the previous move drew a line (a new line is a new stroke)
  page.finished = false;
  page.modelStrokes = 0;
  page.modelPoints = 0;
  const frame = () => {
    for (let k = 0; k < POINTS_PER_FRAME && i < points.length; k++, i++) {
      const [dx, dy, down] = points[i];
      const next = [position[0] + dx, position[1] + dy];
      if (penDown) {
        if (!drawing) page.modelStrokes += 1;
        segment(position, next, MODEL_COLOR);
      }
      drawing = penDown;
      penDown = down === 1;
      position = next;
      page.modelPoints += 1;
    }
    if (i < points.length) {
      animation = requestAnimationFrame(frame);
      return;
    }
    animation = null;
    page.finished = true;
    done();
  };
  animation = requestAnimationFrame(frame);
}

function finishDrawing() {
  const points = userPoints();
  const state = stateAfter(points);
  const limit = Math.max(model.info.max_seq_len - points.length, 50);
  const lastLine = userLines[userLines.length - 1];
  setStatus('the model is drawing...');
  animate(sampleFrom(state, limit), lastLine[lastLine.length - 1], () => setStatus(
      `The model added ${page.modelStrokes} strokes (${page.modelPoints} points) to your ` +
      `${page.userStrokes}. Draw on, or start again with Clear.`));
}

function newSample() {
  stopModel();
  userLines = [];
  page.userStrokes = 0;
  redraw();
  const points = sampleFrom(stateAfter([]), model.info.max_seq_len);
  // Centre the drawing: its bounding box, from its first point.
  let x = 0;
  let y = 0;
  let box = [0, 0, 0, 0];
  for (const [dx, dy] of points) {
    x += dx;
    y += dy;
    box = [Math.min(box[0], x), Math.min(box[1], y), Math.max(box[2], x), Math.max(box[3], y)];
  }
  const start = [WIDTH / 2 - (box[0] + box[2]) / 2, HEIGHT / 2 - (box[1] + box[3]) / 2];
  setStatus('the model is drawing...');
  animate(points, start, () => setStatus(
      `A new sample: ${page.modelStrokes} strokes (${page.modelPoints} points).`));
}

function clearAll() {
  stopModel();
  userLines = [];
  page.userStrokes = page.modelStrokes = page.modelPoints = 0;
  page.finished = false;
  redraw();
  setStatus('Draw a few strokes; the model finishes the sheep when you lift the pen.');
}

function pointerPosition(event) {
  const rect = canvas.getBoundingClientRect();
  return [event.clientX - rect.left, event.clientY - rect.top];
}

canvas.addEventListener('pointerdown', (event) => {
  if (!page.ready) return;
  stopModel();
  redraw();  // the model's strokes go: it finishes the new drawing when this line ends
  page.finished = false;
  currentLine = [pointerPosition(event)];
  canvas.setPointerCapture(event.pointerId);
});

canvas.addEventListener('pointermove', (event) => {
  if (currentLine === null) return;
  const point = pointerPosition(event);
  segment(currentLine[currentLine.length - 1], point, USER_COLOR);
  currentLine.push(point);
});

function endLine() {
  if (currentLine === null) return;
  const line = model.simplifyLine(currentLine, SIMPLIFY_TOLERANCE);
  currentLine = null;
  if (line.length >= 2) {  // a tap draws nothing
    userLines.push(line);
    page.userStrokes = userLines.length;
  }
  redraw();
  if (userLines.length > 0) finishDrawing();
}

canvas.addEventListener('pointerup', endLine);
canvas.addEventListener('pointercancel', endLine);
sampleButton.addEventListener('click', newSample);
clearButton.addEventListener('click', clearAll);
temperatureInput.addEventListener('input', () => {
  temperatureOutput.textContent = temperatureInput.value;
});

async function main() {
  try {
    // A small LSTM: TensorFlow.js's CPU backend is fast enough and computes the same
    // everywhere (WebGL may compute in 16-bit floats on some devices).
    await ms.tf.setBackend('cpu');
    model = new ms.SketchRNN(MODEL_URL);
    await model.initialize();
    model.setPixelFactor(PIXEL_FACTOR);
  } catch (error) {
    page.error = String(error);
    setStatus(`Could not load the model ${MODEL_URL} (${error}). Serve this folder with ` +
              '`python -m http.server` after `npm ci`, and open it over http://.');
    return;
  }
  page.ready = true;
  sampleButton.disabled = false;
  clearButton.disabled = false;
  clearAll();
}

main();
