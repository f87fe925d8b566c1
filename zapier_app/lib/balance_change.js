'use strict';

// What "Deposit Credits" and "Charge User" share: the request built from the inputs, the call,
// and the step output. All three come from relay-contract.js (generated from
// schemas/clients/), the same code the n8n node runs:
//   buildRequest(op, inputData) -> {body, fields, key, query, headers} or a ContractError
//     (a refusal before any call, with the client_errors text of schemas/client-contract.json);
//   buildOutput(op, request, answer, headers) -> the snake_case output.
// An amount the key derivation refuses is sent without an Idempotency-Key: the relay refuses it
// with its own message naming amount, and nothing is sent to Paywalls.

const contract = require('./generated/relay-contract');
const { requireObjectBody, clientError } = require('./errors');
const { relayRequest, requestFor } = require('./relay');

async function send(z, bundle, op) {
  const request = requestFor(z, op, bundle.inputData);
  const response = await relayRequest(z, bundle, {
    url: request.path,
    method: request.method,
    headers: request.headers,
    params: request.query,
    body: request.body,
  });
  // A 2xx without the relay's JSON object is a failure, not a success with empty output.
  const data = requireObjectBody(z, response);
  const output = contract.buildOutput(op, request, data, {
    idempotency_key: response.getHeader('idempotency-key'),
    replayed: response.getHeader('idempotent-replayed') === 'true',
    sandbox: response.getHeader('x-relay-sandbox') === 'true',
  });
  if (request.dryRun && data.dry_run !== true) {
    // A relay that does not know ?dry_run=true ran it for real: say so, never show a success.
    throw clientError(z, 'dry-run-ignored', {
      op,
      url: response.request && response.request.url,
      key: output.idempotency_key,
    });
  }
  return output;
}

module.exports = { send, requestFor };
