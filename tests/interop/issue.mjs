// Issue a VC 2.0 credential with digitalbazaar's libraries (eddsa-rdfc-2022).
// usage: node issue.mjs SEED_HEX SUBJECT_DID --contexts MAP.json
// Prints the signed credential as JSON.
import * as vc from '@digitalbazaar/vc';

import {makeDocumentLoader, parseArgs, signingSuite} from './lib.mjs';

const options = parseArgs(process.argv.slice(2));
const [seedHex, subject] = options.positional;
const {suite, did} = await signingSuite(Buffer.from(seedHex, 'hex'));
const credential = {
  '@context': [
    'https://www.w3.org/ns/credentials/v2',
    'https://w3id.org/paroma-med/v1'
  ],
  id: 'urn:uuid:8d0b4a52-2f1c-4f0e-9a53-0e8f6f4e1c11',
  type: ['VerifiableCredential', 'ClinicianCredential'],
  issuer: did,
  validFrom: '2026-01-01T00:00:00Z',
  validUntil: '2036-01-01T00:00:00Z',
  credentialSubject: {id: subject, role: 'cardiologist', site: 'hospital-js'}
};
const signed = await vc.issue({
  credential, suite, documentLoader: makeDocumentLoader(options.contexts)
});
process.stdout.write(JSON.stringify(signed, null, 2) + '\n');
