// Staff in a real browser, JavaScript OFF, on the lab's staff network (started inside the
// "internet" namespace by tests/integration/browser.rs). The admin's certificate is the
// self-signed one, whose fingerprint the test checks elsewhere, so errors are ignored here.
//   node admin.mjs BASE_URL USER PASSWORD COURSE_ID ARTEFACT_DIR
import { fail, launch, ok } from './lab.mjs';

const [base, user, password, course, shots] = process.argv.slice(2);

const browser = await launch();
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, javaScriptEnabled: false, viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  const violations = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
  await page.goto(`${base}/`);
  if (!page.url().endsWith('/login')) fail(`not sent to sign-in: ${page.url()}`);
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('button[type=submit]');
  if (!(await page.locator('body').textContent()).includes('guests on now')) fail('no dashboard after signing in');
  ok('signed in with JavaScript off');
  await page.screenshot({ path: `${shots}/admin-dashboard.png`, fullPage: true });
  await page.goto(`${base}/guests`);
  if ((await page.locator('tbody tr').count()) < 1) fail('live guests is empty');
  await page.screenshot({ path: `${shots}/admin-live-guests.png`, fullPage: true });
  ok('live guests shown');
  await page.goto(`${base}/courses`);
  await page.click(`a[href="/courses/${course}/poster"]`);
  await page.setViewportSize({ width: 794, height: 1123 }); // A4 at 96 dpi
  const title = await page.locator('.poster h1').textContent();
  const code = await page.locator('.big-code').textContent();
  if (!(await page.locator('.qr svg').count())) fail('no QR code on the poster');
  await page.screenshot({ path: `${shots}/admin-poster.png`, fullPage: true });
  await page.pdf({ path: `${shots}/admin-poster.pdf`, format: 'A4', printBackground: true });
  ok(`poster for "${title.trim()}" with code ${code.trim()} and a QR code`);
  if (violations.length) fail(`CSP violations: ${violations.join('; ')}`);
  ok('no Content-Security-Policy violations (CSS from the file, no inline script or style)');
} finally {
  await browser.close();
}
