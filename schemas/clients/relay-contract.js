'use strict';

// The one JavaScript implementation of the client contract, shared by the Zapier app and the
// n8n node (each package's `npm run generate` copies this file and the JSON it reads into the
// package; neither edits its copy). The rules themselves are data:
//   - schemas/client-contract.json: inputs, dedupe presets, metadata merge, Reference policy,
//     input rules, the client-side refusals (client_errors) and their texts;
//   - schemas/problems.json: what a user is told for every answer that is not a success;
//   - schemas/idempotency.md: the Idempotency-Key derivation, tested by idempotency-vectors.json.
// relay/contract.py implements buildRequest's semantics in Python; the parity cases
// (schemas/parity-cases.json) hold both to the same answers.
//
// CommonJS, no dependency beyond Node's crypto: the n8n node must keep zero runtime dependencies.

const crypto = require('crypto');

// Next to this file once copied into a package; one level up in schemas/clients/.
function loadJson(name) {
  try {
    return require(`./${name}`);
  } catch (error) {
    if (error.code !== 'MODULE_NOT_FOUND') {
      throw error;
    }
    return require(`../${name}`);
  }
}

const CONTRACT = loadJson('client-contract.json');
const PROBLEMS = loadJson('problems.json');

const KEY_PREFIX = 'pwk1_';
const DEFAULT_FIELDS = Object.freeze(['user', 'amount', 'metadata']);
const PROBLEM_PREFIX = PROBLEMS.prefix;
const MONEY_OPS = Object.freeze(['deposit', 'charge']);
const TOOLS = Object.freeze(['zapier', 'n8n']);

// A refusal the client makes itself, before calling the relay. code is a key of
// client_errors (the same text in every client), or, from the derivation alone, 'amount',
// 'user', 'path' or 'op' (deriveKey's refusals, matched by idempotency-vectors.json's expected_error).
class ContractError extends Error {
  constructor(code, message, params) {
    super(message);
    this.name = 'ContractError';
    this.code = code;
    this.params = params || {};
  }
}

// ---- templates -----------------------------------------------------------------------------

// {name} is replaced by vars[name] ('' when it has no value); a [[...]] segment is kept only
// when every {name} inside it has a value.
function hasValue(value) {
  return value !== undefined && value !== null && value !== '' && !(Array.isArray(value) && value.length === 0);
}

function show(value) {
  if (!hasValue(value)) {
    return '';
  }
  if (Array.isArray(value)) {
    return value.map(show).join(', ');
  }
  if (typeof value === 'object') {
    return JSON.stringify(value);
  }
  return String(value);
}

// One pass over the template: a value is never read as a template itself (a relay detail that
// says "{reconnect}" or "[[" is shown as it is).
const PLACEHOLDER = /\{([A-Za-z0-9_]+)\}/g;

function fillTemplate(template, vars) {
  const valueOf = (name) => (Object.prototype.hasOwnProperty.call(vars, name) ? vars[name] : undefined);
  const fill = (text) => text.replace(PLACEHOLDER, (_m, name) => show(valueOf(name)));
  return template.replace(/\[\[([\s\S]*?)\]\]|\{([A-Za-z0-9_]+)\}/g, (_m, inner, name) => {
    if (name !== undefined) {
      return show(valueOf(name));
    }
    const names = [...inner.matchAll(PLACEHOLDER)].map((m) => m[1]);
    return names.every((n) => hasValue(valueOf(n))) ? fill(inner) : '';
  });
}

const own = (object, key) => (object && Object.prototype.hasOwnProperty.call(object, key) ? object[key] : undefined);

// An own, enumerable property, whatever the key: metadata['__proto__'] = v would set the
// object's prototype instead, silently dropping the row (and deriving another key than Python).
function setOwn(object, key, value) {
  Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
}

function clientErrorText(code, params) {
  const template = CONTRACT.client_errors[code];
  if (typeof template !== 'string') {
    throw new TypeError(`no client error ${JSON.stringify(code)} in client-contract.json`);
  }
  return fillTemplate(template, params || {});
}

function refuse(code, params) {
  return new ContractError(code, clientErrorText(code, params), params);
}

// ---- key derivation (schemas/idempotency.md) -------------------------------------------------

// RFC 8785 JSON Canonicalization Scheme:
// - object keys sorted by UTF-16 code units (the default Array.prototype.sort order);
// - numbers in ECMAScript Number-to-String form (JSON.stringify; -0 prints as 0);
// - strings with JSON.stringify's minimal escaping.
function canonicalJson(value) {
  if (value === null) {
    return 'null';
  }
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) {
        throw new TypeError(`JCS cannot represent the number ${value}`);
      }
      return JSON.stringify(value);
    case 'string':
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) {
        return `[${value.map((item) => canonicalJson(item === undefined ? null : item)).join(',')}]`;
      }
      const members = Object.keys(value)
        .filter((key) => value[key] !== undefined)
        .sort()
        .map((key) => `${JSON.stringify(key)}:${canonicalJson(value[key])}`);
      return `{${members.join(',')}}`;
    }
    default:
      throw new TypeError(`JCS cannot represent a value of type ${typeof value}`);
  }
}

// The amount text the derivation reads (schemas/idempotency.md, "Refusals"): ASCII digits and
// an optional fraction. No sign, exponent, leading or trailing dot, blank or other digits, and
// not zero: the relay refuses every such amount (schemas/common.json), so no key is derived for
// it and the client lets the relay name the field. Leading zeros are read ("007.50" is 7.5).
// A JSON number must print without an exponent (String(n): 1e-7 and 1e21 do not), which is
// where Python and JavaScript read numbers alike.
const PLAIN_DECIMAL = /^([0-9]+)(?:\.([0-9]+))?$/;

function amountError(value) {
  return new ContractError('amount', `amount cannot be part of an idempotency key: ${show(JSON.stringify(value))}`, {
    value,
  });
}

// Canonical decimal text of an amount: "10.00" -> "10", 10 -> "10", "0.50" -> "0.5",
// "007.50" -> "7.5". Throws ContractError('amount') for anything else.
function canonicalAmount(value) {
  let text;
  if (typeof value === 'string') {
    text = value;
  } else if (typeof value === 'number' && Number.isFinite(value) && value > 0) {
    text = String(value);
  } else {
    throw amountError(value);
  }
  const match = PLAIN_DECIMAL.exec(text);
  if (!match) {
    throw amountError(value);
  }
  const integer = match[1].replace(/^0+/, '') || '0';
  const fraction = (match[2] || '').replace(/0+$/, '');
  if (integer === '0' && !fraction) {
    throw amountError(value); // zero is no amount
  }
  return fraction ? `${integer}.${fraction}` : integer;
}

// A dedupe path the derivation takes: user, amount, metadata, metadata.<key>[.<key>...], each
// key without dots or white space (schemas/token-settings.json's dedupe_on items). What a user
// may type into Custom Dedupe Fields is narrower: see parseCustomFields.
const DERIVATION_PATH = /^(?:user|amount|metadata(?:\.[^.\s]+)*)$/;

function isValidPath(path) {
  return typeof path === 'string' && DERIVATION_PATH.test(path);
}

// The value at a dotted path; null when a segment is missing or the value before it is not an
// object.
function valueAt(body, path) {
  let value = body;
  for (const segment of path.split('.')) {
    if (
      value === null ||
      typeof value !== 'object' ||
      Array.isArray(value) ||
      !Object.prototype.hasOwnProperty.call(value, segment) ||
      value[segment] === undefined
    ) {
      return null;
    }
    value = value[segment];
  }
  return value;
}

//   pwk1_ + hex(sha256(utf8(JCS({"v":1,"op":op,"fields":{path: value}}))))
function deriveKey(op, body, fields = DEFAULT_FIELDS) {
  if (!MONEY_OPS.includes(op)) {
    throw new ContractError('op', `op must be "deposit" or "charge", not ${JSON.stringify(op)}`, { op });
  }
  if (!Array.isArray(fields)) {
    throw new ContractError('path', 'the dedupe fields must be a list of paths', { fields });
  }
  // A body whose amount or user no implementation reads alike has no key, whichever fields
  // are picked: the client then sends no Idempotency-Key and the relay names the field.
  const amountValue = valueAt(body, 'amount');
  const amount = amountValue === null ? null : canonicalAmount(amountValue);
  const user = valueAt(body, 'user');
  if (user !== null && typeof user !== 'string') {
    throw new ContractError('user', `user cannot be part of an idempotency key: ${show(JSON.stringify(user))}`, { user });
  }
  const picked = {};
  for (const path of fields) {
    if (!isValidPath(path)) {
      throw new ContractError('path', `not an allowed dedupe path: ${JSON.stringify(path)}`, { path });
    }
    picked[path] = path === 'amount' ? amount : valueAt(body, path);
  }
  const document = canonicalJson({ v: 1, op, fields: picked });
  return KEY_PREFIX + crypto.createHash('sha256').update(document, 'utf8').digest('hex');
}

// ---- inputs -> request (client-contract.json) ---------------------------------------------------

function describeValue(value) {
  if (Array.isArray(value)) {
    return 'a list';
  }
  if (value === null) {
    return 'null';
  }
  if (typeof value === 'object') {
    return 'an object';
  }
  return `a ${typeof value}`;
}

// A text input: a trimmed string ('' when absent), or ContractError field-not-text.
function textInput(name, value) {
  if (value === undefined || value === null) {
    return '';
  }
  if (typeof value === 'string') {
    return value.trim();
  }
  if ((typeof value === 'number' && Number.isFinite(value)) || typeof value === 'boolean') {
    return String(value);
  }
  const label = CONTRACT.inputs[name] ? CONTRACT.inputs[name].label : name;
  throw refuse('field-not-text', { label, got: describeValue(value) });
}

// amount is never refused by a client: whatever is not a trimmed string or a number goes as
// it is, and the relay names the field.
function amountInput(value) {
  if (value === undefined || value === null) {
    return '';
  }
  return typeof value === 'string' ? value.trim() : value;
}

// Custom Dedupe Fields: "user, metadata.reference" -> ["user", "metadata.reference"].
// Segments are trimmed, empty ones dropped ("user,,amount," is user and amount), duplicates
// dropped; each must be user, amount, metadata or metadata.<key> with keys of letters, digits
// and _ : - (client-contract.json custom_dedupe_fields.path_pattern).
function parseCustomFields(value) {
  const rule = CONTRACT.custom_dedupe_fields;
  const text = textInput('custom_dedupe_fields', value);
  const pattern = new RegExp(rule.path_pattern);
  const paths = [];
  for (const raw of text.split(rule.separator)) {
    const path = rule.trim_each ? raw.trim() : raw;
    if (!path && rule.drop_empty) {
      continue;
    }
    if (!pattern.test(path)) {
      throw refuse('custom-dedupe-field-invalid', { path });
    }
    if (!paths.includes(path)) {
      paths.push(path);
    }
  }
  if (paths.length === 0 && rule.at_least_one) {
    throw refuse('custom-dedupe-fields-empty', {});
  }
  return paths;
}

function presetOf(value) {
  return CONTRACT.dedupe_presets.find((preset) => preset.value === value);
}

const DEFAULT_PRESET = CONTRACT.inputs.dedupe_on.default;

// The dedupe field list for a Deduplicate On value (and Custom Dedupe Fields when custom).
function dedupeFields(dedupeOn, customFields) {
  const value = textInput('dedupe_on', dedupeOn) || DEFAULT_PRESET;
  const preset = presetOf(value);
  if (!preset) {
    throw refuse('dedupe-preset-unknown', {
      value,
      choices: CONTRACT.dedupe_presets.map((p) => p.value).join(', '),
    });
  }
  return preset.fields === null ? parseCustomFields(customFields) : [...preset.fields];
}

const lowerAscii = (text) => text.replace(/[A-Z]/g, (c) => c.toLowerCase());

// The rows of Extra Metadata: a plain object {key: value}, or a list of {key, value} rows
// (n8n's fixedCollection, which may hold two rows with one key).
function metadataRows(extra) {
  if (extra === undefined || extra === null || extra === '') {
    return [];
  }
  if (Array.isArray(extra)) {
    return extra.map((row) => {
      if (row === null || typeof row !== 'object' || Array.isArray(row)) {
        throw refuse('extra-metadata-invalid', { got: `a list holding ${describeValue(row)}` });
      }
      return [row.key, row.value];
    });
  }
  if (typeof extra !== 'object') {
    throw refuse('extra-metadata-invalid', { got: describeValue(extra) });
  }
  return Object.entries(extra);
}

function isDropped(value) {
  return CONTRACT.metadata_merge.drop_values.includes(value === undefined ? null : value);
}

// metadata = Extra Metadata rows, then reason and reference from their own fields
// (client-contract.json metadata_merge). Returns undefined when nothing is left.
function buildMetadata(inputs, texts) {
  const rule = CONTRACT.metadata_merge;
  const named = rule.named_fields; // metadata key -> input field
  const setFields = {};
  for (const [key, field] of Object.entries(named)) {
    setFields[key] = texts[field] !== '';
  }
  const metadata = {};
  const seen = new Set();
  for (const [rawKey, rawValue] of metadataRows(inputs.extra_metadata)) {
    const key = typeof rawKey === 'string' ? rawKey.trim() : rawKey === undefined || rawKey === null ? '' : String(rawKey).trim();
    const value = typeof rawValue === 'string' && rule.trim_string_values ? rawValue.trim() : rawValue;
    if (isDropped(value)) {
      continue;
    }
    if (!key) {
      throw refuse('metadata-blank-key', {});
    }
    if (seen.has(key)) {
      throw refuse('metadata-duplicate-key', { key });
    }
    seen.add(key);
    const namedKey = Object.keys(named).find((name) => name === lowerAscii(key));
    if (namedKey && setFields[namedKey]) {
      throw refuse('metadata-clash', { key, label: CONTRACT.inputs[named[namedKey]].label });
    }
    setOwn(metadata, key, value);
  }
  for (const [key, field] of Object.entries(named)) {
    if (texts[field] !== '') {
      setOwn(metadata, key, texts[field]);
    }
  }
  return Object.keys(metadata).length || !rule.omit_when_empty ? metadata : undefined;
}

function dryRunInput(value) {
  const rules = CONTRACT.input_rules;
  const normalised = typeof value === 'string' ? value.trim().toLowerCase() : value === undefined ? null : value;
  if (rules.dry_run_true.includes(normalised)) {
    return true;
  }
  if (rules.dry_run_false.includes(normalised)) {
    return false;
  }
  throw refuse('dry-run-invalid', { value: show(value) });
}

function operation(op) {
  const spec = CONTRACT.operations[op];
  if (!spec) {
    throw new ContractError('op', `unknown operation ${JSON.stringify(op)}`, { op });
  }
  return spec;
}

// The request a step sends for its inputs:
//   {op, method, path, body, fields, key, query, dryRun, headers}
// body is null for reads (balance, deposits take query.user). key is null when the derivation
// refuses the amount (then no Idempotency-Key header is sent and the relay names amount).
// Throws ContractError with a client_errors code and text for a refusal made before any call.
function buildRequest(op, inputs) {
  const spec = operation(op);
  const given = inputs || {};
  const texts = {};
  for (const name of CONTRACT.input_rules.text) {
    if (spec.inputs.includes(name)) {
      texts[name] = textInput(name, given[name]);
    }
  }
  if (!spec.money) {
    const query = {};
    if (texts.user) {
      query.user = texts.user;
    }
    return { op, method: spec.method, path: spec.path, body: null, fields: null, key: null, query, dryRun: false, headers: {} };
  }

  const metadata = buildMetadata(given, texts);
  if (CONTRACT.reference_policy.required_for.includes(op) && texts.reference === '') {
    throw refuse('reference-required', {});
  }
  const fields = dedupeFields(given.dedupe_on, texts.custom_dedupe_fields);
  const dryRun = dryRunInput(given.dry_run);

  const body = { user: texts.user, amount: amountInput(given.amount) };
  if (metadata !== undefined) {
    body.metadata = metadata;
  }
  let key = null;
  try {
    key = deriveKey(op, body, fields);
  } catch (error) {
    if (!(error instanceof ContractError) || error.code !== 'amount') {
      throw error;
    }
  }
  const query = dryRun ? { [CONTRACT.inputs.dry_run.query]: 'true' } : {};
  const headers = { 'Content-Type': 'application/json' };
  if (key) {
    headers['Idempotency-Key'] = key;
  }
  return { op, method: spec.method, path: spec.path, body, fields, key, query, dryRun, headers };
}

// ---- answers -> step output (snake_case, client-contract.json outputs) ---------------------------

function canonicalOrAsSent(amount) {
  try {
    return canonicalAmount(amount);
  } catch (_e) {
    return amount;
  }
}

const orNull = (value) => (value === undefined ? null : value);

// The step output of a deposit or charge, from the request and the relay's answer.
// meta: {idempotency_key, replayed, sandbox} from the answer's headers (Idempotency-Key,
// Idempotent-Replayed, X-Relay-Sandbox). A dry run answer gives dry_run, would, remaining and
// its idempotency_key, and no new_balance, success or message.
function buildOutput(op, request, data, meta) {
  const answer = data && typeof data === 'object' ? data : {};
  const info = meta || {};
  const body = request.body || {};
  const metadata = body.metadata || {};
  const dryRun = answer.dry_run === true;
  const output = {
    user: body.user,
    amount: canonicalOrAsSent(body.amount),
    reason: orNull(metadata.reason),
    reference: orNull(metadata.reference),
    metadata,
    idempotency_key: info.idempotency_key || (dryRun && answer.idempotency_key) || request.key || null,
    replayed: info.replayed === true,
    sandbox: info.sandbox === true,
    dry_run: dryRun,
  };
  if (dryRun) {
    output.would = orNull(answer.would);
    output.remaining = orNull(answer.remaining);
    return output;
  }
  for (const field of CONTRACT.operations[op].outputs) {
    if (field.from && !(field.key in output)) {
      output[field.key] = orNull(answer[field.from]);
    }
  }
  return output;
}

// The output of a read: balance -> one object; deposits -> one item per ledger entry, with
// reason and reference lifted out of metadata.
function buildReadOutput(op, request, data, meta) {
  const spec = operation(op);
  const answer = data && typeof data === 'object' ? data : {};
  const info = meta || {};
  if (op === 'deposits') {
    const entries = Array.isArray(answer.data) ? answer.data : [];
    return entries.map((entry) => {
      const item = entry && typeof entry === 'object' ? entry : {};
      const metadata = item.metadata && typeof item.metadata === 'object' && !Array.isArray(item.metadata) ? item.metadata : {};
      const output = {};
      for (const field of spec.outputs) {
        if (field.key === 'metadata') {
          output.metadata = metadata;
        } else if (field.key === 'reason' || field.key === 'reference') {
          output[field.key] = orNull(metadata[field.key]);
        } else {
          output[field.key] = orNull(item[field.key]);
        }
      }
      return output;
    });
  }
  const output = {};
  for (const field of spec.outputs) {
    if (field.from) {
      output[field.key] = orNull(answer[field.from]);
    } else if (field.key === 'user') {
      output.user = (request.query && request.query.user) || '';
    } else if (field.key === 'sandbox') {
      output.sandbox = info.sandbox === true;
    }
  }
  return output;
}

// ---- problems -> messages (problems.json) ---------------------------------------------------

// The problem's short name ("validation") from a problem+json body, or null.
function problemName(body) {
  if (body && typeof body === 'object' && typeof body.type === 'string' && body.type.startsWith(PROBLEM_PREFIX)) {
    return body.type.slice(PROBLEM_PREFIX.length);
  }
  return null;
}

function problemEntry(name) {
  return Object.prototype.hasOwnProperty.call(PROBLEMS.problems, name) ? PROBLEMS.problems[name] : null;
}

// The operation a request path is for ("/v1/user/charge" -> "charge"), by its path's end.
function operationOf(url) {
  let pathname = '';
  try {
    pathname = new URL(url, 'http://relay.invalid').pathname.replace(/\/+$/, '');
  } catch (_e) {
    pathname = '';
  }
  const found = Object.entries(PROBLEMS.operations).find(
    ([name, words]) => name !== '$comment' && words.path && pathname.endsWith(words.path),
  );
  return found ? found[0] : 'other';
}

function toolWords(tool) {
  const words = {};
  for (const [name, perTool] of Object.entries(PROBLEMS.tools)) {
    words[name] = perTool[tool];
  }
  return words;
}

// The relay's first sentence: for details whose rest repeats what the message says.
function firstSentence(detail) {
  if (!detail) {
    return detail;
  }
  const match = /^.*?[.!?](?=\s|$)/.exec(detail);
  return match ? match[0] : detail;
}

function fieldWords(field) {
  if (Object.prototype.hasOwnProperty.call(PROBLEMS.fields, field) && field !== '$comment') {
    return { words: PROBLEMS.fields[field], key: '' };
  }
  if (typeof field === 'string' && field.startsWith('metadata.')) {
    return { words: PROBLEMS.fields['metadata.*'], key: field.slice('metadata.'.length) };
  }
  return { words: { label: field || 'the request', fix: '' }, key: '' };
}

function validationLines(errors, vars) {
  return errors
    .map((error) => {
      const item = error && typeof error === 'object' ? error : {};
      const { words, key } = fieldWords(item.field);
      const lineVars = { ...vars, key };
      const label = fillTemplate(words.label, lineVars);
      const fix = words.fix ? fillTemplate(words.fix, lineVars) : '';
      return `${label}: ${show(item.message) || 'invalid'}${fix ? ` ${fix}` : ''}`;
    })
    .join(' | ');
}

// The message a user sees for a relay problem or a client-only case.
//   problem: a problem+json body ({type, title, status, detail, errors, limit, remaining, reason,
//            dedupe_on, request_id, ...}), or {name} / a name string for a client-only case
//            ("http-redirect", "not-json", "not-a-relay", "no-relay-here", "network", "timeout",
//            "missing-url", "bad-url", "missing-token", "secret-key-pasted", "paywalls-itself").
//   context: {tool: "zapier"|"n8n" (required), op (an operation name, or derived from url),
//            url (the request URL), status, user, retry_after, origin, location, suggestion, said,
//            got, cause, value}.
// An unknown problem type renders as "unknown-problem" (title and detail as the relay sent them).
function renderProblem(problem, context) {
  const ctx = context || {};
  if (!TOOLS.includes(ctx.tool)) {
    throw new TypeError(`renderProblem needs context.tool, one of ${TOOLS.join(', ')}`);
  }
  const body = typeof problem === 'string' ? { name: problem } : problem && typeof problem === 'object' ? problem : {};
  let name = problemName(body) || (typeof body.name === 'string' ? body.name : null);
  let entry = name ? problemEntry(name) : null;
  if (!entry) {
    name = 'unknown-problem';
    entry = problemEntry(name);
  }
  const op = own(PROBLEMS.operations, ctx.op) ? ctx.op : ctx.url ? operationOf(ctx.url) : 'other';
  const opWords = PROBLEMS.operations[op];
  const detail = typeof body.detail === 'string' ? body.detail : '';
  let origin = ctx.origin;
  if (!origin && ctx.url) {
    try {
      origin = new URL(ctx.url).origin;
    } catch (_e) {
      origin = '';
    }
  }
  const vars = {
    ...toolWords(ctx.tool),
    noun: opWords.noun,
    verb: opWords.verb,
    token_op: opWords.token_op || 'needed',
    money_noun: MONEY_OPS.includes(op) ? opWords.noun : '',
    status: ctx.status !== undefined ? ctx.status : body.status,
    title: typeof body.title === 'string' ? body.title : '',
    detail,
    detail_first: firstSentence(detail),
    limit: body.limit,
    remaining: body.remaining,
    reason: body.reason,
    dedupe_on: body.dedupe_on,
    request_id: body.request_id,
    user: ctx.user,
    retry_after: ctx.retry_after,
    origin: origin || 'the relay address',
    location: ctx.location,
    suggestion: ctx.suggestion,
    said: ctx.said,
    got: ctx.got,
    cause: ctx.cause,
    value: ctx.value,
    key: ctx.key,
  };
  let template = entry.message;
  if (name === 'validation') {
    const errors = Array.isArray(body.errors) ? body.errors : [];
    if (errors.length === 0) {
      template = entry.message_without_fields;
    } else {
      vars.field_count_words = errors.length === 1 ? 'a field' : 'some fields';
      vars.field_lines = validationLines(errors, vars);
    }
  } else if (name === 'forbidden' && typeof own(entry.limits, body.limit) === 'string') {
    template = entry.limits[body.limit];
  }
  if (template && typeof template === 'object') {
    template = own(template, ctx.tool);
  }
  return fillTemplate(template, vars).replace(/ {2,}/g, ' ').trim();
}

// How a tool should treat a problem: 'auto' (it retries by itself), 'safe', 'fix', 'operator',
// 'connection' (problems.json retry).
function problemRetry(problem) {
  const body = typeof problem === 'string' ? { name: problem } : problem || {};
  const entry = problemEntry(problemName(body) || body.name) || problemEntry('unknown-problem');
  return entry.retry;
}

module.exports = {
  CONTRACT,
  PROBLEMS,
  KEY_PREFIX,
  DEFAULT_FIELDS,
  PROBLEM_PREFIX,
  ContractError,
  canonicalJson,
  canonicalAmount,
  valueAt,
  isValidPath,
  deriveKey,
  parseCustomFields,
  dedupeFields,
  buildMetadata: (inputs, op = 'deposit') => {
    const texts = {};
    for (const name of ['reason', 'reference']) {
      if (operation(op).inputs.includes(name)) {
        texts[name] = textInput(name, (inputs || {})[name]);
      }
    }
    return buildMetadata(inputs || {}, texts);
  },
  buildRequest,
  buildOutput,
  buildReadOutput,
  clientErrorText,
  problemName,
  problemRetry,
  operationOf,
  renderProblem,
  fillTemplate,
};
