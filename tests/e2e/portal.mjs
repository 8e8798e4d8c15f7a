// A guest's phone, for real: Debian's Chromium inside a lab client namespace, started by
// tests/integration/browser.rs.
//   node portal.mjs on|off STRAY_URL PORTAL_URL INTERNET_URL CODE ARTEFACT_DIR
// "on"/"off" is JavaScript for the guest's own session (pop-ups often have none). With "on",
// the page is also measured first: weight, axe-core, 360 px and 200 % zoom, tap targets.
// Prints one "ok ..." line per check; exits non-zero with "FAIL ..." on the first failure.
import { createRequire } from 'node:module';
import { fail, launch, ok } from './lab.mjs';

const require = createRequire(import.meta.url);
const [js, stray, portal, internet, code, shots] = process.argv.slice(2);
const tag = js === 'on' ? 'js' : 'nojs';

const browser = await launch();
// An iPhone-sized phone (390x844), as the issue asks for the artefacts.
const phone = {
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 1,
  isMobile: true,
  hasTouch: true,
  userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36',
};

async function measure() {
  const ctx = await browser.newContext(phone);
  const m = await ctx.newPage();
  const resp = await m.goto(portal);
  const html = await resp.body();
  // CSS is inline and there are no other resources: the HTML is the whole page.
  const requests = [];
  m.on('request', (r) => requests.push(r.url()));
  await m.reload();
  if (html.length >= 30 * 1024) fail(`portal page weighs ${html.length} bytes (limit 30 kB)`);
  if (requests.length !== 1) fail(`portal page loads ${requests.length} resources: ${requests.join(', ')}`);
  ok(`page weight ${html.length} bytes in 1 request, HTML and CSS together (< 30 kB)`);
  if ((await m.locator('script').count()) !== 0) fail('the portal page has a script');
  ok('no script on the page');

  await m.addScriptTag({ path: require.resolve('axe-core/axe.min.js') });
  const result = await m.evaluate(async () => await window.axe.run(document));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length) fail(`axe-core: ${bad.map((v) => `${v.id} (${v.impact}): ${v.help}`).join('; ')}`);
  ok(`axe-core: no serious or critical violations (${result.violations.length} minor, ${result.passes.length} rules passed)`);

  for (const width of [360, 195]) {
    // 195 CSS px is a 390 px phone at 200 % zoom.
    await m.setViewportSize({ width, height: 844 });
    const w = await m.evaluate(() => document.documentElement.scrollWidth);
    if (w > width) fail(`page is ${w} px wide on a ${width} px viewport`);
    // Elements that show text (checkboxes and hidden inputs show none).
    const small = await m.evaluate(() => [...document.querySelectorAll('p, li, label, input, button')]
      .filter((e) => !(e.tagName === 'INPUT' && ['checkbox', 'hidden'].includes(e.type)))
      .filter((e) => parseFloat(getComputedStyle(e).fontSize) < 14)
      .map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''} ${getComputedStyle(e).fontSize}`));
    if (small.length) fail(`text under 14 px at width ${width}: ${small.join(', ')}`);
  }
  ok('no horizontal scrolling at 360 px and at 200 % zoom (195 px), text at least 14 px');
  await m.setViewportSize(phone.viewport);
  for (const sel of ['#code', '#name', '#organisation', 'button[type=submit]']) {
    const box = await m.locator(sel).boundingBox();
    if (!box || box.height < 44) fail(`${sel} is ${box && box.height} px tall; tap targets need 44`);
  }
  ok('inputs and button are at least 44 px tall');
  await ctx.close();
}

try {
  if (js === 'on') await measure();
  const ctx = await browser.newContext({ ...phone, javaScriptEnabled: js === 'on' });
  const page = await ctx.newPage();
  await page.goto(stray);
  if (page.url() !== portal) fail(`stray request ended at ${page.url()}, not the portal`);
  ok(`a stray http:// request lands on the portal (${page.url()})`);
  const h1 = await page.locator('.policy h1').first().textContent();
  if (!h1.includes('Wi-Fi Acceptable Use Policy')) fail(`policy heading is ${h1}`);
  if (!(await page.getByText('Designated Safeguarding Lead').isVisible())) fail('DSL contact not visible');
  ok('policy and DSL contact shown');
  await page.screenshot({ path: `${shots}/${tag}-1-portal-390x844.png` });
  await page.screenshot({ path: `${shots}/${tag}-1-portal-full.png`, fullPage: true });

  await page.fill('#code', 'WRNGWRNG');
  await page.fill('#name', 'Ann Smith');
  await page.check('#agree');
  await page.click('button[type=submit]');
  if (!(await page.getByRole('alert').textContent()).includes("access code isn't right")) fail('no wrong-code message');
  if ((await page.inputValue('#name')) !== 'Ann Smith') fail('name not kept after an error');
  ok('a wrong code shows the form again with a message and keeps what was typed');
  if (!page.url().endsWith('/accept#connect')) fail(`the answer to a wrong code is at ${page.url()}, not at the form (/accept#connect)`);
  const heading = await page.locator('#connect-heading').boundingBox();
  if (!heading || heading.y < 0 || heading.y >= phone.viewport.height) {
    fail(`after a wrong code the form is off screen (its heading at y=${heading && heading.y}), below the policy`);
  }
  ok(`a wrong code opens the answer at the form and its message (/accept#connect, heading at y=${Math.round(heading.y)})`);
  await page.screenshot({ path: `${shots}/${tag}-2-wrong-code-390x844.png` });

  await page.fill('#code', code.toLowerCase());
  await page.fill('#organisation', 'Kent Training Hub');
  await page.check('#agree');
  await page.click('button[type=submit]');
  const body = await page.locator('body').textContent();
  if (!body.includes("You're connected until")) fail(`accept page says: ${body.slice(0, 300)}`);
  ok('accepting with the code (typed in lower case) says "You\'re connected until ..."');
  await page.screenshot({ path: `${shots}/${tag}-3-connected-390x844.png` });

  const cookies = await ctx.cookies();
  if (cookies.length) fail(`the portal set cookies: ${JSON.stringify(cookies)}`);
  ok('no cookies were set');

  await page.goto(internet);
  if (!(await page.locator('body').textContent()).includes('INTERNET-OK')) fail('internet not reachable after accepting');
  ok('the internet answers in the same browser');
} finally {
  await browser.close();
}
