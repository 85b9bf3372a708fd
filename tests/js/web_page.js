// Opens the examples/web page in headless Chromium, draws on it, and reports what the model did.
//
//   node tests/js/web_page.js URL SCREENSHOT.png CHROMIUM USER_DATA_DIR
//
// (with NODE_PATH pointing at examples/web/node_modules, which holds playwright-core; no browser
// is downloaded: CHROMIUM is the system's). The strokes are mouse drags, which Chromium turns
// into pointerdown/pointermove/pointerup events on the canvas. Prints one JSON object: the
// page's `window.sketchPage` after the model finished the drawing, then after "New sample",
// the browser console's errors, and the paths of two screenshots: SCREENSHOT.png after the
// drawing was finished, SCREENSHOT-sample.png after the new sample.
'use strict';

const {chromium} = require('playwright-core');

const [url, screenshotPath, executablePath, userDataDir] = process.argv.slice(2);

// Two strokes of a sheep's body and head, in canvas pixels.
const STROKES = [
  [[200, 200], [240, 170], [300, 160], [360, 165], [410, 185], [430, 220], [400, 250],
   [330, 262], [260, 258], [210, 240], [200, 200]],
  [[200, 200], [170, 190], [150, 205], [160, 230], [195, 228]],
];

async function drag(page, box, stroke) {
  const [x0, y0] = stroke[0];
  await page.mouse.move(box.x + x0, box.y + y0);
  await page.mouse.down();
  for (const [x, y] of stroke.slice(1)) {
    await page.mouse.move(box.x + x, box.y + y, {steps: 4});
  }
  await page.mouse.up();
}

async function main() {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: {width: 800, height: 720},
  });
  const errors = [];
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    page.on('pageerror', (error) => errors.push(String(error)));
    await page.goto(url);
    await page.waitForFunction(() => window.sketchPage && (window.sketchPage.ready ||
                                                           window.sketchPage.error), null,
                               {timeout: 60000});
    const box = await page.locator('#canvas').boundingBox();
    for (const stroke of STROKES) {
      await drag(page, box, stroke);
    }
    await page.waitForFunction((count) => window.sketchPage.userStrokes === count &&
                                          window.sketchPage.finished, STROKES.length,
                               {timeout: 60000});
    const completed = await page.evaluate(() => ({...window.sketchPage}));
    await page.screenshot({path: screenshotPath});
    await page.click('#sample');
    await page.waitForFunction(() => window.sketchPage.finished, null, {timeout: 60000});
    const sampled = await page.evaluate(() => ({...window.sketchPage}));
    const statusText = await page.locator('#status').textContent();
    const sampleScreenshot = screenshotPath.replace(/\.png$/, '') + '-sample.png';
    await page.screenshot({path: sampleScreenshot});
    process.stdout.write(JSON.stringify({completed, sampled, statusText, errors,
                                         screenshots: [screenshotPath, sampleScreenshot]}) + '\n');
  } finally {
    await context.close();
  }
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
