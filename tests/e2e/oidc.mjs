// Staff sign in with the school's account, in a real browser (Debian's chromium), against the
// real OpenID provider of idp.mjs, on the lab's staff network (tests/integration/oidc.rs).
// Each case is a fresh browser context, so no cookie of one helps the next.
//   node oidc.mjs ADMIN_BASE IDP_BASE LOCAL_USER LOCAL_PASSWORD ARTEFACT_DIR
// NODE_EXTRA_CA_CERTS names the test CA, for the calls to the provider's test switch.
import { fail, launch, ok } from './lab.mjs';

const [admin, idp, localUser, localPassword, shots] = process.argv.slice(2);

const browser = await launch();
const text = async (page) => (await page.locator('body').textContent()) ?? '';
const fresh = async () => {
  // The admin's certificate is its self-signed one and the provider's is the test CA's: the
  // daemon's trust of the provider (ca_file) is what is under test, not the browser's.
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, javaScriptEnabled: false });
  return { ctx, page: await ctx.newPage() };
};
const nextToken = async (mode) => {
  const r = await fetch(`${idp}/__test/next/${mode}`);
  if (r.status !== 204) fail(`provider's test switch ${mode}: ${r.status}`);
};

// From the sign-in page through the provider's login and consent screens; returns the page
// where the provider sent the browser back, and the callback URL it used.
const signIn = async (page, email, { tamper } = {}) => {
  let callback = '';
  page.on('request', (r) => { if (r.url().startsWith(`${admin}/login/oidc/callback`)) callback = r.url(); });
  if (tamper) {
    // A redirect's next hop is not routed, so the consent form's answer is fetched here and
    // its redirects followed by hand (with the context's cookies) up to the one to aupgate's
    // callback, whose state is changed before the browser goes there.
    await page.route(`${idp}/interaction/**`, async (route) => {
      const request = route.request();
      if (request.method() !== 'POST' || !(request.postData() ?? '').includes('prompt=consent')) return route.continue();
      let response = await route.fetch({ maxRedirects: 0 });
      let location = response.headers().location;
      while (location && !location.startsWith(admin)) {
        response = await page.request.get(new URL(location, idp).toString(), { maxRedirects: 0 });
        location = response.headers().location;
      }
      if (!location) fail('tamper: the provider did not send the browser back');
      const url = new URL(location);
      url.searchParams.set('state', `${url.searchParams.get('state')}x`);
      return route.fulfill({ status: 303, headers: { location: url.toString() } });
    });
  }
  await page.goto(`${admin}/`);
  if (!page.url().endsWith('/login')) fail(`not sent to sign-in: ${page.url()}`);
  const button = page.locator('a[href="/login/oidc"]');
  const label = (await button.textContent()).trim();
  if (label !== 'Sign in with Claremont account') fail(`the button reads ${JSON.stringify(label)}`);
  await button.click();
  if (!page.url().startsWith(idp)) fail(`not sent to the provider: ${page.url()}`);
  await page.fill('input[name=login]', email);
  await page.fill('input[name=password]', 'any');
  await page.click('button[type=submit]');
  if (page.url().startsWith(idp)) await page.click('button[type=submit]'); // consent
  return callback;
};
const signedOut = async (page) => {
  await page.goto(`${admin}/`);
  return page.url().endsWith('/login');
};

try {
  // Staff: the dashboard, with their address; not the audit pages.
  {
    const { ctx, page } = await fresh();
    const callback = await signIn(page, 'teacher@claremont.example.sch.uk');
    await page.waitForURL(`${admin}/`);
    const body = await text(page);
    if (!body.includes('guests on now')) fail(`staff: no dashboard: ${body.slice(0, 300)}`);
    if (!body.includes('teacher@claremont.example.sch.uk')) fail('staff: the dashboard does not name them');
    await page.screenshot({ path: `${shots}/oidc-staff-dashboard.png`, fullPage: true });
    ok('staff signed in with the school account and see the dashboard');
    const audit = await page.goto(`${admin}/audit`);
    if (audit.status() !== 403) fail(`staff: /audit answered ${audit.status()}`);
    ok('staff are not auditors (/audit 403)');
    // The same callback again (a replayed state): refused, and the session above is untouched.
    const replay = await ctx.newPage();
    const again = await replay.goto(callback);
    if (again.status() !== 400 || !(await text(replay)).includes('expired or was already used')) {
      fail(`replayed callback answered ${again.status()}`);
    }
    ok('a replayed callback is refused (400)');
    await ctx.close();
  }
  // The DPO: an auditor, who can open the audit log.
  {
    const { ctx, page } = await fresh();
    await signIn(page, 'dpo@claremont.example.sch.uk');
    await page.waitForURL(`${admin}/`);
    const audit = await page.goto(`${admin}/audit`);
    if (audit.status() !== 200) fail(`auditor: /audit answered ${audit.status()}`);
    await page.screenshot({ path: `${shots}/oidc-auditor-audit.png`, fullPage: true });
    ok('the DPO signed in as an auditor and opened /audit');
    await ctx.close();
  }
  // A stranger: refused by name, with no session.
  {
    const { ctx, page } = await fresh();
    await signIn(page, 'stranger@gmail.example');
    const body = await text(page);
    if (!body.includes('stranger@gmail.example') || !body.includes("IT support")) fail(`stranger: ${body.slice(0, 400)}`);
    await page.screenshot({ path: `${shots}/oidc-stranger-refused.png`, fullPage: true });
    if (!(await signedOut(page))) fail('stranger: has a session');
    ok('a stranger is refused by name and gets no session');
    await ctx.close();
  }
  // An address the provider says is unverified.
  {
    const { ctx, page } = await fresh();
    await signIn(page, 'unverified@claremont.example.sch.uk');
    if (!(await text(page)).includes('not verified')) fail('unverified: not refused as unverified');
    if (!(await signedOut(page))) fail('unverified: has a session');
    ok('an unverified address is refused');
    await ctx.close();
  }
  // Cancelled at the provider: it sends the browser back with an error, which is said plainly.
  {
    const { ctx, page } = await fresh();
    await page.goto(`${admin}/login`);
    await page.click('a[href="/login/oidc"]');
    await page.click('a:has-text("Cancel")');
    const body = await text(page);
    if (!body.includes('did not sign you in (access_denied)')) fail(`cancelled: ${body.slice(0, 300)}`);
    if (!(await signedOut(page))) fail('cancelled: has a session');
    ok('a sign-in cancelled at the provider is said plainly, with no session');
    await ctx.close();
  }
  // A tampered state.
  {
    const { ctx, page } = await fresh();
    await signIn(page, 'teacher@claremont.example.sch.uk', { tamper: true });
    if (!(await text(page)).includes('expired or was already used')) fail('tampered state: not refused');
    if (!(await signedOut(page))) fail('tampered state: has a session');
    ok('a tampered state is refused, with no session');
    await ctx.close();
  }
  // Forged ID tokens: for another client id, with a signature not the provider's, expired.
  for (const [mode, what] of [['aud', 'a token for another client id'], ['sig', 'a token not signed by the provider'], ['exp', 'an expired token']]) {
    const { ctx, page } = await fresh();
    await nextToken(mode);
    await signIn(page, 'teacher@claremont.example.sch.uk');
    if (!(await text(page)).includes('could not be verified')) fail(`${mode}: not refused: ${(await text(page)).slice(0, 300)}`);
    if (!(await signedOut(page))) fail(`${mode}: has a session`);
    ok(`${what} is refused, with no session`);
    await ctx.close();
  }
  // The provider rolled its keys: the new key is fetched and the sign-in goes through.
  {
    const { ctx, page } = await fresh();
    await nextToken('rotated');
    await signIn(page, 'teacher@claremont.example.sch.uk');
    await page.waitForURL(`${admin}/`);
    if (!(await text(page)).includes('guests on now')) fail('rotated key: not signed in');
    ok('a token signed with a new key is accepted once the keys are fetched again');
    await ctx.close();
  }
  // The local account still works, beside the button.
  {
    const { ctx, page } = await fresh();
    await page.goto(`${admin}/login`);
    await page.fill('#username', localUser);
    await page.fill('#password', localPassword);
    await page.click('form[action="/login"] button[type=submit]');
    if (!(await text(page)).includes('guests on now')) fail('local sign-in: no dashboard');
    ok('local sign-in still works');
    await ctx.close();
  }
} finally {
  await browser.close();
}
