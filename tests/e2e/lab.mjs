// What every browser script shares: Debian's Chromium, launched as this machine needs it (no
// background networking, which the closed lab network refuses), and the "ok"/"FAIL" lines the
// Rust tests read.
import { chromium } from 'playwright-core';

export const fail = (msg) => { console.log(`FAIL ${msg}`); process.exit(1); };
export const ok = (msg) => console.log(`ok ${msg}`);

export const launch = () => chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
