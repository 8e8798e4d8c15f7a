// A real OpenID provider for the staff sign-in test: oidc-provider (the OpenID Foundation's
// certified Node implementation), over HTTPS with the test's throwaway certificate, started in
// the lab's staff-side namespace by tests/integration/oidc.rs.
//   node idp.mjs ISSUER LISTEN_HOST PORT CERT_PEM KEY_PEM REDIRECT_URI CLIENT_SECRET
//
// Any login signs in (devInteractions); the login typed is the account's e-mail address, and an
// address starting "unverified" has email_verified false. One client is registered: "aupgate".
//
// For the refusal tests, GET /__test/next/MODE makes the next token response carry a forged ID
// token in place of the real one, made from the real one's claims:
//   aud      signed with the provider's own key, for another client id ("another-app")
//   sig      signed with a key that is not the provider's, under the provider's key id
//   exp      signed with the provider's key, expired an hour ago
//   rotated  signed with a new key (kid "rotated"), which /jwks lists from then on: a provider
//            rolling its keys, which aupgate must fetch again rather than refuse
import https from 'node:https';
import fs from 'node:fs';
import { exportJWK, generateKeyPair, decodeJwt, SignJWT } from 'jose';
import Provider from 'oidc-provider';

const [issuer, host, port, certFile, keyFile, redirect, secret] = process.argv.slice(2);

const key = async (kid) => {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  return { privateKey, jwk };
};
const real = await key('real');
const stranger = await key('real'); // not the provider's, under its key id
const rotated = await key('rotated');
const publicOf = ({ kty, n, e, kid, alg, use }) => ({ kty, n, e, kid, alg, use });

let next = '';
let rotatedListed = false;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'aupgate',
    client_secret: secret,
    redirect_uris: [redirect],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [real.jwk] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  // The e-mail in the ID token itself, as Entra ID and Google put it, not only at userinfo.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  cookies: { keys: ['aupgate-test-cookie-key'] },
  features: { devInteractions: { enabled: true } },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: id, email_verified: !id.startsWith('unverified'), name: id }),
  }),
});

const forge = async (token, mode) => {
  const claims = decodeJwt(token);
  const now = Math.floor(Date.now() / 1000);
  let signer = real;
  if (mode === 'aud') claims.aud = 'another-app';
  if (mode === 'sig') signer = stranger;
  if (mode === 'exp') { claims.iat = now - 7200; claims.exp = now - 3600; }
  if (mode === 'rotated') { signer = rotated; rotatedListed = true; }
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: signer.jwk.kid, typ: 'JWT' })
    .sign(signer.privateKey);
};

provider.use(async (ctx, nextMiddleware) => {
  const m = ctx.path.match(/^\/__test\/next\/(aud|sig|exp|rotated)$/);
  if (m) {
    next = m[1];
    ctx.status = 204;
    console.log(`next token: ${next}`);
    return;
  }
  await nextMiddleware();
  if (ctx.path === '/token' && next && ctx.body && ctx.body.id_token) {
    ctx.body = { ...ctx.body, id_token: await forge(ctx.body.id_token, next) };
    console.log(`forged token: ${next}`);
    next = '';
  }
  if (ctx.path === '/jwks' && rotatedListed && ctx.body && Array.isArray(ctx.body.keys)) {
    ctx.body = { keys: [...ctx.body.keys, publicOf(rotated.jwk)] };
  }
});

const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, provider.callback());
server.listen(Number(port), host, () => console.log(`idp listening on ${issuer}`));
