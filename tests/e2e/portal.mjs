// A guest's phone, for real: Debian's Chromium with JavaScript OFF, a 360 px wide screen,
// started inside a lab client namespace by tests/integration/browser.rs.
//   node portal.mjs STRAY_URL PORTAL_URL INTERNET_URL CODE SCREENSHOT_DIR
// Prints one "ok ..." line per check; exits non-zero with "FAIL ..." on the first failure.
import { chromium } from 'playwright-core';

const [stray, portal, internet, code, shots] = process.argv.slice(2);
const fail = (msg) => { console.log(`FAIL ${msg}`); process.exit(1); };
const ok = (msg) => console.log(`ok ${msg}`);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const phone = {
    viewport: { width: 360, height: 740 },
    isMobile: true,
    hasTouch: true,
    userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36',
  };

  // Layout, measured with scripts allowed only for the measuring (the portal itself has none).
  const measure = await browser.newContext(phone);
  const m = await measure.newPage();
  await m.goto(portal);
  const width = await m.evaluate(() => document.documentElement.scrollWidth);
  if (width > 360) fail(`page is ${width} px wide on a 360 px screen`);
  ok(`no horizontal scrolling at 360 px (scrollWidth ${width})`);
  for (const sel of ['#code', '#name', '#organisation', 'button[type=submit]']) {
    const box = await m.locator(sel).boundingBox();
    if (!box || box.height < 44) fail(`${sel} is ${box && box.height} px tall; tap targets need 44`);
  }
  ok('inputs and button are at least 44 px tall');
  await measure.close();

  // The guest's own pop-up: no JavaScript at all.
  const ctx = await browser.newContext({ ...phone, javaScriptEnabled: false });
  const page = await ctx.newPage();
  await page.goto(stray);
  if (page.url() !== portal) fail(`stray request ended at ${page.url()}, not the portal`);
  ok(`a stray http:// request lands on the portal (${page.url()})`);
  const h1 = await page.locator('.policy h1').first().textContent();
  if (!h1.includes('Wi-Fi Acceptable Use Policy')) fail(`policy heading is ${h1}`);
  if (!(await page.getByText('Designated Safeguarding Lead').isVisible())) fail('DSL contact not visible');
  ok('policy and DSL contact shown');
  await page.screenshot({ path: `${shots}/1-portal.png`, fullPage: false });

  await page.fill('#code', 'WRNGWRNG');
  await page.fill('#name', 'Ann Smith');
  await page.check('#agree');
  await page.click('button[type=submit]');
  if (!(await page.getByRole('alert').textContent()).includes("access code isn't right")) fail('no wrong-code message');
  if ((await page.inputValue('#name')) !== 'Ann Smith') fail('name not kept after an error');
  ok('a wrong code shows the form again with a message and keeps what was typed');
  await page.screenshot({ path: `${shots}/2-wrong-code.png` });

  await page.fill('#code', code.toLowerCase());
  await page.fill('#organisation', 'Kent Training Hub');
  await page.check('#agree');
  await page.click('button[type=submit]');
  const body = await page.locator('body').textContent();
  if (!body.includes("You're connected until")) fail(`accept page says: ${body.slice(0, 300)}`);
  ok('accepting with the code (typed in lower case) says "You\'re connected until ..."');
  await page.screenshot({ path: `${shots}/3-connected.png` });

  const cookies = await ctx.cookies();
  if (cookies.length) fail(`the portal set cookies: ${JSON.stringify(cookies)}`);
  ok('no cookies were set');

  await page.goto(internet);
  if (!(await page.locator('body').textContent()).includes('INTERNET-OK')) fail('internet not reachable after accepting');
  ok('the internet answers in the same browser');
} finally {
  await browser.close();
}
