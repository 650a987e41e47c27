// Verify a credential or presentation with digitalbazaar's @digitalbazaar/vc.
// usage: node verify.mjs FILE --contexts MAP.json [--challenge C --domain D]
//        [--status-list FILE]...
// Prints {"verified": bool, "errors": [...]}; exit 0 if verified, 1 if not.
import {readFileSync} from 'node:fs';

import * as vc from '@digitalbazaar/vc';

import {
  errorMessages, makeCheckStatus, makeDocumentLoader, parseArgs, verifySuite
} from './lib.mjs';

const options = parseArgs(process.argv.slice(2));
const document = JSON.parse(readFileSync(options.positional[0], 'utf8'));
const documentLoader = makeDocumentLoader(options.contexts);
const checkStatus = makeCheckStatus(options.statusLists, documentLoader);
let result;
if([].concat(document.type).includes('VerifiablePresentation')) {
  result = await vc.verify({
    presentation: document,
    challenge: options.challenge,
    domain: options.domain,
    suite: verifySuite(),
    documentLoader,
    checkStatus
  });
} else {
  result = await vc.verifyCredential({
    credential: document, suite: verifySuite(), documentLoader, checkStatus
  });
}
const errors = errorMessages(result);
if(result.verified === true && result.statusResult?.verified === false) {
  errors.push(result.statusResult.error);
}
process.stdout.write(JSON.stringify({verified: result.verified, errors}) + '\n');
process.exit(result.verified ? 0 : 1);
