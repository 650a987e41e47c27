// Shared pieces of the Node.js interoperability checks: an offline document
// loader (our shipped JSON-LD contexts + local did:key resolution) and the
// eddsa-rdfc-2022 suite from digitalbazaar's libraries. Nothing is fetched.
import {readFileSync} from 'node:fs';
import {gunzipSync} from 'node:zlib';

import {DataIntegrityProof} from '@digitalbazaar/data-integrity';
import * as Ed25519Multikey from '@digitalbazaar/ed25519-multikey';
import {cryptosuite as eddsaRdfc2022} from '@digitalbazaar/eddsa-rdfc-2022-cryptosuite';
import * as vc from '@digitalbazaar/vc';

const DID_V1 = 'https://www.w3.org/ns/did/v1';
const MULTIKEY_V1 = 'https://w3id.org/security/multikey/v1';

// contexts: {url: absolute path of a shipped .jsonld file}
export function makeDocumentLoader(contexts) {
  return async url => {
    if(url in contexts) {
      const document = JSON.parse(readFileSync(contexts[url], 'utf8'));
      return {contextUrl: null, documentUrl: url, document};
    }
    if(url.startsWith('did:key:z6Mk')) {
      const [did, fragment] = url.split('#');
      const multibase = did.slice('did:key:'.length);
      const method = {
        '@context': MULTIKEY_V1,
        id: `${did}#${multibase}`,
        type: 'Multikey',
        controller: did,
        publicKeyMultibase: multibase
      };
      if(fragment !== undefined) {
        if(fragment !== multibase) {
          throw new Error(`unknown key ${url}`);
        }
        return {contextUrl: null, documentUrl: url, document: method};
      }
      const {['@context']: _, ...bare} = method;
      const document = {
        '@context': [DID_V1, MULTIKEY_V1],
        id: did,
        verificationMethod: [bare],
        authentication: [method.id],
        assertionMethod: [method.id]
      };
      return {contextUrl: null, documentUrl: url, document};
    }
    throw new Error(`refusing to load ${url}: not a pinned context or did:key`);
  };
}

export function verifySuite() {
  return new DataIntegrityProof({cryptosuite: eddsaRdfc2022});
}

export async function signingSuite(seed) {
  const keyPair = await Ed25519Multikey.generate({seed});
  const did = `did:key:${keyPair.publicKeyMultibase}`;
  keyPair.id = `${did}#${keyPair.publicKeyMultibase}`;
  keyPair.controller = did;
  const suite = new DataIntegrityProof({
    signer: keyPair.signer(), cryptosuite: eddsaRdfc2022
  });
  return {suite, did};
}

// Bitstring Status List v1.0 §3.2: verify the list credential, then read the bit.
export function makeCheckStatus(statusLists, documentLoader) {
  return async ({credential}) => {
    const entries = [].concat(credential.credentialStatus);
    for(const entry of entries) {
      const list = statusLists.find(s => s.id === entry.statusListCredential);
      if(!list) {
        return {verified: false, error: `status list ${entry.statusListCredential} not given`};
      }
      const listResult = await vc.verifyCredential({
        credential: list, suite: verifySuite(), documentLoader
      });
      if(!listResult.verified) {
        return {verified: false, error: 'status list credential does not verify'};
      }
      const encoded = list.credentialSubject.encodedList;
      const bits = gunzipSync(Buffer.from(encoded.slice(1), 'base64url'));
      const index = Number(entry.statusListIndex);
      if(bits[index >> 3] & (0x80 >> (index % 8))) {
        return {verified: false, error: `${entry.statusPurpose} at index ${index}`};
      }
    }
    return {verified: true};
  };
}

export function parseArgs(argv) {
  const options = {positional: [], statusLists: []};
  for(let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if(arg === '--contexts') {
      options.contexts = JSON.parse(readFileSync(argv[++i], 'utf8'));
    } else if(arg === '--challenge') {
      options.challenge = argv[++i];
    } else if(arg === '--domain') {
      options.domain = argv[++i];
    } else if(arg === '--status-list') {
      const document = JSON.parse(readFileSync(argv[++i], 'utf8'));
      options.statusLists.push(document.credential ?? document);
    } else {
      options.positional.push(arg);
    }
  }
  return options;
}

export function errorMessages(result) {
  const found = [];
  const walk = value => {
    if(!value || typeof value !== 'object') {
      return;
    }
    if(value instanceof Error) {
      found.push(value.message);
    }
    for(const key of ['error', 'errors', 'results', 'credentialResults',
      'presentationResult', 'statusResult']) {
      if(key in value) {
        [].concat(value[key]).forEach(walk);
      }
    }
  };
  walk(result);
  return [...new Set(found)];
}
